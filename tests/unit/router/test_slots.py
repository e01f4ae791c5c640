"""The slot table the operator edits (`rebalance`): worked examples as tables, then properties over
random sequences of weight changes (hypothesis)."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modeldeploy_contract.slots import (
    SLOT_COUNT,
    SlotTable,
    decode_indices,
    moved_slots,
    rebalance,
    total_variation,
)


def table(text: str) -> SlotTable:
    """'A A B' -> a SlotTable of three slots."""
    return SlotTable(tuple(text.split()))


def weights(text: str) -> list[tuple[str, int]]:
    """'A5 B3 C2' -> [("A", 5), ("B", 3), ("C", 2)]."""
    return [(item[0], int(item[1:])) for item in text.split()]


# The module docstring's worked examples, in argo-rollouts' table style: (name, previous, weights, next).
WORKED = [
    ("first table: runs in arm order", None, "A5 B3 C2", "A A A A A B B B C C"),
    ("first table: zero weights own nothing", None, "A0 B10 C0", "B B B B B B B B B B"),
    ("same weights: same table", "A A A A A B B B C C", "A5 B3 C2", "A A A A A B B B C C"),
    ("5/3/2 -> 6/3/1: C's highest slot to A", "A A A A A B B B C C", "A6 B3 C1", "A A A A A B B B C A"),
    ("-> 4/3/3: A frees 9 then 4, C takes both", "A A A A A B B B C A", "A4 B3 C3", "A A A A C B B B C C"),
    (
        "arm D added, A 4 -> 2: D takes A's top two",
        "A A A A C B B B C C",
        "A2 D2 B3 C3",
        "A A D D C B B B C C",
    ),
    ("arm B removed: only B's slots move", "A A D D C B B B C C", "A2 D2 C6", "A A D D C C C C C C"),
    (
        "two grow: in weights order, lowest freed first",
        "A A D D C C C C C C",
        "A4 D3 C3",
        "A A D D C C C A A D",
    ),
    ("order of weights decides who grows first", "A A D D C C C C C C", "D3 A4 C3", "A A D D C C C D A A"),
    ("canary step 10 -> 50 %: stable to canary", "c s s s s s s s s s", "c5 s5", "c s s s s s c c c c"),
    ("promotion: canary takes all, stable to 0", "c s s s s s c c c c", "c10 s0", "c c c c c c c c c c"),
    ("every arm replaced", "A A B B B", "X2 Y3", "X X Y Y Y"),
]


@pytest.mark.parametrize(("name", "previous", "new", "expected"), WORKED, ids=[w[0] for w in WORKED])
def test_worked_examples(name: str, previous: str | None, new: str, expected: str) -> None:
    before = None if previous is None else table(previous)
    after = rebalance(before, weights(new))
    assert " ".join(after.owners) == expected, name
    assert after.counts() == {arm: w for arm, w in weights(new) if w}
    if before is not None:
        assert moved_slots(before, after) == total_variation(before.counts(), dict(weights(new)))


@pytest.mark.parametrize(
    ("owners", "arm_ids", "encoded"),
    [
        ("A A D D C C C A A D", ["A", "C", "D"], "0:2,2:2,1:3,0:2,2:1"),  # the docstring's example
        ("A A A", ["A"], "0:3"),
        ("B A B", ["A", "B"], "1:1,0:1,1:1"),
        ("A A B", ["B", "A", "Z"], "1:2,0:1"),  # an arm with no slot is simply never named
    ],
)
def test_encoding_is_run_lengths_over_arm_indices(owners: str, arm_ids: list[str], encoded: str) -> None:
    slots = table(owners)
    assert slots.encode(arm_ids) == encoded
    assert SlotTable.decode(encoded, arm_ids, size=slots.size) == slots


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "is not <arm index>:<length>"),
        ("0:5,1", "is not <arm index>:<length>"),
        ("0:-1,0:11", "is not <arm index>:<length>"),
        ("0:٣,0:7", "is not <arm index>:<length>"),  # unicode digits are not digits here
        ("0:0,0:10", "empty run"),
        ("2:10", "out of range"),
        ("0:9", "cover 9 slots, not 10"),
        ("0:5,1:6", "more than 10"),
    ],
)
def test_malformed_encodings_are_refused(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        decode_indices(text, 2, size=10)


def test_encode_refuses_an_owner_that_is_not_an_arm() -> None:
    with pytest.raises(ValueError, match="not among the arms"):
        table("A B").encode(["A"])


@pytest.mark.parametrize(
    ("previous", "new", "message"),
    [
        (None, "A0 B0", "positive sum"),
        (None, "A5 A5", "duplicate"),
        (None, "A-1 B11", "must be >= 0"),
        ("A A B", "A2 B2", "the table has 3 slots"),
    ],
)
def test_rebalance_refuses_inconsistent_weights(previous: str | None, new: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        rebalance(None if previous is None else table(previous), weights(new))


def test_total_variation_is_the_sum_of_the_rises() -> None:
    # the example: A/B/C 50/30/20 -> 60/30/10 moves 10 %, not the 21 % cumulative buckets moved
    assert total_variation({"A": 5000, "B": 3000, "C": 2000}, {"A": 6000, "B": 3000, "C": 1000}) == 1000
    assert total_variation({"A": 10_000}, {"A": 0, "B": 10_000}) == 10_000  # a new arm takes everything
    assert total_variation({"A": 5000, "B": 5000}, {"A": 5000, "B": 5000}) == 0


def test_a_full_size_table_stays_small_in_a_config_map() -> None:
    # worst case: every slot its own run (alternating arms), 10,000 runs
    alternating = SlotTable(tuple("AB"[i % 2] for i in range(SLOT_COUNT)))
    assert len(alternating.encode(["A", "B"])) < 50_000  # a ConfigMap holds 1 MiB


# --- properties over random sequences of weight changes ---------------------------------------------

POOL = ("a/r1", "a/r2", "b/r1", "b/r2", "c/r1", "d/r1")


@st.composite
def weighting(draw: st.DrawFn, total: int = SLOT_COUNT) -> list[tuple[str, int]]:
    """Some arms of the pool (in a random order) with weights summing to `total`; zeros included."""
    arms = draw(st.lists(st.sampled_from(POOL), min_size=1, max_size=len(POOL), unique=True))
    cuts = sorted(draw(st.lists(st.integers(0, total), min_size=len(arms) - 1, max_size=len(arms) - 1)))
    bounds = [0, *cuts, total]
    return [(arm, bounds[i + 1] - bounds[i]) for i, arm in enumerate(arms)]


@settings(max_examples=150, deadline=None)
@given(st.lists(weighting(), min_size=1, max_size=8))
def test_rebalance_moves_the_minimum_and_only_from_shrinking_to_growing_arms(
    sequence: list[list[tuple[str, int]]],
) -> None:
    current = rebalance(None, sequence[0])
    for new in sequence[1:]:
        old = current.counts()
        target = dict(new)
        current_next = rebalance(current, new)
        moves = Counter((a, b) for a, b in zip(current.owners, current_next.owners, strict=True) if a != b)
        for (src, dst), _count in moves.items():
            assert old.get(src, 0) > target.get(src, 0), f"{src} did not shrink but lost slots"
            assert target.get(dst, 0) > old.get(dst, 0), f"{dst} did not grow but gained slots"
        assert sum(moves.values()) == total_variation(old, target)
        assert current_next.counts() == {arm: w for arm, w in new if w}
        assert rebalance(current_next, new) == current_next  # same weights again: nothing moves
        current = current_next


@settings(max_examples=100, deadline=None)
@given(st.lists(weighting(), min_size=1, max_size=6))
def test_rebalance_is_a_pure_function(sequence: list[list[tuple[str, int]]]) -> None:
    one = two = None
    for new in sequence:
        one, two = rebalance(one, new), rebalance(two, new)
        assert one == two
        arm_ids = [arm for arm, _ in new]
        assert SlotTable.decode(one.encode(arm_ids), arm_ids) == one  # survives the ConfigMap
