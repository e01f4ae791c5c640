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
    ConditionStatus,
    READY,
    LastError,
    ModelDeploymentStatus,
    Phase,
    RevisionStatus,
    VariantStatus,
)


_Verdict = tuple[ConditionStatus, str, str]  # a condition's status, reason and message


@dataclass(frozen=True)
class _VariantHealth:
    status: VariantStatus
    live: bool  # takes traffic, so Ready depends on it
    missing: bool
    rolled_out: bool
    deadline_exceeded: bool

    @property
    def serving(self) -> bool:
        return self.status.ready_replicas > 0 or self.status.replicas == 0


def _variant_health(variant: ResolvedVariant, observed: ObservedDeployment | None) -> _VariantHealth:
    wanted = variant.replicas
    if wanted is None:  # the HPA decides; before it has, its minimum is what we wait for
        wanted = (
            observed.replicas
            if observed
            else (variant.autoscaling.min_replicas if variant.autoscaling else 1)
        )
    ready = observed.ready_replicas if observed else 0
    revision = RevisionStatus(
        revision=variant.revision, role="stable", weight=variant.weight, replicas=wanted, ready_replicas=ready
    )
    status = VariantStatus(
        name=variant.name,
        weight=variant.weight,
        revision=variant.revision,
        model_version=variant.model.version,
        replicas=wanted,
        ready_replicas=ready,
        revisions=(revision,),
    )
    return _VariantHealth(
        status=status,
        live=variant.weight > 0,
        missing=observed is None and wanted > 0,
        rolled_out=observed is not None and observed.rolled_out or wanted == 0,
        deadline_exceeded=observed is not None and observed.progress_deadline_exceeded,
    )


def _names(healths: Sequence[_VariantHealth]) -> str:
    return ", ".join(h.status.name for h in healths)


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
    by_key = {(o.variant, o.revision): o for o in observed}
    healths = [_variant_health(v, by_key.get((v.name, v.revision))) for v in variants]

    live = [h for h in healths if h.live]
    not_serving = [h for h in live if not h.serving]
    deadline = [h for h in healths if h.deadline_exceeded]
    updating = [h for h in healths if not h.rolled_out and not h.deadline_exceeded]
    was_ready = is_true(previous.conditions, READY)

    conditions = previous.conditions
    ready: _Verdict
    progressing: _Verdict
    degraded: _Verdict
    if not_serving:
        ready = ("False", "NoReadyReplicas", f"no ready replicas for variant(s): {_names(not_serving)}")
    else:
        ready = ("True", "ReplicasReady", "every variant that takes traffic has ready replicas")
    if deadline:
        progressing = ("False", "ProgressDeadlineExceeded", f"no progress for variant(s): {_names(deadline)}")
    elif updating:
        progressing = ("True", "ReplicasUpdating", f"waiting for variant(s): {_names(updating)}")
    else:
        progressing = ("False", "RolloutComplete", "every variant serves its desired revision")
    if deadline:
        degraded = ("True", "ProgressDeadlineExceeded", progressing[2])
    elif was_ready and not_serving:
        degraded = ("True", "ReplicasUnavailable", ready[2])
    else:
        degraded = ("False", "AsExpected", "")
    for type_, (state, reason, message) in ((READY, ready), (PROGRESSING, progressing), (DEGRADED, degraded)):
        conditions = set_condition(
            conditions, type_, state, reason, message, now=now, observed_generation=generation
        )

    history = previous.history
    for variant, health in zip(variants, healths, strict=True):
        history = record_revision(history, variant, now=now, limit=spec.revision_history_limit)
        if health.rolled_out and health.serving:
            history = finish_revision(history, variant.name, variant.revision, "Promoted", now=now)

    phase: Phase
    if degraded[0] == "True":
        phase = "Degraded"
    elif not observed:
        phase = "Pending"
    elif progressing[0] == "True" or ready[0] == "False":
        phase = "Progressing"
    elif spec.paused:
        phase = "Paused"
    else:
        phase = "Ready"

    primary = max(variants, key=lambda v: v.weight)
    replicas = sum(h.status.replicas for h in healths)
    ready_replicas = sum(h.status.ready_replicas for h in healths)
    return previous.model_copy(
        update={
            "observed_generation": generation,
            "phase": phase,
            "message": ready[2] if ready[0] == "False" else progressing[2],
            "model_version": primary.model.version,
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
