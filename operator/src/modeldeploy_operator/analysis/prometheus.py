"""Readings from a Prometheus server: user PromQL checks and the built-in checks as PromQL.

Every failure (unreachable server, timeout, HTTP error, PromQL error, unexpected answer) becomes a
reading with value None and a detail: a broken Prometheus makes the analysis Inconclusive, it never
kills a reconcile and never passes a check.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx

from modeldeploy_operator.domain.readings import CheckReading
from modeldeploy_operator.domain.spec import Check

from . import promql
from .builtin import no_data
from .promql import SeriesLabels
from .scrape_source import utc_now
from .stats import bucket_counts, buckets_from_le, histogram_psi
from .target import AnalysisTarget

QUERY_PATH = "/api/v1/query"
_MAX_ERROR_CHARS = 300


@dataclass(frozen=True)
class QueryResult:
    """The samples of an instant query (a scalar is one sample without labels), or why there are none."""

    samples: tuple[tuple[Mapping[str, str], float], ...] = ()
    error: str | None = None


def _parse_value(pair: Any) -> float:
    # [unix time, "1.5"]; Prometheus writes NaN and infinities as "NaN", "+Inf", "-Inf".
    return float(pair[1])


def parse_answer(body: Any) -> QueryResult:
    """Interpret the JSON of /api/v1/query."""
    if not isinstance(body, dict):
        return QueryResult(error="answer is not a JSON object")
    if body.get("status") != "success":
        return QueryResult(error=f"{body.get('errorType', 'error')}: {body.get('error', 'unknown')}")
    data = body.get("data") or {}
    kind, result = data.get("resultType"), data.get("result")
    try:
        if kind == "scalar":
            return QueryResult(samples=(({}, _parse_value(result)),))
        if kind == "vector" and isinstance(result, list):
            samples = tuple((dict(s.get("metric", {})), _parse_value(s["value"])) for s in result)
            return QueryResult(samples=samples)
    except (TypeError, KeyError, IndexError, ValueError) as exc:
        return QueryResult(error=f"malformed {kind} result: {exc}")
    return QueryResult(error=f"a {kind} result, expected an instant vector or a scalar")


class PrometheusClient:
    """Instant queries over the HTTP API (GET /api/v1/query)."""

    def __init__(self, address: str, timeout_seconds: float, client: httpx.Client | None = None) -> None:
        self.url = address.rstrip("/") + QUERY_PATH
        self.timeout_seconds = timeout_seconds
        self._client = client or httpx.Client()

    def query(self, expression: str) -> QueryResult:
        # Prometheus cuts its own evaluation at `timeout`; ours waits a little longer for the answer.
        params = {"query": expression, "timeout": f"{self.timeout_seconds:g}s"}
        try:
            response = self._client.get(self.url, params=params, timeout=self.timeout_seconds + 1.0)
        except httpx.TimeoutException:
            return QueryResult(error=f"timeout after {self.timeout_seconds:g}s")
        except httpx.HTTPError as exc:
            return QueryResult(error=f"{type(exc).__name__}: {exc}")
        try:
            body = response.json()
        except ValueError:
            return QueryResult(error=f"HTTP {response.status_code}: {response.text[:_MAX_ERROR_CHARS]}")
        return parse_answer(body)

    def close(self) -> None:
        self._client.close()


def single_value(result: QueryResult) -> tuple[float | None, str]:
    """The one finite number a query must return, or None and why not."""
    if result.error is not None:
        return None, f"query failed: {result.error[:_MAX_ERROR_CHARS]}"
    if not result.samples:
        return None, "query returned no data"
    if len(result.samples) > 1:
        return None, f"query returned {len(result.samples)} series; aggregate them to one (sum, max, ...)"
    value = result.samples[0][1]
    if math.isnan(value) or math.isinf(value):
        return None, f"query returned {value} (e.g. a division by zero requests)"
    return value, ""


class PrometheusReader:
    def __init__(
        self,
        client: PrometheusClient,
        labels: SeriesLabels | None = None,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.client = client
        self.labels = labels or SeriesLabels()
        self._clock = clock

    def read(self, checks: Sequence[Check], target: AnalysisTarget, window: timedelta) -> list[CheckReading]:
        return [self.read_one(check, target, window.total_seconds()) for check in checks]

    def read_one(self, check: Check, target: AnalysisTarget, window_seconds: float) -> CheckReading:
        at = self._clock()
        if check.type == "prometheus":
            return self._user_query(check, at)
        if check.type == "predictionShift":
            return self._prediction_shift(check, target, window_seconds, at)
        queries = {
            "errorRate": lambda: promql.error_rate(target, window_seconds, self.labels),
            "latencyP99": lambda: promql.latency_p99(target, window_seconds, self.labels),
            "inputDrift": lambda: promql.input_drift(
                target, target.drift_lookback_seconds(window_seconds), self.labels
            ),
        }[check.type]()
        return self._builtin(check, queries, at)

    def _user_query(self, check: Check, at: datetime) -> CheckReading:
        if not check.query:
            return no_data(check, at, "prometheus check without a query")
        value, why = single_value(self.client.query(check.query))
        if value is None:
            return no_data(check, at, why)
        # A user query is an aggregate whose sample count Prometheus cannot tell: one value.
        return CheckReading(check.name, value, 1, at, f"{check.query} = {value:g}")

    def _builtin(self, check: Check, queries: promql.BuiltinQueries, at: datetime) -> CheckReading:
        samples, why = single_value(self.client.query(queries.samples))
        if samples is None or samples <= 0:
            return no_data(check, at, f"no samples ({why or 'zero'}): {queries.samples}")
        value, why = single_value(self.client.query(queries.value))
        if value is None:
            return no_data(check, at, f"{why}: {queries.value}", samples=round(samples))
        return CheckReading(check.name, value, round(samples), at, f"{value:.4g} over {samples:.0f} samples")

    def _prediction_shift(
        self, check: Check, target: AnalysisTarget, window_seconds: float, at: datetime
    ) -> CheckReading:
        if target.stable_revision is None:
            return no_data(check, at, "no stable revision to compare the canary's scores with")
        histograms = []
        for revision in (target.stable_revision, target.canary_revision):
            result = self.client.query(promql.score_buckets(target, revision, window_seconds, self.labels))
            if result.error is not None:
                return no_data(check, at, f"query failed: {result.error[:_MAX_ERROR_CHARS]}")
            histograms.append(buckets_from_le({s.get("le", ""): v for s, v in result.samples if "le" in s}))
        stable, canary = histograms
        stable_n = max((c for _, c in stable), default=0.0)
        canary_n = max((c for _, c in canary), default=0.0)
        counts = f"canary {canary_n:.0f} vs stable {stable_n:.0f} scores"
        samples = round(min(stable_n, canary_n))
        if samples <= 0:
            return no_data(check, at, f"no prediction scores to compare ({counts})")
        value = histogram_psi(stable, canary)
        if math.isnan(value):
            return no_data(check, at, f"score histograms not comparable ({counts})")
        counts_per_bin = (tuple(bucket_counts(stable)), tuple(bucket_counts(canary)))
        detail = f"PSI of canary against stable scores ({counts})"
        return CheckReading(check.name, value, samples, at, detail, counts_per_bin)
