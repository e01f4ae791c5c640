"""The front door's feedback route: POST /v2/models/{name}/feedback, forwarded to the label joiner.

Labels arrive days or weeks after the predictions they judge, keyed by the request id the caller got
back (the x-request-id answer header, or the V2 body's own id). The router checks what it can
without the joiner (the route is on, the model name is this deployment's, the body fits) and
forwards the body unchanged to the joiner's POST /v1/feedback (`RouterConfig.feedback`, set by the
operator from spec.effectiveness), whose per-item answer comes back as it is: every label gets a
status (joined, unknown_request, expired, duplicate, conflict, invalid_label, invalid) and good ones
are stored whatever happens to the others (docs/effectiveness.md).

Not sent to any model server, not counted in the per-arm request metrics (labels are not traffic).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from modeldeploy_contract.joiner_settings import FEEDBACK_PATH
from modeldeploy_serving.router.upstream import (
    BadResponseError,
    ConnectFailedError,
    Response,
    StaleConnectionError,
    UpstreamTimeoutError,
    request_head,
)

if TYPE_CHECKING:
    from modeldeploy_serving.router.proxy import Receive, RouterApp, Scope, Send

PREFIX, SUFFIX = "/v2/models/", "/feedback"
_CONTENT_TYPE = b"application/json"


def is_feedback(method: str, path: str) -> bool:
    return method == "POST" and path.startswith(PREFIX) and path.endswith(SUFFIX)


def _refusal(app: RouterApp, scope: Scope) -> tuple[int, str, str] | None:
    """(status, code, message) when the request is refused before its body is read."""
    from modeldeploy_serving.router.proxy import _declared_length

    snapshot = app.state.snapshot
    config = snapshot.config.feedback if snapshot is not None else None
    if snapshot is None or config is None:
        why = "this ModelDeployment takes no labels: its spec.effectiveness is not enabled"
        return 404, "feedback_disabled", why
    name = scope["path"][len(PREFIX) : -len(SUFFIX)]
    models = sorted({arm.config.model_name for arm in snapshot.arms})
    if name not in models:
        return (
            404,
            "unknown_model",
            f"no model {name[:100]!r} here; labels go to /v2/models/{models[0]}/feedback",
        )
    if app.active >= app.max_concurrent:
        return 503, "overloaded", "too many requests in progress; retry later"
    declared = _declared_length(scope["headers"])
    if declared is not None and declared > config.max_body_bytes:
        return 413, "body_too_large", f"feedback body exceeds {config.max_body_bytes} bytes"
    return None


async def handle_feedback(app: RouterApp, scope: Scope, receive: Receive, send: Send) -> None:
    from modeldeploy_serving.router.proxy import BodyTooLargeError, ClientGoneError, _read_body

    refusal = _refusal(app, scope)
    if refusal is not None:
        await app._refuse(send, *refusal)
        return
    snapshot = app.state.snapshot
    assert snapshot is not None
    assert snapshot.config.feedback is not None
    config = snapshot.config.feedback
    app.active += 1
    try:
        try:
            body = await _read_body(receive, config.max_body_bytes)
        except BodyTooLargeError:
            await app._refuse(
                send, 413, "body_too_large", f"feedback body exceeds {config.max_body_bytes} bytes"
            )
            return
        except ClientGoneError:
            app.metrics.refused.labels("client_gone").inc()
            return
        if not body.strip():
            empty = 'the feedback body is empty: send {"request_id": ..., "label": ...} or {"labels": [...]}'
            await app._refuse(send, 400, "empty_body", empty)
            return
        if not app._reserve(len(body)):
            await app._refuse(send, 503, "over_budget", "the router holds too many bytes; retry later")
            return
        try:
            await _forward(app, config.address, config.timeout_seconds, body, send)
        finally:
            app._release(len(body))
    finally:
        app.active -= 1


async def _forward(app: RouterApp, address: str, timeout: float, body: bytes, send: Send) -> None:
    from modeldeploy_serving.router.proxy import _error, _respond

    headers = [(b"host", address.encode("ascii")), (b"content-type", _CONTENT_TYPE)]
    head = request_head("POST", FEEDBACK_PATH.encode(), headers, len(body))
    try:
        try:
            response = await _send(app, address, head, body, timeout)
        except ConnectFailedError:  # never left (a pooled connection found closed): safe to send again
            response = await _send(app, address, head, body, timeout)
    except ConnectFailedError as exc:
        await _error(send, 502, "joiner_unreachable", f"the label joiner cannot be reached: {exc}")
        return
    except StaleConnectionError:
        await _error(
            send,
            502,
            "joiner_closed",
            "the label joiner closed the connection before answering; the labels may have been stored "
            "(sending them again is safe: a repeated label is reported as duplicate)",
        )
        return
    except UpstreamTimeoutError:
        await _error(send, 504, "joiner_timeout", f"the label joiner did not answer within {timeout:g} s")
        return
    except BadResponseError as exc:
        await _error(send, 502, "bad_joiner_response", str(exc))
        return
    # Retry-After of a joiner whose store cannot be reached (503): the caller's cue to send again later.
    passed = [(name, value) for name, value in response.headers if name == b"retry-after"]
    try:
        await _respond(send, response.status, response.body, [(b"content-type", _CONTENT_TYPE), *passed])
    finally:
        app._release(response.held)  # counted while it arrived, until sent


async def _send(app: RouterApp, address: str, head: bytes, body: bytes, timeout: float) -> Response:
    return await app.pool.send(
        address,
        "POST",
        head,
        body,
        connect_timeout=2.0,
        timeout=timeout,
        max_response_bytes=app.max_response_bytes,
        admitted=True,  # the answer to labels the router took: it may wait for room
    )
