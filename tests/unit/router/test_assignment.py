"""The weight and hashing logic as pure functions: tables of cases plus properties over many keys."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from modeldeploy_serving.router.assignment import ArmWeight, RoundRobin, Split, key_point

KEYS = [f"customer-{i}" for i in range(10_000)]


def assign(split: Split, keys: list[str] = KEYS, salt: str = "") -> list[int | None]:
    return [split.pick(*key_point(k, salt)) for k in keys]


def canary(weight: float) -> Split:
    """The canary is listed first, as the operator must list it."""
    return Split([ArmWeight("default", weight), ArmWeight("default", 100 - weight)])


def test_key_point_is_stable_across_processes_and_uniform() -> None:
    # Fixed expectations: a change of hash function would silently reassign every customer.
    assert key_point("customer-42") == key_point("customer-42")
    assert key_point("customer-42") == pytest.approx((0.16128664632004677, 0.11116376394481275))
    assert key_point("customer-42", "churn") != key_point("customer-42")
    us = [key_point(k)[0] for k in KEYS]
    assert all(0.0 <= u < 1.0 for u in us)
    deciles = Counter(int(u * 10) for u in us)
    assert all(900 <= deciles[d] <= 1100 for d in range(10))


@pytest.mark.parametrize(
    ("weights", "point", "expected"),
    [
        ([10, 90], (0.5, 0.05), 0),  # canary owns [0, 0.1) of the revision stage
        ([10, 90], (0.5, 0.1), 1),  # bounds belong to the bucket above: [lo, hi)
        ([10, 90], (0.5, 0.99), 1),
        ([0, 100], (0.5, 0.0), 1),  # a weight-0 arm never receives a key
        ([100, 0], (0.5, 0.999), 0),
        ([50, 50], (0.0, 0.4999), 0),
    ],
)
def test_revision_buckets(weights: list[float], point: tuple[float, float], expected: int) -> None:
    split = Split([ArmWeight("default", w) for w in weights])
    assert split.pick(*point) == expected


@pytest.mark.parametrize(
    ("point", "expected"),
    [
        ((0.10, 0.0), 0),  # variant a owns [0, 0.6); inside it the canary owns [0, 1/6)
        ((0.10, 0.5), 1),
        ((0.59, 0.9), 1),
        ((0.60, 0.0), 2),  # variant b owns [0.6, 1)
        ((0.99, 0.99), 2),
    ],
)
def test_variants_first_then_revisions(point: tuple[float, float], expected: int) -> None:
    split = Split([ArmWeight("a", 10), ArmWeight("a", 50), ArmWeight("b", 40)])
    assert split.pick(*point) == expected


def test_raising_the_canary_only_moves_keys_from_stable_into_canary() -> None:
    before, after = assign(canary(10)), assign(canary(50))
    moves = Counter((b, a) for b, a in zip(before, after, strict=True) if b != a)
    assert set(moves) == {(1, 0)}  # stable -> canary, nothing else
    assert before.count(0) == pytest.approx(1000, abs=150)
    assert after.count(0) == pytest.approx(5000, abs=250)


def test_weight_steps_are_monotone_all_the_way() -> None:
    previous = assign(canary(0))
    for weight in (1, 5, 10, 25, 50, 75, 100):
        current = assign(canary(weight))
        assert all(p == c or (p, c) == (1, 0) for p, c in zip(previous, current, strict=True))
        previous = current
    assert set(previous) == {0}


def test_canary_step_in_one_variant_leaves_the_other_variant_alone() -> None:
    before = assign(Split([ArmWeight("a", 5), ArmWeight("a", 45), ArmWeight("b", 50)]))
    after = assign(Split([ArmWeight("a", 25), ArmWeight("a", 25), ArmWeight("b", 50)]))
    moves = {(b, a) for b, a in zip(before, after, strict=True) if b != a}
    assert moves == {(1, 0)}


def test_adding_a_canary_at_the_head_takes_keys_only_from_its_variant() -> None:
    before = assign(Split([ArmWeight("a", 50), ArmWeight("b", 50)]))
    after = assign(Split([ArmWeight("a", 10), ArmWeight("a", 40), ArmWeight("b", 50)]))
    relabel = {0: 1, 1: 2}  # same arms, shifted by the new head
    moves = {(relabel[b], a) for b, a in zip(before, after, strict=True) if b is not None and relabel[b] != a}
    assert moves == {(1, 0)}


def test_removing_a_variant_only_moves_its_own_keys() -> None:
    before = assign(Split([ArmWeight("a", 50), ArmWeight("b", 50)]))
    after = assign(Split([ArmWeight("a", 50), ArmWeight("b", 0)]))
    assert {(b, a) for b, a in zip(before, after, strict=True) if b != a} == {(1, 0)}


@pytest.mark.parametrize("weights", [[10, 90], [33.3, 33.3, 33.4], [1, 0, 99], [25, 25, 25, 25]])
def test_random_points_follow_the_weights(weights: list[float]) -> None:
    rng = random.Random(7)
    split = Split([ArmWeight(f"v{i}", w) for i, w in enumerate(weights)])
    n = 40_000
    counts = Counter(split.pick(rng.random(), rng.random()) for _ in range(n))
    for i, w in enumerate(weights):
        expected = n * w / 100
        assert counts[i] == pytest.approx(expected, abs=5 * (n * 0.25) ** 0.5)


def test_fallback_prefers_the_same_variant_then_any_ready_arm() -> None:
    split = Split([ArmWeight("a", 10), ArmWeight("a", 40), ArmWeight("b", 50)])
    assert split.fallback(0, {1, 2}, 0.1, 0.01) == 1  # a's canary down: a's stable
    assert split.fallback(0, {2}, 0.1, 0.01) == 2  # all of a down: b
    assert split.fallback(0, set(), 0.1, 0.01) is None


def test_fallback_moves_only_the_keys_of_the_unavailable_arm() -> None:
    split = Split([ArmWeight("a", 30), ArmWeight("b", 30), ArmWeight("c", 40)])
    available = {0, 2}
    routed = []
    for key in KEYS:
        point = key_point(key)
        arm = split.pick(*point)
        assert arm is not None
        routed.append((arm, arm if arm in available else split.fallback(arm, available, *point)))
    assert all(before == after for before, after in routed if before != 1)
    displaced = Counter(after for before, after in routed if before == 1)
    assert set(displaced) == {0, 2}
    assert displaced[0] / displaced[2] == pytest.approx(30 / 40, rel=0.2)


def test_pinned_variant_uses_its_revision_weights() -> None:
    split = Split([ArmWeight("a", 100), ArmWeight("b", 0)])
    assert split.pick(0.5, 0.5, "a") == 0
    assert split.pick(0.5, 0.5, "b") is None  # b has no weight: nothing to pin to
    assert split.pick(0.5, 0.5, "zzz") is None


def test_round_robin_cycles_and_offers_another_backend() -> None:
    rr = RoundRobin(["a:1", "b:1", "c:1"])
    assert [rr.next() for _ in range(6)] == ["a:1", "b:1", "c:1"] * 2
    assert rr.other_than("a:1") == "b:1"
    assert rr.other_than("c:1") == "a:1"
    assert rr.next() == "a:1"  # the retry did not advance the rotation
    assert RoundRobin(["a:1"]).other_than("a:1") is None
    assert RoundRobin([]).next() is None
