"""Table tests of preflight in the rollout planner (issue 15): the observed golden-set replay result
gates a new revision's first traffic under Canary, BlueGreen and Immediate; a failure aborts it
before it ever has weight."""

from __future__ import annotations

from typing import Any, Literal

import pytest

from modeldeploy_operator.domain.rollout.preflight import preflight_requests
from modeldeploy_operator.domain.spec import ModelDeploymentSpec, Preflight
from modeldeploy_operator.domain.status_model import (
    ModelDeploymentStatus,
    PreflightCheckStatus,
    PreflightStatus,
)

from modeldeploy_builders import NOW
from rollout_sim import NAME, Sim, revision_of, rollout_spec

Verdict = Literal["Pending", "Passed", "Failed", "Skipped"]
BLUE_GREEN: dict[str, Any] = {"strategy": "BlueGreen", "steps": [{"pause": {"duration": "1m"}}]}
IMMEDIATE: dict[str, Any] = {"strategy": "Immediate", "steps": []}
CANARY: dict[str, Any] = {"steps": [{"setWeight": 20}, {"pause": {"duration": "1m"}}, {"setWeight": 50}]}


def _result(sim: Sim, revision: str, verdict: Verdict, attempts: int = 0) -> PreflightStatus:
    failed = verdict == "Failed"
    return PreflightStatus(
        variant="default",
        revision=revision,
        stable_revision=sim.status.variants[0].revision if sim.status else None,
        result=verdict,
        message="auc new 0.58 vs stable 0.83, worse by 0.25 (> 0.01)" if failed else f"{verdict.lower()}",
        attempts=attempts,
        rows=1000,
        checks=(
            PreflightCheckStatus(
                name="auc-drop", passed=not failed, value=0.25 if failed else 0.0, threshold=0.01
            ),
        ),
        finished_at=NOW if verdict != "Pending" else None,
    )


class Oracle:
    """What the reconciler does: a result for every request, final ones from status (never redone)."""

    def __init__(self, sim: Sim) -> None:
        self.sim = sim
        self.verdicts: dict[str, Verdict] = {}
        self.replays: list[str] = []

    def step(self, seconds: float = 0, **kwargs: Any) -> Any:
        sim = self.sim
        results = []
        for request in preflight_requests(NAME, sim.spec, sim.status, sim.observed()):
            if request.cached is not None and request.cached.final:
                results.append(request.cached)
                continue
            verdict = self.verdicts.get(request.revision, "Pending")
            if verdict != "Pending":
                self.replays.append(request.revision)
            results.append(_result(sim, request.revision, verdict))
        return sim.step(seconds, preflight=results, **kwargs)


def _serving_v1(preflight: dict[str, Any] | None = None, **rollout: Any) -> tuple[Oracle, str]:
    rollout = {**CANARY, **rollout, "preflight": {} if preflight is None else preflight}
    sim = Sim(rollout_spec("1", **rollout))
    oracle = Oracle(sim)
    oracle.step()
    oracle.step(1)
    assert sim.status is not None
    assert sim.status.phase == "Ready"
    return oracle, revision_of(sim.spec)


def _to_v2(oracle: Oracle, **rollout: Any) -> str:
    current = oracle.sim.spec.rollout.model_dump(by_alias=True, exclude_none=True)
    oracle.sim.spec = rollout_spec("2", **(current | rollout))
    return revision_of(oracle.sim.spec)


def _history(sim: Sim) -> list[tuple[int, str]]:
    assert sim.status is not None
    return [(e.revision, e.outcome) for e in sim.status.history]


def _status_entry(sim: Sim) -> PreflightStatus:
    assert sim.status is not None
    (entry,) = sim.status.preflight
    return entry


# --- which revisions need a preflight ------------------------------------------------------------


def test_a_first_deploy_needs_no_preflight_and_serves_at_once() -> None:
    sim = Sim(rollout_spec("1", **CANARY, preflight={}))
    assert preflight_requests(NAME, sim.spec, None, []) == ()
    sim.step()
    assert sim.weights() == {revision_of(sim.spec): ("stable", 100, 4)}


def test_without_rollout_preflight_nothing_is_requested_and_nothing_waits() -> None:
    sim = Sim(rollout_spec("1", **CANARY))
    sim.step()
    sim.step(1)
    sim.spec = rollout_spec("2", **CANARY)
    assert preflight_requests(NAME, sim.spec, sim.status, sim.observed()) == ()
    sim.step()
    sim.step(1)
    assert sim.weights()[revision_of(sim.spec)][1] == 20


def test_preflight_enabled_false_requests_nothing() -> None:
    oracle, _ = _serving_v1({"enabled": False})
    new = _to_v2(oracle)
    assert preflight_requests(NAME, oracle.sim.spec, oracle.sim.status, oracle.sim.observed()) == ()
    oracle.step()
    oracle.step(1)
    assert oracle.sim.weights()[new][1] == 20


def test_the_new_revision_is_requested_against_the_stable() -> None:
    oracle, old = _serving_v1()
    new = _to_v2(oracle)
    (request,) = preflight_requests(NAME, oracle.sim.spec, oracle.sim.status, oracle.sim.observed())
    assert (request.variant, request.revision, request.stable_revision, request.cached) == (
        "default",
        new,
        old,
        None,
    )


# --- Canary ----------------------------------------------------------------------------------------


def test_canary_pods_start_but_take_no_weight_while_the_preflight_is_pending() -> None:
    oracle, old = _serving_v1()
    new = _to_v2(oracle)
    for _ in range(5):
        oracle.step(10)
        assert oracle.sim.weights() == {old: ("stable", 100, 4), new: ("canary", 0, 1)}
    assert "RolloutStepCompleted" not in oracle.sim.reasons()
    assert _status_entry(oracle.sim).result == "Pending"
    assert oracle.sim.condition("Progressing") == ("True", "RolloutInProgress")
    assert oracle.sim.status is not None
    assert "preflight before any traffic (pending)" in (oracle.sim.status.message or "")


def test_canary_passed_preflight_goes_on_to_its_first_weight_with_an_event() -> None:
    oracle, old = _serving_v1()
    new = _to_v2(oracle)
    oracle.step(1)
    oracle.verdicts[new] = "Passed"
    plan = oracle.step(1)
    assert "PreflightPassed" in oracle.sim.reasons()
    assert oracle.sim.weights()[new] == ("canary", 20, 1)
    assert oracle.sim.weights()[old][1] == 80
    assert any(e.reason == "RolloutStepCompleted" for e in plan.events)
    assert _status_entry(oracle.sim).result == "Passed"
    # the verdict is in status: it is never replayed again, and the Event is not repeated
    oracle.step(61)
    oracle.step(1)
    assert oracle.replays == [new]
    assert "PreflightPassed" not in oracle.sim.reasons()


@pytest.mark.parametrize("auto_rollback", [True, False])
def test_canary_failed_preflight_aborts_before_any_weight(auto_rollback: bool) -> None:
    oracle, old = _serving_v1(autoRollback=auto_rollback)
    new = _to_v2(oracle)
    oracle.step(1)
    oracle.verdicts[new] = "Failed"
    plan = oracle.step(1)
    sim = oracle.sim
    assert sim.weights()[old] == ("stable", 100, 4)
    assert sim.weights()[new][:2] == ("canary", 0)
    assert sim.status is not None
    assert sim.status.aborted  # aborted even with autoRollback false: nothing to roll back
    assert sim.status.canary_weight == 0
    assert _history(sim) == [(1, "Promoted"), (2, "Aborted")]
    assert "PreflightFailed" in (sim.status.history[-1].message or "")
    assert sim.condition("Degraded") == ("True", "PreflightFailed")
    assert sim.condition("SpecDiverged") == ("True", "RolloutAborted")
    (event,) = [e for e in plan.events if e.reason == "PreflightFailed"]
    assert event.warning
    assert "auc new 0.58" in event.message
    entry = _status_entry(sim)
    assert entry.result == "Failed"
    assert entry.checks[0].value == 0.25
    # it stays aborted with its figures; no new Event; pods go after scaleDownDelaySeconds
    for _ in range(3):
        later = oracle.step(20)
        assert not [e for e in later.events if e.warning]
        assert sim.weights()[old] == ("stable", 100, 4)
        assert _status_entry(sim).result == "Failed"
    assert sim.weights()[new] == ("canary", 0, 0)
    assert sim.condition("Degraded") == ("True", "PreflightFailed")
    assert oracle.replays == [new]


def test_a_retried_aborted_rollout_keeps_its_failed_verdict() -> None:
    from modeldeploy_operator.domain.rollout import command_patch, parse_command
    from modeldeploy_operator.domain.rollout.commands import Command

    oracle, old = _serving_v1()
    new = _to_v2(oracle)
    oracle.step(1)
    oracle.verdicts[new] = "Failed"
    oracle.step(1)
    _, patch = command_patch("resume")
    command = parse_command(patch["metadata"]["annotations"])
    assert isinstance(command, Command)
    oracle.step(1, command=command)
    oracle.step(1)
    assert oracle.sim.weights()[old][:2] == ("stable", 100)
    assert oracle.sim.weights()[new][1] == 0
    assert oracle.sim.status is not None
    assert oracle.sim.status.aborted


def test_a_preflight_pending_past_the_progress_deadline_fails_the_rollout() -> None:
    oracle, old = _serving_v1(progressDeadlineSeconds=60)
    new = _to_v2(oracle)
    oracle.step(1)
    oracle.step(30)
    assert oracle.sim.status is not None
    assert not oracle.sim.status.aborted
    plan = oracle.step(31)
    assert "ProgressDeadlineExceeded" in [e.reason for e in plan.events]
    assert oracle.sim.weights()[old] == ("stable", 100, 4)
    assert oracle.sim.weights()[new][1] == 0
    assert oracle.sim.status.aborted


def test_a_skipped_preflight_lets_the_rollout_go_on_and_says_so() -> None:
    oracle, _ = _serving_v1()
    new = _to_v2(oracle)
    oracle.verdicts[new] = "Skipped"
    oracle.step(1)
    oracle.step(1)
    assert oracle.sim.weights()[new][1] == 20
    assert _status_entry(oracle.sim).result == "Skipped"


def test_preflight_enabled_mid_rollout_does_not_take_traffic_away() -> None:
    sim = Sim(rollout_spec("1", **CANARY))
    sim.step()
    sim.step(1)
    sim.spec = rollout_spec("2", **CANARY)
    new = revision_of(sim.spec)
    sim.step()
    sim.step(1)
    assert sim.weights()[new][1] == 20
    sim.spec = rollout_spec("2", **CANARY, preflight={})
    oracle = Oracle(sim)
    oracle.step(61)
    oracle.step(1)
    assert sim.weights()[new][1] == 50


# --- BlueGreen and Immediate -----------------------------------------------------------------------


def test_blue_green_preview_is_not_promoted_while_pending_and_is_aborted_on_failure() -> None:
    oracle, old = _serving_v1(**BLUE_GREEN)
    new = _to_v2(oracle)
    for _ in range(4):
        oracle.step(30)
        assert oracle.sim.weights()[old][:2] == ("stable", 100)
        assert oracle.sim.weights()[new][:2] == ("preview", 0)
    oracle.verdicts[new] = "Failed"
    oracle.step(1)
    assert oracle.sim.condition("Degraded") == ("True", "PreflightFailed")
    assert oracle.sim.weights()[old][:2] == ("stable", 100)


def test_blue_green_preview_passes_then_runs_its_steps_and_switches() -> None:
    oracle, old = _serving_v1(**BLUE_GREEN)
    new = _to_v2(oracle)
    oracle.step(1)
    oracle.verdicts[new] = "Passed"
    oracle.step(1)
    assert oracle.sim.weights()[new][:2] == ("preview", 0)  # its pause step runs now
    oracle.step(61)
    oracle.step(1)
    assert oracle.sim.weights()[new][:2] == ("stable", 100)
    assert oracle.sim.weights()[old][:2] == ("previous", 0)


def test_immediate_keeps_the_stable_serving_until_the_preflight_passed() -> None:
    oracle, old = _serving_v1(**IMMEDIATE)
    new = _to_v2(oracle)
    for _ in range(3):
        oracle.step(5)
        assert oracle.sim.weights() == {old: ("stable", 100, 4), new: ("preview", 0, 4)}
    oracle.verdicts[new] = "Passed"
    oracle.step(1)
    assert oracle.sim.weights()[new] == ("stable", 100, 4)
    oracle.step(1)
    assert _history(oracle.sim) == [(1, "Promoted"), (2, "Promoted")]
    assert _status_entry(oracle.sim).result == "Passed"  # kept after promotion


def test_immediate_failed_preflight_leaves_the_stable_serving_and_aborts_the_new_revision() -> None:
    oracle, old = _serving_v1(**IMMEDIATE)
    new = _to_v2(oracle)
    oracle.step(1)
    oracle.verdicts[new] = "Failed"
    plan = oracle.step(1)
    sim = oracle.sim
    assert sim.weights()[old] == ("stable", 100, 4)
    assert sim.weights()[new][:2] == ("preview", 0)
    assert _history(sim) == [(1, "Promoted"), (2, "Aborted")]
    assert [e.reason for e in plan.events if e.warning] == ["PreflightFailed"]
    assert sim.condition("Degraded") == ("True", "PreflightFailed")
    assert sim.condition("SpecDiverged") == ("True", "RolloutAborted")
    assert sim.status is not None
    assert sim.status.phase == "Degraded"
    for _ in range(3):
        later = oracle.step(15)
        assert not [e for e in later.events if e.warning]
    assert sim.weights()[new] == ("preview", 0, 0)  # scaled down after scaleDownDelaySeconds
    assert sim.weights()[old] == ("stable", 100, 4)
    assert oracle.replays == [new]
    # a new spec (v3) replaces the failed one: a fresh preflight
    v3 = rollout_spec("3", **IMMEDIATE, preflight={})
    sim.spec = v3
    oracle.verdicts[revision_of(v3)] = "Passed"
    oracle.step(1)
    oracle.step(1)
    assert sim.weights()[revision_of(v3)][:2] == ("stable", 100)


def test_a_rollback_pin_is_not_preflighted() -> None:
    oracle, _ = _serving_v1(**IMMEDIATE)
    status = oracle.sim.status
    assert status is not None
    pinned = status.model_copy(
        update={"pinned_revision": 1, "pinned_spec_revision": revision_of(rollout_spec("2"))}
    )
    _to_v2(oracle)
    assert preflight_requests(NAME, oracle.sim.spec, pinned, oracle.sim.observed()) == ()


# --- the spec and status models ---------------------------------------------------------------------


def test_preflight_spec_defaults() -> None:
    spec = ModelDeploymentSpec.model_validate(
        {"model": {"uri": "s3://m/v1", "format": "onnx", "version": "1"}, "rollout": {"preflight": {}}}
    )
    p = spec.rollout.preflight
    assert p == Preflight()
    assert p is not None
    assert (p.enabled, p.max_output_diff, p.max_score_psi, p.max_auc_drop) == (True, None, 0.25, 0.01)
    assert (p.max_accuracy_drop, p.max_log_loss_increase, p.timeout_seconds) == (0.02, 0.05, 60)
    assert spec.model is not None
    assert (
        ModelDeploymentSpec.model_validate({"model": spec.model.model_dump(by_alias=True)}).rollout.preflight
        is None
    )


@pytest.mark.parametrize(
    "bad",
    [{"maxAUCDrop": -0.1}, {"minAUC": 1.5}, {"maxScorePSI": 1e9}, {"timeoutSeconds": 0}, {"unknown": 1}],
)
def test_preflight_spec_refuses_bad_values(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=r"[Pp]reflight"):
        ModelDeploymentSpec.model_validate(
            {"model": {"uri": "s3://m/v1", "format": "onnx", "version": "1"}, "rollout": {"preflight": bad}}
        )


def test_preflight_status_round_trips_through_json() -> None:
    oracle, _ = _serving_v1()
    new = _to_v2(oracle)
    oracle.verdicts[new] = "Failed"
    oracle.step(1)
    status = oracle.sim.status
    assert status is not None
    again = ModelDeploymentStatus.model_validate(status.to_patch())
    assert again.preflight == status.preflight
    assert status.to_patch()["preflight"][0]["checks"][0]["name"] == "auc-drop"


def test_preflight_statuses_fit_the_crd_status_schema() -> None:
    import copy

    from test_operator_crd import VALIDATOR

    from modeldeploy_crd_cases import valid_manifest

    statuses = []
    for verdict in ("Pending", "Passed", "Failed", "Skipped"):
        oracle, _ = _serving_v1()
        new = _to_v2(oracle)
        statuses.append(oracle.step(1).status)
        oracle.verdicts[new] = verdict
        statuses.append(oracle.step(1).status)
        statuses.append(oracle.step(61).status)
    for status in statuses:
        VALIDATOR.validate(copy.deepcopy(valid_manifest()) | {"status": status.to_patch()})


def test_a_full_report_fits_the_crd_status_schema() -> None:
    import copy

    from test_operator_crd import VALIDATOR

    from modeldeploy_contract.preflight import GoldenSet, compare
    from modeldeploy_operator.analysis.replay import ReplayTarget, status_of

    from modeldeploy_crd_cases import valid_manifest

    golden = GoldenSet(
        features=["a"],
        task="classification",
        classes=[0, 1],
        output="probabilities",
        inputs=[[0.1], [0.9], [0.4], [0.6]],
        outputs=[[0.9, 0.1], [0.1, 0.9], [0.6, 0.4], [0.4, 0.6]],
        labels=[0, 1, 0, 1],
    )
    inf = [[float("inf"), 0.0]] * 4
    report = compare(golden, inf, golden.outputs)
    target = ReplayTarget("churn", "default", "abc", "10.0.0.1:8080", "def", "10.0.0.2:8080")
    entry = status_of(target, report, NOW)
    assert entry.result == "Failed"
    assert entry.max_abs_diff is None  # infinite: left out of JSON, the detail says it
    status = ModelDeploymentStatus(preflight=(entry,))
    VALIDATOR.validate(copy.deepcopy(valid_manifest()) | {"status": status.to_patch()})
