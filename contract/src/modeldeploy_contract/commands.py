"""Manual commands: how `kubectl modeldeploy promote|abort|pause|resume|rollback` reach the operator.

The plugin writes one annotation on the ModelDeployment with a merge patch (users need only `patch` on
modeldeployments, not on its status):

    modeldeploy.io/command: {"id": "<uuid>", "action": "rollback", "revision": 3}

The planner handles a command once: status.lastCommand records its id, so a reconcile that sees the
same annotation again (level-triggered) does nothing, and a newer command simply overwrites the
annotation. A malformed command becomes an `InvalidCommand`: a Warning Event names the problem and
nothing else changes.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, get_args

from modeldeploy_contract.resource import GROUP
from modeldeploy_contract.status import CommandAction, CommandStatus

COMMAND_ANNOTATION = f"{GROUP}/command"
ACTIONS: tuple[str, ...] = get_args(CommandAction)
MAX_ID_LENGTH = 64


@dataclass(frozen=True)
class Command:
    id: str
    action: CommandAction
    revision: int | None = None
    """Target revision number of a rollback; None means the previous promoted revision."""
    full: bool = False
    """promote --full: switch all traffic at once when the canary has ready pods."""


@dataclass(frozen=True)
class InvalidCommand:
    id: str
    """The command's id, or a digest of the annotation when it has none (so it is reported once)."""
    action: str
    problem: str


def _digest(text: str) -> str:
    return "sha256-" + hashlib.sha256(text.encode()).hexdigest()[:16]


def _invalid(raw: str, payload: Mapping[str, Any] | None, problem: str) -> InvalidCommand:
    given_id = payload.get("id") if payload else None
    command_id = given_id if isinstance(given_id, str) and 0 < len(given_id) <= MAX_ID_LENGTH else None
    action = payload.get("action") if payload else None
    return InvalidCommand(
        id=command_id or _digest(raw),
        action=action[:MAX_ID_LENGTH] if isinstance(action, str) and action else "unknown",
        problem=problem,
    )


def parse_command_text(raw: str) -> Command | InvalidCommand:
    """The command in one annotation value (JSON), or what is wrong with it."""
    try:
        payload = json.loads(raw)
    except ValueError:
        return _invalid(raw, None, f"{COMMAND_ANNOTATION} is not JSON")
    if not isinstance(payload, dict):
        return _invalid(raw, None, f"{COMMAND_ANNOTATION} must be a JSON object")
    command_id, action = payload.get("id"), payload.get("action")
    revision, full = payload.get("revision"), payload.get("full", False)
    problem = None
    if not isinstance(command_id, str) or not 0 < len(command_id) <= MAX_ID_LENGTH:
        problem = f"id must be a string of 1 to {MAX_ID_LENGTH} characters"
    elif action not in ACTIONS:
        problem = f"action {action!r} is not one of {', '.join(ACTIONS)}"
    elif revision is not None and (
        action != "rollback" or isinstance(revision, bool) or not isinstance(revision, int) or revision < 1
    ):
        problem = "revision must be a positive integer, and only for rollback"
    elif not isinstance(full, bool) or (full and action != "promote"):
        problem = "full must be a boolean, and only for promote"
    unknown = set(payload) - {"id", "action", "revision", "full"}
    if problem is None and unknown:
        problem = f"unknown field(s): {', '.join(sorted(unknown))}"
    if problem is not None:
        return _invalid(raw, payload, problem)
    assert isinstance(command_id, str)  # checked above
    assert action in ACTIONS
    return Command(id=command_id, action=action, revision=revision, full=full)


def parse_command(annotations: Mapping[str, str] | None) -> Command | InvalidCommand | None:
    """The command annotated on the object, if any (metadata.annotations in, typed command out)."""
    raw = (annotations or {}).get(COMMAND_ANNOTATION)
    if raw is None or not raw.strip():
        return None
    return parse_command_text(raw)


def is_pending(command: Command | InvalidCommand | None, last: CommandStatus | None) -> bool:
    """Whether `command` still awaits handling: the one test of "handled" (status.lastCommand.id), used
    by the planner to act once and by the operator's watch to reconcile at once when a command arrives."""
    return command is not None and (last is None or last.id != command.id)


def command_patch(
    action: CommandAction, *, revision: int | None = None, full: bool = False, command_id: str | None = None
) -> tuple[str, dict[str, Any]]:
    """(id, merge patch) that asks the operator to carry out one command: what the plugin sends."""
    command_id = command_id or str(uuid.uuid4())
    payload: dict[str, Any] = {"id": command_id, "action": action}
    if revision is not None:
        payload["revision"] = revision
    if full:
        payload["full"] = True
    parsed = parse_command_text(json.dumps(payload))
    if isinstance(parsed, InvalidCommand):
        raise ValueError(parsed.problem)
    return command_id, {"metadata": {"annotations": {COMMAND_ANNOTATION: json.dumps(payload)}}}
