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
    """(variant, revision) -> when a revision that left traffic loses its pods (or all but its
    rollback window's)."""
    warm_until: dict[tuple[str, str], datetime] = field(default_factory=dict)
    """(variant, revision) -> end of the rollback window of a revision that stopped serving: until
    then it keeps spec.rollout.rollbackWindow.replicas pods, so a rollback to it needs no cold start."""
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
        warm = {
            (v.name, r.revision): r.warm_until
            for v in previous.variants
            for r in v.revisions
            if r.warm_until is not None
        }
        return cls(
            spec=spec,
            now=now,
            observed=observed,
            previous=previous,
            history=previous.history,
            stable={v.name: v.revision for v in previous.variants if v.revision},
            scale_down_at=scale_down,
            warm_until=warm,
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

    def leave_traffic(self, variant: str, revision: str | None, *, was_serving: bool = False) -> None:
        """A revision stops taking traffic: its pods go after scaleDownDelaySeconds. One that was
        serving (the stable a promotion replaced, the revision a rollback replaced) opens a rollback
        window: it keeps rollbackWindow.replicas pods until the window ends, so going back to it is a
        switch of the router table, not a cold start. A canary that never served gets no window."""
        if revision is None:
            return
        rollout = self.spec.rollout
        key = (variant, revision)
        self.scale_down_at.setdefault(
            key, stamp(self.now + timedelta(seconds=rollout.scale_down_delay_seconds))
        )
        window = rollout.rollback_window
        if was_serving and window.replicas > 0 and window.seconds > rollout.scale_down_delay_seconds:
            self.warm_until.setdefault(key, stamp(self.now + timedelta(seconds=window.seconds)))

    def enter_traffic(self, variant: str, revision: str) -> None:
        self.scale_down_at.pop((variant, revision), None)
        self.warm_until.pop((variant, revision), None)

    def leaving_replicas(self, variant: str, revision: str, current: int) -> int:
        """Pods a revision out of traffic keeps now, given the `current` replicas of its Deployment:
        all of them until its scale-down time, then its rollback window's (never more than it has)
        until the window ends, then none."""
        key = (variant, revision)
        due, warm = self.scale_down_at.get(key), self.warm_until.get(key)
        if due is not None and self.now < due:
            return current
        if warm is not None and self.now < warm:
            return min(current, self.spec.rollout.rollback_window.replicas)
        return 0
