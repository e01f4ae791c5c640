"""Reading the sticky key from a request: pure functions over headers and body bytes."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson


def header_value(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> str | None:
    """First value of header `name` (lower-case bytes, as ASGI gives names), or None."""
    for key, value in headers:
        if key == name:
            text = value.decode("latin-1").strip()
            return text or None
    return None


def _as_key(value: Any) -> str | None:
    # Booleans and containers are not keys; 42 and 42.0 are the same customer.
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, str):
        return value or None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    return None


def body_key(body: bytes, field: str, protocol: str | None = None) -> str | None:
    """The key from a V1 or V2 JSON body, or None when absent or unreadable.

    V1: `instances[0][field]` when the first instance is an object.
    V2: `parameters[field]`, else the first element of `data` of the input named `field`.
    `protocol` ("v1" or "v2", spec.server.protocol) reads only that shape; None: either, V1 first.
    """
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(doc, dict):
        return None
    if protocol == "v1":
        return _v1_key(doc, field)
    if protocol == "v2":
        return _v2_key(doc, field)
    instances = doc.get("instances")
    if isinstance(instances, list) and instances and isinstance(instances[0], dict):
        return _v1_key(doc, field)
    return _v2_key(doc, field)


def _v1_key(doc: dict[str, Any], field: str) -> str | None:
    instances = doc.get("instances")
    if isinstance(instances, list) and instances and isinstance(instances[0], dict):
        return _as_key(instances[0].get(field))
    return None


def _v2_key(doc: dict[str, Any], field: str) -> str | None:
    parameters = doc.get("parameters")
    if isinstance(parameters, dict) and field in parameters:
        return _as_key(parameters[field])
    inputs = doc.get("inputs")
    if isinstance(inputs, list):
        for tensor in inputs:
            if isinstance(tensor, dict) and tensor.get("name") == field:
                data = tensor.get("data")
                while isinstance(data, list) and data:
                    data = data[0]
                return _as_key(data)
    return None
