"""kubectl-modeldeploy against a fake cluster: rendering, command annotations, clear errors."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest

from modeldeploy_operator.cli.client import NotFoundError
from modeldeploy_operator.cli.main import CommandError, run
from modeldeploy_operator.domain.rollout import parse_command
from modeldeploy_operator.domain.rollout.commands import COMMAND_ANNOTATION

from rollout_sim import Sim, good, rollout_spec


class FakeCluster:
    """One ModelDeployment; a patch of the command annotation is 'handled' by a fake operator."""

    def __init__(self, sim: Sim, *, answer: bool = True) -> None:
        self.sim, self.answer = sim, answer
        self.patches: list[dict[str, Any]] = []

    def body(self) -> dict[str, Any]:
        assert self.sim.status is not None
        return {
            "metadata": {"name": "churn", "namespace": "ml"},
            "spec": self.sim.spec.model_dump(by_alias=True, exclude_none=True, mode="json"),
            "status": self.sim.status.to_patch(),
        }

    def get(self, namespace: str, name: str) -> dict[str, Any]:
        if name != "churn":
            raise NotFoundError(f'modeldeployment "{name}" not found in namespace "{namespace}"')
        return self.body()

    def patch(self, namespace: str, name: str, body: dict[str, Any]) -> None:
        self.patches.append(body)
        if self.answer:
            self.sim.step(1, command=parse_command(body["metadata"]["annotations"]))

    def events(self, namespace: str, name: str) -> list[dict[str, Any]]:
        return [
            {
                "lastTimestamp": "2026-01-02T03:05:00Z",
                "type": "Normal",
                "reason": "RolloutStarted",
                "message": "go",
            }
        ]


def _mid_rollout() -> Sim:
    sim = Sim(rollout_spec("1"))
    sim.step()
    sim.step(1)
    sim.spec = rollout_spec("2")
    sim.step()
    sim.step(1, good())
    return sim


def _run(cluster: FakeCluster, *argv: str) -> str:
    out = io.StringIO()
    assert run(["-n", "ml", *argv], cluster=cluster, out=out, sleep=lambda _: None) == 0
    return out.getvalue()


def test_status_shows_steps_weights_checks_and_events() -> None:
    text = _run(FakeCluster(_mid_rollout()), "status", "churn")
    assert "Phase:       Paused" in text
    assert "Stable:      revision 1" in text
    assert "Canary:      revision 2" in text
    assert "weight 20%" in text
    assert "✓ 1. setWeight 20%" in text
    assert "▶ 2. pause 1m" in text
    assert "errors" in text
    assert "Pass" in text
    assert "0.01" in text
    assert "canary" in text
    assert "20%" in text
    assert "RolloutStarted" in text


def test_history_lists_revisions_and_outcomes() -> None:
    text = _run(FakeCluster(_mid_rollout()), "history", "churn")
    lines = text.splitlines()
    assert lines[0].split()[:3] == ["REVISION", "VARIANT", "VERSION"]
    assert "Promoted" in lines[1]
    assert "s3://models/churn/v1" in lines[1]
    assert "Progressing" in lines[2]


@pytest.mark.parametrize(
    ("argv", "action"),
    [(["promote", "churn"], "promote"), (["abort", "churn"], "abort"), (["pause", "churn"], "pause")],
)
def test_commands_write_the_annotation_and_report_the_answer(argv: list[str], action: str) -> None:
    cluster = FakeCluster(_mid_rollout())
    text = _run(cluster, *argv)
    (patch,) = cluster.patches
    payload = json.loads(patch["metadata"]["annotations"][COMMAND_ANNOTATION])
    assert payload["action"] == action
    assert f"churn: {action} applied" in text


def test_promote_full_and_rollback_to() -> None:
    cluster = FakeCluster(_mid_rollout())
    _run(cluster, "promote", "churn", "--full")
    assert json.loads(cluster.patches[0]["metadata"]["annotations"][COMMAND_ANNOTATION])["full"] is True
    text = _run(cluster, "rollback", "churn", "--to", "1")
    assert "rolled back to revision 1" in text
    assert json.loads(cluster.patches[1]["metadata"]["annotations"][COMMAND_ANNOTATION])["revision"] == 1


def test_resume_with_nothing_paused_is_reported_not_an_error() -> None:
    sim = Sim(rollout_spec("1"))
    sim.step()
    assert "resume ignored" in _run(FakeCluster(sim), "resume", "churn")


def test_rollback_to_an_unknown_revision_fails_before_writing() -> None:
    cluster = FakeCluster(_mid_rollout())
    with pytest.raises(CommandError, match="revision 9 is not in the history"):
        run(["rollback", "churn", "--to", "9"], cluster=cluster, out=io.StringIO())
    assert cluster.patches == []


def test_rollback_without_a_previous_revision_fails() -> None:
    sim = Sim(rollout_spec("1"))
    sim.step()
    with pytest.raises(CommandError, match="no previous promoted revision"):
        run(["rollback", "churn"], cluster=FakeCluster(sim), out=io.StringIO())


def test_not_found_is_an_error() -> None:
    with pytest.raises(NotFoundError, match="not found"):
        run(["status", "nope"], cluster=FakeCluster(_mid_rollout()), out=io.StringIO())


def test_an_unanswered_command_says_so() -> None:
    cluster = FakeCluster(_mid_rollout(), answer=False)
    out = io.StringIO()
    assert run(["abort", "churn", "--wait", "0"], cluster=cluster, out=out) == 0
    assert "has not answered yet" in out.getvalue()


def test_main_exits_1_with_a_message(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from modeldeploy_operator.cli import main as cli_main

    def failing(argv: object = None) -> int:
        raise NotFoundError('modeldeployment "x" not found in namespace "ml"')

    monkeypatch.setattr(cli_main, "run", failing)
    with pytest.raises(SystemExit) as exited:
        cli_main.main(["status", "x"])
    assert exited.value.code == 1
    assert "error: modeldeployment" in capsys.readouterr().err
