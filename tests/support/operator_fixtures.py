"""pytest fixtures (a plugin, registered in tests/conftest.py): the operator, installed with its Helm
chart into the local cluster and running in-cluster on the process node with the chart's
ServiceAccount and RBAC (never admin credentials); the churn bundles and an HTTP model store."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import fcntl
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from modeldeploy_testcluster import nodes
from modeldeploy_testcluster.layout import Layout
from modeldeploy_testcluster.pytest_plugin import RUN_ENV, beside_lock, flocked, holds, is_xdist_worker

from built_cache import cached_build, churn_script
from cluster_helpers import REPO, helm, wait_for

RELEASE = "modeldeploy"
RELEASE_NAMESPACE = "modeldeploy-system"
OPERATOR_PODS = "app.kubernetes.io/name=modeldeploy,app.kubernetes.io/component=operator"
"""The operator's pods (not the release's `helm test` pod, which has the same name label)."""
PROMETHEUS_PORT = 19090
"""Port of the e2e tests' Prometheus on the host: an address the installed operator may query."""
HOSTILE_PROMETHEUS_PORT = 19091
"""The other one, for the hostile-Prometheus fault test: it runs beside the Prometheus e2e tests."""
INSTANCE_LABEL = "modeldeploy.io/controller-instance"


def _operator_ready(api: client.ApiClient, name: str = RELEASE, namespace: str = RELEASE_NAMESPACE) -> bool:
    deployment = client.AppsV1Api(api).read_namespaced_deployment(name, namespace)
    return (deployment.status.ready_replicas or 0) >= 1


def print_operator_logs(
    api: client.ApiClient,
    grep: str = "",
    lines: int = 400,
    namespace: str = RELEASE_NAMESPACE,
    selector: str = OPERATOR_PODS,
) -> None:
    """The operator pods' recent log lines (those containing `grep`), for a test's failure output:
    what the operator did is otherwise lost with the cluster at the end of a CI run. `namespace`: a
    PrivateOperator's; `selector`: other pods' (a deployment's routers)."""
    core = client.CoreV1Api(api)
    for pod in core.list_namespaced_pod(namespace, label_selector=selector).items:
        try:
            text = core.read_namespaced_pod_log(pod.metadata.name, namespace, tail_lines=lines)
        except client.ApiException as error:
            print("pod", pod.metadata.name, "log unreadable:", error.status)
            continue
        kept = [line for line in text.splitlines() if grep in line]
        print(f"pod {pod.metadata.name}: {len(kept)} of its last {lines} log lines have {grep!r}")
        for line in kept[-80:]:
            print("  ", line[:400])


def _image_values(layout: Layout) -> dict[str, object]:
    """With the real node as the default (MODELDEPLOY_REAL_NODE_DEFAULT=1) the pods run from this
    checkout's images: built and pushed to the local registry (a no-op when unchanged), named by
    `image.registry` as on any cluster, and pulled again on every pod start (the tag stays the
    chart's appVersion while the content changes)."""
    if not layout.real_node_default:
        return {}
    subprocess.run(
        [str(REPO / "hack" / "images.sh")],
        env={**os.environ, "REGISTRY": layout.registry, "EXPORT": "0"},
        check=True,
    )
    return {"image": {"registry": layout.registry, "pullPolicy": "Always"}}


# The pods run this checkout's code: a new value per test run restarts them, so an upgrade picks up
# edits. One value for the whole run (all its xdist workers): installing again within the run, as
# each cluster stream and the demo test do, changes nothing and restarts nothing under the others.
_RUN = os.environ.get(RUN_ENV) or str(time.time_ns())


_SMALL_REQUESTS = {
    "serving": {"requests": {"cpu": "10m", "memory": "128Mi"}, "limits": {"memory": "1Gi"}},
    "router": {"requests": {"cpu": "10m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}},
}
"""The chart's default pod resources for model servers and routers, with 10m of CPU requested."""


def operator_values(layout: Layout) -> dict[str, object]:
    """The chart values the tests' operator runs with (images built first when the real node is the
    default)."""
    return {
        "operator": {"resyncSeconds": 10},
        "gatewayAPI": {"enabled": True},  # the test cluster has the Gateway API CRDs
        "analysis": {
            "prometheus": {
                "allowedAddresses": [
                    f"http://{layout.host_ip}:{port}" for port in (PROMETHEUS_PORT, HOSTILE_PROMETHEUS_PORT)
                ]
            }
        },
        "podAnnotations": {"modeldeploy.io/test-session": _RUN},
        # CPU requests of 10m instead of the chart's 50m: the real node has 2 CPUs of allocatable
        # and the suite's three cluster streams, the examples (applied all at once) and the private
        # operators together asked for more than that, so pods stayed Pending for minutes (a warm CI
        # run, 2026-12-04: three tests waited out their bounds while the examples' namespace lived).
        # Requests only reserve; what the pods use is unchanged.
        "resources": {"requests": {"cpu": "10m", "memory": "128Mi"}, "limits": {"memory": "256Mi"}},
        "defaults": {
            "serving": {"pod": {"resources": _SMALL_REQUESTS["serving"]}},
            "router": {"pod": {"resources": _SMALL_REQUESTS["router"]}},
        },
        **_image_values(layout),
    }


def operator_values_file(layout: Layout, folder: Path) -> Path:
    path = folder / "operator-values.yaml"
    path.write_text(yaml.safe_dump(operator_values(layout)))
    return path


STUCK = "another operation (install/upgrade/rollback) is in progress"


def _recover_stuck_release(kubeconfig: Path) -> None:
    """A session killed mid-install leaves the release pending, and every later `helm upgrade`
    fails with STUCK. This session holds the cluster lock (one pytest session at a time), so no
    operation is really in progress: roll back to the last deployed revision, or, when there is none
    (a pending first install), uninstall."""
    namespace = ("--namespace", RELEASE_NAMESPACE)
    try:
        helm("rollback", RELEASE, *namespace, "--wait", "--timeout", "120s", kubeconfig=kubeconfig)
    except AssertionError:
        helm("uninstall", RELEASE, *namespace, "--wait", "--ignore-not-found", kubeconfig=kubeconfig)


def apply_crd(api: client.ApiClient) -> None:
    """Put this checkout's CRD on the cluster. Helm installs a chart's crds/ only on the first install
    and never upgrades them, so on a kept cluster (MODELDEPLOY_KEEP_CLUSTER=1) the CRD of whichever
    checkout installed first would stay: new fields pruned, new rules never tested."""
    body = yaml.safe_load((REPO / "crds" / "modeldeploy.io_modeldeployments.yaml").read_text())
    extensions = client.ApiextensionsV1Api(api)
    name = body["metadata"]["name"]
    try:
        current = extensions.read_custom_resource_definition(name)
    except client.ApiException as error:
        if error.status != 404:
            raise
        extensions.create_custom_resource_definition(body)
    else:
        body["metadata"]["resourceVersion"] = current.metadata.resource_version
        extensions.replace_custom_resource_definition(name, body)

    def established() -> bool:
        crd = extensions.read_custom_resource_definition(name)
        conditions = {c.type: c.status for c in (crd.status.conditions or [])}
        return conditions.get("Established") == "True" and conditions.get("NamesAccepted") == "True"

    wait_for("the CRD to be established", established, timeout=60)


def install_operator(layout: Layout, kubeconfig: Path, once_per_run: bool = False) -> None:
    """Install or upgrade the chart with the tests' values and wait for a ready operator. One install
    at a time on the machine: two cluster streams of a run start with it together. `once_per_run`:
    skip the upgrade when another stream of this run (MODELDEPLOY_TEST_RUN) has done it already."""
    installed = beside_lock("installed")
    with flocked(beside_lock("install"), fcntl.LOCK_EX), tempfile.TemporaryDirectory() as folder:
        if not (once_per_run and holds(installed, _RUN)):
            apply_crd(nodes.admin_api(layout))
            values = operator_values_file(layout, Path(folder))
            try:
                _install(kubeconfig, values)
            except AssertionError as failed:
                if STUCK not in str(failed):
                    raise
                _recover_stuck_release(kubeconfig)
                _install(kubeconfig, values)
            installed.write_text(_RUN)
    api = nodes.admin_api(layout)
    wait_for("the operator to be ready", lambda: _operator_ready(api), timeout=60)


def _install(kubeconfig: Path, values: Path) -> None:
    helm(
        "upgrade",
        "--install",
        RELEASE,
        str(REPO / "charts" / "modeldeploy"),
        "--namespace",
        RELEASE_NAMESPACE,
        "--create-namespace",
        "--wait",
        "--timeout",
        # A fresh cluster pulls the images for the first time while other work loads the 2 cores.
        "300s",
        "--values",
        str(values),
        kubeconfig=kubeconfig,
    )


@pytest.fixture(scope="session")
def operator_release(
    request: pytest.FixtureRequest, local_cluster: Layout, kubeconfig: Path
) -> Iterator[str]:
    """Installs (or upgrades) the chart once per session; yields the release namespace. Under xdist
    the release stays: another cluster stream of the run may still use it (the controller stops the
    cluster at the end, release and all, when the run started it)."""
    install_operator(local_cluster, kubeconfig, once_per_run=True)
    yield RELEASE_NAMESPACE
    if is_xdist_worker(request.config):
        return
    helm(
        "uninstall",
        RELEASE,
        "--namespace",
        RELEASE_NAMESPACE,
        "--wait",
        "--ignore-not-found",
        kubeconfig=kubeconfig,
    )


@dataclasses.dataclass(frozen=True)
class PrivateOperator:
    """An operator of one test's own: the chart installed again as release `release` in the test's
    namespace, with `operator.instanceId` = `instance`, so it manages only the ModelDeployments that
    `mark` labels, and the shared operator none of them (docs/operator.md, "Several operators on one
    cluster"). A test may restart, scale down or re-permission it beside the other tests; doing that to
    the shared operator needs the cluster to itself (cluster_exclusive)."""

    release: str
    """Helm release, Deployment, Lease and ClusterRole(Binding) name (the chart's fullname)."""
    namespace: str
    instance: str

    def mark(self, body: dict[str, Any]) -> dict[str, Any]:
        """`body` (a ModelDeployment) labelled for this operator."""
        marked = copy.deepcopy(body)
        marked.setdefault("metadata", {}).setdefault("labels", {})[INSTANCE_LABEL] = self.instance
        return marked

    def pods(self, api: client.ApiClient) -> list[client.V1Pod]:
        """Its operator pods, running or not (not a finished `helm test` pod)."""
        selector = f"{OPERATOR_PODS},app.kubernetes.io/instance={self.release}"
        return list(client.CoreV1Api(api).list_namespaced_pod(self.namespace, label_selector=selector).items)

    def ready(self, api: client.ApiClient) -> bool:
        return _operator_ready(api, self.release, self.namespace)


def merged(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """`extra` over `base`, maps merged key by key (as Helm merges values files), anything else replaced."""
    out = dict(base)
    for key, value in extra.items():
        current = out.get(key)
        if isinstance(current, dict) and isinstance(value, dict):
            out[key] = merged(current, value)
        else:
            out[key] = value
    return out


@contextlib.contextmanager
def private_operator_installed(
    layout: Layout,
    kubeconfig: Path,
    namespace: str,
    replicas: int = 1,
    values: dict[str, Any] | None = None,
) -> Iterator[PrivateOperator]:
    """Installs a PrivateOperator into `namespace` (the shared operator's values with `values` over
    them, its own instance id and replica count), waits for it to be ready, and uninstalls it
    afterwards (its ClusterRoles are cluster-wide: the namespace's deletion would leave them)."""
    operator = PrivateOperator(release=f"modeldeploy-{namespace}", namespace=namespace, instance=namespace)
    own = {"replicaCount": replicas, "operator": {"instanceId": operator.instance}}
    values = merged(merged(operator_values(layout), values or {}), own)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "values.yaml"
        path.write_text(yaml.safe_dump(values))
        try:
            helm(
                "install",
                operator.release,
                str(REPO / "charts" / "modeldeploy"),
                "--namespace",
                namespace,
                "--skip-crds",  # the session's (apply_crd): this checkout's, already there
                "--wait",
                "--timeout",
                "300s",
                "--values",
                str(path),
                kubeconfig=kubeconfig,
            )
            yield operator
        finally:
            helm(
                "uninstall",
                operator.release,
                "--namespace",
                namespace,
                "--ignore-not-found",
                kubeconfig=kubeconfig,
            )


@pytest.fixture
def private_operator(
    local_cluster: Layout, kubeconfig: Path, namespace: str, operator_release: str
) -> Iterator[PrivateOperator]:
    """A PrivateOperator of this test (one replica), in its namespace. Needs the session's install
    first: the CRD, and the images on the real node."""
    with private_operator_installed(local_cluster, kubeconfig, namespace) as operator:
        yield operator


@pytest.fixture(scope="session")
def churn_bundles(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The churn example's bundles v1..v3 and data (`make_models.py` with its defaults, as the demo
    runs it): trained once per machine and inputs (built_cache.py), copied per session because some
    tests add bundles beside them."""

    out = tmp_path_factory.mktemp("churn")
    shutil.copytree(cached_build("churn-demo", [], churn_script([])), out, dirs_exist_ok=True)
    return out


@contextlib.contextmanager
def serve_folder(layout: Layout, folder: Path) -> Iterator[str]:
    """An HTTP server on the pod network's host address serving `folder`; yields its base URL (the
    tests' model store, and bench/cluster/soak.py's)."""
    with socket.socket() as s:
        s.bind((layout.host_ip, 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "http.server",
            str(port),
            "--bind",
            layout.host_ip,
            "--directory",
            str(folder),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def answers() -> bool:
        with socket.socket() as probe:
            return probe.connect_ex((layout.host_ip, port)) == 0

    try:
        wait_for("the model store", answers, timeout=10)
        yield f"http://{layout.host_ip}:{port}"
    finally:
        server.terminate()
        server.wait(timeout=10)


@pytest.fixture(scope="session")
def model_store(local_cluster: Layout, churn_bundles: Path) -> Iterator[str]:
    """An HTTP server on the pod network's host address serving the bundles; yields its base URL."""
    with serve_folder(local_cluster, churn_bundles) as url:
        yield url
