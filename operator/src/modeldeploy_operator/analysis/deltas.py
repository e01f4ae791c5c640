"""Counter increases between two scrapes of a group of pods, safe against pod restarts.

Rules (close to Prometheus' `increase`, but exact: two scrapes, no extrapolation):
- A pod seen in both scrapes contributes current - previous for every series.
- A pod that restarted in between (its process start time changed, or any counter went down)
  contributes its current values: everything it counted since the restart, which lies inside the
  interval. A counter never yields a negative increase.
- A series that appeared in between on a pod seen before counts from zero (prometheus_client
  creates a labelled series at its first increment, e.g. the first 500).
- A pod not seen in the previous scrape is left out: its counters may hold traffic from before the
  interval. It takes part from the next reading on. Pods gone since the previous scrape are lost.
Several pods (and several label sets, e.g. protocol, code) are summed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from .scrape import GroupScrape, PodMetrics

PROCESS_START = "process_start_time_seconds"
# Histogram `_sum`s are left out: they may go down (negative observations); counts never do.
_COUNTER_SUFFIXES = ("_total", "_count", "_bucket")

LabelFilter = Callable[[Mapping[str, str]], bool]


def _any_labels(_: Mapping[str, str]) -> bool:
    return True


def restarted(previous: PodMetrics, current: PodMetrics) -> bool:
    """Did the pod's process start again between the two scrapes?"""
    before, after = previous.value(PROCESS_START), current.value(PROCESS_START)
    if before is not None and after is not None and before != after:
        return True
    for name, series in current.samples.items():
        if not name.endswith(_COUNTER_SUFFIXES):
            continue
        old = previous.series(name)
        if any(value < old.get(labels, 0.0) for labels, value in series.items()):
            return True
    return False


@dataclass(frozen=True)
class GroupIncrease:
    """Increases of one group between two scrapes, and which pods they cover."""

    pods_counted: int
    pods_new: int
    """Seen now but not in the previous scrape: counted from the next reading."""
    pods_restarted: int
    pods_lost: int
    """Seen in the previous scrape but not now (gone, unready or unreachable)."""
    _pairs: tuple[tuple[PodMetrics, PodMetrics | None], ...]
    """(current, base) per counted pod; base None after a restart (count from zero)."""

    def total(self, name: str, where: LabelFilter = _any_labels) -> float:
        """Increase of every series called `name` whose labels pass `where`, summed."""
        return sum(self.by_label(name, "", where).values())

    def by_label(self, name: str, label: str, where: LabelFilter = _any_labels) -> dict[str, float]:
        """Increases summed per value of `label` (e.g. `le` of histogram buckets, `code`)."""
        sums: dict[str, float] = {}
        for current, base in self._pairs:
            old = base.series(name) if base is not None else {}
            for labels, value in current.series(name).items():
                as_dict = dict(labels)
                if not where(as_dict):
                    continue
                increase = _increase(old.get(labels, 0.0), value)
                key = as_dict.get(label, "")
                sums[key] = sums.get(key, 0.0) + increase
        return sums

    def by_labels(
        self, name: str, labels: tuple[str, ...], where: LabelFilter = _any_labels
    ) -> dict[tuple[str, ...], float]:
        """Increases summed per combination of values of `labels`."""
        sums: dict[tuple[str, ...], float] = {}
        for current, base in self._pairs:
            old = base.series(name) if base is not None else {}
            for series, value in current.series(name).items():
                as_dict = dict(series)
                if not where(as_dict):
                    continue
                key = tuple(as_dict.get(label, "") for label in labels)
                sums[key] = sums.get(key, 0.0) + _increase(old.get(series, 0.0), value)
        return sums

    def describe(self) -> str:
        parts = [f"{self.pods_counted} pod{'s' if self.pods_counted != 1 else ''}"]
        if self.pods_new:
            parts.append(f"{self.pods_new} new (counted from the next reading)")
        if self.pods_restarted:
            parts.append(f"{self.pods_restarted} restarted")
        if self.pods_lost:
            parts.append(f"{self.pods_lost} gone or unreachable")
        return ", ".join(parts)


def _increase(before: float, after: float) -> float:
    # A series-level drop that restart detection did not catch still must not go negative.
    return after - before if after >= before else after


def group_increase(previous: GroupScrape, current: GroupScrape) -> GroupIncrease:
    pairs: list[tuple[PodMetrics, PodMetrics | None]] = []
    new = restarts = 0
    for address, now in current.pods.items():
        before = previous.pods.get(address)
        if before is None:
            new += 1
        elif restarted(before, now):
            restarts += 1
            pairs.append((now, None))
        else:
            pairs.append((now, before))
    lost = sum(1 for address in previous.pods if address not in current.pods)
    return GroupIncrease(len(pairs), new, restarts, lost, tuple(pairs))


def labels_are(**expected: str) -> LabelFilter:
    return lambda labels: all(labels.get(k) == v for k, v in expected.items())
