"""The status a plan reports: per-variant revisions, conditions, phase, and when to look again.

Conditions (what `kubectl wait` and GitOps tools read):
- Ready: every variant that takes traffic has ready pods of the revision serving it, and the router
  (when callers go through it) has a ready pod (reason RouterNotReady otherwise).
- Progressing: True while a rollout runs (reason RolloutInProgress, or RolloutPaused) or a revision
  starts (ReplicasUpdating); False when done (RolloutComplete), aborted (RolloutAborted), or when a
  Deployment stopped progressing (ProgressDeadlineExceeded, as the Deployment's own condition says).
- Degraded: True after an abort or a failure pause (the reason says which: AnalysisFailed,
  ProgressDeadlineExceeded, CanaryCrashLooping, RolloutAborted), when a Deployment stopped progressing,
  or when a variant that served lost every ready pod.
- SpecDiverged: True while a variant serves another revision than its spec names: after a manual
  rollback (reason RolledBack) or an abort (reason RolloutAborted).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from modeldeploy_operator.domain.conditions import find_condition, is_true, set_condition
from modeldeploy_operator.domain.revision import ResolvedVariant
from modeldeploy_operator.domain.rollout.model import VariantPlan
from modeldeploy_operator.domain.rollout.preflight import gate
from modeldeploy_operator.domain.rollout.state import Draft
from modeldeploy_operator.domain.status_model import (
    DEGRADED,
    PROGRESSING,
    READY,
    SPEC_DIVERGED,
    ConditionStatus,
    HistoryEntry,
    ModelDeploymentStatus,
    Phase,
    RevisionStatus,
    VariantStatus,
)

_Verdict = tuple[ConditionStatus, str, str]
MAX_REVISIONS_IN_STATUS = 8


@dataclass(frozen=True)
class VariantOutcome:
    """What planning one variant decided, and the facts its conditions need."""

    variant: ResolvedVariant
    pinned: HistoryEntry | None = None
    plan: VariantPlan | None = None
    serving: str | None = None
    serving_ready: bool = False
    updating: bool = False
    deadline: bool = False
    aborted: HistoryEntry | None = None
    queued: bool = False
    rolling: bool = False

    def with_plan(
        self,
        plan: VariantPlan,
        *,
        serving: str,
        draft: Draft,
        updating: bool = False,
        aborted: HistoryEntry | None = None,
        queued: bool = False,
        rolling: bool = False,
    ) -> VariantOutcome:
        observed = draft.observed_of(self.variant.name, serving)
        wanted = next((r.replicas for r in plan.revisions if r.revision == serving), 0)
        target = draft.observed_of(self.variant.name, self.variant.revision)
        return replace(
            self,
            plan=plan,
            serving=serving,
            serving_ready=wanted == 0 or (observed is not None and observed.ready_replicas > 0),
            updating=updating or queued,
            deadline=not rolling and updating and target is not None and target.progress_deadline_exceeded,
            aborted=aborted,
            queued=queued,
            rolling=rolling,
        )


def _revision_statuses(draft: Draft, outcome: VariantOutcome) -> tuple[RevisionStatus, ...]:
    assert outcome.plan is not None
    name = outcome.variant.name
    statuses = []
    for desired in outcome.plan.revisions:
        due = draft.scale_down_at.get((name, desired.revision))
        warm = draft.warm_until.get((name, desired.revision))
        draining = due is not None and draft.now < due and desired.weight == 0
        in_window = warm is not None and draft.now < warm and desired.weight == 0
        if desired.replicas == 0 and desired.weight == 0 and not draining:
            continue  # kept for rollbacks without pods: history lists it
        observed = draft.observed_of(name, desired.revision)
        entry = draft.entry(name, desired.revision)
        statuses.append(
            RevisionStatus(
                revision=desired.revision,
                role=desired.role,
                weight=desired.weight,
                replicas=desired.replicas,
                ready_replicas=observed.ready_replicas if observed else 0,
                number=entry.revision if entry else None,
                model_version=desired.model_version,
                scale_down_at=due if draining else None,
                warm_until=warm if in_window else None,
            )
        )
    return tuple(statuses[:MAX_REVISIONS_IN_STATUS])


def _variant_status(draft: Draft, outcome: VariantOutcome) -> VariantStatus:
    revisions = _revision_statuses(draft, outcome)
    serving = next((r for r in revisions if r.revision == outcome.serving), None)
    return VariantStatus(
        name=outcome.variant.name,
        weight=outcome.variant.weight,
        revision=outcome.serving,
        model_version=serving.model_version if serving else None,
        replicas=sum(r.replicas for r in revisions),
        ready_replicas=sum(r.ready_replicas for r in revisions),
        revisions=revisions,
    )


def _progressing(draft: Draft, outcomes: Sequence[VariantOutcome]) -> _Verdict:
    rolling = next((o for o in outcomes if o.rolling), None)
    if rolling is not None:
        steps = len(draft.spec.rollout.steps)
        where = f"step {min((draft.step_index or 0) + 1, steps)}/{steps}" if steps else "promotion"
        if (draft.step_index or 0) >= steps:
            where = "promotion (waiting for all the new revision's pods)"
        preflight, why = gate(draft, rolling.variant.name, draft.canary_revision or "")
        if preflight == "wait":
            where = f"preflight before any traffic ({why})"
        what = f"rollout of {draft.canary_revision} in variant {rolling.variant.name}: {where}"
        if draft.pause is not None:
            return "True", "RolloutPaused", f"{what}; paused ({draft.pause.reason})"
        return "True", "RolloutInProgress", f"{what}, canary weight {draft.canary_weight}%"
    deadline = [o.variant.name for o in outcomes if o.deadline]
    if deadline:  # the Deployment controller gave up: saying "updating" would promise progress
        return "False", "ProgressDeadlineExceeded", f"no progress for variant(s): {', '.join(deadline)}"
    updating = [o.variant.name for o in outcomes if o.updating]
    if updating:
        return "True", "ReplicasUpdating", f"waiting for variant(s): {', '.join(updating)}"
    if any(o.aborted for o in outcomes):
        return "False", "RolloutAborted", "the rollout was aborted; the stable revision serves"
    return "False", "RolloutComplete", "every variant serves its revision"


def _kept(draft: Draft, default: _Verdict) -> _Verdict:
    """A Degraded verdict set by an earlier failure stays as it was while its cause lasts."""
    previous = find_condition(draft.previous.conditions, DEGRADED)
    if previous is not None and previous.status == "True":
        return "True", previous.reason, previous.message
    return default


def _degraded(draft: Draft, outcomes: Sequence[VariantOutcome], not_serving: list[str]) -> _Verdict:
    if draft.degraded is not None:
        return "True", *draft.degraded
    if draft.pause is not None and draft.pause.reason == "Failure":
        return _kept(draft, ("True", "RolloutFailed", draft.pause.message or "the rollout failed"))
    aborted = next((o.aborted for o in outcomes if o.aborted), None)
    if aborted is not None:
        return _kept(draft, ("True", "RolloutAborted", aborted.message or "the rollout was aborted"))
    deadline = [o.variant.name for o in outcomes if o.deadline]
    if deadline:
        return "True", "ProgressDeadlineExceeded", f"no progress for variant(s): {', '.join(deadline)}"
    if not_serving and (is_true(draft.previous.conditions, READY) or _still(draft, "ReplicasUnavailable")):
        # "It served and lost every ready pod" holds until a pod is ready again. Read only from Ready,
        # it held for one pass: the next pass saw Ready False (written by the first) and cleared it, a
        # second status write with nothing changed, and a Degraded that said False while no pod served.
        return "True", "ReplicasUnavailable", f"no ready replicas for variant(s): {', '.join(not_serving)}"
    return "False", "AsExpected", ""


def _still(draft: Draft, reason: str) -> bool:
    """The previous status was Degraded for `reason`."""
    previous = find_condition(draft.previous.conditions, DEGRADED)
    return previous is not None and previous.status == "True" and previous.reason == reason


def _spec_diverged(outcomes: Sequence[VariantOutcome], draft: Draft) -> _Verdict:
    for o in outcomes:
        if o.pinned is not None:
            spec_entry = draft.entry(o.variant.name, o.variant.revision)
            spec_name = f"revision {spec_entry.revision}" if spec_entry else f"revision {o.variant.revision}"
            return (
                "True",
                "RolledBack",
                f"variant {o.variant.name} serves revision {o.pinned.revision} (version "
                f"{o.pinned.model_version}) by a rollback while the spec names {spec_name}",
            )
    for o in outcomes:
        if o.aborted is not None:
            return (
                "True",
                "RolloutAborted",
                f"variant {o.variant.name} serves {o.serving}: the spec's revision {o.aborted.revision} "
                f"(version {o.aborted.model_version}) was aborted",
            )
    return "False", "AsSpecified", "every variant serves the revision its spec names, or is rolling to it"


def _phase(draft: Draft, ready: _Verdict, progressing: _Verdict, degraded: _Verdict) -> Phase:
    if degraded[0] == "True":
        return "Degraded"
    if not draft.observed:
        return "Pending"
    if progressing[1] == "RolloutPaused":
        return "Paused"
    if progressing[0] == "True" or ready[0] == "False":
        return "Progressing"
    return "Paused" if draft.spec.paused else "Ready"


def _ready(not_serving: list[str], front_door_ready: bool | None) -> _Verdict:
    """Ready: every variant that takes traffic has ready pods of the revision serving it, and the front
    door callers go through (the built-in router) has a ready pod: `kubectl wait --for=condition=Ready`
    must not return before a request can succeed."""
    if not_serving:
        return "False", "NoReadyReplicas", f"no ready replicas for variant(s): {', '.join(not_serving)}"
    if front_door_ready is False:
        return "False", "RouterNotReady", "the router has no ready pod yet"
    return "True", "ReplicasReady", "every variant that takes traffic has ready replicas"


def build_status(
    draft: Draft,
    outcomes: Sequence[VariantOutcome],
    generation: int | None,
    *,
    front_door_ready: bool | None = None,
) -> ModelDeploymentStatus:
    variants = tuple(_variant_status(draft, o) for o in outcomes)
    not_serving = [o.variant.name for o in outcomes if o.variant.weight > 0 and not o.serving_ready]
    ready = _ready(not_serving, front_door_ready)
    progressing = _progressing(draft, outcomes)
    degraded = _degraded(draft, outcomes, not_serving)
    diverged = _spec_diverged(outcomes, draft)
    conditions = draft.previous.conditions
    for type_, (state, reason, message) in (
        (READY, ready),
        (PROGRESSING, progressing),
        (DEGRADED, degraded),
        (SPEC_DIVERGED, diverged),
    ):
        conditions = set_condition(
            conditions, type_, state, reason, message, now=draft.now, observed_generation=generation
        )
    phase = _phase(draft, ready, progressing, degraded)
    if degraded[0] == "True":
        message = degraded[2]
    elif ready[0] == "False":
        message = ready[2]
    else:
        message = progressing[2]
    primary = max(variants, key=lambda v: v.weight) if variants else None
    replicas = sum(v.replicas for v in variants)
    ready_replicas = sum(v.ready_replicas for v in variants)
    return draft.previous.model_copy(
        update={
            "observed_generation": generation,
            "phase": phase,
            "message": message[:4096],
            "model_version": primary.model_version if primary else None,
            "ready": f"{ready_replicas}/{replicas}",
            "replicas": replicas,
            "ready_replicas": ready_replicas,
            "conditions": conditions,
            "stable_revision": primary.revision if primary else None,
            "canary_revision": draft.canary_revision,
            "rollout_variant": draft.rollout_variant,
            "current_step_index": draft.step_index if draft.active() else None,
            "canary_weight": draft.canary_weight if draft.active() else 0,
            "step_started_at": draft.step_started_at if draft.active() else None,
            "rollout_started_at": draft.rollout_started_at if draft.active() else None,
            "aborted": draft.aborted,
            "pinned_revision": draft.pinned_revision,
            "pinned_spec_revision": draft.pinned_spec_revision,
            "pause": draft.pause if draft.active() else None,
            "variants": variants,
            "history": draft.history,
            "analysis": draft.analysis,
            "last_command": draft.last_command,
            "last_error": None,
        }
    )
