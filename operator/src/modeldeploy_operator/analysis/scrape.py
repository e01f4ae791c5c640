"""Fetch `/metrics` from pods and keep what was read as plain values.

The operator scrapes the ready pods of the canary and stable revisions (and the router pods) itself,
so that analysis works without a Prometheus server. A failed pod is recorded, never raised: one
unreachable pod must not stop a reconcile, and the reading built from the others says how many
pods it covers.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime

import httpx
from prometheus_client.parser import text_string_to_metric_families

from .fetch import FetchError, FetchLimits, fetch

METRICS_PATH = "/metrics"
SCRAPE_TIMEOUT_SECONDS = 3.0
# The body of one model server is ~100 series (~15 kB); a cap keeps a misbehaving pod from
# making the operator buffer an unbounded answer.
MAX_BODY_BYTES = 4 * 1024 * 1024
SCRAPE_LIMITS = FetchLimits(deadline_seconds=SCRAPE_TIMEOUT_SECONDS, max_bytes=MAX_BODY_BYTES)
_PARALLEL_SCRAPES = 8

Labels = tuple[tuple[str, str], ...]
"""Label pairs sorted by name: hashable, and equal for equal label sets."""


@dataclass(frozen=True)
class PodMetrics:
    """Every sample of one pod's scrape: sample name -> {labels: value}."""

    samples: Mapping[str, Mapping[Labels, float]]

    def series(self, name: str) -> Mapping[Labels, float]:
        return self.samples.get(name, {})

    def value(self, name: str) -> float | None:
        """The value of an unlabelled sample (or the only one), None when absent."""
        values = list(self.series(name).values())
        return values[0] if len(values) == 1 else None


@dataclass(frozen=True)
class GroupScrape:
    """The pods of one group (canary, stable or router) that answered, and the ones that did not."""

    pods: Mapping[str, PodMetrics] = field(default_factory=dict)
    failures: Mapping[str, str] = field(default_factory=dict)
    """address -> why the scrape failed."""


@dataclass(frozen=True)
class Snapshot:
    """One scrape of every pod of a target, at one moment: the state kept between two readings."""

    taken_at: datetime
    canary: GroupScrape
    stable: GroupScrape
    router: GroupScrape


def labels_of(pairs: Mapping[str, str]) -> Labels:
    return tuple(sorted(pairs.items()))


def parse_metrics(text: str) -> PodMetrics:
    """Parse Prometheus text exposition; raises ValueError on malformed text."""
    samples: dict[str, dict[Labels, float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[labels_of(sample.labels)] = float(sample.value)
    return PodMetrics(samples)


def url_for(address: str) -> str:
    """`10.0.0.5:8080` -> `http://10.0.0.5:8080/metrics` (an address with a scheme is kept)."""
    base = address if "://" in address else f"http://{address}"
    return base.rstrip("/") + METRICS_PATH


def scrape_pod(client: httpx.Client, address: str, limits: FetchLimits = SCRAPE_LIMITS) -> PodMetrics | str:
    """The pod's metrics, or a short reason (made by the operator, never copied from the pod) why
    they could not be read."""
    try:
        status, body = fetch(client, url_for(address), limits)
    except FetchError as error:
        return str(error)
    if status != 200:
        return f"HTTP {status}"
    try:
        return parse_metrics(body.decode("utf-8", errors="replace"))
    except ValueError:  # the parser's way of saying the text is not exposition format
        return "unparsable metrics"


def scrape_group(
    client: httpx.Client, addresses: Iterable[str], limits: FetchLimits = SCRAPE_LIMITS
) -> GroupScrape:
    unique = sorted(set(addresses))
    if not unique:
        return GroupScrape()
    with ThreadPoolExecutor(max_workers=min(_PARALLEL_SCRAPES, len(unique))) as pool:
        results = list(pool.map(lambda a: scrape_pod(client, a, limits), unique))
    pods = {a: r for a, r in zip(unique, results, strict=True) if isinstance(r, PodMetrics)}
    failures = {a: r for a, r in zip(unique, results, strict=True) if isinstance(r, str)}
    return GroupScrape(pods, failures)


def take_snapshot(
    client: httpx.Client,
    now: datetime,
    canary: Sequence[str],
    stable: Sequence[str] = (),
    router: Sequence[str] = (),
    limits: FetchLimits = SCRAPE_LIMITS,
) -> Snapshot:
    groups = (scrape_group(client, addresses, limits) for addresses in (canary, stable, router))
    return Snapshot(now, *groups)


def is_number(value: float) -> bool:
    return not (math.isnan(value) or math.isinf(value))
