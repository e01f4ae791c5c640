"""The router's prediction-log records (issue 14): LogRecord's shape with the arm it chose and the
sticky key pseudonymised; the request id passed on to the model server (made when the caller sent
none), so the server's record (inputs, outputs) joins the router's; copies (shadow, mirror) and the
router's own routes are never logged. In-process ASGI calls against a fake pool: no network."""

from __future__ import annotations

import asyncio
import io
import json
from typing import Any

from modeldeploy_contract.router_config import RouterConfig
from modeldeploy_serving.predlog import JsonLinesSink, PiiPolicy, PredictionLog, sampled
from modeldeploy_serving.router.metrics import RouterMetrics
from modeldeploy_serving.router.proxy import RouterApp
from modeldeploy_serving.router.state import RouterState
from modeldeploy_serving.router.upstream import ConnectFailedError, Response, UpstreamPool

STABLE = "10.0.0.1:8080"
MIRROR = "10.0.0.2:8080"
USER = "user-MARKER-4711@example.com"


def table(**extra: Any) -> RouterConfig:
    return RouterConfig.model_validate(
        {
            "deployment": {"namespace": "ns", "name": "churn"},
            "arms": [
                {
                    "variant": "a",
                    "revision": "r1",
                    "weight_bp": 10_000,
                    "endpoints": [STABLE],
                    "model_name": "m",
                },
                {"variant": "a", "revision": "r2", "weight_bp": 0, "endpoints": [MIRROR], "model_name": "m"},
            ],
            "sticky": {"header": "X-User-Id", "salt": "churn"},
            **extra,
        }
    )


class FakePool(UpstreamPool):
    def __init__(self, fail: bool = False) -> None:
        super().__init__()
        self.heads: list[tuple[str, bytes]] = []
        self.fail = fail

    async def send(self, address: str, method: str, head: bytes, body: bytes, **_: Any) -> Response:
        self.heads.append((address, head))
        if self.fail:
            raise ConnectFailedError("refused")
        return Response(200, [], b'{"outputs": []}')


def make(
    sample_rate: float = 1.0, fail: bool = False, **extra: Any
) -> tuple[RouterApp, FakePool, io.StringIO]:
    metrics = RouterMetrics()
    pool = FakePool(fail)
    state = RouterState(lambda _arm: (), metrics)
    state.set_config(table(**extra))
    out = io.StringIO()
    policy = PiiPolicy.from_lists(b"router-key-0123456789abcdef")
    plog = PredictionLog(JsonLinesSink(out), policy, sample_rate)
    return RouterApp(state, metrics, pool, prediction_log=plog, log_deployment="churn"), pool, out


async def call(app: RouterApp, headers: list[tuple[bytes, bytes]], path: str = "/v2/models/m/infer") -> int:
    pending = [{"type": "http.request", "body": b'{"inputs": []}', "more_body": False}]
    never = asyncio.Event()
    sent: list[Any] = []

    async def receive() -> dict[str, Any]:
        if pending:
            return pending.pop(0)
        await never.wait()
        return {"type": "http.disconnect"}

    async def send(message: Any) -> None:
        sent.append(message)

    method = "GET" if path == "/metrics" else "POST"
    await app({"type": "http", "method": method, "path": path, "headers": headers}, receive, send)
    return int(next(m["status"] for m in sent if m["type"] == "http.response.start"))


def records(app: RouterApp, out: io.StringIO) -> list[dict[str, Any]]:
    assert app.plog is not None
    app.plog.close()
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_router_records_have_the_arm_the_id_and_a_pseudonymous_sticky_key() -> None:
    app, pool, out = make()

    async def scenario() -> None:
        assert await call(app, [(b"x-user-id", USER.encode()), (b"x-request-id", b"req-1")]) == 200
        assert await call(app, [(b"x-user-id", USER.encode())]) == 200
        assert await call(app, [], "/metrics") == 200  # the router's own routes: not predictions

    asyncio.run(scenario())
    logged = records(app, out)
    assert len(logged) == 2
    first, second = logged
    assert set(first) == {
        "request_id", "time", "deployment", "variant", "revision", "model_version", "inputs", "outputs",
        "latency_ms", "status", "sticky_key",
    }  # fmt: skip
    assert (first["request_id"], first["deployment"], first["variant"], first["revision"]) == (
        "req-1",
        "churn",
        "a",
        "r1",
    )
    assert (first["status"], first["inputs"], first["outputs"]) == ("200", {}, None)
    assert first["sticky_key"].startswith("hmac:")
    assert first["sticky_key"] == second["sticky_key"]  # joinable: the same user, the same token
    assert USER not in out.getvalue()
    # the caller's id is forwarded unchanged; without one the router makes one and forwards it
    heads = [head for _, head in pool.heads]
    assert heads[0].count(b"x-request-id") == 1
    assert b"x-request-id: " + second["request_id"].encode() in heads[1]


def test_router_logs_its_own_errors_with_their_status_and_nothing_when_the_log_is_off() -> None:
    app, _, out = make(fail=True)
    asyncio.run(call(app, [(b"x-request-id", b"req-9")]))
    [record] = records(app, out)
    assert (record["request_id"], record["status"], record["variant"]) == ("req-9", "502", "a")

    metrics = RouterMetrics()
    state = RouterState(lambda _arm: (), metrics)
    state.set_config(table())
    pool = FakePool()
    plain = RouterApp(state, metrics, pool)
    asyncio.run(call(plain, []))
    assert b"x-request-id" not in pool.heads[0][1]  # no log: the request goes out as it came


def test_router_sampling_decides_like_the_server() -> None:
    app, _, out = make(sample_rate=0.3)
    ids = [f"req-{i}" for i in range(200)]

    async def scenario() -> None:
        for rid in ids:
            await call(app, [(b"x-request-id", rid.encode())])

    asyncio.run(scenario())
    assert [r["request_id"] for r in records(app, out)] == [i for i in ids if sampled(i, 0.3)]


def test_mirror_copies_are_not_logged_by_the_router() -> None:
    mirror = {"variant": "a", "revision": "r2", "percent": 100, "max_in_flight": 3, "from_variant": "a"}
    app, pool, out = make(mirror=mirror)

    async def scenario() -> None:
        for i in range(5):
            await call(app, [(b"x-request-id", f"req-{i}".encode())])
        await app.shadow.drain(timeout=5.0)

    asyncio.run(scenario())
    assert any(address == MIRROR for address, _ in pool.heads)  # copies went out
    logged = records(app, out)
    assert [r["revision"] for r in logged] == ["r1"] * 5  # only the answers callers received
    assert all(b"x-modeldeploy-traffic: mirror" in h for a, h in pool.heads if a == MIRROR)
