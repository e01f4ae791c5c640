"""History edits the rollout needs beyond recording and finishing a revision (domain/history.py)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from modeldeploy_contract.status import previous_promoted
from modeldeploy_operator.domain.history import with_outcome
from modeldeploy_operator.domain.status_model import HistoryEntry, RevisionOutcome

__all__ = ["previous_promoted", "reopen", "set_outcome"]


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
