"""The planner's working copy of the rollout state, read from the previous status and written back.

One `Draft` lives for one `plan()` call: commands and the step machine change it, the status view reads
it. Nothing here survives the call except through the status it produces (restart safety).

Where the rollout stands is `draft.cursor`, a frozen `Cursor` (cursor.py) that changes only by its
named transitions (start, advance, set_weight, paused, resume, abort, promote, ...); the draft exposes
its fields read-only. The rest (history, scale-down times, analysis, events) is still edited in place
through the methods below.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from modeldeploy_operator.domain.history import entry_for_hash, finish_revision
from modeldeploy_operator.domain.observed import ObservedDeployment
from modeldeploy_operator.domain.rollout.cursor import Cursor, stamp
from modeldeploy_operator.domain.rollout.model import PlanEvent
from modeldeploy_operator.domain.spec import ModelDeploymentSpec
from modeldeploy_operator.domain.status_model import (
    AnalysisStatus,
    CommandStatus,
    HistoryEntry,
    ModelDeploymentStatus,
    PauseStatus,
    PreflightStatus,
    RevisionOutcome,
)


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
    cursor: Cursor = field(default_factory=Cursor)
    """Where the rollout stands: changed only by its named transitions (cursor.py)."""
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
    preflight: dict[tuple[str, str], PreflightStatus] = field(default_factory=dict)
    """(variant, revision) -> the preflight result the reconciler observed (rollout/preflight.py)."""

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
            cursor=Cursor.from_status(previous),
            analysis=previous.analysis,
            pinned_revision=previous.pinned_revision,
            pinned_spec_revision=previous.pinned_spec_revision,
            last_command=previous.last_command,
        )

    # --- reading -------------------------------------------------------------------------------

    def active(self) -> bool:
        """A Canary or BlueGreen rollout is under way (not aborted)."""
        return self.cursor.active

    # The cursor's fields, read-only: a change goes through one of the cursor's transitions.
    @property
    def rollout_variant(self) -> str | None:
        return self.cursor.variant

    @property
    def canary_revision(self) -> str | None:
        return self.cursor.revision

    @property
    def step_index(self) -> int | None:
        return self.cursor.step_index

    @property
    def step_started_at(self) -> datetime | None:
        return self.cursor.step_started_at

    @property
    def rollout_started_at(self) -> datetime | None:
        return self.cursor.started_at

    @property
    def canary_weight(self) -> int:
        return self.cursor.weight

    @property
    def aborted(self) -> bool:
        return self.cursor.aborted

    @property
    def pause(self) -> PauseStatus | None:
        return self.cursor.pause

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
