"""Watch-driven reconciles (issue 16): what queues a ModelDeployment, the timers a pass leaves, retries
that honour Retry-After; and the apply that skips what is already live, so an idle pass writes nothing."""

from __future__ import annotations

import copy
import datetime as dt
from typing import Any

import pytest

from modeldeploy_operator.config import OperatorSettings
from modeldeploy_operator.controller import Controller
from modeldeploy_operator.domain.quantity import canonical_quantity
from modeldeploy_operator.k8s.api import RejectedError, TransientApiError
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
    reconciler.answers = [Outcome("Progressing", True, 1, 0, next_due=due)]
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

    def list(self, api_version: str, kind: str, namespace: str | None, selector: str) -> list[dict[str, Any]]:
        label, _, value = selector.partition("=")
        return [
            o
            for (k, _), o in self.objects.items()
            if k == kind and (not selector or o["metadata"].get("labels", {}).get(label) == value)
        ]

    def apply(self, manifest: dict[str, Any], field_manager: str | None = None) -> dict[str, Any]:
        self.writes.append(f"apply {manifest['kind']}/{manifest['metadata']['name']}")
        self.rv += 1
        live = copy.deepcopy(manifest)
        live["metadata"]["resourceVersion"] = str(self.rv)
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
