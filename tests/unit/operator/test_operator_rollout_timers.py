"""Timers fire on time (issue 12): one pure function says when something is next due, from the status
(the reconcile queue's timers, which each pass sets from it, are tested in test_operator_scheduler.py)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from modeldeploy_operator.domain.rollout.timers import AT_ONCE, analysis_due, analysis_due_at, next_due
from modeldeploy_operator.domain.status_model import (
    AnalysisStatus,
    ModelDeploymentStatus,
    PauseStatus,
    RevisionStatus,
    VariantStatus,
)

from modeldeploy_builders import NOW
from rollout_sim import Sim, rollout_spec

T0 = NOW.replace(microsecond=0)


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


SPEC = rollout_spec(
    "2",
    steps=[
        {"setWeight": 20},
        {"pause": {"duration": "6s"}},
        {"analysis": {"duration": "20s"}},
        {"pause": {}},
    ],
    analysis={
        "interval": "8s",
        "minSamples": 10,
        "checks": [{"name": "e", "type": "errorRate", "threshold": {"max": 0.1}}],
    },
    progressDeadlineSeconds=100,
)


def rolling(step: int, started: float, **update: Any) -> ModelDeploymentStatus:
    return ModelDeploymentStatus(
        rollout_variant="default",
        canary_revision="c",
        current_step_index=step,
        step_started_at=at(started),
        **update,
    )


def measured(last: float, revision: str = "c") -> AnalysisStatus:
    return AnalysisStatus(revision=revision, started_at=at(0), last_run_at=at(last))


def draining(due: float) -> tuple[VariantStatus, ...]:
    revision = RevisionStatus(revision="old", role="previous", scale_down_at=at(due))
    return (VariantStatus(name="default", revisions=(revision,)),)


# (status, now, expected next due in seconds after T0, or None)
CASES = [
    pytest.param(ModelDeploymentStatus(), 0, None, id="nothing-timed"),
    pytest.param(ModelDeploymentStatus(variants=draining(30)), 0, 30, id="scale-down-only"),
    # setWeight waits for pods: the progress deadline, and analysis 8 s after its last run
    pytest.param(rolling(0, 0, analysis=measured(0)), 1, 8, id="analysis-interval"),
    pytest.param(rolling(0, 0), 1, 9, id="never-measured-retry-one-interval-later"),
    pytest.param(rolling(0, 0, analysis=measured(0, "other")), 1, 9, id="measured-another-canary"),
    pytest.param(rolling(0, 0, analysis=measured(0)), 9, 17, id="overdue-analysis-one-interval-later"),
    # a timed pause ends on time, before the analysis interval
    pytest.param(
        rolling(1, 2, analysis=measured(0), pause=PauseStatus(reason="Step", since=at(2), until=at(8))),
        3,
        8,
        id="timed-pause",
    ),
    pytest.param(
        rolling(1, 2, pause=PauseStatus(reason="Step", since=at(2), until=at(8)), analysis=measured(5)),
        3,
        8,
        id="pause-before-interval",
    ),
    # analysis step: its duration, then the deadline counted from the end of its duration
    pytest.param(rolling(2, 0, analysis=measured(16)), 17, 20, id="analysis-step-duration"),
    pytest.param(rolling(2, 0, analysis=measured(119)), 119.5, 120, id="analysis-step-deadline"),
    # an indefinite pause never times out: only the analysis interval
    pytest.param(
        rolling(3, 0, analysis=measured(50), pause=PauseStatus(reason="Step", since=at(0))),
        51,
        58,
        id="pause",
    ),
    # held by a human: no step clock, but analysis goes on
    pytest.param(
        rolling(0, 0, analysis=measured(50), pause=PauseStatus(reason="Manual", since=at(1))),
        51,
        58,
        id="manual-pause",
    ),
    # aborted: only the canary's scale-down
    pytest.param(
        ModelDeploymentStatus(
            rollout_variant="default", canary_revision="c", aborted=True, variants=draining(40)
        ),
        10,
        40,
        id="aborted",
    ),
    pytest.param(rolling(0, 0, analysis=measured(0), variants=draining(3)), 1, 3, id="earliest-wins"),
]


@pytest.mark.parametrize(("status", "now", "due"), CASES)
def test_next_due(status: ModelDeploymentStatus, now: float, due: float | None) -> None:
    assert next_due(SPEC, status, at(now)) == (None if due is None else at(due))


def test_next_due_at_once_for_a_freed_rollout_slot() -> None:
    assert next_due(SPEC, ModelDeploymentStatus(), at(5), at_once=True) == at(5)


@pytest.mark.parametrize(
    ("canary", "state", "due"),
    [
        (None, None, None),
        ("c", None, AT_ONCE),
        ("c", measured(10, "other"), AT_ONCE),
        ("c", AnalysisStatus(revision="c"), AT_ONCE),
        ("c", measured(10), at(18)),
    ],
)
def test_analysis_due_at(canary: str | None, state: AnalysisStatus | None, due: dt.datetime | None) -> None:
    assert analysis_due_at(SPEC, canary, state) == due


def test_no_analysis_without_checks() -> None:
    spec = rollout_spec("2", analysis=None)
    assert analysis_due_at(spec, "c", None) is None
    assert not analysis_due(spec, rolling(0, 0), at(100))


@pytest.mark.parametrize(("now", "due"), [(7.9, False), (8, True), (30, True)])
def test_analysis_due_is_one_test_for_the_planner_and_the_reconciler(now: float, due: bool) -> None:
    status = rolling(0, 0, analysis=measured(0))
    assert analysis_due(SPEC, status, at(now)) is due
    aborted = status.model_copy(update={"aborted": True})
    assert not analysis_due(SPEC, aborted, at(now))


def test_plan_reports_the_timer_of_the_status_it_wrote() -> None:
    """A timed pause started by an event-driven pass (the canary got ready) is due 6 s later, and the
    plan says so, whichever pass comes next."""
    sim = Sim(SPEC.model_copy(update={"model": rollout_spec("1").model}))
    sim.step()
    sim.step(1)
    sim.spec = SPEC
    sim.step()  # rollout started: canary not ready yet
    result = sim.step(1)  # canary ready: setWeight 20 done, the 6 s pause starts now
    assert sim.status is not None
    assert sim.status.pause is not None
    assert sim.status.pause.until == (sim.now + dt.timedelta(seconds=6)).replace(microsecond=0)
    assert result.next_due == sim.status.pause.until
    assert result.requeue_after is not None
    later = sim.step((result.next_due - sim.now).total_seconds())  # wake exactly when due
    assert sim.status.current_step_index == 2  # the pause ended on time
    assert later.next_due is not None
