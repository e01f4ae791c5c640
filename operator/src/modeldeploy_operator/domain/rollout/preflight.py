"""Preflight (issue 15): a new revision takes no traffic before its golden-set replay is decided.

The replay itself is I/O (modeldeploy_operator.analysis.replay, run off the reconcile lock); it ends
in a `PreflightStatus` per (variant, revision): Pending, Passed, Failed (with every figure) or Skipped
(the bundle has no golden set). The reconciler asks `preflight_requests()` which revisions need one,
observes their results and hands them to `plan()`. Here, and only here, they become decisions:

- Canary / BlueGreen: while the result is Pending no step runs (the new revision's pods start at
  weight 0; the progress deadline counts); Failed aborts the rollout at once, whatever
  autoRollback says (no weight was ever given to it); Passed or Skipped lets the steps run.
- Immediate with a stable revision: the new revision replaces the stable only after Passed or
  Skipped; Failed leaves the stable serving and the new revision aborted (0% traffic, scaled down).

Not gated: a first deploy (nothing serves, so no caller to protect and nothing to compare with), a
rollback (the pinned revision served before), and a canary that already has traffic (preflight
enabled in the middle of a rollout). A result is final once decided and kept in status: it is never
replayed again for that revision (a retry of an aborted rollout keeps its verdict).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from modeldeploy_operator.domain.observed import ObservedDeployment
from modeldeploy_operator.domain.revision import resolve_variants
from modeldeploy_operator.domain.rollout.state import Draft
from modeldeploy_operator.domain.spec import ModelDeploymentSpec
from modeldeploy_operator.domain.status_model import ModelDeploymentStatus, PreflightStatus

Gate = Literal["go", "wait", "failed"]
Key = tuple[str, str]
"""(variant, revision)"""


@dataclass(frozen=True)
class PreflightRequest:
    """A revision whose golden set must be replayed (against `stable_revision`) before traffic."""

    variant: str
    revision: str
    stable_revision: str
    cached: PreflightStatus | None = None
    """The result in status (final ones are never replayed; a Pending one carries its attempts)."""


def _enabled(spec: ModelDeploymentSpec) -> bool:
    return spec.rollout.preflight is not None and spec.rollout.preflight.enabled


def preflight_requests(
    name: str,
    spec: ModelDeploymentSpec,
    previous_status: ModelDeploymentStatus | None,
    observed: Sequence[ObservedDeployment],
) -> tuple[PreflightRequest, ...]:
    """The revisions that need a preflight result for this reconcile: per variant, the spec's
    revision when another revision (whose Deployment still exists) serves the variant, unless a
    rollback pin holds it. Pure."""
    status = previous_status or ModelDeploymentStatus()
    if not _enabled(spec):
        return ()
    serving = {v.name: v.revision for v in status.variants if v.revision}
    cached = {(p.variant, p.revision): p for p in status.preflight}
    requests = []
    for variant in resolve_variants(name, spec):
        stable = serving.get(variant.name)
        if stable is None or stable == variant.revision:
            continue
        if not any(o.variant == variant.name and o.revision == stable for o in observed):
            continue  # the stable's Deployment is gone: the target replaces it as on a first deploy
        if status.pinned_revision is not None and status.pinned_spec_revision == variant.revision:
            continue  # a rollback pin serves instead of the spec's revision
        requests.append(
            PreflightRequest(
                variant=variant.name,
                revision=variant.revision,
                stable_revision=stable,
                cached=cached.get((variant.name, variant.revision)),
            )
        )
    return tuple(requests)


def gate(draft: Draft, variant: str, revision: str) -> tuple[Gate, str]:
    """May `revision` of `variant` take traffic now, as far as preflight is concerned?"""
    if not _enabled(draft.spec):
        return "go", ""
    if draft.canary_revision == revision and draft.canary_weight > 0:
        return "go", ""  # has traffic already (preflight enabled mid-rollout): not taken away
    result = draft.preflight.get((variant, revision))
    if result is None:
        return "wait", f"the preflight of revision {revision} has not started"
    if result.result == "Failed":
        return "failed", result.message or "preflight failed"
    if result.result == "Pending":
        return "wait", result.message or "replaying the golden set"
    return "go", ""


def note_results(draft: Draft) -> None:
    """An Event for each result decided since the previous status (a Failed one is announced by the
    abort it causes)."""
    before = {(p.variant, p.revision): p.result for p in draft.previous.preflight}
    for key, result in sorted(draft.preflight.items()):
        if not result.final or before.get(key) == result.result:
            continue
        variant, revision = key
        if result.result == "Passed":
            draft.event("PreflightPassed", f"{draft.label(variant, revision)}: {result.message}")
        elif result.result == "Skipped":
            draft.event("PreflightSkipped", f"{draft.label(variant, revision)}: {result.message}")


def status_entries(
    draft: Draft, serving: Mapping[str, str | None], targets: Mapping[str, str]
) -> tuple[PreflightStatus, ...]:
    """status.preflight: per variant, the result for its target (given in this call), or the last one
    kept for the revision it serves now (so a promoted revision's figures stay readable)."""
    entries = []
    for variant, target in targets.items():
        fresh = draft.preflight.get((variant, target))
        if fresh is not None:
            entries.append(fresh)
            continue
        kept = next(
            (
                p
                for p in draft.previous.preflight
                if p.variant == variant and p.revision in (target, serving.get(variant)) and p.final
            ),
            None,
        )
        if kept is not None:
            entries.append(kept)
    return tuple(entries)
