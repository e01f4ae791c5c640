"""The router app's own CPU per request with the mirror off and at 100 %, in process, with a stub
upstream (no sockets, no wrk): what mirroring costs the router's Python code per copy (the copy's
task, its marked head, and parsing and comparing both answers row by row), apart from the socket
work that bench/router/mirror_bench.py measures with it.

    .venv/bin/python bench/router/mirror_overhead.py --rows 1 100

CPU time (time.process_time), best of 5 rounds of `--requests` each: on a shared machine the noise
hits CPU time less than wall-clock throughput, and the best round is the one least disturbed.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

import orjson
import uvloop

from modeldeploy_contract.router_config import RouterConfig
from modeldeploy_serving.router.metrics import RouterMetrics
from modeldeploy_serving.router.proxy import RouterApp
from modeldeploy_serving.router.state import RouterState
from modeldeploy_serving.router.upstream import Response


def answer(rows: int) -> bytes:
    return orjson.dumps(
        {
            "model_name": "churn",
            "outputs": [
                {"name": "probabilities", "datatype": "FP32", "shape": [rows, 2], "data": [0.8, 0.2] * rows},
                {"name": "label", "datatype": "INT64", "shape": [rows], "data": [0] * rows},
            ],
        }
    )


class Pool:
    """Answers every send at once with the same body: the primary and the copy agree."""

    def __init__(self, body: bytes) -> None:
        self.response = Response(200, [(b"content-type", b"application/json")], body)
        self.sent = 0

    async def send(self, *_: Any, **__: Any) -> Response:
        self.sent += 1
        return self.response

    def forget(self, keep: Any) -> None:
        pass

    def close(self) -> None:
        pass


def config(mirror: bool) -> RouterConfig:
    arm = {"variant": "default", "model_name": "churn"}
    raw: dict[str, Any] = {
        "generation": 1,
        "deployment": {"namespace": "t", "name": "c"},
        "arms": [
            {**arm, "revision": "r1", "weight_bp": 10_000, "endpoints": ["127.0.0.1:1"]},
            {**arm, "revision": "r2", "weight_bp": 0, "endpoints": ["127.0.0.1:2"]},
        ],
        "sticky": {"header": "X-User-Id"},
    }
    if mirror:
        raw["mirror"] = {"variant": "default", "revision": "r2", "percent": 100, "from_variant": "default"}
    return RouterConfig.model_validate(raw)


def request(rows: int) -> tuple[dict[str, Any], dict[str, Any]]:
    body = orjson.dumps(
        {
            "inputs": [
                {"name": "input", "datatype": "FP32", "shape": [rows, 3], "data": [1.0, 2.0, 3.0] * rows}
            ]
        }
    )
    headers = [
        (b"host", b"x"),
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"x-user-id", b"user-42"),
    ]
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v2/models/churn/infer",
        "raw_path": b"/v2/models/churn/infer",
        "query_string": b"",
        "headers": headers,
    }
    return scope, {"type": "http.request", "body": body, "more_body": False}


async def per_request(mirror: bool, rows: int, n: int) -> tuple[float, int]:
    """(best CPU seconds per request, copies compared)."""
    metrics = RouterMetrics()
    state = RouterState(lambda arm: tuple(arm.endpoints), metrics)
    state.set_config(config(mirror))
    pool = Pool(answer(rows))
    app = RouterApp(state, metrics, pool)  # type: ignore[arg-type]
    scope, message = request(rows)

    async def receive() -> dict[str, Any]:
        return message

    async def send(_: Any) -> None:
        pass

    best = float("inf")
    for _ in range(5):
        started = time.process_time()
        for _ in range(n):
            await app(scope, receive, send)
            await asyncio.sleep(0)  # the copy's task runs (mirror) or the loop turns once (off)
            await asyncio.sleep(0)
        best = min(best, (time.process_time() - started) / n)
    return best, pool.sent


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, nargs="+", default=[1, 100])
    ap.add_argument("--requests", type=int, default=10_000)
    args = ap.parse_args()
    print("| rows per request | mirror off µs/req | mirror 100% µs/req | per copy µs | upstream sends |")
    print("|---|---|---|---|---|")
    for rows in args.rows:
        off, sent_off = await per_request(False, rows, args.requests)
        on, sent_on = await per_request(True, rows, args.requests)
        sends = f"{sent_off} / {sent_on}"
        print(f"| {rows} | {off * 1e6:.1f} | {on * 1e6:.1f} | {(on - off) * 1e6:+.1f} | {sends} |")


if __name__ == "__main__":
    uvloop.run(main())
