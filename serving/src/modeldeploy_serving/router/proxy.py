"""The router's HTTP surface: a raw ASGI app (no framework on the hot path).

Everything except /healthz, /readyz and /metrics is proxied unchanged (method, path, query,
headers, body) to one backend of the arm chosen for the request; the response comes back
unchanged plus x-modeldeploy-variant / x-modeldeploy-revision headers.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest

from modeldeploy_contract.preflight import ADMIN_PREFIX
from modeldeploy_serving.predlog import LogRecord, PredictionLog, sampled
from modeldeploy_serving.router.budget import ByteBudget
from modeldeploy_serving.router.feedback import handle_feedback, is_feedback
from modeldeploy_serving.router.metrics import RouterMetrics
from modeldeploy_serving.router.shadow import ShadowDispatcher
from modeldeploy_serving.router.state import Arm, RouterState, Snapshot
from modeldeploy_serving.router.sticky import body_key, header_value
from modeldeploy_serving.router.upstream import (
    BadResponseError,
    ConnectFailedError,
    OverBudgetError,
    Response,
    ResponseTooLargeError,
    StaleConnectionError,
    UpstreamPool,
    UpstreamTimeoutError,
    request_head,
)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

log = logging.getLogger("modeldeploy.router")

_JSON = (b"content-type", b"application/json")
REQUEST_ID_HEADERS = (b"x-request-id", b"request-id")  # the model server reads the same (app.py)


def request_id_of(headers: list[tuple[bytes, bytes]]) -> str | None:
    for name, value in headers:
        if name in REQUEST_ID_HEADERS and value:
            text: str = value.decode("latin-1")
            return text[:256]
    return None


def _code_label(status: int) -> str:
    """The `code` label, spelt as the model server spells it (the status itself, `200`), so one
    selector such as `code=~"5.."` reads both; a status outside HTTP's range counts as 502 (the
    router could not pass on an answer it cannot represent), which keeps the label bounded."""
    return str(status) if 100 <= status <= 599 else "502"


class BodyTooLargeError(Exception):
    pass


class ClientGoneError(Exception):
    """The client disconnected before its whole body arrived: nothing may be forwarded."""


class BodyOverBudgetError(Exception):
    """A body without Content-Length went beyond the byte budget while it arrived."""


async def _read_body(receive: Receive, limit: int, budget: ByteBudget | None = None) -> bytes:
    """The whole body, at most `limit` bytes. With `budget` (a body whose length was not declared),
    each message is counted as it arrives, so a chunked upload is refused as soon as it does not
    fit, not after it has been read whole; the bytes stay counted for the caller on success, and
    are released here on any failure."""
    counted = 0
    try:
        message = await receive()
        if message["type"] != "http.request":
            raise ClientGoneError
        body: bytes = message.get("body", b"")
        if len(body) > limit:
            raise BodyTooLargeError
        if budget is not None:
            if not budget.admit(len(body)):
                raise BodyOverBudgetError
            counted = len(body)
        if not message.get("more_body", False):
            return body  # the common case: one message, no copy
        parts = [body]
        size = len(body)
        while message.get("more_body", False):
            message = await receive()
            if message["type"] != "http.request":  # http.disconnect: the body is truncated
                raise ClientGoneError
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise BodyTooLargeError
            if budget is not None:
                if not budget.admit(len(chunk)):
                    raise BodyOverBudgetError
                counted += len(chunk)
            parts.append(chunk)
        return b"".join(parts)
    except BaseException:
        if counted:
            assert budget is not None
            budget.release(counted)
        raise


def _declared_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    for name, value in headers:
        if name == b"content-length":
            if not value.isdigit():
                return None  # uvicorn's parser refuses it before the app runs
            return int(value) if len(value) <= 19 else 1 << 63  # no int() of 5,000 digits
    return None


async def _respond(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    headers.append((b"content-length", str(len(body)).encode("ascii")))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _error(
    send: Send, status: int, code: str, message: str, extra: tuple[tuple[bytes, bytes], ...] = ()
) -> None:
    body = orjson.dumps({"error": message, "code": code})
    await _respond(send, status, body, [_JSON, *extra])


WATCH_AFTER_SECONDS = 0.05
"""Exchanges still running after one to two of these periods get their client watched."""


class RouterApp:
    """ASGI application; `state` is fed by the config and backend sources."""

    def __init__(
        self,
        state: RouterState,
        metrics: RouterMetrics,
        pool: UpstreamPool,
        *,
        max_body_bytes: int = 16 * 1024 * 1024,
        max_response_bytes: int = 16 * 1024 * 1024,
        max_buffered_bytes: int = 96 * 1024 * 1024,
        max_concurrent: int = 1024,
        retry_after_seconds: int = 1,
        lifespan: Callable[[], Awaitable[Callable[[], Awaitable[None]]]] | None = None,
        prediction_log: PredictionLog | None = None,
        log_deployment: str = "",
    ) -> None:
        self.state = state
        self.plog = prediction_log
        """With a prediction log, one record per answered request (docs/serving.md#prediction-log)."""
        self.log_deployment = log_deployment
        self._ids = itertools.count()
        self._id_prefix = f"{socket.gethostname()}-{os.getpid()}"
        self.metrics = metrics
        self.pool = pool
        self.budget = ByteBudget(max_buffered_bytes, headroom=max_response_bytes)
        """Request, response and shadow-copy bytes held now (checked against max_buffered_bytes)."""
        self.shadow = ShadowDispatcher(pool, metrics, self._reserve, self._release, max_response_bytes)
        pool.budget = self.budget  # responses count while they arrive
        self.max_body_bytes = max_body_bytes
        self.max_response_bytes = max_response_bytes
        self.max_buffered_bytes = max_buffered_bytes
        self.max_concurrent = max_concurrent
        self._retry_after = ((b"retry-after", str(retry_after_seconds).encode("ascii")),)
        self.active = 0
        """Requests being proxied now."""
        # Clients of exchanges still waiting for their backend are watched, so that a client that
        # disconnects abandons its exchange (the upstream connection is closed: the model server sees
        # its caller gone). Watching costs a task, so per request there is only a dict entry; a
        # sweeper starts watchers for exchanges that outlived WATCH_AFTER_SECONDS.
        self._watched: dict[asyncio.Task[Any], Receive] = {}
        self._watchers: dict[asyncio.Task[Any], asyncio.Task[None]] = {}
        self._gone: set[asyncio.Task[Any]] = set()
        self._sweeper: asyncio.Future[None] | None = None
        metrics.buffered_bytes.set_function(lambda: self.budget.used)
        self._lifespan = lifespan
        self._arm_metrics: dict[str, tuple[Histogram, dict[int, Counter]]] = {}
        self._local: dict[str, Callable[[Send], Awaitable[None]]] = {
            "/healthz": self._healthz,
            "/readyz": self._readyz,
            "/metrics": self._metrics,
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            local = self._local.get(scope["path"]) if scope["method"] == "GET" else None
            if local is not None:
                await local(send)
            elif is_feedback(scope["method"], scope["path"]):  # labels for the joiner, not traffic
                await handle_feedback(self, scope, receive, send)
            elif scope["path"].startswith(ADMIN_PREFIX):
                # The model servers' operator-only routes (the golden set with its labels): not for callers.
                await self._refuse(send, 404, "not_found", "no such route")
            else:
                await self._proxy(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._run_lifespan(receive, send)

    async def _sweep(self) -> None:
        seen: set[asyncio.Task[Any]] = set()
        while True:
            await asyncio.sleep(WATCH_AFTER_SECONDS)
            running = set(self._watched)
            for task in running & seen:  # running at two sweeps in a row: at least one period old
                if task not in self._watchers:
                    self._watchers[task] = asyncio.ensure_future(self._watch(task, self._watched[task]))
            seen = running

    async def _watch(self, task: asyncio.Task[Any], receive: Receive) -> None:
        # The body has been read: receive() now only returns when the client disconnects.
        while (await receive())["type"] != "http.disconnect":
            pass
        if task in self._watched:  # still waiting for the backend
            self._gone.add(task)
            task.cancel()

    @property
    def buffered(self) -> int:
        """Bytes the budget counts now."""
        return self.budget.used

    def _reserve(self, size: int) -> bool:
        """Count `size` more bytes of new work (a request, a copy), if the byte budget allows them."""
        return self.budget.admit(size)

    def _release(self, size: int) -> None:
        self.budget.release(size)

    async def _refuse(self, send: Send, status: int, code: str, message: str) -> None:
        self.metrics.refused.labels(code).inc()
        extra = self._retry_after if status == 503 else ()
        await _error(send, status, code, message, extra)

    async def _proxy(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Admission (concurrency, body size, byte budget), then the exchange."""
        if self.active >= self.max_concurrent:
            await self._refuse(send, 503, "overloaded", "too many requests in progress; retry later")
            return
        declared = _declared_length(scope["headers"])
        if declared is not None and declared > self.max_body_bytes:  # before a byte of the body is read
            await self._refuse(
                send, 413, "body_too_large", f"request body exceeds {self.max_body_bytes} bytes"
            )
            return
        # A declared body is counted before a byte of it is read: bodies being read at once are
        # within the budget (checked and counted after reading, 64 concurrent 1 MiB bodies were all
        # read before any was counted).
        if declared is not None and not self.budget.admit(declared):
            await self._refuse(send, 503, "over_budget", "the router holds too many bytes; retry later")
            return
        held = declared or 0
        self.active += 1
        try:
            try:
                body = await _read_body(
                    receive, self.max_body_bytes, self.budget if declared is None else None
                )
            except BodyTooLargeError:
                await self._refuse(
                    send, 413, "body_too_large", f"request body exceeds {self.max_body_bytes} bytes"
                )
                return
            except BodyOverBudgetError:
                await self._refuse(send, 503, "over_budget", "the router holds too many bytes; retry later")
                return
            except ClientGoneError:
                self.metrics.refused.labels("client_gone").inc()
                return  # nothing to answer, nothing forwarded
            if declared is None:
                held = len(body)  # counted as it arrived
            await self._exchange(scope, receive, send, body)
        finally:
            self.budget.release(held)
            self.active -= 1

    async def _exchange(self, scope: Scope, receive: Receive, send: Send, body: bytes) -> None:
        started = time.perf_counter()
        snapshot = self.state.snapshot
        if snapshot is None:
            await _error(send, 503, "not_configured", "the router has no routing table yet")
            return
        headers: list[tuple[bytes, bytes]] = scope["headers"]
        sticky_key = self._sticky_key(snapshot, headers, body)
        route = snapshot.route(sticky_key, self._pinned(snapshot, headers))
        arm = route.arm
        request_id, headers = self._request_id(headers) if self.plog is not None else (None, headers)
        if arm is None:
            self.metrics.errors.labels("", "", "no_backend").inc()
            await _error(send, 503, "no_ready_backend", f"{route.error}")
            self._log(request_id, None, sticky_key, 503, started)
            return
        target = scope.get("raw_path") or scope["path"].encode()
        if scope.get("query_string"):
            target += b"?" + scope["query_string"]
        method: str = scope["method"]
        head = request_head(method, target, headers, len(body))
        task = asyncio.current_task()
        assert task is not None
        watched = self._watched
        watched[task] = receive
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = asyncio.ensure_future(self._sweep())
        try:
            response = await self._forward(snapshot, arm, method, head, body, send)
        except asyncio.CancelledError:
            if task in self._gone and task.uncancel() == 0:  # our own cancel: the client went away
                self.metrics.refused.labels("client_gone").inc()
                return
            raise
        finally:
            del watched[task]  # before any later await: a disconnect seen from now on cancels nothing
            if self._watchers:
                watcher = self._watchers.pop(task, None)
                if watcher is not None:
                    watcher.cancel()
                    self._gone.discard(task)
        if isinstance(response, int):  # the router answered with an error itself
            self._log(request_id, arm, sticky_key, response, started)
            return
        try:  # the answer stays counted while it is sent
            await _respond(send, response.status, response.body, [*response.headers, *arm.response_headers])
        finally:
            self.budget.release(response.held)
        self._observe(arm, response.status, time.perf_counter() - started)
        self._log(request_id, arm, sticky_key, response.status, started)
        self._copy(snapshot, arm, method, head, body, response)

    def _request_id(self, headers: list[tuple[bytes, bytes]]) -> tuple[str, list[tuple[bytes, bytes]]]:
        """The request's id and the headers to forward: the server logs the same request under the
        same id, so one is made here when the caller sent none, and passed on (the records join)."""
        request_id = request_id_of(headers)
        if request_id is not None:
            return request_id, headers
        request_id = f"{self._id_prefix}-{next(self._ids)}"
        return request_id, [*headers, (b"x-request-id", request_id.encode("latin-1"))]

    def _log(
        self, request_id: str | None, arm: Arm | None, sticky_key: str | None, status: int, started: float
    ) -> None:
        """The router's prediction-log record: LogRecord's shape with what the router knows (the
        arm, the sticky key, pseudonymised by the policy, its own latency); the inputs and outputs
        are in the model server's record of the same request id (the router does not parse bodies).
        Shadow and mirror copies never come here (they are not answers anyone received)."""
        plog = self.plog
        if plog is None or request_id is None:
            return
        try:
            if not sampled(request_id, plog.sample_rate):
                return
            plog.log(
                LogRecord(
                    request_id=request_id,
                    time=time.time(),
                    deployment=self.log_deployment,
                    variant=arm.config.variant if arm is not None else "",
                    revision=arm.config.revision if arm is not None else "",
                    model_version="",
                    inputs={},
                    outputs=None,
                    latency_ms=(time.perf_counter() - started) * 1000.0,
                    status=str(status),
                    sticky_key=sticky_key,
                )
            )
        except Exception:  # the log must never fail a request
            log.exception("prediction log record failed")

    def _copy(
        self, snapshot: Snapshot, arm: Arm, method: str, head: bytes, body: bytes, response: Response
    ) -> None:
        """Start the shadow and mirror copies of a request that has been answered.

        Copies start after the caller has its answer: they can neither delay nor change it."""
        served = arm.config.variant
        config = snapshot.config
        for copy, target in ((config.shadow, snapshot.shadow), (config.mirror, snapshot.mirror)):
            if copy is not None and target is not None and self.shadow.wanted(copy, served):
                self.shadow.submit(
                    copy,
                    target,
                    method,
                    head,
                    body,
                    response.status,
                    response.body,
                    config.timeouts.connect_seconds,
                )

    async def _forward(
        self, snapshot: Snapshot, arm: Arm, method: str, head: bytes, body: bytes, send: Send
    ) -> Response | int:
        """Send upstream with at most one safe retry; on failure answer the client and return the
        status it was given."""
        timeouts = snapshot.config.timeouts
        labels = (arm.config.variant, arm.config.revision)
        backend = arm.backends.next(self.pool.suspects())
        assert backend is not None  # route() only returns arms with ready backends
        for attempt in (1, 2):
            try:
                return await self.pool.send(
                    backend,
                    method,
                    head,
                    body,
                    connect_timeout=timeouts.connect_seconds,
                    timeout=timeouts.request_seconds,
                    max_response_bytes=self.max_response_bytes,
                    admitted=True,  # the answer of a request taken: it may wait for room
                )
            except StaleConnectionError as exc:
                # Closed after the request was written, before any answer: the backend may have
                # died processing it. Never sent again (docs/router.md, delivery guarantee).
                self.metrics.errors.labels(*labels, "closed").inc()
                log.warning("502 backend_closed: %s, attempt %d: %s", backend, attempt, exc)
                await _error(
                    send,
                    502,
                    "backend_closed",
                    "the backend closed the connection before answering; the request may have reached it",
                    arm.response_headers,
                )
                return 502
            except ConnectFailedError as exc:
                # Refused, unreachable, a pooled connection found closed before writing, or closed
                # with no byte of the request acknowledged by the backend's kernel: the request
                # provably never reached a model, so another ready backend may take it.
                retry = snapshot.config.retry.on_connect_error
                other = arm.backends.other_than(backend, self.pool.suspects()) if retry else None
                if attempt == 2 or other is None:
                    self.metrics.errors.labels(*labels, "connect").inc()
                    await _error(send, 502, "backend_unreachable", str(exc), arm.response_headers)
                    return 502
                self.metrics.retries.labels(*labels, "connect").inc()
                backend = other
            except UpstreamTimeoutError:
                self.metrics.errors.labels(*labels, "timeout").inc()
                await _error(
                    send,
                    504,
                    "backend_timeout",
                    f"no answer within {timeouts.request_seconds} s",
                    arm.response_headers,
                )
                return 504
            except BadResponseError as exc:
                return await self._bad_response(send, arm, labels, exc)
        raise AssertionError("unreachable: the second attempt returns or answers")

    async def _bad_response(
        self, send: Send, arm: Arm, labels: tuple[str, str], exc: BadResponseError
    ) -> int:
        """The backend's answer cannot be passed on: over the byte budget (503, retry later), over
        max_response_bytes, or not valid HTTP (502)."""
        if isinstance(exc, OverBudgetError):
            self.metrics.refused.labels("over_budget").inc()
            await _error(send, 503, "over_budget", str(exc), (*arm.response_headers, *self._retry_after))
            return 503
        reason = "response_too_large" if isinstance(exc, ResponseTooLargeError) else "bad_response"
        self.metrics.errors.labels(*labels, reason).inc()
        code = "response_too_large" if reason == "response_too_large" else "bad_backend_response"
        await _error(send, 502, code, str(exc), arm.response_headers)
        return 502

    def _observe(self, arm: Arm, status: int, seconds: float) -> None:
        # labels() costs a dict lookup and tuple hashing per call; keep the children per arm.
        children = self._arm_metrics.get(arm.config.arm_id)
        if children is None:
            labels = (arm.config.variant, arm.config.revision)
            children = self._arm_metrics[arm.config.arm_id] = (
                self.metrics.latency.labels(*labels),
                {},
            )
        latency, requests = children
        counter = requests.get(status)
        if counter is None:  # once per (arm, status): a handful per arm
            arm_labels = (arm.config.variant, arm.config.revision)
            counter = requests[status] = self.metrics.requests.labels(*arm_labels, _code_label(status))
        counter.inc()
        latency.observe(seconds)

    @staticmethod
    def _sticky_key(snapshot: Snapshot, headers: list[tuple[bytes, bytes]], body: bytes) -> str | None:
        if snapshot.sticky_header is not None:
            key = header_value(headers, snapshot.sticky_header)
            if key is not None:
                return key
        sticky = snapshot.config.sticky
        if sticky is not None and sticky.body_field and body:
            return body_key(body, sticky.body_field, sticky.protocol)  # only when the header is absent
        return None

    @staticmethod
    def _pinned(snapshot: Snapshot, headers: list[tuple[bytes, bytes]]) -> str | None:
        return header_value(headers, snapshot.pin_header) if snapshot.pin_header is not None else None

    async def _healthz(self, send: Send) -> None:
        await _respond(send, 200, b'{"status":"alive"}', [_JSON])

    async def _readyz(self, send: Send) -> None:
        snapshot = self.state.snapshot
        if snapshot is None:
            await _error(send, 503, "not_configured", "no routing table loaded yet")
        elif not snapshot.ready:
            await _error(send, 503, "no_ready_backend", "no weighted arm has a ready backend")
        else:
            body = orjson.dumps({"status": "ready", "generation": snapshot.config.generation})
            await _respond(send, 200, body, [_JSON])

    async def _metrics(self, send: Send) -> None:
        await _respond(
            send,
            200,
            generate_latest(self.metrics.registry),
            [(b"content-type", CONTENT_TYPE_LATEST.encode())],
        )

    async def _run_lifespan(self, receive: Receive, send: Send) -> None:
        stop: Callable[[], Awaitable[None]] | None = None
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    if self._lifespan is not None:
                        stop = await self._lifespan()
                except Exception as exc:
                    log.exception("router start-up failed")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if stop is not None:
                    await stop()
                await self.shadow.drain(timeout=2.0)
                if self.plog is not None:  # write what is buffered (bounded in time)
                    await asyncio.get_running_loop().run_in_executor(None, self.plog.close)
                if self._sweeper is not None:
                    self._sweeper.cancel()
                self.pool.close()
                await send({"type": "lifespan.shutdown.complete"})
                return
