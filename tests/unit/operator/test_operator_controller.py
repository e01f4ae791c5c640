"""Watch-driven reconciles (issue 16): what queues a ModelDeployment, the timers a pass leaves, retries
that honour Retry-After; and the apply that skips what is already live, so an idle pass writes nothing."""

from __future__ import annotations

import copy
import datetime as dt
import logging
import threading
import time
from typing import Any

import pytest

from modeldeploy_operator.config import OperatorSettings
from modeldeploy_operator.controller import Controller
from modeldeploy_operator.domain.quantity import canonical_quantity
from modeldeploy_operator.k8s.api import (
    UNREACHABLE_RETRY_MAX_SECONDS,
    NamespaceTerminatingError,
    RejectedError,
    TransientApiError,
)
from modeldeploy_operator.k8s.cache import INDEX_LABEL, CachedKind
from modeldeploy_operator.k8s.diff import (
    APPLIED_HASH,
    covers,
    is_quantity_field,
    unchanged,
    with_applied_hash,
)
from modeldeploy_operator.reconciler import Outcome, Reconciler
from modeldeploy_operator.scheduler import WorkQueue


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def md(name: str = "churn", rv: int = 1, namespace: str = "ml", **meta: Any) -> dict[str, Any]:
    return {
        "apiVersion": "modeldeploy.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": f"u-{name}",
            "resourceVersion": str(rv),
            **meta,
        },
        "spec": {},
    }


class ScriptedReconciler:
    """Stands in for Reconciler: answers each pass from a script (an Outcome or an exception)."""

    def __init__(self, *answers: Any) -> None:
        self.answers = list(answers)
        self.passes: list[dict[str, Any]] = []
        self.status_written: Any = None
        self.forgotten: list[tuple[str, str, str]] = []

    def forget(self, namespace: str, name: str, uid: str) -> None:
        self.forgotten.append((namespace, name, uid))

    def reconcile(self, body: dict[str, Any]) -> Outcome:
        self.passes.append(body)
        answer = self.answers.pop(0) if self.answers else Outcome("Healthy", False, 0, 0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def controller(*answers: Any, **settings: Any) -> tuple[Controller, ScriptedReconciler, FakeClock]:
    clock = FakeClock()
    reconciler = ScriptedReconciler(*answers)
    wall = 1_700_000_000.0
    made = Controller(
        reconciler,  # type: ignore[arg-type]
        OperatorSettings(**settings),
        WorkQueue(clock, min_gap=0.0),
        wall=lambda: wall + (clock.now - 1_000.0),
    )
    return made, reconciler, clock


def run_ready(made: Controller) -> list[tuple[str, str]]:
    done = []
    while (key := made.queue.get(timeout=0)) is not None:
        made.process(key)  # type: ignore[arg-type]
        made.queue.done(key)
        done.append(key)
    return done  # type: ignore[return-value]


def test_every_modeldeployment_event_queues_one_pass_from_the_latest_copy() -> None:
    made, reconciler, _ = controller()
    made.on_modeldeployment(None, md(rv=1))  # listed at start-up
    made.on_modeldeployment("MODIFIED", md(rv=2))
    made.on_modeldeployment("MODIFIED", md(rv=3))
    assert run_ready(made) == [("ml", "churn")]  # coalesced
    assert [p["metadata"]["resourceVersion"] for p in reconciler.passes] == ["3"]


def test_our_status_write_is_the_copy_the_next_pass_plans_from() -> None:
    made, reconciler, _ = controller()
    made.on_modeldeployment("ADDED", md(rv=5))
    made.remember(md(rv=9))  # what our status patch returned
    made.on_modeldeployment("MODIFIED", md(rv=7))  # an older event arriving late: not kept
    run_ready(made)
    assert reconciler.passes[-1]["metadata"]["resourceVersion"] == "9"


def test_a_deleted_modeldeployment_is_forgotten() -> None:
    made, reconciler, clock = controller(Outcome("Progressing", True, 0, 0, next_due=None))
    made.on_modeldeployment("ADDED", md())
    made.queue.schedule(("ml", "churn"), clock.now + 5)
    made.on_modeldeployment("DELETED", md())
    assert reconciler.forgotten == [("ml", "churn", md()["metadata"]["uid"])]  # what analysis kept goes
    clock.now += 10
    assert run_ready(made) == []
    made.on_modeldeployment("MODIFIED", md(rv=3, deletionTimestamp="2026-01-01T00:00:00Z"))
    assert run_ready(made) == []  # being deleted: not queued by its event...
    made.resync()
    run_ready(made)
    assert reconciler.passes == []  # ...nor reconciled when the resync queues it


def test_an_owned_objects_event_queues_its_owner_and_a_users_hpa_its_namespace() -> None:
    made, _, _ = controller()
    for name in ("churn", "fraud"):
        made.on_modeldeployment("ADDED", md(name))
    made.on_modeldeployment("ADDED", md("churn", namespace="other"))
    run_ready(made)
    pods = CachedKind("v1", "Pod")
    made.on_owned(pods, "MODIFIED", {"metadata": {"namespace": "ml", "labels": {INDEX_LABEL: "fraud"}}})
    made.on_owned(pods, "MODIFIED", {"metadata": {"namespace": "ml", "labels": {INDEX_LABEL: "unknown"}}})
    made.on_owned(pods, "MODIFIED", {"metadata": {"namespace": "ml", "labels": {}}})
    assert run_ready(made) == [("ml", "fraud")]
    hpas = CachedKind("autoscaling/v2", "HorizontalPodAutoscaler", "")
    made.on_owned(hpas, "ADDED", {"metadata": {"namespace": "ml", "name": "users-hpa"}})
    assert sorted(run_ready(made)) == [("ml", "churn"), ("ml", "fraud")]


def test_a_pass_leaves_the_timer_of_its_plan() -> None:
    made, reconciler, clock = controller()
    due = dt.datetime.fromtimestamp(1_700_000_000.0 + 6, dt.UTC)  # a 6 s pause, planned now
    reconciler.answers = [Outcome("Progressing", True, 0, 0, next_due=due)]
    made.on_modeldeployment("ADDED", md())
    run_ready(made)
    assert made.queue.timer_of(("ml", "churn")) == pytest.approx(clock.now + 6)
    clock.now += 5.9
    assert run_ready(made) == []
    clock.now += 0.2
    assert run_ready(made) == [("ml", "churn")]  # on time, with no event
    assert made.queue.timer_of(("ml", "churn")) is None  # the second pass planned nothing timed


@pytest.mark.parametrize(("retry_after", "expected"), [(45.0, 45.0), (None, 2.0), (1.0, 2.0)])
def test_a_transient_error_is_retried_never_sooner_than_retry_after(
    retry_after: float | None, expected: float
) -> None:
    made, _, clock = controller(TransientApiError("PATCH x: 429 too many requests", retry_after))
    made.on_modeldeployment("ADDED", md())
    run_ready(made)
    assert made.queue.timer_of(("ml", "churn")) == pytest.approx(clock.now + expected)


def test_retries_back_off_and_give_up_after_the_limit() -> None:
    errors = [TransientApiError("503") for _ in range(4)]
    made, _, clock = controller(
        *errors, retry_limit=3, retry_backoff_seconds=2.0, retry_backoff_max_seconds=5.0
    )
    made.on_modeldeployment("ADDED", md())
    delays = []
    for _ in range(4):
        run_ready(made)
        timer = made.queue.timer_of(("ml", "churn"))
        delays.append(None if timer is None else round(timer - clock.now, 3))
        if timer is not None:
            clock.now = timer
    assert delays == [2.0, 4.0, 5.0, None]  # growing, capped, then left to the next event or the resync


def test_while_no_api_server_answers_retries_come_every_few_seconds() -> None:
    """Connection refused (the API server down): the pause stops growing at 4 s, not at the 60 s of a
    server that answers with errors, so a pass is retried within seconds of the server's return."""
    refused = [TransientApiError("PATCH x: connection refused", unreachable=True) for _ in range(6)]
    made, _, clock = controller(
        *refused, retry_limit=8, retry_backoff_seconds=2.0, retry_backoff_max_seconds=60.0
    )
    made.on_modeldeployment("ADDED", md())
    delays = []
    for _ in range(6):
        run_ready(made)
        timer = made.queue.timer_of(("ml", "churn"))
        assert timer is not None
        delays.append(round(timer - clock.now, 3))
        clock.now = timer
    assert delays == [2.0, UNREACHABLE_RETRY_MAX_SECONDS, *[UNREACHABLE_RETRY_MAX_SECONDS] * 4]


def test_a_refusal_is_retried_only_after_the_longest_backoff() -> None:
    made, _, clock = controller(RejectedError(403, "forbidden"), retry_backoff_max_seconds=60.0)
    made.on_modeldeployment("ADDED", md())
    run_ready(made)
    assert made.queue.timer_of(("ml", "churn")) == pytest.approx(clock.now + 60.0)


def test_the_resync_queues_every_known_modeldeployment() -> None:
    made, _, _ = controller()
    for name in ("a", "b", "c"):
        made.on_modeldeployment("ADDED", md(name))
    run_ready(made)
    made.resync()
    assert sorted(run_ready(made)) == [("ml", "a"), ("ml", "b"), ("ml", "c")]


class StopAfter:
    """The resync loop's stop event: records each wait (its timeout, and how many keys were queued by
    then), lets `during(n)` act at the nth, and stops the loop at the `last`th."""

    def __init__(self, made: Controller, last: int, during: Any = None) -> None:
        self.made, self.last, self.during = made, last, during
        self.waits: list[tuple[float, int]] = []

    def is_set(self) -> bool:
        return len(self.waits) >= self.last

    def wait(self, timeout: float) -> bool:
        self.waits.append((timeout, len(self.made.queue)))
        if self.during is not None:
            self.during(len(self.waits))
        return self.is_set()


def test_the_safety_resync_queues_one_object_at_a_time_spread_over_its_period() -> None:
    """A thousand objects queued at once made every change wait behind their passes (1.0-3.7 s at
    N = 1,000 on the bench machine): each is queued alone, period / n apart."""
    made, _, _ = controller(resync_seconds=600.0)
    for name in ("a", "b", "c"):
        made.on_modeldeployment("ADDED", md(name))
    run_ready(made)
    stop = StopAfter(made, last=4)
    made._resync_loop(stop)  # type: ignore[arg-type]
    # 200 s before each key (one more period's first wait ends the loop), one key more each time.
    assert stop.waits == [(200.0, 0), (200.0, 1), (200.0, 2), (200.0, 3)]
    assert run_ready(made) == [("ml", "a"), ("ml", "b"), ("ml", "c")]


def test_the_safety_resync_skips_an_object_gone_before_its_turn_and_waits_a_period_when_empty() -> None:
    made, _, _ = controller(resync_seconds=600.0)
    for name in ("a", "b"):
        made.on_modeldeployment("ADDED", md(name))
    run_ready(made)

    def delete_b(n: int) -> None:
        if n == 1:
            made.on_modeldeployment("DELETED", md("b"))

    stop = StopAfter(made, last=3, during=delete_b)
    made._resync_loop(stop)  # type: ignore[arg-type]
    assert run_ready(made) == [("ml", "a")]  # b went after the period began: not queued
    assert [timeout for timeout, _ in stop.waits] == [300.0, 300.0, 600.0]  # a alone next period

    empty, _, _ = controller(resync_seconds=600.0)
    nothing = StopAfter(empty, last=1)
    empty._resync_loop(nothing)  # type: ignore[arg-type]
    assert nothing.waits == [(600.0, 0)]


# -- apply only what differs -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("live", "desired", "same"),
    [
        ({"a": 1, "b": 2}, {"a": 1}, True),  # server defaults we never set do not matter
        ({"a": 1}, {"a": 2}, False),
        ({"a": {"b": [1, {"c": 1, "d": 2}]}}, {"a": {"b": [1, {"c": 1}]}}, True),
        ({"a": [1, 2]}, {"a": [1]}, False),  # a list item removed is a change
        ({}, {"a": {}}, True),  # an empty map we set is the same as none
        ({"a": "1"}, {"a": 1}, False),
        ({"a": 1}, {"a": True}, False),
    ],
)
def test_covers(live: dict[str, Any], desired: dict[str, Any], same: bool) -> None:
    assert covers(live, desired) is same


def test_the_hash_notices_a_field_we_no_longer_set() -> None:
    before = with_applied_hash({"kind": "Deployment", "metadata": {"name": "d"}, "spec": {"a": 1, "b": 2}})
    after = with_applied_hash({"kind": "Deployment", "metadata": {"name": "d"}, "spec": {"a": 1}})
    live = copy.deepcopy(before)
    assert unchanged(before, live)
    assert covers(live["spec"], after["spec"])  # every field of the new manifest is live...
    assert not unchanged(after, live)  # ...but "b" must go: the hashes differ
    assert before["metadata"]["annotations"][APPLIED_HASH] != after["metadata"]["annotations"][APPLIED_HASH]


class FakeCluster:
    """Enough of KubeApi for whole reconciles: applies are stored (with a resourceVersion) and listed
    back by label, as the cache would serve them; every write is counted."""

    field_manager = "modeldeploy-operator"

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.writes: list[str] = []
        self.rv = 100
        self.lock = threading.Lock()  # a wave's applies come from several threads at once

    def list(self, api_version: str, kind: str, namespace: str | None, selector: str) -> list[dict[str, Any]]:
        label, _, value = selector.partition("=")
        return [
            o
            for (k, _), o in self.objects.items()
            if k == kind and (not selector or o["metadata"].get("labels", {}).get(label) == value)
        ]

    def apply(self, manifest: dict[str, Any], field_manager: str | None = None) -> dict[str, Any]:
        with self.lock:
            self.writes.append(f"apply {manifest['kind']}/{manifest['metadata']['name']}")
            self.rv += 1
            rv = self.rv
        live = copy.deepcopy(manifest)
        live["metadata"]["resourceVersion"] = str(rv)
        live["metadata"]["uid"] = f"uid-{manifest['metadata']['name']}"
        self.objects[(manifest["kind"], manifest["metadata"]["name"])] = live
        return live

    def patch(self, *args: Any) -> dict[str, Any]:
        self.writes.append("patch")
        return {}

    def delete(self, api_version: str, kind: str, namespace: str, name: str, **_: Any) -> None:
        self.writes.append(f"delete {kind}/{name}")
        self.objects.pop((kind, name), None)

    def event(self, *args: Any, **kwargs: Any) -> None:
        pass

    def patch_status(self, kind: Any, namespace: str, name: str, status: dict[str, Any], **_: Any) -> None:
        self.writes.append("status")
        self.last_status = status


def body(version: str = "1", status: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "modeldeploy.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {
            "name": "churn",
            "namespace": "ml",
            "uid": "uid-1",
            "generation": 1,
            "resourceVersion": "7",
        },
        "spec": {"model": {"uri": f"s3://models/churn/v{version}", "format": "onnx", "version": version}},
        "status": status or {},
    }


def test_an_idle_reconcile_writes_nothing_and_a_change_writes_only_what_differs() -> None:
    cluster = FakeCluster()
    reconciler = Reconciler(cluster, OperatorSettings())  # type: ignore[arg-type]
    first = reconciler.reconcile(body())
    assert first.applied > 0
    assert "status" in cluster.writes
    status = cluster.last_status
    for _ in range(3):  # the status settles (the objects now exist)
        reconciler.reconcile(body(status=status))
        status = cluster.last_status
    cluster.writes.clear()
    again = reconciler.reconcile(body(status=status))
    assert cluster.writes == []  # idle: no apply, no status write
    assert again.applied == 0
    # Someone edits a field we set on one object: only that object is applied again.
    (service_key,) = [k for k in cluster.objects if k == ("Service", "churn")]
    cluster.objects[service_key]["spec"]["selector"] = {"app": "hijacked"}
    reconciler.reconcile(body(status=status))
    assert cluster.writes == ["apply Service/churn"]


class CanonicalisingCluster(FakeCluster):
    """Stores quantities as the API server does: "0.5" CPU as "500m", "1024Mi" as "1Gi"."""

    def apply(self, manifest: dict[str, Any], field_manager: str | None = None) -> dict[str, Any]:
        live = super().apply(manifest, field_manager)

        def canonical(node: Any, path: tuple[str, ...]) -> Any:
            if isinstance(node, dict):
                return {k: canonical(v, (*path, k)) for k, v in node.items()}
            if isinstance(node, list):
                return [canonical(v, path) for v in node]
            return canonical_quantity(node) if is_quantity_field(path) else node

        stored: dict[str, Any] = canonical(live, ())
        self.objects[(manifest["kind"], manifest["metadata"]["name"])] = stored
        return stored


def test_quantities_the_server_rewrites_do_not_make_an_idle_pass_write() -> None:
    cluster = CanonicalisingCluster()
    reconciler = Reconciler(cluster, OperatorSettings())  # type: ignore[arg-type]
    the_body = body()
    the_body["spec"]["resources"] = {"requests": {"cpu": "0.5", "memory": "1024Mi"}, "limits": {"cpu": 2}}
    reconciler.reconcile(the_body)
    (deployment,) = [o for (k, _), o in cluster.objects.items() if k == "Deployment" and "default" in _]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"] == {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"cpu": "2"}}
    status = cluster.last_status
    for _ in range(3):
        reconciler.reconcile({**the_body, "status": status})
        status = cluster.last_status
    cluster.writes.clear()
    reconciler.reconcile({**the_body, "status": status})
    assert cluster.writes == []


def test_the_operators_requests_carry_its_user_agent(monkeypatch: pytest.MonkeyPatch) -> None:
    """The API server's apiserver_request_total splits by user agent: ours and kopf's say who we are."""
    import kopf
    from kubernetes import config as kube_config

    from modeldeploy_operator import handlers
    from modeldeploy_operator.k8s import api as k8s_api

    monkeypatch.setattr(kube_config, "load_incluster_config", lambda: None)  # the module api.py calls
    assert k8s_api.new_api_client().user_agent == k8s_api.USER_AGENT
    assert k8s_api.USER_AGENT.startswith("modeldeploy-operator/")
    info = handlers.identified(kopf.ConnectionInfo(server="https://10.0.0.1:6443", token="secret"))
    assert info is not None
    headers = info.as_http_headers()
    assert headers["User-Agent"] == k8s_api.USER_AGENT
    assert headers["Authorization"] == "Bearer secret"
    assert info.server == "https://10.0.0.1:6443"


def test_the_api_client_keeps_a_connection_per_sending_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Informer watches, reconcile workers and the apply pool share one client: a connection handed
    back to a full pool is closed, and the next request pays a new TLS handshake."""
    from kubernetes import config as kube_config

    from modeldeploy_operator.config import OperatorSettings
    from modeldeploy_operator.domain.desired_state import NETWORK_POLICY_KINDS, OWNED_KINDS, ROUTER_RBAC_KINDS
    from modeldeploy_operator.k8s import api as k8s_api
    from modeldeploy_operator.reconciler import APPLY_THREADS, cached_kinds

    monkeypatch.setattr(kube_config, "load_incluster_config", lambda: None)
    pool = k8s_api.new_api_client().rest_client.pool_manager.connection_pool_kw
    watches = len(cached_kinds(OWNED_KINDS + NETWORK_POLICY_KINDS + ROUTER_RBAC_KINDS))
    workers = OperatorSettings().reconcile_workers
    assert pool["maxsize"] == k8s_api.CONNECTION_POOL_SIZE >= watches + workers + APPLY_THREADS


def test_a_connect_that_hangs_fails_in_seconds_and_is_not_retried_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A call to an address that never answers the handshake (a Service without endpoints whose
    rejects are rate-limited) gives up after CONNECT_TIMEOUT_SECONDS, once, as an unreachable
    TransientApiError: the caller's short backoff decides when to ask again, not a 30 s connect
    repeated by urllib3's retries."""
    import urllib3
    from kubernetes import config as kube_config

    from modeldeploy_operator.k8s import api as k8s_api

    monkeypatch.setattr(kube_config, "load_incluster_config", lambda: None)
    api_client = k8s_api.new_api_client()
    retries = api_client.configuration.retries
    assert isinstance(retries, urllib3.Retry)
    assert (retries.connect, retries.total) == (0, 3)
    assert api_client.rest_client.pool_manager.connection_pool_kw["retries"] is retries
    assert k8s_api.CONNECT_TIMEOUT_SECONDS <= 5
    seen: list[Any] = []

    def call_api(*_args: Any, _request_timeout: Any = None, **_kwargs: Any) -> Any:
        seen.append(_request_timeout)
        raise urllib3.exceptions.ConnectTimeoutError("connect timed out")

    monkeypatch.setattr(api_client, "call_api", call_api)
    kube = k8s_api.KubeApi(api_client, "modeldeploy", fenced=False)
    with pytest.raises(k8s_api.TransientApiError) as failed:
        kube.get("v1", "Service", "ml", "churn")
    assert failed.value.unreachable
    with pytest.raises(k8s_api.TransientApiError):
        next(iter(kube.watch("v1", "Service", None, "", "1", 60)))
    assert [t[0] for t in seen] == [k8s_api.CONNECT_TIMEOUT_SECONDS] * 2
    assert seen[1][1] > 60  # a watch's read timeout outlasts the server's own end of it


def test_workers_never_reconcile_one_object_twice_at_once() -> None:
    """Four real worker threads, events for ten objects arriving while passes run: a pass of an
    object never overlaps another of the same object, and every object's last event is acted on."""
    import threading

    running: set[str] = set()
    overlaps: list[str] = []
    lock = threading.Lock()
    passes: dict[str, int] = {}
    last_seen: dict[str, str] = {}

    class Slow(ScriptedReconciler):
        def reconcile(self, body: dict[str, Any]) -> Outcome:
            name = body["metadata"]["name"]
            with lock:
                if name in running:
                    overlaps.append(name)
                running.add(name)
            threading.Event().wait(0.002)
            with lock:
                running.discard(name)
                passes[name] = passes.get(name, 0) + 1
                last_seen[name] = body["metadata"]["resourceVersion"]
            return Outcome("Ready", False, 0, 0)

    made = Controller(Slow(), OperatorSettings(reconcile_workers=4), WorkQueue())  # type: ignore[arg-type]
    stop = threading.Event()
    made.start(stop)
    try:
        names = [f"m{i}" for i in range(10)]
        for round_ in range(30):
            for name in names:
                made.on_modeldeployment("MODIFIED", md(name, rv=round_ + 1))
        deadline = threading.Event()
        for _ in range(600):
            with lock:
                if all(last_seen.get(n) == "30" for n in names) and not running:
                    break
            deadline.wait(0.05)
    finally:
        stop.set()
        made.stop()
    assert overlaps == []
    assert last_seen == dict.fromkeys(names, "30")  # the last event of each was acted on
    assert all(count <= 30 for count in passes.values())  # and events coalesced (30 each were sent)


def test_no_kopf_handler_puts_a_finalizer_on_modeldeployments() -> None:
    """kopf adds a finalizer for any daemon, timer or non-optional deletion handler; with the operator
    scaled to zero, deleting the object or its namespace would then never complete (issue 11). The
    reconcile queue replaced the per-object daemon: no kopf handler may need one."""
    import kopf

    from modeldeploy_operator import handlers

    registry = kopf.get_default_registry()
    # the handlers are registered on import
    assert any(h.fn is handlers.on_modeldeployment for h in registry._watching.get_all_handlers())
    for kind in (registry._spawning, registry._changing, registry._watching):
        assert not any(getattr(h, "requires_finalizer", False) for h in kind.get_all_handlers())


# -- our own writes coming back (the echo) -------------------------------------------------------------


class WritingReconciler(ScriptedReconciler):
    """Each pass writes status (as the real one does when the plan changed): the object comes back from
    the API server one resourceVersion later, and the controller is told, as Reconciler tells it."""

    def reconcile(self, body: dict[str, Any]) -> Outcome:
        outcome = super().reconcile(body)
        if outcome.status_written:
            written = copy.deepcopy(body)
            written["metadata"]["resourceVersion"] = str(int(body["metadata"]["resourceVersion"]) + 1)
            self.status_writes.append(written)
            self.status_written(written)
        return outcome

    @property
    def status_writes(self) -> list[dict[str, Any]]:
        writes: list[dict[str, Any]] = self.__dict__.setdefault("_writes", [])
        return writes


def writing_controller(*answers: Any) -> tuple[Controller, WritingReconciler]:
    reconciler = WritingReconciler(*answers)
    made = Controller(reconciler, OperatorSettings(), WorkQueue(FakeClock(), min_gap=0.0))  # type: ignore[arg-type]
    return made, reconciler


def test_the_echo_of_our_own_status_write_queues_no_pass() -> None:
    """One change, one pass: the watch event of the status that pass wrote is stored, not queued
    (before: a second pass, planning the same thing from the copy it had just written)."""
    made, reconciler = writing_controller(Outcome("Progressing", True, 0, 0))
    made.on_modeldeployment("MODIFIED", md(rv=10))
    assert run_ready(made) == [("ml", "churn")]
    (written,) = reconciler.status_writes
    made.on_modeldeployment("MODIFIED", copy.deepcopy(written))  # the echo, rv 11
    assert run_ready(made) == []
    assert len(reconciler.passes) == 1
    made.resync()  # still known, at its latest copy
    run_ready(made)
    assert reconciler.passes[-1]["metadata"]["resourceVersion"] == "11"


@pytest.mark.parametrize(
    "events",
    [
        [12],  # someone else wrote after our write (their own resourceVersion)
        [11, 12],  # our echo, then their change
        [12, 11],  # their change first, our echo late (never from one watch, but not trusted either)
    ],
)
def test_a_change_by_someone_else_after_our_write_is_always_acted_on(events: list[int]) -> None:
    made, reconciler = writing_controller(Outcome("Progressing", True, 0, 0))
    made.on_modeldeployment("MODIFIED", md(rv=10))
    run_ready(made)
    for rv in events:
        made.on_modeldeployment("MODIFIED", md(rv=rv, annotations={"modeldeploy.io/command": "pause"}))
    assert run_ready(made) == [("ml", "churn")]
    assert reconciler.passes[-1]["metadata"]["resourceVersion"] == "12"


def test_an_event_of_our_version_that_came_before_the_write_returned_is_acted_on() -> None:
    """The watch can be faster than the write's response: the event was queued already, and the
    version, already kept, is not taken for a future echo."""
    made, _ = writing_controller(Outcome("Progressing", True, 0, 0))
    made.on_modeldeployment("ADDED", md(rv=10))
    made.on_modeldeployment("MODIFIED", md(rv=11))  # arrives first...
    made.written(md(rv=11))  # ...then our write's answer with the same version: not recorded
    made.on_modeldeployment("MODIFIED", md(rv=11))  # (a duplicate delivery would still queue)
    assert run_ready(made) == [("ml", "churn")]


def test_a_recreated_namesake_is_never_taken_for_an_echo() -> None:
    made, _ = writing_controller(Outcome("Progressing", True, 0, 0))
    made.on_modeldeployment("ADDED", md(rv=10))
    run_ready(made)  # wrote rv 11
    made.on_modeldeployment("DELETED", md(rv=12))
    recreated = md(rv=11)  # (impossible: versions only grow; the record went with the deletion anyway)
    recreated["metadata"]["uid"] = "u-new"
    made.on_modeldeployment("ADDED", recreated)
    assert run_ready(made) == [("ml", "churn")]


def test_a_pass_that_wrote_objects_gets_one_follow_up_and_one_that_wrote_only_status_none() -> None:
    """The plan was made before its writes (a created Deployment turns Pending into Progressing): one
    more pass plans from what was written. A status-only pass changed nothing it observes."""
    made, reconciler = writing_controller(
        Outcome("Pending", True, 4, 0, changed=4),  # created objects and wrote status
        Outcome("Progressing", True, 0, 0),  # the follow-up: status only
    )
    made.on_modeldeployment("ADDED", md(rv=10))
    assert run_ready(made) == [("ml", "churn"), ("ml", "churn")]
    for written in reconciler.status_writes:
        made.on_modeldeployment("MODIFIED", copy.deepcopy(written))
    assert run_ready(made) == []
    assert [p["metadata"]["resourceVersion"] for p in reconciler.passes] == ["10", "11"]
    for outcome in (Outcome("Ready", False, 0, 1), Outcome("Ready", False, 0, 0, scaled=1)):
        made, reconciler = writing_controller(outcome)
        made.on_modeldeployment("ADDED", md(rv=10))
        assert len(run_ready(made)) == 2  # a prune or a scale is a write too
    # Applies the server found nothing to do for (the same resourceVersion back): no follow-up, which
    # would only send them again, pass after pass.
    made, reconciler = writing_controller(Outcome("Ready", False, 3, 0, changed=0))
    made.on_modeldeployment("ADDED", md(rv=10))
    assert len(run_ready(made)) == 1


def test_the_planner_plans_the_same_from_the_status_it_wrote() -> None:
    """What lets a status-only pass go without a follow-up: given the status a pass wrote and the
    same observation, the next pass would write nothing. Checked on whole reconciles of a fake
    cluster, each pass's written status fed back (as the echo would have)."""
    cluster = FakeCluster()
    reconciler = Reconciler(cluster, OperatorSettings())  # type: ignore[arg-type]
    status: dict[str, Any] = {}
    for version in ("1", "1", "2", "2", "2"):
        outcome = reconciler.reconcile(body(version, status=status))
        status = cluster.last_status if outcome.status_written else status
        if not outcome.objects_written:
            cluster.writes.clear()
            again = reconciler.reconcile(body(version, status=status))
            assert (again.status_written, again.applied, cluster.writes) == (False, 0, []), version


# -- a namespace being deleted --------------------------------------------------------------------------


def test_a_namespace_being_deleted_is_left_alone_from_the_first_refusal() -> None:
    terminating = NamespaceTerminatingError(
        403,
        "PATCH .../serviceaccounts/churn-router: unable to create new content in namespace ml "
        "because it is being terminated",
    )
    made, reconciler, _ = controller(terminating)
    made.on_modeldeployment("ADDED", md())
    run_ready(made)
    assert made.queue.timer_of(("ml", "churn")) is None  # no retry
    pods = CachedKind("v1", "ServiceAccount")
    for _ in range(5):  # the deletion removes what it owns, one event each
        made.on_owned(pods, "DELETED", {"metadata": {"namespace": "ml", "labels": {INDEX_LABEL: "churn"}}})
    made.on_modeldeployment("MODIFIED", md(rv=2))
    made.resync()
    assert run_ready(made) == []
    assert len(reconciler.passes) == 1
    made.on_modeldeployment("DELETED", md(rv=3))  # gone with its namespace
    fresh = md(rv=9)  # a namespace of the same name made again, and a ModelDeployment in it
    fresh["metadata"]["uid"] = "u-new"
    made.on_modeldeployment("ADDED", fresh)
    assert run_ready(made) == [("ml", "churn")]


def test_the_first_refusal_leaves_every_modeldeployment_of_that_namespace_alone() -> None:
    made, _, _ = controller(NamespaceTerminatingError(403, "being terminated"))
    for name, namespace in (("a", "ml"), ("b", "ml"), ("c", "other")):
        made.on_modeldeployment("ADDED", md(name, namespace=namespace))
    run_ready(made)  # a refused; b and c reconciled (b before the namespace went)
    pods = CachedKind("v1", "Pod")
    for name, namespace in (("a", "ml"), ("b", "ml"), ("c", "other")):
        made.on_owned(pods, "DELETED", {"metadata": {"namespace": namespace, "labels": {INDEX_LABEL: name}}})
    assert run_ready(made) == [("other", "c")]
    made.resync()
    assert run_ready(made) == [("other", "c")]


def test_a_namespace_being_deleted_is_said_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "modeldeploy.controller")

    class Refusing(ScriptedReconciler):
        """Every pass refused; the pass of "other" is still running when that of "churn" is refused
        (two workers at once)."""

        def reconcile(self, body: dict[str, Any]) -> Outcome:
            self.passes.append(body)
            if body["metadata"]["name"] == "other":
                made.process(("ml", "churn"))
            raise NamespaceTerminatingError(403, "being terminated")

    made = Controller(Refusing(), OperatorSettings(), WorkQueue(FakeClock(), min_gap=0.0))  # type: ignore[arg-type]
    made.on_modeldeployment("ADDED", md("churn"))
    made.on_modeldeployment("ADDED", md("other"))
    made.process(("ml", "other"))
    made.on_modeldeployment("MODIFIED", md(rv=2))
    made.resync()
    run_ready(made)  # (the keys the ADDED events queued: skipped)
    assert len(made.reconciler.passes) == 2  # type: ignore[attr-defined]
    said = [r for r in caplog.records if "being deleted" in r.getMessage()]
    assert len(said) == 1
    assert said[0].levelname == "INFO"


# -- a refusal stays a refusal ------------------------------------------------------------------------


class RefusingCluster(FakeCluster):
    """Refuses every apply (403); the status write after it meets `status_error`."""

    def __init__(self, refusal: Exception, status_error: Exception | None) -> None:
        super().__init__()
        self.refusal, self.status_error = refusal, status_error
        self.events: list[str] = []

    def apply(self, manifest: dict[str, Any], field_manager: str | None = None) -> dict[str, Any]:
        self.writes.append(f"apply {manifest['kind']}/{manifest['metadata']['name']}")
        raise self.refusal

    def event(self, involved: Any, reason: str, *args: Any, **kwargs: Any) -> None:
        self.events.append(reason)

    def patch_status(self, *args: Any, **kwargs: Any) -> None:
        self.writes.append("status")
        if self.status_error is not None:
            raise self.status_error


@pytest.mark.parametrize(
    "status_error", [None, TransientApiError("PATCH .../status: 409 the object has been modified"),
                     TransientApiError("PATCH .../status: 503 unavailable")],
)  # fmt: skip
def test_a_refusal_stays_a_refusal_when_its_status_write_fails(status_error: Exception | None) -> None:
    cluster = RefusingCluster(RejectedError(403, "forbidden: serviceaccounts"), status_error)
    reconciler = Reconciler(cluster, OperatorSettings())  # type: ignore[arg-type]
    with pytest.raises(RejectedError, match="forbidden: serviceaccounts"):
        reconciler.reconcile(body())
    assert cluster.writes[-1] == "status"  # it was tried
    assert cluster.events == ["ApiRejected"]
    # ...so the controller retries after the longest backoff, not at once and then never.
    made = Controller(reconciler, OperatorSettings(retry_backoff_max_seconds=60.0), WorkQueue(FakeClock()))
    made.on_modeldeployment("ADDED", body())
    run_ready(made)
    assert made.queue.timer_of(("ml", "churn")) == pytest.approx(made.queue.now() + 60.0)


def test_a_namespace_being_deleted_gets_no_status_and_no_event() -> None:
    cluster = RefusingCluster(NamespaceTerminatingError(403, "being terminated"), None)
    reconciler = Reconciler(cluster, OperatorSettings())  # type: ignore[arg-type]
    with pytest.raises(NamespaceTerminatingError):
        reconciler.reconcile(body())
    # Stopped at the first refused wave: what pods need, written at once; no Deployment, no status.
    applied = sorted(w for w in cluster.writes if w.startswith("apply"))
    assert applied == [
        "apply ConfigMap/churn-router",
        "apply Role/churn-router",
        "apply ServiceAccount/churn-router",
    ]
    assert "status" not in cluster.writes
    assert cluster.events == []


def test_a_status_write_of_an_object_deleted_meanwhile_is_not_a_refusal() -> None:
    class Deleted(FakeCluster):
        def patch_status(self, *args: Any, **kwargs: Any) -> None:
            raise RejectedError(
                404, 'PATCH .../churn/status: modeldeployments.modeldeploy.io "churn" not found'
            )

    reconciler = Reconciler(Deleted(), OperatorSettings())  # type: ignore[arg-type]
    assert reconciler.reconcile(body()).status_written is False

    class NoSubresource(FakeCluster):  # a 404 that is not the object's: still raised
        def patch_status(self, *args: Any, **kwargs: Any) -> None:
            raise RejectedError(
                404, "PATCH .../churn/status: the server could not find the requested resource"
            )

    with pytest.raises(RejectedError):
        Reconciler(NoSubresource(), OperatorSettings()).reconcile(body())  # type: ignore[arg-type]


# -- one change, counted: passes and requests, with every write's watch event delivered -----------------


class EchoingCluster:
    """The API server as the operator sees it: every write gets the next resourceVersion and comes back
    as a watch event (delivered between passes, as a watch would, a little later); status writes are
    conditional on the version read, as the real ones are. Requests are counted."""

    field_manager = "modeldeploy-operator"

    def __init__(self) -> None:
        self.rv = 100
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.pending: list[tuple[str, dict[str, Any]]] = []
        self.requests: list[str] = []

    def _write(self, obj: dict[str, Any], event_type: str) -> dict[str, Any]:
        self.rv += 1
        meta = obj["metadata"]
        meta["resourceVersion"] = str(self.rv)
        meta.setdefault("uid", f"uid-{obj['kind']}-{meta['name']}")
        key = (obj["kind"], meta["namespace"], meta["name"])
        if event_type == "DELETED":
            self.objects.pop(key, None)
        else:
            self.objects[key] = obj
        self.pending.append((event_type, copy.deepcopy(obj)))
        return copy.deepcopy(obj)

    # reads (the caches list once; the fallback is never needed once they have)
    def list_all(
        self, api_version: str, kind: str, namespace: str | None, selector: str, project: Any = None
    ) -> Any:
        items = self.list(api_version, kind, namespace, selector)
        return [project(i) if project else i for i in items], str(self.rv)

    def list(self, api_version: str, kind: str, namespace: str | None, selector: str) -> list[dict[str, Any]]:
        self.requests.append(f"list {kind}")
        label, _, value = selector.partition("=")

        def selected(o: dict[str, Any]) -> bool:
            labels = o["metadata"].get("labels") or {}
            return not label or (labels.get(label) == value if value else label in labels)

        return [
            copy.deepcopy(o)
            for (k, ns, _), o in self.objects.items()
            if k == kind and (namespace is None or ns == namespace) and selected(o)
        ]

    # writes
    def create_modeldeployment(self, obj: dict[str, Any]) -> None:
        self._write(copy.deepcopy(obj), "ADDED")

    def user_patch(self, name: str, change: dict[str, Any]) -> None:
        obj = copy.deepcopy(self.objects[("ModelDeployment", "ml", name)])
        for part, values in change.items():
            obj.setdefault(part, {}).update(values)
        obj["metadata"]["generation"] = obj["metadata"].get("generation", 1) + ("spec" in change)
        self._write(obj, "MODIFIED")

    def apply(self, manifest: dict[str, Any], field_manager: str | None = None) -> dict[str, Any]:
        self.requests.append(f"apply {manifest['kind']}")
        key = (manifest["kind"], manifest["metadata"]["namespace"], manifest["metadata"]["name"])
        existed = key in self.objects
        return self._write(copy.deepcopy(manifest), "MODIFIED" if existed else "ADDED")

    def patch(self, kind: Any, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        self.requests.append(f"patch {kind.kind}")
        obj = copy.deepcopy(self.objects[(kind.kind, namespace, name)])
        obj["spec"].update(patch.get("spec") or {})
        return self._write(obj, "MODIFIED")

    def delete(self, api_version: str, kind: str, namespace: str, name: str, **_: Any) -> None:
        self.requests.append(f"delete {kind}")
        if (kind, namespace, name) in self.objects:
            self._write(copy.deepcopy(self.objects[(kind, namespace, name)]), "DELETED")

    def patch_status(self, kind: Any, namespace: str, name: str, status: dict[str, Any], **kw: Any) -> Any:
        self.requests.append("status")
        obj = copy.deepcopy(self.objects[("ModelDeployment", namespace, name)])
        if kw.get("resource_version") not in (None, obj["metadata"]["resourceVersion"]):
            raise TransientApiError("409 the object has been modified")
        current = obj.setdefault("status", {})
        for field_name, value in status.items():
            if value is None:
                current.pop(field_name, None)
            else:
                current[field_name] = value
        return self._write(obj, "MODIFIED")

    def event(self, *args: Any, **kwargs: Any) -> None:
        self.requests.append("event")


class Counted:
    """The operator's controller, caches and reconciler on an EchoingCluster."""

    def __init__(self) -> None:
        from modeldeploy_operator.handlers import build_controller

        self.cluster = EchoingCluster()
        self.controller, self.cache = build_controller(self.cluster, OperatorSettings())  # type: ignore[arg-type]
        self.controller.queue = WorkQueue(FakeClock(), min_gap=0.0)
        for informer in self.cache.informers.values():
            informer.relist()
        self.cluster.requests.clear()
        self.passes: list[str] = []
        reconcile = self.controller.reconciler.reconcile

        def counted(body: dict[str, Any]) -> Outcome:
            self.passes.append(body["metadata"]["resourceVersion"])
            return reconcile(body)

        self.controller.reconciler.reconcile = counted  # type: ignore[method-assign]

    def deliver(self) -> None:
        """What the watches bring: ModelDeployments to the controller (kopf's watch), the rest to
        the caches' informers."""
        events, self.cluster.pending = self.cluster.pending, []
        for event_type, obj in events:
            if obj["kind"] == "ModelDeployment":
                self.controller.on_modeldeployment(event_type, obj)
                continue
            informer = self.cache._informer(obj["apiVersion"], obj["kind"], obj["metadata"]["namespace"])
            assert informer is not None, obj["kind"]
            informer._apply({"type": event_type, "object": obj})

    def settle(self) -> tuple[int, int]:
        """Passes and requests until nothing is queued (events delivered after each pass)."""
        passes, requests = len(self.passes), len(self.cluster.requests)
        self.deliver()
        for _ in range(50):
            key = self.controller.queue.get(timeout=0)
            if key is None:
                break
            self.controller.process(key)  # type: ignore[arg-type]
            self.controller.queue.done(key)
            self.deliver()
        else:
            raise AssertionError("never settled")
        return len(self.passes) - passes, len(self.cluster.requests) - requests


def test_one_change_one_pass_per_write_and_none_for_our_own_echoes() -> None:
    """Counted on the real controller, caches and reconciler: a ModelDeployment created, then its
    model changed. Every pass that follows is either the first, or the one follow-up of a pass that
    wrote objects; none is queued by the watch events of our own writes. (Before, each of those
    events queued its ModelDeployment again: 3 passes for the create here, 2 for the model change,
    the same 13 and 7 requests: the passes the echoes queued wrote nothing.)"""
    run = Counted()
    the_body = body()
    the_body["metadata"].pop("resourceVersion")
    run.cluster.create_modeldeployment(the_body)
    created = run.settle()
    run.cluster.user_patch("churn", {"spec": {"model": body("2")["spec"]["model"]}})
    changed = run.settle()
    assert (created[0], changed[0]) == (2, 2), run.passes
    assert run.controller.echoes >= 2  # our status writes came back, queued nothing
    assert sum(i.echoes for i in run.cache.informers.values()) > 10  # nor did our applies
    assert run.settle() == (0, 0)  # quiet
    # Someone else's change right after ours is acted on: an annotation, no spec change.
    run.cluster.user_patch("churn", {"metadata": {"annotations": {"example.com/note": "x"}}})
    assert run.settle()[0] == 1
    print(f"passes, requests: created {created}, model changed {changed}")


# -- operator instances (instanceId) -----------------------------------------------------------------
INSTANCE = "modeldeploy.io/controller-instance"


@pytest.mark.parametrize(
    ("instance_id", "labels", "managed"),
    [
        ("", {}, True),  # the default instance: objects without the label
        ("", {INSTANCE: "team-a"}, False),
        ("", {INSTANCE: ""}, True),  # an empty value is no instance: the default one's
        ("team-a", {}, False),
        ("team-a", {INSTANCE: "team-a"}, True),
        ("team-a", {INSTANCE: "team-b"}, False),
        ("team-a", {INSTANCE: "Team-A"}, False),  # label values are case-sensitive
    ],
)
def test_an_operator_queues_only_its_own_instances_modeldeployments(
    instance_id: str, labels: dict[str, str], managed: bool
) -> None:
    made, reconciler, _ = controller(instance_id=instance_id)
    made.on_modeldeployment("ADDED", md(labels=labels))
    assert run_ready(made) == ([("ml", "churn")] if managed else [])
    # Nothing of another instance's object is kept: its owned objects' events queue nothing either.
    kind = CachedKind("apps/v1", "Deployment")
    made.on_owned(kind, "MODIFIED", {"metadata": {"namespace": "ml", "labels": {INDEX_LABEL: "churn"}}})
    made.resync()
    assert len(run_ready(made)) == (1 if managed else 0)
    assert len(reconciler.passes) == (2 if managed else 0)


def test_a_modeldeployment_relabelled_away_is_forgotten_and_one_relabelled_back_is_taken_up() -> None:
    made, reconciler, _ = controller()
    made.on_modeldeployment("ADDED", md(rv=1))
    assert run_ready(made) == [("ml", "churn")]
    made.on_modeldeployment("MODIFIED", md(rv=2, labels={INSTANCE: "canary-operator"}))
    made.resync()
    assert run_ready(made) == []  # handed over: this operator acts on it no more
    made.on_modeldeployment("MODIFIED", md(rv=3, labels={}))
    assert run_ready(made) == [("ml", "churn")]
    assert [p["metadata"]["resourceVersion"] for p in reconciler.passes] == ["1", "3"]


@pytest.mark.parametrize("bad", ["-a", "a-", "a b", "a/b", "x" * 64, "é"])
def test_an_instance_id_that_is_no_label_value_is_refused_at_start(bad: str) -> None:
    with pytest.raises(ValueError, match="instance_id"):
        OperatorSettings(instance_id=bad)


# -- start-up: kopf is not held up by the caches' lists; no pass before they have listed ----------------


class ListingCache:
    """A ClusterCache whose lists end when the test says so."""

    def __init__(self) -> None:
        self.listed = threading.Event()
        self.informers: dict[Any, Any] = {}

    def wait_synced(self, timeout: float) -> bool:
        return self.listed.wait(timeout)


def test_workers_start_once_the_caches_have_listed_and_events_queue_meanwhile() -> None:
    from modeldeploy_operator.handlers import start_workers

    made, reconciler, _ = controller()
    cache, stop = ListingCache(), threading.Event()
    starting = threading.Thread(target=start_workers, args=(made, cache, stop, 30.0))
    starting.start()
    made.on_modeldeployment(None, md())  # kopf's list of ModelDeployments, while the caches list
    assert not made._threads
    assert len(made.queue) == 1
    cache.listed.set()
    starting.join(10)
    assert made._threads  # the workers run, and take what was queued
    deadline = time.monotonic() + 30
    while not reconciler.passes and time.monotonic() < deadline:
        time.sleep(0.01)
    made.stop()
    assert [p["metadata"]["name"] for p in reconciler.passes] == ["churn"]


def test_no_worker_starts_when_the_operator_stops_before_the_caches_listed() -> None:
    from modeldeploy_operator.handlers import start_workers

    made, _, _ = controller()
    cache, stop = ListingCache(), threading.Event()
    stop.set()
    cache.listed.set()
    start_workers(made, cache, stop, 1.0)  # type: ignore[arg-type]
    assert not made._threads
