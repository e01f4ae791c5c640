"""The backend for the router benchmark: a plain ASGI app on uvicorn that reads the body and returns
a constant one-row V2 answer (the framework ceiling, so the router's own cost is what shows).

    uvicorn --app-dir bench/router fast_backend:app --host 127.0.0.1 --port 18101 \
        --loop uvloop --http httptools --no-access-log

BENCH_DELAY_MS=200 delays every answer (a slow mirror for bench/router/mirror_bench.py).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

BODY = (
    b'{"model_name":"churn","outputs":[{"name":"probabilities","datatype":"FP32","shape":[1,2],'
    b'"data":[0.8,0.2]},{"name":"label","datatype":"INT64","shape":[1],"data":[0]}]}'
)
HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]
DELAY = float(os.environ.get("BENCH_DELAY_MS", "0")) / 1000


async def app(
    scope: MutableMapping[str, Any],
    receive: Callable[[], Awaitable[MutableMapping[str, Any]]],
    send: Callable[[MutableMapping[str, Any]], Awaitable[None]],
) -> None:
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    if DELAY:
        await asyncio.sleep(DELAY)
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})
