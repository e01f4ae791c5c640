"""The rollout decision: a pure function from (spec, observed, readings, now, previous status, command)
to a Plan (revisions with replicas and weights, Events, the new status, when to look again).

Per variant, the *target* is the revision the spec names, or the revision a manual rollback pinned
while the spec still names what it named then. The *stable* is the revision serving the variant
(status.variants[].revision). Then:

- target == stable: steady; an in-flight rollout of another revision is Superseded.
- first deploy, a pinned target, or the Immediate strategy: the target replaces the stable as soon as
  it has a ready pod (the behaviour before rollouts existed).
- Canary / BlueGreen: one rollout at a time across variants (status has one set of rollout fields);
  a variant whose spec changes while another variant rolls out waits its turn. An aborted revision
  stays aborted (0% traffic) until the spec changes, a rollback, or `resume` (retry).

Everything the next call needs is in the status it returns, so a restarted operator resumes exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from modeldeploy_operator.domain.conditions import find_condition
from modeldeploy_operator.domain.history import record_revision, with_loaded_digests
from modeldeploy_operator.domain.observed import ObservedDeployment
from modeldeploy_operator.domain.readings import CheckReading
from modeldeploy_operator.domain.revision import ResolvedVariant, resolve_variants
from modeldeploy_operator.domain.rollout.commands import Command, InvalidCommand
from modeldeploy_operator.domain.rollout.control import apply_command, pinned_entry
from modeldeploy_operator.domain.rollout.cursor import Cursor
from modeldeploy_operator.domain.rollout.history import reopen
from modeldeploy_operator.domain.rollout.model import (
    AnalysisRequest,
    DesiredRevision,
    Plan,
    Role,
    VariantPlan,
)
from modeldeploy_operator.domain.rollout.preflight import gate, note_results, status_entries
from modeldeploy_operator.domain.rollout.state import Draft
from modeldeploy_operator.domain.rollout.steps import advance, mirror_percent, ready, wanted_canary_replicas
from modeldeploy_operator.domain.rollout.timers import analysis_due, next_due, rollout_active, seconds_until
from modeldeploy_operator.domain.rollout.view import VariantOutcome, build_status
from modeldeploy_operator.domain.spec import ModelDeploymentSpec
from modeldeploy_operator.domain.status_model import (
    DEGRADED,
    HistoryEntry,
    ModelDeploymentStatus,
    PreflightStatus,
)


def _total_replicas(variant: ResolvedVariant, stable: ObservedDeployment | None) -> int:
    """Pods the variant's serving revision should have (the HPA's current choice under autoscaling)."""
    if stable is not None and stable.externally_scaled and stable.replicas > 0:
        return stable.replicas  # a user's HPA (or KEDA's) decides; the spec's count is only the start
    if variant.replicas is not None:
        return variant.replicas
    if stable is not None and stable.replicas > 0:
        return stable.replicas
    return variant.autoscaling.min_replicas if variant.autoscaling else 1


class _Layout:
    """Collects the revisions one variant should run."""

    def __init__(self, draft: Draft, variant: ResolvedVariant) -> None:
        self.draft, self.variant = draft, variant
        self.revisions: list[DesiredRevision] = []

    def add(self, revision: str, role: Role, replicas: int, weight: int, mirror_percent: int = 0) -> None:
        observed = self.draft.observed_of(self.variant.name, revision)
        entry = self.draft.entry(self.variant.name, revision)
        version = self.variant.model.version if revision == self.variant.revision else None
        version = version or (observed.model_version if observed else None)
        version = version or (entry.model_version if entry else None)
        self.revisions.append(
            DesiredRevision(
                revision=revision,
                role=role,
                replicas=replicas,
                weight=weight,
                from_spec=revision == self.variant.revision,
                model_version=version,
                mirror_percent=mirror_percent,
            )
        )

    def add_leaving(self, revision: str, role: Role) -> None:
        """A revision out of traffic: its pods stay until its scale-down time, then its rollback
        window's until the window ends (Draft.leaving_replicas), then 0."""
        observed = self.draft.observed_of(self.variant.name, revision)
        current = observed.replicas if observed is not None else 0
        self.add(revision, role, self.draft.leaving_replicas(self.variant.name, revision, current), 0)

    def add_kept(self) -> None:
        """Every other observed revision that history still lists (rollback window) or that is
        still draining; anything else is left out, so the reconciler prunes it."""
        listed = {r.revision for r in self.revisions}
        in_history = {e.hash for e in self.draft.history if e.variant == self.variant.name}
        for observed in sorted(self.draft.observed, key=lambda o: o.name):
            if observed.variant != self.variant.name or observed.revision in listed:
                continue
            key = (self.variant.name, observed.revision)
            draining = key in self.draft.scale_down_at or key in self.draft.warm_until
            if observed.revision in in_history or draining:
                self.add_leaving(observed.revision, "previous")
                listed.add(observed.revision)

    def plan(self) -> VariantPlan:
        self.add_kept()
        return VariantPlan(
            name=self.variant.name, weight=self.variant.weight, revisions=tuple(self.revisions)
        )


def _end_other_rollout(draft: Draft, variant: ResolvedVariant, target: str, immediate: bool) -> None:
    """A rollout of this variant that is not for its target any more ends here (Superseded)."""
    if draft.rollout_variant != variant.name or draft.canary_revision is None:
        return
    if draft.canary_revision == target and not immediate:
        return
    if draft.active() and draft.canary_revision != target:
        old = draft.canary_revision
        draft.finish(variant.name, old, "Superseded", f"replaced by revision {target} before it finished")
        draft.leave_traffic(variant.name, old)
        draft.event(
            "RolloutSuperseded", f"the rollout of {draft.label(variant.name, old)} was superseded by {target}"
        )
    draft.cursor = draft.cursor.clear()


def _immediate(
    draft: Draft, variant: ResolvedVariant, target: str, pin: HistoryEntry | None
) -> tuple[VariantPlan, str, bool, HistoryEntry | None]:
    """The target serves once it has a ready pod (and, replacing a stable, once its preflight passed);
    until then the stable (or any ready old one) serves."""
    old = draft.stable.get(variant.name)
    target_observed = draft.observed_of(variant.name, target)
    old_observed = draft.observed_of(variant.name, old)
    total = _total_replicas(variant, old_observed or target_observed)
    serving = target
    verdict, why = "go", ""
    if pin is None and old is not None and old != target:
        verdict, why = gate(draft, variant.name, target)
    if verdict != "go" and old is not None:
        serving = old
    elif ready(target_observed) == 0:
        if ready(old_observed) > 0 and old is not None:
            serving = old
        else:  # status lost or never written: any old revision with ready pods beats none
            fallback = [o for o in draft.observed if o.variant == variant.name and o.ready_replicas > 0]
            if fallback:
                serving = max(fallback, key=lambda o: (o.ready_replicas, o.name)).revision
    if pin is None:
        draft.history = record_revision(
            draft.history, variant, now=draft.now, limit=draft.spec.revision_history_limit
        )
    if serving != old:
        draft.stable[variant.name] = serving
        draft.enter_traffic(variant.name, serving)
        draft.leave_traffic(variant.name, old, was_serving=True)
        draft.event("RevisionServing", f"variant {variant.name} serves {draft.label(variant.name, serving)}")
    if verdict == "failed" and old is not None:
        return _preflight_failed(draft, variant, target, old, total, why)
    rolled_out = target_observed is not None and target_observed.rolled_out
    if pin is None and serving == target and rolled_out:
        draft.finish(variant.name, target, "Promoted")
    layout = _Layout(draft, variant)
    serving_role: Role = "pinned" if pin is not None and serving == target else "stable"
    layout.add(serving, serving_role, total, 100)
    if serving != target:
        layout.add(target, "pinned" if pin is not None else "preview", total, 0)
    return layout.plan(), serving, not rolled_out, None


def _preflight_failed(
    draft: Draft, variant: ResolvedVariant, target: str, stable: str, total: int, why: str
) -> tuple[VariantPlan, str, bool, HistoryEntry | None]:
    """Immediate strategy: the target failed its preflight, so the stable keeps all the traffic and
    the target is aborted (history, Event, Degraded) and scaled down, until the spec changes."""
    entry = draft.entry(variant.name, target)
    if entry is not None and entry.outcome == "Progressing":
        message = f"preflight failed: {why}"
        text = f"{draft.label(variant.name, target)} gets no traffic: {message}"
        draft.finish(variant.name, target, "Aborted", f"PreflightFailed: {message}")
        draft.degraded = ("PreflightFailed", text)
        draft.event("PreflightFailed", text, warning=True)
    draft.leave_traffic(variant.name, target)
    layout = _Layout(draft, variant)
    layout.add(stable, "stable", total, 100)
    layout.add_leaving(target, "preview")
    return layout.plan(), stable, False, draft.entry(variant.name, target)


def _start(draft: Draft, variant: ResolvedVariant) -> None:
    draft.history = record_revision(
        draft.history, variant, now=draft.now, limit=draft.spec.revision_history_limit
    )
    entry = draft.entry(variant.name, variant.revision)
    if entry is not None and entry.outcome != "Progressing":
        draft.history = reopen(draft.history, entry.revision)
    draft.cursor = Cursor.start(variant.name, variant.revision, draft.now)
    draft.analysis = None
    draft.enter_traffic(variant.name, variant.revision)
    stable = draft.stable.get(variant.name)
    draft.event(
        "RolloutStarted",
        f"{draft.spec.rollout.strategy} rollout of {draft.label(variant.name, variant.revision)} started; "
        f"{draft.label(variant.name, stable) if stable else 'nothing'} keeps serving",
    )


def _plan_variant(draft: Draft, variant: ResolvedVariant, readings: Sequence[CheckReading]) -> VariantOutcome:
    pin = pinned_entry(draft, variant)
    target = pin.hash if pin is not None else variant.revision
    stable = draft.stable.get(variant.name)
    if stable is not None and stable != target and draft.observed_of(variant.name, stable) is None:
        stable = None  # its Deployment is gone: nothing to fall back on
        draft.stable.pop(variant.name, None)
    immediate = pin is not None or stable is None or draft.spec.rollout.strategy == "Immediate"
    _end_other_rollout(draft, variant, target, immediate and stable != target)
    outcome = VariantOutcome(variant=variant, pinned=pin)

    if stable == target:
        return _steady(draft, outcome, stable)
    if immediate:
        plan, serving, updating, aborted = _immediate(draft, variant, target, pin)
        return outcome.with_plan(plan, serving=serving, draft=draft, updating=updating, aborted=aborted)
    assert stable is not None
    return _progressive(draft, outcome, stable, target, readings)


def _steady(draft: Draft, outcome: VariantOutcome, stable: str) -> VariantOutcome:
    """The variant serves its target; resizing (replicas) shows as updating until done."""
    variant = outcome.variant
    observed = draft.observed_of(variant.name, stable)
    rolled_out = observed is not None and observed.rolled_out
    if rolled_out and outcome.pinned is None:
        draft.finish(variant.name, stable, "Promoted")
    layout = _Layout(draft, variant)
    role: Role = "pinned" if outcome.pinned is not None else "stable"
    layout.add(stable, role, _total_replicas(variant, observed), 100)
    return outcome.with_plan(layout.plan(), serving=stable, draft=draft, updating=not rolled_out)


def _progressive(
    draft: Draft, outcome: VariantOutcome, stable: str, target: str, readings: Sequence[CheckReading]
) -> VariantOutcome:
    """Canary or BlueGreen: aborted, queued behind another variant, or one pass of the step machine."""
    variant = outcome.variant
    stable_observed = draft.observed_of(variant.name, stable)
    total = _total_replicas(variant, stable_observed)
    new_role: Role = "preview" if draft.spec.rollout.strategy == "BlueGreen" else "canary"
    entry = draft.entry(variant.name, target)
    layout = _Layout(draft, variant)
    if entry is not None and entry.outcome == "Aborted":
        if not draft.active():  # keep the status pointing at the aborted revision
            draft.cursor = draft.cursor.held_aborted(variant.name, target)
        layout.add(stable, "stable", total, 100)
        layout.add_leaving(target, new_role)
        return outcome.with_plan(layout.plan(), serving=stable, draft=draft, aborted=entry)
    if draft.active() and draft.rollout_variant != variant.name:
        layout.add(stable, "stable", total, 100)
        return outcome.with_plan(layout.plan(), serving=stable, draft=draft, queued=True)

    if not draft.active():
        _start(draft, variant)
    canary = draft.observed_of(variant.name, target)
    advance(draft, variant, total, canary, readings)
    serving = draft.stable[variant.name]
    if serving == target:  # promoted in this pass
        layout.add(target, "stable", total, 100)
        layout.add_leaving(stable, "previous")
        return outcome.with_plan(layout.plan(), serving=target, draft=draft)
    if draft.aborted:
        layout.add(stable, "stable", total, 100)
        layout.add_leaving(target, new_role)
        aborted = draft.entry(variant.name, target)
        return outcome.with_plan(layout.plan(), serving=stable, draft=draft, aborted=aborted)
    layout.add(stable, "stable", total, 100 - draft.canary_weight)
    layout.add(
        target, new_role, wanted_canary_replicas(draft, total), draft.canary_weight, mirror_percent(draft)
    )
    return outcome.with_plan(layout.plan(), serving=stable, draft=draft, rolling=True)


def _release_stale_pin(draft: Draft, variants: Sequence[ResolvedVariant]) -> None:
    if draft.pinned_revision is None:
        return
    entry = draft.entry_number(draft.pinned_revision)
    variant = next((v for v in variants if entry is not None and v.name == entry.variant), None)
    if variant is not None and variant.revision == draft.pinned_spec_revision:
        return
    draft.event(
        "RollbackPinReleased",
        f"the spec names a new revision: the rollback pin on revision {draft.pinned_revision} ends",
    )
    draft.pinned_revision = draft.pinned_spec_revision = None


def _note_servers(draft: Draft, outcomes: Sequence[VariantOutcome]) -> None:
    """What the servers of the planned revisions reported (ObservedDeployment.loaded_digests and
    bundle_refused, observed by the reconciler): the digests they loaded go into history, and a
    revision whose servers refuse their bundle makes the ModelDeployment Degraded with reason
    ModelVersionMismatch or ModelFormatMismatch (a rollout of it was already stopped by the step
    machine; this covers a first deploy, the Immediate strategy, and new pods of a serving revision
    whose URI now holds another bundle). One Warning Event when the condition starts, not one per
    pass."""
    for outcome in outcomes:
        if outcome.plan is None:
            continue
        name = outcome.variant.name
        for desired in outcome.plan.revisions:
            observed = draft.observed_of(name, desired.revision)
            if observed is None:
                continue
            draft.history = with_loaded_digests(
                draft.history, name, desired.revision, observed.loaded_digests
            )
            refused = observed.bundle_refused
            if refused is None or desired.replicas == 0 or draft.degraded is not None:
                continue
            draft.degraded = (refused.reason, refused.message)
            previous = find_condition(draft.previous.conditions, DEGRADED)
            if previous is None or previous.status != "True" or previous.reason != refused.reason:
                draft.event(refused.reason, refused.message, warning=True)


def plan(
    name: str,
    spec: ModelDeploymentSpec,
    observed: Sequence[ObservedDeployment],
    readings: Sequence[CheckReading],
    now: datetime,
    previous_status: ModelDeploymentStatus | None = None,
    command: Command | InvalidCommand | None = None,
    *,
    generation: int | None = None,
    front_door_ready: bool | None = None,
    analysis_pending: bool = False,
    preflight: Sequence[PreflightStatus] = (),
) -> Plan:
    """Decide what should run for ModelDeployment `name` now. Pure: same inputs, same Plan.

    `front_door_ready`: what the reconciler observed of the front door callers go through (the
    built-in router: does it have a ready pod?); None when there is none to wait for (the Gateway API
    provider). Ready is decided here, once, from it and the serving revisions.

    `analysis_pending`: the due analysis is still being measured; nothing is evaluated this time (the
    readings are given to a later call).

    `preflight`: the golden-set replay results the reconciler observed for `preflight_requests()`
    (Pending while running); rollout/preflight.py says what they gate."""
    previous = previous_status or ModelDeploymentStatus()
    variants = resolve_variants(name, spec)
    draft = Draft.from_status(spec, now, observed, previous)
    draft.analysis_pending = analysis_pending
    draft.preflight = {(p.variant, p.revision): p for p in preflight}
    note_results(draft)
    _release_stale_pin(draft, variants)
    apply_command(draft, command, variants)
    # The variant holding the rollout goes first, so that one finishing frees the slot for the others.
    order = sorted(variants, key=lambda v: v.name != draft.rollout_variant)
    outcomes = {v.name: _plan_variant(draft, v, readings) for v in order}
    in_spec_order = [outcomes[v.name] for v in variants]
    _note_servers(draft, in_spec_order)
    status = build_status(draft, in_spec_order, generation, front_door_ready=front_door_ready)
    status = status.model_copy(
        update={
            "preflight": status_entries(
                draft,
                {o.variant.name: o.serving for o in in_spec_order},
                {
                    v.name: (o.pinned.hash if o.pinned else v.revision)
                    for v, o in zip(variants, in_spec_order, strict=True)
                },
            )
        }
    )
    # A rollout slot just freed while another variant waits: start its rollout in the next pass.
    slot_freed = any(o.queued for o in in_spec_order) and not draft.active()
    due = next_due(spec, status, now, at_once=slot_freed)
    return Plan(
        variants=tuple(o.plan for o in in_spec_order if o.plan is not None),
        events=tuple(draft.events),
        status=status,
        requeue_after=seconds_until(due, now),
        next_due=due,
    )


def analysis_request(
    spec: ModelDeploymentSpec, previous_status: ModelDeploymentStatus | None, now: datetime
) -> AnalysisRequest | None:
    """What to measure before calling plan(), or None when no analysis is due (so a reconcile that
    is not on the analysis interval does not scrape). Readings given to plan() when it is not due are
    ignored, so calling this is an optimisation, not a correctness matter."""
    status = previous_status or ModelDeploymentStatus()
    analysis = spec.rollout.analysis
    subject = analysis_subject(status)
    if analysis is None or subject is None or not analysis_due(spec, status, now):
        return None
    variant, canary, stable = subject
    return AnalysisRequest(
        variant=variant,
        canary_revision=canary,
        stable_revision=stable,
        checks=tuple(c.name for c in analysis.checks),
    )


def analysis_subject(status: ModelDeploymentStatus) -> tuple[str, str, str | None] | None:
    """(variant, canary revision, the variant's stable revision) of the rollout under way, or None
    when none is (none started, or it ended: promoted, aborted). What an analysis measures, whether
    due now or not: so also the only one whose scrape baseline the operator keeps (reconciler.py)."""
    if not rollout_active(status):
        return None
    assert status.rollout_variant is not None  # (rollout_active)
    assert status.canary_revision is not None
    stable = next((v.revision for v in status.variants if v.name == status.rollout_variant), None)
    return status.rollout_variant, status.canary_revision, stable
