"""Shadow and mirror traffic: copy a request to another arm after the fact, compare, never wait for it.

The primary answer is sent to the client first; the copy is a separate task with its own timeout,
and at most `max_in_flight` copies per arm exist at once (more are dropped and counted, never
queued), so a slow or failing copy target can neither change nor delay the primary. Copies carry
`x-modeldeploy-traffic: mirror`, so the target's server counts them as traffic="mirror".
Both answers are compared on every row of the request: label agreement and score difference,
exported per copy arm (the `shadowAgreement` check reads them).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from modeldeploy_contract.metric_names import MIRROR_TRAFFIC, TRAFFIC_HEADER
from modeldeploy_contract.router_config import ShadowConfig
from modeldeploy_serving.router.metrics import RouterMetrics
from modeldeploy_serving.router.state import Arm
from modeldeploy_serving.router.upstream import UpstreamPool, UpstreamTimeoutError

log = logging.getLogger("modeldeploy.router.shadow")


@dataclass(frozen=True)
class Answer:
    """What is compared between primary and shadow: one row's score and label."""

    score: float | None
    label: Any


def _first_value(data: Any) -> Any:
    while isinstance(data, list) and data:
        data = data[0]
    return data


def _score_of_row(row: Any) -> float | None:
    # A probability row [p0, p1] of a binary model compares on p1; wider rows on their maximum.
    if isinstance(row, list) and row and all(isinstance(x, int | float) for x in row):
        return float(row[1] if len(row) == 2 else max(row))
    if isinstance(row, int | float) and not isinstance(row, bool):
        return float(row)
    return None


def _argmax(row: Any) -> Any:
    if isinstance(row, list) and row and all(isinstance(x, int | float) for x in row):
        return max(range(len(row)), key=row.__getitem__)
    return None


MAX_COMPARED_ROWS = 10_000
"""Rows of one answer compared at most (a bound on the comparison's CPU: ~2 us a row in CPython, so
20 ms for the largest answer); the rest of a larger batch is not compared."""


def _v2_rows(tensor: dict[str, Any], limit: int) -> list[Any]:
    """The rows of a V2 output tensor: flat row-major data of shape [n, k] in chunks of k, nested
    data row by row, and a 1-D tensor one value per row."""
    data, shape = tensor.get("data"), tensor.get("shape")
    if not isinstance(data, list) or not data:
        return []
    if (
        isinstance(shape, list)
        and len(shape) == 2
        and isinstance(shape[1], int)
        and shape[1] > 0
        and not isinstance(data[0], list)
    ):
        width = shape[1]
        return [data[i : i + width] for i in range(0, min(len(data), limit * width), width)]
    return data[:limit]


def parse_rows(body: bytes, config: ShadowConfig, limit: int = MAX_COMPARED_ROWS) -> list[Answer] | None:
    """Score and label of every row (at most `limit`) of a V2 (`outputs`) or V1 (`predictions`)
    response; None when the body is not such a response."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(doc, dict):
        return None
    predictions = doc.get("predictions")
    if isinstance(predictions, list) and predictions:
        return [
            Answer(_score_of_row(row), _argmax(row) if isinstance(row, list) else row)
            for row in predictions[:limit]
        ]
    outputs = doc.get("outputs")
    if not isinstance(outputs, list) or not outputs:
        return None
    by_name = {t.get("name"): t for t in outputs if isinstance(t, dict)}
    first = outputs[0] if isinstance(outputs[0], dict) else {}
    score_tensor = by_name.get(config.score_output) if config.score_output else None
    score_tensor = score_tensor or by_name.get("probabilities") or first
    label_tensor = by_name.get(config.label_output) if config.label_output else None
    label_tensor = label_tensor or by_name.get("label") or by_name.get("predictions")
    score_rows = _v2_rows(score_tensor, limit)
    label_rows = _v2_rows(label_tensor, limit) if label_tensor else []
    answers = []
    for i in range(max(len(score_rows), len(label_rows))):
        score_row = score_rows[i] if i < len(score_rows) else None
        if label_tensor:
            label = _first_value(label_rows[i]) if i < len(label_rows) else None
        else:
            label = _argmax(score_row)
        answers.append(Answer(_score_of_row(score_row), label))
    return answers or None


def parse_answer(body: bytes, config: ShadowConfig) -> Answer | None:
    """Score and label of the first row of a V2 (`outputs`) or V1 (`predictions`) response."""
    rows = parse_rows(body, config, limit=1)
    return rows[0] if rows else None


@dataclass(frozen=True)
class Comparison:
    """How the rows of one copy's answer compare with the primary's, row by row."""

    agree: int
    disagree: int
    """Rows with different labels, plus rows only one side answered (a copy that answers another
    number of rows disagrees on the missing ones)."""
    score_differences: tuple[float, ...]


def compare(primary: list[Answer], copy: list[Answer]) -> Comparison:
    agree = disagree = 0
    differences = []
    for a, b in zip(primary, copy, strict=False):
        if a.score is not None and b.score is not None:
            differences.append(abs(a.score - b.score))
        if a.label is not None and b.label is not None:
            if a.label == b.label:
                agree += 1
            else:
                disagree += 1
    disagree += abs(len(primary) - len(copy))
    return Comparison(agree, disagree, tuple(differences))


_MARK = f"{TRAFFIC_HEADER}: {MIRROR_TRAFFIC}\r\n".encode("ascii")


def mark_copy(head: bytes) -> bytes:
    """The request head of a copy: the primary's (which never carries the header: `request_head`
    drops it) plus `x-modeldeploy-traffic: mirror` before the blank line."""
    return head[:-2] + _MARK + b"\r\n"


class ShadowDispatcher:
    """Starts shadow copies and records how their answers compare with the primary's."""

    def __init__(
        self,
        pool: UpstreamPool,
        metrics: RouterMetrics,
        reserve: Callable[[int], bool] = lambda _size: True,
        release: Callable[[int], None] = lambda _size: None,
        max_response_bytes: int = 16 * 1024 * 1024,
    ) -> None:
        self._pool = pool
        self._metrics = metrics
        self._reserve = reserve
        self._release = release
        self._max_response_bytes = max_response_bytes
        self._in_flight: set[asyncio.Task[None]] = set()
        self._per_arm: dict[str, int] = {}
        """Copies in flight per target arm (each config's max_in_flight bounds its own arm)."""

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    def wanted(self, config: ShadowConfig, served_variant: str | None = None) -> bool:
        if config.from_variant is not None and served_variant != config.from_variant:
            return False
        return config.percent >= 100.0 or random.random() * 100.0 < config.percent  # noqa: S311

    def submit(
        self,
        config: ShadowConfig,
        arm: Arm,
        method: str,
        head: bytes,
        body: bytes,
        primary_status: int,
        primary_body: bytes,
        connect_timeout: float,
    ) -> None:
        labels = (arm.config.variant, arm.config.revision)
        backend = arm.backends.next()
        # A copy holds the request and the primary's answer until the shadow answers (plus its own
        # answer, up to max_response_bytes): counted against the router's byte budget, or dropped.
        held = len(body) + len(primary_body)
        arm_key = arm.config.arm_id
        running = self._per_arm.get(arm_key, 0)
        if backend is None or running >= config.max_in_flight or not self._reserve(held):
            self._metrics.shadow_requests.labels(*labels, "dropped").inc()
            return
        head = mark_copy(head)
        task = asyncio.create_task(
            self._run(
                config, labels, backend, method, head, body, primary_status, primary_body, connect_timeout
            )
        )
        self._in_flight.add(task)  # a strong reference, or the task may be collected mid-flight
        self._per_arm[arm_key] = running + 1

        def done(task: asyncio.Task[None]) -> None:
            self._in_flight.discard(task)
            self._per_arm[arm_key] -= 1
            if not self._per_arm[arm_key]:
                del self._per_arm[arm_key]
            self._release(held)

        task.add_done_callback(done)

    async def _run(
        self,
        config: ShadowConfig,
        labels: tuple[str, str],
        backend: str,
        method: str,
        head: bytes,
        body: bytes,
        primary_status: int,
        primary_body: bytes,
        connect_timeout: float,
    ) -> None:
        try:
            response = await self._pool.send(
                backend,
                method,
                head,
                body,
                connect_timeout=connect_timeout,
                timeout=config.timeout_seconds,
                max_response_bytes=self._max_response_bytes,
            )
        except UpstreamTimeoutError:
            self._metrics.shadow_requests.labels(*labels, "timeout").inc()
            return
        except Exception as exc:  # a shadow failure is a metric, never a crash
            log.debug("shadow request to %s failed: %s", backend, exc)
            self._metrics.shadow_requests.labels(*labels, "error").inc()
            return
        try:
            ok = 200 <= response.status < 300
            self._metrics.shadow_requests.labels(*labels, "ok" if ok else "error").inc()
            if ok and 200 <= primary_status < 300:
                self._compare(config, labels, primary_body, response.body)
        finally:
            self._release(response.held)  # counted while it arrived, until compared

    def _compare(self, config: ShadowConfig, labels: tuple[str, str], primary: bytes, shadow: bytes) -> None:
        a, b = parse_rows(primary, config), parse_rows(shadow, config)
        if a is None or b is None:
            return
        result = compare(a, b)
        histogram = self._metrics.shadow_score_difference.labels(*labels)
        for difference in result.score_differences:
            histogram.observe(difference)
        if result.agree:
            self._metrics.shadow_label_agreement.labels(*labels, "agree").inc(result.agree)
        if result.disagree:
            self._metrics.shadow_label_agreement.labels(*labels, "disagree").inc(result.disagree)

    async def drain(self, timeout: float) -> None:
        """Let running copies finish (bounded) on shutdown."""
        if self._in_flight:
            await asyncio.wait(set(self._in_flight), timeout=timeout)
