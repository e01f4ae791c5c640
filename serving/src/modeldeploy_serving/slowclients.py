"""Read deadlines for slow clients: uvicorn's httptools protocol with a head and a body deadline.

uvicorn (0.54) closes a keep-alive connection that stays idle after a response
(timeout_keep_alive), but has no deadline for a connection that never sends a request, sends its
request head a byte at a time (any byte re-arms nothing and cancels the keep-alive timer), or
stops in the middle of a body. Each such connection holds a socket, a protocol object and, for a
body, its buffered bytes, for as long as the client likes: a few thousand of them exhaust a worker.

This protocol adds:
- a head deadline: a connection must complete a request head within `head_seconds` of opening,
  or of the first byte of a request that did not arrive whole; otherwise it is closed;
- a body deadline: once the head is in, the whole body must arrive within `body_seconds`;
  otherwise the client gets 408 (if no response started) and the connection is closed, and the
  application sees http.disconnect (nothing half-read is processed).

The common request (head and body in one read) arms no timer at all: timers are armed only when a
read ends in the middle of a head or a body. Both servers (model server and router) use it.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

_TIMEOUT_BODY = b'{"error":"the request body did not arrive in time","code":408}'
_REQUEST_TIMEOUT = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
    b"content-length: %d\r\n\r\n%s" % (len(_TIMEOUT_BODY), _TIMEOUT_BODY)
)


_HEAD_BODY = b'{"error":"request head over 64 KiB","code":431}'
_HEAD_TOO_LARGE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json\r\n"
    b"connection: close\r\ncontent-length: %d\r\n\r\n%s" % (len(_HEAD_BODY), _HEAD_BODY)
)
MAX_HEAD_BYTES = 64 * 1024
"""httptools (llhttp) puts no bound on a request head: without one, a client could stream headers
into the worker's memory until the head deadline."""


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """HttpToolsProtocol with head and body read deadlines (class attributes, set by `configure`)."""

    head_seconds = 10.0
    body_seconds = 30.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = False
        self._in_body = False
        self._head_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._head_bytes = 0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_timer = self.loop.call_later(self.head_seconds, self._head_expired)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timers()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if not self._in_body:
            self._head_bytes += len(data)  # reset when a head completes
        super().data_received(data)
        if self._in_head and self._head_bytes > MAX_HEAD_BYTES and not self.transport.is_closing():
            self.transport.write(_HEAD_TOO_LARGE)
            self.transport.close()
            return
        # Only a read that ended inside a head or a body arms a deadline (see the module doc).
        if self._in_head and self._head_timer is None:
            self._head_timer = self.loop.call_later(self.head_seconds, self._head_expired)
        elif self._in_body and self._body_timer is None:
            self._body_timer = self.loop.call_later(self.body_seconds, self._body_expired)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._head_bytes = 0
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        self._in_body = True
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._in_body = False
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None
        super().on_message_complete()

    def _cancel_timers(self) -> None:
        for timer in (self._head_timer, self._body_timer):
            if timer is not None:
                timer.cancel()
        self._head_timer = self._body_timer = None

    def _head_expired(self) -> None:
        self._head_timer = None
        if self.transport.is_closing():
            return
        idle = self.cycle is None or self.cycle.response_complete
        if self._in_head or (idle and not self._in_body):
            self.transport.close()  # never sent a whole head: nothing to answer

    def _body_expired(self) -> None:
        self._body_timer = None
        if not self._in_body or self.transport.is_closing():
            return
        cycle = self.cycle
        if cycle is not None and not cycle.response_started:
            cycle.disconnected = True  # the application's sends are dropped, receive() says disconnect
            cycle.message_event.set()
            self.transport.write(_REQUEST_TIMEOUT)
        self.transport.close()  # connection_lost tells the application: http.disconnect


def configure(head_seconds: float, body_seconds: float) -> type[GuardedHttpToolsProtocol]:
    """Set the deadlines (per process: each uvicorn worker calls this from its app factory)."""
    GuardedHttpToolsProtocol.head_seconds = head_seconds
    GuardedHttpToolsProtocol.body_seconds = body_seconds
    return GuardedHttpToolsProtocol
