"""A tiny stand-in model server for router tests: answers every request with a V2 inference
response whose probability and identity come from the environment, and reports what it received.

    FAKE_NAME=b1 FAKE_PROB=0.9 FAKE_SLEEP=0 uvicorn fake_backend:app --port 9001
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson

NAME = os.environ.get("FAKE_NAME", "backend")
PROB = float(os.environ.get("FAKE_PROB", "0.5"))
SLEEP = float(os.environ.get("FAKE_SLEEP", "0"))


def _answer(scope: MutableMapping[str, Any], body: bytes) -> bytes:
    headers = {k.decode(): v.decode() for k, v in scope["headers"]}
    return orjson.dumps(
        {
            "model_name": "churn",
            "id": headers.get("x-request-id"),
            "outputs": [
                {"name": "probabilities", "datatype": "FP32", "shape": [1, 2], "data": [1 - PROB, PROB]},
                {"name": "label", "datatype": "INT64", "shape": [1], "data": [int(PROB >= 0.5)]},
            ],
            "parameters": {
                "backend": NAME,
                "method": scope["method"],
                "path": scope["path"],
                "query": scope["query_string"].decode(),
                "headers": headers,
                "body": body.decode(errors="replace"),
            },
        }
    )


async def app(
    scope: MutableMapping[str, Any],
    receive: Callable[[], Awaitable[MutableMapping[str, Any]]],
    send: Callable[[MutableMapping[str, Any]], Awaitable[None]],
) -> None:
    if scope["type"] != "http":
        return
    parts, more = [], True
    while more:
        message = await receive()
        parts.append(message.get("body", b""))
        more = message.get("more_body", False)
    if SLEEP:
        await asyncio.sleep(SLEEP)
    status = 404 if scope["path"] == "/missing" else 200
    body = _answer(scope, b"".join(parts))
    headers = [
        (b"content-type", b"application/json"),
        (b"x-backend", NAME.encode()),
        (b"x-custom-response", b"kept"),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
