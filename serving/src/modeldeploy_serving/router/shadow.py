"""Shadow traffic: copy a request to the shadow arm after the fact, compare, never wait for it.

The primary answer is sent to the client first; the copy is a separate task with its own timeout,
and at most `max_in_flight` copies exist at once (more are dropped and counted, never queued), so
a slow or failing shadow can neither change nor delay the primary.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from modeldeploy_contract.router_config import ShadowConfig
from modeldeploy_serving.router.metrics import RouterMetrics
from modeldeploy_serving.router.state import Arm
from modeldeploy_serving.router.upstream import UpstreamPool, UpstreamTimeoutError

log = logging.getLogger("modeldeploy.router.shadow")


@dataclass(frozen=True)
class Answer:
    """What is compared between primary and shadow: the first row's score and label."""

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


def _v2_first_row(tensor: dict[str, Any]) -> Any:
    data, shape = tensor.get("data"), tensor.get("shape")
    if not isinstance(data, list) or not data:
        return None
    if (
        isinstance(shape, list)
        and len(shape) == 2
        and isinstance(shape[1], int)
        and not isinstance(data[0], list)
    ):
        return data[: shape[1]]  # flat row-major data: the first row is the first shape[1] values
    return data[0]


def parse_answer(body: bytes, config: ShadowConfig) -> Answer | None:
    """Score and label of the first row of a V2 (`outputs`) or V1 (`predictions`) response."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(doc, dict):
        return None
    if isinstance(doc.get("predictions"), list) and doc["predictions"]:
        row = doc["predictions"][0]
        score = _score_of_row(row)
        label = _argmax(row) if isinstance(row, list) else row
        return Answer(score, label)
    outputs = doc.get("outputs")
    if not isinstance(outputs, list) or not outputs:
        return None
    by_name = {t.get("name"): t for t in outputs if isinstance(t, dict)}
    first = outputs[0] if isinstance(outputs[0], dict) else {}
    score_tensor = by_name.get(config.score_output) if config.score_output else None
    score_tensor = score_tensor or by_name.get("probabilities") or first
    label_tensor = by_name.get(config.label_output) if config.label_output else None
    label_tensor = label_tensor or by_name.get("label") or by_name.get("predictions")
    score_row = _v2_first_row(score_tensor)
    label = _first_value(_v2_first_row(label_tensor)) if label_tensor else _argmax(score_row)
    return Answer(_score_of_row(score_row), label)


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

    def wanted(self, config: ShadowConfig) -> bool:
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
        if backend is None or len(self._in_flight) >= config.max_in_flight or not self._reserve(held):
            self._metrics.shadow_requests.labels(*labels, "dropped").inc()
            return
        task = asyncio.create_task(
            self._run(
                config, labels, backend, method, head, body, primary_status, primary_body, connect_timeout
            )
        )
        self._in_flight.add(task)  # a strong reference, or the task may be collected mid-flight
        task.add_done_callback(self._in_flight.discard)
        task.add_done_callback(lambda _task: self._release(held))

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
        ok = 200 <= response.status < 300
        self._metrics.shadow_requests.labels(*labels, "ok" if ok else "error").inc()
        if ok and 200 <= primary_status < 300:
            self._compare(config, labels, primary_body, response.body)

    def _compare(self, config: ShadowConfig, labels: tuple[str, str], primary: bytes, shadow: bytes) -> None:
        a, b = parse_answer(primary, config), parse_answer(shadow, config)
        if a is None or b is None:
            return
        if a.score is not None and b.score is not None:
            self._metrics.shadow_score_difference.labels(*labels).observe(abs(a.score - b.score))
        if a.label is not None and b.label is not None:
            self._metrics.shadow_label_agreement.labels(
                *labels, "agree" if a.label == b.label else "disagree"
            ).inc()

    async def drain(self, timeout: float) -> None:
        """Let running copies finish (bounded) on shutdown."""
        if self._in_flight:
            await asyncio.wait(set(self._in_flight), timeout=timeout)
