"""The router's arm choice as pure functions: the key hash, the slot lookup, pins and fallbacks, and the
stickiness properties over 100,000 keys through router snapshots built from the operator's tables
(random sequences of weight changes, hypothesis)."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modeldeploy_contract.router_config import RouterConfig
from modeldeploy_contract.slots import SLOT_COUNT, SlotTable, rebalance, total_variation
from modeldeploy_serving.router.assignment import ArmWeight, Assignment, RoundRobin, key_hash
from modeldeploy_serving.router.state import build_snapshot, endpoints_lookup

SALT = "churn"
KEYS = [f"customer-{i}" for i in range(100_000)]
SLOTS = [key_hash(k, SALT)[0] for k in KEYS]
"""The slot of every key: a pure function of (salt, key), computed once for all the properties."""


def test_key_hash_is_stable_across_processes_and_uniform() -> None:
    # Fixed expectations: a change of hash function would silently reassign every customer.
    slot, u = key_hash("customer-42")
    assert slot == 1612  # the old router's u_variant for this key was 0.1613
    assert u == pytest.approx(0.11116376394481275)
    assert key_hash("customer-42", SALT)[0] == 2063
    deciles = Counter(slot * 10 // SLOT_COUNT for slot in SLOTS)
    assert all(9_700 <= deciles[d] <= 10_300 for d in range(10))  # 100,000 keys: sigma ~95
    assert all(0 <= slot < SLOT_COUNT for slot in SLOTS)


def assignment(owners: str, arms: Sequence[tuple[str, int]]) -> Assignment:
    """A 10,000-slot assignment from a short pattern of arm indices repeated (e.g. "0111")."""
    pattern = [int(c) for c in owners]
    slots = [pattern[i * len(pattern) // SLOT_COUNT] for i in range(SLOT_COUNT)]
    return Assignment(slots, [ArmWeight(v, w) for v, w in arms])


@pytest.mark.parametrize(
    ("slot", "u", "pin", "expected"),
    [
        (0, 0.5, None, 0),  # slots 0..999 belong to arm 0 (a's canary, 10 % of 10,000 slots)
        (999, 0.5, None, 0),
        (1000, 0.5, None, 1),  # a's stable
        (6000, 0.0, None, 2),  # b
        (9999, 0.99, None, 2),
        (0, 0.99, "a", 0),  # pinned to the key's own variant: its own arm
        (6000, 0.05, "a", 0),  # pinned elsewhere: a revision of a by weight (canary owns u < 1/6)
        (6000, 0.5, "a", 1),
        (0, 0.5, "b", 2),
        (0, 0.5, "zzz", None),  # unknown variant
        (0, 0.5, "c", None),  # a variant without weight: nothing to pin to
    ],
)
def test_slot_lookup_and_pins(slot: int, u: float, pin: str | None, expected: int | None) -> None:
    table = assignment("0111112222", [("a", 1000), ("a", 5000), ("b", 4000), ("c", 0)])
    assert table.pick(slot, u, pin) == expected


def test_an_assignment_has_exactly_the_slot_count() -> None:
    with pytest.raises(ValueError, match="10000 slots"):
        Assignment([0] * 100, [ArmWeight("a", 10_000)])


def test_fallback_prefers_the_same_variant_then_any_ready_arm() -> None:
    table = assignment("0111122222", [("a", 1000), ("a", 4000), ("b", 5000)])
    assert table.fallback(0, {1, 2}, 0.01) == 1  # a's canary down: a's stable
    assert table.fallback(0, {2}, 0.01) == 2  # all of a down: b
    assert table.fallback(0, set(), 0.01) is None


def test_fallback_moves_only_the_keys_of_the_unavailable_arm() -> None:
    table = assignment("0001112222", [("a", 3000), ("b", 3000), ("c", 4000)])
    available = {0, 2}
    routed = []
    for key in KEYS[:10_000]:
        slot, u = key_hash(key, SALT)
        arm = table.pick(slot, u)
        assert arm is not None
        routed.append((arm, arm if arm in available else table.fallback(arm, available, u)))
    assert all(before == after for before, after in routed if before != 1)
    displaced = Counter(after for before, after in routed if before == 1)
    assert set(displaced) == {0, 2}
    assert displaced[0] / displaced[2] == pytest.approx(30 / 40, rel=0.2)


@pytest.mark.parametrize("weights", [[1000, 9000], [3333, 3333, 3334], [100, 0, 9900], [2500] * 4])
def test_keyless_requests_follow_the_weights(weights: list[int]) -> None:
    arms = [{"variant": f"v{i}", "revision": "r", "weight_bp": w, "endpoints": ["127.0.0.1:1"],
             "model_name": "m"} for i, w in enumerate(weights)]  # fmt: skip
    snapshot = build_snapshot(
        RouterConfig.model_validate({"deployment": {"namespace": "n", "name": "m"}, "arms": arms}),
        endpoints_lookup({}),
    )
    random.seed(7)
    n = 40_000
    counts = Counter(snapshot.route(None).arm.config.variant for _ in range(n))  # type: ignore[union-attr]
    for i, w in enumerate(weights):
        assert counts[f"v{i}"] == pytest.approx(n * w / 10_000, abs=5 * (n * 0.25) ** 0.5)


def test_round_robin_cycles_and_offers_another_backend() -> None:
    rr = RoundRobin(["a:1", "b:1", "c:1"])
    assert [rr.next() for _ in range(6)] == ["a:1", "b:1", "c:1"] * 2
    assert rr.other_than("a:1") == "b:1"
    assert rr.other_than("c:1") == "a:1"
    assert rr.next() == "a:1"  # the retry did not advance the rotation
    assert RoundRobin(["a:1"]).other_than("a:1") is None
    assert RoundRobin([]).next() is None


# --- the case, through router snapshots -----------------------------------------------------


def router_table(weights: Sequence[tuple[str, int]], previous: RouterConfig | None) -> RouterConfig:
    """What the operator writes: arms with their weights and the slot table rebalanced from the last."""
    slots = None
    if previous is not None:
        ids = [a.arm_id for a in previous.arms]
        slots = SlotTable(tuple(ids[i] for i in previous.slot_arms()))
    arm_ids = [arm for arm, _ in weights]
    arms = [
        {"variant": arm.split("/")[0], "revision": arm.split("/")[1], "weight_bp": w,
         "endpoints": ["127.0.0.1:1"], "model_name": "churn"}
        for arm, w in weights
    ]  # fmt: skip
    return RouterConfig.model_validate(
        {
            "deployment": {"namespace": "shop", "name": "churn"},
            "arms": arms,
            "slots": rebalance(slots, weights).encode(arm_ids),
            "sticky": {"header": "X-User-Id", "salt": SALT},
        }
    )


def arms_of(config: RouterConfig) -> list[str]:
    """The arm id of every key of KEYS, through a router snapshot built from the table's JSON (as a
    router replica, or a restarted router, builds it from the ConfigMap)."""
    replica = build_snapshot(RouterConfig.from_json(config.to_json()), endpoints_lookup({}))
    ids = [a.arm_id for a in replica.config.arms]
    slot_arms = replica.assignment.slots
    return [ids[slot_arms[slot]] for slot in SLOTS]


def test_three_variants_50_30_20_to_60_30_10_move_only_c_to_a() -> None:
    before = router_table([("a/r1", 5000), ("b/r1", 3000), ("c/r1", 2000)], None)
    after = router_table([("a/r1", 6000), ("b/r1", 3000), ("c/r1", 1000)], before)
    old, new = arms_of(before), arms_of(after)
    moves = Counter((o, n) for o, n in zip(old, new, strict=True) if o != n)
    assert set(moves) == {("c/r1", "a/r1")}  # b's users stay put (cumulative buckets moved 21 %)
    assert sum(moves.values()) / len(KEYS) == pytest.approx(0.10, abs=0.01)


# --- properties over random sequences of weight changes ---------------------------------------------

POOL = ("a/r1", "a/r2", "b/r1", "b/r2", "c/r1", "d/r1")


@st.composite
def weighting(draw: st.DrawFn) -> list[tuple[str, int]]:
    """Arms of the pool (variants a..d, up to two revisions each; arms come and go) with basis points
    summing to 10,000; zero weights included."""
    arms = draw(st.lists(st.sampled_from(POOL), min_size=1, max_size=len(POOL), unique=True))
    cuts = sorted(draw(st.lists(st.integers(0, SLOT_COUNT), min_size=len(arms) - 1, max_size=len(arms) - 1)))
    bounds = [0, *cuts, SLOT_COUNT]
    return [(arm, bounds[i + 1] - bounds[i]) for i, arm in enumerate(arms)]


@settings(max_examples=40, deadline=None)
@given(st.lists(weighting(), min_size=2, max_size=5))
def test_keys_move_minimally_through_any_sequence_of_weight_changes(
    sequence: list[list[tuple[str, int]]],
) -> None:
    config = router_table(sequence[0], None)
    assigned = arms_of(config)
    for weights in sequence[1:]:
        old_weights = {a.arm_id: a.weight_bp for a in config.arms}
        new_weights = dict(weights)
        config = router_table(weights, config)
        now = arms_of(config)
        moves = Counter((o, n) for o, n in zip(assigned, now, strict=True) if o != n)
        for src, dst in moves:
            # a key leaves only an arm whose weight fell, for one whose weight rose: so never between
            # two arms whose weights both did not change
            assert new_weights.get(src, 0) < old_weights.get(src, 0), (src, dst)
            assert new_weights.get(dst, 0) > old_weights.get(dst, 0), (src, dst)
        tv = total_variation(old_weights, new_weights) / SLOT_COUNT
        assert sum(moves.values()) / len(KEYS) == pytest.approx(tv, abs=0.01)
        assert arms_of(config) == now  # a second replica (or a restart) from the same table agrees
        assigned = now


@settings(max_examples=30, deadline=None)
@given(st.lists(weighting(), min_size=1, max_size=4), st.sampled_from(KEYS[:5000]))
def test_every_replica_routes_every_key_alike(sequence: list[list[tuple[str, int]]], key: str) -> None:
    config = None
    for weights in sequence:
        config = router_table(weights, config)
        text = config.to_json()
        one = build_snapshot(RouterConfig.from_json(text), endpoints_lookup({}))
        two = build_snapshot(RouterConfig.from_json(text), endpoints_lookup({}))  # another pod, or later
        first, second = one.route(key), two.route(key)
        assert first.arm is not None
        assert second.arm is not None
        assert first.arm.config.arm_id == second.arm.config.arm_id
