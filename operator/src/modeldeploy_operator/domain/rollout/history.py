"""History edits the rollout needs beyond recording and finishing a revision (domain/history.py)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from modeldeploy_operator.domain.history import with_outcome
from modeldeploy_operator.domain.status_model import HistoryEntry, RevisionOutcome


def set_outcome(
    history: Sequence[HistoryEntry],
    number: int,
    outcome: RevisionOutcome,
    *,
    now: datetime,
    message: str | None = None,
) -> tuple[HistoryEntry, ...]:
    """History with entry `number` given an outcome, whatever it had (a promoted revision rolled back)."""
    return with_outcome(history, lambda e: e.revision == number, outcome, now=now, message=message)


def reopen(history: Sequence[HistoryEntry], number: int) -> tuple[HistoryEntry, ...]:
    """History with entry `number` in progress again (an aborted rollout retried or force-promoted)."""
    return tuple(
        e.model_copy(update={"outcome": "Progressing", "finished_at": None, "message": None})
        if e.revision == number
        else e
        for e in history
    )


def previous_promoted(
    history: Sequence[HistoryEntry], variant: str, serving: str | None
) -> HistoryEntry | None:
    """The newest promoted entry of a variant other than the serving revision: `rollback`'s default."""
    candidates = [
        e for e in history if e.variant == variant and e.hash != serving and e.outcome == "Promoted"
    ]
    return max(candidates, key=lambda e: e.revision) if candidates else None
