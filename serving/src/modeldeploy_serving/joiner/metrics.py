"""Prometheus metrics of the joiner, in its own registry.

Label values are bounded: outcome is one of a fixed set; deployment, variant, revision and model
version come from stored prediction records (bounded by the retention window); window is one of the
configured windows. Request ids never become labels.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from modeldeploy_contract.effectiveness import EffectivenessSummary

QUALITY_FIELDS = ("labelled", "predictions", "coverage", "accuracy", "auc", "log_loss", "brier", "ece")
_HELP = {
    "labelled": "Predictions of the window that have a label.",
    "predictions": "Predictions made in the window.",
    "coverage": "Share of the window's predictions that have a label.",
    "accuracy": "Share of labelled predictions whose predicted class was right.",
    "auc": "Area under the ROC curve of the window's labelled predictions (binary classifiers).",
    "log_loss": "Mean negative log-likelihood of the true label (binary classifiers).",
    "brier": "Mean squared difference between score and label (binary classifiers).",
    "ece": "Expected calibration error over 10 equal-width score bins (binary classifiers).",
}
ARM_LABELS = ["deployment", "variant", "revision", "model_version", "window"]
AB_LABELS = ["deployment", "control", "treatment", "metric", "window"]


class SummaryCollector(Collector):
    """Gauges from the last computed summary (series of arms that left the window disappear)."""

    def __init__(self) -> None:
        self.summary: EffectivenessSummary | None = None

    def collect(self) -> Iterator[Metric]:
        summary = self.summary
        if summary is None:
            return
        families = {
            f: GaugeMetricFamily(f"modeldeploy_effectiveness_{f}", _HELP[f], labels=ARM_LABELS)
            for f in QUALITY_FIELDS
        }
        ab = {
            name: GaugeMetricFamily(f"modeldeploy_ab_{name}", text, labels=AB_LABELS)
            for name, text in (
                ("difference", "Treatment minus control of the A/B metric."),
                ("difference_lower", "Lower end of the confidence interval of the difference."),
                ("difference_upper", "Upper end of the confidence interval of the difference."),
                ("labels_still_needed", "Labels per arm still needed for the configured effect and power."),
            )
        }
        verdict = GaugeMetricFamily(
            "modeldeploy_ab_verdict",
            "1 for the current A/B verdict (TreatmentBetter, ControlBetter or Inconclusive).",
            labels=[*AB_LABELS, "verdict"],
        )
        for d in summary.deployments:
            for w in d.windows:
                window = f"{w.window_seconds:.0f}s"
                for a in w.arms:
                    labels = [d.deployment, a.variant, a.revision, a.model_version, window]
                    values = a.quality.model_dump()
                    for f in QUALITY_FIELDS:
                        if values[f] is not None:
                            families[f].add_metric(labels, float(values[f]))
                for v in w.ab:
                    labels = [d.deployment, v.control, v.treatment, v.metric, window]
                    for name, value in (
                        ("difference", v.difference),
                        ("difference_lower", v.lower),
                        ("difference_upper", v.upper),
                        ("labels_still_needed", v.labels_still_needed),
                    ):
                        if value is not None:
                            ab[name].add_metric(labels, float(value))
                    verdict.add_metric([*labels, v.verdict], 1.0)
        yield from families.values()
        yield from ab.values()
        yield verdict


class JoinerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.labels = Counter(
            "modeldeploy_joiner_labels",
            "Labels received, by outcome (joined, unknown_request, expired, duplicate, conflict, "
            "invalid_label, invalid; store_refused: a poison label of the label topic, skipped).",
            ["outcome"],
            registry=self.registry,
        )
        self.predictions = Counter(
            "modeldeploy_joiner_predictions",
            "Prediction records received, by outcome (stored, duplicate, invalid).",
            ["outcome"],
            registry=self.registry,
        )
        self.purged = Counter(
            "modeldeploy_joiner_purged_predictions",
            "Predictions (with their labels) deleted for being older than the retention window.",
            registry=self.registry,
        )
        self.rejected_requests = Counter(
            "modeldeploy_joiner_rejected_requests",
            "Whole requests refused, by HTTP status (400 unreadable, 413 too large, 503 store down).",
            ["code"],
            registry=self.registry,
        )
        self.label_batches = Counter(
            "modeldeploy_joiner_label_topic_batches",
            "Batches of the label topic, by result (committed: stored then committed; store_failed: "
            "nothing stored or committed, consumed again; commit_failed: stored, may come again as "
            "duplicates).",
            ["result"],
            registry=self.registry,
        )
        self.label_lag = Gauge(
            "modeldeploy_joiner_label_topic_lag",
            "Label records of a partition past the joiner's committed offset (end offset - committed), "
            "per assigned partition; read every lag_interval_seconds, the last value kept while the "
            "broker does not answer.",
            ["topic", "partition"],
            registry=self.registry,
        )
        self.label_consumer_restarts = Counter(
            "modeldeploy_joiner_label_consumer_restarts",
            "Label consumers replaced by a new one after they failed (a fatal client error, anything "
            "unexpected); the new one goes on from the committed offsets.",
            registry=self.registry,
        )
        self.store_connection_losses = Counter(
            "modeldeploy_joiner_store_connection_losses",
            "Times the database connection was lost (an outage starts; PostgreSQL only: SQLite is a file).",
            registry=self.registry,
        )
        self.store_reconnects = Counter(
            "modeldeploy_joiner_store_reconnects",
            "Attempts at a new database connection after one was lost, by result (ok, failed); at most "
            "one per backoff delay (0.5 s doubling up to 10 s), however many requests arrive meanwhile.",
            ["result"],
            registry=self.registry,
        )
        self.store_up = Gauge(
            "modeldeploy_joiner_store_up",
            "1 while the database connection works, 0 from its loss until a new one is made "
            "(then /readyz answers 503 and writes 503 with Retry-After).",
            registry=self.registry,
        )
        self.store_up.set(0)
        self.summary = SummaryCollector()
        self.registry.register(self.summary)
