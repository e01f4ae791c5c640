"""One truth for a model's version (issue 12): the server is told the spec's version and refuses a
bundle whose manifest names another; the operator reads what each server loaded (or refused) once per
server process, hands it to the pure planner as an observation, which reports ModelVersionMismatch
(a rollout of such a revision is stopped) and records the digests the servers loaded in history."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from modeldeploy_operator.analysis.pool import MeasurementPool
from modeldeploy_operator.analysis.servers import (
    HEALTH_PATH,
    MAX_BACKOFF_SECONDS,
    ServerPod,
    ServerReports,
    probe,
)
from modeldeploy_operator.domain.history import MAX_LOADED_DIGESTS, record_revision, with_loaded_digests
from modeldeploy_operator.domain.manifests import build_serving_deployment
from modeldeploy_operator.domain.observed import (
    BundleRefusal,
    ServerReport,
    mismatch_message,
    parse_server_report,
    with_server_reports,
)
from modeldeploy_operator.domain.resource import ModelDeploymentRef
from modeldeploy_operator.domain.revision import resolve_variants

from modeldeploy_builders import NOW, make_spec, observed_for
from rollout_sim import Sim, revision_of, rollout_spec

D1, D2, D3 = "1" * 64, "2" * 64, "3" * 64


def ready_body(version: str = "2", sha256: str = D1) -> dict[str, Any]:
    return {"ready": True, "state": "ready", "model": {"name": "churn", "version": version, "sha256": sha256}}


def refused_body(found: str = "3", expected: str = "2", sha256: str = D2) -> dict[str, Any]:
    return {
        "ready": False,
        "state": "failed",
        "error": "VersionMismatchError: ...",
        "reason": "ModelVersionMismatch",
        "refused": {"version": found, "sha256": sha256, "expectedVersion": expected},
    }


# --- the pods' answers, parsed and checked (pure) ----------------------------------------------


def test_a_ready_server_reports_the_bundle_it_loaded() -> None:
    report = parse_server_report("r1", 200, ready_body())
    assert report == ServerReport("r1", "ready", version="2", sha256=D1)
    assert report.final


def test_a_server_that_refused_its_bundle_reports_both_versions() -> None:
    report = parse_server_report("r1", 503, refused_body())
    assert report == ServerReport(
        "r1", "failed", version="3", sha256=D2, reason="ModelVersionMismatch", expected_version="2"
    )
    assert report.final


@pytest.mark.parametrize(
    ("status", "body", "state"),
    [
        (503, {"ready": False, "state": "loading"}, "loading"),
        (503, ready_body(), "loading"),  # this worker is ready, another one is not yet
        (503, {"ready": False, "state": "failed", "error": "x", "reason": "ModelLoadFailed"}, "failed"),
    ],
)
def test_states_that_are_not_a_loaded_model(status: int, body: dict[str, Any], state: str) -> None:
    report = parse_server_report("r1", status, body)
    assert report is not None
    assert report.state == state
    assert report.final is (state != "loading")


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (500, ready_body()),  # only the two answers the server gives
        (404, {"error": "not found"}),
        (200, ["ready"]),
        (200, "ready"),
        (200, None),
        (200, {"ready": True}),  # no state
        (200, {"state": "exploded"}),
    ],
)
def test_anything_else_is_no_report(status: int, body: object) -> None:
    assert parse_server_report("r1", status, body) is None


@pytest.mark.parametrize(
    "model",
    [
        {"version": "2 ; rm -rf", "sha256": D1},  # not the label-value grammar
        {"version": "x" * 65, "sha256": D1},
        {"version": 2, "sha256": D1},
        {"version": "2", "sha256": "A" * 64},  # upper-case: not what the server writes
        {"version": "2", "sha256": "1" * 63},
        {"version": "2", "sha256": "1" * 64 + "\n"},  # Python's `$` matches before a trailing newline
        {"version": "2\n", "sha256": D1},
        {"version": "2", "sha256": ["1" * 64]},
    ],
)
def test_fields_of_the_wrong_shape_are_left_out(model: dict[str, Any]) -> None:
    report = parse_server_report("r1", 200, {"state": "ready", "model": model})
    assert report is not None
    bad_version = model["version"] != "2"
    assert (report.version is None) is bad_version
    assert (report.sha256 is None) is (not bad_version)


def test_an_unknown_reason_is_not_copied() -> None:
    body = refused_body() | {"reason": "<script>"}
    report = parse_server_report("r1", 503, body)
    assert report is not None
    assert report.reason is None


def test_reports_become_facts_of_the_deployments() -> None:
    spec = make_spec()
    deployment = observed_for(spec, ready=1)
    rev = deployment.revision
    reports = [
        ServerReport(rev, "ready", "1", D1),
        ServerReport(rev, "ready", "1", D1),  # two pods, one bundle
        ServerReport(rev, "failed", "3", D3, "ModelVersionMismatch", "1"),
        ServerReport(rev, "failed", "1", D2, "ModelLoadFailed"),
        ServerReport("other", "ready", "9", D2),
    ]
    [seen] = with_server_reports([deployment], reports)
    assert seen.loaded_digests == {D1}
    assert seen.bundle_refused == BundleRefusal("ModelVersionMismatch", mismatch_message(reports[2]))
    assert "'3'" in seen.bundle_refused.message
    assert "'1'" in seen.bundle_refused.message
    assert rev in seen.bundle_refused.message
    [quiet] = with_server_reports([deployment], [])
    assert (quiet.loaded_digests, quiet.bundle_refused) == (frozenset(), None)


def test_the_mismatch_message_is_the_same_whatever_order_the_pods_answered_in() -> None:
    deployment = observed_for(make_spec(), ready=0)
    a = ServerReport(deployment.revision, "failed", "3", D3, "ModelVersionMismatch", "1")
    b = ServerReport(deployment.revision, "failed", "4", D2, "ModelVersionMismatch", "1")
    first = with_server_reports([deployment], [a, b])[0].bundle_refused
    assert first == with_server_reports([deployment], [b, a])[0].bundle_refused


# --- history: the digests the servers loaded ---------------------------------------------------


def _history() -> tuple[Any, str]:
    spec = make_spec()
    variant = resolve_variants("churn", spec)[0]
    return record_revision((), variant, now=NOW, limit=10), variant.revision


def test_history_records_the_digests_the_servers_loaded() -> None:
    history, rev = _history()
    assert history[0].loaded_sha256 is None
    once = with_loaded_digests(history, "default", rev, {D2})
    assert once[0].loaded_sha256 == (D2,)
    assert once[0].sha256 == "b" * 64  # the spec's expectation is kept beside it
    twice = with_loaded_digests(once, "default", rev, {D1, D2})
    assert twice[0].loaded_sha256 == (D1, D2)  # a URI whose content changed between pod starts
    assert with_loaded_digests(twice, "default", rev, {D1}) == twice  # nothing new: unchanged
    assert with_loaded_digests(twice, "default", "nope", {D3}) == twice
    assert with_loaded_digests(twice, "default", rev, ()) == twice


def test_history_keeps_at_most_a_few_digests_per_revision() -> None:
    history, rev = _history()
    for i in range(10):
        history = with_loaded_digests(history, "default", rev, {f"{i:x}" * 64})
    assert len(history[0].loaded_sha256 or ()) == MAX_LOADED_DIGESTS


# --- the server is told the spec's version ------------------------------------------------------


def test_the_server_container_is_told_the_specs_version_without_changing_the_revision_hash() -> None:
    spec = make_spec(model={"uri": "s3://models/churn/v1", "format": "onnx", "version": "7"})
    variant = resolve_variants("churn", spec)[0]
    owner = ModelDeploymentRef(name="churn", namespace="ml", uid="u-1")
    deployment = build_serving_deployment(owner, variant, image="serving:1", replicas=1)
    env = {e["name"]: e["value"] for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["MODELDEPLOY_SERVER_MODEL_VERSION"] == "7"
    # The hash of this spec before the variable existed (computed at 3bf821d): an operator upgrade
    # starts no rollout.
    assert variant.revision == "338ccacc1f"


# --- the planner: a clear condition, never a silent rollout ------------------------------------


def _serving_v1() -> Sim:
    sim = Sim(rollout_spec("1"))
    sim.step()
    sim.step(1)
    assert sim.status is not None
    assert sim.status.phase == "Ready"
    return sim


def test_a_canary_whose_servers_refuse_their_bundle_is_stopped_with_the_reason() -> None:
    sim = _serving_v1()
    old = revision_of(sim.spec)
    sim.spec = rollout_spec("2")
    new = revision_of(sim.spec)
    sim.unready.add(new)
    sim.step()
    sim.server_reports = [ServerReport(new, "failed", "3", D3, "ModelVersionMismatch", "2")]
    sim.step(1)
    assert sim.status is not None
    assert sim.status.aborted
    assert "ModelVersionMismatch" in sim.reasons()
    assert sim.condition("Degraded") == ("True", "ModelVersionMismatch")
    entry = next(e for e in sim.status.history if e.hash == new)
    assert entry.outcome == "Aborted"
    assert entry.message is not None
    assert entry.message.startswith("ModelVersionMismatch: ")
    assert "'3'" in entry.message
    assert sim.weights()[old][1] == 100
    sim.step(1)  # the condition stays, no new Event every pass
    assert sim.condition("Degraded") == ("True", "ModelVersionMismatch")
    assert "ModelVersionMismatch" not in sim.reasons()


def test_a_first_deploy_whose_servers_refuse_their_bundle_is_degraded_not_just_unready() -> None:
    spec = rollout_spec("2")
    sim = Sim(spec)
    rev = revision_of(spec)
    sim.unready.add(rev)
    sim.step()
    sim.server_reports = [ServerReport(rev, "failed", "3", D3, "ModelVersionMismatch", "2")]
    sim.step(1)
    assert sim.status is not None
    assert sim.condition("Degraded") == ("True", "ModelVersionMismatch")
    assert sim.status.phase == "Degraded"
    assert sim.reasons().count("ModelVersionMismatch") == 1
    assert sim.status.message is not None
    assert "'3'" in sim.status.message
    sim.step(1)
    assert "ModelVersionMismatch" not in sim.reasons()  # said once
    # Fixed (the spec now names the bundle's version): the condition clears.
    sim.spec = rollout_spec("3")
    sim.server_reports = []
    sim.unready.clear()
    sim.step(1)
    sim.step(1)
    assert sim.condition("Degraded")[0] == "False"


def test_new_pods_of_the_serving_revision_that_load_another_version_are_reported() -> None:
    """A URI whose content changed (no model.sha256): pods started later load another bundle."""
    sim = _serving_v1()
    rev = revision_of(sim.spec)
    sim.server_reports = [
        ServerReport(rev, "ready", "1", D1),
        ServerReport(rev, "failed", "2", D2, "ModelVersionMismatch", "1"),
    ]
    sim.step(1)
    assert sim.condition("Degraded") == ("True", "ModelVersionMismatch")
    assert sim.status is not None
    entry = next(e for e in sim.status.history if e.hash == rev)
    assert entry.loaded_sha256 == (D1,)  # only what a server loaded, not what one refused


def test_history_records_what_the_servers_of_a_promoted_revision_loaded() -> None:
    sim = _serving_v1()
    rev = revision_of(sim.spec)
    sim.server_reports = [ServerReport(rev, "ready", "1", D1)]
    sim.step(1)
    assert sim.status is not None
    assert sim.status.history[0].loaded_sha256 == (D1,)
    assert sim.condition("Degraded")[0] == "False"
    # It survives the round trip through the API server (camelCase), and stays when pods go.
    assert sim.status.to_patch()["history"][0]["loadedSha256"] == [D1]
    sim.server_reports = []
    sim.step(1)
    assert sim.status.history[0].loaded_sha256 == (D1,)


# --- the I/O side: one GET per server process ----------------------------------------------------


class _Servers:
    """Fake pods behind an httpx MockTransport: address -> (status, JSON body); counts requests."""

    def __init__(self) -> None:
        self.answers: dict[str, tuple[int, Any]] = {}
        self.requests: list[str] = []

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(f"{request.url.host}:{request.url.port}{request.url.path}")
        status, body = self.answers[f"{request.url.host}:{request.url.port}"]
        if isinstance(body, bytes):
            return httpx.Response(status, content=body)
        return httpx.Response(status, json=body)


def _reports(fake: _Servers, clock: list[float]) -> ServerReports:
    client = httpx.Client(transport=httpx.MockTransport(fake.handler))
    return ServerReports(client, MeasurementPool(1, 5.0), clock=lambda: clock[0])


def _settle(reports: ServerReports, owner: str, pods: list[ServerPod]) -> tuple[list[ServerReport], bool]:
    """Observe until the pool has answered (a probe is collected on the observe after it finished)."""
    for _ in range(50):
        found, pending = reports.observe(owner, pods)
        for pod in pods:
            reports.pool.wait(("server", owner, pod.key), 5.0)
        if not reports.pool.running():
            return reports.observe(owner, pods)
    return found, pending


def test_a_final_answer_is_asked_for_once_per_server_process() -> None:
    fake, clock = _Servers(), [0.0]
    fake.answers["10.0.0.1:8080"] = (200, ready_body("1", D1))
    fake.answers["10.0.0.2:8080"] = (503, refused_body("3", "1", D3))
    reports = _reports(fake, clock)
    pods = [ServerPod(("uid-a", 0), "r1", "10.0.0.1:8080"), ServerPod(("uid-b", 0), "r1", "10.0.0.2:8080")]
    found, pending = _settle(reports, "ml/u", pods)
    assert not pending
    assert {(r.state, r.sha256) for r in found} == {("ready", D1), ("failed", D3)}
    asked = len(fake.requests)
    assert asked == 2
    assert all(path.endswith(HEALTH_PATH) for path in fake.requests)
    for _ in range(5):  # a steady ModelDeployment costs no request
        assert reports.observe("ml/u", pods)[1] is False
    assert len(fake.requests) == asked
    # The container of pod b restarted: a new process, asked again.
    fake.answers["10.0.0.2:8080"] = (200, ready_body("1", D2))
    pods[1] = ServerPod(("uid-b", 1), "r1", "10.0.0.2:8080")
    found, _ = _settle(reports, "ml/u", pods)
    assert {r.sha256 for r in found} == {D1, D2}
    assert len(fake.requests) == asked + 1
    # Pods that are gone are forgotten.
    assert reports.observe("ml/u", []) == ([], False)


def test_a_loading_or_silent_server_is_asked_again_later_not_on_every_reconcile() -> None:
    fake, clock = _Servers(), [100.0]
    fake.answers["10.0.0.1:8080"] = (503, {"ready": False, "state": "loading"})
    fake.answers["10.0.0.2:8080"] = (200, b"<html>not json</html>")
    reports = _reports(fake, clock)
    pods = [ServerPod(("a", 0), "r1", "10.0.0.1:8080"), ServerPod(("b", 0), "r1", "10.0.0.2:8080")]
    found, pending = _settle(reports, "ml/u", pods)
    assert (found, pending) == ([], True)
    asked = len(fake.requests)
    assert asked == 2
    reports.observe("ml/u", pods)
    assert len(fake.requests) == asked  # within RETRY_SECONDS: not asked again
    clock[0] += 2.5
    fake.answers["10.0.0.1:8080"] = (200, ready_body("1", D1))
    found, pending = _settle(reports, "ml/u", pods)
    assert [r.sha256 for r in found] == [D1]
    assert not pending  # b says nothing usable: asked again later, without keeping the object busy
    assert len(fake.requests) == asked + 2
    clock[0] += 3.0  # b's second failure backs off 4 s
    _settle(reports, "ml/u", pods)
    assert len(fake.requests) == asked + 2
    clock[0] += 1.5
    _settle(reports, "ml/u", pods)
    assert len(fake.requests) == asked + 3


def test_an_unreachable_server_backs_off_to_minutes() -> None:
    fake, clock = _Servers(), [0.0]
    fake.answers["10.0.0.3:8080"] = (200, b"garbage")
    reports = _reports(fake, clock)
    pods = [ServerPod(("c", 0), "r1", "10.0.0.3:8080")]
    for _ in range(12):
        clock[0] += 1000.0
        _settle(reports, "ml/u", pods)
    asked = len(fake.requests)
    clock[0] += MAX_BACKOFF_SECONDS - 1
    assert reports.observe("ml/u", pods) == ([], False)
    assert len(fake.requests) == asked


@pytest.mark.parametrize(
    ("status", "body", "why"),
    [
        (200, b"[", "not JSON"),
        (500, {"state": "ready"}, "no health report (HTTP 500)"),
        (302, {}, "redirect"),
    ],
)
def test_probe_failures_are_short_reasons_made_by_the_operator(status: int, body: Any, why: str) -> None:
    fake = _Servers()
    fake.answers["10.0.0.9:8080"] = (status, body)
    client = httpx.Client(transport=httpx.MockTransport(fake.handler))
    result = probe(client, ServerPod(("x", 0), "r1", "10.0.0.9:8080"))
    assert isinstance(result, str)
    assert why in result


# --- which pods are asked (the reconciler's observation) ----------------------------------------


def _pod(**changes: Any) -> dict[str, Any]:
    pod: dict[str, Any] = {
        "metadata": {"name": "p", "uid": "uid-1", "labels": {"modeldeploy.io/revision": "abc123"}},
        "status": {
            "podIP": "10.1.2.3",
            "containerStatuses": [{"name": "server", "restartCount": 2, "state": {"running": {}}}],
        },
    }
    for key, value in changes.items():
        section, field = key.split("__")
        if value is None:
            pod[section].pop(field, None)
        else:
            pod[section][field] = value
    return pod


@pytest.mark.parametrize(
    ("pod", "expected"),
    [
        (_pod(), ServerPod(("uid-1", 2), "abc123", "10.1.2.3:8080")),
        (_pod(status__podIP=None), None),  # no address yet
        (_pod(metadata__deletionTimestamp="2026-01-01T00:00:00Z"), None),  # going away
        (_pod(metadata__labels={"app.kubernetes.io/component": "router"}), None),  # not a model server
        (_pod(metadata__uid=None), None),
        (
            _pod(
                status__containerStatuses=[
                    {"name": "server", "state": {"waiting": {"reason": "CrashLoopBackOff"}}}
                ]
            ),
            None,  # no process to ask
        ),
        (_pod(status__containerStatuses=[{"name": "sidecar", "state": {"running": {}}}]), None),
    ],
)
def test_which_pods_are_asked_what_they_loaded(pod: dict[str, Any], expected: ServerPod | None) -> None:
    from modeldeploy_operator.reconciler import _server_pod

    assert _server_pod(pod) == expected
