"""The operator's router table across reconciles: weights in basis points, the slot table edited
minimally from the one in the ConfigMap, and the deterministic fallback when that one is missing or
unusable."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from typing import Any

import pytest

from modeldeploy_contract.router_config import CONFIG_KEY, RouterConfig
from modeldeploy_contract.slots import SlotTable, initial_layout, total_variation
from modeldeploy_operator.domain.desired_state import BuildOptions, desired_state
from modeldeploy_operator.domain.resource import ModelDeploymentRef
from modeldeploy_operator.domain.rollout.planner import plan
from modeldeploy_operator.domain.router import previous_slots
from modeldeploy_operator.domain.spec import ModelDeploymentSpec
from modeldeploy_operator.domain.validation import parse_spec
from modeldeploy_operator.reconciler import Observation, _router_table

from rollout_sim import Sim

OWNER = ModelDeploymentRef(name="churn", namespace="ml", uid="uid-1")
OPTIONS = BuildOptions(serving_image="img", router_image="img")
NOW = dt.datetime(2026, 11, 23, 12, 0, tzinfo=dt.UTC)


def three_variants(a: int, b: int, c: int) -> Any:
    def model(version: str) -> dict[str, str]:
        return {"uri": f"s3://models/churn/v{version}", "format": "onnx", "version": version}

    return parse_spec(
        {
            "replicas": 1,
            "variants": [
                {"name": "a", "weight": a, "model": model("1")},
                {"name": "b", "weight": b, "model": model("2")},
                {"name": "c", "weight": c, "model": model("3")},
            ],
            "traffic": {"stickyKey": {"header": "X-User-Id"}},
        }
    )


def router_json(the_spec: Any, previous_table: str | None) -> str:
    decided = plan("churn", the_spec, [], (), NOW, None)
    state = desired_state(OWNER, the_spec, decided, options=OPTIONS, previous_router_table=previous_table)
    (config_map,) = [m for m in state.manifests if m["kind"] == "ConfigMap"]
    text: str = config_map["data"][CONFIG_KEY]
    return text


def owners(text: str) -> tuple[str, ...]:
    config = RouterConfig.from_json(text)
    ids = [a.variant for a in config.arms]
    return tuple(ids[i] for i in config.slot_arms())


def test_weights_reach_the_table_in_basis_points() -> None:
    config = RouterConfig.from_json(router_json(three_variants(50, 30, 20), None))
    assert [(a.variant, a.weight_bp) for a in config.arms] == [("a", 5000), ("b", 3000), ("c", 2000)]
    assert config.slots == "0:5000,1:3000,2:2000"  # the first table: runs in arm order


def test_a_weight_change_between_two_variants_leaves_the_third_alone() -> None:
    first = router_json(three_variants(50, 30, 20), None)
    second = router_json(three_variants(60, 30, 10), first)
    moves = Counter((o, n) for o, n in zip(owners(first), owners(second), strict=True) if o != n)
    assert moves == {("c", "a"): 1000}  # 10 % of the slots = the TV distance; b untouched
    assert RouterConfig.from_json(second).slots == "0:5000,1:3000,2:1000,0:1000"
    # the reconciler runs again and again: the same weights keep the same table, byte for byte
    assert router_json(three_variants(60, 30, 10), second) == second
    third = router_json(three_variants(40, 30, 30), second)
    moves = Counter((o, n) for o, n in zip(owners(second), owners(third), strict=True) if o != n)
    assert moves == {("a", "c"): 2000}


@pytest.mark.parametrize(
    ("name", "previous"),
    [
        ("missing", None),
        ("not JSON", "{not json"),
        ("a v1 table (float percents, no slots)", '{"schema_version": "modeldeploy.io/router/v1"}'),
        ("slots that disagree with the weights", "swap"),
        ("empty", ""),
    ],
)
def test_an_unusable_previous_table_falls_back_to_the_initial_layout(name: str, previous: str | None) -> None:
    good = router_json(three_variants(60, 30, 10), router_json(three_variants(50, 30, 20), None))
    if previous == "swap":  # a hand edit the routers refuse too
        previous = good.replace('"0:5000,1:3000,2:1000,0:1000"', '"1:5000,0:3000,2:1000,0:1000"')
    assert previous_slots(previous) is None, name
    fallback = router_json(three_variants(60, 30, 10), previous)
    assert RouterConfig.from_json(fallback).slots == "0:6000,1:3000,2:1000"
    assert router_json(three_variants(60, 30, 10), previous) == fallback  # deterministic


def test_previous_slots_reads_the_layout_by_arm_id() -> None:
    text = router_json(three_variants(50, 30, 20), None)
    slots = previous_slots(text)
    assert isinstance(slots, SlotTable)
    config = RouterConfig.from_json(text)
    ids = [a.arm_id for a in config.arms]
    assert slots == initial_layout([(i, w) for i, w in zip(ids, (5000, 3000, 2000), strict=True)])


def config_map(name: str, text: str, controller_uid: str = "uid-1") -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "ownerReferences": [{"uid": controller_uid, "controller": True, "kind": "ModelDeployment"}],
        },
        "data": {CONFIG_KEY: text},
    }


def test_the_reconciler_reads_only_its_own_router_config_map() -> None:
    def seen(*maps: dict[str, Any]) -> Observation:
        return Observation(owned={"ConfigMap": list(maps)}, deployments=[], ready_endpoints={})

    assert _router_table(OWNER, seen(config_map("churn-router", "T"))) == "T"
    assert _router_table(OWNER, seen(config_map("other-router", "T"))) is None
    assert _router_table(OWNER, seen(config_map("churn-router", "T", controller_uid="someone"))) is None
    assert _router_table(OWNER, seen()) is None


def canary_spec(version_a: str) -> ModelDeploymentSpec:
    def model(version: str) -> dict[str, str]:
        return {"uri": f"s3://models/churn/v{version}", "format": "onnx", "version": version}

    return ModelDeploymentSpec.model_validate(
        {
            "replicas": 2,
            "variants": [
                {"name": "a", "weight": 50, "model": model(version_a)},
                {"name": "b", "weight": 30, "model": model("7")},
                {"name": "c", "weight": 20, "model": model("8")},
            ],
            "traffic": {"stickyKey": {"header": "X-User-Id"}},
            "rollout": {
                "strategy": "Canary",
                "steps": [
                    {"setWeight": weight} if kind == "set" else {"pause": {"duration": "1m"}}
                    for weight in (10, 25, 50)
                    for kind in ("set", "pause")
                ],
            },
        }
    )


def test_canary_steps_inside_one_of_three_variants_move_only_stable_to_canary() -> None:
    """The planner's canary steps through the operator's tables: each step moves keys only from variant
    a's stable into its canary (TV distance), b and c never lose or gain a key; the promotion moves the
    rest of the stable's keys."""
    sim = Sim(canary_spec("1"))
    sim.step(1)
    table = desired_router_json(sim, None)
    for _ in range(2):  # the first deploy settles
        sim.step(1)
        table = desired_router_json(sim, table)
    stable = next(a for a in RouterConfig.from_json(table).arms if a.variant == "a").arm_id
    sim.spec = canary_spec("2")
    seen_weights = []
    for _ in range(12):
        sim.step(61)  # each step's pause is over
        new_table = desired_router_json(sim, table)
        old_weights, new_weights = arm_weights(table), arm_weights(new_table)
        moves = Counter(
            (o, n) for o, n in zip(slot_owners(table), slot_owners(new_table), strict=True) if o != n
        )
        assert sum(moves.values()) == total_variation(old_weights, new_weights)
        canary = next((arm for arm in new_weights if arm.startswith("a/") and arm != stable), None)
        assert set(moves) <= {(stable, canary)}, moves  # nothing else moves, b and c least of all
        seen_weights.append(new_weights.get(canary or "", 0))
        table = new_table
    assert [w for w in dict.fromkeys(seen_weights) if w] == [
        500,
        1250,
        2500,
        5000,
    ]  # 10/25/50 % of a, then all


def desired_router_json(sim: Sim, previous: str | None) -> str:
    assert sim.last is not None
    state = desired_state(OWNER, sim.spec, sim.last, options=OPTIONS, previous_router_table=previous)
    (config_map,) = [m for m in state.manifests if m["kind"] == "ConfigMap"]
    text: str = config_map["data"][CONFIG_KEY]
    return text


def arm_weights(text: str) -> dict[str, int]:
    return {a.arm_id: a.weight_bp for a in RouterConfig.from_json(text).arms}


def slot_owners(text: str) -> tuple[str, ...]:
    config = RouterConfig.from_json(text)
    ids = [a.arm_id for a in config.arms]
    return tuple(ids[i] for i in config.slot_arms())


@pytest.mark.parametrize(("protocol", "expected"), [(None, "v2"), ("v2", "v2"), ("v1", "v1")])
def test_the_router_reads_sticky_body_fields_in_the_servers_protocol(
    protocol: str | None, expected: str
) -> None:
    """spec.server.protocol (default v2) tells the router which body shape callers send."""
    raw: dict[str, Any] = {
        "replicas": 1,
        "model": {"uri": "s3://models/churn/v1", "format": "onnx", "version": "1"},
        "traffic": {"stickyKey": {"bodyField": "customer_id"}},
    }
    if protocol is not None:
        raw["server"] = {"protocol": protocol}
    config = RouterConfig.from_json(router_json(parse_spec(raw), None))
    assert config.sticky is not None
    assert config.sticky.body_field == "customer_id"
    assert config.sticky.protocol == expected
