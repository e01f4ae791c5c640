"""Status the rollout planner does not write: an invalid spec, and a reconcile error.

The status of a valid spec (phases, conditions, per-variant revisions, history) comes from the rollout
planner, `modeldeploy_operator.domain.rollout.plan()` (see docs/rollouts.md); the reconciler uses these
helpers when it cannot get that far: a spec that fails the semantic checks, or an API error.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from modeldeploy_contract.commands import Command, InvalidCommand, is_pending

from .conditions import set_condition
from .status_model import DEGRADED, PROGRESSING, READY, CommandStatus, LastError, ModelDeploymentStatus


def status_for_invalid_spec(
    messages: Sequence[str],
    *,
    now: datetime,
    generation: int | None = None,
    previous: ModelDeploymentStatus | None = None,
) -> ModelDeploymentStatus:
    """Status for a spec that passed the schema but not the semantic checks: Failed, and why.

    Everything already running keeps running (and keeps its per-variant status): an invalid edit
    must not take a working model down.
    """
    previous = previous or ModelDeploymentStatus()
    message = "; ".join(messages)
    conditions = previous.conditions
    if not previous.variants:
        conditions = set_condition(
            conditions, READY, "False", "InvalidSpec", message, now=now, observed_generation=generation
        )
    conditions = set_condition(
        conditions, PROGRESSING, "False", "InvalidSpec", message, now=now, observed_generation=generation
    )
    conditions = set_condition(
        conditions, DEGRADED, "True", "InvalidSpec", message, now=now, observed_generation=generation
    )
    return with_error(
        previous.model_copy(
            update={
                "observed_generation": generation,
                "phase": "Failed",
                "message": message,
                "conditions": conditions,
            }
        ),
        "InvalidSpec",
        message,
        now=now,
    )


def with_error(
    status: ModelDeploymentStatus, reason: str, message: str, *, now: datetime
) -> ModelDeploymentStatus:
    """The status with lastError set (reconcile failures the handlers meet)."""
    error = LastError(reason=reason, message=message, time=now.replace(microsecond=0))
    return status.model_copy(update={"last_error": error})


def with_command_refused(
    status: ModelDeploymentStatus, command: Command | InvalidCommand | None, reason: str, *, now: datetime
) -> ModelDeploymentStatus:
    """The status with a waiting manual command answered `Rejected` because of `reason` (the spec is
    invalid, so the planner that carries commands out cannot run): the plugin gets an answer, not a
    timeout. A command already answered, or none, leaves the status as it is."""
    if command is None or not is_pending(command, status.last_command):
        return status
    answer = CommandStatus(
        id=command.id,
        action=command.action,
        revision=command.revision if isinstance(command, Command) else None,
        result="Rejected",
        message=reason[:4096],
        time=now.replace(microsecond=0),
    )
    return status.model_copy(update={"last_command": answer})
