"""Which arm a request goes to: pure functions, no I/O.

A request is mapped to a point (u_variant, u_revision) in [0, 1)^2: from the hash of its sticky
key, or from random numbers when it has none. Two stages, each with cumulative buckets in a fixed
order:

1. u_variant picks the variant: variants take [0, w_a), [w_a, w_a + w_b), ... in the order they
   first appear in the config (w = the variant's share of the total weight).
2. u_revision picks the revision inside that variant: revisions take buckets in list order, so the
   canary, listed first, owns [0, w_canary / w_variant).

Consequences for a sticky key (for a fixed salt):
- Same weights: same arm, always.
- Canary weight raised inside a variant (variant total unchanged): only keys of that variant's
  stable revision move, and only into the canary. Lowered: only canary keys move back to stable.
- Revision added at the head of a variant (a new canary at weight w): it takes keys from the
  bottom of the variant's bucket; with the stable at 100 - w, no other key moves.
- Revision removed: its keys move to the revisions of the same variant whose buckets now cover
  them; the buckets after it in the list slide down, so some of their keys move too (remove the
  LAST revision, or drain it to weight 0 first, to move none of them).
- Variant weights changed, added or removed: the variant boundaries move; keys between the old and
  the new boundary change variant, everything else stays. The revision inside the variant uses the
  independent u_revision, so a key that stays in its variant also keeps its revision.
- Arm without ready backends ("redistribute"): only that arm's keys move (to the ready revisions
  of the same variant, else to all ready arms, by weight); they come back when it is ready again.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
from collections.abc import Collection, Sequence
from dataclasses import dataclass

_U64 = float(1 << 64)


def key_point(key: str, salt: str = "") -> tuple[float, float]:
    """Two independent, uniform numbers in [0, 1) from a key: stable across processes and
    versions (blake2b, never Python's randomised `hash`)."""
    digest = hashlib.blake2b(salt.encode() + b"\x00" + key.encode(), digest_size=16).digest()
    return int.from_bytes(digest[:8], "big") / _U64, int.from_bytes(digest[8:], "big") / _U64


@dataclass(frozen=True)
class ArmWeight:
    """The routing-relevant part of an arm: position in config order and its weight."""

    variant: str
    weight: float


def _cumulative(weights: Sequence[float]) -> tuple[float, ...]:
    """Upper bucket bounds normalised to 1 (the last is exactly 1.0)."""
    total = sum(weights)
    bounds, running = [], 0.0
    for w in weights:
        running += w
        bounds.append(running / total)
    bounds[-1] = 1.0
    return tuple(bounds)


def _pick(bounds: Sequence[float], members: Sequence[int], u: float) -> int:
    # bisect_right: a point exactly on a bound belongs to the bucket above it, so [lo, hi).
    return members[min(bisect.bisect_right(bounds, u), len(members) - 1)]


@dataclass(frozen=True)
class _Stage:
    members: tuple[int, ...]
    bounds: tuple[float, ...]

    @classmethod
    def of(cls, members: Sequence[int], weights: Sequence[float]) -> _Stage | None:
        kept = [(m, w) for m, w in zip(members, weights, strict=True) if w > 0]
        if not kept:
            return None
        return cls(tuple(m for m, _ in kept), _cumulative([w for _, w in kept]))

    def pick(self, u: float) -> int:
        return _pick(self.bounds, self.members, u)


class Split:
    """The two-stage bucket table for a list of arms (indices refer to that list)."""

    def __init__(self, arms: Sequence[ArmWeight]) -> None:
        self.arms = tuple(arms)
        variants = list(dict.fromkeys(arm.variant for arm in arms))
        self._variant_of = tuple(variants.index(arm.variant) for arm in arms)
        self._revisions: list[_Stage | None] = []
        variant_weights = []
        for v in variants:
            members = [i for i, arm in enumerate(arms) if arm.variant == v]
            weights = [arms[i].weight for i in members]
            self._revisions.append(_Stage.of(members, weights))
            variant_weights.append(sum(weights))
        self.variants = tuple(variants)
        self._variants = _Stage.of(range(len(variants)), variant_weights)

    def pick(self, u_variant: float, u_revision: float, variant: str | None = None) -> int | None:
        """Arm index for a point; `variant` pins the first stage. None: nothing has weight."""
        if variant is not None:
            if variant not in self.variants:
                return None
            v = self.variants.index(variant)
        elif self._variants is None:
            return None
        else:
            v = self._variants.pick(u_variant)
        stage = self._revisions[v]
        return None if stage is None else stage.pick(u_revision)

    def fallback(
        self, arm: int, available: Collection[int], u_variant: float, u_revision: float
    ) -> int | None:
        """Where a request for an unavailable `arm` goes: a ready revision of the same variant
        (by weight, using u_revision), else any ready arm (by weight, using u_variant)."""
        same = [i for i, v in enumerate(self._variant_of) if v == self._variant_of[arm] and i in available]
        stage = _Stage.of(same, [self.arms[i].weight for i in same])
        if stage is not None:
            return stage.pick(u_revision)
        ready = sorted(available)
        stage = _Stage.of(ready, [self.arms[i].weight for i in ready])
        return None if stage is None else stage.pick(u_variant)


class RoundRobin:
    """Cycles through one arm's ready backends; a new instance per backend set."""

    def __init__(self, backends: Sequence[str]) -> None:
        self.backends = tuple(backends)
        self._counter = itertools.count()

    def next(self) -> str | None:
        if not self.backends:
            return None
        return self.backends[next(self._counter) % len(self.backends)]

    def other_than(self, backend: str) -> str | None:
        """The backend after `backend` in the ring, for the one retry (None if it is the only one).
        Does not advance the shared counter, so the retry does not skew the rotation."""
        if len(self.backends) < 2 or backend not in self.backends:
            return None
        return self.backends[(self.backends.index(backend) + 1) % len(self.backends)]
