"""The router app's own CPU per request, in process, with a stub upstream (no sockets, no wrk).

    PYTHONPATH=<tree>/serving/src:<tree>/contract/src .venv/bin/python bench/router/app_overhead.py <label>

Compare two source trees back to back: the noise of a shared machine hits CPU time less than
wall-clock throughput. Both halves of a tree: the router table is the contract's (an older tree
needs this script as of its own commit, e.g. from before weights became `weight_bp`).
"""

import sys
import time
from typing import cast

import uvloop

from modeldeploy_contract.router_config import RouterConfig
from modeldeploy_serving.router.metrics import RouterMetrics
from modeldeploy_serving.router.proxy import Message, RouterApp
from modeldeploy_serving.router.state import RouterState
from modeldeploy_serving.router.upstream import Response, UpstreamPool


class Pool:
    async def send(self, *a: object, **k: object) -> Response:
        return Response(200, [(b"content-type", b"application/json")], b'{"outputs":[]}')

    def forget(self, keep: set[str]) -> None:
        pass

    def suspects(self) -> tuple[str, ...]:
        return ()  # no backend failed: what UpstreamPool says on the hot path nearly always

    def close(self) -> None:
        pass


metrics = RouterMetrics()
state = RouterState(lambda arm: ("127.0.0.1:1",), metrics)
state.set_config(
    RouterConfig.model_validate(
        {
            "generation": 1,
            "deployment": {"namespace": "t", "name": "c"},
            "arms": [
                {
                    "variant": "default",
                    "revision": "r1",
                    "weight_bp": 10_000,
                    "service": "s",
                    "model_name": "churn",
                }
            ],
        }
    )
)
# Pool stands in for UpstreamPool by duck typing (no sockets); the cast only tells mypy so
app = RouterApp(state, metrics, cast(UpstreamPool, Pool()))
body = b'{"inputs":[{"name":"input","datatype":"FP32","shape":[1,3],"data":[1,2,3]}]}'
headers = [
    (b"host", b"x"),
    (b"content-type", b"application/json"),
    (b"content-length", str(len(body)).encode()),
    (b"user-agent", b"wrk"),
]
scope = {
    "type": "http",
    "method": "POST",
    "path": "/v2/models/churn/infer",
    "raw_path": b"/v2/models/churn/infer",
    "query_string": b"",
    "headers": headers,
}
msg = {"type": "http.request", "body": body, "more_body": False}


async def receive() -> Message:
    return msg


async def send(m: Message) -> None:
    pass


async def main() -> None:
    # One request first, its answer checked: a stub that fell behind RouterApp (the missing
    # suspects() of 2026-12-05) would otherwise have the loop time an error path.
    sent: list[Message] = []

    async def keep(m: Message) -> None:
        sent.append(m)

    await app(scope, receive, keep)
    if not sent or sent[0].get("status") != 200:
        raise SystemExit(f"the router app did not answer 200 through the stub pool: {sent[:1]}")
    n = 30000
    best = 1e9
    for _ in range(5):
        t = time.process_time()
        for _ in range(n):
            await app(scope, receive, send)
        best = min(best, (time.process_time() - t) / n)
    print(f"{sys.argv[1]}: router app per request {best * 1e6:.2f} us (best of 5 x {n}, CPU time)")


uvloop.run(main())
