"""Prometheus metrics of the model server.

With several worker processes the CLI sets PROMETHEUS_MULTIPROC_DIR before any worker starts, and
prometheus_client keeps every value in per-process files that /metrics aggregates: counters and
histograms are summed, in-flight requests summed over live workers, and drift gauges report the
most recently closed window of any worker (each worker keeps its own windows over the rows it saw).
Label values are bounded: model and version come from the served bundle (anything else is
"_unknown"), protocol is v1 or v2, code an HTTP status.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

from modeldeploy_contract.metric_names import LIVE_TRAFFIC
from modeldeploy_serving.drift.window import FeatureDrift, WindowResult

MULTIPROCESS = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
FLUSH_SECONDS = 1.0
disable_created_metrics()  # type: ignore[no-untyped-call]  # *_created series double the series count and nobody alerts on them
UNKNOWN = "_unknown"
LATENCY_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
)
SCORE_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)

REQUEST_LABELS = ["model", "version", "protocol", "code", "traffic"]
"""traffic: "live", or "mirror" for the router's copies (header x-modeldeploy-traffic: mirror), which
no caller waits for: analysis counts both, a person can tell them apart."""
MODEL_LABELS = ["model", "version"]

REQUESTS = Counter(
    "modeldeploy_requests",
    "Inference requests by model, version, protocol, HTTP status code and traffic (live or mirror).",
    REQUEST_LABELS,
)
ERRORS = Counter(
    "modeldeploy_request_errors", "Inference requests answered with HTTP 4xx or 5xx.", REQUEST_LABELS
)
REFUSED = Counter(
    "modeldeploy_requests_refused",
    "Inference requests refused before any model work: reason is concurrency (max_concurrent_requests), "
    "queued_rows (max_queued_rows) or client_gone (the client disconnected while the request waited).",
    ["reason"],
)
REQUEST_SECONDS = Histogram(
    "modeldeploy_request_duration_seconds",
    "Whole inference request time inside the server (read, decode, predict, encode, send).",
    ["model", "version", "protocol"],
    buckets=LATENCY_BUCKETS,
)
COMPUTE_SECONDS = Histogram(
    "modeldeploy_model_compute_duration_seconds",
    "Time of one model call (a micro-batch when batching is on).",
    MODEL_LABELS,
    buckets=LATENCY_BUCKETS,
)
BATCH_ROWS = Histogram(
    "modeldeploy_model_batch_rows", "Rows per model call.", MODEL_LABELS, buckets=BATCH_BUCKETS
)
ROWS = Counter("modeldeploy_predicted_rows", "Rows predicted.", MODEL_LABELS)
IN_FLIGHT = Gauge(
    "modeldeploy_requests_in_flight", "Inference requests being served now.", multiprocess_mode="livesum"
)
MODEL_INFO = Gauge(
    "modeldeploy_model_info",
    "The served model bundle (sha256 of its manifest); always 1.",
    ["model", "version", "format", "sha256"],
    multiprocess_mode="max",
)
MODEL_READY = Gauge(
    "modeldeploy_model_ready",
    "1 when the model is loaded, verified and warmed up in every worker.",
    multiprocess_mode="livemin",
)
LOAD_FAILURES = Counter(
    "modeldeploy_model_load_failures", "Model loads that failed (fetch, verification, load, warm-up)."
)

FEATURE_PSI = Gauge(
    "modeldeploy_feature_drift_psi",
    "Population stability index of a feature in the last drift window against the reference profile.",
    ["model", "version", "feature"],
    multiprocess_mode="mostrecent",
)
FEATURE_KS = Gauge(
    "modeldeploy_feature_drift_ks",
    "Binned Kolmogorov-Smirnov distance of a feature in the last drift window against the reference.",
    ["model", "version", "feature"],
    multiprocess_mode="mostrecent",
)
FEATURE_BIN_ROWS = Counter(
    "modeldeploy_feature_bin_rows",
    "Rows of closed drift windows per bin of a feature (bin: index in the profile's layout, or "
    "missing; layout: a hash of the bin edges). Lets analysis compare a canary's live "
    "inputs with the stable's (inputDrift reference: stable).",
    ["model", "version", "feature", "layout", "bin"],
)
FEATURE_REFERENCE_ROWS = Gauge(
    "modeldeploy_feature_reference_rows",
    "Rows of the bundle's reference profile per bin of a feature (labels as "
    "modeldeploy_feature_bin_rows; bins with rows only). Lets analysis test a canary's drift against "
    "the profile before minSamples (inputDrift reference: profile).",
    ["model", "version", "feature", "layout", "bin"],
    multiprocess_mode="max",  # the same profile in every worker
)
FEATURE_MISSING = Gauge(
    "modeldeploy_feature_missing_ratio",
    "Share of missing values of a feature in the last drift window.",
    ["model", "version", "feature"],
    multiprocess_mode="mostrecent",
)
FEATURE_OUT_OF_RANGE = Gauge(
    "modeldeploy_feature_out_of_range_ratio",
    "Share of present values outside the training [min, max] of a feature in the last drift window.",
    ["model", "version", "feature"],
    multiprocess_mode="mostrecent",
)
PREDICTION_PSI = Gauge(
    "modeldeploy_prediction_drift_psi",
    "Population stability index of prediction scores in the last drift window against validation scores.",
    MODEL_LABELS,
    multiprocess_mode="mostrecent",
)
PREDICTION_SCORE = Histogram(
    "modeldeploy_prediction_score",
    "Prediction scores (P(positive) for binary classifiers), added when a drift window closes.",
    MODEL_LABELS,
    buckets=SCORE_BUCKETS,
)
WINDOW_ROWS = Gauge(
    "modeldeploy_drift_window_rows",
    "Rows in the last closed drift window.",
    MODEL_LABELS,
    multiprocess_mode="mostrecent",
)
WINDOW_END = Gauge(
    "modeldeploy_drift_window_end_timestamp_seconds",
    "Unix time the last drift window closed.",
    MODEL_LABELS,
    multiprocess_mode="mostrecent",
)
WINDOWS = Counter("modeldeploy_drift_windows", "Drift windows closed.", MODEL_LABELS)
DRIFT_SKIPPED = Counter(
    "modeldeploy_drift_skipped_rows",
    "Rows predicted while drift buffering was paused to keep drift within its CPU budget.",
    MODEL_LABELS,
)

# -- stream inference (`modeldeploy stream`) ------------------------------------------------------------
PREDICTION_LOG_RECORDS = Counter(
    "modeldeploy_prediction_log_records",
    "Prediction-log records by outcome: written to the sink, dropped (buffer full: the sink is slower "
    "than the traffic) or failed (the sink refused them). Never blocks or fails a prediction.",
    ["outcome"],
)


def prediction_log_count(outcome: str, n: int) -> None:
    PREDICTION_LOG_RECORDS.labels(outcome).inc(n)


JOINER_FEED_RECORDS = Counter(
    "modeldeploy_joiner_feed_records",
    "Prediction records for the label joiner by outcome: sent, dropped (buffer full: the joiner is "
    "slower than the traffic or down), retried (sent again after the joiner could not take them) or "
    "failed (refused, or not taken within the feed's retry_seconds), lost_at_shutdown (still unsent "
    "when the server stopped and its shutdown_seconds ran out).",
    ["outcome"],
)


def joiner_feed_count(outcome: str, n: int) -> None:
    JOINER_FEED_RECORDS.labels(outcome).inc(n)


STREAM_RECORDS = Counter(
    "modeldeploy_stream_records",
    "Input records handled by the stream consumer, by outcome: scored (an output record was written) "
    "or dead_letter (written to the dead-letter topic).",
    ["model", "version", "outcome"],
)
STREAM_DEAD_LETTERS = Counter(
    "modeldeploy_stream_dead_letter_records",
    "Records written to the dead-letter topic, by reason (empty, too_large, malformed_json, "
    "invalid_record, prediction_failed); the record's headers carry the detail.",
    ["model", "version", "reason"],
)
STREAM_LAG = Gauge(
    "modeldeploy_stream_consumer_lag",
    "Records of an input partition past the consumer group's committed offset (end offset - committed).",
    ["topic", "partition"],
    multiprocess_mode="mostrecent",
)
STREAM_IN_FLIGHT = Gauge(
    "modeldeploy_stream_in_flight_batches",
    "Batches consumed whose outputs the broker has not acknowledged yet (bounded: backpressure).",
    multiprocess_mode="livesum",
)
STREAM_BATCH_SECONDS = Histogram(
    "modeldeploy_stream_batch_duration_seconds",
    "Time from a batch's records being consumed to all its outputs being acknowledged by the broker.",
    MODEL_LABELS,
    buckets=LATENCY_BUCKETS,
)
STREAM_COMMITS = Counter(
    "modeldeploy_stream_offset_commits",
    "Offset commits of the stream consumer (only after outputs were acknowledged), by result.",
    ["result"],
)
STREAM_REPLAYED = Counter(
    "modeldeploy_stream_replayed_records",
    "Records consumed again after a rebalance or restart in this process (offsets this process had "
    "already scored): their outputs are duplicates, with the same request id.",
    ["model", "version"],
)


class ModelMetrics:
    """Hot-path accounting for one (model, version).

    prometheus_client takes a lock per update (and writes a file per update in multiprocess mode):
    about 1-3 microseconds each, ten of them per request. So the hot path only bumps plain Python
    counters and appends durations to lists; flush() moves them into the Prometheus metrics in bulk.
    It runs before every /metrics answer (exact for one worker) and every FLUSH_SECONDS from the data
    plane (so other workers' files are at most that stale in multiprocess mode).
    """

    def __init__(self, model: str, version: str, max_feature_series: int = 100) -> None:
        self.model = model
        self.version = version
        self.max_feature_series = max_feature_series
        self._counts: dict[tuple[str, int, str], int] = {}
        self._durations: dict[str, list[float]] = {}
        self._compute: list[float] = []
        self._batch_rows: list[int] = []
        self._rows = 0

    def request(self, protocol: str, code: int, seconds: float, traffic: str = LIVE_TRAFFIC) -> None:
        key = (protocol, code, traffic)
        self._counts[key] = self._counts.get(key, 0) + 1
        durations = self._durations.get(protocol)
        if durations is None:
            durations = self._durations[protocol] = []
        durations.append(seconds)

    def model_call(self, seconds: float, rows: int) -> None:
        self._compute.append(seconds)
        self._batch_rows.append(rows)

    def predicted(self, rows: int) -> None:
        self._rows += rows

    def drift_skipped(self, rows: int) -> None:
        DRIFT_SKIPPED.labels(self.model, self.version).inc(rows)

    def flush(self) -> None:
        counts, self._counts = self._counts, {}
        durations, self._durations = self._durations, {}
        compute, self._compute = self._compute, []
        batch_rows, self._batch_rows = self._batch_rows, []
        rows, self._rows = self._rows, 0
        for (protocol, code, traffic), n in counts.items():
            labels = (self.model, self.version, protocol, str(code), traffic)
            REQUESTS.labels(*labels).inc(n)
            if code >= 400:
                ERRORS.labels(*labels).inc(n)
        for protocol, values in durations.items():
            add_to_histogram(REQUEST_SECONDS.labels(self.model, self.version, protocol), np.asarray(values))
        if compute:
            add_to_histogram(COMPUTE_SECONDS.labels(self.model, self.version), np.asarray(compute))
            add_to_histogram(
                BATCH_ROWS.labels(self.model, self.version), np.asarray(batch_rows, dtype=np.float64)
            )
        if rows:
            ROWS.labels(self.model, self.version).inc(rows)

    def publish_window(self, result: WindowResult) -> None:
        labels = (self.model, self.version)
        for f in capped_features(result.features, self.max_feature_series):
            FEATURE_PSI.labels(*labels, f.name).set(f.psi)
            FEATURE_KS.labels(*labels, f.name).set(f.ks)
            for index, n in enumerate(f.counts):
                if n:  # ~13 bins a feature; empty ones appear when first used
                    name = "missing" if index == len(f.counts) - 1 else str(index)
                    FEATURE_BIN_ROWS.labels(*labels, f.name, f.layout, name).inc(n)
            for index, n in enumerate(f.reference):
                if n:  # the same value every window: set, never added to
                    name = "missing" if index == len(f.reference) - 1 else str(index)
                    FEATURE_REFERENCE_ROWS.labels(*labels, f.name, f.layout, name).set(n)
            FEATURE_MISSING.labels(*labels, f.name).set(f.missing_ratio)
            FEATURE_OUT_OF_RANGE.labels(*labels, f.name).set(f.out_of_range_ratio)
        PREDICTION_PSI.labels(*labels).set(result.score_psi)
        add_to_histogram(PREDICTION_SCORE.labels(*labels), result.scores)
        WINDOW_ROWS.labels(*labels).set(result.rows)
        WINDOW_END.labels(*labels).set(result.ended_at)
        WINDOWS.labels(*labels).inc()


OTHER_FEATURES = "_other"


def capped_features(features: Sequence[FeatureDrift], cap: int) -> list[FeatureDrift]:
    """The first `cap` features as they are, and the rest as one OTHER_FEATURES entry holding the
    largest value of each statistic among them. The set of names is fixed by the model's input
    order, never by this window's values: series neither come nor go between windows."""
    if len(features) <= cap:
        return list(features)
    kept, rest = list(features[:cap]), features[cap:]

    def largest(values: Sequence[float]) -> float:
        present = [v for v in values if not math.isnan(v)]
        return max(present) if present else math.nan

    return [
        *kept,
        FeatureDrift(
            name=OTHER_FEATURES,
            psi=largest([f.psi for f in rest]),
            ks=largest([f.ks for f in rest]),
            missing_ratio=largest([f.missing_ratio for f in rest]),
            out_of_range_ratio=largest([f.out_of_range_ratio for f in rest]),
        ),
    ]


def add_to_histogram(child: Any, values: npt.NDArray[np.float64]) -> None:
    """Add many observations at once: bucket counts computed with numpy instead of one observe() per
    value (thousands of observe() calls per window would cost milliseconds). Uses the client's
    per-bucket (non-cumulative) value cells; falls back to observe() if that layout ever changes."""
    buckets = getattr(child, "_buckets", None)
    bounds = getattr(child, "_upper_bounds", None)
    total = getattr(child, "_sum", None)
    if buckets is None or bounds is None or total is None or len(buckets) != len(bounds):
        for v in values:
            child.observe(float(v))
        return
    values = values[~np.isnan(values)]
    if values.size == 0:
        return
    index = np.searchsorted(np.asarray(bounds, dtype=np.float64), values, side="left")
    for i, n in enumerate(np.bincount(index, minlength=len(bounds))[: len(bounds)]):
        if n:
            buckets[i].inc(int(n))
    total.inc(float(values.sum()))


def render() -> tuple[bytes, str]:
    """The exposition text (aggregated over workers in multiprocess mode) and its content type."""
    if MULTIPROCESS:
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


def worker_exited() -> None:
    """Drop this worker's live-only gauges (in-flight, ready) from the aggregate."""
    if MULTIPROCESS:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]
