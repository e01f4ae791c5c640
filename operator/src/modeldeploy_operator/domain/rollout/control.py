"""Carrying out one manual command on the draft, before the step machine runs.

Each command is handled once (status.lastCommand.id) and ends as Applied, Ignored (nothing to do: an
abort with no rollout in progress is not an error, argo-rollouts#1292) or Rejected (a Warning Event
names the problem; nothing else changes).
"""

from __future__ import annotations

from collections.abc import Sequence

from modeldeploy_operator.domain.revision import ResolvedVariant
from modeldeploy_operator.domain.rollout.commands import Command, InvalidCommand, is_pending
from modeldeploy_operator.domain.rollout.cursor import Cursor, stamp
from modeldeploy_operator.domain.rollout.evaluation import reset_failures
from modeldeploy_operator.domain.rollout.history import previous_promoted, reopen, set_outcome
from modeldeploy_operator.domain.rollout.state import Draft
from modeldeploy_operator.domain.rollout.steps import abort
from modeldeploy_operator.domain.status_model import CommandResult, CommandStatus, HistoryEntry, PauseStatus

_Outcome = tuple[CommandResult, str]


def pinned_entry(draft: Draft, variant: ResolvedVariant) -> HistoryEntry | None:
    """The history entry a rollback pinned for this variant, while the spec still names the revision
    it named at the time of the rollback."""
    if draft.pinned_revision is None or draft.pinned_spec_revision != variant.revision:
        return None
    entry = draft.entry_number(draft.pinned_revision)
    return entry if entry is not None and entry.variant == variant.name else None


def _aborted_variant(draft: Draft, variants: Sequence[ResolvedVariant]) -> ResolvedVariant | None:
    """The variant whose rollout was aborted and whose spec still names the aborted revision."""
    if not draft.aborted or draft.canary_revision is None:
        return None
    return next(
        (v for v in variants if v.name == draft.rollout_variant and v.revision == draft.canary_revision), None
    )


def _reopen_aborted(draft: Draft, variant: ResolvedVariant) -> None:
    entry = draft.entry(variant.name, variant.revision)
    if entry is not None:
        draft.history = reopen(draft.history, entry.revision)
    draft.enter_traffic(variant.name, variant.revision)
    draft.cursor = draft.cursor.reopen(draft.now)
    draft.degraded = None


def _promote(draft: Draft, command: Command, variants: Sequence[ResolvedVariant]) -> _Outcome:
    aborted = _aborted_variant(draft, variants)
    if not draft.active() and aborted is None:
        return "Ignored", "no rollout in progress: nothing to promote"
    if aborted is not None:
        _reopen_aborted(draft, aborted)
    if draft.analysis is not None:
        draft.analysis = draft.analysis.model_copy(update={"checks": reset_failures(draft.analysis.checks)})
    draft.cursor = draft.cursor.restart_step(len(draft.spec.rollout.steps), draft.now)
    draft.promote_full = command.full
    how = "all traffic as soon as it has a ready pod" if command.full else "once all its pods are ready"
    message = f"promote: remaining steps skipped; {draft.canary_revision} takes {how}"
    draft.event("PromoteRequested", message)
    return "Applied", message


def _abort(draft: Draft) -> _Outcome:
    if not draft.active():
        return "Ignored", "no rollout in progress: nothing to abort (the stable revision keeps serving)"
    abort(draft, "RolloutAborted", "aborted by a user (kubectl modeldeploy abort)", by_user=True)
    return "Applied", "rollout aborted: all traffic back on the stable revision"


def _pause(draft: Draft) -> _Outcome:
    if not draft.active():
        return "Ignored", "no rollout in progress: nothing to pause"
    if draft.pause is not None and draft.pause.reason != "Step":
        return "Ignored", f"the rollout is already paused ({draft.pause.reason})"
    draft.cursor = draft.cursor.paused(PauseStatus(reason="Manual", since=stamp(draft.now)))
    draft.event("RolloutPaused", "paused by a user: the rollout holds until resumed (analysis goes on)")
    return "Applied", "rollout paused"


def _resume(draft: Draft, variants: Sequence[ResolvedVariant]) -> _Outcome:
    aborted = _aborted_variant(draft, variants)
    if aborted is not None:
        _reopen_aborted(draft, aborted)
        draft.analysis = None
        draft.cursor = Cursor.start(aborted.name, aborted.revision, draft.now)  # a retry, from step 1
        message = f"retrying the aborted rollout of {draft.label(aborted.name, aborted.revision)} from step 1"
    elif not draft.active() or draft.pause is None:
        return "Ignored", "no paused rollout: nothing to resume"
    elif draft.pause.reason == "Step":
        index = draft.step_index or 0
        draft.cursor = draft.cursor.advance(draft.now)
        message = f"pause step {index + 1} ended by a user"
    elif draft.pause.reason == "Spec":
        return "Ignored", "spec.paused is true: set it to false to resume"
    else:
        if draft.pause.reason == "Failure" and draft.analysis is not None:
            draft.analysis = draft.analysis.model_copy(
                update={"checks": reset_failures(draft.analysis.checks)}
            )
        # the step's clock (and deadline) starts again
        draft.cursor = draft.cursor.restart_step(draft.step_index or 0, draft.now)
        message = "rollout resumed at its current step"
    draft.event("RolloutResumed", message)
    return "Applied", message


def _rollback(draft: Draft, command: Command, variants: Sequence[ResolvedVariant]) -> _Outcome:
    by_name = {v.name: v for v in variants}
    if command.revision is not None:
        entry = draft.entry_number(command.revision)
    else:
        main = draft.rollout_variant or max(variants, key=lambda v: v.weight).name
        entry = previous_promoted(draft.history, main, draft.stable.get(main))
    if entry is None:
        known = ", ".join(str(e.revision) for e in draft.history) or "none"
        wanted = command.revision if command.revision is not None else "(previous promoted)"
        return "Rejected", f"revision {wanted} is not in status.history (known: {known})"
    variant = by_name.get(entry.variant)
    if variant is None:
        return (
            "Rejected",
            f"revision {entry.revision} belongs to variant {entry.variant}, no longer in the spec",
        )
    if entry.hash == variant.revision:
        if pinned_entry(draft, variant) is not None:
            draft.pinned_revision = draft.pinned_spec_revision = None
            message = (
                f"rollback pin removed: variant {variant.name} serves the spec's revision {entry.revision}"
            )
            draft.event("RolledBack", message)
            return "Applied", message
        return (
            "Ignored",
            f"revision {entry.revision} is the spec's revision already (resume retries an abort)",
        )
    if draft.observed_of(variant.name, entry.hash) is None:
        return "Rejected", f"revision {entry.revision} cannot be restored: its Deployment no longer exists"
    reason = f"rolled back to revision {entry.revision} by a user"
    if draft.rollout_variant == variant.name and draft.canary_revision is not None:
        if draft.active():
            draft.finish(variant.name, draft.canary_revision, "RolledBack", reason)
            draft.leave_traffic(variant.name, draft.canary_revision)
        draft.cursor = draft.cursor.clear()
    spec_entry = draft.entry(variant.name, variant.revision)
    if spec_entry is not None and spec_entry.outcome in ("Promoted", "Progressing"):
        draft.history = set_outcome(
            draft.history, spec_entry.revision, "RolledBack", now=draft.now, message=reason
        )
    draft.pinned_revision = entry.revision
    draft.pinned_spec_revision = variant.revision
    message = (
        f"variant {variant.name} rolled back to revision {entry.revision} (version {entry.model_version}); "
        "it serves until the spec names another revision"
    )
    draft.event("RolledBack", message)
    return "Applied", message


def apply_command(
    draft: Draft, command: Command | InvalidCommand | None, variants: Sequence[ResolvedVariant]
) -> None:
    """Carry out `command` unless it was handled before; record the outcome in draft.last_command."""
    if command is None or not is_pending(command, draft.last_command):
        return
    result: CommandResult
    revision = None
    if isinstance(command, InvalidCommand):
        result, message = "Rejected", f"invalid command: {command.problem}"
    else:
        revision = command.revision
        if command.action == "promote":
            result, message = _promote(draft, command, variants)
        elif command.action == "abort":
            result, message = _abort(draft)
        elif command.action == "pause":
            result, message = _pause(draft)
        elif command.action == "resume":
            result, message = _resume(draft, variants)
        else:
            result, message = _rollback(draft, command, variants)
    if result == "Rejected":
        draft.event("CommandRejected", f"{command.action}: {message}", warning=True)
    elif result == "Ignored":
        draft.event("CommandIgnored", f"{command.action}: {message}")
    draft.last_command = CommandStatus(
        id=command.id,
        action=command.action,
        revision=revision,
        result=result,
        message=message[:4096],
        time=stamp(draft.now),
    )
