"""The operator's own Prometheus metrics: reconciles, their errors and durations; and the rollout
state of every ModelDeployment it reconciles (phase, step, weights per revision, each analysis
check's latest value and result), by the convention of Argo Rollouts' rollout_info and Flagger's
canary weight, with weights as 0-1 ratios.

The rollout state is a snapshot per ModelDeployment, taken from the status the reconcile decided and
rendered at scrape time by a custom collector: a revision, check or ModelDeployment that goes takes
its series with it (no stale label sets), so the series count stays bounded by what exists now:
per ModelDeployment 1 info + 6 phases + 3 + (revisions x 2) + (checks x 4).
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import get_args

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from modeldeploy_contract import metric_names as names
from modeldeploy_operator.domain.status_model import CheckResult, ModelDeploymentStatus, Phase

RECONCILES = Counter(
    "modeldeploy_operator_reconciles_total", "Reconciles of ModelDeployments, by result.", ["result"]
)
RECONCILE_ERRORS = Counter(
    "modeldeploy_operator_reconcile_errors_total",
    "Reconcile errors, by kind (transient, rejected, invalid).",
    ["kind"],
)
RECONCILE_SECONDS = Histogram(
    "modeldeploy_operator_reconcile_duration_seconds",
    "Wall time of one reconcile.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
RECONCILE_CPU_SECONDS = Histogram(
    "modeldeploy_operator_reconcile_cpu_seconds",
    "CPU time of one reconcile's thread (its wall time less this: waiting for the API server or the GIL).",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1),
)
APPLIED_OBJECTS = Counter(
    "modeldeploy_operator_applied_objects_total", "Objects written with server-side apply, by kind.", ["kind"]
)
APPLY_SKIPPED = Counter(
    "modeldeploy_operator_apply_skipped_total",
    "Objects not applied because the cached live object already matched, by kind.",
    ["kind"],
)
QUEUE_DEPTH = Gauge(
    "modeldeploy_operator_queue_depth", "ModelDeployments waiting for a reconcile worker (ready now)."
)
QUEUE_WAIT_SECONDS = Histogram(
    "modeldeploy_operator_queue_wait_seconds",
    "Time a ModelDeployment waited in the reconcile queue, from the event (or timer) that asked for a "
    "pass to a worker taking it (client-go's workqueue_queue_duration_seconds).",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
GC_PAUSE_SECONDS = Histogram(
    "modeldeploy_operator_gc_pause_seconds",
    "Pauses of CPython's cyclic garbage collector (every thread waits), by generation collected.",
    ["generation"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
IS_LEADER = Gauge("modeldeploy_operator_leader", "1 while this replica holds the leader Lease.")

PHASES: tuple[str, ...] = get_args(Phase)
CHECK_RESULTS: tuple[str, ...] = get_args(CheckResult)
_KEY = ["namespace", "modeldeployment"]


@dataclass(frozen=True)
class _Snapshot:
    status: ModelDeploymentStatus


class RolloutStateCollector(Collector):
    """Rollout state per ModelDeployment, as of its latest reconcile. Thread-safe: reconciles run on
    kopf's executor threads, scrapes on the metrics server's."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._snapshots: dict[tuple[str, str], _Snapshot] = {}

    def observe(self, namespace: str, name: str, status: ModelDeploymentStatus) -> None:
        """Record the status a reconcile decided (replacing the previous one)."""
        with self._lock:
            self._snapshots[(namespace, name)] = _Snapshot(status)

    def forget(self, namespace: str, name: str) -> None:
        """The ModelDeployment is gone (or no longer ours): drop all its series."""
        with self._lock:
            self._snapshots.pop((namespace, name), None)

    def clear(self) -> None:
        with self._lock:
            self._snapshots.clear()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        with self._lock:
            snapshots = sorted(self._snapshots.items())
        info = GaugeMetricFamily(
            names.ROLLOUT_INFO,
            "Rollout of a ModelDeployment: 1, with its phase and stable and canary revisions as labels.",
            labels=[*_KEY, "phase", "stable_revision", "canary_revision", "rollout_variant"],
        )
        phase = GaugeMetricFamily(
            names.ROLLOUT_PHASE,
            "1 for the ModelDeployment's phase, 0 for the others.",
            labels=[*_KEY, "phase"],
        )
        step = GaugeMetricFamily(
            names.ROLLOUT_STEP,
            "Index of the current rollout step (0-based); absent outside a rollout.",
            labels=_KEY,
        )
        paused = GaugeMetricFamily(names.ROLLOUT_PAUSED, "1 while the rollout is paused.", labels=_KEY)
        canary = GaugeMetricFamily(
            names.ROLLOUT_CANARY_WEIGHT, "Share of traffic on the canary revision (0-1).", labels=_KEY
        )
        revision_labels = [*_KEY, "variant", "revision", "role"]
        weight = GaugeMetricFamily(
            names.ROLLOUT_REVISION_WEIGHT,
            "Share of traffic on each running revision (0-1).",
            labels=revision_labels,
        )
        ready = GaugeMetricFamily(
            names.ROLLOUT_REVISION_READY_REPLICAS,
            "Ready replicas of each running revision.",
            labels=revision_labels,
        )
        value = GaugeMetricFamily(
            names.ROLLOUT_CHECK_VALUE,
            "Latest measured value of each analysis check; absent while it has none.",
            labels=[*_KEY, "revision", "check"],
        )
        result = GaugeMetricFamily(
            names.ROLLOUT_CHECK_RESULT,
            "1 for the latest result of each analysis check (Pass, Fail, Inconclusive), 0 for the others.",
            labels=[*_KEY, "revision", "check", "result"],
        )
        failures = GaugeMetricFamily(
            names.ROLLOUT_CHECK_FAILURES,
            "Failed measurements of each analysis check in the current analysis.",
            labels=[*_KEY, "revision", "check"],
        )
        for (namespace, name), snapshot in snapshots:
            status = snapshot.status
            key = [namespace, name]
            info.add_metric(
                [
                    *key,
                    status.phase,
                    status.stable_revision or "",
                    status.canary_revision or "",
                    status.rollout_variant or "",
                ],
                1,
            )
            for each in PHASES:
                phase.add_metric([*key, each], 1 if status.phase == each else 0)
            if status.current_step_index is not None:
                step.add_metric(key, status.current_step_index)
            paused.add_metric(key, 1 if status.pause is not None else 0)
            canary.add_metric(key, status.canary_weight / 100)
            for variant in status.variants:
                for revision in variant.revisions:
                    labels = [*key, variant.name, revision.revision, revision.role]
                    weight.add_metric(labels, revision.weight / 100)
                    ready.add_metric(labels, revision.ready_replicas)
            analysis = status.analysis
            if analysis is not None:
                revision_name = analysis.revision or ""
                for check in analysis.checks:
                    labels = [*key, revision_name, check.name]
                    latest = check.measurements[-1] if check.measurements else None
                    if latest is not None and latest.value is not None:
                        value.add_metric(labels, latest.value)
                    if check.result is not None:
                        for each in CHECK_RESULTS:
                            result.add_metric([*labels, each], 1 if check.result == each else 0)
                    failures.add_metric(labels, check.failures)
        yield from (info, phase, step, paused, canary, weight, ready, value, result, failures)


ROLLOUT_STATE = RolloutStateCollector()
REGISTRY.register(ROLLOUT_STATE)


GC_LOG_SECONDS = 0.1
"""A collection pausing the process this long or longer is logged too (with its time, to match with a
reaction that was slow)."""
_gc_log = logging.getLogger("modeldeploy.gc")


class GcPauses:
    """Times each collection of the cyclic garbage collector (gc.callbacks: "start" and "stop" run in
    the collecting thread, holding the GIL, so no lock is needed) into `observe(generation, seconds)`."""

    def __init__(
        self,
        observe: Callable[[int, float], None] | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self._observe = observe if observe is not None else _observe_gc
        self._clock = clock
        self._started: float | None = None

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = self._clock()
        elif phase == "stop" and self._started is not None:
            self._observe(info.get("generation", -1), self._clock() - self._started)
            self._started = None

    def install(self) -> None:
        if self not in gc.callbacks:
            gc.callbacks.append(self)


def _observe_gc(generation: int, seconds: float) -> None:
    GC_PAUSE_SECONDS.labels(str(generation)).observe(seconds)
    if seconds >= GC_LOG_SECONDS:
        _gc_log.info("garbage collection of generation %d paused the process %.3fs", generation, seconds)


GC_PAUSES = GcPauses()
