"""The rollout cursor: one frozen value, changed only by named transitions (issue 12)."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

from modeldeploy_operator.domain.rollout.cursor import Cursor
from modeldeploy_operator.domain.status_model import ModelDeploymentStatus, PauseStatus

from modeldeploy_builders import NOW
from rollout_sim import Sim, revision_of, rollout_spec

T0 = NOW.replace(microsecond=0)
LATER = NOW + dt.timedelta(seconds=30)
STEP = PauseStatus(reason="Step", since=T0)


def fields(cursor: Cursor) -> dict[str, object]:
    return dataclasses.asdict(cursor)


def test_the_cursor_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        Cursor().weight = 5  # type: ignore[misc]


RUNNING = Cursor.start("default", "c", NOW).set_weight(20).paused(STEP)


@pytest.mark.parametrize(
    ("cursor", "expected"),
    [
        (
            Cursor.start("default", "c", NOW),
            {
                "variant": "default",
                "revision": "c",
                "step_index": 0,
                "step_started_at": T0,
                "started_at": T0,
                "weight": 0,
            },
        ),
        (
            RUNNING.advance(LATER),
            {"step_index": 1, "step_started_at": LATER.replace(microsecond=0), "pause": None},
        ),
        (RUNNING.restart_step(4, LATER), {"step_index": 4, "pause": None, "weight": 20}),
        (
            RUNNING.resume(LATER),
            {"step_index": 0, "pause": None, "step_started_at": LATER.replace(microsecond=0)},
        ),
        (
            RUNNING.abort(),
            {
                "variant": "default",
                "revision": "c",
                "step_index": None,
                "step_started_at": None,
                "weight": 0,
                "aborted": True,
            },
        ),
        (RUNNING.abort().reopen(LATER), {"aborted": False, "started_at": T0, "revision": "c"}),
        (
            Cursor().held_aborted("default", "c"),
            {"aborted": True, "revision": "c", "step_index": None, "weight": 0},
        ),
        (RUNNING.promote(), fields(Cursor())),
        (RUNNING.clear(), fields(Cursor())),
    ],
)
def test_transitions(cursor: Cursor, expected: dict[str, object]) -> None:
    got = fields(cursor)
    assert {k: got[k] for k in expected} == expected


def test_active_and_the_status_round_trip() -> None:
    assert RUNNING.active
    assert not RUNNING.abort().active
    assert not Cursor().active
    status = ModelDeploymentStatus(
        rollout_variant="default",
        canary_revision="c",
        current_step_index=2,
        step_started_at=T0,
        rollout_started_at=T0,
        canary_weight=20,
        pause=STEP,
    )
    assert Cursor.from_status(status) == Cursor(
        variant="default",
        revision="c",
        step_index=2,
        step_started_at=T0,
        started_at=T0,
        weight=20,
        pause=STEP,
    )


def test_canary_revision_after_an_abort_names_the_aborted_revision_until_the_spec_moves_on() -> None:
    """docs/crd.md: status.canaryRevision after an abort is the aborted one while the spec names it."""
    sim = Sim(rollout_spec("1"))
    sim.step()
    sim.step(1)
    sim.spec = rollout_spec("2")
    v2 = revision_of(sim.spec)
    sim.step()
    sim.crash_looping.add(v2)
    sim.step(1)
    sim.step(1)
    assert sim.status is not None
    assert (sim.status.aborted, sim.status.canary_revision, sim.status.current_step_index) == (True, v2, None)
    sim.step(60)
    assert (sim.status.aborted, sim.status.canary_revision) == (True, v2)
    sim.spec = rollout_spec("3")
    sim.step(1)
    assert (sim.status.aborted, sim.status.canary_revision) == (False, revision_of(sim.spec))
