"""kubectl-modeldeploy against a fake cluster whose 'operator' is the real rollout planner (rollout_sim):
views of real statuses, command annotations the planner understands, and the exit codes of its answers.
The plugin's own tests (no operator at all) are in tests/unit/plugin."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any

import pytest

from modeldeploy_kubectl.client import ApiError, WatchEvent, not_found
from modeldeploy_kubectl.main import (
    EXIT_NOT_APPLIED,
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_REJECTED,
    run,
)
from modeldeploy_operator.domain.rollout import parse_command
from modeldeploy_operator.domain.rollout.commands import COMMAND_ANNOTATION

from rollout_sim import Sim, good, rollout_spec


class FakeCluster:
    """One ModelDeployment; a patch of the command annotation is 'handled' by the planner (when
    `answer`), and the watch shows the object as it is after that."""

    def __init__(self, sim: Sim, *, answer: bool = True) -> None:
        self.sim, self.answer = sim, answer
        self.patches: list[dict[str, Any]] = []
        self.annotations: dict[str, str] = {}

    def body(self) -> dict[str, Any]:
        assert self.sim.status is not None
        return {
            "metadata": {"name": "churn", "namespace": "ml", "annotations": dict(self.annotations)},
            "spec": self.sim.spec.model_dump(by_alias=True, exclude_none=True, mode="json"),
            "status": self.sim.status.to_patch(),
        }

    def get(self, namespace: str, name: str) -> dict[str, Any]:
        if name != "churn":
            raise not_found(namespace, name)
        return self.body()

    def list_all(self, namespace: str | None) -> list[dict[str, Any]]:
        return [self.body()]

    def patch(self, namespace: str, name: str, body: dict[str, Any]) -> None:
        self.patches.append(body)
        self.annotations.update(body["metadata"]["annotations"])
        if self.answer:
            self.sim.step(1, command=parse_command(self.annotations))

    def events(self, namespace: str, name: str) -> list[dict[str, Any]]:
        return [
            {
                "lastTimestamp": "2026-01-02T03:05:00Z",
                "type": "Normal",
                "reason": "RolloutStarted",
                "message": "go",
            }
        ]

    def watch(self, namespace: str, name: str, timeout: float | None) -> Iterator[WatchEvent]:
        yield "ADDED", self.get(namespace, name)

    def effectiveness(self, namespace: str, name: str) -> bytes:
        raise ApiError("no label joiner here (the rollout commands never ask it)")


def _mid_rollout() -> Sim:
    sim = Sim(rollout_spec("1"))
    sim.step()
    sim.step(1)
    sim.spec = rollout_spec("2")
    sim.step()
    sim.step(1, good())
    return sim


def _run(cluster: FakeCluster, *argv: str, code: int = EXIT_OK) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    assert run(["-n", "ml", *argv], cluster=cluster, out=out, err=err, environ={}) == code, err.getvalue()
    return out.getvalue(), err.getvalue()


def test_get_shows_steps_weights_checks_and_events() -> None:
    text, _ = _run(FakeCluster(_mid_rollout()), "get", "churn")
    assert "Phase:       ॥ Paused" in text
    assert "Stable:      revision 1" in text
    assert "Canary:      revision 2" in text
    assert "weight 20%" in text
    assert "  Step:      2/5" in text
    assert "✓ 1. setWeight 20%" in text
    assert "▶ 2. pause 1m" in text
    assert "errors" in text
    assert "Pass" in text
    assert "0.01" in text
    assert "canary" in text
    assert "RolloutStarted" in text
    assert "\x1b[" not in text  # not a terminal: no colour


def test_status_is_get() -> None:
    cluster = FakeCluster(_mid_rollout())
    assert _run(cluster, "status", "churn") == _run(cluster, "get", "churn")


def test_history_lists_revisions_and_outcomes() -> None:
    text, _ = _run(FakeCluster(_mid_rollout()), "history", "churn")
    lines = text.splitlines()
    assert lines[0].split()[:3] == ["REVISION", "VARIANT", "VERSION"]
    assert "Promoted" in lines[1]
    assert "s3://models/churn/v1" in lines[1]
    assert "Progressing" in lines[2]


def test_history_as_json_is_status_history() -> None:
    text, _ = _run(FakeCluster(_mid_rollout()), "history", "churn", "-o", "json")
    entries = json.loads(text)
    assert [e["revision"] for e in entries] == [1, 2]
    assert entries[0]["modelURI"] == "s3://models/churn/v1"


@pytest.mark.parametrize(
    ("argv", "action"),
    [(["promote", "churn"], "promote"), (["abort", "churn"], "abort"), (["pause", "churn"], "pause")],
)
def test_commands_write_the_annotation_and_report_the_answer(argv: list[str], action: str) -> None:
    cluster = FakeCluster(_mid_rollout())
    text, _ = _run(cluster, *argv)
    (patch,) = cluster.patches
    payload = json.loads(patch["metadata"]["annotations"][COMMAND_ANNOTATION])
    assert payload["action"] == action
    assert f"churn: {action} applied" in text


def test_promote_full_and_rollback_to() -> None:
    cluster = FakeCluster(_mid_rollout())
    _run(cluster, "promote", "churn", "--full")
    assert json.loads(cluster.patches[0]["metadata"]["annotations"][COMMAND_ANNOTATION])["full"] is True
    text, _ = _run(cluster, "rollback", "churn", "--to", "1")
    assert "rolled back to revision 1" in text
    assert json.loads(cluster.patches[1]["metadata"]["annotations"][COMMAND_ANNOTATION])["revision"] == 1


def test_resume_with_nothing_paused_is_reported_not_an_error() -> None:
    sim = Sim(rollout_spec("1"))
    sim.step()
    text, _ = _run(FakeCluster(sim), "resume", "churn")
    assert "resume ignored" in text


def test_rollback_to_an_unknown_revision_fails_before_writing() -> None:
    cluster = FakeCluster(_mid_rollout())
    _, err = _run(cluster, "rollback", "churn", "--to", "9", code=EXIT_NOT_FOUND)
    assert "revision 9 is not in the history of churn (known: 1, 2)" in err
    assert cluster.patches == []


def test_rollback_without_a_previous_revision_is_refused_before_writing() -> None:
    sim = Sim(rollout_spec("1"))
    sim.step()
    cluster = FakeCluster(sim)
    _, err = _run(cluster, "rollback", "churn", code=EXIT_REJECTED)
    assert "no previous promoted revision" in err
    assert cluster.patches == []


def test_not_found_exits_1() -> None:
    _, err = _run(FakeCluster(_mid_rollout()), "get", "nope", code=EXIT_NOT_FOUND)
    assert 'modeldeployment "nope" not found in namespace "ml"' in err


def test_a_command_not_applied_within_wait_exits_3() -> None:
    cluster = FakeCluster(_mid_rollout(), answer=False)
    _, err = _run(cluster, "abort", "churn", "--wait", "2s", code=EXIT_NOT_APPLIED)
    assert "abort not applied within 2s" in err
    assert len(cluster.patches) == 1  # written: the operator carries it out when it gets to it


def test_wait_0_checks_once() -> None:
    cluster = FakeCluster(_mid_rollout(), answer=False)
    _, err = _run(cluster, "pause", "churn", "--wait", "0", code=EXIT_NOT_APPLIED)
    assert "not applied within 0s" in err


def test_get_shows_the_preflight_with_its_figures() -> None:
    from modeldeploy_operator.domain.status_model import PreflightCheckStatus, PreflightStatus

    from rollout_sim import revision_of

    sim = Sim(rollout_spec("1", preflight={}))
    sim.step()
    sim.step(1)
    sim.spec = rollout_spec("2", preflight={})
    failed = PreflightStatus(
        variant="default",
        revision=revision_of(sim.spec),
        result="Failed",
        message="auc new 0.5839 vs stable 0.8333, worse by 0.2495 (> 0.01)",
        checks=(
            PreflightCheckStatus(name="outputs-match-bundle", passed=True, value=3e-8, threshold=1e-4),
            PreflightCheckStatus(name="auc-drop", passed=False, value=0.2495, threshold=0.01, detail="worse"),
        ),
    )
    sim.step(1, preflight=[failed])
    sim.step(1, preflight=[failed])
    text, _ = _run(FakeCluster(sim), "get", "churn")
    assert f"Preflight:   default {revision_of(sim.spec)}: Failed - auc new 0.5839" in text
    assert "auc-drop" in text
    assert "0.2495" in text
    assert "Not shown" not in text
