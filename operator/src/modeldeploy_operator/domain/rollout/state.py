"""The planner's working copy of the rollout state, read from the previous status and written back.

One `Draft` lives for one `plan()` call: commands and the step machine change it, the status view reads
it. Nothing here survives the call except through the status it produces (restart safety).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from modeldeploy_operator.domain.history import entry_for_hash, finish_revision
from modeldeploy_operator.domain.observed import ObservedDeployment
from modeldeploy_operator.domain.rollout.model import PlanEvent
from modeldeploy_operator.domain.spec import ModelDeploymentSpec
from modeldeploy_operator.domain.status_model import (
    AnalysisStatus,
    CommandStatus,
    HistoryEntry,
    ModelDeploymentStatus,
    PauseStatus,
    RevisionOutcome,
)


def stamp(moment: datetime) -> datetime:
    """Times in status have whole seconds, so a status read back compares equal to the one written."""
    return moment.replace(microsecond=0)


@dataclass
class Draft:
    spec: ModelDeploymentSpec
    now: datetime
    observed: Sequence[ObservedDeployment]
    previous: ModelDeploymentStatus
    history: tuple[HistoryEntry, ...]
    stable: dict[str, str]
    """variant -> its stable (serving) revision hash."""
    scale_down_at: dict[tuple[str, str], datetime]
    """(variant, revision) -> when a revision that left traffic loses its pods."""
    rollout_variant: str | None = None
    canary_revision: str | None = None
    step_index: int | None = None
    step_started_at: datetime | None = None
    rollout_started_at: datetime | None = None
    canary_weight: int = 0
    aborted: bool = False
    pause: PauseStatus | None = None
    analysis: AnalysisStatus | None = None
    pinned_revision: int | None = None
    pinned_spec_revision: str | None = None
    last_command: CommandStatus | None = None
    events: list[PlanEvent] = field(default_factory=list)
    degraded: tuple[str, str] | None = None
    """(reason, message) of a failure met in this call."""
    promote_full: bool = False
    """promote --full was asked in this call: switch as soon as the canary has a ready pod."""
    analysis_pending: bool = False
    """The due measurement is still being taken (off the reconcile path): analysis waits for it."""

    @classmethod
    def from_status(
        cls,
        spec: ModelDeploymentSpec,
        now: datetime,
        observed: Sequence[ObservedDeployment],
        previous: ModelDeploymentStatus,
    ) -> Draft:
        scale_down = {
            (v.name, r.revision): r.scale_down_at
            for v in previous.variants
            for r in v.revisions
            if r.scale_down_at is not None
        }
        return cls(
            spec=spec,
            now=now,
            observed=observed,
            previous=previous,
            history=previous.history,
            stable={v.name: v.revision for v in previous.variants if v.revision},
            scale_down_at=scale_down,
            rollout_variant=previous.rollout_variant,
            canary_revision=previous.canary_revision,
            step_index=previous.current_step_index,
            step_started_at=previous.step_started_at,
            rollout_started_at=previous.rollout_started_at,
            canary_weight=previous.canary_weight,
            aborted=previous.aborted,
            pause=previous.pause,
            analysis=previous.analysis,
            pinned_revision=previous.pinned_revision,
            pinned_spec_revision=previous.pinned_spec_revision,
            last_command=previous.last_command,
        )

    # --- reading -------------------------------------------------------------------------------

    def active(self) -> bool:
        """A Canary or BlueGreen rollout is under way (not aborted)."""
        return self.rollout_variant is not None and self.canary_revision is not None and not self.aborted

    def observed_of(self, variant: str, revision: str | None) -> ObservedDeployment | None:
        return next((o for o in self.observed if o.variant == variant and o.revision == revision), None)

    def entry(self, variant: str, revision: str) -> HistoryEntry | None:
        return entry_for_hash(self.history, variant, revision)

    def entry_number(self, number: int) -> HistoryEntry | None:
        return next((e for e in self.history if e.revision == number), None)

    def label(self, variant: str, revision: str) -> str:
        """`revision 3 (version 2, 1a2b3c4d5e)` for messages."""
        entry = self.entry(variant, revision)
        if entry is None:
            return f"revision {revision}"
        return f"revision {entry.revision} (version {entry.model_version}, {revision})"

    # --- writing -------------------------------------------------------------------------------

    def event(self, reason: str, message: str, *, warning: bool = False) -> None:
        self.events.append(PlanEvent(reason=reason, message=message, warning=warning))

    def finish(
        self, variant: str, revision: str, outcome: RevisionOutcome, message: str | None = None
    ) -> None:
        self.history = finish_revision(
            self.history, variant, revision, outcome, now=self.now, message=message
        )

    def leave_traffic(self, variant: str, revision: str | None) -> None:
        """A revision stops taking traffic: its pods go after scaleDownDelaySeconds."""
        if revision is None:
            return
        delay = timedelta(seconds=self.spec.rollout.scale_down_delay_seconds)
        self.scale_down_at.setdefault((variant, revision), stamp(self.now + delay))

    def enter_traffic(self, variant: str, revision: str) -> None:
        self.scale_down_at.pop((variant, revision), None)

    def clear_rollout(self) -> None:
        self.rollout_variant = self.canary_revision = None
        self.step_index = None
        self.step_started_at = self.rollout_started_at = None
        self.canary_weight = 0
        self.aborted = False
        self.pause = None

    def start_step(self, index: int) -> None:
        self.step_index = index
        self.step_started_at = stamp(self.now)
        self.pause = None
