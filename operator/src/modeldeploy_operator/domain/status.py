"""Status from observation: what the ModelDeployment's serving Deployments say, told honestly.

`compute_status` describes the steady state in which each variant serves its desired revision (the
Immediate strategy, and the state every rollout ends in). The rollout planner (issue 6) will own
stable/canary fields during a rollout and reuse the per-variant and condition helpers here.

Condition meanings (what `kubectl wait` relies on):
- Ready: every variant that takes traffic has at least one ready pod of its serving revision.
- Progressing: some serving Deployment is still being created or updated.
- Degraded: a Deployment exceeded its progress deadline, or a variant that had been serving lost
  all its ready pods.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from .conditions import is_true, set_condition
from .history import finish_revision, record_revision
from .observed import ObservedDeployment
from .revision import ResolvedVariant, resolve_variants
from .spec import ModelDeploymentSpec
from .status_model import (
    DEGRADED,
    PROGRESSING,
    READY,
    ConditionStatus,
    LastError,
    ModelDeploymentStatus,
    Phase,
    RevisionRole,
    RevisionStatus,
    VariantStatus,
)

_Verdict = tuple[ConditionStatus, str, str]  # a condition's status, reason and message


@dataclass(frozen=True)
class _VariantHealth:
    status: VariantStatus
    live: bool  # takes traffic, so Ready depends on it
    serving: bool  # some revision has ready pods (or none are wanted)
    rolled_out: bool  # the desired revision is fully up
    deadline_exceeded: bool


def serving_revision(variant: ResolvedVariant, observed: Sequence[ObservedDeployment]) -> str:
    """The revision of a variant that takes its traffic: the desired one once it has a ready pod,
    else an older one that still has ready pods (a replacement only takes over when ready), else
    the desired one (nothing serves yet)."""
    mine = [o for o in observed if o.variant == variant.name]
    if any(o.revision == variant.revision and o.ready_replicas > 0 for o in mine):
        return variant.revision
    ready_old = [o for o in mine if o.revision != variant.revision and o.ready_replicas > 0]
    if ready_old:
        return max(ready_old, key=lambda o: (o.ready_replicas, o.name)).revision
    return variant.revision


def _wanted_replicas(variant: ResolvedVariant, desired: ObservedDeployment | None) -> int:
    if variant.replicas is not None:
        return variant.replicas
    if desired is not None:  # the HPA's current choice
        return desired.replicas
    return variant.autoscaling.min_replicas if variant.autoscaling else 1


def _revision_status(variant: ResolvedVariant, observed: ObservedDeployment, serving: str) -> RevisionStatus:
    role: RevisionRole
    if observed.revision == serving:
        role = "stable"
    elif observed.revision == variant.revision:
        role = "preview"  # the replacement, not yet taking traffic
    else:
        role = "previous"
    return RevisionStatus(
        revision=observed.revision,
        role=role,
        weight=variant.weight if role == "stable" else 0,
        replicas=observed.replicas,
        ready_replicas=observed.ready_replicas,
    )


def _variant_health(variant: ResolvedVariant, observed: Sequence[ObservedDeployment]) -> _VariantHealth:
    mine = sorted((o for o in observed if o.variant == variant.name), key=lambda o: o.name)
    desired = next((o for o in mine if o.revision == variant.revision), None)
    serving = serving_revision(variant, mine)
    serving_observed = next((o for o in mine if o.revision == serving), None)
    wanted = _wanted_replicas(variant, desired)
    revisions = [_revision_status(variant, o, serving) for o in mine]
    if desired is None:  # not created yet: still part of the picture
        revisions.append(RevisionStatus(revision=variant.revision, role="preview", replicas=wanted))
    model_version: str | None = variant.model.version
    if serving != variant.revision:
        model_version = serving_observed.model_version if serving_observed else None
    status = VariantStatus(
        name=variant.name,
        weight=variant.weight,
        revision=serving,
        model_version=model_version,
        replicas=sum(r.replicas for r in revisions),
        ready_replicas=sum(r.ready_replicas for r in revisions),
        revisions=tuple(revisions),
    )
    return _VariantHealth(
        status=status,
        live=variant.weight > 0,
        serving=(serving_observed is not None and serving_observed.ready_replicas > 0) or wanted == 0,
        rolled_out=(desired is not None and desired.rolled_out) or wanted == 0,
        deadline_exceeded=desired is not None and desired.progress_deadline_exceeded,
    )


def _names(healths: Sequence[_VariantHealth]) -> str:
    return ", ".join(h.status.name for h in healths)


def _verdicts(healths: Sequence[_VariantHealth], *, was_ready: bool) -> tuple[_Verdict, _Verdict, _Verdict]:
    """Ready, Progressing and Degraded as (status, reason, message)."""
    not_serving = [h for h in healths if h.live and not h.serving]
    deadline = [h for h in healths if h.deadline_exceeded]
    updating = [h for h in healths if not h.rolled_out and not h.deadline_exceeded]
    ready: _Verdict
    progressing: _Verdict
    degraded: _Verdict = ("False", "AsExpected", "")
    if not_serving:
        ready = ("False", "NoReadyReplicas", f"no ready replicas for variant(s): {_names(not_serving)}")
    else:
        ready = ("True", "ReplicasReady", "every variant that takes traffic has ready replicas")
    if deadline:
        progressing = ("False", "ProgressDeadlineExceeded", f"no progress for variant(s): {_names(deadline)}")
        degraded = ("True", "ProgressDeadlineExceeded", progressing[2])
    elif updating:
        progressing = ("True", "ReplicasUpdating", f"waiting for variant(s): {_names(updating)}")
    else:
        progressing = ("False", "RolloutComplete", "every variant serves its desired revision")
    if degraded[0] == "False" and was_ready and not_serving:
        # It served before and now it does not: that is a regression, not progress.
        degraded = ("True", "ReplicasUnavailable", ready[2])
    return ready, progressing, degraded


def _phase(
    ready: _Verdict, progressing: _Verdict, degraded: _Verdict, *, observed: bool, paused: bool
) -> Phase:
    if degraded[0] == "True":
        return "Degraded"
    if not observed:
        return "Pending"
    if progressing[0] == "True" or ready[0] == "False":
        return "Progressing"
    return "Paused" if paused else "Ready"


def compute_status(
    name: str,
    spec: ModelDeploymentSpec,
    observed: Sequence[ObservedDeployment],
    *,
    now: datetime,
    generation: int | None = None,
    previous: ModelDeploymentStatus | None = None,
) -> ModelDeploymentStatus:
    """The status of ModelDeployment `name` given its spec and its observed serving Deployments."""
    previous = previous or ModelDeploymentStatus()
    variants = resolve_variants(name, spec)
    healths = [_variant_health(v, observed) for v in variants]

    ready, progressing, degraded = _verdicts(healths, was_ready=is_true(previous.conditions, READY))
    conditions = previous.conditions
    for type_, (state, reason, message) in ((READY, ready), (PROGRESSING, progressing), (DEGRADED, degraded)):
        conditions = set_condition(
            conditions, type_, state, reason, message, now=now, observed_generation=generation
        )

    history = previous.history
    for variant, health in zip(variants, healths, strict=True):
        history = record_revision(history, variant, now=now, limit=spec.revision_history_limit)
        if health.rolled_out and health.serving:
            history = finish_revision(history, variant.name, variant.revision, "Promoted", now=now)

    phase = _phase(ready, progressing, degraded, observed=bool(observed), paused=spec.paused)
    primary = max(healths, key=lambda h: h.status.weight).status
    replicas = sum(h.status.replicas for h in healths)
    ready_replicas = sum(h.status.ready_replicas for h in healths)
    return previous.model_copy(
        update={
            "observed_generation": generation,
            "phase": phase,
            "message": ready[2] if ready[0] == "False" else progressing[2],
            "model_version": primary.model_version,
            "ready": f"{ready_replicas}/{replicas}",
            "replicas": replicas,
            "ready_replicas": ready_replicas,
            "conditions": conditions,
            "stable_revision": primary.revision,
            "canary_revision": None,
            "rollout_variant": None,
            "current_step_index": None,
            "canary_weight": 0,
            "variants": tuple(h.status for h in healths),
            "history": history,
            # Called after a successful apply: whatever failed before has been overcome.
            "last_error": None,
        }
    )


def status_for_invalid_spec(
    messages: Sequence[str],
    *,
    now: datetime,
    generation: int | None = None,
    previous: ModelDeploymentStatus | None = None,
) -> ModelDeploymentStatus:
    """Status for a spec that passed the schema but not the semantic checks: Failed, and why.

    Everything already running keeps running (and keeps its per-variant status): an invalid edit
    must not take a working model down.
    """
    previous = previous or ModelDeploymentStatus()
    message = "; ".join(messages)
    conditions = previous.conditions
    if not previous.variants:
        conditions = set_condition(
            conditions, READY, "False", "InvalidSpec", message, now=now, observed_generation=generation
        )
    conditions = set_condition(
        conditions, PROGRESSING, "False", "InvalidSpec", message, now=now, observed_generation=generation
    )
    conditions = set_condition(
        conditions, DEGRADED, "True", "InvalidSpec", message, now=now, observed_generation=generation
    )
    return with_error(
        previous.model_copy(
            update={
                "observed_generation": generation,
                "phase": "Failed",
                "message": message,
                "conditions": conditions,
            }
        ),
        "InvalidSpec",
        message,
        now=now,
    )


def with_error(
    status: ModelDeploymentStatus, reason: str, message: str, *, now: datetime
) -> ModelDeploymentStatus:
    """The status with lastError set (reconcile failures the handlers meet)."""
    error = LastError(reason=reason, message=message, time=now.replace(microsecond=0))
    return status.model_copy(update={"last_error": error})
