"""The preflight replay (issue 15): the operator's HTTP side of a golden-set check.

For one new revision: GET the golden set from one of its ready pods (GOLDEN_PATH: golden.json as the
server verified it against the bundle's manifest; the router never forwards that path), POST its
rows in batches to a pod of the new revision and to a pod of the stable, each request marked with
REPLAY_HEADER (the servers count it in no live metric, drift window or prediction log), and judge the
answers with `modeldeploy_contract.preflight.compare()`. The verdict ends up in a `PreflightStatus`;
what it means for traffic is the planner's business (domain/rollout/preflight.py).

Bounds: every request goes through `fetch()` (no redirects, byte cap, per-request deadline), and the
whole replay stops at the spec's timeoutSeconds (checked before each request, each request limited
to the time left). It runs on a `MeasurementPool`, never under the reconcile lock.

A replay that cannot complete (a pod unreachable, an error answer) is not a verdict: it comes back
Pending with the reason, and is retried. A golden set that does not parse, or answers of the wrong
shape, is Failed: it will not get better by asking again.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx
from pydantic import ValidationError

from modeldeploy_contract.preflight import (
    GOLDEN_PATH,
    REPLAY_BATCH_ROWS,
    REPLAY_HEADER,
    GoldenSet,
    PreflightReport,
    PreflightThresholds,
    Quality,
    compare,
    outputs_from_v2,
    v2_request,
)
from modeldeploy_operator.analysis.fetch import FetchError, FetchLimits, fetch, sanitize
from modeldeploy_operator.domain.spec import Preflight
from modeldeploy_operator.domain.status_model import PreflightCheckStatus, PreflightQuality, PreflightStatus

log = logging.getLogger("modeldeploy.preflight")
MAX_GOLDEN_BYTES = 16 * 1024 * 1024
"""pack keeps at most 20,000 golden rows: about 2.4 MB of JSON for the 18-feature churn model
(118 kB per 1,000 rows measured), so 16 MiB leaves room for wide models and refuses anything absurd."""
MAX_ANSWER_BYTES = 1024 * 1024
"""A V2 answer to REPLAY_BATCH_ROWS rows: a few kB."""


@dataclass(frozen=True)
class ReplayTarget:
    model: str
    """The served model's name (the ModelDeployment's)."""
    variant: str
    revision: str
    endpoint: str
    """`ip:port` of a ready pod of the new revision."""
    stable_revision: str
    stable_endpoint: str | None
    """`ip:port` of a ready pod of the stable revision; None: compared with the recorded outputs only."""


class _NotNowError(Exception):
    """The replay could not complete this time (retried)."""


class _VerdictError(Exception):
    """The replay cannot ever pass (a broken golden set, answers of the wrong shape)."""


def thresholds_of(preflight: Preflight) -> PreflightThresholds:
    return PreflightThresholds(
        max_output_diff=preflight.max_output_diff,
        max_score_psi=preflight.max_score_psi,
        max_auc_drop=preflight.max_auc_drop,
        max_accuracy_drop=preflight.max_accuracy_drop,
        max_log_loss_increase=preflight.max_log_loss_increase,
        min_auc=preflight.min_auc,
        min_accuracy=preflight.min_accuracy,
        require_labels=preflight.require_labels,
    )


def _finite(value: float | None) -> float | None:
    """Status is JSON: an infinite or NaN figure is left out (the check's detail still says it)."""
    return value if value is not None and math.isfinite(value) else None


def _quality(q: Quality | None) -> PreflightQuality | None:
    if q is None:
        return None
    return PreflightQuality(auc=_finite(q.auc), accuracy=_finite(q.accuracy), log_loss=_finite(q.log_loss))


def status_of(
    target: ReplayTarget, report: PreflightReport, now: dt.datetime, attempts: int = 0
) -> PreflightStatus:
    """The report as status: the verdict, every figure, one line per failed check in the message."""
    failures = report.failures
    if failures:
        message = "; ".join(c.detail for c in failures)
    else:
        psi = "" if report.score_psi is None else f", score PSI {report.score_psi:.4f}"
        auc = f", AUC {report.new.auc:.4f}" if report.new and report.new.auc is not None else ""
        message = (
            f"{report.rows} golden rows match the bundle (max |diff| {report.max_abs_diff:.3g}){psi}{auc}"
        )
    return PreflightStatus(
        variant=target.variant,
        revision=target.revision,
        stable_revision=target.stable_revision if target.stable_endpoint else None,
        result=report.verdict,
        message=message[:4096],
        attempts=attempts,
        rows=report.rows,
        labelled_rows=report.labelled_rows,
        max_abs_diff=_finite(report.max_abs_diff),
        tolerance=_finite(report.tolerance),
        score_psi=_finite(report.score_psi),
        new=_quality(report.new),
        stable=_quality(report.stable),
        checks=tuple(
            PreflightCheckStatus(
                name=c.name,
                passed=c.passed,
                value=_finite(c.value),
                threshold=_finite(c.threshold),
                detail=c.detail[:1024],
            )
            for c in report.checks[:16]
        ),
        finished_at=now.replace(microsecond=0),
    )


class Replayer:
    """Runs one preflight replay; `clock` and `now` are injectable for tests."""

    def __init__(
        self,
        client: httpx.Client,
        *,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self.client = client
        self.clock = clock
        self.now = now

    def run(self, target: ReplayTarget, preflight: Preflight, attempts: int = 0) -> PreflightStatus:
        """The preflight of `target`. Never raises: a failure to replay is a Pending status."""
        deadline = self.clock() + preflight.timeout_seconds
        try:
            golden = self._golden(target, deadline)
            if golden is None:
                return PreflightStatus(
                    variant=target.variant,
                    revision=target.revision,
                    result="Skipped",
                    message="the bundle has no golden set (pack it with --golden-data): preflight skipped",
                    attempts=attempts,
                    finished_at=self.now().replace(microsecond=0),
                )
            new = self._replay(target.endpoint, target.model, golden, deadline)
            stable = (
                self._replay(target.stable_endpoint, target.model, golden, deadline)
                if target.stable_endpoint
                else None
            )
            try:
                report = compare(golden, new, stable, thresholds_of(preflight))
            except ValueError as exc:
                raise _VerdictError(sanitize(str(exc))) from exc
            return status_of(target, report, self.now(), attempts)
        except _VerdictError as exc:
            return PreflightStatus(
                variant=target.variant,
                revision=target.revision,
                result="Failed",
                message=str(exc),
                attempts=attempts,
                finished_at=self.now().replace(microsecond=0),
            )
        except _NotNowError as exc:
            why = str(exc)
        except Exception:  # a bug must not fail the reconcile that collects it: retried, logged
            log.exception("preflight replay of %s %s failed", target.model, target.revision)
            why = "the replay failed in the operator (see its log)"
        return PreflightStatus(
            variant=target.variant,
            revision=target.revision,
            result="Pending",
            message=f"replay attempt {attempts + 1} did not complete: {why}",
            attempts=attempts + 1,
            finished_at=self.now().replace(microsecond=0),
        )

    def _limits(self, deadline: float, max_bytes: int) -> FetchLimits:
        left = deadline - self.clock()
        if left <= 0:
            raise _NotNowError("the replay ran out of time (rollout.preflight.timeoutSeconds)")
        return FetchLimits(deadline_seconds=left, max_bytes=max_bytes)

    def _golden(self, target: ReplayTarget, deadline: float) -> GoldenSet | None:
        url = f"http://{target.endpoint}{GOLDEN_PATH}"
        try:
            status, body = fetch(self.client, url, self._limits(deadline, MAX_GOLDEN_BYTES), clock=self.clock)
        except FetchError as exc:
            raise _NotNowError(f"golden set from revision {target.revision}: {exc}") from exc
        if status == 404:
            return None
        if status != 200:
            raise _NotNowError(f"golden set from revision {target.revision}: HTTP {status}")
        try:
            return GoldenSet.model_validate_json(body)
        except ValidationError as exc:
            raise _VerdictError(
                f"the golden set of revision {target.revision} is invalid "
                f"({exc.error_count()} errors: {sanitize(str(exc.errors()[0]['msg']))})"
            ) from exc

    def _replay(self, endpoint: str, model: str, golden: GoldenSet, deadline: float) -> list[list[float]]:
        url = f"http://{endpoint}/v2/models/{model}/infer"
        outputs: list[list[float]] = []
        for start in range(0, len(golden.inputs), REPLAY_BATCH_ROWS):
            rows = golden.inputs[start : start + REPLAY_BATCH_ROWS]
            try:
                status, body = fetch(
                    self.client,
                    url,
                    self._limits(deadline, MAX_ANSWER_BYTES),
                    clock=self.clock,
                    method="POST",
                    content=json.dumps(v2_request(rows)).encode(),
                    headers={REPLAY_HEADER: "1", "Content-Type": "application/json"},
                )
            except FetchError as exc:
                raise _NotNowError(f"replay to {endpoint}: {exc}") from exc
            if status in (400, 413, 422):  # the server refuses these rows: asking again will not help
                raise _VerdictError(
                    f"replay to {endpoint}: the server refused the golden rows (HTTP {status})"
                )
            if status != 200:
                raise _NotNowError(f"replay to {endpoint}: HTTP {status}")
            try:
                outputs += outputs_from_v2(json.loads(body), golden.output, len(rows))
            except (ValueError, TypeError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
                raise _VerdictError(
                    f"the answers of {endpoint} do not fit the golden set: {sanitize(str(exc))}"
                ) from exc
        return outputs
