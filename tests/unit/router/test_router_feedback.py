"""The router's feedback route (POST /v2/models/{name}/feedback) against bad input: in-process ASGI
calls; the joiner is a tiny in-process HTTP server on 127.0.0.1 (or a closed port)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, MutableMapping
from contextlib import asynccontextmanager
from typing import Any

import orjson

from modeldeploy_contract.router_config import RouterConfig
from modeldeploy_serving.router.metrics import RouterMetrics
from modeldeploy_serving.router.proxy import RouterApp
from modeldeploy_serving.router.state import RouterState
from modeldeploy_serving.router.upstream import UpstreamPool

from local_processes import free_port

LIMIT = 2048
BASE = {
    "deployment": {"namespace": "ml", "name": "churn"},
    "arms": [{"variant": "a", "revision": "r1", "weight_bp": 10_000, "service": "s", "model_name": "churn"}],
}


def make_app(feedback: dict[str, Any] | None) -> RouterApp:
    metrics = RouterMetrics()
    state = RouterState(lambda _arm: ("127.0.0.1:9",), metrics)
    state.set_config(RouterConfig.model_validate({**BASE, "feedback": feedback}))
    return RouterApp(state, metrics, UpstreamPool())


async def call(
    app: RouterApp,
    body: bytes | list[bytes],
    *,
    path: str = "/v2/models/churn/feedback",
    headers: list[tuple[bytes, bytes]] | None = None,
) -> tuple[int, dict[str, Any]]:
    status, _headers, answer = await exchange(app, body, path=path, headers=headers)
    return status, answer


async def exchange(
    app: RouterApp,
    body: bytes | list[bytes],
    *,
    path: str = "/v2/models/churn/feedback",
    headers: list[tuple[bytes, bytes]] | None = None,
) -> tuple[int, dict[bytes, bytes], dict[str, Any]]:
    """Status, answer headers and JSON body of one call."""
    chunks = [body] if isinstance(body, bytes) else body
    messages = [
        {"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)
    ]

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    sent: list[MutableMapping[str, Any]] = []

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": path, "headers": headers or []}
    await app(scope, receive, send)
    return sent[0]["status"], dict(sent[0]["headers"]), orjson.loads(sent[1]["body"])


@asynccontextmanager
async def fake_joiner(status: int = 200, headers: bytes = b"") -> AsyncIterator[tuple[str, list[bytes]]]:
    """Answers every request with `status`, `headers` (raw lines) and a per-item JSON answer; keeps the
    raw requests."""
    seen: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length")
        )
        body = await reader.readexactly(length)
        seen.append(head + body)
        answer = orjson.dumps({"joined": 1, "rejected": 0, "results": [{"index": 0, "status": "joined"}]})
        writer.write(
            b"HTTP/1.1 %d X\r\n%scontent-length: %d\r\n\r\n%s" % (status, headers, len(answer), answer)
        )
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        yield f"127.0.0.1:{port}", seen


async def test_labels_are_forwarded_unchanged_to_the_joiner_and_its_answer_returned() -> None:
    async with fake_joiner() as (address, seen):
        app = make_app({"address": address})
        body = b'{"labels": [{"request_id": "a", "label": 1}]}'
        status, answer = await call(app, body)
    assert (status, answer["joined"]) == (200, 1)
    [request] = seen
    assert request.startswith(b"POST /v1/feedback HTTP/1.1\r\n")
    assert request.endswith(body)


async def test_a_joiner_refusal_comes_back_with_its_status() -> None:
    async with fake_joiner(status=413) as (address, _):
        status, _answer = await call(make_app({"address": address}), b"{}")
    assert status == 413


async def test_a_joiner_whose_store_is_down_is_503_with_its_retry_after_passed_on() -> None:
    """The joiner's 503 while its database cannot be reached carries Retry-After: callers of the front
    door get it too (and no other header of the joiner's)."""
    async with fake_joiner(status=503, headers=b"retry-after: 7\r\nx-joiner-internal: 1\r\n") as (a, _):
        status, headers, _answer = await exchange(make_app({"address": a}), b"{}")
    assert status == 503
    assert headers[b"retry-after"] == b"7"
    assert b"x-joiner-internal" not in headers


async def test_without_effectiveness_the_route_is_404_with_the_reason() -> None:
    status, answer = await call(make_app(None), b'{"request_id": "a", "label": 1}')
    assert (status, answer["code"]) == (404, "feedback_disabled")
    assert "spec.effectiveness" in answer["error"]


async def test_another_model_name_is_404_naming_the_right_route() -> None:
    status, answer = await call(make_app({"address": "127.0.0.1:9"}), b"{}", path="/v2/models/fraud/feedback")
    assert (status, answer["code"]) == (404, "unknown_model")
    assert "/v2/models/churn/feedback" in answer["error"]


async def test_bodies_over_the_limit_are_413_declared_or_streamed() -> None:
    app = make_app({"address": "127.0.0.1:9", "max_body_bytes": LIMIT})
    status, answer = await call(app, b"", headers=[(b"content-length", str(LIMIT + 1).encode())])
    assert (status, answer["code"]) == (413, "body_too_large")
    status, answer = await call(app, [b"x" * LIMIT, b"x"])
    assert (status, answer["code"]) == (413, "body_too_large")
    assert app.active == 0
    assert app.buffered == 0


async def test_an_empty_body_is_400_saying_what_to_send() -> None:
    status, answer = await call(make_app({"address": "127.0.0.1:9"}), b"  ")
    assert (status, answer["code"]) == (400, "empty_body")
    assert "request_id" in answer["error"]


async def test_an_unreachable_joiner_is_502_and_nothing_is_held() -> None:
    app = make_app({"address": f"127.0.0.1:{free_port()}"})  # nothing listens there
    status, answer = await call(app, b'{"request_id": "a", "label": 1}')
    assert (status, answer["code"]) == (502, "joiner_unreachable")
    assert app.active == 0
    assert app.buffered == 0


def test_the_feedback_address_is_validated() -> None:
    for bad in ("joiner", "http://joiner:8090", "a b:1"):
        try:
            RouterConfig.model_validate({**BASE, "feedback": {"address": bad}})
        except ValueError:
            continue
        raise AssertionError(f"{bad!r} was accepted")
