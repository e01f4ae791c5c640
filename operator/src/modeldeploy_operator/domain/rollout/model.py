"""What the rollout planner hands back: the revisions that should run, Events, the new status, a timer.

The reconciler turns a `Plan` into objects: per variant one Deployment (+ Service, HPA) per listed
revision with the listed replicas, and router weights from the listed traffic weights. A revision of a
variant that is not listed is no longer needed (prune it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from modeldeploy_operator.domain.status_model import ModelDeploymentStatus

Role = Literal["stable", "canary", "preview", "previous", "pinned"]
"""stable: takes the variant's traffic; canary: the new revision of a Canary rollout (its weight grows);
preview: the new revision of a BlueGreen rollout, or of an Immediate one not ready yet (no traffic);
previous: out of traffic, kept for rollbacks (all its pods for scaleDownDelaySeconds, then, if it was
serving, rollbackWindow.replicas warm pods until the window ends, then 0);
pinned: a revision a manual rollback made the serving one, in place of the spec's."""


@dataclass(frozen=True)
class DesiredRevision:
    revision: str
    """The revision hash (part of the Deployment's name)."""
    role: Role
    replicas: int
    """Wanted replicas; 0 keeps the Deployment (for rollbacks) without pods. With autoscaling the
    planner's number is the HPA's floor suggestion: see docs/rollouts.md."""
    weight: int
    """Percent of the variant's traffic (0..100); the weights of one variant's revisions sum to 100."""
    from_spec: bool
    """True for the revision the spec names: its objects are built from the spec. Otherwise (an old
    stable, a pinned revision) the spec no longer describes it: keep its Deployment, set replicas only."""
    model_version: str | None = None
    mirror_percent: int = 0
    """Percent of the variant's live requests the router copies to this revision (fire-and-forget:
    it answers no caller); only for the rollout's new revision while it has no live weight."""


@dataclass(frozen=True)
class VariantPlan:
    name: str
    weight: int
    """The variant's share of live traffic, as in the spec (A/B split); unchanged by rollouts."""
    revisions: tuple[DesiredRevision, ...]

    @property
    def mirrored(self) -> DesiredRevision | None:
        """The revision that gets mirrored traffic, if any."""
        return next((r for r in self.revisions if r.mirror_percent > 0), None)

    def revision(self, role: Role) -> DesiredRevision | None:
        """The first listed revision with that role, or None."""
        return next((r for r in self.revisions if r.role == role), None)


@dataclass(frozen=True)
class PlanEvent:
    reason: str
    message: str
    warning: bool = False


@dataclass(frozen=True)
class Plan:
    variants: tuple[VariantPlan, ...]
    events: tuple[PlanEvent, ...]
    status: ModelDeploymentStatus
    requeue_after: float | None
    """Seconds until a timer (pause, analysis interval, step duration, deadline, scale-down) needs a
    reconcile (at least 1); None when only a change of the object or its Deployments can move things on."""
    next_due: datetime | None = None
    """The same timer as a moment (`timers.next_due` of the new status): what the object's daemon
    sleeps until, whichever trigger ran this plan."""

    def variant(self, name: str) -> VariantPlan:
        return next(v for v in self.variants if v.name == name)


@dataclass(frozen=True)
class AnalysisRequest:
    """Which revision to measure now, against which stable, and which checks (analysis is due)."""

    variant: str
    canary_revision: str
    stable_revision: str | None
    checks: tuple[str, ...] = field(default=())
