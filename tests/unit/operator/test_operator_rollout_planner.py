"""Table tests of the rollout planner: one scenario per transition, on a simulated cluster."""

from __future__ import annotations

import math

import pytest

from modeldeploy_operator.domain.readings import CheckReading
from modeldeploy_operator.domain.rollout import analysis_request, command_patch, parse_command
from modeldeploy_operator.domain.rollout.commands import Command

from modeldeploy_builders import NOW
from rollout_sim import CHECKS, Sim, good, revision_of, rollout_spec


def _command(action: str, **kwargs: object) -> Command:
    _, patch = command_patch(action, **kwargs)  # type: ignore[arg-type]
    parsed = parse_command(patch["metadata"]["annotations"])
    assert isinstance(parsed, Command)
    return parsed


def _serving_v1(**rollout: object) -> Sim:
    """v1 deployed and Ready (first deploy goes straight to stable)."""
    sim = Sim(rollout_spec("1", **rollout))
    sim.step()
    sim.step(1)
    assert sim.status is not None
    assert sim.status.phase == "Ready"
    return sim


def _start_v2(sim: Sim, **rollout: object) -> tuple[str, str]:
    stable = revision_of(sim.spec)
    sim.spec = rollout_spec("2", **rollout)
    sim.step()
    return stable, revision_of(sim.spec)


def _outcomes(sim: Sim) -> list[tuple[int, str]]:
    assert sim.status is not None
    return [(e.revision, e.outcome) for e in sim.status.history]


# --- first deploy and Immediate ------------------------------------------------------------------


def test_first_deploy_serves_at_once_and_is_promoted_when_rolled_out() -> None:
    sim = Sim(rollout_spec("1"))
    first = sim.step()
    assert sim.weights() == {revision_of(sim.spec): ("stable", 100, 4)}
    assert first.status.phase == "Pending"
    sim.step(1)
    assert _outcomes(sim) == [(1, "Promoted")]
    assert sim.condition("Ready") == ("True", "ReplicasReady")
    assert sim.condition("SpecDiverged") == ("False", "AsSpecified")


def test_immediate_keeps_the_old_revision_serving_until_the_new_one_is_ready() -> None:
    sim = _serving_v1(strategy="Immediate", steps=[])
    old = revision_of(sim.spec)
    sim.spec = rollout_spec("2", strategy="Immediate", steps=[])
    new = revision_of(sim.spec)
    sim.unready.add(new)
    sim.step(1)
    assert sim.weights() == {old: ("stable", 100, 4), new: ("preview", 0, 4)}
    assert sim.condition("Progressing") == ("True", "ReplicasUpdating")
    sim.unready.clear()
    sim.step(1)
    sim.step(1)
    assert sim.weights() == {new: ("stable", 100, 4), old: ("previous", 0, 4)}
    assert _outcomes(sim) == [(1, "Promoted"), (2, "Promoted")]
    sim.step(31)  # scaleDownDelaySeconds later the old pods go but one (the rollback window's)
    assert sim.weights()[old] == ("previous", 0, 1)
    sim.step(300)  # the window (300 s from leaving traffic) over: no pods; the Deployment stays for rollbacks
    assert sim.weights()[old] == ("previous", 0, 0)


# --- Canary: the whole walk ----------------------------------------------------------------------


def test_canary_gets_no_traffic_before_it_is_ready() -> None:
    sim = _serving_v1()
    sim.spec = rollout_spec("2")
    new = revision_of(sim.spec)
    sim.unready.add(new)
    sim.step()
    sim.step(5)
    assert sim.weights()[new] == ("canary", 0, 1)
    assert sim.status is not None
    assert sim.status.current_step_index == 0


def test_canary_walks_every_step_and_is_promoted() -> None:
    sim = _serving_v1()
    old, new = _start_v2(sim)
    assert sim.reasons() == ["RolloutStarted"]
    assert sim.weights() == {old: ("stable", 100, 4), new: ("canary", 0, 1)}

    sim.step(1, good())  # canary ready: setWeight 20 done, timed pause starts
    assert sim.weights() == {old: ("stable", 80, 4), new: ("canary", 20, 1)}
    assert sim.status is not None
    assert (sim.status.current_step_index, sim.status.phase) == (1, "Paused")
    assert sim.status.pause is not None
    assert sim.status.pause.until is not None

    sim.step(61, good())  # pause over; the analysis step starts and needs 2 minutes of passes
    assert sim.status.current_step_index == 2
    sim.step(60, good())
    assert sim.status.current_step_index == 2
    sim.step(60, good())  # analysis passed: setWeight 50 waits for its 2 pods, then done
    sim.step(1)
    assert sim.weights()[new] == ("canary", 50, 2)
    assert sim.status.current_step_index == 4  # the indefinite pause
    pause = sim.current().pause
    assert pause is not None
    assert pause.until is None

    sim.step(600)  # an indefinite pause never times out
    assert sim.current().phase == "Paused"
    sim.step(1, command=_command("resume"))  # promotion: the canary scales to 4 first
    assert sim.weights()[new] == ("canary", 50, 4)
    sim.step(1)
    assert sim.reasons() == ["RolloutPromoted"]
    assert sim.weights() == {new: ("stable", 100, 4), old: ("previous", 0, 4)}
    assert _outcomes(sim) == [(1, "Promoted"), (2, "Promoted")]
    status = sim.current()
    assert status.phase == "Ready"
    assert (status.canary_revision, status.current_step_index, status.canary_weight) == (None, None, 0)
    assert status.stable_revision == new


def test_bluegreen_previews_with_no_traffic_then_switches() -> None:
    steps = [{"analysis": {"duration": "1m"}}]
    sim = _serving_v1(strategy="BlueGreen", steps=steps)
    old, new = _start_v2(sim, strategy="BlueGreen", steps=steps)
    assert sim.weights() == {old: ("stable", 100, 4), new: ("preview", 0, 4)}
    sim.step(1, good())
    sim.step(30, good())
    assert sim.weights()[new] == ("preview", 0, 4)
    sim.step(31, good())
    assert sim.weights() == {new: ("stable", 100, 4), old: ("previous", 0, 4)}


# --- analysis ------------------------------------------------------------------------------------


def test_background_analysis_failure_aborts_with_weight_back_to_zero() -> None:
    sim = _serving_v1()
    old, new = _start_v2(sim)
    sim.step(1, good())
    bad = [CheckReading("errors", 0.2, 500, NOW), CheckReading("shift", 0.01, 500, NOW)]
    sim.step(30, bad)  # failure 1 of failureLimit 1: not yet
    assert sim.weights()[new][1] == 20
    sim.step(30, bad)  # failure 2 > 1: abort (argo-rollouts#4841: weight back to 0 at once)
    assert "AnalysisFailed" in sim.reasons()
    assert any(e.warning for e in sim.last.events)  # type: ignore[union-attr]
    assert sim.weights() == {old: ("stable", 100, 4), new: ("canary", 0, 1)}
    assert sim.status is not None
    assert (sim.status.phase, sim.status.aborted, sim.status.canary_weight) == ("Degraded", True, 0)
    assert sim.condition("Degraded") == ("True", "AnalysisFailed")
    assert sim.condition("SpecDiverged") == ("True", "RolloutAborted")
    assert sim.condition("Ready") == ("True", "ReplicasReady")
    assert _outcomes(sim)[-1] == (2, "Aborted")
    sim.step(31)  # after scaleDownDelaySeconds the canary has no pods; stable untouched
    assert sim.weights() == {old: ("stable", 100, 4), new: ("canary", 0, 0)}
    sim.step(600)  # and it stays aborted: no restart while the spec names the aborted revision
    assert sim.weights() == {old: ("stable", 100, 4), new: ("canary", 0, 0)}
    assert sim.reasons() == []


def test_analysis_failure_without_auto_rollback_pauses_degraded() -> None:
    sim = _serving_v1(autoRollback=False)
    _, new = _start_v2(sim, autoRollback=False)
    sim.step(1, good())
    bad = [CheckReading("errors", 0.2, 500, NOW)]
    sim.step(30, bad)
    sim.step(30, bad)
    assert sim.status is not None
    assert sim.status.pause is not None
    assert (sim.status.phase, sim.status.pause.reason, sim.status.aborted) == ("Degraded", "Failure", False)
    assert sim.condition("Degraded") == ("True", "AnalysisFailed")
    assert sim.weights()[new][1] == 20  # holds, for a human to decide
    sim.step(30, bad)
    assert sim.reasons() == []  # said once
    sim.step(1, good(), command=_command("resume"))
    assert sim.status.pause is None or sim.status.pause.reason != "Failure"
    assert sim.condition("Degraded")[0] == "False"


@pytest.mark.parametrize(
    ("readings", "why"),
    [
        ((), "metrics missing"),
        ([CheckReading(c["name"], math.nan, 500, NOW) for c in CHECKS], "NaN (argo-rollouts#180)"),
        ([CheckReading(c["name"], None, 500, NOW) for c in CHECKS], "None"),
        (good(samples=10), "below minSamples"),
    ],
)
def test_inconclusive_extends_the_analysis_step_until_the_deadline(
    readings: list[CheckReading], why: str
) -> None:
    steps = [{"setWeight": 20}, {"analysis": {"duration": "1m"}}, {"setWeight": 50}]
    sim = _serving_v1(steps=steps)
    _, new = _start_v2(sim, steps=steps)
    sim.step(1, readings)
    for _ in range(10):  # 5 minutes: far past the step's minute, never passed
        sim.step(30, readings)
        assert sim.status is not None
        assert sim.status.current_step_index == 1, why
    checks = sim.status.analysis.checks  # type: ignore[union-attr]
    assert {c.result for c in checks} == {"Inconclusive"}
    assert all(m.value is None or math.isfinite(m.value) for c in checks for m in c.measurements)
    assert len(checks[0].measurements) <= 10
    for _ in range(12):  # the deadline: 600 s after the step's duration
        sim.step(30, readings)
    assert "ProgressDeadlineExceeded" in [e.reason for e in sim.last.events]  # type: ignore[union-attr]
    assert sim.weights()[new][1] == 0
    assert sim.condition("Degraded") == ("True", "ProgressDeadlineExceeded")


def test_inconclusive_then_pass_completes_the_step() -> None:
    steps = [{"setWeight": 20}, {"analysis": {"duration": "1m"}}, {"setWeight": 50}]
    sim = _serving_v1(steps=steps)
    _start_v2(sim, steps=steps)
    sim.step(1, ())
    sim.step(60, ())
    sim.step(30, ())
    assert sim.status is not None
    assert sim.status.current_step_index == 1
    sim.step(30, good())
    assert sim.status.current_step_index >= 2


def test_a_pending_measurement_records_nothing_and_the_next_call_takes_the_readings() -> None:
    """The reconciler measures off its thread (analysis/pool.py): while the readings are not in,
    analysis is not evaluated at all (no Inconclusive is counted, lastRunAt does not move)."""
    steps = [{"setWeight": 20}, {"analysis": {"duration": "1m"}}, {"setWeight": 50}]
    sim = _serving_v1(steps=steps)
    _start_v2(sim, steps=steps)
    assert sim.status is not None
    before = sim.status.analysis
    for _ in range(3):
        sim.step(30, (), analysis_pending=True)
        assert sim.status.analysis == before
        assert sim.status.current_step_index == 1
    sim.step(1, good())
    assert sim.status.analysis is not None
    assert [m.result for m in sim.status.analysis.checks[0].measurements] == ["Pass"]


# --- pods ----------------------------------------------------------------------------------------


def test_crash_looping_canary_is_aborted_at_once() -> None:
    sim = _serving_v1()
    old, new = _start_v2(sim)
    sim.crash_looping.add(new)
    sim.step(1)  # the Deployments now report crash-looping pods
    sim.step(1)
    assert "CanaryCrashLooping" in sim.reasons()
    assert sim.weights()[old] == ("stable", 100, 4)
    assert sim.condition("Degraded") == ("True", "CanaryCrashLooping")


def test_canary_never_ready_is_aborted_at_the_progress_deadline() -> None:
    sim = _serving_v1()
    old = revision_of(sim.spec)
    sim.spec = rollout_spec("2")
    sim.unready.add(revision_of(sim.spec))
    sim.step()
    sim.step(599)
    assert sim.status is not None
    assert not sim.status.aborted
    sim.step(2)
    assert sim.current().aborted
    assert sim.condition("Degraded") == ("True", "ProgressDeadlineExceeded")
    assert sim.weights()[old] == ("stable", 100, 4)


# --- supersede -----------------------------------------------------------------------------------


def test_a_newer_revision_supersedes_the_canary_in_flight() -> None:
    sim = _serving_v1()
    old, v2 = _start_v2(sim)
    sim.step(1, good())
    sim.spec = rollout_spec("3")
    v3 = revision_of(sim.spec)
    sim.step(1)
    assert sim.reasons() == ["RolloutSuperseded", "RolloutStarted"]
    assert _outcomes(sim) == [(1, "Promoted"), (2, "Superseded"), (3, "Progressing")]
    w = sim.weights()
    assert w[old] == ("stable", 100, 4)
    assert w[v3] == ("canary", 0, 1)
    assert w[v2][0:2] == ("previous", 0)
    assert sim.status is not None
    assert sim.status.canary_revision == v3


def test_spec_back_to_the_stable_revision_supersedes_the_canary() -> None:
    sim = _serving_v1()
    old, _v2 = _start_v2(sim)
    sim.step(1, good())
    sim.spec = rollout_spec("1")
    sim.step(1)
    assert sim.reasons() == ["RolloutSuperseded"]
    assert sim.weights()[old] == ("stable", 100, 4)
    assert sim.status is not None
    assert sim.status.canary_revision is None
    assert sim.status.phase == "Ready"


# --- manual commands -----------------------------------------------------------------------------


def test_abort_without_rollout_is_a_noop_that_keeps_the_stable_scaled() -> None:
    """argo-rollouts#1292: an abort with nothing in progress must not scale the stable to 0."""
    sim = _serving_v1()
    stable = revision_of(sim.spec)
    sim.step(1, command=_command("abort"))
    assert sim.weights() == {stable: ("stable", 100, 4)}
    assert sim.reasons() == ["CommandIgnored"]
    assert sim.status is not None
    assert sim.status.last_command is not None
    assert sim.status.last_command.result == "Ignored"
    assert sim.status.phase == "Ready"


def test_manual_abort_returns_all_traffic_and_resume_retries() -> None:
    sim = _serving_v1()
    old, new = _start_v2(sim)
    sim.step(1, good())
    abort = _command("abort")
    sim.step(1, command=abort)
    assert "RolloutAborted" in sim.reasons()
    assert sim.weights()[old] == ("stable", 100, 4)
    sim.step(1, command=abort)  # the same annotation again: handled once
    assert sim.reasons() == []
    sim.step(1, good(), command=_command("resume"))
    assert "RolloutResumed" in sim.reasons()
    assert sim.status is not None
    assert not sim.status.aborted
    assert _outcomes(sim)[-1] == (2, "Progressing")
    assert sim.weights()[new][1] == 20


def test_manual_pause_holds_and_resume_goes_on() -> None:
    steps = [{"setWeight": 20}, {"setWeight": 50}]
    sim = _serving_v1(steps=steps)
    _, new = _start_v2(sim, steps=steps)
    sim.step(0, command=_command("pause"))
    sim.step(1)
    sim.step(1)
    assert sim.status is not None
    assert sim.status.phase == "Paused"
    assert sim.weights()[new][1] == 0
    sim.step(1, command=_command("resume"))
    sim.step(1)
    assert sim.weights()[new][1] >= 20


def test_spec_paused_holds_the_rollout() -> None:
    steps = [{"setWeight": 20}, {"setWeight": 50}]
    sim = _serving_v1(steps=steps)
    _start_v2(sim, steps=steps)
    sim.spec = sim.spec.model_copy(update={"paused": True})
    sim.step(1)
    assert sim.status is not None
    assert sim.status.pause is not None
    assert sim.status.pause.reason == "Spec"


def test_promote_skips_the_remaining_steps() -> None:
    sim = _serving_v1()
    old, new = _start_v2(sim)
    sim.step(1, good())
    sim.step(1, command=_command("promote"))
    assert sim.weights()[new] == ("canary", 20, 4)  # waits for all its pods: no traffic before ready
    sim.step(1)
    assert sim.weights() == {new: ("stable", 100, 4), old: ("previous", 0, 4)}


def test_promote_full_switches_now() -> None:
    sim = _serving_v1()
    _old, new = _start_v2(sim)
    sim.step(1, good())
    sim.step(1, command=_command("promote", full=True))
    assert sim.weights()[new] == ("stable", 100, 4)


def test_rollback_pins_a_revision_and_shows_the_drift_until_the_spec_changes() -> None:
    sim = _serving_v1()
    v1 = revision_of(sim.spec)
    _, _v2 = _start_v2(sim)
    sim.step(1, command=_command("promote", full=True))
    sim.step(1)
    assert _outcomes(sim) == [(1, "Promoted"), (2, "Promoted")]
    sim.step(1, command=_command("rollback"))  # default: the previous promoted revision
    assert sim.reasons() == ["RolledBack", "RevisionServing"]
    sim.step(1)
    assert sim.weights()[v1] == ("pinned", 100, 4)
    assert sim.status is not None
    assert sim.status.pinned_revision == 1
    assert sim.condition("SpecDiverged") == ("True", "RolledBack")
    assert _outcomes(sim) == [(1, "Promoted"), (2, "RolledBack")]
    sim.step(300)
    assert sim.weights()[v1] == ("pinned", 100, 4)  # stays pinned
    sim.spec = rollout_spec("3")
    sim.step(1)
    assert "RollbackPinReleased" in sim.reasons()
    assert sim.current().pinned_revision is None
    assert sim.weights()[v1] == ("stable", 100, 4)  # the canary of v3 starts from what serves
    assert sim.condition("SpecDiverged") == ("False", "AsSpecified")


def test_rollback_during_promotion_restores_the_old_stable_at_once() -> None:
    sim = _serving_v1()
    old, new = _start_v2(sim)
    sim.step(1, good())
    sim.step(1, command=_command("promote", full=True))  # promoted; old still has its pods
    sim.step(1, command=_command("rollback", revision=1))
    assert sim.weights()[old] == ("pinned", 100, 4)
    assert sim.weights()[new][1] == 0


def test_rollback_mid_rollout_ends_the_canary() -> None:
    sim = _serving_v1()
    old, new = _start_v2(sim)
    sim.step(1, good())
    sim.step(1, command=_command("rollback", revision=1))
    assert sim.weights()[old] == ("pinned", 100, 4)
    assert sim.weights()[new][1] == 0
    assert _outcomes(sim)[-1] == (2, "RolledBack")


def test_rollback_to_an_unknown_revision_is_rejected() -> None:
    sim = _serving_v1()
    sim.step(1, command=_command("rollback", revision=7))
    assert sim.reasons() == ["CommandRejected"]
    assert sim.last is not None
    assert sim.last.events[0].warning
    assert sim.status is not None
    assert sim.status.last_command is not None
    assert sim.status.last_command.result == "Rejected"
    assert sim.status.pinned_revision is None


def test_an_invalid_command_only_warns() -> None:
    sim = _serving_v1()
    before = sim.weights()
    sim.step(1, command=parse_command({"modeldeploy.io/command": '{"action": "explode"}'}))
    assert sim.reasons() == ["CommandRejected"]
    assert sim.weights() == before
    sim.step(1, command=parse_command({"modeldeploy.io/command": '{"action": "explode"}'}))
    assert sim.reasons() == []  # reported once


# --- restart at each step ------------------------------------------------------------------------


def test_restart_at_every_step_resumes_where_it_was() -> None:
    """Replaying plan() from the status written at each step (as a restarted operator would, with
    nothing but the object) gives the same decision as the operator that never stopped."""
    sim = _serving_v1()
    _start_v2(sim)
    schedule = [(1, good()), (61, good()), (60, good()), (60, good()), (1, ()), (30, ()), (1, ())]
    for seconds, readings in schedule:
        before_status, before_observed, now = sim.status, sim.observed(), sim.now
        sim.step(seconds, readings)
        from modeldeploy_operator.domain.rollout import plan
        from modeldeploy_operator.domain.status_model import ModelDeploymentStatus

        assert before_status is not None
        restored = ModelDeploymentStatus.model_validate(before_status.to_patch())
        replay = plan("churn", sim.spec, before_observed, readings, sim.now, restored)
        assert replay.status == sim.status
        assert replay.variants == sim.last.variants  # type: ignore[union-attr]
        assert now <= sim.now


def test_replanning_with_nothing_new_changes_nothing() -> None:
    sim = _serving_v1()
    _start_v2(sim)
    sim.step(1, good())
    status = sim.status
    sim.step(0)
    assert sim.status == status
    assert sim.reasons() == []


# --- requeue and analysis requests ---------------------------------------------------------------


def test_requeue_follows_the_earliest_timer() -> None:
    sim = _serving_v1()
    _start_v2(sim)
    result = sim.step(1, good())
    assert result.requeue_after is not None
    assert 1 <= result.requeue_after <= 30
    steady = _serving_v1()
    assert steady.last is not None
    assert steady.last.requeue_after is None


def test_analysis_request_says_when_to_measure() -> None:
    sim = _serving_v1()
    assert analysis_request(sim.spec, sim.status, sim.now) is None
    old, new = _start_v2(sim)
    request = analysis_request(sim.spec, sim.status, sim.now)
    assert request is not None
    assert (request.canary_revision, request.stable_revision, request.checks) == (
        new,
        old,
        ("errors", "shift"),
    )
    sim.step(1, good())
    assert analysis_request(sim.spec, sim.status, sim.now) is None
    assert analysis_request(sim.spec, sim.status, sim.now + __import__("datetime").timedelta(seconds=30))
