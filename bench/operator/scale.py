"""The operator at scale (issue 16): N ModelDeployments on one operator, and Argo Rollouts beside it.

One command, on the local control plane (started if it is not up; the machine-wide cluster lock is
taken for the whole run, like a pytest session's):

    .venv/bin/python bench/operator/scale.py --count 100 --count 300 --argo
    .venv/bin/python bench/operator/scale.py --private-control-plane ...   # no shared cluster, no lock

(--private-control-plane: the bench's own etcd, kube-apiserver, controller-manager, scheduler and
kwok on 127.0.0.1 instead of the shared cluster; what docs/benchmarks.md reports.)

For each N and each side (modeldeploy, then Argo Rollouts' controller when --argo and it is built:
`tests/cluster/build-binaries.sh argo-rollouts`), in a namespace of its own, one side at a time:

1. the controller starts as a local process (this checkout's `modeldeploy-operator`, or
   `rollouts-controller`), namespaced to the bench namespace, with a ServiceAccount token of its own
   (bound to cluster-admin) so the API server can tell its requests apart;
2. N objects are created (a ModelDeployment, or a Rollout with its two Services and Ingress: a
   comparable canary with steps setWeight 20, pause, setWeight 50, pause); every pod goes to the kwok
   nodes (node selector `type: kwok` and the kwok toleration), so nothing runs and only the control
   plane is measured. Waits until all are ready;
3. idle: API requests of the controller's identity over --idle-seconds, from the API server's own
   /metrics, and the controller's CPU (utime+stime over the window) and RSS (VmRSS at its end);
4. reaction, at steady state, one object at a time: apply -> workload created (the serving and router
   Deployments; Argo: the ReplicaSet), model change -> new revision's Deployment (Argo: ReplicaSet);
   and, from those rollouts, canary step due -> router table updated (the router ConfigMap's weights;
   Argo: the canary Ingress's canary-weight annotation), where "due" is the pause's start as written
   in status (whole seconds, what the controller itself times from) plus its duration;
   each apply sample's times are in the JSON too (`apply_to_created_samples`: its create request, and
   when each workload object was seen, from the request's start; `apply_at` to match a controller log);
   --only-reaction stops the side here (no idle window, rollouts or restart: N = 300 in minutes);
   each phase's `phases` entry has what it cost and where the time went: the controller's passes and
   requests, and (modeldeploy) the buckets of its queue-wait, pass wall and CPU, garbage-collection
   and request histograms; the API server's count of its requests by class, and its own time for
   them (priority-and-fairness wait, execution) and for every client's by verb;
5. one canary rollout alone, then min(N, 100) at once: each from the patch to promoted;
6. restart: the controller is stopped, every object's spec.revisionHistoryLimit is changed (a new
   generation, no new pods), the controller is started: seconds until every object's
   status.observedGeneration has caught up.

API requests by client: kube-apiserver v1.34's apiserver_request_total has no user or user-agent
label (its labels: verb, group, version, resource, subresource, scope, component, code, dry_run).
What it does label by client is API Priority and Fairness: `apiserver_flowcontrol_dispatched_requests_total`
counts requests per FlowSchema, and a FlowSchema matches a subject (user, group or ServiceAccount).
So the bench gives each controller its own ServiceAccount and installs FlowSchemas that match it,
one per class of request (leases, events, watch, list, get, writes, the rest), all on the
`workload-low` priority level that ServiceAccounts get by default. The counts are the API server's
own, per identity and class, without an audit log (the harness's kube-apiserver runs without one,
and turning it on would mean restarting the shared cluster with other flags).

Times are this script's clock at the watch event that showed the change (watches opened with the
admin identity, whose requests the exempt FlowSchema takes, so they are never counted above).
Prints a table and writes one JSON document (--json).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import functools
import json
import math
import os
import re
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, cast

import yaml
from kubernetes import client, watch
from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "support"))

from modeldeploy_contract.router_config import CONFIG_KEY, RouterConfig  # noqa: E402
from modeldeploy_testcluster import controlplane, nodes  # noqa: E402
from modeldeploy_testcluster.controlplane import free_port as _free_port  # noqa: E402
from modeldeploy_testcluster.kubeconfig import write_kubeconfig  # noqa: E402
from modeldeploy_testcluster.layout import Layout, binaries_dir, cache_dir, default_layout  # noqa: E402
from modeldeploy_testcluster.pki import ClusterPKI  # noqa: E402
from modeldeploy_testcluster.private import (  # noqa: E402
    Process,
    log,
    private_control_plane,
    wait_until,
)

SYSTEM_NAMESPACE = "scale-bench-system"
OPERATOR_SELECTOR = "app.kubernetes.io/name=modeldeploy"
PAUSE_SECONDS = 10
STEPS_WEIGHTS = (20, 50)
ARGO_ROLLOUTS_VERSION = "v1.10.1"  # keep in step with tests/cluster/build-binaries.sh
KWOK_PLACEMENT = {"nodeSelector": {"type": "kwok"}, "tolerations": [nodes.KWOK_TOLERATION]}
REQUEST_CLASSES: tuple[tuple[str, dict[str, Any]], ...] = (
    # (class, the FlowSchema rule besides its subject); the first that matches takes a request.
    (
        "leases",
        {
            "resourceRules": [
                {
                    "verbs": ["*"],
                    "apiGroups": ["coordination.k8s.io"],
                    "resources": ["leases"],
                    "namespaces": ["*"],
                }
            ]
        },
    ),
    (
        "events",
        {
            "resourceRules": [
                {
                    "verbs": ["*"],
                    "apiGroups": ["", "events.k8s.io"],
                    "resources": ["events"],
                    "namespaces": ["*"],
                }
            ]
        },
    ),
    (
        "watch",
        {
            "resourceRules": [
                {
                    "verbs": ["watch"],
                    "apiGroups": ["*"],
                    "resources": ["*"],
                    "namespaces": ["*"],
                    "clusterScope": True,
                }
            ]
        },
    ),
    (
        "list",
        {
            "resourceRules": [
                {
                    "verbs": ["list"],
                    "apiGroups": ["*"],
                    "resources": ["*"],
                    "namespaces": ["*"],
                    "clusterScope": True,
                }
            ]
        },
    ),
    (
        "get",
        {
            "resourceRules": [
                {
                    "verbs": ["get"],
                    "apiGroups": ["*"],
                    "resources": ["*"],
                    "namespaces": ["*"],
                    "clusterScope": True,
                }
            ]
        },
    ),
    (
        "write",
        {
            "resourceRules": [
                {
                    "verbs": ["create", "update", "patch", "delete", "deletecollection"],
                    "apiGroups": ["*"],
                    "resources": ["*"],
                    "namespaces": ["*"],
                    "clusterScope": True,
                }
            ]
        },
    ),
    (
        "other",
        {
            "resourceRules": [
                {
                    "verbs": ["*"],
                    "apiGroups": ["*"],
                    "resources": ["*"],
                    "namespaces": ["*"],
                    "clusterScope": True,
                }
            ],
            "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}],
        },
    ),
)


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def rfc3339(value: str | None) -> float | None:
    if not value:
        return None
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


# --- the cluster, identities and the API server's counts -------------------------------------------


@contextlib.contextmanager
def cluster_session(keep: bool) -> Iterator[Layout]:
    """The local cluster under the machine-wide lock, as a pytest session has it (and left as found)."""
    import fcntl

    path = Path(os.environ.get("MODELDEPLOY_CLUSTER_LOCK", "/tmp/modeldeploy-cluster.lock"))  # noqa: S108
    with path.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"waiting for another session to release the local cluster ({path})")
            fcntl.flock(handle, fcntl.LOCK_EX)
        layout = default_layout()
        was_up = controlplane.is_healthy(layout)
        controlplane.up(layout)
        try:
            yield layout
        finally:
            if not was_up and not keep and os.environ.get("MODELDEPLOY_KEEP_CLUSTER") != "1":
                controlplane.down(layout)


def ensure_namespace(core: client.CoreV1Api, name: str) -> None:
    with contextlib.suppress(client.ApiException):
        core.create_namespace({"metadata": {"name": name, "labels": {"modeldeploy.io/scale-bench": "1"}}})


def delete_namespace(core: client.CoreV1Api, name: str, timeout: float) -> None:
    """Delete and wait until gone; objects whose finalizer nobody removed within 2 minutes (their
    controller is not running, or is too busy to get to them) lose it."""
    with contextlib.suppress(client.ApiException):
        core.delete_namespace(name)
    with contextlib.suppress(TimeoutError):
        wait_until(f"namespace {name} to be deleted", lambda: _gone(core, name), 120, interval=1.0)
        return
    strip_finalizers(core.api_client, name)

    wait_until(f"namespace {name} to be deleted", lambda: _gone(core, name), timeout / 2, interval=1.0)


def _gone(core: client.CoreV1Api, name: str) -> bool:
    try:
        core.read_namespace(name)
    except client.ApiException as error:
        return bool(error.status == 404)
    return False


def strip_finalizers(api: client.ApiClient, namespace: str) -> None:
    """Finalizers of the bench's custom objects (kopf puts one on each ModelDeployment for its daemon):
    with the controller gone, nobody else would remove them and the namespace would never go."""
    custom = client.CustomObjectsApi(api)
    for group, version, plural in (
        ("modeldeploy.io", "v1alpha1", "modeldeployments"),
        ("argoproj.io", "v1alpha1", "rollouts"),
    ):
        try:
            items = custom.list_namespaced_custom_object(group, version, namespace, plural)["items"]
        except client.ApiException:
            continue
        for item in items:
            if item["metadata"].get("finalizers"):
                with contextlib.suppress(client.ApiException):
                    custom.patch_namespaced_custom_object(
                        group,
                        version,
                        namespace,
                        plural,
                        item["metadata"]["name"],
                        {"metadata": {"finalizers": None}},
                    )


def identity_kubeconfig(api: client.ApiClient, layout: Layout, who: str, namespace: str, out: Path) -> Path:
    """A ServiceAccount `who` bound to cluster-admin, and a kubeconfig with a token of it (default
    namespace `namespace`): the controller's own identity, which the FlowSchemas below match."""
    core, rbac = client.CoreV1Api(api), client.RbacAuthorizationV1Api(api)
    ensure_namespace(core, SYSTEM_NAMESPACE)
    with contextlib.suppress(client.ApiException):
        core.create_namespaced_service_account(SYSTEM_NAMESPACE, {"metadata": {"name": who}})
    binding = {
        "metadata": {"name": f"scale-bench-{who}"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
        "subjects": [{"kind": "ServiceAccount", "name": who, "namespace": SYSTEM_NAMESPACE}],
    }
    with contextlib.suppress(client.ApiException):
        rbac.create_cluster_role_binding(binding)
    token = core.create_namespaced_service_account_token(
        who, SYSTEM_NAMESPACE, {"spec": {"expirationSeconds": 6 * 3600}}
    ).status.token
    return write_kubeconfig(
        out, layout.apiserver_url, layout.pki_dir / "ca.crt", who, token=token, namespace=namespace
    )


def install_flow_schemas(api: client.ApiClient, who: str, precedence: int) -> None:
    custom = client.CustomObjectsApi(api)
    for offset, (kind, rule) in enumerate(REQUEST_CLASSES):
        body = {
            "apiVersion": "flowcontrol.apiserver.k8s.io/v1",
            "kind": "FlowSchema",
            "metadata": {"name": f"scale-bench-{who}-{kind}"},
            "spec": {
                "matchingPrecedence": precedence + offset,
                "priorityLevelConfiguration": {"name": "workload-low"},
                "distinguisherMethod": {"type": "ByUser"},
                "rules": [
                    {
                        "subjects": [
                            {
                                "kind": "ServiceAccount",
                                "serviceAccount": {"name": who, "namespace": SYSTEM_NAMESPACE},
                            }
                        ],
                        **rule,
                    }
                ],
            },
        }
        try:
            custom.create_cluster_custom_object("flowcontrol.apiserver.k8s.io", "v1", "flowschemas", body)
        except client.ApiException as error:
            if error.status != 409:
                raise


class ApiServerCounts:
    """`apiserver_flowcontrol_dispatched_requests_total` per FlowSchema, read from /metrics."""

    def __init__(self, layout: Layout) -> None:
        pki = ClusterPKI(layout.pki_dir)
        self._context = ssl.create_default_context(cafile=str(pki.ca_cert))
        self._context.load_cert_chain(str(pki.cert("admin")), str(pki.key("admin")))
        self._url = f"{layout.apiserver_url}/metrics"
        self.processes: dict[str, Process] = getattr(layout, "processes", {})
        """The private control plane's processes by name (etcd, kube-apiserver, ...), for their CPU."""

    def get(self, path: str) -> str:
        url = self._url.removesuffix("/metrics") + path
        with urllib.request.urlopen(url, context=self._context, timeout=30) as response:  # noqa: S310
            return str(response.read().decode())

    def discovered(self, group_version: str, plural: str) -> bool:
        """The API server's discovery lists the resource (a controller resolves it there once, at
        start: kopf does not retry a resource it could not resolve)."""
        try:
            found = json.loads(self.get(f"/apis/{group_version}"))
        except OSError:
            return False
        return any(r.get("name") == plural for r in found.get("resources") or [])

    def read(self, who: str) -> dict[str, float]:
        text = self.get("/metrics")
        counts = {kind: 0.0 for kind, _ in REQUEST_CLASSES}
        prefix = f"scale-bench-{who}-"
        for family in text_string_to_metric_families(text):
            if family.name in _SERVER_TIMES:
                _server_time(family, prefix, counts)
            if family.name != "apiserver_flowcontrol_dispatched_requests":
                continue
            for sample in family.samples:
                schema = sample.labels.get("flow_schema", "")
                if sample.name.endswith("_total") and schema.startswith(prefix):
                    counts[schema[len(prefix) :]] += sample.value
        return counts


_SERVER_TIMES = {
    "apiserver_flowcontrol_request_wait_duration_seconds": "apf_wait",
    "apiserver_flowcontrol_request_execution_seconds": "apf_execution",
    "apiserver_request_duration_seconds": "all_clients",
}
"""The API server's own time for the controller's requests: waiting in its priority-and-fairness queue,
and executing (per request class, i.e. its flow schema); and every client's requests by verb, and by
verb and resource. Seconds
and counts, so that a phase's delta gives the mean (they are not request counts: not in the totals)."""


def _server_time(family: Any, prefix: str, counts: dict[str, float]) -> None:
    short = _SERVER_TIMES[family.name]
    for sample in family.samples:
        if not sample.name.endswith(("_sum", "_count")):
            continue
        if short == "all_clients":
            what = sample.labels.get("verb", "")
            if what not in ("APPLY", "POST", "PUT", "PATCH", "GET", "LIST"):
                continue
            # And by resource (with its subresource): which objects' requests a phase's time went to,
            # the controller-manager's and kwok's included (they have no flow schema of their own here).
            resource = sample.labels.get("resource", "") + (
                f"/{sample.labels['subresource']}" if sample.labels.get("subresource") else ""
            )
            key = f"by_resource_{what}_{resource}_{'s' if sample.name.endswith('_sum') else 'n'}"
            counts[key] = counts.get(key, 0.0) + sample.value
        else:
            schema = sample.labels.get("flow_schema", "")
            if not schema.startswith(prefix):
                continue
            what = schema[len(prefix) :]
        key = f"{short}_{what}_{'s' if sample.name.endswith('_sum') else 'n'}"
        counts[key] = counts.get(key, 0.0) + sample.value


def delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}


# --- what the watches saw ----------------------------------------------------------------------------


class Recorder:
    """Watches in background threads; `seen` keeps first-seen times, `timelines` each change."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.seen: dict[tuple[str, ...], float] = {}
        self.timelines: dict[str, list[tuple[float, Any]]] = {}
        self.stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def first(self, key: tuple[str, ...]) -> None:
        with self.cond:
            if key not in self.seen:
                self.seen[key] = time.time()
                self.cond.notify_all()

    def change(self, key: str, value: Any) -> None:
        with self.cond:
            line = self.timelines.setdefault(key, [])
            if not line or line[-1][1] != value:
                line.append((time.time(), value))
                self.cond.notify_all()

    def last(self, key: str) -> Any:
        with self.cond:
            line = self.timelines.get(key)
            return line[-1][1] if line else None

    def wait(self, what: str, probe: Callable[[], Any], timeout: float) -> Any:
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                found = probe()
                if found:
                    return found
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
                self.cond.wait(min(left, 1.0))

    def watch(
        self,
        name: str,
        api: client.ApiClient,
        list_fn: Callable[..., Any],
        args: tuple[Any, ...],
        on_object: Callable[[dict[str, Any]], None],
    ) -> None:
        def run() -> None:
            version = ""
            while not self.stop.is_set():
                try:
                    if not version:
                        listed = list_fn(*args, _preload_content=False)
                        body = json.loads(listed.data)
                        for item in body.get("items") or []:
                            on_object(item)
                        version = body["metadata"]["resourceVersion"]
                    stream = watch.Watch().stream(
                        list_fn,
                        *args,
                        resource_version=version,
                        timeout_seconds=60,
                        deserialize=False,  # plain dicts: no model classes for thousands of events
                    )
                    for event in stream:
                        obj = event["object"]
                        if event["type"] == "ERROR":  # 410 Gone as an event: list again
                            version = ""
                            break
                        version = obj["metadata"]["resourceVersion"]
                        if event["type"] in ("ADDED", "MODIFIED"):
                            on_object(obj)
                        if self.stop.is_set():
                            break
                except client.ApiException as error:
                    if error.status == 410:
                        version = ""
                    else:
                        time.sleep(1)
                except Exception as error:  # a dropped connection: watch again
                    log(f"watch {name}: {type(error).__name__}: {error}"[:300])
                    time.sleep(1)

        thread = threading.Thread(target=run, name=f"watch-{name}", daemon=True)
        thread.start()
        self._threads.append(thread)


# --- a controller process ----------------------------------------------------------------------------


# --- the two sides -------------------------------------------------------------------------------------


_HISTOGRAMS = (
    "modeldeploy_operator_queue_wait_seconds",
    "modeldeploy_operator_reconcile_duration_seconds",
    "modeldeploy_operator_gc_pause_seconds",
    "modeldeploy_operator_reconcile_cpu_seconds",
    "modeldeploy_operator_api_request_duration_seconds",
)
_BOUNDS = ("0.01", "0.05", "0.1", "0.25", "0.5", "1.0")
"""The histograms' bounds kept per phase (count at or under each: the count above is _count minus it)."""


def _histogram_sample(name: str, labels: dict[str, str], value: float, found: dict[str, float]) -> None:
    """Per phase (the marks' deltas): how many passes waited in the queue, took, were paused by a
    garbage collection, or requests took, at or under each bound (the operator's histograms)."""
    short = name.removeprefix("modeldeploy_operator_")
    if "verb" in labels:
        short = short.replace("api_request", f"api_{labels['verb']}")
    if "generation" in labels:
        short = short.replace("gc_pause", f"gc{labels['generation']}_pause")
    if name.endswith("_bucket"):
        if labels.get("le") in _BOUNDS:
            found[f"{short.removesuffix('_bucket')}_le_{labels['le']}"] = value
    elif name.endswith(("_count", "_sum")):
        found[short] = value


@dataclass
class Side:
    """What differs between modeldeploy and Argo Rollouts; the scenario is shared."""

    name: str
    namespace: str
    api: client.ApiClient
    recorder: Recorder
    process: Process
    versions: dict[int, int] = field(default_factory=dict)
    metrics_url: str | None = None
    """The controller's own /metrics (modeldeploy: its passes and requests); None: not read."""

    def obj(self, i: int) -> str:
        return f"m{i:04d}"

    def own_counts(self) -> dict[str, float]:
        """The controller's own counters so far: reconcile passes, and its API requests by verb
        (leases left out); {} when it has none to read (or is not running)."""
        if self.metrics_url is None or not self.process.alive():
            return {}
        try:
            with urllib.request.urlopen(self.metrics_url, timeout=10) as response:  # noqa: S310
                text = response.read().decode()
        except OSError:
            return {}
        found: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == "modeldeploy_operator_reconciles_total":
                    found["passes"] = found.get("passes", 0.0) + sample.value
                elif sample.name.startswith(_HISTOGRAMS):
                    _histogram_sample(sample.name, sample.labels, sample.value, found)
                elif sample.name == "modeldeploy_operator_own_write_echoes_total":
                    found["own_echoes"] = found.get("own_echoes", 0.0) + sample.value
                elif (
                    sample.name == "modeldeploy_operator_api_requests_total"
                    and sample.labels.get("resource") != "leases"
                ):
                    verb = f"requests_{sample.labels.get('verb')}"
                    found[verb] = found.get(verb, 0.0) + sample.value
                    found["requests"] = found.get("requests", 0.0) + sample.value
        return found

    # workload
    def create(self, i: int) -> None: ...
    def change_model(self, i: int, version: int) -> None: ...
    def bump_generation(self, i: int, value: int) -> None: ...
    def start_watches(self) -> None: ...
    def created_at(self, i: int) -> float | None:
        raise NotImplementedError

    def created_parts(self, i: int) -> dict[str, float]:
        """When the bench's watch saw each workload object of a new object (what created_at waits on)."""
        return {}

    def revision_at(self, i: int, version: int) -> float | None:
        raise NotImplementedError

    def ready(self, i: int, version: int) -> bool:
        raise NotImplementedError

    def converged(self, i: int) -> bool:
        raise NotImplementedError

    def step_reactions(self, i: int, since: float) -> list[float]:
        raise NotImplementedError


class ModelDeploySide(Side):
    GROUP, VERSION, PLURAL = "modeldeploy.io", "v1alpha1", "modeldeployments"

    def body(self, i: int, version: int) -> dict[str, Any]:
        name = self.obj(i)
        return {
            "apiVersion": f"{self.GROUP}/{self.VERSION}",
            "kind": "ModelDeployment",
            "metadata": {"name": name},
            "spec": {
                # Never fetched: the pods are on kwok nodes and never run.
                "model": self.model(i, version),
                "replicas": 1,
                "resources": {"requests": {"cpu": "10m", "memory": "64Mi"}},
                "rollout": {
                    "strategy": "Canary",
                    "steps": [
                        {"setWeight": STEPS_WEIGHTS[0]},
                        {"pause": {"duration": f"{PAUSE_SECONDS}s"}},
                        {"setWeight": STEPS_WEIGHTS[1]},
                        {"pause": {"duration": f"{PAUSE_SECONDS}s"}},
                    ],
                    "progressDeadlineSeconds": 1800,
                    "scaleDownDelaySeconds": 0,
                },
                "revisionHistoryLimit": 10,
                "pods": {"serving": KWOK_PLACEMENT, "router": KWOK_PLACEMENT},
            },
        }

    def model(self, i: int, version: int) -> dict[str, Any]:
        return {
            "uri": f"http://10.244.0.1:9/models/{self.obj(i)}/v{version}",
            "format": "onnx",
            "version": str(version),
        }

    def custom(self) -> client.CustomObjectsApi:
        return client.CustomObjectsApi(self.api)

    def create(self, i: int) -> None:
        self.versions[i] = 1
        self.custom().create_namespaced_custom_object(
            self.GROUP, self.VERSION, self.namespace, self.PLURAL, self.body(i, 1)
        )

    def change_model(self, i: int, version: int) -> None:
        self.versions[i] = version
        self.custom().patch_namespaced_custom_object(
            self.GROUP,
            self.VERSION,
            self.namespace,
            self.PLURAL,
            self.obj(i),
            {"spec": {"model": self.model(i, version)}},
        )

    def bump_generation(self, i: int, value: int) -> None:
        self.custom().patch_namespaced_custom_object(
            self.GROUP,
            self.VERSION,
            self.namespace,
            self.PLURAL,
            self.obj(i),
            {"spec": {"revisionHistoryLimit": value}},
        )

    def start_watches(self) -> None:
        apps, core, rec = client.AppsV1Api(self.api), client.CoreV1Api(self.api), self.recorder

        def on_deployment(obj: dict[str, Any]) -> None:
            labels = obj["metadata"].get("labels") or {}
            owner = labels.get("modeldeploy.io/deployment")
            component = labels.get("app.kubernetes.io/component")
            if owner and component == "router":
                rec.first((owner, "router"))
            elif owner and component == "model-server":
                rec.first((owner, "server", labels.get("app.kubernetes.io/version", "")))

        def on_config_map(obj: dict[str, Any]) -> None:
            data = obj.get("data") or {}
            owner = (obj["metadata"].get("labels") or {}).get("modeldeploy.io/deployment")
            if owner and CONFIG_KEY in data:
                arms = RouterConfig.from_json(data[CONFIG_KEY]).arms
                rec.change(f"table/{owner}", tuple(sorted((a.revision, a.weight_bp) for a in arms)))

        def on_mdep(obj: dict[str, Any]) -> None:
            status = obj.get("status") or {}
            rec.change(
                f"status/{obj['metadata']['name']}",
                (
                    status.get("phase"),
                    status.get("modelVersion"),
                    status.get("canaryRevision"),
                    status.get("currentStepIndex"),
                    status.get("stepStartedAt"),
                    status.get("observedGeneration"),
                    obj["metadata"].get("generation"),
                ),
            )

        rec.watch("deployments", self.api, apps.list_namespaced_deployment, (self.namespace,), on_deployment)
        rec.watch("configmaps", self.api, core.list_namespaced_config_map, (self.namespace,), on_config_map)
        rec.watch(
            "modeldeployments",
            self.api,
            self.custom().list_namespaced_custom_object,
            (self.GROUP, self.VERSION, self.namespace, self.PLURAL),
            on_mdep,
        )

    def created_at(self, i: int) -> float | None:
        name = self.obj(i)
        router, server = (
            self.recorder.seen.get((name, "router")),
            self.recorder.seen.get((name, "server", "1")),
        )
        return max(router, server) if router and server else None

    def created_parts(self, i: int) -> dict[str, float]:
        name = self.obj(i)
        found = {
            "server_seen_s": self.recorder.seen.get((name, "server", "1")),
            "router_seen_s": self.recorder.seen.get((name, "router")),
        }
        return {k: v for k, v in found.items() if v is not None}

    def revision_at(self, i: int, version: int) -> float | None:
        return self.recorder.seen.get((self.obj(i), "server", str(version)))

    def ready(self, i: int, version: int) -> bool:
        status = self.recorder.last(f"status/{self.obj(i)}")
        return bool(status and status[0] == "Ready" and status[1] == str(version) and not status[2])

    def converged(self, i: int) -> bool:
        status = self.recorder.last(f"status/{self.obj(i)}")
        return bool(status and status[5] is not None and status[5] == status[6])

    def step_reactions(self, i: int, since: float) -> list[float]:
        # status: (phase, modelVersion, canaryRevision, currentStepIndex, stepStartedAt, ...)
        return pause_reactions(self.recorder, self.obj(i), since, lambda s: bool(s[2]), 3, 4)


class ArgoSide(Side):
    GROUP, VERSION, PLURAL = "argoproj.io", "v1alpha1", "rollouts"

    def custom(self) -> client.CustomObjectsApi:
        return client.CustomObjectsApi(self.api)

    def template(self, i: int, version: int) -> dict[str, Any]:
        name = self.obj(i)
        return {
            "metadata": {"labels": {"app": name, "model-version": str(version)}},
            "spec": {
                **KWOK_PLACEMENT,
                "containers": [
                    {
                        "name": "server",
                        "image": "registry.k8s.io/pause:3.10",
                        "env": [{"name": "MODEL_VERSION", "value": str(version)}],
                        "resources": {"requests": {"cpu": "10m", "memory": "64Mi"}},
                    }
                ],
            },
        }

    def create(self, i: int) -> None:
        name, core = self.obj(i), client.CoreV1Api(self.api)
        self.versions[i] = 1
        for service in (name, f"{name}-canary"):
            core.create_namespaced_service(
                self.namespace,
                {
                    "metadata": {"name": service},
                    "spec": {"selector": {"app": name}, "ports": [{"port": 80, "targetPort": 8080}]},
                },
            )
        client.NetworkingV1Api(self.api).create_namespaced_ingress(
            self.namespace,
            {
                "metadata": {"name": name, "annotations": {"kubernetes.io/ingress.class": "nginx"}},
                "spec": {
                    "rules": [
                        {
                            "host": f"{name}.example",
                            "http": {
                                "paths": [
                                    {
                                        "path": "/",
                                        "pathType": "Prefix",
                                        "backend": {"service": {"name": name, "port": {"number": 80}}},
                                    }
                                ]
                            },
                        }
                    ]
                },
            },
        )
        body = {
            "apiVersion": f"{self.GROUP}/{self.VERSION}",
            "kind": "Rollout",
            "metadata": {"name": name},
            "spec": {
                "replicas": 1,
                "revisionHistoryLimit": 10,
                "selector": {"matchLabels": {"app": name}},
                "template": self.template(i, 1),
                "strategy": {
                    "canary": {
                        "canaryService": f"{name}-canary",
                        "stableService": name,
                        "trafficRouting": {"nginx": {"stableIngress": name}},
                        "scaleDownDelaySeconds": 0,
                        "steps": [
                            {"setWeight": STEPS_WEIGHTS[0]},
                            {"pause": {"duration": f"{PAUSE_SECONDS}s"}},
                            {"setWeight": STEPS_WEIGHTS[1]},
                            {"pause": {"duration": f"{PAUSE_SECONDS}s"}},
                        ],
                    }
                },
            },
        }
        self.custom().create_namespaced_custom_object(
            self.GROUP, self.VERSION, self.namespace, self.PLURAL, body
        )

    def change_model(self, i: int, version: int) -> None:
        self.versions[i] = version
        self.custom().patch_namespaced_custom_object(
            self.GROUP,
            self.VERSION,
            self.namespace,
            self.PLURAL,
            self.obj(i),
            {"spec": {"template": self.template(i, version)}},
        )

    def bump_generation(self, i: int, value: int) -> None:
        self.custom().patch_namespaced_custom_object(
            self.GROUP,
            self.VERSION,
            self.namespace,
            self.PLURAL,
            self.obj(i),
            {"spec": {"revisionHistoryLimit": value}},
        )

    def start_watches(self) -> None:
        apps, net, rec = client.AppsV1Api(self.api), client.NetworkingV1Api(self.api), self.recorder

        def on_replica_set(obj: dict[str, Any]) -> None:
            labels = obj["metadata"].get("labels") or {}
            if labels.get("app") and labels.get("model-version"):
                rec.first((labels["app"], "rs", labels["model-version"]))

        def on_ingress(obj: dict[str, Any]) -> None:
            meta = obj["metadata"]
            owner = next(
                (r["name"] for r in meta.get("ownerReferences") or [] if r["kind"] == "Rollout"), None
            )
            weight = (meta.get("annotations") or {}).get("nginx.ingress.kubernetes.io/canary-weight")
            if owner and weight is not None:
                rec.change(f"table/{owner}", weight)

        def on_rollout(obj: dict[str, Any]) -> None:
            status = obj.get("status") or {}
            pauses = status.get("pauseConditions") or []
            rec.change(
                f"status/{obj['metadata']['name']}",
                (
                    status.get("phase"),
                    status.get("stableRS"),
                    status.get("currentPodHash"),
                    status.get("currentStepIndex"),
                    pauses[0].get("startTime") if pauses else None,
                    str(status.get("observedGeneration")),
                    str(obj["metadata"].get("generation")),
                    (obj["spec"]["template"]["metadata"].get("labels") or {}).get("model-version"),
                ),
            )

        rec.watch(
            "replicasets", self.api, apps.list_namespaced_replica_set, (self.namespace,), on_replica_set
        )
        rec.watch("ingresses", self.api, net.list_namespaced_ingress, (self.namespace,), on_ingress)
        rec.watch(
            "rollouts",
            self.api,
            self.custom().list_namespaced_custom_object,
            (self.GROUP, self.VERSION, self.namespace, self.PLURAL),
            on_rollout,
        )

    def created_at(self, i: int) -> float | None:
        return self.recorder.seen.get((self.obj(i), "rs", "1"))

    def revision_at(self, i: int, version: int) -> float | None:
        return self.recorder.seen.get((self.obj(i), "rs", str(version)))

    def ready(self, i: int, version: int) -> bool:
        status = self.recorder.last(f"status/{self.obj(i)}")
        return bool(
            status
            and status[0] == "Healthy"
            and status[1]
            and status[1] == status[2]
            and status[7] == str(version)
            and status[5] == status[6]
        )

    def converged(self, i: int) -> bool:
        status = self.recorder.last(f"status/{self.obj(i)}")
        return bool(status and status[5] == status[6])

    def step_reactions(self, i: int, since: float) -> list[float]:
        # status: (phase, stableRS, currentPodHash, currentStepIndex, pause startTime, ...)
        return pause_reactions(self.recorder, self.obj(i), since, lambda s: s[1] != s[2], 3, 4)


def pause_reactions(
    rec: Recorder, name: str, since: float, in_rollout: Callable[[Any], bool], step: int, started: int
) -> list[float]:
    """Per pause step (indexes 1 and 3) of the rollout started at `since`: the router table's first
    change after the pause's due time (its start as written in status, whole seconds, plus its
    duration), minus that due time. A change half a pause before the due time or earlier is the
    setWeight that began the pause (the two watches deliver independently), not its end."""
    with rec.cond:
        statuses = list(rec.timelines.get(f"status/{name}", []))
        tables = list(rec.timelines.get(f"table/{name}", []))
    found = []
    for pause_index in (1, 3):
        entered = next(
            (
                s
                for t, s in statuses
                if t >= since and in_rollout(s) and s[step] == pause_index and s[started]
            ),
            None,
        )
        if entered is None:
            continue
        due = (rfc3339(entered[started]) or 0.0) + PAUSE_SECONDS
        change = next((t for t, _ in tables if t > due - PAUSE_SECONDS / 2), None)
        if change is not None:
            found.append(change - due)
    return found


# --- the scenario ------------------------------------------------------------------------------------


@dataclass
class Options:
    count: int
    samples: int = 20
    idle_seconds: float = 120.0
    at_once: int = 100
    restart: bool = True
    rollouts: bool = True
    workers: int = 4
    only_reaction: bool = False
    """Only the creation and the reaction samples: no idle window, rollouts or restart."""
    dump_objects: Path | None = None
    """Write the namespace's objects of every kind the operator caches here, once all are created."""
    sample_gap: float = 0.0
    """Seconds between one reaction sample's end and the next one's start (apply and model change).
    0: back to back, so 20-40 rollouts start within 3-6 s and the later samples meet the earlier ones'
    follow-up work (their Services, budgets, ReplicaSets and pods): a burst. A gap measures one change's
    reaction with the cluster otherwise at its steady pace (docs/benchmarks.md, 2026-12-06)."""
    delete_namespace: bool = True
    """Delete the side's namespace at its end, with the controller running (the `namespace_deletion`
    phase); False leaves it to the control plane's end (a private one goes with everything in it)."""


def summary(values: list[float]) -> dict[str, Any]:
    return {
        "n": len(values),
        "p50_s": None if not values else round(percentile(values, 0.5) or 0.0, 3),
        "p99_s": None if not values else round(percentile(values, 0.99) or 0.0, 3),
        "max_s": None if not values else round(max(values), 3),
    }


def cpu_by_process(side: Side, counts: ApiServerCounts) -> dict[str, float]:
    """CPU seconds so far (utime + stime) of the private control plane's processes (none on the shared
    cluster), the side's controller and this script (its watches parse every event they get)."""
    found = {name: p.cpu_seconds() for name, p in counts.processes.items() if p.alive()}
    if side.process.alive():
        found["controller"] = side.process.cpu_seconds()
    own = os.times()
    found["bench"] = own.user + own.system
    return found


def run_side(side: Side, opts: Options, counts: ApiServerCounts, who: str) -> dict[str, Any]:
    """Every phase on one side; phases after a failed one are not run (the error propagates)."""
    result: dict[str, Any] = {"side": side.name, "count": opts.count}
    side.start_watches()
    side.process.start()
    time.sleep(1)
    if not side.process.alive():
        raise RuntimeError(f"{side.name} exited at start: see {side.process.log_path}")
    marks = [("start", side.own_counts(), counts.read(who), cpu_by_process(side, counts), time.time())]

    def mark(phase: str) -> None:
        """What the phase cost: the controller's passes and requests (its own counters), the API
        server's count of its requests by class, and the CPU seconds of each process of the machine's
        control plane, the controller's and this script's, from the previous mark to this one."""
        own, server, cpu, now = side.own_counts(), counts.read(who), cpu_by_process(side, counts), time.time()
        _, own_before, server_before, cpu_before, then = marks[-1]
        marks.append((phase, own, server, cpu, now))
        result.setdefault("phases", {})[phase] = {
            "seconds": round(now - then, 1),
            "controller": {k: round(v, 1) for k, v in delta(own_before, own).items() if v},
            "api_server": {k: round(v, 1) for k, v in delta(server_before, server).items() if v},
            "cpu_seconds": {k: round(v, 1) for k, v in delta(cpu_before, cpu).items()},
        }

    phase_create(side, opts, result)
    wait_quiet(side, opts.count)
    mark("create_until_quiet")
    result["rss_mib_after_create"] = round(side.process.rss_mib(), 1)
    if opts.dump_objects is not None:
        dump_objects(side, opts.dump_objects / f"objects-{side.name}-{opts.count}.json")
    if not opts.only_reaction:
        phase_idle(side, opts, counts, who, result)
        mark("idle_window")
    chosen = phase_reaction(side, opts, result)
    mark("reaction_samples")
    if opts.only_reaction:
        return result
    if opts.rollouts:
        phase_rollouts(side, opts, result)
        mark("rollouts")
    if opts.restart:
        phase_restart(side, opts.count + len(chosen), result)
    return result


def phase_create(side: Side, opts: Options, result: dict[str, Any]) -> None:
    """N objects at once (a few client threads), until every one is ready."""
    n = opts.count
    log(f"{side.name}: creating {n} objects")
    created: dict[int, float] = {}

    def make(i: int) -> None:
        created[i] = time.time()
        side.create(i)

    started = time.time()
    with ThreadPoolExecutor(opts.workers) as pool:
        list(pool.map(make, range(n)))
    side.recorder.wait(
        f"{side.name}: all {n} ready", lambda: all(side.ready(i, 1) for i in range(n)), 300 + 3 * n
    )
    result["bulk_create_all_ready_s"] = round(time.time() - started, 1)
    result["bulk_apply_to_created"] = summary([(side.created_at(i) or 0.0) - created[i] for i in range(n)])
    log(f"{side.name}: all ready in {result['bulk_create_all_ready_s']} s")


CACHED_KINDS = (
    # (path under the API server, kind): what the operator's informers cache (reconciler.cached_kinds),
    # and its ModelDeployments (the controller keeps their bodies).
    ("/api/v1", "pods", "Pod"),
    ("/apis/apps/v1", "replicasets", "ReplicaSet"),
    ("/apis/apps/v1", "deployments", "Deployment"),
    ("/api/v1", "services", "Service"),
    ("/api/v1", "configmaps", "ConfigMap"),
    ("/api/v1", "serviceaccounts", "ServiceAccount"),
    ("/apis/policy/v1", "poddisruptionbudgets", "PodDisruptionBudget"),
    ("/apis/rbac.authorization.k8s.io/v1", "roles", "Role"),
    ("/apis/rbac.authorization.k8s.io/v1", "rolebindings", "RoleBinding"),
    ("/apis/networking.k8s.io/v1", "networkpolicies", "NetworkPolicy"),
    ("/apis/autoscaling/v2", "horizontalpodautoscalers", "HorizontalPodAutoscaler"),
    ("/apis/modeldeploy.io/v1alpha1", "modeldeployments", "ModelDeployment"),
)


def dump_objects(side: Side, path: Path) -> None:
    """The bench namespace's objects of every cached kind, as the API server lists them (the input of
    bench/operator/cache_memory.py). Labelled ones only, as the operator's informers select them
    (ModelDeployments and HPAs: all)."""
    found: dict[str, list[dict[str, Any]]] = {}
    for root, plural, kind in CACHED_KINDS:
        query = (
            []
            if kind in ("ModelDeployment", "HorizontalPodAutoscaler")
            else [("labelSelector", "modeldeploy.io/deployment")]
        )
        response = side.api.call_api(
            *side.api.param_serialize(
                "GET",
                f"{root}/namespaces/{side.namespace}/{plural}",
                query_params=query,
                auth_settings=["BearerToken"],
            )
        )
        items = json.loads(response.read())["items"]
        for item in items:
            item.setdefault("apiVersion", root.removeprefix("/apis/").removeprefix("/api/"))
            item.setdefault("kind", kind)
        found[kind] = items
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        json.dumps({"namespace": side.namespace, "count": len(found["ModelDeployment"]), "kinds": found})
    )
    log(f"{side.name}: {sum(len(v) for v in found.values())} objects written to {path}")


def wait_quiet(side: Side, n: int) -> None:
    """Until 15 s without any status or table change."""
    rec = side.recorder

    def quiet_since() -> float:
        with rec.cond:
            return max((line[-1][0] for line in rec.timelines.values() if line), default=0.0)

    wait_until(f"{side.name}: quiet", lambda: time.time() - quiet_since() > 15, 120 + n, interval=1.0)


def phase_idle(side: Side, opts: Options, counts: ApiServerCounts, who: str, result: dict[str, Any]) -> None:
    """After 15 s without any status or table change: the controller's requests, CPU and RSS."""
    n = opts.count
    wait_quiet(side, n)
    before, cpu_before, t0 = counts.read(who), side.process.cpu_seconds(), time.time()
    time.sleep(opts.idle_seconds)
    after, cpu_after, t1 = counts.read(who), side.process.cpu_seconds(), time.time()
    minutes = (t1 - t0) / 60
    classes = {kind for kind, _ in REQUEST_CLASSES}  # (request counts; the times aside)
    by_class = {k: v for k, v in delta(before, after).items() if k in classes}
    total = sum(by_class.values()) / minutes
    result["idle"] = {
        "seconds": round(t1 - t0, 1),
        "requests_per_min": round(total, 1),
        "requests_per_min_by_class": {k: round(v / minutes, 1) for k, v in by_class.items()},
        "requests_per_object_per_min": round(total / n, 3),
        "requests_per_object_per_min_without_leases": round((total - by_class["leases"] / minutes) / n, 3),
        "cpu_cores": round((cpu_after - cpu_before) / (t1 - t0), 3),
        "rss_mib": round(side.process.rss_mib(), 1),
    }
    log(f"{side.name}: idle {result['idle']}")


def phase_reaction(side: Side, opts: Options, result: dict[str, Any]) -> list[int]:
    """At steady state, one object at a time: apply -> created, model change -> new revision; then
    the step reactions of those rollouts. Returns the objects rolled out."""
    rec, n = side.recorder, opts.count
    samples = min(opts.samples, n)
    applied, timelines = [], []
    for k in range(samples):
        i = n + k
        t = time.time()
        side.create(i)
        returned = time.time()
        rec.wait(f"{side.name}: {side.obj(i)} created", functools.partial(side.created_at, i), 120)
        applied.append((side.created_at(i) or 0.0) - t)
        time.sleep(opts.sample_gap)
        timelines.append(
            {"object": side.obj(i), "apply_at": round(t, 4), "apply_returned_s": round(returned - t, 4)}
            | {what: round(at - t, 4) for what, at in side.created_parts(i).items()}
        )
    result["apply_to_created"] = summary(applied)
    # Each sample's times from the start of its create request: the request itself, then each workload
    # object seen by the bench's watch (apply_at on this machine's clock, to match with a controller log).
    result["apply_to_created_samples"] = timelines
    chosen = list(range(0, n, max(1, n // samples)))[:samples]
    changed, steps, since, changes = [], [], {}, []
    for i in chosen:
        t = since[i] = time.time()
        side.change_model(i, 2)
        returned = time.time()
        rec.wait(f"{side.name}: {side.obj(i)} v2 revision", functools.partial(side.revision_at, i, 2), 120)
        changed.append((side.revision_at(i, 2) or 0.0) - t)
        time.sleep(opts.sample_gap)
        changes.append(
            {
                "object": side.obj(i),
                "change_at": round(t, 4),
                "change_returned_s": round(returned - t, 4),
                "revision_seen_s": round(changed[-1], 4),
            }
        )
    result["model_change_to_revision"] = summary(changed)
    # Each sample's patch request and when the new revision was seen, from the patch's start (change_at
    # on this machine's clock, to match with a controller log, as apply_at above).
    result["model_change_samples"] = changes
    rec.wait(
        f"{side.name}: the sampled rollouts promoted",
        lambda: all(side.ready(i, 2) for i in chosen),
        120 + 4 * PAUSE_SECONDS + 2 * samples,
    )
    for i in chosen:
        steps.extend(side.step_reactions(i, since[i]))
    result["step_due_to_table"] = summary(steps)
    log(f"{side.name}: apply {result['apply_to_created']}")
    log(f"{side.name}: model {result['model_change_to_revision']}, step {result['step_due_to_table']}")
    return chosen


def phase_rollouts(side: Side, opts: Options, result: dict[str, Any]) -> None:
    """One canary rollout alone, then min(N - 1, at_once) at once: each from its patch to promoted."""
    rec, n = side.recorder, opts.count
    lone = n - 1
    t = time.time()
    side.change_model(lone, 3)
    rec.wait(f"{side.name}: one rollout", lambda: side.ready(lone, 3), 300)
    result["one_rollout_s"] = round(time.time() - t, 1)
    many = [i for i in range(n) if i != lone][: opts.at_once]
    if not many:
        return
    patched: dict[int, float] = {}

    def roll(i: int) -> None:
        patched[i] = time.time()
        side.change_model(i, 3)

    t = time.time()
    with ThreadPoolExecutor(opts.workers) as pool:
        list(pool.map(roll, many))
    done: dict[int, float] = {}

    def all_done() -> bool:
        for i in many:
            if i not in done and side.ready(i, 3):
                done[i] = time.time()
        return len(done) == len(many)

    rec.wait(f"{side.name}: {len(many)} rollouts at once", all_done, 300 + 6 * len(many))
    result["rollouts_at_once"] = {
        "count": len(many),
        "all_done_s": round(max(done.values()) - t, 1),
        **summary([done[i] - patched[i] for i in many]),
    }
    log(f"{side.name}: one rollout {result['one_rollout_s']} s, at once {result['rollouts_at_once']}")


def phase_restart(side: Side, total: int, result: dict[str, Any]) -> None:
    """Stop the controller, give every object a new generation, start it: until all are observed."""
    side.process.stop()
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda i: side.bump_generation(i, 9), range(total)))
    side.recorder.wait(
        f"{side.name}: the new generations seen",
        lambda: not any(side.converged(i) for i in range(total)),
        120,
    )
    side.process.start()
    side.recorder.wait(
        f"{side.name}: converged after restart",
        lambda: all(side.converged(i) for i in range(total)),
        300 + 2 * total,
    )
    result["restart_converged_s"] = round(time.time() - side.process.started_at, 1)
    result["rss_mib_after_restart"] = round(side.process.rss_mib(), 1)
    log(f"{side.name}: converged {result['restart_converged_s']} s after restart")


def apply_crds(api: client.ApiClient, paths: list[Path]) -> None:
    """Create or replace CRDs (this checkout's, or Argo Rollouts' from its module) and wait until
    they are established."""
    extensions = client.ApiextensionsV1Api(api)
    names = []
    for path in paths:
        body = yaml.safe_load(path.read_text())
        names.append(body["metadata"]["name"])
        try:
            current = extensions.read_custom_resource_definition(names[-1])
        except client.ApiException as error:
            if error.status != 404:
                raise
            extensions.create_custom_resource_definition(body)
        else:
            body["metadata"]["resourceVersion"] = current.metadata.resource_version
            extensions.replace_custom_resource_definition(names[-1], body)

    def established() -> bool:
        for name in names:
            crd = extensions.read_custom_resource_definition(name)
            if not any(c.type == "Established" and c.status == "True" for c in crd.status.conditions or []):
                return False
        return True

    wait_until("the CRDs to be established", established, 60)


OPERATOR_SETTINGS: dict[str, str] = {}
"""--operator-setting NAME=VALUE: the operator's MODELDEPLOY_OPERATOR_<NAME> for an A/B run (the
environment's own MODELDEPLOY_* are not passed on to it: modeldeploy_testcluster.private.Process)."""


def modeldeploy_side(api: client.ApiClient, layout: Layout, namespace: str, work: Path, who: str) -> Side:
    apply_crds(api, [REPO / "crds" / "modeldeploy.io_modeldeployments.yaml"])
    server = ApiServerCounts(layout)
    wait_until(
        "modeldeployments in discovery",
        lambda: server.discovered("modeldeploy.io/v1alpha1", "modeldeployments"),
        60,
    )
    kubeconfig = identity_kubeconfig(api, layout, who, namespace, work / f"{who}.kubeconfig")
    env = {
        "KUBECONFIG": str(kubeconfig),
        "MODELDEPLOY_OPERATOR_NAMESPACES": namespace,
        "MODELDEPLOY_OPERATOR_LEASE_NAMESPACE": SYSTEM_NAMESPACE,
        "MODELDEPLOY_OPERATOR_LEASE_NAME": who,
        "MODELDEPLOY_OPERATOR_HEALTH_PORT": str(_free_port()),
        "MODELDEPLOY_OPERATOR_METRICS_PORT": str(_free_port()),
        **{f"MODELDEPLOY_OPERATOR_{name.upper()}": value for name, value in OPERATOR_SETTINGS.items()},
    }
    binary = Path(sys.executable).parent / "modeldeploy-operator"
    process = Process([str(binary)], env, work / f"{who}.log")
    metrics = f"http://127.0.0.1:{env['MODELDEPLOY_OPERATOR_METRICS_PORT']}/metrics"
    return ModelDeploySide("modeldeploy", namespace, api, Recorder(), process, metrics_url=metrics)


def argo_binary() -> Path:
    return binaries_dir() / "rollouts-controller"


def argo_side(api: client.ApiClient, layout: Layout, namespace: str, work: Path, who: str) -> Side:
    apply_crds(api, sorted((cache_dir() / "argo-rollouts-crds" / ARGO_ROLLOUTS_VERSION).glob("*.yaml")))
    server = ApiServerCounts(layout)
    wait_until("rollouts in discovery", lambda: server.discovered("argoproj.io/v1alpha1", "rollouts"), 60)
    kubeconfig = identity_kubeconfig(api, layout, who, namespace, work / f"{who}.kubeconfig")
    argv = [
        str(argo_binary()),
        f"--kubeconfig={kubeconfig}",
        "--namespaced",
        f"--namespace={namespace}",
        f"--metricsPort={_free_port()}",
        f"--healthzPort={_free_port()}",
    ]
    process = Process(argv, {"POD_NAMESPACE": SYSTEM_NAMESPACE}, work / f"{who}.log")
    return ArgoSide("argo-rollouts", namespace, api, Recorder(), process)


@contextlib.contextmanager
def in_cluster_operators_stopped(api: client.ApiClient) -> Iterator[None]:
    """A modeldeploy release installed by a test session reconciles every namespace: scaled to 0 for
    the run (it would reconcile the bench's objects too) and restored after."""
    apps = client.AppsV1Api(api)
    found = [
        d
        for d in apps.list_deployment_for_all_namespaces(label_selector=OPERATOR_SELECTOR).items
        if (d.spec.replicas or 0) > 0
    ]
    for d in found:
        apps.patch_namespaced_deployment_scale(
            d.metadata.name, d.metadata.namespace, {"spec": {"replicas": 0}}
        )
    try:
        if found:
            core = client.CoreV1Api(api)
            wait_until(
                "the in-cluster operator to stop",
                lambda: (
                    not [
                        p
                        for d in found
                        for p in core.list_namespaced_pod(
                            d.metadata.namespace, label_selector=OPERATOR_SELECTOR
                        ).items
                        if p.status.phase not in ("Succeeded", "Failed")
                    ]
                ),
                90,
            )
        yield
    finally:
        for d in found:
            apps.patch_namespaced_deployment_scale(
                d.metadata.name, d.metadata.namespace, {"spec": {"replicas": d.spec.replicas}}
            )


KWOK_PODS_PER_NODE = 200
"""Simulated pods per extra kwok node: kwok gives pod IPs from the node's /24 podCIDR (254 addresses)."""


@contextlib.contextmanager
def kwok_capacity(api: client.ApiClient, layout: Layout, pods: int) -> Iterator[None]:
    """Enough kwok nodes for `pods` simulated pods (the harness has two); the extra ones are removed
    after. Named kwok-node-scale-K and given /24s after the harness's own in its kwok range."""
    import ipaddress

    core = client.CoreV1Api(api)
    wanted = max(0, math.ceil(pods / KWOK_PODS_PER_NODE) - layout.kwok_node_count)
    subnets = list(ipaddress.ip_network(layout.kwok_pod_cidr).subnets(new_prefix=24))
    names = []
    for k in range(wanted):
        name = f"kwok-node-scale-{k}"
        subnet = str(subnets[layout.kwok_node_count + k])
        body = nodes.kwok_node(name, subnet)
        with contextlib.suppress(client.ApiException):
            core.create_node(body)
        names.append(name)
    if names:
        log(f"{len(names)} extra kwok nodes for {pods} pods")

        def ready() -> bool:
            found = {n.metadata.name: n for n in core.list_node(label_selector="type=kwok").items}
            return all(
                name in found
                and any(c.type == "Ready" and c.status == "True" for c in found[name].status.conditions or [])
                for name in names
            )

        wait_until("the extra kwok nodes Ready", ready, 120)
    try:
        yield
    finally:
        for name in names:
            with contextlib.suppress(client.ApiException):
                core.delete_node(name)


SIDES: dict[str, tuple[str, Callable[..., Side], int]] = {
    # name: (identity, factory, FlowSchema precedence)
    "modeldeploy": ("modeldeploy-operator", modeldeploy_side, 50),
    "argo": ("argo-rollouts", argo_side, 70),
}


def run(
    layout: Layout,
    counts_wanted: list[int],
    opts: Options,
    sides: list[str],
    work: Path,
    on_result: Callable[[list[dict[str, Any]]], None] = lambda _: None,
) -> list[dict[str, Any]]:
    """Each N, each side in turn (one controller at a time, each in a fresh namespace)."""
    api = nodes.admin_api(layout)
    core = client.CoreV1Api(api)
    counts = ApiServerCounts(layout)
    results: list[dict[str, Any]] = []
    if "argo" in sides and not argo_binary().exists():
        log(f"{argo_binary()} is missing (tests/cluster/build-binaries.sh argo-rollouts): modeldeploy only")
        sides = [s for s in sides if s != "argo"]
    for side_name in sides:
        who, _, precedence = SIDES[side_name]
        install_flow_schemas(api, who, precedence)
    most = max(counts_wanted) + opts.samples
    with in_cluster_operators_stopped(api), kwok_capacity(api, layout, 3 * most + 50):
        for n in counts_wanted:
            for side_name in sides:
                who, make, _ = SIDES[side_name]
                namespace = f"scale-{side_name}-{n}"
                delete_namespace(core, namespace, 300 + n)
                ensure_namespace(core, namespace)
                side = make(api, layout, namespace, work, who)
                try:
                    results.append(run_side(side, replace(opts, count=n), counts, who))
                    on_result(results)
                except BaseException:
                    # What every watch saw, for the post-mortem (the objects go with the namespace).
                    with side.recorder.cond:
                        dump = dict(side.recorder.timelines)
                    (work / f"{side_name}-{n}-timelines.json").write_text(
                        json.dumps(dump, indent=0, default=str)
                    )
                    raise
                finally:
                    try:
                        if opts.delete_namespace:
                            deletion_phase(side, core, counts, who, namespace, n, results, on_result)
                    finally:
                        side.process.stop()
                        side.recorder.stop.set()
    return results


def deletion_phase(
    side: Side,
    core: client.CoreV1Api,
    counts: ApiServerCounts,
    who: str,
    namespace: str,
    n: int,
    results: list[dict[str, Any]],
    on_result: Callable[[list[dict[str, Any]]], None],
) -> None:
    """The side's namespace deleted while the controller runs (it removes its own finalizers), and
    what the controller did meanwhile."""
    log(f"{side.name}: deleting {namespace}")
    if not side.process.alive():
        side.process.start()
    own, server, started = side.own_counts(), counts.read(who), time.time()
    delete_namespace(core, namespace, 600 + 2 * n)
    # What the controller did while its namespace went: re-creating what the
    # deletion removes is refused (403, the namespace is terminating).
    deletion = {
        "seconds": round(time.time() - started, 1),
        "controller": {k: round(v, 1) for k, v in delta(own, side.own_counts()).items() if v},
        "api_server": {k: round(v, 1) for k, v in delta(server, counts.read(who)).items() if v},
    }
    if results and results[-1]["side"] == side.name and results[-1]["count"] == n:
        results[-1].setdefault("phases", {})["namespace_deletion"] = deletion
        on_result(results)
    log(f"{side.name}: namespace deleted {deletion}")


def table(results: list[dict[str, Any]]) -> str:
    def ms(part: dict[str, Any] | None) -> str:
        low, high = ((part or {}).get(k) for k in ("p50_s", "p99_s"))
        return "-" if low is None or high is None else f"{low * 1000:.0f} / {high * 1000:.0f}"

    rows = [
        "| controller | N | apply→created p50/p99 ms | model→revision p50/p99 ms | step due→table p50/p99 ms "
        "| idle req/min (per object) | CPU cores idle | RSS MiB | restart→converged s | 1 rollout s "
        "| 100 at once: p50/max s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        idle = r.get("idle", {})
        many = r.get("rollouts_at_once", {})
        rows.append(
            f"| {r['side']} | {r['count']} "
            f"| {ms(r.get('apply_to_created'))} | {ms(r.get('model_change_to_revision'))} "
            f"| {ms(r.get('step_due_to_table'))} "
            f"| {idle.get('requests_per_min')} ({idle.get('requests_per_object_per_min')}) "
            f"| {idle.get('cpu_cores')} | {idle.get('rss_mib')} | {r.get('restart_converged_s', '-')} "
            f"| {r.get('one_rollout_s', '-')} | {many.get('p50_s', '-')} / {many.get('max_s', '-')} |"
        )
    return "\n".join(rows)


def _git_head() -> str:
    """The checkout's commit, and whether it has changes (which code a JSON measured)."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(REPO), *args], check=False, capture_output=True, text=True
        ).stdout.strip()

    return git("rev-parse", "--short", "HEAD") + (
        " (changed)" if git("status", "--porcelain", "--", "operator") else ""
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--count", type=int, action="append", help="ModelDeployments (repeatable; default 100)"
    )
    parser.add_argument("--samples", type=int, default=20, help="reaction samples per kind (default 20)")
    parser.add_argument("--idle-seconds", type=float, default=120.0, help="idle window (default 120)")
    parser.add_argument("--at-once", type=int, default=100, help="rollouts started together (default 100)")
    parser.add_argument("--argo", action="store_true", help="also Argo Rollouts (needs its build)")
    parser.add_argument("--no-modeldeploy", action="store_true", help="Argo Rollouts only")
    parser.add_argument("--no-rollouts", action="store_true", help="skip one-alone and many-at-once")
    parser.add_argument("--no-restart", action="store_true")
    parser.add_argument(
        "--only-reaction",
        action="store_true",
        help="only create the N objects and take the reaction samples (no idle window, rollouts or restart)",
    )
    parser.add_argument(
        "--no-namespace-deletion",
        action="store_true",
        help="do not delete each side's namespace at its end (at N = 1,000 the deletion takes about 4 min; "
        "a private control plane goes with everything in it)",
    )
    parser.add_argument(
        "--sample-gap",
        type=float,
        default=0.0,
        help="seconds between reaction samples (default 0: back to back, a burst of rollouts)",
    )
    parser.add_argument("--json", type=Path, help="write the results here too")
    parser.add_argument(
        "--dump-objects",
        type=Path,
        help="write the namespace's cached kinds here once all are created (bench/operator/cache_memory.py)",
    )
    parser.add_argument("--keep-cluster", action="store_true", help="leave a cluster this run started")
    parser.add_argument(
        "--operator-setting",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an operator setting for this run (repeatable; config.py's name, e.g. reconcile_workers=8)",
    )
    parser.add_argument(
        "--private-control-plane",
        action="store_true",
        help="run on a control plane of the bench's own on 127.0.0.1 (etcd, kube-apiserver, "
        "controller-manager, scheduler, kwok) instead of the shared local cluster",
    )
    args = parser.parse_args(argv)
    wanted = args.count or [100]
    if any(c < 1 for c in wanted) or args.samples < 1 or args.idle_seconds <= 0 or args.sample_gap < 0:
        parser.error("--count and --samples must be >= 1, --idle-seconds > 0, --sample-gap >= 0")
    for setting in args.operator_setting:
        name, eq, value = setting.partition("=")
        if not eq or not re.fullmatch(r"[a-z][a-z0-9_]*", name):
            parser.error(f"--operator-setting {setting!r}: NAME=VALUE, NAME a setting of config.py")
        OPERATOR_SETTINGS[name] = value
    opts = Options(
        count=0,
        samples=args.samples,
        idle_seconds=args.idle_seconds,
        at_once=args.at_once,
        restart=not args.no_restart,
        rollouts=not args.no_rollouts,
        only_reaction=args.only_reaction,
        dump_objects=args.dump_objects,
        delete_namespace=not args.no_namespace_deletion,
        sample_gap=args.sample_gap,
    )
    sides = ([] if args.no_modeldeploy else ["modeldeploy"]) + (["argo"] if args.argo else [])
    if not sides:
        parser.error("nothing to run: --no-modeldeploy without --argo")
    work = Path(tempfile.mkdtemp(prefix="scale-bench-"))
    started = time.time()
    load = os.getloadavg()
    head = _git_head()  # at the start: the checkout the controller runs (an edit meanwhile is not in it)

    def document(results: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "benchmark": "operator_scale",
            "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "command": " ".join(["bench/operator/scale.py", *(argv if argv is not None else sys.argv[1:])]),
            "load_average_at_start": [round(x, 1) for x in load],
            "load_average_now": [round(x, 1) for x in os.getloadavg()],
            "wall_seconds": round(time.time() - started),
            "pause_seconds": PAUSE_SECONDS,
            "sample_gap_seconds": opts.sample_gap,
            "operator_settings": dict(OPERATOR_SETTINGS),
            "git_head": head,
            "results": results,
        }

    def save(results: list[dict[str, Any]]) -> None:  # after each side: a cut-short run keeps its figures
        if args.json:
            args.json.write_text(json.dumps(document(results), indent=1))

    log(f"logs in {work}")
    session = (
        private_control_plane(work) if args.private_control_plane else cluster_session(args.keep_cluster)
    )
    with session as layout:
        # a PrivateLayout has every attribute run() reads of a Layout (duck-typed, private.py)
        results = run(cast(Layout, layout), wanted, opts, sides, work, on_result=save)
    save(results)
    print(table(results))
    print(json.dumps(document(results)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
