"""Which arm a request goes to: pure functions, no I/O.

A request's sticky key is hashed (blake2b of salt + key, never Python's randomised `hash`) to a slot
in 0..9999 and an independent number u in [0, 1); without a key both are random. The routing table
says which arm owns each slot (`RouterConfig.slot_arms()`: the operator's slot table, one slot per
basis point of weight), so choosing the arm is one tuple lookup, O(1) whatever the number of arms.

Consequences for a sticky key (for a fixed salt), all from the operator's `rebalance`
(`modeldeploy_contract.slots`):
- Same table: same arm, in every router replica and after a restart (the table is the ConfigMap's).
- Weights changed, for any number of arms and variants at once (a canary step is a change between
  two arms of one variant): a key moves only from an arm whose weight fell to one whose weight rose;
  the share of keys that move is the total variation distance between the old and new weights.
  Arms whose weight did not change keep all their keys.
- Arm added: it takes slots only from arms whose weight fell. Arm removed (or set to 0): only its
  own keys move, to the arms whose weight rose.
- Arm without ready backends ("redistribute"): only that arm's keys move (to the ready revisions
  of the same variant, else to all ready arms, by weight, using u); they come back when it is ready.
- Pinned to a variant (the pin header): the key's own arm when it belongs to that variant, else a
  revision of the variant by weight, using u.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from modeldeploy_contract.slots import SLOT_COUNT

_U64 = float(1 << 64)


def key_hash(key: str, salt: str = "") -> tuple[int, float]:
    """(slot in 0..SLOT_COUNT-1, u in [0, 1)) from a key: uniform, independent of each other, and
    stable across processes and versions."""
    digest = hashlib.blake2b(salt.encode() + b"\x00" + key.encode(), digest_size=16).digest()
    slot = (int.from_bytes(digest[:8], "big") * SLOT_COUNT) >> 64
    return slot, int.from_bytes(digest[8:], "big") / _U64


@dataclass(frozen=True)
class ArmWeight:
    """The routing-relevant part of an arm: its variant and weight in basis points."""

    variant: str
    weight_bp: int


@dataclass(frozen=True)
class _Stage:
    """Cumulative buckets over some arms, by weight: for pins and fallbacks (not the hot path)."""

    members: tuple[int, ...]
    bounds: tuple[int, ...]
    total: int

    @classmethod
    def of(cls, members: Sequence[int], weights: Sequence[int]) -> _Stage | None:
        kept = [(m, w) for m, w in zip(members, weights, strict=True) if w > 0]
        if not kept:
            return None
        bounds = tuple(itertools.accumulate(w for _, w in kept))
        return cls(tuple(m for m, _ in kept), bounds, bounds[-1])

    def pick(self, u: float) -> int:
        # bisect_right: a point exactly on a bound belongs to the bucket above it, so [lo, hi).
        position = bisect.bisect_right(self.bounds, u * self.total)
        return self.members[min(position, len(self.members) - 1)]


class Assignment:
    """The slot table of one routing table plus its arms (indices refer to the config's arm list)."""

    def __init__(self, slot_arms: Sequence[int], arms: Sequence[ArmWeight]) -> None:
        if len(slot_arms) != SLOT_COUNT:
            raise ValueError(f"a slot table has {SLOT_COUNT} slots, not {len(slot_arms)}")
        self.arms = tuple(arms)
        self.slots = tuple(slot_arms)
        self.variants = tuple(dict.fromkeys(arm.variant for arm in arms))
        self._variant_of = tuple(self.variants.index(arm.variant) for arm in arms)
        self._revisions = tuple(
            _Stage.of(members, [arms[i].weight_bp for i in members])
            for v in range(len(self.variants))
            for members in [[i for i, of in enumerate(self._variant_of) if of == v]]
        )

    def pick(self, slot: int, u: float, variant: str | None = None) -> int | None:
        """Arm index for a key's (slot, u); `variant` pins the variant. None: nothing to pick (a pin to
        an unknown variant, or to one without weight)."""
        arm = self.slots[slot]
        if variant is None:
            return arm
        if variant not in self.variants:
            return None
        v = self.variants.index(variant)
        if self._variant_of[arm] == v:
            return arm
        stage = self._revisions[v]
        return None if stage is None else stage.pick(u)

    def fallback(self, arm: int, available: Collection[int], u: float) -> int | None:
        """Where a request for an unavailable `arm` goes: a ready revision of the same variant (by
        weight), else any ready arm (by weight)."""
        same = [i for i, v in enumerate(self._variant_of) if v == self._variant_of[arm] and i in available]
        stage = _Stage.of(same, [self.arms[i].weight_bp for i in same])
        if stage is not None:
            return stage.pick(u)
        ready = sorted(available)
        stage = _Stage.of(ready, [self.arms[i].weight_bp for i in ready])
        return None if stage is None else stage.pick(u)


class RoundRobin:
    """Cycles through one arm's ready backends; a new instance per backend set.

    `avoid`: backends that just refused a connection (UpstreamPool.suspects). They are skipped while
    another backend is there to take the request, and tried as usual when every backend is in it
    (a suspect mark is a guess: the pod may be back). nginx's upstream does the same by default
    (max_fails=1 with fail_timeout), Envoy with outlier detection.

    >>> rr = RoundRobin(["a:1", "b:1", "c:1"])
    >>> [rr.next(avoid={"b:1"}) for _ in range(3)]  # b's turn goes to the next one
    ['a:1', 'c:1', 'c:1']
    >>> rr.other_than("a:1", avoid={"b:1"}), rr.other_than("a:1", avoid={"b:1", "c:1"})
    ('c:1', 'b:1')
    """

    def __init__(self, backends: Sequence[str]) -> None:
        self.backends = tuple(backends)
        self._counter = itertools.count()

    def next(self, avoid: Collection[str] = ()) -> str | None:
        if not self.backends:
            return None
        n = len(self.backends)
        turn = next(self._counter) % n
        if avoid:
            for k in range(n):
                backend = self.backends[(turn + k) % n]
                if backend not in avoid:
                    return backend
        return self.backends[turn]

    def other_than(self, backend: str, avoid: Collection[str] = ()) -> str | None:
        """A backend after `backend` in the ring, for the one retry, skipping `avoid` where it can
        (None if `backend` is the only one). Does not advance the shared counter, so the retry does
        not skew the rotation."""
        n = len(self.backends)
        if n < 2 or backend not in self.backends:
            return None
        start = self.backends.index(backend) + 1
        ring = [self.backends[(start + k) % n] for k in range(n - 1)]
        return next((b for b in ring if b not in avoid), ring[0])
