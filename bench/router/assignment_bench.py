"""Sticky assignment under weight changes: the slot table vs weighted rendezvous hashing vs cumulative
buckets, measured against the minimum (the total variation distance between old and new weights).

    .venv/bin/python bench/router/assignment_bench.py [--keys 100000] [--steps 300] [--seed 1]

For each method and each weight change, over the same keys: the share of keys that changed arm, the
TV distance, and whether any key moved between two arms whose weights both did not change (or out of
an arm that grew, into one that shrank). Then the slot table's size in the ConfigMap after a long
random sequence, and the router's per-request cost of choosing an arm. Prints Markdown tables (the
numbers in docs/router.md come from this script).
"""

from __future__ import annotations

import argparse
import hashlib
import math
import random
import statistics
import time
from collections.abc import Sequence
from typing import Protocol

import numpy as np

from modeldeploy_contract.router_config import RouterConfig
from modeldeploy_contract.slots import SLOT_COUNT, SlotTable, rebalance, total_variation
from modeldeploy_serving.router.assignment import key_hash
from modeldeploy_serving.router.state import build_snapshot, endpoints_lookup

Weights = list[tuple[str, int]]


class Method(Protocol):
    def __init__(self, keys: Sequence[str]) -> None: ...

    def assign(self, weights: Weights) -> np.ndarray: ...


POOL = ("a/r1", "a/r2", "b/r1", "c/r1", "c/r2", "d/r1")


def uniforms(keys: Sequence[str], salt: str) -> np.ndarray:
    return np.array([int.from_bytes(hashlib.blake2b(f"{salt}\0{k}".encode(), digest_size=8).digest(), "big")
                     for k in keys], dtype=np.float64) / 2.0**64  # fmt: skip


class Cumulative:
    """The old router: cumulative buckets over the arms in a fixed (sorted) order."""

    def __init__(self, keys: Sequence[str]) -> None:
        self.u = uniforms(keys, "cumulative")

    def assign(self, weights: Weights) -> np.ndarray:
        ordered = sorted(weights)
        bounds = np.cumsum([w for _, w in ordered]) / SLOT_COUNT
        index = np.minimum(np.searchsorted(bounds, self.u, side="right"), len(ordered) - 1)
        return np.asarray(np.array([POOL.index(arm) for arm, _ in ordered])[index])


class Rendezvous:
    """Weighted rendezvous hashing: the arm with the lowest -ln(u(key, arm)) / weight."""

    def __init__(self, keys: Sequence[str]) -> None:
        self.score = {arm: -np.log(np.maximum(uniforms(keys, arm), 1e-300)) for arm in POOL}

    def assign(self, weights: Weights) -> np.ndarray:
        live = [(arm, w) for arm, w in weights if w > 0]
        stacked = np.stack([self.score[arm] / w for arm, w in live])
        return np.asarray(np.array([POOL.index(arm) for arm, _ in live])[np.argmin(stacked, axis=0)])


class Slots:
    """The slot table: the operator's rebalance of the previous table; the key's slot picks the arm."""

    def __init__(self, keys: Sequence[str]) -> None:
        self.slot = np.array([key_hash(k, "slots")[0] for k in keys])
        self.table: SlotTable | None = None

    def assign(self, weights: Weights) -> np.ndarray:
        self.table = rebalance(self.table, weights)
        return np.asarray(np.array([POOL.index(arm) for arm in self.table.owners])[self.slot])


def random_weights(rng: random.Random) -> Weights:
    arms = rng.sample(POOL, rng.randint(2, len(POOL)))
    cuts = sorted(rng.randint(0, SLOT_COUNT) for _ in range(len(arms) - 1))
    bounds = [0, *cuts, SLOT_COUNT]
    return [(arm, bounds[i + 1] - bounds[i]) for i, arm in enumerate(arms)]


def nudge(rng: random.Random, weights: Weights) -> Weights:
    """A small change, as a rollout or an experiment makes: move 1-20 points between two arms."""
    current = dict(weights)
    src, dst = rng.sample(list(current), 2)
    amount = min(current[src], rng.randint(1, 20) * 100)
    current[src] -= amount
    current[dst] += amount
    return list(current.items())


def measure(method: Method, sequence: Sequence[Weights]) -> list[tuple[float, float, bool]]:
    """(moved share, TV share, any forbidden move) per change."""
    assign = method.assign
    rows = []
    before, old = assign(sequence[0]), dict(sequence[0])
    for weights in sequence[1:]:
        after, new = assign(weights), dict(weights)
        changed = before != after
        forbidden = False
        for src, dst in set(zip(before[changed].tolist(), after[changed].tolist(), strict=True)):
            fell = new.get(POOL[src], 0) < old.get(POOL[src], 0)
            rose = new.get(POOL[dst], 0) > old.get(POOL[dst], 0)
            forbidden |= not (fell and rose)
        rows.append((float(changed.mean()), total_variation(old, new) / SLOT_COUNT, forbidden))
        before, old = after, new
    return rows


def summarise(name: str, rows: list[tuple[float, float, bool]]) -> str:
    excess = [100 * (moved - tv) for moved, tv, _ in rows]
    bad = sum(forbidden for *_, forbidden in rows)
    return (f"| {name} | {len(rows)} | {statistics.mean(excess):+.2f} | {max(excess):+.2f} | "
            f"{max(abs(e) for e in excess):.2f} | {bad} |")  # fmt: skip


METHODS: dict[str, type[Method]] = {
    "cumulative buckets": Cumulative,
    "weighted rendezvous": Rendezvous,
    "slot table": Slots,
}


def issue_case(keys: Sequence[str]) -> None:
    print(f"\nThe issue's case, A/B/C 50/30/20 -> 60/30/10, {len(keys):,} keys (TV 10.00 %):\n")
    print("| method | moved | of which from B or into B |")
    print("|---|---|---|")
    case = [
        [("a/r1", 5000), ("b/r1", 3000), ("c/r1", 2000)],
        [("a/r1", 6000), ("b/r1", 3000), ("c/r1", 1000)],
    ]
    for name, cls in METHODS.items():
        method = cls(keys)
        before, after = method.assign(case[0]), method.assign(case[1])
        changed = before != after
        b = POOL.index("b/r1")
        via_b = changed & ((before == b) | (after == b))
        print(f"| {name} | {100 * changed.mean():.2f} % | {100 * via_b.mean():.2f} % |")


def sequences(keys: Sequence[str], rng: random.Random, steps: int) -> None:
    scenarios = {"random weightings (arms come and go)": [random_weights(rng) for _ in range(steps + 1)]}
    walk = [random_weights(rng)]
    for _ in range(steps):
        walk.append(nudge(rng, walk[-1]))
    scenarios["small steps between two arms"] = walk
    several = [[(arm, w) for arm, w in zip(POOL, (2000, 2000, 1500, 1500, 1500, 1500), strict=True)]]
    for _ in range(steps):
        current = several[-1]
        for _ in range(3):  # three pairwise moves at once: several weights change in one table
            current = nudge(rng, current)
        several.append(current)
    scenarios["three moves at once, six arms"] = several
    for title, sequence in scenarios.items():
        print(f"\n{title}: moved share minus TV distance, in points ({len(keys):,} keys)\n")
        print("| method | changes | mean | max | max abs | changes with a forbidden move |")
        print("|---|---|---|---|---|---|")
        for name, cls in METHODS.items():
            print(summarise(name, measure(cls(keys), sequence)))


def router_config(weights: Weights, table: SlotTable) -> RouterConfig:
    arms = [
        {"variant": a.split("/")[0], "revision": a.split("/")[1], "weight_bp": w,
         "service": f"churn-{a.replace('/', '-')}", "model_name": "churn"}
        for a, w in weights
    ]  # fmt: skip
    return RouterConfig.model_validate(
        {
            "deployment": {"namespace": "shop", "name": "churn"},
            "arms": arms,
            "slots": table.encode([arm for arm, _ in weights]),
        }
    )


def table_sizes(rng: random.Random) -> RouterConfig:
    """The table in the ConfigMap after long sequences of changes; returns the last table."""
    print("\nslot table size after N changes (6 arms; worst case: every slot its own run, 10,000 runs):\n")
    print("| sequence | changes | runs | `slots` bytes | router.json bytes |")
    print("|---|---|---|---|---|")
    small = [random_weights(rng)]
    for _ in range(10_000):
        small.append(nudge(rng, small[-1]))
    config = None
    for title, sequence in (
        ("random weightings", [random_weights(rng) for _ in range(1001)]),
        ("small steps", small),
    ):
        table: SlotTable | None = None
        for step, weights in enumerate(sequence):
            table = rebalance(table, weights)
            if step in (0, 10, 100, 1000, 10_000):
                config = router_config(weights, table)
                runs, size = len(table.runs()), len(config.slots or "")
                print(f"| {title} | {step} | {runs} | {size} | {len(config.to_json())} |")
    assert config is not None
    return config


def hot_path(config: RouterConfig, keys: Sequence[str]) -> None:
    """The arm for one sticky request."""
    backends = endpoints_lookup({f"churn-{a.replace('/', '-')}": ("127.0.0.1:1",) for a in POOL})
    snapshot = build_snapshot(config, backends)
    sample = keys[:20_000]
    timings = {}
    for label, fn in (
        ("key_hash (blake2b -> slot, u)", lambda k: key_hash(k, "churn")),
        ("assignment.pick (slot lookup)", lambda k, s=snapshot: s.assignment.pick(1234, 0.5)),
        ("Snapshot.route (hash + lookup + ready check)", lambda k, s=snapshot: s.route(k)),
    ):
        best = math.inf
        for _ in range(5):
            started = time.perf_counter()
            for k in sample:
                fn(k)
            best = min(best, (time.perf_counter() - started) / len(sample))
        timings[label] = best
    print("\nper-request arm choice (best of 5 x 20,000 keys):\n")
    print("| step | µs |")
    print("|---|---|")
    for label, seconds in timings.items():
        print(f"| {label} | {seconds * 1e6:.2f} |")
    started = time.perf_counter()
    build_snapshot(config, backends)
    elapsed = time.perf_counter() - started
    print(f"\nbuilding a snapshot from a table (decode 10,000 slots): {1e3 * elapsed:.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    keys = [f"user-{i}" for i in range(args.keys)]
    rng = random.Random(args.seed)  # noqa: S311 (a benchmark, not crypto)
    issue_case(keys)
    sequences(keys, rng, args.steps)
    hot_path(table_sizes(rng), keys)


if __name__ == "__main__":
    main()
