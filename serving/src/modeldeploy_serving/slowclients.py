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

And it ends a connection whose request is only partly received the way nginx does (its lingering
close, and its discarding of a refused body), so that an answer sent before the body was all in
(413 by Content-Length, 408, 431, 400) reaches the caller:
- on a keep-alive connection the rest of the body is read and dropped (uvicorn drops it: nothing is
  kept), at most LINGER_BYTES of it within LINGER_SECONDS of the answer; a body that ends within
  those bounds leaves the connection usable for the next request;
- when the connection is to be closed (the caller sent `connection: close` or spoke HTTP/1.0, a
  deadline passed, the head was too large or malformed) the answer is followed by a FIN (shutdown
  of the write side), then whatever arrives is read and dropped, unparsed, until the caller closes
  its side, LINGER_BYTES have come or LINGER_SECONDS have passed.
Closed at once instead, the connection would be closed with unread bytes in the kernel's receive
buffer, and Linux answers that with a reset (tcp_close, RFC 2525 2.17): the caller, still writing,
gets a broken pipe or a reset, not the answer. Measured on 127.0.0.1 (a 1 KiB limit, 1 MiB bodies
written whole before reading, `connection: close`, 50 requests): before, 9 of 50 callers got a
broken pipe or a reset while writing and 41 a reset after the answer, none a clean end; with the
lingering close 50 of 50 wrote their whole body and read the whole 413 and a clean end of stream
(tests/integration/serving/test_serving_lingering_close.py).
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

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

LINGER_BYTES = 16 * 1024 * 1024
"""Most bytes of a request read and dropped after its answer (see the module doc): the servers'
default max_body_bytes, the largest body the router forwards, so a backend with a lower limit reads
through anything the router sends it; nothing of it is kept (16 MiB read and dropped: the endless-body
tests' calls take 0.03-0.06 s on 127.0.0.1, and the server's memory does not grow)."""
LINGER_SECONDS = 2.0
"""Longest a connection is held after the answer to a request only partly received (nginx's
lingering_time is 30 s: a caller on a 100 Mbit/s link sends 25 MB in 2 s)."""


class _Transport:
    """The connection's transport as uvicorn sees it: close() goes through the protocol, which may
    linger (a close after an answer, a timeout, a malformed request, a shutdown); everything else is
    the transport's own (the calls of every request are bound methods here: no extra hop)."""

    def __init__(self, transport: asyncio.Transport, protocol: GuardedHttpToolsProtocol) -> None:
        self._transport = transport
        self._protocol = protocol
        self.write = transport.write
        self.is_closing = transport.is_closing
        self.get_extra_info = transport.get_extra_info
        self.pause_reading = transport.pause_reading
        self.resume_reading = transport.resume_reading

    def close(self) -> None:
        self._protocol.end_connection()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """HttpToolsProtocol with head and body read deadlines (class attributes, set by `configure`)."""

    head_seconds = 10.0
    body_seconds = 30.0
    linger_bytes = LINGER_BYTES
    linger_seconds = LINGER_SECONDS

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = False
        self._in_body = False
        self._head_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._head_bytes = 0
        self._raw: asyncio.Transport = None  # type: ignore[assignment]
        self._linger_timer: asyncio.TimerHandle | None = None
        """Armed while the rest of a request answered early is read and dropped (draining or lingering)."""
        self._lingering = False
        """The answer is followed by a FIN: what arrives now is dropped unparsed until the close."""
        self._dropped = 0
        """Bytes read since the answer of a request only partly received (bounded by linger_bytes)."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._raw = transport
        super().connection_made(cast(asyncio.Transport, _Transport(transport, self)))
        self._head_timer = self.loop.call_later(self.head_seconds, self._head_expired)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timers()
        if self._linger_timer is not None:
            self._linger_timer.cancel()
            self._linger_timer = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._linger_timer is not None:  # the rest of a request already answered
            self._dropped += len(data)
            if self._dropped > self.linger_bytes:
                self._raw.close()
                return
            if self._lingering:
                return  # dropped unparsed: the connection ends anyway
        if not self._in_body:
            self._head_bytes += len(data)  # reset when a head completes
        super().data_received(data)
        if self._in_head and self._head_bytes > MAX_HEAD_BYTES and not self._raw.is_closing():
            self._raw.write(_HEAD_TOO_LARGE)
            self.end_connection()
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
        if self._linger_timer is not None and not self._lingering:  # drained within the bounds
            self._linger_timer.cancel()
            self._linger_timer = None
        super().on_message_complete()

    def on_response_complete(self) -> None:
        if self._lingering:  # closing: no keep-alive timer, no pipelined request started
            self.server_state.total_requests += 1
            return
        super().on_response_complete()
        if self._in_body and self._linger_timer is None and not self._raw.is_closing():
            # Answered before its body was all in (a 413 by Content-Length): uvicorn reads the rest
            # and drops it; bounded here, in bytes and in time.
            self._dropped = 0
            self._linger_timer = self.loop.call_later(self.linger_seconds, self._raw.close)

    def end_connection(self, answered: bool = False) -> None:
        """Close the connection, or linger when a request is only partly received and what was
        written in answer is whole (the application's answer, or a refusal written here or by
        uvicorn: 408, 431, 400): see the module doc."""
        raw = self._raw
        if self._lingering:
            return  # ends by its own bounds, or when the caller closes its side
        if raw.is_closing():
            raw.close()  # a no-op, as uvicorn's own close of a closing transport was
            return
        cycle = self.cycle
        # An answer cut short (the application failed after starting it) is not worth delivering.
        answered = answered or cycle is None or cycle.response_complete or not cycle.response_started
        if not (self._in_body or self._in_head) or not answered:
            raw.close()  # nothing more is coming, or the answer was cut: nothing to deliver
            return
        self._lingering = True
        self._cancel_timers()
        self._unset_keepalive_if_required()
        if raw.can_write_eof():
            raw.write_eof()  # a FIN after the answer (sent once the answer is)
        self.flow.resume_reading()
        if self._linger_timer is None:
            self._dropped = 0
        else:  # draining already: the same bounds, counted from the answer
            self._linger_timer.cancel()
        self._linger_timer = self.loop.call_later(self.linger_seconds, raw.close)

    def _cancel_timers(self) -> None:
        for timer in (self._head_timer, self._body_timer):
            if timer is not None:
                timer.cancel()
        self._head_timer = self._body_timer = None

    def _head_expired(self) -> None:
        self._head_timer = None
        if self._raw.is_closing() or self._lingering:
            return
        idle = self.cycle is None or self.cycle.response_complete
        if self._in_head or (idle and not self._in_body):
            self._raw.close()  # never sent a whole head: nothing to answer, nothing to linger for

    def _body_expired(self) -> None:
        self._body_timer = None
        if not self._in_body or self._raw.is_closing() or self._lingering:
            return
        cycle = self.cycle
        if cycle is not None and not cycle.response_started:
            cycle.disconnected = True  # the application's sends are dropped, receive() says disconnect
            cycle.message_event.set()
            self._raw.write(_REQUEST_TIMEOUT)
            self.end_connection(answered=True)  # connection_lost tells the application: http.disconnect
            return
        self.end_connection()


def configure(head_seconds: float, body_seconds: float) -> type[GuardedHttpToolsProtocol]:
    """Set the deadlines (per process: each uvicorn worker calls this from its app factory)."""
    GuardedHttpToolsProtocol.head_seconds = head_seconds
    GuardedHttpToolsProtocol.body_seconds = body_seconds
    return GuardedHttpToolsProtocol
