"""Faults on the local cluster under live traffic (issue 11, "Faults"); figures in docs/reliability.md.

- a serving pod killed (SIGKILL) under concurrent load with 3 ready replicas: no 502 while other
  backends are ready; the requests lost are only among those in flight at the kill, counted;
- the API server down (its process stopped, connections refused) for MODELDEPLOY_FAULT_APISERVER_SECONDS
  (30 by default; 120 for the figure): serving and routing carry on with zero failed requests, and the
  operator recovers with no duplicate objects, history entries or transition Events;
- Prometheus hanging, answering 2 GiB, redirecting, then blackholed: the operator stays up, another
  ModelDeployment's rollout keeps its timers, the checks read Inconclusive with a short message;
- etcd restarted mid-rollout: the rollout resumes at the same step (same index, same start time);
- a ModelDeployment, and a namespace holding one, deleted with the operator scaled to zero: both go.

Pods that only have to exist (rollouts, analysis, deletion) run on the kwok nodes: ready at once, no
container; pods that answer traffic run on the real node. Every load loop is bounded in requests and
time; every wait is on a condition.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from kubernetes import client

from modeldeploy_testcluster import controlplane
from modeldeploy_testcluster.layout import Layout
from modeldeploy_testcluster.nodes import KWOK_TOLERATION

from cluster_helpers import (
    FIRST_READY_SECONDS,
    SERVING,
    container_pids,
    create_mdep,
    get_mdep,
    patch_mdep,
    process_gone,
    wait_for,
)
from operator_fixtures import HOSTILE_PROMETHEUS_PORT, OPERATOR_PODS, PrivateOperator, print_operator_logs
from rollout_helpers import model, rows
from traffic import ready_endpoints

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.slow,
    pytest.mark.usefixtures("operator_release"),
]

KWOK = {"nodeSelector": {"type": "kwok"}, "tolerations": [KWOK_TOLERATION]}


def utc_mark(what: str) -> None:
    """A UTC timestamp for a fault test's step, to line it up with the cluster's and the operator's
    logs (the figures are monotonic offsets, which no log carries)."""
    print(f"UTC {datetime.now(UTC).isoformat(timespec='milliseconds')} {what}", flush=True)


def figure(text: str) -> None:
    """A measured figure: printed (run with -s to see it) for docs/reliability.md."""
    print(f"\nFIGURE {text}", flush=True)


def md(
    store: str, bundles: Path, name: str = "churn", replicas: int = 1, kwok: bool = False
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": "modeldeploy.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name},
        "spec": {"model": model(store, bundles, "1"), "replicas": replicas},
    }
    if kwok:
        body["spec"]["pods"] = {"serving": KWOK, "router": KWOK}
    return body


def phase_ready(api: client.ApiClient, namespace: str, name: str = "churn") -> dict[str, Any] | None:
    status = get_mdep(api, namespace, name).get("status") or {}
    return status if status.get("phase") == "Ready" and not status.get("canaryRevision") else None


def ready_pods(api: client.ApiClient, namespace: str, selector: str) -> list[client.V1Pod]:
    pods = client.CoreV1Api(api).list_namespaced_pod(namespace, label_selector=selector).items
    return [
        p
        for p in pods
        if not p.metadata.deletion_timestamp
        and any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or ())
    ]


# -- concurrent load through the router ------------------------------------------------------------


@dataclass(frozen=True)
class Sent:
    started: float  # time.monotonic()
    ended: float
    status: int  # 0: no HTTP answer
    code: str  # the router's error code of a non-200 ("" when none)


class Load:
    """`workers` threads, each sending V2 single-row requests back to back (its own keep-alive
    connection) to the router pods; at most `max_requests` in all and `max_seconds` of sending."""

    def __init__(
        self,
        routers: list[str],
        rows: list[list[float | None]],
        workers: int = 6,
        max_requests: int = 200_000,
        max_seconds: float = 420,
    ) -> None:
        self.routers, self.rows, self.workers = routers, rows, workers
        self.max_requests, self.max_seconds = max_requests, max_seconds
        self.sent: list[Sent] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._send, args=(i,), daemon=True) for i in range(workers)]

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)

    def _send(self, worker: int) -> None:
        router = self.routers[worker % len(self.routers)]
        deadline = time.monotonic() + self.max_seconds
        with httpx.Client(timeout=10) as http:
            for n in range(self.max_requests // self.workers):
                if self._stop.is_set() or time.monotonic() > deadline:
                    return
                row = self.rows[(worker * 7919 + n) % len(self.rows)]
                body = {
                    "inputs": [{"name": "input", "datatype": "FP64", "shape": [1, len(row)], "data": row}]
                }
                started = time.monotonic()
                try:
                    answer = http.post(f"{router}/v2/models/churn/infer", json=body)
                    code = ""
                    if answer.status_code != 200:
                        with contextlib.suppress(ValueError, AttributeError):
                            code = str(answer.json().get("code", ""))
                    self.sent.append(Sent(started, time.monotonic(), answer.status_code, code))
                except httpx.HTTPError as error:
                    self.sent.append(Sent(started, time.monotonic(), 0, type(error).__name__))

    def count(self) -> int:
        return len(self.sent)

    def failed(self) -> list[Sent]:
        return [s for s in self.sent if s.status != 200]


def router_counter(router: str, name: str) -> float:
    """Sum of a router counter over its labels."""
    total = 0.0
    for line in httpx.get(f"{router}/metrics", timeout=5).text.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            total += float(line.rsplit(" ", 1)[1])
    return total


# -- what the operator made, and the transitions it recorded ----------------------------------------

LISTS: dict[str, Callable[[client.ApiClient, str], list[Any]]] = {
    "Deployment": lambda a, n: client.AppsV1Api(a).list_namespaced_deployment(n).items,
    "ReplicaSet": lambda a, n: client.AppsV1Api(a).list_namespaced_replica_set(n).items,
    "Pod": lambda a, n: client.CoreV1Api(a).list_namespaced_pod(n).items,
    "Service": lambda a, n: client.CoreV1Api(a).list_namespaced_service(n).items,
    "ConfigMap": lambda a, n: client.CoreV1Api(a).list_namespaced_config_map(n).items,
    "ServiceAccount": lambda a, n: client.CoreV1Api(a).list_namespaced_service_account(n).items,
    "Role": lambda a, n: client.RbacAuthorizationV1Api(a).list_namespaced_role(n).items,
    "RoleBinding": lambda a, n: client.RbacAuthorizationV1Api(a).list_namespaced_role_binding(n).items,
    "PodDisruptionBudget": lambda a, n: client.PolicyV1Api(a).list_namespaced_pod_disruption_budget(n).items,
    "NetworkPolicy": lambda a, n: client.NetworkingV1Api(a).list_namespaced_network_policy(n).items,
}


def objects(api: client.ApiClient, namespace: str) -> set[tuple[str, str, str]]:
    """(kind, name, uid) of everything in the namespace that the operator makes (and the pods)."""
    return {
        (kind, o.metadata.name, o.metadata.uid)
        for kind, lister in LISTS.items()
        for o in lister(api, namespace)
    }


def transitions(api: client.ApiClient, namespace: str, name: str = "churn") -> list[tuple[str, str]]:
    """The operator's Events on the ModelDeployment (one per decided transition) and their counts."""
    events = client.CoreV1Api(api).list_namespaced_event(
        namespace, field_selector=f"involvedObject.name={name}"
    )
    return sorted(
        (e.reason, f"{e.message} x{e.count or 1}")
        for e in events.items
        if (e.reporting_component or (e.source.component if e.source else "")) == "modeldeploy-operator"
    )


def operator_restarts(api: client.ApiClient, release: str) -> int:
    pods = client.CoreV1Api(api).list_namespaced_pod(release, label_selector=OPERATOR_PODS).items
    return sum(c.restart_count for p in pods for c in p.status.container_statuses or ())


# -- 1. a serving pod killed under load --------------------------------------------------------------


def test_a_serving_pod_killed_under_load_loses_only_requests_in_flight_on_it(
    kube_api: client.ApiClient, namespace: str, model_store: str, churn_bundles: Path
) -> None:
    create_mdep(kube_api, namespace, md(model_store, churn_bundles, replicas=3))
    wait_for("Ready", lambda: phase_ready(kube_api, namespace), timeout=240)
    serving = SERVING.format("churn")
    wait_for("3 ready serving pods", lambda: len(ready_pods(kube_api, namespace, serving)) == 3, timeout=120)
    routers = wait_for("the router", lambda: ready_endpoints(kube_api, namespace, "churn"), timeout=60)
    victim = ready_pods(kube_api, namespace, serving)[0]
    restarts = victim.status.container_statuses[0].restart_count
    retries_before = router_counter(routers[0], "modeldeploy_router_retries_total")

    with Load(routers, rows(churn_bundles), workers=6) as load:
        wait_for("load through the router", lambda: load.count() > 300, timeout=60)
        assert load.failed() == [], load.failed()[:5]
        pids = container_pids(victim.status.container_statuses[0].container_id)
        killed_at = time.monotonic()
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        wait_for(
            "the server's processes gone", lambda: all(map(process_gone, pids)), timeout=30, interval=0.01
        )
        dead_at = time.monotonic()
        # The kubelet restarts the container; the pod is ready again once its model is loaded.
        wait_for(
            "the killed pod ready again after a restart",
            lambda: any(
                p.metadata.name == victim.metadata.name
                and p.status.container_statuses[0].restart_count > restarts
                for p in ready_pods(kube_api, namespace, serving)
            ),
            timeout=180,
        )
        back = load.count()
        wait_for("load after the pod is back", lambda: load.count() > back + 300, timeout=60)
    sent = list(load.sent)
    # In flight at the kill: started before the processes were gone, answered after the signal.
    at_kill = [s for s in sent if s.started <= dead_at and s.ended >= killed_at]
    failed = load.failed()
    retried = router_counter(routers[0], "modeldeploy_router_retries_total") - retries_before
    figure(
        f"pod kill: {len(sent)} requests by 6 workers, {len(at_kill)} in flight (all pods) at the kill, "
        f"{len(failed)} failed {sorted({(s.status, s.code) for s in failed})}, "
        f"{retried:.0f} retried on another backend (connection refused), "
        f"kill-to-processes-gone {1000 * (dead_at - killed_at):.0f} ms"
    )
    # What the routers knew of each lost request: the backend, the attempt, and the connection's
    # facts (reset or FIN, age, bytes acknowledged), printed with the figure.
    print(
        f"killed {victim.status.pod_ip}; lost {failed}, relative to the processes gone: "
        f"{[round(s.started - dead_at, 3) for s in failed]} s"
    )
    print_operator_logs(
        kube_api,
        grep="backend_closed",
        namespace=namespace,
        selector="modeldeploy.io/deployment=churn,app.kubernetes.io/component=router",
    )
    for lost in failed:
        # Understood 2026-12-04 (the routers' log lines above): the losses were requests on new
        # connections that the dying server's kernel had accepted and acknowledged, reset unread as its
        # listener closed. A reset without a FIN now sends them to another backend (docs/router.md,
        # Delivery guarantee): 6 lost in 4 runs before; after, no backend_closed in 6 runs
        # (one bad_backend_response: an answer cut off by the kill). What may still be lost: a
        # request the server had read when it was killed (FIN: 502 backend_closed) or was answering.
        assert lost.started <= dead_at + LATE_LOSS_SECONDS, f"lost, though sent after the kill: {lost}"
        assert lost.ended >= killed_at, f"lost before the kill: {lost}"
        assert (lost.status, lost.code) in {(502, "backend_closed"), (502, "bad_backend_response")}, lost
    assert len(failed) <= len(at_kill)
    assert len(failed) < len(sent) / 100


# -- 3. Prometheus hanging, huge, redirecting, blackholed ------------------------------------------------

TWO_GIB = 2 * 1024**3
CHUNK = 64 * 1024


class FakePrometheus:
    """On an address the installed operator may query (host_ip:HOSTILE_PROMETHEUS_PORT, its own: the
    Prometheus e2e tests run beside it on the other one); the first path
    segment picks the behaviour: /hang never answers, /huge answers 2 GiB (declared), /redirect
    answers 302 to another server, which counts the connections it gets (there should be none)."""

    def __init__(self, host: str) -> None:
        self.stop = threading.Event()
        self.sent = 0
        self.requests: dict[str, int] = {}
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind((host, HOSTILE_PROMETHEUS_PORT))
        self.listener.listen(64)
        self.listener.settimeout(0.2)
        self.elsewhere = socket.socket()
        self.elsewhere.bind((host, 0))
        self.elsewhere.listen(8)
        self.elsewhere.settimeout(0.2)
        self.elsewhere_connections = 0
        self.location = f"http://{host}:{self.elsewhere.getsockname()[1]}/api/v1/query"
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._accept, daemon=True),
            threading.Thread(target=self._count_elsewhere, daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def _accept(self) -> None:
        for _ in range(6000):  # bounded: ~20 minutes of 0.2 s accept timeouts
            if self.stop.is_set():
                return
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _count_elsewhere(self) -> None:
        for _ in range(6000):
            if self.stop.is_set():
                return
            try:
                conn, _ = self.elsewhere.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self.elsewhere_connections += 1
            conn.close()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(10)
            try:
                head = conn.recv(65536).decode(errors="replace")
                path = head.split(" ", 2)[1] if head.count(" ") >= 2 else "/"
                mode = path.strip("/").split("/", 1)[0]
                with self._lock:
                    self.requests[mode] = self.requests.get(mode, 0) + 1
                if mode == "hang":
                    self.stop.wait(600)
                elif mode == "huge":
                    conn.sendall(
                        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                        + f"Content-Length: {TWO_GIB}\r\n\r\n".encode()
                    )
                    block = b"x" * CHUNK
                    for _ in range(TWO_GIB // CHUNK):  # unless the client hangs up first
                        if self.stop.is_set():
                            return
                        conn.sendall(block)
                        with self._lock:
                            self.sent += CHUNK
                elif mode == "redirect":
                    conn.sendall(
                        f"HTTP/1.1 302 Found\r\nLocation: {self.location}\r\n"
                        "Content-Length: 0\r\n\r\n".encode()
                    )
            except OSError:
                pass  # the operator gave up: that is the point

    def close(self) -> None:
        self.stop.set()
        self.listener.close()
        self.elsewhere.close()
        for thread in self._threads:
            thread.join(timeout=15)


@contextlib.contextmanager
def blackhole(host: str) -> Iterator[None]:
    """The same address, listening but never accepting, its backlog full: SYNs are dropped."""
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((host, HOSTILE_PROMETHEUS_PORT))
    listener.listen(0)
    fillers = []
    for _ in range(2):
        filler = socket.socket()
        filler.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            filler.connect((host, HOSTILE_PROMETHEUS_PORT))
        fillers.append(filler)
    try:
        yield
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


def hostile_md(store: str, bundles: Path, name: str, address: str) -> dict[str, Any]:
    body = md(store, bundles, name=name, kwok=True)
    body["spec"]["rollout"] = {
        "strategy": "Canary",
        "steps": [{"setWeight": 50}, {"analysis": {"duration": "10m"}}],
        "analysis": {
            "interval": "5s",
            "failureLimit": 100,
            "prometheus": {"address": address, "timeoutSeconds": 3},
            "checks": [{"name": "remote", "type": "prometheus", "query": "up", "threshold": {"min": 0}}],
        },
        "progressDeadlineSeconds": 1800,
    }
    return body


PAUSE = 8


def timed_md(store: str, bundles: Path, name: str) -> dict[str, Any]:
    body = md(store, bundles, name=name, kwok=True)
    body["spec"]["rollout"] = {
        "strategy": "Canary",
        "steps": [
            {"setWeight": 50},
            {"pause": {"duration": f"{PAUSE}s"}},
            {"pause": {"duration": f"{PAUSE}s"}},
        ],
        "progressDeadlineSeconds": 600,
        "scaleDownDelaySeconds": 0,
    }
    return body


def _when(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def timed_rollout(
    api: client.ApiClient, namespace: str, name: str, store: str, bundles: Path, version: str
) -> list[float]:
    """Roll `name` to `version` and return how late each of its two pauses ended (seconds past due),
    from the step start times in its status: the operator's timers, not the pods. The second pause's
    end is the start of the step after it, or, when the promotion came in the same pass (that step
    not seen), the promotion's `finishedAt` in the history. (Until 2026-12-04 it was the moment the
    promotion was seen, which also counted the wait for the new revision's pods: 15 s late in a CI
    run whose scheduler was busy.)"""
    patch_mdep(api, namespace, name, {"spec": {"model": model(store, bundles, version)}})
    starts: dict[int, float] = {}
    promoted_at = 0.0

    def progress() -> bool:
        nonlocal promoted_at
        status = get_mdep(api, namespace, name).get("status") or {}
        index, started = status.get("currentStepIndex"), status.get("stepStartedAt")
        if status.get("canaryRevision") and index is not None and started:
            starts.setdefault(int(index), _when(started))
        if (
            status.get("modelVersion") == version
            and status.get("phase") == "Ready"
            and not status.get("canaryRevision")
        ):
            finished = [_when(h["finishedAt"]) for h in status.get("history") or [] if h.get("finishedAt")]
            promoted_at = max(finished, default=time.time())
            return True
        return False

    wait_for(f"{name} promoted to v{version}", progress, timeout=180, interval=0.2)
    assert {1, 2} <= set(starts), starts
    return [starts[2] - starts[1] - PAUSE, starts.get(3, promoted_at) - starts[2] - PAUSE]


def short_and_ours(message: str) -> bool:
    return len(message) < 600 and message.isprintable() and "xxxx" not in message


def remote_readings(api: client.ApiClient, namespace: str, name: str) -> list[dict[str, Any]]:
    analysis = (get_mdep(api, namespace, name).get("status") or {}).get("analysis") or {}
    return [
        m for c in analysis.get("checks") or [] if c["name"] == "remote" for m in c.get("measurements") or []
    ]


# Beside the other tests: its Prometheus address is its own (HOSTILE_PROMETHEUS_PORT), and the tests
# that restart the shared operator (which would count here) run alone or on an operator of their own.
def test_a_hostile_prometheus_neither_stalls_the_operator_nor_other_rollouts(
    kube_api: client.ApiClient,
    namespace: str,
    model_store: str,
    churn_bundles: Path,
    local_cluster: Layout,
    operator_release: str,
) -> None:
    host = local_cluster.host_ip
    restarts_before = operator_restarts(kube_api, operator_release)
    modes = ("hang", "huge", "redirect")
    fake = FakePrometheus(host)
    try:
        for mode in modes:
            address = f"http://{host}:{HOSTILE_PROMETHEUS_PORT}/{mode}"
            create_mdep(kube_api, namespace, hostile_md(model_store, churn_bundles, mode, address))
        create_mdep(kube_api, namespace, timed_md(model_store, churn_bundles, "steady"))
        for name in (*modes, "steady"):
            wait_for(
                f"{name} Ready",
                functools.partial(phase_ready, kube_api, namespace, name),
                timeout=FIRST_READY_SECONDS,
            )
        for mode in modes:
            patch_mdep(kube_api, namespace, mode, {"spec": {"model": model(model_store, churn_bundles, "2")}})

        def two_readings_each() -> bool:
            return all(len(remote_readings(kube_api, namespace, m)) >= 2 for m in modes)

        wait_for("two readings of each hostile Prometheus", two_readings_each, timeout=180)
        # While those fetches hang, stream 2 GiB and bounce, another rollout keeps its timers.
        late = timed_rollout(kube_api, namespace, "steady", model_store, churn_bundles, "2")
        readings = {m: remote_readings(kube_api, namespace, m) for m in modes}
        huge_sent = fake.sent
        counts = dict(fake.requests)
    finally:
        fake.close()
    assert fake.elsewhere_connections == 0, "a redirect was followed"
    for mode, found in readings.items():
        assert found, mode
        assert all(r["result"] == "Inconclusive" for r in found), (mode, found)
        assert all(short_and_ours(r.get("message") or "") for r in found), (mode, found)
    messages = {mode: found[-1].get("message") for mode, found in readings.items()}

    # Blackholed: the same address stops accepting connections at all.
    with blackhole(host):
        marked_at = time.time()

        def a_blackholed_reading() -> list[dict[str, Any]] | None:
            fresh = [
                r
                for m in modes
                for r in remote_readings(kube_api, namespace, m)
                if _when(r["time"]) > marked_at + 1
            ]
            return fresh or None

        wait_for("a reading against the blackhole", a_blackholed_reading, timeout=120)
        late_blackholed = timed_rollout(kube_api, namespace, "steady", model_store, churn_bundles, "1")
        blackholed = a_blackholed_reading() or []
    restarts = operator_restarts(kube_api, operator_release) - restarts_before
    figure(
        f"hostile Prometheus: requests {counts}, huge body bytes sent before the operator hung up "
        f"{huge_sent}, redirect target connections {fake.elsewhere_connections}; messages {messages}; "
        f"blackholed: {sorted({str(r.get('message')) for r in blackholed})}; other rollout's pauses ended "
        f"{[round(x, 1) for x in late]} s late (hostile), {[round(x, 1) for x in late_blackholed]} s late "
        f"(blackholed); operator restarts {restarts}"
    )
    assert all(r["result"] == "Inconclusive" and short_and_ours(r.get("message") or "") for r in blackholed)
    assert restarts == 0
    assert max(late + late_blackholed) < PAUSE, (late, late_blackholed)
    assert huge_sent < 256 * 1024 * 1024


# -- 5. deletion with the operator scaled to zero ----------------------------------------------------------


# On an operator of its own (PrivateOperator, scaled to zero and left so: the fixture uninstalls it);
# scaling the shared one down would need the cluster to itself.
def test_deletion_completes_with_the_operator_scaled_to_zero(
    kube_api: client.ApiClient,
    namespace: str,
    model_store: str,
    churn_bundles: Path,
    private_operator: PrivateOperator,
) -> None:
    core, apps = client.CoreV1Api(kube_api), client.AppsV1Api(kube_api)
    other = f"{namespace}-b"
    core.create_namespace({"metadata": {"name": other, "labels": {"modeldeploy.io/test": "true"}}})
    # An object an older operator (kopf's daemon finalizer) left: the operator removes the finalizer.
    old = md(model_store, churn_bundles, name="old", kwok=True)
    old["metadata"]["finalizers"] = ["modeldeploy.io/finalizer"]
    for ns, body in (
        (namespace, md(model_store, churn_bundles, kwok=True)),
        (other, md(model_store, churn_bundles, kwok=True)),
        (namespace, old),
    ):
        create_mdep(kube_api, ns, private_operator.mark(body))
    for ns, name in ((namespace, "churn"), (other, "churn"), (namespace, "old")):
        wait_for(
            f"{ns}/{name} Ready",
            functools.partial(phase_ready, kube_api, ns, name),
            timeout=FIRST_READY_SECONDS,
        )
    wait_for(
        "no finalizer on any of them",
        lambda: all(
            not get_mdep(kube_api, ns, name)["metadata"].get("finalizers")
            for ns, name in ((namespace, "churn"), (other, "churn"), (namespace, "old"))
        ),
        timeout=60,
    )
    apps.patch_namespaced_deployment_scale(private_operator.release, namespace, {"spec": {"replicas": 0}})
    wait_for("no operator pod", lambda: not private_operator.pods(kube_api), timeout=120)
    started = time.monotonic()
    client.CustomObjectsApi(kube_api).delete_namespaced_custom_object(
        "modeldeploy.io", "v1alpha1", namespace, "modeldeployments", "churn"
    )
    core.delete_namespace(other)

    def gone() -> bool:
        try:
            get_mdep(kube_api, namespace, "churn")
            return False
        except client.ApiException as error:
            if error.status != 404:
                raise
        try:
            core.read_namespace(other)
            return False
        except client.ApiException as error:
            return bool(error.status == 404)

    wait_for("the ModelDeployment and the namespace gone", gone, timeout=180)
    figure(
        "deletion with the operator at zero: ModelDeployment and namespace gone in "
        f"{time.monotonic() - started:.1f}s"
    )
    # What it owned goes with it (garbage collection by owner references, no operator needed).
    wait_for(
        "its Deployments garbage-collected",
        lambda: (
            not apps.list_namespaced_deployment(
                namespace, label_selector="modeldeploy.io/deployment=churn"
            ).items
        ),
        timeout=120,
    )


LATE_LOSS_SECONDS = 0.1
"""How long after the killed server's processes are gone a lost request is still tolerated (above)."""


# -- 4. etcd restarted mid-rollout -------------------------------------------------------------------------


# Stops and starts a control-plane component: ordered with the cluster restarts, last.
@pytest.mark.restarts_cluster
def test_etcd_restarted_mid_rollout_the_rollout_resumes_at_the_same_step(
    kube_api: client.ApiClient, namespace: str, model_store: str, churn_bundles: Path, local_cluster: Layout
) -> None:
    body = md(model_store, churn_bundles, kwok=True)
    hold = 40
    body["spec"]["rollout"] = {
        "strategy": "Canary",
        "steps": [
            {"setWeight": 25},
            {"pause": {"duration": f"{hold}s"}},
            {"setWeight": 50},
            {"pause": {"duration": "5s"}},
        ],
        "progressDeadlineSeconds": 600,
        "scaleDownDelaySeconds": 0,
    }
    create_mdep(kube_api, namespace, body)
    wait_for("Ready", lambda: phase_ready(kube_api, namespace), timeout=FIRST_READY_SECONDS)
    events_before = transitions(kube_api, namespace)
    patch_mdep(kube_api, namespace, "churn", {"spec": {"model": model(model_store, churn_bundles, "2")}})

    def in_the_pause() -> dict[str, Any] | None:
        status = get_mdep(kube_api, namespace, "churn").get("status") or {}
        return status if status.get("currentStepIndex") == 1 and status.get("stepStartedAt") else None

    paused = wait_for("the rollout in its pause step", in_the_pause, timeout=120)
    with controlplane.component_stopped(local_cluster, "etcd"):
        pass
    controlplane.wait_ready(local_cluster)
    back_at = time.time()
    resumed = get_mdep(kube_api, namespace, "churn")["status"]
    figure_resume = (resumed.get("currentStepIndex"), resumed.get("stepStartedAt"))
    assert figure_resume == (1, paused["stepStartedAt"]), (resumed, paused)
    assert resumed["canaryRevision"] == paused["canaryRevision"]
    assert resumed["canaryWeight"] == paused["canaryWeight"] == 25

    promoted = wait_for(
        "v2 promoted",
        lambda: (s := phase_ready(kube_api, namespace)) and s.get("modelVersion") == "2" and s,
        timeout=240,
    )
    late = time.time() - (_when(paused["stepStartedAt"]) + hold + 5)
    figure(
        f"etcd restart mid-rollout: step {figure_resume[0]} kept its start {figure_resume[1]} "
        f"(API ready again {back_at - _when(paused['stepStartedAt']):.1f}s into the {hold}s pause); "
        f"promoted {late:.1f}s after the last pause was due (incl. polling)"
    )
    assert promoted["stableRevision"] == paused["canaryRevision"]
    revisions = [h["revision"] for h in promoted["history"]]
    assert len(revisions) == len(set(revisions)), promoted["history"]  # each revision once
    assert promoted["history"][-1]["outcome"] == "Promoted"
    new_events = [e for e in transitions(kube_api, namespace) if e not in events_before]
    assert len(new_events) == len(set(new_events)), new_events
    assert all(e[1].endswith(" x1") for e in new_events), new_events


# -- 2. the API server down (last: the most disruptive) ---------------------------------------------


# Stops and starts a control-plane component: ordered with the cluster restarts, last.
@pytest.mark.restarts_cluster
# Opt-in: it stops the shared cluster's API server (2-5 minutes, alone, at the end of the run: the warm
# CI run is over its budget already). Green on the cluster on 2026-12-03 after the controller manager
# was restarted only after /readyz: 30 s down, 58,899 requests, 0 failed; 120 s down, 116,286
# requests (64,052 during the outage), 0 failed (docs/reliability.md).
@pytest.mark.skipif(
    os.environ.get("MODELDEPLOY_FAULT_TESTS") != "1",
    reason="opt-in (MODELDEPLOY_FAULT_TESTS=1): it stops the shared cluster's API server for minutes",
)
def test_the_api_server_down_serving_carries_on_and_the_operator_recovers_without_duplicates(
    kube_api: client.ApiClient,
    namespace: str,
    model_store: str,
    churn_bundles: Path,
    local_cluster: Layout,
    operator_release: str,
) -> None:
    outage = float(os.environ.get("MODELDEPLOY_FAULT_APISERVER_SECONDS", "30"))
    create_mdep(kube_api, namespace, md(model_store, churn_bundles, replicas=2))
    wait_for("Ready", lambda: phase_ready(kube_api, namespace), timeout=240)
    serving = SERVING.format("churn")
    wait_for("2 ready serving pods", lambda: len(ready_pods(kube_api, namespace, serving)) == 2, timeout=120)
    routers = wait_for("the router", lambda: ready_endpoints(kube_api, namespace, "churn"), timeout=60)
    restarts_before = operator_restarts(kube_api, operator_release)

    with Load(routers, rows(churn_bundles), workers=2) as load:
        wait_for("load through the router", lambda: load.count() > 200, timeout=60)
        before = objects(kube_api, namespace)
        status_before = get_mdep(kube_api, namespace, "churn")["status"]
        events_before = transitions(kube_api, namespace)
        # The controller manager goes too, as a real one does: it runs with leader election and exits
        # once it cannot renew its lease (10 s), then starts afresh. The harness runs it without
        # (--leader-elect=false), and one that stayed up through the outage judged the kubelet's node
        # lease stale when the API server came back (47 s > its 40 s grace) and marked every pod of
        # the real node NotReady: 837 of 19,933 requests got 503 no_ready_backend until the kubelet
        # reported them ready again (2026-12-03, 30 s outage). It is started again only once the API
        # server is ready: started with it, it found RBAC not yet bootstrapped and exited (no kubelet
        # restarts it here), and nothing acted on the spec change.
        with controlplane.component_stopped(local_cluster, "kube-controller-manager"):
            with controlplane.component_stopped(local_cluster, "kube-apiserver") as stopped_at:
                utc_mark("kube-apiserver stopped")
                with httpx.Client(verify=False) as probe, pytest.raises(httpx.ConnectError):
                    probe.get(f"{local_cluster.apiserver_url}/readyz", timeout=2)
                during = load.count()
                # The fault is the outage itself: hold it for its length, while the load goes on.
                time.sleep(max(0.0, outage - (time.monotonic() - stopped_at)))
                served_during = load.count() - during
            restarted_at = time.monotonic()
            utc_mark("kube-apiserver started again")
            controlplane.wait_ready(local_cluster)
            utc_mark("kube-apiserver /readyz")
        api_back = time.monotonic() - restarted_at
        # The operator leads and reconciles again: a spec change reaches the Deployment.
        patch_mdep(kube_api, namespace, "churn", {"spec": {"replicas": 3}})
        patched = time.monotonic() - restarted_at
        utc_mark("spec patched (replicas 3)")
        # The operator's own part: its write of the serving Deployment (the rest is the controller
        # manager, the scheduler, the kubelet and the model load before the third pod is ready).
        wait_for(
            "the operator to scale the serving Deployment",
            lambda: any(
                (d.spec.replicas or 0) == 3
                for d in client.AppsV1Api(kube_api)
                .list_namespaced_deployment(namespace, label_selector=serving)
                .items
            ),
            timeout=300,
            interval=0.1,
        )
        operator_acted = time.monotonic() - restarted_at
        utc_mark("serving Deployment seen at replicas 3")
        wait_for(
            "the third pod ready and the ModelDeployment Ready after the outage",
            lambda: len(ready_pods(kube_api, namespace, serving)) == 3 and phase_ready(kube_api, namespace),
            timeout=300,
        )
        recovered = time.monotonic() - restarted_at
        wait_for("load after the outage", lambda: load.count() > during + served_during + 200, timeout=60)
    failed = load.failed()
    after = objects(kube_api, namespace)
    status_after = get_mdep(kube_api, namespace, "churn")["status"]
    restarts = operator_restarts(kube_api, operator_release) - restarts_before
    figure(
        f"API server down {outage:.0f}s: {load.count()} requests ({served_during} during the outage), "
        f"{len(failed)} failed; API ready {api_back:.1f}s after restart; spec patched at {patched:.1f}s, "
        f"the operator scaled the Deployment at {operator_acted:.1f}s, 3 pods ready and Ready at "
        f"{recovered:.1f}s after restart; operator container restarts {restarts}"
    )
    assert failed == [], failed[:5]
    # No duplicate objects: the same objects (same uids) plus the third serving pod, nothing else.
    added = after - before
    assert {kind for kind, _, _ in added} <= {"Pod"}, added
    assert len(added) == 1, added
    assert before - after == set(), before - after
    # No duplicate transitions: the same history, the same operator Events.
    assert status_after.get("history") == status_before.get("history")
    assert status_after["stableRevision"] == status_before["stableRevision"]
    assert transitions(kube_api, namespace) == events_before
