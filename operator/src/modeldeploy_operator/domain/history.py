"""Revision history: a numbered record of every revision each variant has rolled out."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import datetime

from modeldeploy_contract.redact import redact_uri

from .revision import ResolvedVariant
from .status_model import HistoryEntry, RevisionOutcome

MAX_LOADED_DIGESTS = 4


def latest_entry(history: Sequence[HistoryEntry], variant: str) -> HistoryEntry | None:
    """The newest entry of a variant, or None."""
    entries = [e for e in history if e.variant == variant]
    return max(entries, key=lambda e: e.revision) if entries else None


def entry_for_hash(history: Sequence[HistoryEntry], variant: str, revision_hash: str) -> HistoryEntry | None:
    """The newest entry of a variant with that revision hash (a rollback re-adds an old hash)."""
    entries = [e for e in history if e.variant == variant and e.hash == revision_hash]
    return max(entries, key=lambda e: e.revision) if entries else None


def record_revision(
    history: Sequence[HistoryEntry], variant: ResolvedVariant, *, now: datetime, limit: int
) -> tuple[HistoryEntry, ...]:
    """History with the variant's revision recorded, if it is not already its newest entry.

    A new entry supersedes the variant's unfinished one; numbers grow across all variants, so a
    revision number names one entry for `rollback --to N`.
    """
    latest = latest_entry(history, variant.name)
    if latest is not None and latest.hash == variant.revision:
        return tuple(history)
    number = max((e.revision for e in history), default=0) + 1
    stamped = now.replace(microsecond=0)
    superseded = tuple(
        e.model_copy(update={"outcome": "Superseded", "finished_at": stamped})
        if e.variant == variant.name and e.outcome == "Progressing"
        else e
        for e in history
    )
    entry = HistoryEntry.model_validate(
        {
            "revision": number,
            "hash": variant.revision,
            "variant": variant.name,
            "modelVersion": variant.model.version,
            "modelURI": redact_uri(variant.model.uri),  # status is widely readable: no credentials
            "sha256": variant.model.sha256,
            "createdAt": stamped,
            "outcome": "Progressing",
        }
    )
    return trim_history((*superseded, entry), limit)


def with_outcome(
    history: Sequence[HistoryEntry],
    matches: Callable[[HistoryEntry], bool],
    outcome: RevisionOutcome,
    *,
    now: datetime,
    message: str | None = None,
) -> tuple[HistoryEntry, ...]:
    """History with the entries `matches` selects finished with `outcome` at `now`."""
    finished = {"outcome": outcome, "finished_at": now.replace(microsecond=0), "message": message}
    return tuple(e.model_copy(update=finished) if matches(e) else e for e in history)


def finish_revision(
    history: Sequence[HistoryEntry],
    variant: str,
    revision_hash: str,
    outcome: RevisionOutcome,
    *,
    now: datetime,
    message: str | None = None,
) -> tuple[HistoryEntry, ...]:
    """History with the variant's unfinished entry for that hash given its outcome."""
    return with_outcome(
        history,
        lambda e: e.variant == variant and e.hash == revision_hash and e.outcome == "Progressing",
        outcome,
        now=now,
        message=message,
    )


def trim_history(history: Sequence[HistoryEntry], limit: int) -> tuple[HistoryEntry, ...]:
    """The newest `limit` entries, oldest first."""
    ordered = sorted(history, key=lambda e: e.revision)
    return tuple(ordered[-limit:]) if limit > 0 else ()


def with_loaded_digests(
    history: Sequence[HistoryEntry], variant: str, revision_hash: str, digests: Iterable[str]
) -> tuple[HistoryEntry, ...]:
    """History with the digests the revision's servers reported loading added to its newest entry
    (sorted, at most MAX_LOADED_DIGESTS: the first ones seen stay); unchanged when nothing is new."""
    entry = entry_for_hash(history, variant, revision_hash)
    seen = set(digests)
    if entry is None or not seen:
        return tuple(history)
    known = tuple(entry.loaded_sha256 or ())
    new = sorted(seen - set(known))
    if not new or len(known) >= MAX_LOADED_DIGESTS:
        return tuple(history)
    merged = tuple(sorted((*known, *new[: MAX_LOADED_DIGESTS - len(known)])))
    return tuple(e.model_copy(update={"loaded_sha256": merged}) if e is entry else e for e in history)
