"""A namespace being deleted, on a real API server: the operator stops applying at the first refusal.

While a namespace is deleted, its ModelDeployments live on until the namespace controller's sweep
reaches their kind, and every owned object the sweep removes first (Services, PodDisruptionBudgets,
the router's Role and ServiceAccount, Deployments) tells its owner. Before, each of those passes
re-created the object, was refused (403: "unable to create new content in namespace ... because it is
being terminated"), tried an Event and a status write, logged a warning and set a retry a minute
later: deleting the scale bench's namespace of 105 ModelDeployments logged 364 such refusals in two
minutes (bench/operator/scale.py, 2026-12-03, docs/benchmarks.md).

On a private control plane (modeldeploy_testcluster.private; no kwok node, so no pod gets an address
and nothing but 127.0.0.1 is dialled), with the operator's own controller and reconciler driven step
by step (the watch events are handed over by the test, so the order the sweep could take is not left
to chance): a ModelDeployment reconciled, its namespace deleted and held in Terminating by a
ConfigMap's finalizer, then the deletion of its owned objects handed to the controller as their watch
events. The API server's real refusal is recognised (NamespaceTerminatingError, from the Status cause
`NamespaceTerminating`): one refused create, no Event, no status write, no retry; the deletion's
other events (of this ModelDeployment's objects and of the other one's in the namespace) and the
resync queue nothing. Before: the refused create, an Event attempt and a status write, a warning,
and a retry set for a minute later, for each ModelDeployment and each event.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config

from modeldeploy_operator.config import OperatorSettings
from modeldeploy_operator.controller import Controller
from modeldeploy_operator.k8s.api import KubeApi, NamespaceTerminatingError
from modeldeploy_operator.k8s.cache import INDEX_LABEL, CachedKind
from modeldeploy_operator.reconciler import Reconciler
from modeldeploy_operator.scheduler import WorkQueue
from modeldeploy_testcluster.layout import binaries_dir
from modeldeploy_testcluster.private import private_control_plane

from cluster_helpers import GROUP, PLURAL, VERSION, wait_for
from private_operator import install_crd

pytestmark = [pytest.mark.cluster, pytest.mark.private_control_plane, pytest.mark.slow]
if not all((binaries_dir() / b).exists() for b in ("etcd", "kube-apiserver", "kube-controller-manager")):
    pytest.skip("the control-plane binaries are not built yet (make binaries)", allow_module_level=True)

WAIT = 240.0
"""Seconds for one condition on a loaded 2-core machine."""
HOLD = "example.com/hold"


@pytest.fixture(scope="module")
def admin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[client.ApiClient]:
    work = Path(tmp_path_factory.mktemp("nsdel-private"))
    with private_control_plane(work) as layout:
        api = config.new_client_from_config(config_file=str(layout.admin_kubeconfig))
        install_crd(api, layout)
        yield api
        api.close()


class CountingApi(KubeApi):
    """The operator's KubeApi, with every request it sends kept (method, path, and how it ended)."""

    def __init__(self, api_client: client.ApiClient) -> None:
        super().__init__(api_client, "modeldeploy-operator")
        self.sent: list[tuple[str, str, str]] = []

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            result = super()._call(method, path, **kwargs)
        except Exception as error:
            self.sent.append((method, path, type(error).__name__))
            raise
        self.sent.append((method, path, "ok"))
        return result


def owned_left(core: client.CoreV1Api, namespace: str) -> list[str]:
    selector = INDEX_LABEL
    return [
        s.metadata.name
        for s in core.list_namespaced_service_account(namespace, label_selector=selector).items
    ] + [s.metadata.name for s in core.list_namespaced_service(namespace, label_selector=selector).items]


def test_a_terminating_namespace_is_left_alone_after_one_refusal(admin: client.ApiClient) -> None:
    core, custom = client.CoreV1Api(admin), client.CustomObjectsApi(admin)
    namespace = f"nsdel-{uuid.uuid4().hex[:5]}"
    core.create_namespace({"metadata": {"name": namespace}})
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "hold", "finalizers": [HOLD]}})
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ModelDeployment",
        "metadata": {"name": "churn"},
        "spec": {"model": {"uri": "http://127.0.0.1:9/churn/v1", "format": "onnx", "version": "1"}},
    }
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
    custom.create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, {**body, "metadata": {"name": "fraud"}}
    )
    api = CountingApi(admin)
    made = Controller(Reconciler(api, OperatorSettings()), OperatorSettings(), WorkQueue(min_gap=0.0))
    key = (namespace, "churn")
    try:
        for name in ("churn", "fraud"):
            made.on_modeldeployment(
                "ADDED", custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
            )
        applied = 0
        for _ in range(10):  # each pass, and the follow-up of one that wrote objects
            ready = made.queue.get(timeout=0)
            if ready is None:
                break
            outcome = made.process(ready)  # type: ignore[arg-type]
            made.queue.done(ready)
            assert outcome is not None
            applied += outcome.applied
        assert applied > 10
        owned = owned_left(core, namespace)
        assert "churn-router" in owned, owned

        # The namespace is deleted; the ConfigMap's finalizer keeps it Terminating after the sweep.
        core.delete_namespace(namespace)
        wait_for(
            "the sweep to remove the owned objects",
            lambda: (
                core.read_namespace(namespace).status.phase == "Terminating"
                and not owned_left(core, namespace)
            ),
            WAIT,
        )
        # The sweep's events reach the controller (the ModelDeployment's own DELETED not yet).
        api.sent.clear()
        accounts = CachedKind("v1", "ServiceAccount")
        gone = {
            "metadata": {"namespace": namespace, "name": "churn-router", "labels": {INDEX_LABEL: "churn"}}
        }
        made.on_owned(accounts, "DELETED", gone)
        assert made.queue.get(timeout=0) == key
        assert made.process(key) is None
        made.queue.done(key)
        writes = [(m, p, end) for m, p, end in api.sent if m != "GET"]
        # One wave of writes (what pods need, sent at once: Reconciler._apply_wave), every one
        # refused; no Event, no status write, nothing after it.
        assert 1 <= len(writes) <= 4, writes
        assert all(end == NamespaceTerminatingError.__name__ for _, _, end in writes), writes
        assert made.queue.timer_of(key) is None  # no retry

        for _ in range(5):  # the rest of the sweep, and a resync: nothing queued, nothing sent
            made.on_owned(accounts, "DELETED", gone)
        # The other ModelDeployment of the namespace too: its objects going queue nothing either.
        made.on_owned(
            accounts, "DELETED", {"metadata": {**gone["metadata"], "labels": {INDEX_LABEL: "fraud"}}}
        )
        made.resync()
        assert made.queue.get(timeout=0) is None
        assert len([s for s in api.sent if s[0] != "GET"]) == len(writes)
    finally:
        with contextlib.suppress(client.ApiException):
            core.patch_namespaced_config_map("hold", namespace, {"metadata": {"finalizers": None}})
        with contextlib.suppress(client.ApiException):
            core.delete_namespace(namespace)
