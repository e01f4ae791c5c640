"""When something is next due, decided in one place, from the status alone (pure).

- `analysis_due_at`: when the next analysis measurement is due. The step machine (measure now?), the
  reconciler (scrape now? via `analysis_request`) and the object's timer all ask this one function.
- `next_due`: the earliest moment at which a rollout may move on without any change in the cluster (a
  timed pause ending, the next analysis interval, an analysis step's duration, a progress deadline, a
  revision's scale-down, the end of its rollback window). The operator's reconcile queue sets the
  object's timer to it (`scheduler.py`).

Times in status have whole seconds (`stamp`), so a due time read back from the status is the same as
the one planned.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from modeldeploy_operator.domain.durations import parse_duration
from modeldeploy_operator.domain.spec import ModelDeploymentSpec
from modeldeploy_operator.domain.status_model import AnalysisStatus, ModelDeploymentStatus

AT_ONCE = datetime.min.replace(tzinfo=UTC)
"""A due time already past whatever the clock says: never measured yet."""


def analysis_due_at(
    spec: ModelDeploymentSpec, canary_revision: str | None, state: AnalysisStatus | None
) -> datetime | None:
    """When the analysis of `canary_revision` is next due: None when there is nothing to measure (no
    checks, no rollout), AT_ONCE when it was never measured, else its last run plus the interval."""
    analysis = spec.rollout.analysis
    if analysis is None or not analysis.checks or canary_revision is None:
        return None
    if state is None or state.revision != canary_revision or state.last_run_at is None:
        return AT_ONCE
    return state.last_run_at + timedelta(seconds=parse_duration(analysis.interval))


def rollout_active(status: ModelDeploymentStatus) -> bool:
    """A Canary or BlueGreen rollout is under way (not aborted): the status' rollout cursor is set."""
    return status.rollout_variant is not None and status.canary_revision is not None and not status.aborted


def analysis_due(spec: ModelDeploymentSpec, status: ModelDeploymentStatus, now: datetime) -> bool:
    """Whether a rollout in progress should be measured at `now`."""
    if not rollout_active(status):
        return False
    due = analysis_due_at(spec, status.canary_revision, status.analysis)
    return due is not None and now >= due


def _step_timers(spec: ModelDeploymentSpec, status: ModelDeploymentStatus) -> list[datetime]:
    rollout = spec.rollout
    index, started, pause = status.current_step_index or 0, status.step_started_at, status.pause
    times: list[datetime] = []
    if pause is not None and pause.until is not None:
        times.append(pause.until)
    if started is None or (pause is not None and pause.reason != "Step"):
        return times  # held by a human (or spec.paused): no step clock runs
    step = rollout.steps[index] if index < len(rollout.steps) else None
    duration = 0.0
    timed = (step.analysis or step.shadow) if step is not None else None
    if timed is not None and timed.duration:
        duration = parse_duration(timed.duration)
        times.append(started + timedelta(seconds=duration))
    if step is None or step.pause is None:  # pauses never time out
        times.append(started + timedelta(seconds=duration + rollout.progress_deadline_seconds))
    return times


def next_due(
    spec: ModelDeploymentSpec, status: ModelDeploymentStatus, now: datetime, *, at_once: bool = False
) -> datetime | None:
    """The earliest future timer of `status` as planned at `now` (None: nothing is timed; only a change
    of the object or its Deployments can move things on). `at_once`: the plan asks for another pass
    straight away (a rollout slot just freed for a waiting variant).

    A timer at or before `now` is one the plan could not act on, so it does not count, except the
    analysis interval: a measurement that was due but could not be taken (no ready canary pod yet) is
    tried again one interval later."""
    times = [
        t
        for v in status.variants
        for r in v.revisions
        for t in (r.scale_down_at, r.warm_until)
        if t is not None
    ]
    if rollout_active(status):
        times += _step_timers(spec, status)
        due = analysis_due_at(spec, status.canary_revision, status.analysis)
        if due is not None and spec.rollout.analysis is not None:
            interval = timedelta(seconds=parse_duration(spec.rollout.analysis.interval))
            times.append(due if due > now else now + interval)
    if at_once:
        times.append(now)
    future = [t for t in times if t >= now.replace(microsecond=0)]
    return min(future) if future else None


def seconds_until(due: datetime | None, now: datetime, floor: float = 1.0) -> float | None:
    """`due` as seconds from `now`, at least `floor`; None for None."""
    if due is None:
        return None
    return max(floor, (due - now).total_seconds())
