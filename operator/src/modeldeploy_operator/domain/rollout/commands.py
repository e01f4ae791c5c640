"""Manual commands (the modeldeploy.io/command annotation): the wire format lives in the contract
package (modeldeploy_contract.commands), which the kubectl plugin shares; re-exported here."""

from __future__ import annotations

from modeldeploy_contract.commands import (
    ACTIONS,
    COMMAND_ANNOTATION,
    MAX_ID_LENGTH,
    Command,
    InvalidCommand,
    command_patch,
    is_pending,
    parse_command,
    parse_command_text,
)

__all__ = [
    "ACTIONS",
    "COMMAND_ANNOTATION",
    "MAX_ID_LENGTH",
    "Command",
    "InvalidCommand",
    "command_patch",
    "is_pending",
    "parse_command",
    "parse_command_text",
]
