"""The rollback window (issue 12): a revision that stopped serving keeps warm pods for a while, so a
rollback to it inside the window is a switch of the router table in the pass that reads the command,
not a cold start; outside the window a rollback waits for pods as before. All decided in the pure
planner (Draft.leave_traffic / leaving_replicas); these are its table tests on the simulated cluster."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from pydantic import ValidationError
from test_operator_crd import VALIDATOR

from modeldeploy_operator.domain.rollout import command_patch, parse_command
from modeldeploy_operator.domain.rollout.commands import Command
from modeldeploy_operator.domain.spec import ModelDeploymentSpec
from modeldeploy_operator.domain.status_model import RevisionStatus

from modeldeploy_crd_cases import INVALID_CASES, valid_manifest
from rollout_sim import Sim, good, revision_of, rollout_spec

DELAY = 30  # rollout_sim's scaleDownDelaySeconds; the sim runs 4 replicas


def _command(action: str, **kwargs: object) -> Command:
    _, patch = command_patch(action, **kwargs)  # type: ignore[arg-type]
    parsed = parse_command(patch["metadata"]["annotations"])
    assert isinstance(parsed, Command)
    return parsed


def _promoted_v2(**rollout: Any) -> tuple[Sim, str, str]:
    """v1 served, then v2 promoted (promote --full) at sim.now; returns (sim, v1, v2)."""
    sim = Sim(rollout_spec("1", **rollout))
    sim.step()
    sim.step(1)
    v1 = revision_of(sim.spec)
    sim.spec = rollout_spec("2", **rollout)
    v2 = revision_of(sim.spec)
    sim.step()
    sim.step(1, good())
    sim.step(1, command=_command("promote", full=True))
    assert sim.weights()[v2][:2] == ("stable", 100)
    sim.step(0)
    return sim, v1, v2


def _revision_status(sim: Sim, revision: str) -> RevisionStatus | None:
    assert sim.status is not None
    return next((r for v in sim.status.variants for r in v.revisions if r.revision == revision), None)


# --- the window after a promotion ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("window", "after", "replicas"),
    [
        pytest.param({}, 1, 4, id="default-inside-the-delay-all-pods"),
        pytest.param({}, DELAY + 1, 1, id="default-after-the-delay-one-warm-pod"),
        pytest.param({}, 299, 1, id="default-just-before-the-end"),
        pytest.param({}, 301, 0, id="default-after-the-window-none"),
        pytest.param({"replicas": 2}, 120, 2, id="two-warm-pods"),
        pytest.param({"replicas": 10}, 120, 4, id="never-more-than-it-had"),
        pytest.param({"replicas": 0}, DELAY + 1, 0, id="replicas-0-turns-it-off"),
        pytest.param({"seconds": 0}, DELAY + 1, 0, id="seconds-0-turns-it-off"),
        pytest.param({"seconds": DELAY}, DELAY + 1, 0, id="window-no-longer-than-the-delay"),
        pytest.param({"seconds": 3600}, 3000, 1, id="an-hour"),
    ],
)
def test_the_previous_stable_keeps_the_windows_pods(
    window: dict[str, int], after: int, replicas: int
) -> None:
    sim, v1, _ = _promoted_v2(rollbackWindow=window)
    sim.step(after)
    assert sim.weights()[v1] == ("previous", 0, replicas)
    entry = _revision_status(sim, v1)
    assert (entry is not None) == (replicas > 0)  # a warm revision shows in status, with its timers
    if entry is not None and after > DELAY:
        assert entry.scale_down_at is None
        assert entry.warm_until is not None
        assert sim.last is not None
        assert sim.last.next_due == entry.warm_until  # the daemon wakes up to end the window


def test_the_window_counts_from_leaving_traffic_and_survives_a_status_round_trip() -> None:
    sim, v1, _ = _promoted_v2()
    left_at = sim.now.replace(microsecond=0)
    entry = _revision_status(sim, v1)
    assert entry is not None
    assert entry.scale_down_at is not None
    assert entry.warm_until is not None
    assert (entry.scale_down_at - left_at).total_seconds() == pytest.approx(DELAY, abs=1)
    assert (entry.warm_until - left_at).total_seconds() == pytest.approx(300, abs=1)
    assert sim.last is not None
    assert sim.last.next_due == entry.scale_down_at  # the first timer: all pods down to the window's
    for _ in range(10):  # every pass reads the window back from the status (Sim round-trips it)
        sim.step(25)
        later = _revision_status(sim, v1)
        assert later is not None
        assert later.warm_until == entry.warm_until
    body = copy.deepcopy(valid_manifest()) | {"status": sim.status.to_patch() if sim.status else {}}
    VALIDATOR.validate(body)  # warmUntil is in the CRD's status schema (not pruned)


def test_an_aborted_canary_never_served_so_gets_no_window() -> None:
    sim = Sim(rollout_spec("1"))
    sim.step()
    sim.step(1)
    sim.spec = rollout_spec("2")
    v2 = revision_of(sim.spec)
    sim.step()
    sim.step(1, good())
    sim.step(1, command=_command("abort"))
    entry = _revision_status(sim, v2)
    assert entry is not None
    assert entry.warm_until is None
    sim.step(DELAY + 1)
    assert sim.weights()[v2] == ("canary", 0, 0)


def test_immediate_replacement_opens_the_window_too() -> None:
    sim = Sim(rollout_spec("1", strategy="Immediate", steps=[]))
    sim.step()
    sim.step(1)
    v1 = revision_of(sim.spec)
    sim.spec = rollout_spec("2", strategy="Immediate", steps=[])
    sim.step(1)
    sim.step(1)
    sim.step(DELAY + 1)
    assert sim.weights()[v1] == ("previous", 0, 1)


# --- a rollback inside and outside the window ------------------------------------------------------


def test_a_rollback_inside_the_window_switches_in_the_pass_that_reads_it_then_scales_up() -> None:
    sim, v1, v2 = _promoted_v2()
    sim.step(120)  # well past the scale-down delay: v1 has its one warm, Ready pod
    assert sim.weights()[v1] == ("previous", 0, 1)
    result = sim.step(1, command=_command("rollback", revision=1))
    # One pass: all of the variant's traffic on the warm revision (the router table of this plan),
    # which is asked for its full replica count at the same time.
    assert sim.weights()[v1] == ("pinned", 100, 4)
    assert sim.weights()[v2][:2] == ("previous", 0)
    assert result.status.variants[0].revision == v1
    assert [e.reason for e in result.events] == ["RolledBack", "RevisionServing"]
    # The revision the rollback replaced was serving: it gets a window of its own (roll forward fast).
    replaced = _revision_status(sim, v2)
    assert replaced is not None
    assert replaced.warm_until is not None
    assert replaced.scale_down_at is not None
    assert _revision_status(sim, v1) is not None
    assert _revision_status(sim, v1).warm_until is None  # type: ignore[union-attr]  # serving again
    sim.step(DELAY + 1)
    assert sim.weights()[v2] == ("previous", 0, 1)


def test_a_rollback_outside_the_window_waits_for_pods_as_before() -> None:
    sim, v1, v2 = _promoted_v2()
    sim.step(301)
    assert sim.weights()[v1] == ("previous", 0, 0)
    sim.unready.add(v1)  # a cold start: its new pods are not Ready yet
    sim.step(1, command=_command("rollback", revision=1))
    assert sim.weights()[v2] == ("stable", 100, 4)  # keeps serving until v1 has a Ready pod
    assert sim.weights()[v1] == ("pinned", 0, 4)
    sim.unready.clear()
    sim.step(1)
    sim.step(1)
    assert sim.weights()[v1] == ("pinned", 100, 4)


def test_a_rollback_with_the_window_off_waits_for_pods() -> None:
    sim, v1, v2 = _promoted_v2(rollbackWindow={"replicas": 0})
    sim.step(DELAY + 1)
    sim.unready.add(v1)
    sim.step(1, command=_command("rollback", revision=1))
    assert sim.weights()[v2] == ("stable", 100, 4)
    assert sim.weights()[v1] == ("pinned", 0, 4)


# --- the spec field ---------------------------------------------------------------------------------


def test_defaults() -> None:
    window = ModelDeploymentSpec.model_validate({"model": valid_manifest()["spec"]["model"]}).rollout
    assert (window.rollback_window.seconds, window.rollback_window.replicas) == (300, 1)


@pytest.mark.parametrize(
    "case", [c for c in INVALID_CASES if c.id.startswith("rollback-window-")], ids=lambda c: c.id
)
def test_bad_rollback_windows_are_refused_by_the_crd_and_the_model(case: Any) -> None:
    body = case.manifest()
    assert list(VALIDATOR.iter_errors(body)), f"{case.id} was accepted by the CRD schema"
    with pytest.raises(ValidationError):
        ModelDeploymentSpec.model_validate(body["spec"])


def test_there_are_bad_rollback_window_cases() -> None:
    assert sum(c.id.startswith("rollback-window-") for c in INVALID_CASES) >= 6


def test_with_immediate_rollbacks_alternate_between_two_warm_revisions() -> None:
    """What bench/operator/rollback_switch.py relies on: each switch leaves the other revision warm,
    and going back to the spec's revision (the pin removed) is as instant as going away from it."""
    sim, v1, v2 = _promoted_v2(strategy="Immediate", steps=[])
    for target, number, other in ((v1, 1, v2), (v2, 2, v1), (v1, 1, v2)):
        sim.step(DELAY + 1)
        assert sim.weights()[target] == ("previous", 0, 1)
        result = sim.step(1, command=_command("rollback", revision=number))
        assert sim.weights()[target][1:] == (100, 4)
        assert sim.weights()[other][:2] == ("previous", 0)
        assert result.status.phase == "Ready"
        assert [e.reason for e in result.events] == ["RolledBack", "RevisionServing"]
