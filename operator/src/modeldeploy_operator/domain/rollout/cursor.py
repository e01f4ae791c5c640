"""Where the one Canary/BlueGreen rollout stands: a frozen value changed only by named transitions.

Before, the planner's mutable draft held these eight fields and several places reset them by hand
(an abort cleared four of them, a promotion six, a retry five ...), which is how a field gets
forgotten. Now each way a rollout moves is one method returning a new `Cursor` (as kopf's
`HandlerState.with_outcome` does for handler progress), and the status is written from it.

    Cursor() --start--> at step 0 --set_weight / advance / restart_step / pause / resume--> ...
        ... --abort--> aborted (weight 0, no step; the variant and revision stay, for status)
        ... --promote / clear--> Cursor()
    aborted --retry (resume) / start--> at step 0;  aborted --reopen (promote --full)--> not aborted
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

from modeldeploy_operator.domain.status_model import ModelDeploymentStatus, PauseStatus


def stamp(moment: datetime) -> datetime:
    """Times in status have whole seconds, so a status read back compares equal to the one written."""
    return moment.replace(microsecond=0)


@dataclass(frozen=True)
class Cursor:
    variant: str | None = None
    """The variant rolling out (one rollout at a time across variants)."""
    revision: str | None = None
    """The revision rolling out (canary or preview); after an abort, the aborted one."""
    step_index: int | None = None
    step_started_at: datetime | None = None
    started_at: datetime | None = None
    weight: int = 0
    """The new revision's share of its variant's traffic, percent."""
    aborted: bool = False
    pause: PauseStatus | None = None

    @classmethod
    def from_status(cls, status: ModelDeploymentStatus) -> Cursor:
        return cls(
            variant=status.rollout_variant,
            revision=status.canary_revision,
            step_index=status.current_step_index,
            step_started_at=status.step_started_at,
            started_at=status.rollout_started_at,
            weight=status.canary_weight,
            aborted=status.aborted,
            pause=status.pause,
        )

    @property
    def active(self) -> bool:
        """A rollout is under way (not aborted)."""
        return self.variant is not None and self.revision is not None and not self.aborted

    # --- transitions -----------------------------------------------------------------------------

    @classmethod
    def start(cls, variant: str, revision: str, now: datetime) -> Cursor:
        """A rollout of `revision` begins at step 0 with no traffic (also a retry of an aborted one)."""
        return cls(
            variant=variant,
            revision=revision,
            step_index=0,
            step_started_at=stamp(now),
            started_at=stamp(now),
        )

    def restart_step(self, index: int, now: datetime) -> Cursor:
        """Step `index` (re)starts now: its clock and deadline count from here; any pause ends."""
        return replace(self, step_index=index, step_started_at=stamp(now), pause=None)

    def advance(self, now: datetime) -> Cursor:
        """The current step completed: the next one starts now."""
        return self.restart_step((self.step_index or 0) + 1, now)

    def set_weight(self, weight: int) -> Cursor:
        return replace(self, weight=weight)

    def paused(self, pause: PauseStatus) -> Cursor:
        return replace(self, pause=pause)

    def resume(self, now: datetime) -> Cursor:
        """A hold ends without completing the step (spec.paused back to false): its clock restarts."""
        return replace(self, pause=None, step_started_at=stamp(now))

    def abort(self) -> Cursor:
        """Weight back to 0, no step, no pause; variant and revision stay (status names the aborted one)."""
        return replace(self, weight=0, aborted=True, pause=None, step_index=None, step_started_at=None)

    def held_aborted(self, variant: str, revision: str) -> Cursor:
        """No rollout runs, and the spec still names a revision aborted earlier: point at it."""
        return replace(self.abort(), variant=variant, revision=revision)

    def reopen(self, now: datetime) -> Cursor:
        """An aborted rollout goes on where promote --full takes it (the caller picks the step)."""
        return replace(self, aborted=False, started_at=self.started_at or stamp(now))

    def clear(self) -> Cursor:
        """No rollout (promoted, superseded, rolled back)."""
        return Cursor()

    def promote(self) -> Cursor:
        return self.clear()
