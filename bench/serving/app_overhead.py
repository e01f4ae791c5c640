"""The model server app's CPU per one-row V2 JSON request, in process (no sockets, no wrk).

    PYTHONPATH=<tree>/serving/src .venv/bin/python bench/serving/app_overhead.py <label>

Needs the churn bundle at /tmp/ab/models/v1 (bench/serving/ab_quick.py builds it). Compare two
source trees back to back: CPU time is less sensitive to a shared machine than wrk throughput.
"""

import asyncio
import json
import os
import sys
import time

import uvloop

from modeldeploy_contract.server_settings import ServerSettings
from modeldeploy_serving.app import Message, create_app

ROW = [2, 35, 1, 4, 6, 20, 8, 17, 5, 107, 9, 6.5, 2, 1]
body = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 14], "data": ROW}]}).encode()


async def main() -> None:
    bundle = os.environ.get("BUNDLE", "/tmp/ab/models/v1")  # noqa: S108
    app = create_app(ServerSettings(model_uri=bundle, log_level="warning"))
    await app.dataplane.start()
    while app.dataplane.state != "ready":
        await asyncio.sleep(0.05)
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v2/models/churn/infer",
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
    }
    msg = {"type": "http.request", "body": body, "more_body": False}

    async def receive() -> Message:
        return msg

    out: list[Message] = []

    async def send(m: Message) -> None:
        out.append(m)

    n = 20000
    best = 1e9
    for _ in range(5):
        t = time.process_time()
        for _ in range(n):
            await app(scope, receive, send)
        best = min(best, (time.process_time() - t) / n)
        out.clear()
    print(
        f"{sys.argv[1]}: server one-row V2 JSON per request {best * 1e6:.2f} us (best of 5 x {n}, CPU time)"
    )
    os._exit(0)


uvloop.run(main())
