"""The slot table: which arm owns each slot of the sticky-key hash, edited minimally on every change.

The router hashes a sticky key to one of `SLOT_COUNT` slots; the slot's owner is the key's arm (one
list lookup per request). There is one slot per basis point, so an arm of weight w bp owns exactly w
slots and the split is exact. The operator computes every new table from the previous one with
`rebalance`, a pure function of (previous table, new weights), and writes it into the router table
(`RouterConfig.slots`, in the ConfigMap), so every router replica, and a restarted router, maps every
key to the same arm.

`rebalance` moves a slot only from an arm whose weight fell (it holds more slots than its new weight)
to an arm whose weight rose, and only as many as the difference. So the share of slots, and of keys,
that change arm is the total variation distance between the old and new weights
(`total_variation`, the sum of the rises), the least any assignment can move; arms whose weight did not
change keep every key, whatever happens to the others.

Worked examples, with a 10-slot table to keep them short (the router's has 10,000; weights in slots):

    first table (no previous): contiguous runs in the given arm order
        A 5, B 3, C 2                    A A A A A B B B C C
    A/B/C 5/3/2 -> 6/3/1: C holds one slot too many and frees its highest (9); A takes it
                                         A A A A A B B B C A      moved 1 of 10 = TV 10 %; B untouched
    -> 4/3/3: A frees its two highest (9, then 4); C takes them in ascending order
                                         A A A A C B B B C C      moved 2 = TV 20 %
    arm D added at 2, A 4 -> 2: A frees 3 and 2; D takes them
                                         A A D D C B B B C C      only A's keys move, into D
    arm B removed (weights A 2, D 2, C 6): B's slots 5, 6, 7 are freed; C takes them
                                         A A D D C C C C C C      only B's keys move
    several arms grow at once (A 2 -> 4, D 2 -> 3, C 6 -> 3): C frees 9, 8, 7; the growing arms take
    the freed slots in ascending order, in the order the weights list them (A first, then D)
                                         A A D D C C C A A D

Encoded (`encode`) as run lengths over arm indices, "<index>:<length>" in slot order, comma
separated: the last table with arm order (A, C, D) is "0:2,2:2,1:3,0:2,2:1". A table of 10,000 slots has
at most 10,000 runs, so the string is at most ~70 KB (a ConfigMap holds 1 MiB); measured sizes after
long random sequences of weight changes are in docs/router.md.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .weights import BASIS_POINTS_TOTAL

SLOT_COUNT = BASIS_POINTS_TOTAL
"""Slots of the router's table: one per basis point, so an arm owns exactly `weight_bp` slots."""

Weights = Sequence[tuple[str, int]]
"""(arm id, weight) in a fixed order; the weights are slot counts and sum to the table's size."""


@dataclass(frozen=True)
class SlotTable:
    """The owner (an arm id) of every slot, slot 0 first."""

    owners: tuple[str, ...]

    @property
    def size(self) -> int:
        return len(self.owners)

    def counts(self) -> dict[str, int]:
        """Slots held per arm (arms holding none are absent)."""
        return dict(Counter(self.owners))

    def runs(self) -> tuple[tuple[str, int], ...]:
        """(arm id, length) of each run of equal owners, in slot order."""
        # (groupby: the operator encodes a table of 10,000 slots on every pass; a loop in Python
        # over them was 1.6 ms of it)
        return tuple((owner, len(list(run))) for owner, run in itertools.groupby(self.owners))

    def encode(self, arm_ids: Sequence[str]) -> str:
        """Run lengths over indices into `arm_ids`: "<index>:<length>,..." in slot order."""
        index = {arm_id: i for i, arm_id in enumerate(arm_ids)}
        missing = set(self.owners) - set(index)
        if missing:
            raise ValueError(f"slot owners {sorted(missing)} are not among the arms {list(arm_ids)}")
        return ",".join(f"{index[owner]}:{length}" for owner, length in self.runs())

    @classmethod
    def decode(cls, text: str, arm_ids: Sequence[str], size: int = SLOT_COUNT) -> SlotTable:
        """The inverse of `encode`; raises ValueError for anything but a well-formed table of `size`."""
        return cls(tuple(arm_ids[i] for i in decode_indices(text, len(arm_ids), size)))


def decode_runs(text: str, arm_count: int, size: int = SLOT_COUNT) -> tuple[tuple[int, int], ...]:
    """(arm index, length) of every run, from the run-length text; raises ValueError when the text is
    malformed, names an arm index outside 0..arm_count-1, or does not cover exactly `size` slots."""
    runs: list[tuple[int, int]] = []
    covered = 0
    for token in text.split(","):
        index, sep, length = token.partition(":")
        if not (sep and index.isdigit() and length.isdigit() and index.isascii() and length.isascii()):
            raise ValueError(f"slot run {token[:40]!r} is not <arm index>:<length>")
        arm, count = int(index), int(length)
        if arm >= arm_count or count < 1:
            raise ValueError(f"slot run {token!r}: arm index out of range or empty run")
        if covered + count > size:
            raise ValueError(f"slot runs cover more than {size} slots")
        covered += count
        runs.append((arm, count))
    if covered != size:
        raise ValueError(f"slot runs cover {covered} slots, not {size}")
    return tuple(runs)


def decode_indices(text: str, arm_count: int, size: int = SLOT_COUNT) -> tuple[int, ...]:
    """The arm index of every slot, from the run-length text; raises ValueError as `decode_runs`."""
    slots: list[int] = []
    for arm, count in decode_runs(text, arm_count, size):
        slots.extend([arm] * count)
    return tuple(slots)


def _check(weights: Weights) -> None:
    ids = [arm_id for arm_id, _ in weights]
    if len(set(ids)) != len(ids):
        raise ValueError(f"duplicate arms: {ids}")
    if any(weight < 0 for _, weight in weights) or sum(weight for _, weight in weights) <= 0:
        raise ValueError(f"weights must be >= 0 with a positive sum: {list(weights)}")


def initial_layout(weights: Weights) -> SlotTable:
    """The first table, and the fallback when the previous one is missing or unusable: contiguous runs
    in the order of `weights` (arm 0 owns [0, w0), arm 1 [w0, w0 + w1), ...). Deterministic, so every
    operator replica computes the same one."""
    _check(weights)
    return SlotTable(tuple(arm_id for arm_id, weight in weights for _ in range(weight)))


def rebalance(previous: SlotTable | None, weights: Weights) -> SlotTable:
    """The next table: `previous` edited so that each arm owns as many slots as its new weight, moving
    the fewest slots. `previous` None: `initial_layout(weights)`.

    1. Shrink: scanning from the highest slot down, a slot whose arm holds more slots than its new
       weight is freed (arms absent from `weights` have weight 0). Each shrinking arm so gives up its
       highest slots, which keeps runs long (a small encoding).
    2. Grow: arms in the order of `weights` take their shortfall from the freed slots, lowest first.

    Only freed slots change owner, and each goes from an arm whose weight fell to one whose weight
    rose: moved slots = `total_variation(previous.counts(), weights)`. Same weights: the same table.
    Pure and deterministic (the same inputs give the same table in every process). Worked examples in
    the module docstring.
    """
    _check(weights)
    if previous is None:
        return initial_layout(weights)
    if sum(weight for _, weight in weights) != previous.size:
        raise ValueError(f"weights sum to {sum(w for _, w in weights)}, the table has {previous.size} slots")
    target = dict(weights)
    held = Counter(previous.owners)
    if all(held[arm] == target.get(arm, 0) for arm in held.keys() | target.keys()):
        return previous  # the same weights: the same table (what every idle pass of the operator asks)
    owners: list[str] = list(previous.owners)
    freed: list[int] = []
    for slot in range(len(owners) - 1, -1, -1):
        arm = owners[slot]
        if held[arm] > target.get(arm, 0):
            held[arm] -= 1
            freed.append(slot)
    freed.reverse()
    taken = 0
    for arm, weight in weights:
        for _ in range(weight - held[arm]):
            owners[freed[taken]] = arm
            taken += 1
    return SlotTable(tuple(owners))


def total_variation(old: Mapping[str, int], new: Mapping[str, int]) -> int:
    """Total variation distance between two weightings of the same total, in their unit (slots or bp):
    the sum of the rises (= the sum of the falls). The fewest slots any reassignment can move.

    >>> total_variation({"A": 5000, "B": 3000, "C": 2000}, {"A": 6000, "B": 3000, "C": 1000})
    1000
    """
    return sum(max(0, weight - old.get(arm, 0)) for arm, weight in new.items())


def moved_slots(before: SlotTable, after: SlotTable) -> int:
    """Slots whose owner differs between two tables of the same size."""
    return sum(a != b for a, b in zip(before.owners, after.owners, strict=True))
