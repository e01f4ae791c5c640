"""The planner's mirror decisions and shadow steps (issue 12, "Analysis for every strategy"), and the
router table that carries them: pure, on the simulated cluster of rollout_sim."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modeldeploy_contract.router_config import RouterConfig
from modeldeploy_operator.domain.desired_state import BuildOptions, desired_state
from modeldeploy_operator.domain.readings import CheckReading
from modeldeploy_operator.domain.resource import ModelDeploymentRef
from modeldeploy_operator.domain.validation import validate_spec

from modeldeploy_builders import NOW
from rollout_sim import CHECKS, Sim, good, revision_of, rollout_spec

OWNER = ModelDeploymentRef(namespace="ns", name="churn", uid="u")
OPTIONS = BuildOptions(serving_image="serving:1", router_image="router:1")
SHADOW_STEPS: list[dict[str, Any]] = [
    {"shadow": {"percent": 30, "duration": "1m"}},
    {"setWeight": 50},
    {"pause": {"duration": "1m"}},
]
BLUE_GREEN: dict[str, Any] = {"strategy": "BlueGreen", "steps": [{"analysis": {"duration": "1m"}}]}


def _mirrors(sim: Sim) -> dict[str, int]:
    assert sim.last is not None
    return {r.revision: r.mirror_percent for r in sim.last.variant("default").revisions if r.mirror_percent}


def _table(sim: Sim) -> RouterConfig:
    assert sim.last is not None
    state = desired_state(OWNER, sim.spec, sim.last, options=OPTIONS, generation=1)
    config_map = next(m for m in state.manifests if m["kind"] == "ConfigMap")
    return RouterConfig.from_json(config_map["data"]["router.json"])


def _serving_v1(**rollout: Any) -> Sim:
    sim = Sim(rollout_spec("1", **rollout))
    sim.step()
    sim.step(1)
    return sim


def _bad(value: float = 0.5) -> list[CheckReading]:
    return [CheckReading(c["name"], value, 500, NOW) for c in CHECKS]


def test_a_blue_green_preview_is_mirrored_during_analysis_and_promoted_on_it() -> None:
    sim = _serving_v1(**BLUE_GREEN)
    stable = revision_of(sim.spec)
    sim.spec = rollout_spec("2", **BLUE_GREEN)
    preview = revision_of(sim.spec)
    sim.step()
    assert sim.weights()[preview] == ("preview", 0, 4)
    assert _mirrors(sim) == {preview: 100}  # analysis.mirrorPercent's default
    table = _table(sim)
    assert table.mirror is not None
    assert (table.mirror.revision, table.mirror.percent, table.mirror.from_variant) == (
        preview,
        100,
        "default",
    )
    assert {a.revision: a.weight_bp for a in table.arms} == {stable: 10_000, preview: 0}
    for _ in range(4):  # readings from the mirrored traffic pass: the step completes, then promotion
        sim.step(30, good())
    assert sim.weights()[preview] == ("stable", 100, 4)
    assert _mirrors(sim) == {}
    assert _table(sim).mirror is None


def test_a_failing_preview_on_mirrored_traffic_is_aborted_and_the_mirror_ends() -> None:
    sim = _serving_v1(**BLUE_GREEN)
    sim.spec = rollout_spec("2", **BLUE_GREEN)
    sim.step()
    sim.step(30, _bad())
    sim.step(30, _bad())
    assert sim.status is not None
    assert sim.status.aborted
    assert _mirrors(sim) == {}
    assert _table(sim).mirror is None


def test_mirror_percent_zero_turns_the_mirror_off() -> None:
    spec: dict[str, Any] = {
        **BLUE_GREEN,
        "analysis": {"interval": "30s", "checks": CHECKS, "mirrorPercent": 0},
    }
    sim = _serving_v1(**spec)
    sim.spec = rollout_spec("2", **spec)
    sim.step()
    assert _mirrors(sim) == {}


def test_a_shadow_step_mirrors_the_canary_at_its_percent_with_no_live_weight_until_it_passes() -> None:
    sim = _serving_v1(steps=SHADOW_STEPS)
    sim.spec = rollout_spec("2", steps=SHADOW_STEPS)
    canary = revision_of(sim.spec)
    sim.step()
    assert sim.weights()[canary] == ("canary", 0, 1)
    assert _mirrors(sim) == {canary: 30}
    # Inconclusive (too few samples) holds the step open past its duration: still no live weight.
    sim.step(30, good(samples=3))
    sim.step(31, good(samples=3))
    assert sim.weights()[canary][1] == 0
    assert _mirrors(sim) == {canary: 30}
    sim.step(30, good())  # checks pass and the duration is over: the setWeight step scales up first
    assert sim.weights()[canary] == ("canary", 0, 2)
    assert _mirrors(sim) == {canary: 100}  # no live weight yet: analysis.mirrorPercent
    sim.step(1)  # two ready pods: live weight, and the mirror ends
    assert sim.weights()[canary] == ("canary", 50, 2)
    assert _mirrors(sim) == {}
    assert _table(sim).mirror is None


def test_a_shadow_step_whose_checks_fail_aborts_before_the_canary_answered_anyone() -> None:
    sim = _serving_v1(steps=SHADOW_STEPS)
    sim.spec = rollout_spec("2", steps=SHADOW_STEPS)
    canary = revision_of(sim.spec)
    sim.step()
    sim.step(30, _bad())
    sim.step(30, _bad())
    assert sim.status is not None
    assert sim.status.aborted
    assert sim.weights()[canary][1] == 0
    assert "AnalysisFailed" in sim.reasons()
    assert _mirrors(sim) == {}


def test_a_canary_before_its_first_set_weight_is_mirrored_at_the_analysis_percent() -> None:
    steps = [{"analysis": {"duration": "1m"}}, {"setWeight": 50}]
    sim = _serving_v1(steps=steps)
    sim.spec = rollout_spec("2", steps=steps)
    canary = revision_of(sim.spec)
    sim.step()
    assert _mirrors(sim) == {canary: 100}


@pytest.mark.parametrize(
    ("rollout", "message"),
    [
        ({"steps": [{"setWeight": 20}, {"shadow": {"duration": "1m"}}]}, "before the first setWeight"),
        ({"strategy": "BlueGreen", "steps": [{"shadow": {"duration": "1m"}}]}, "Canary strategy"),
        ({"steps": [{"shadow": {"duration": "1m"}}, {"setWeight": 20}], "analysis": None}, "needs spec"),
        ({"steps": [{"shadow": {"duration": "1m", "checks": ["nope"]}}, {"setWeight": 20}]}, "not in spec"),
    ],
)
def test_bad_shadow_steps_are_refused(rollout: dict[str, Any], message: str) -> None:
    errors = validate_spec(rollout_spec("1", **rollout))
    assert any(message in e for e in errors), errors


@pytest.mark.parametrize(
    "shadow",
    [{"percent": 0, "duration": "1m"}, {"percent": 101, "duration": "1m"}, {}, {"duration": "soon"}],
)
def test_bad_shadow_step_fields_are_refused_by_the_model(shadow: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="shadow"):
        rollout_spec("1", steps=[{"shadow": shadow}, {"setWeight": 20}])


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.sampled_from(["good", "bad", "few", "none"]), min_size=1, max_size=12),
    st.integers(min_value=1, max_value=100),
)
def test_the_mirrored_revision_never_has_live_weight_and_the_table_is_always_valid(
    readings: list[str], percent: int
) -> None:
    """Whatever the readings, at every pass: a mirrored revision has weight 0, the mirror is the
    rollout's new revision only, and the router table validates (mirror arm known, weight 0)."""
    steps = [{"shadow": {"percent": percent, "duration": "1m"}}, {"setWeight": 50}]
    sim = _serving_v1(steps=steps)
    sim.spec = rollout_spec("2", steps=steps)
    canary = revision_of(sim.spec)
    sim.step()
    by_kind = {"good": good(), "bad": _bad(), "few": good(samples=2), "none": []}
    for kind in readings:
        sim.step(30, by_kind[kind])
        mirrors = _mirrors(sim)
        assert set(mirrors) <= {canary}
        if mirrors:
            assert sim.weights()[canary][1] == 0
            in_shadow_step = sim.status is not None and sim.status.current_step_index == 0
            assert mirrors[canary] == (percent if in_shadow_step else 100)
        table = _table(sim)  # RouterConfig validates on parse
        if table.mirror is not None:
            assert table.mirror.revision == canary


def test_reference_stable_is_only_for_input_drift_checks() -> None:
    checks = [{"name": "errors", "type": "errorRate", "threshold": {"max": 0.05}, "reference": "stable"}]
    spec = rollout_spec("1", analysis={"interval": "30s", "checks": checks})
    assert any("reference: stable is for the inputDrift" in e for e in validate_spec(spec))
    ok = [{"name": "drift", "type": "inputDriftKS", "threshold": {"max": 0.2}, "reference": "stable"}]
    assert validate_spec(rollout_spec("1", analysis={"interval": "30s", "checks": ok})) == []
