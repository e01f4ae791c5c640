"""The router's body reading against hostile clients: in-process ASGI calls, no network."""

from __future__ import annotations

import asyncio
from collections.abc import MutableMapping
from typing import Any

import orjson
import pytest

from modeldeploy_serving.router.metrics import RouterMetrics
from modeldeploy_serving.router.proxy import RouterApp
from modeldeploy_serving.router.state import RouterState
from modeldeploy_serving.router.upstream import OverBudgetError, UpstreamPool, _Connection

LIMIT = 4096


class Recorder:
    def __init__(self) -> None:
        self.messages: list[MutableMapping[str, Any]] = []

    async def __call__(self, message: MutableMapping[str, Any]) -> None:
        self.messages.append(message)

    @property
    def status(self) -> int | None:
        return next((m["status"] for m in self.messages if m["type"] == "http.response.start"), None)


def run(app: RouterApp, messages: list[dict[str, Any]], headers: list[tuple[bytes, bytes]]) -> Recorder:
    pending = list(messages)

    async def receive() -> dict[str, Any]:
        return pending.pop(0) if pending else {"type": "http.disconnect"}

    scope = {"type": "http", "method": "POST", "path": "/v2/models/m/infer", "headers": headers}
    sent = Recorder()
    asyncio.run(app(scope, receive, sent))
    return sent


def make_app() -> RouterApp:
    metrics = RouterMetrics()
    return RouterApp(RouterState(lambda _arm: (), metrics), metrics, UpstreamPool(), max_body_bytes=LIMIT)


def refused(app: RouterApp, reason: str) -> float:
    value = app.metrics.registry.get_sample_value("modeldeploy_router_refused_total", {"reason": reason})
    return value or 0.0


def test_one_message_over_the_limit_is_413() -> None:
    app = make_app()
    sent = run(app, [{"type": "http.request", "body": b"x" * (LIMIT + 1), "more_body": False}], [])
    assert sent.status == 413
    assert orjson.loads(sent.messages[1]["body"])["code"] == "body_too_large"
    assert refused(app, "body_too_large") == 1


def test_declared_length_over_the_limit_is_413_before_reading() -> None:
    app = make_app()
    for declared in (str(LIMIT + 1).encode(), b"9" * 5000):
        sent = run(app, [], [(b"content-length", declared)])  # receive() would say disconnect
        assert sent.status == 413
    assert refused(app, "body_too_large") == 2


def test_a_client_gone_mid_body_is_never_forwarded() -> None:
    app = make_app()
    # No routing table: had the truncated body been "complete", the answer would be a 503.
    sent = run(app, [{"type": "http.request", "body": b'{"inputs": [', "more_body": True}], [])
    assert sent.messages == []
    assert refused(app, "client_gone") == 1
    sent = run(app, [{"type": "http.disconnect"}], [])
    assert sent.messages == []
    assert refused(app, "client_gone") == 2


def test_a_whole_body_within_the_limit_goes_on() -> None:
    app = make_app()
    parts = [
        {"type": "http.request", "body": b"x" * (LIMIT // 2), "more_body": True},
        {"type": "http.request", "body": b"x" * (LIMIT // 2), "more_body": False},
    ]
    sent = run(app, parts, [])
    assert sent.status == 503  # reached routing (no table yet), not refused


def test_beyond_max_concurrent_is_a_503_with_retry_after() -> None:
    metrics = RouterMetrics()
    app = RouterApp(RouterState(lambda _arm: (), metrics), metrics, UpstreamPool(), max_concurrent=2)
    app.active = 2  # two requests in progress
    sent = run(app, [{"type": "http.request", "body": b"{}", "more_body": False}], [])
    assert sent.status == 503
    assert (b"retry-after", b"1") in sent.messages[0]["headers"]
    assert orjson.loads(sent.messages[1]["body"])["code"] == "overloaded"
    assert refused(app, "overloaded") == 1
    assert app.active == 2  # a refusal holds no slot


def test_the_byte_budget_refuses_before_reading_and_counts_what_is_held() -> None:
    metrics = RouterMetrics()
    app = RouterApp(
        RouterState(lambda _arm: (), metrics), metrics, UpstreamPool(), max_buffered_bytes=64 * 1024
    )
    app.buffered = 60 * 1024  # held by requests in progress
    sent = run(app, [], [(b"content-length", b"8192")])
    assert sent.status == 503
    assert orjson.loads(sent.messages[1]["body"])["code"] == "over_budget"
    # Without a declared length the bytes are checked once read.
    sent = run(app, [{"type": "http.request", "body": b"x" * 8192, "more_body": False}], [])
    assert sent.status == 503
    assert refused(app, "over_budget") == 2
    app.buffered = 0
    sent = run(app, [{"type": "http.request", "body": b"x" * 8192, "more_body": False}], [])
    assert sent.status == 503  # admitted: no routing table yet
    assert orjson.loads(sent.messages[1]["body"])["code"] == "not_configured"
    assert app.buffered == 0  # released when the request ended
    assert app.active == 0


class _Transport:
    def write(self, data: bytes) -> None:
        pass

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass


def test_response_bytes_count_against_the_budget_while_they_arrive() -> None:
    taken = {"bytes": 0}

    def reserve(size: int) -> bool:
        if taken["bytes"] + size > 100:
            return False
        taken["bytes"] += size
        return True

    def release(size: int) -> None:
        taken["bytes"] -= size

    async def exchange(body_size: int) -> Any:
        conn = _Connection(asyncio.get_running_loop(), (reserve, release))
        conn.connection_made(_Transport())  # type: ignore[arg-type]
        waiter = conn.exchange(b"GET / HTTP/1.1\r\n\r\n", b"", 5, False, 1 << 30)
        conn.data_received(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % body_size + b"x" * body_size)
        return await waiter

    assert asyncio.run(exchange(60)).body == b"x" * 60
    assert taken["bytes"] == 0  # handed over to the caller, which counts it while sending
    with pytest.raises(OverBudgetError):
        asyncio.run(exchange(150))
    assert taken["bytes"] == 0


@pytest.mark.parametrize("method", ["GET", "POST"])
@pytest.mark.parametrize("path", ["/modeldeploy/golden", "/modeldeploy/anything/else"])
def test_the_model_servers_operator_routes_are_never_forwarded(method: str, path: str) -> None:
    """The golden set (rows and labels, for the operator's preflight) is not for the front door."""
    app = make_app()
    sent = Recorder()

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    scope = {"type": "http", "method": method, "path": path, "headers": []}
    asyncio.run(app(scope, receive, sent))
    assert sent.status == 404
    assert refused(app, "not_found") == 1
