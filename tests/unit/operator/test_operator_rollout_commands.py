"""The command annotation: built by the plugin, parsed and validated by the planner."""

from __future__ import annotations

import json

import pytest

from modeldeploy_operator.domain.rollout.commands import (
    COMMAND_ANNOTATION,
    Command,
    InvalidCommand,
    command_patch,
    parse_command,
)


def test_command_patch_round_trips() -> None:
    command_id, patch = command_patch("rollback", revision=3, command_id="abc")
    annotations = patch["metadata"]["annotations"]
    assert json.loads(annotations[COMMAND_ANNOTATION]) == {"id": "abc", "action": "rollback", "revision": 3}
    assert parse_command(annotations) == Command(id="abc", action="rollback", revision=3)
    assert command_id == "abc"


def test_fresh_ids() -> None:
    assert command_patch("abort")[0] != command_patch("abort")[0]


def test_no_annotation_is_no_command() -> None:
    assert parse_command({}) is None
    assert parse_command(None) is None
    assert parse_command({COMMAND_ANNOTATION: " "}) is None


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        ("not json", "not JSON"),
        ("[1]", "JSON object"),
        ('{"action": "promote"}', "id must be"),
        ('{"id": "1", "action": "explode"}', "is not one of"),
        ('{"id": "1", "action": "promote", "revision": 2}', "only for rollback"),
        ('{"id": "1", "action": "rollback", "revision": 0}', "positive integer"),
        ('{"id": "1", "action": "rollback", "revision": true}', "positive integer"),
        ('{"id": "1", "action": "abort", "full": true}', "only for promote"),
        ('{"id": "1", "action": "abort", "force": 1}', "unknown field"),
    ],
)
def test_invalid_commands_name_the_problem(raw: str, problem: str) -> None:
    parsed = parse_command({COMMAND_ANNOTATION: raw})
    assert isinstance(parsed, InvalidCommand)
    assert problem in parsed.problem
    assert parsed.id  # a digest when the id is missing, so it is reported once


def test_invalid_command_building_raises() -> None:
    with pytest.raises(ValueError, match="only for promote"):
        command_patch("abort", full=True)


def test_is_pending_is_the_one_test_of_handled() -> None:
    import datetime as dt

    from modeldeploy_operator.domain.rollout.commands import is_pending
    from modeldeploy_operator.domain.status_model import CommandStatus

    def last(command_id: str) -> CommandStatus:
        when = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
        return CommandStatus(id=command_id, action="abort", result="Applied", time=when)

    command = Command(id="abc", action="abort")
    assert is_pending(command, None)
    assert is_pending(command, last("older"))
    assert not is_pending(command, last("abc"))
    assert not is_pending(None, None)
    invalid = parse_command({COMMAND_ANNOTATION: "{"})
    assert isinstance(invalid, InvalidCommand)
    assert is_pending(invalid, None)
    assert not is_pending(invalid, last(invalid.id))


def test_the_operator_and_the_plugin_share_one_wire_format() -> None:
    import modeldeploy_contract.commands as shared

    assert command_patch is shared.command_patch
    assert parse_command is shared.parse_command
    assert COMMAND_ANNOTATION == shared.COMMAND_ANNOTATION == "modeldeploy.io/command"
