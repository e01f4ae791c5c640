"""Readings from a Prometheus server: user PromQL checks and the built-in checks as PromQL.

Every failure (unreachable server, timeout, HTTP error, PromQL error, unexpected answer) becomes a
reading with value None and a detail: a broken Prometheus makes the analysis Inconclusive, it never
kills a reconcile and never passes a check. The server's own words (a PromQL error) reach status only
through `sanitize`: short, printable ASCII. Queries go through `fetch` (byte cap, deadline, no
redirects); the address was checked against the operator's allow-list before a client was made.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

import httpx

from modeldeploy_operator.domain.readings import CheckReading, KsComparison
from modeldeploy_operator.domain.spec import Check

from . import names, promql
from .builtin import FeatureBins, bins_distance, no_data, present_rows, psi_counts, with_profile
from .fetch import FetchError, FetchLimits, fetch, new_client, sanitize
from .promql import SeriesLabels
from .scrape import is_number
from .scrape_source import utc_now
from .stats import bucket_counts, buckets_from_le, histogram_ks, histogram_psi, ks_p_value
from .target import AnalysisTarget

QUERY_PATH = "/api/v1/query"
_MAX_ERROR_CHARS = 300
MAX_ANSWER_BYTES = 4 * 1024 * 1024
"""Largest answer of one query: the queries return one series (or one histogram), a few kB."""


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
        kind = sanitize(str(body.get("errorType", "error")), 40)
        return QueryResult(error=f"{kind}: {sanitize(str(body.get('error', 'unknown')))}")
    data = body.get("data")
    data = data if isinstance(data, dict) else {}
    kind, result = sanitize(str(data.get("resultType")), 40), data.get("result")
    try:
        if kind == "scalar":
            return QueryResult(samples=(({}, _parse_value(result)),))
        if kind == "vector" and isinstance(result, list):
            samples = tuple((dict(s.get("metric", {})), _parse_value(s["value"])) for s in result)
            return QueryResult(samples=samples)
    except (TypeError, KeyError, IndexError, ValueError, AttributeError) as exc:
        return QueryResult(error=f"malformed {kind} result ({type(exc).__name__})")
    return QueryResult(error=f"a {kind} result, expected an instant vector or a scalar")


class PrometheusClient:
    """Instant queries over the HTTP API (GET /api/v1/query)."""

    def __init__(
        self,
        address: str,
        timeout_seconds: float,
        client: httpx.Client | None = None,
        max_bytes: int = MAX_ANSWER_BYTES,
    ) -> None:
        self.url = address.rstrip("/") + QUERY_PATH
        self.timeout_seconds = timeout_seconds
        # Prometheus cuts its own evaluation at `timeout`; ours waits a little longer for the answer.
        self.limits = FetchLimits(deadline_seconds=timeout_seconds + 1.0, max_bytes=max_bytes)
        self._client = client or new_client()

    def query(self, expression: str, deadline: float | None = None) -> QueryResult:
        """One instant query; `deadline` (time.monotonic) shortens its limit to the time left."""
        params = {"query": expression, "timeout": f"{self.timeout_seconds:g}s"}
        limits = self.limits
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                return QueryResult(error="analysis deadline passed before the query")
            limits = FetchLimits(min(limits.deadline_seconds, left), limits.max_bytes)
        try:
            status, body = fetch(self._client, self.url, limits, params)
        except FetchError as error:
            return QueryResult(error=str(error))
        try:
            answer = json.loads(body)
        except ValueError:  # also UnicodeDecodeError
            return QueryResult(error=f"HTTP {status}, not a JSON answer")
        return parse_answer(answer)

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


_Query = Callable[[str], QueryResult]


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

    def read(
        self,
        checks: Sequence[Check],
        target: AnalysisTarget,
        window: timedelta,
        deadline: float | None = None,
    ) -> list[CheckReading]:
        return [self.read_one(check, target, window.total_seconds(), deadline) for check in checks]

    def read_one(
        self, check: Check, target: AnalysisTarget, window_seconds: float, deadline: float | None = None
    ) -> CheckReading:
        """One reading; every query of it ends by `deadline` (time.monotonic), when given."""
        at = self._clock()

        def query(expression: str) -> QueryResult:
            return self.client.query(expression, deadline)

        if check.type == "prometheus":
            return self._user_query(check, at, query)
        if check.type in ("predictionShift", "predictionShiftKS"):
            return self._prediction_shift(check, target, window_seconds, at, query)
        if check.type in ("inputDrift", "inputDriftKS") and check.reference == "stable":
            return self._drift_against_stable(check, target, window_seconds, at, query)
        lookback = target.drift_lookback_seconds(window_seconds)
        if check.type in ("inputDrift", "inputDriftKS"):  # against the profile: the servers' gauges
            metric = names.FEATURE_KS if check.type == "inputDriftKS" else names.FEATURE_PSI
            reading = self._builtin(
                check, promql.input_drift(target, lookback, self.labels, metric), at, query
            )
            if reading.value is None:
                return reading
            return self._with_profile_bins(check, reading, target, window_seconds, query)
        queries = {
            "errorRate": lambda: promql.error_rate(target, window_seconds, self.labels),
            "latencyP99": lambda: promql.latency_p99(target, window_seconds, self.labels),
            "shadowAgreement": lambda: promql.shadow_agreement(target, window_seconds, self.labels),
            "shadowScoreDifference": lambda: promql.shadow_score_difference(
                target, window_seconds, self.labels
            ),
        }[check.type]()
        return self._builtin(check, queries, at, query)

    def _user_query(self, check: Check, at: datetime, query: _Query) -> CheckReading:
        if not check.query:
            return no_data(check, at, "prometheus check without a query")
        value, why = single_value(query(check.query))
        if value is None:
            return no_data(check, at, why)
        # A user query is an aggregate whose sample count Prometheus cannot tell: one value.
        return CheckReading(check.name, value, 1, at, f"{check.query} = {value:g}")

    def _builtin(
        self, check: Check, queries: promql.BuiltinQueries, at: datetime, query: _Query
    ) -> CheckReading:
        samples, why = single_value(query(queries.samples))
        if samples is None or samples <= 0:
            return no_data(check, at, f"no samples ({why or 'zero'}): {queries.samples}")
        value, why = single_value(query(queries.value))
        if value is None:
            return no_data(check, at, f"{why}: {queries.value}", samples=round(samples))
        detail = f"{value:.4g} over {samples:.0f} samples"
        buckets = self._buckets(queries, query)
        return CheckReading(check.name, value, round(samples), at, detail, buckets=buckets)

    @staticmethod
    def _buckets(queries: promql.BuiltinQueries, query: _Query) -> tuple[tuple[float, float], ...] | None:
        """The histogram's cumulative (bound, count) pairs over the window, which let the evaluation
        fail a clearly bad canary before minSamples, as from the scrape; None when the answer has no
        +Inf bucket or the query failed (the reading stands, without an early decision). Counts of
        increase() are extrapolated to the window's edges, so not whole numbers: the tests count
        them as they are, as errorRate's counts from Prometheus are."""
        if queries.buckets is None:
            return None
        result = query(queries.buckets)
        if result.error is not None:
            return None
        counts = {s["le"]: v for s, v in result.samples if "le" in s and is_number(v) and v >= 0}
        try:
            buckets = tuple(buckets_from_le(counts))
        except ValueError:  # an `le` that is not a number
            return None
        return buckets if buckets and math.isinf(buckets[-1][0]) else None

    def _with_profile_bins(
        self,
        check: Check,
        reading: CheckReading,
        target: AnalysisTarget,
        window_seconds: float,
        query: _Query,
    ) -> CheckReading:
        """inputDrift / inputDriftKS against the profile: the reading (the servers' largest PSI or KS
        distance, which has no counts) with what the evaluation's early decision needs, from every
        feature's profile rows and the canary's rows per bin over the window: their pairs of histograms
        (as from the scrape), or their binned KS distances with the canary's present rows (the profile
        taken as exact, as the servers' gauges and the scrape take it). Without them the reading
        stands, and its detail says why it cannot fail early."""
        answers = (
            query(promql.feature_bins(target, target.canary_revision, window_seconds, self.labels)),
            query(promql.reference_bins(target, self.labels)),
        )
        failed = answers[0].error or answers[1].error
        canary, profile = (_feature_bins(answer) for answer in answers)
        shared = with_profile(profile, canary) if failed is None else []
        if shared and check.type == "inputDriftKS":
            ks = (
                KsComparison(bins_distance(check.type, profile[k], canary[k]), present_rows(canary[k]))
                for k in shared
            )
            return replace(reading, ks=tuple(ks))
        if shared:
            return replace(reading, histograms=tuple(psi_counts(profile[k], canary[k]) for k in shared))
        if failed is not None:
            why = f"query failed: {failed[:_MAX_ERROR_CHARS]}"
        elif not profile:
            why = f"the canary's servers export no {names.FEATURE_REFERENCE_ROWS}"
        else:
            why = "no canary rows in the interval of a feature the profile has, in its bin layout"
        return replace(reading, detail=f"{reading.detail}; no early decision (no rows per bin: {why})")

    def _drift_against_stable(
        self, check: Check, target: AnalysisTarget, window_seconds: float, at: datetime, query: _Query
    ) -> CheckReading:
        if target.stable_revision is None:
            return no_data(check, at, "no stable revision to compare the canary's inputs with")
        sides: list[FeatureBins] = []
        for revision in (target.stable_revision, target.canary_revision):
            result = query(promql.feature_bins(target, revision, window_seconds, self.labels))
            if result.error is not None:
                return no_data(check, at, f"query failed: {result.error[:_MAX_ERROR_CHARS]}")
            sides.append(_feature_bins(result))
        stable, canary = sides
        shared = [
            k
            for k in sorted(stable.keys() & canary.keys())
            if sum(stable[k].values()) and sum(canary[k].values())
        ]
        values = {k: v for k in shared if is_number(v := bins_distance(check.type, stable[k], canary[k]))}
        if not values:
            return no_data(check, at, "no feature bins of canary and stable in the same layout")
        worst = max(values, key=lambda k: values[k])
        samples = round(min(min(sum(stable[k].values()), sum(canary[k].values())) for k in values))
        detail = (
            f"canary inputs against the stable's: max {values[worst]:.3f} ({worst[0]}) "
            f"over {len(values)} feature(s)"
        )
        if check.type != "inputDriftKS":
            pairs = tuple(psi_counts(stable[k], canary[k]) for k in values)
            return CheckReading(check.name, values[worst], samples, at, detail, histograms=pairs)
        ks = tuple(KsComparison(values[k], present_rows(canary[k]), present_rows(stable[k])) for k in values)
        return CheckReading(check.name, values[worst], samples, at, detail, ks=ks)

    def _prediction_shift(
        self, check: Check, target: AnalysisTarget, window_seconds: float, at: datetime, query: _Query
    ) -> CheckReading:
        if target.stable_revision is None:
            return no_data(check, at, "no stable revision to compare the canary's scores with")
        histograms = []
        for revision in (target.stable_revision, target.canary_revision):
            result = query(promql.score_buckets(target, revision, window_seconds, self.labels))
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
        if check.type == "predictionShiftKS":
            value, bound = histogram_ks(stable, canary)
            detail = (
                f"binned KS distance of canary against stable scores (raw-sample distance at most "
                f"{min(value + bound, 1.0):.3f}; p={ks_p_value(value, canary_n, stable_n):.3g}) ({counts})"
            )
        else:
            value = histogram_psi(stable, canary)
            detail = f"PSI of canary against stable scores ({counts})"
        if math.isnan(value):
            return no_data(check, at, f"score histograms not comparable ({counts})")
        counts_per_bin = ((tuple(bucket_counts(stable)), tuple(bucket_counts(canary))),)
        ks = (
            (KsComparison(value, round(canary_n), round(stable_n)),)
            if check.type == "predictionShiftKS"
            else None
        )
        return CheckReading(check.name, value, samples, at, detail, counts_per_bin, ks=ks)


def _feature_bins(result: QueryResult) -> FeatureBins:
    """Rows per (feature, layout) and bin of an answer labelled by feature, layout and bin; a value
    that is not a number or is negative is left out (bin names that are not a bin are left out where
    they become indices: builtin._bin_indices)."""
    bins: FeatureBins = {}
    for series, value in result.samples:
        if is_number(value) and value >= 0:
            key = (series.get("feature", ""), series.get("layout", ""))
            bins.setdefault(key, {})[series.get("bin", "")] = value
    return bins
