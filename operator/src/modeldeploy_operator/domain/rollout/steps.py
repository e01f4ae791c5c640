"""The step machine of a Canary or BlueGreen rollout in progress, and its three endings.

Order of one pass (each reconcile): canary pod health -> analysis (if due) -> pauses -> steps. Health
and analysis come before pauses on purpose: a paused rollout whose canary fails is still aborted.
Several steps may complete in one pass (a setWeight whose pods are already ready, a pause that has
run out); each completed step is an Event.

The progress deadline (spec.rollout.progressDeadlineSeconds) counts from the start of the current
step, for steps that wait on the cluster or on data: pods becoming ready (setWeight, BlueGreen preview,
promotion) and analysis steps (counted from the end of the step's duration: an Inconclusive
analysis extends the step by at most the deadline). Pauses never time out.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime, timedelta

from modeldeploy_operator.domain.durations import parse_duration
from modeldeploy_operator.domain.observed import ObservedDeployment
from modeldeploy_operator.domain.readings import CheckReading
from modeldeploy_operator.domain.revision import ResolvedVariant
from modeldeploy_operator.domain.rollout.cursor import stamp
from modeldeploy_operator.domain.rollout.evaluation import describe, failed_checks, measure_all, passed_since
from modeldeploy_operator.domain.rollout.preflight import Gate, gate
from modeldeploy_operator.domain.rollout.state import Draft
from modeldeploy_operator.domain.rollout.timers import analysis_due_at
from modeldeploy_operator.domain.spec import AnalysisStep, PauseStep, ShadowStep
from modeldeploy_operator.domain.status_model import AnalysisStatus, PauseStatus


def canary_replicas(total: int, weight: int) -> int:
    """Pods a canary needs to take `weight` percent of a variant served by `total` pods (at least 1,
    so that analysis has something to measure)."""
    if total <= 0:
        return 0
    return max(1, math.ceil(total * weight / 100))


def ready(observed: ObservedDeployment | None) -> int:
    return observed.ready_replicas if observed is not None else 0


def wanted_canary_replicas(draft: Draft, total: int) -> int:
    """Pods the rollout's new revision should have at the current step."""
    steps = draft.spec.rollout.steps
    index = draft.step_index or 0
    if draft.spec.rollout.strategy == "BlueGreen" or index >= len(steps):
        return total
    step = steps[index]
    target = step.set_weight if step.set_weight is not None else draft.canary_weight
    return canary_replicas(total, max(target, draft.canary_weight))


def mirror_percent(draft: Draft) -> int:
    """Percent of the variant's live requests to copy to the rollout's new revision now: while it
    has no live weight and analysis needs samples (a BlueGreen preview, a canary before its first
    setWeight above 0), the current shadow step's percent or else `analysis.mirrorPercent`; 0 once it
    has weight (its own traffic is the evidence) or when nothing analyses it."""
    analysis = draft.spec.rollout.analysis
    if not draft.active() or draft.canary_weight > 0 or analysis is None or not analysis.checks:
        return 0
    steps = draft.spec.rollout.steps
    index = draft.step_index or 0
    step = steps[index] if index < len(steps) else None
    if step is not None and step.shadow is not None:
        return step.shadow.percent
    return analysis.mirror_percent


# --- endings -------------------------------------------------------------------------------------


def abort(draft: Draft, reason: str, message: str, *, by_user: bool = False) -> None:
    """Weight back to 0 at once, the new revision scaled down, history and a Warning Event say why."""
    variant, revision = draft.rollout_variant, draft.canary_revision
    if variant is None or revision is None:
        return
    text = f"rollout of {draft.label(variant, revision)} aborted: {message}"
    draft.finish(variant, revision, "Aborted", f"{reason}: {message}")
    draft.leave_traffic(variant, revision)
    draft.cursor = draft.cursor.abort()
    draft.degraded = ("RolloutAborted" if by_user else reason, text)
    draft.event("RolloutAborted" if by_user else reason, text, warning=True)


def fail(draft: Draft, reason: str, message: str) -> None:
    """Analysis failed or the deadline passed: abort when autoRollback, else pause as Degraded."""
    if draft.spec.rollout.auto_rollback:
        abort(draft, reason, message)
        return
    if draft.pause is not None and draft.pause.reason == "Failure":
        return  # already holding for a human; said so once
    text = f"{reason}: {message}; paused (autoRollback is false): resume, promote or abort"
    draft.cursor = draft.cursor.paused(
        PauseStatus(reason="Failure", since=stamp(draft.now), message=text[:4096])
    )
    draft.degraded = (reason, text)
    draft.event(reason, text, warning=True)


def promote(draft: Draft, variant: ResolvedVariant) -> None:
    """The new revision becomes stable at 100%; the old stable leaves traffic (kept for rollbacks)."""
    revision = draft.canary_revision
    if revision is None:
        return
    old = draft.stable.get(variant.name)
    draft.stable[variant.name] = revision
    draft.enter_traffic(variant.name, revision)
    if old is not None and old != revision:
        draft.leave_traffic(variant.name, old, was_serving=True)
    draft.finish(variant.name, revision, "Promoted")
    draft.event(
        "RolloutPromoted", f"{draft.label(variant.name, revision)} promoted: it takes all the traffic"
    )
    draft.cursor = draft.cursor.promote()


# --- one pass ------------------------------------------------------------------------------------


def _analysis_due(draft: Draft) -> bool:
    if draft.analysis_pending:  # measured off the reconcile path; its readings come to a later pass
        return False
    due = analysis_due_at(draft.spec, draft.canary_revision, draft.analysis)
    return due is not None and draft.now >= due


def run_analysis(draft: Draft, canary: ObservedDeployment | None, readings: Sequence[CheckReading]) -> bool:
    """Measure every check when due (background analysis, during every step); True if it failed."""
    analysis = draft.spec.rollout.analysis
    if analysis is None or ready(canary) == 0 or not _analysis_due(draft):
        return False
    state = draft.analysis
    if state is None or state.revision != draft.canary_revision:
        state = AnalysisStatus(revision=draft.canary_revision, started_at=stamp(draft.now))
    checks = measure_all(analysis, state.checks, readings, draft.now)
    draft.analysis = state.model_copy(update={"last_run_at": stamp(draft.now), "checks": checks})
    failed = failed_checks(checks, analysis.failure_limit)
    if failed:
        fail(draft, "AnalysisFailed", f"failure limit {analysis.failure_limit} exceeded: {describe(failed)}")
        return True
    return False


def _deadline_passed(draft: Draft, since_seconds: float = 0.0) -> bool:
    started = draft.step_started_at or draft.now
    limit = since_seconds + draft.spec.rollout.progress_deadline_seconds
    return draft.now >= started + timedelta(seconds=limit)


def _next_step(draft: Draft, what: str) -> None:
    index = draft.step_index or 0
    steps = draft.spec.rollout.steps
    draft.event("RolloutStepCompleted", f"step {index + 1}/{len(steps)} ({what}) completed")
    draft.cursor = draft.cursor.advance(draft.now)


def _wait_for_pods(draft: Draft, canary: ObservedDeployment | None, needed: int, why: str) -> bool:
    """True when the new revision has `needed` ready pods; fails the rollout past the deadline."""
    if ready(canary) >= needed:
        return True
    if _deadline_passed(draft):
        revision = draft.canary_revision
        fail(
            draft,
            "ProgressDeadlineExceeded",
            f"revision {revision} has {ready(canary)}/{needed} ready pods {why}, "
            f"{draft.spec.rollout.progress_deadline_seconds}s after the step started",
        )
    return False


def _set_weight(draft: Draft, weight: int, total: int, canary: ObservedDeployment | None) -> bool:
    if not _wait_for_pods(draft, canary, canary_replicas(total, weight), f"for {weight}% of the traffic"):
        return False
    draft.cursor = draft.cursor.set_weight(weight)
    _next_step(draft, f"setWeight {weight}")
    return True


def _pause(draft: Draft, step: PauseStep, started: datetime) -> bool:
    if step.duration is None:
        draft.cursor = draft.cursor.paused(PauseStatus(reason="Step", since=started))
        return False
    until = started + timedelta(seconds=parse_duration(step.duration))
    if draft.now < until:
        draft.cursor = draft.cursor.paused(PauseStatus(reason="Step", since=started, until=stamp(until)))
        return False
    _next_step(draft, f"pause {step.duration}")
    return True


def _analysis(draft: Draft, step: AnalysisStep | ShadowStep, started: datetime) -> bool:
    """Passes once its duration is over and every named check's latest result in the step is Pass;
    Inconclusive holds it open until the deadline. A shadow step is the same gate, measured on the
    mirrored traffic the planner sends to the canary meanwhile (`mirror_percent`)."""
    rollout = draft.spec.rollout
    every_check = tuple(c.name for c in rollout.analysis.checks) if rollout.analysis else ()
    names = step.checks or every_check
    duration = parse_duration(step.duration) if step.duration else 0.0
    checks = draft.analysis.checks if draft.analysis else ()
    kind = "shadow" if isinstance(step, ShadowStep) else "analysis"
    if draft.now >= started + timedelta(seconds=duration) and passed_since(checks, names, started):
        _next_step(draft, f"{kind} {', '.join(names)}")
        return True
    if _deadline_passed(draft, duration):
        fail(
            draft,
            "ProgressDeadlineExceeded",
            f"{kind} step {(draft.step_index or 0) + 1} did not pass within "
            f"{rollout.progress_deadline_seconds}s after its duration: "
            f"{describe(checks) or 'no measurements'}",
        )
    return False


def _take_step(draft: Draft, total: int, canary: ObservedDeployment | None) -> bool:
    """Try to complete the current step; True when it completed (try the next one too)."""
    steps = draft.spec.rollout.steps
    index = draft.step_index or 0
    started = draft.step_started_at or stamp(draft.now)
    if index >= len(steps):
        # Every step done: the caller promotes once the new revision can take all the traffic.
        if not (draft.promote_full and ready(canary) > 0):
            _wait_for_pods(draft, canary, total, "to take all the traffic")
        return False
    step = steps[index]
    if step.set_weight is not None:
        return _set_weight(draft, step.set_weight, total, canary)
    if step.pause is not None:
        return _pause(draft, step.pause, started)
    if step.analysis is not None:
        return _analysis(draft, step.analysis, started)
    if step.shadow is not None:
        return _analysis(draft, step.shadow, started)
    return False


def _sync_spec_pause(draft: Draft) -> None:
    pause = draft.pause
    if draft.spec.paused and (pause is None or pause.reason == "Step"):
        draft.cursor = draft.cursor.paused(PauseStatus(reason="Spec", since=stamp(draft.now)))
        draft.event("RolloutPaused", "spec.paused is true: the rollout holds at its current step")
    elif not draft.spec.paused and pause is not None and pause.reason == "Spec":
        draft.cursor = draft.cursor.resume(draft.now)  # the step's clock (and deadline) starts again
        draft.event("RolloutResumed", "spec.paused is false: the rollout goes on")


def _stopped(draft: Draft, canary: ObservedDeployment | None, preflight: Gate, why: str) -> bool:
    """The rollout ends now (True): servers refusing their bundle (its version or format),
    crash-looping pods, a stuck Deployment, or a failed preflight, which aborts whatever autoRollback
    says (no caller ever saw the revision: nothing to roll back)."""
    revision = draft.canary_revision
    if preflight == "failed":
        abort(draft, "PreflightFailed", f"preflight failed: {why}")
    elif canary is not None and canary.bundle_refused is not None:
        fail(draft, canary.bundle_refused.reason, canary.bundle_refused.message)
    elif canary is not None and canary.crash_looping:
        fail(draft, "CanaryCrashLooping", f"pods of revision {revision} are crash-looping")
    elif canary is not None and canary.progress_deadline_exceeded:
        fail(draft, "ProgressDeadlineExceeded", f"the Deployment of revision {revision} stopped progressing")
    else:
        return False
    return True


def _wait_for_preflight(draft: Draft, why: str) -> None:
    """No step runs while the preflight is pending; the progress deadline counts."""
    if _deadline_passed(draft):
        fail(
            draft,
            "ProgressDeadlineExceeded",
            f"the preflight of revision {draft.canary_revision} was not decided within "
            f"{draft.spec.rollout.progress_deadline_seconds}s: {why}",
        )


def advance(
    draft: Draft,
    variant: ResolvedVariant,
    total_replicas: int,
    canary: ObservedDeployment | None,
    readings: Sequence[CheckReading],
) -> None:
    """One pass of the rollout in progress of `variant` (draft.active() holds)."""
    verdict, why = gate(draft, variant.name, draft.canary_revision or "")
    if _stopped(draft, canary, verdict, why):
        return
    if run_analysis(draft, canary, readings) and not draft.active():
        return
    _sync_spec_pause(draft)
    if draft.pause is not None and draft.pause.reason in ("Manual", "Spec", "Failure"):
        return
    if verdict == "wait":
        _wait_for_preflight(draft, why)
        return
    if draft.spec.rollout.strategy == "BlueGreen" and not _wait_for_pods(
        draft, canary, total_replicas, "for the preview"
    ):
        return
    for _ in range(len(draft.spec.rollout.steps) + 1):
        if not draft.active() or not _take_step(draft, total_replicas, canary):
            break
    if not draft.active() or (draft.step_index or 0) < len(draft.spec.rollout.steps):
        return
    if (draft.promote_full and ready(canary) > 0) or ready(canary) >= total_replicas:
        promote(draft, variant)
