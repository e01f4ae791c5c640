"""A lean HTTP/1.1 client for the hot path: keep-alive connections pooled per backend address.

General-purpose clients (httpx, aiohttp) cost 100-400 us of CPU per request, several times what
the rest of the router costs; an asyncio Protocol with httptools' parser costs a few tens. It
supports what the router needs and no more: buffered request and response bodies (inference
bodies are small), Content-Length and chunked responses, a timer per exchange.
"""

from __future__ import annotations

import asyncio
import select
import socket
import sys
import time
from collections.abc import Collection
from dataclasses import dataclass
from typing import cast

import httptools

from modeldeploy_contract.metric_names import TRAFFIC_HEADER
from modeldeploy_serving.router.budget import ByteBudget


class UpstreamError(Exception):
    """The backend did not produce a response."""


class ConnectFailedError(UpstreamError):
    """No connection could be opened: the request never left the router, so a retry is safe."""


class NotSentError(ConnectFailedError):
    """A pooled connection turned out closed before a byte of the request was written: the
    request never left the router, so a retry is safe (like a refused connection)."""


class StaleConnectionError(UpstreamError):
    """The connection (new or reused) was closed after the request was written but before any
    response byte arrived. Usually the backend had closed it while idle, but a backend that died
    while processing looks the same: the request may have reached the model, so it is NOT retried
    (see docs/router.md, delivery guarantee)."""


class UpstreamTimeoutError(UpstreamError):
    """No complete response within the request timeout."""


class BadResponseError(UpstreamError):
    """The backend sent something that is not HTTP, or closed mid-response."""


class ResponseTooLargeError(BadResponseError):
    """The response body went beyond the router's max_response_bytes (the connection is closed)."""


class OverBudgetError(BadResponseError):
    """Receiving the response would take the router's buffered bytes beyond its budget (a copy's
    answer, or an answer that cannot wait for room: see ByteBudget)."""


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    headers: list[tuple[bytes, bytes]]
    """Names lower-cased, hop-by-hop and length headers removed."""
    body: bytes
    held: int = 0
    """Bytes of the router's budget counted for `body`: the caller releases them once it is done
    with the body (sent, compared)."""


# Hop-by-hop (RFC 9110 7.6.1) and framing headers: the router frames its own messages.
_NOT_FORWARDED = frozenset(
    {
        TRAFFIC_HEADER.encode(),  # only the router marks copies: a caller cannot pose as one
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"content-length",
        b"expect",
    }
)


def request_head(method: str, target: bytes, headers: list[tuple[bytes, bytes]], body_length: int) -> bytes:
    """The request line and headers to send upstream: the client's headers minus hop-by-hop ones."""
    lines = [method.encode("ascii"), b" ", target, b" HTTP/1.1\r\n"]
    for name, value in headers:
        if name not in _NOT_FORWARDED:
            lines += [name, b": ", value, b"\r\n"]
    lines += [b"content-length: ", str(body_length).encode("ascii"), b"\r\n\r\n"]
    return b"".join(lines)


_TCP_INFO_BYTES_ACKED = slice(120, 128)
"""tcpi_bytes_acked in Linux's struct tcp_info (since 4.1): the sequence space the peer acknowledged,
the SYN's one included (measured here: 1,235 after a 1,234-byte write)."""

_CLOSED_UNRECEIVED = "the backend had closed the connection: no byte of the request reached it"

_RESET_UNREAD = "the backend reset the connection with the request unread: its process never read all of it"
"""A reset without a FIN before it: the kernel resets a connection closed with bytes its process had
not read (Linux tcp_close; RFC 2525 2.17), which is also what happens to connections still in a
listener's accept queue when the listener closes. The CI's pod-kill test (2026-12-04): 3 of 3 lost
requests were on connections opened 4-12 ms before, all bytes acknowledged, then reset as the killed
server's listener closed: never read by any process, yet answered 502 backend_closed. A process that
read the whole request and then died sends a FIN (nothing unread), which stays backend_closed."""

_NO_BODY = frozenset({204, 304})
"""Statuses whose response has no body whatever its headers say (RFC 9110 6.4.1); 1xx never reach
on_headers_complete as a final answer."""
SUSPECT_SECONDS = 5.0
"""How long a backend that refused a connection (or did not answer the SYN within the connect timeout)
is passed over while another ready backend can take the request: about the time the API server takes
to drop a killed pod from its EndpointSlice (readiness probe period + the router's watch), so that
the requests of that moment do not each pay a failed connect, and a retry does not land on it (the CI
run of 2026-12-04: a request lost as 502 backend_unreachable, its retry sent to the killed pod)."""


class _Connection(asyncio.Protocol):
    """One keep-alive connection; at most one exchange at a time."""

    def __init__(self, loop: asyncio.AbstractEventLoop, budget: ByteBudget | None = None) -> None:
        self._loop = loop
        self._budget = budget
        self._counted = 0
        """Budget bytes counted for the response being received."""
        self._admitted = False
        """The exchange answers work the router admitted: its response may wait for room."""
        self._length: int | None = None
        self._reserved = 0
        """Bytes claimed whole for an admitted answer (counted, or waiting to be): its Content-Length,
        or, for an answer in pieces of unknown total (chunked, close-delimited), the most an answer
        may wait for (the budget's headroom), cut to its real size when it is complete. Pieces
        beyond it are counted as they come, never waiting."""
        self._queued = False
        """Waiting for room (ByteBudget.claim); the connection is not read meanwhile."""
        self._complete_when_granted = False
        self._parser = httptools.HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        self._waiter: asyncio.Future[Response] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._headers: list[tuple[bytes, bytes]] = []
        self._body: list[bytes] = []
        self._got_bytes = False
        self._head_only = False
        self._size = 0
        self._max_size = 1 << 62
        self.reusable = True
        self.idle_since = 0.0
        self._sent = 0
        """Bytes written on this connection, all exchanges."""
        self._opened = self._written_at = 0.0
        self._exchanges = 0
        self._acked_at_eof: int | None = None
        self._sent_before = 0
        """Bytes written before the current exchange's request."""
        self._unreceived: bool | None = None
        """Decided at the backend's FIN or reset with the exchange unanswered: True when the backend's
        kernel acknowledged no byte of the request (see _request_unreceived)."""

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self._opened = time.monotonic()

    def data_received(self, data: bytes) -> None:
        self._got_bytes = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._finish(error=BadResponseError(f"invalid HTTP from backend: {exc}"))

    def eof_received(self) -> bool | None:
        if self._waiter is not None and not self._got_bytes:
            self._acked_at_eof = self._acked()
            self._unreceived = self._request_unreceived()  # the socket is still open here
        return None  # the transport closes; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.reusable = False
        if self._waiter is not None and not self._waiter.done():
            if self._got_bytes:
                error: UpstreamError = BadResponseError("backend closed the connection mid-response")
            elif self._unreceived if self._unreceived is not None else self._request_unreceived():
                error = NotSentError(_CLOSED_UNRECEIVED)
            elif self._unreceived is None and isinstance(exc, ConnectionResetError | BrokenPipeError):
                error = NotSentError(_RESET_UNREAD)
            else:
                error = StaleConnectionError(f"backend closed the connection ({self._facts(exc)})")
            self._finish(error=error)

    def _facts(self, exc: Exception | None) -> str:
        """What the router log says about a connection closed unanswered: enough to tell a backend
        that died processing the request from one closed while the request was on its way."""
        now = time.monotonic()
        acked = self._acked_at_eof if self._acked_at_eof is not None else self._acked()
        idle = f", idle {self._written_at - self.idle_since:.3f} s before it" if self._exchanges > 1 else ""
        return (
            f"{'reset' if exc is not None else 'FIN'}, exchange {self._exchanges} on a connection opened "
            f"{now - self._opened:.3f} s ago{idle}, written {now - self._written_at:.3f} s ago, "
            f"acked {acked} of {self._sent_before}+{self._sent - self._sent_before} bytes"
        )

    def _acked(self) -> int | None:
        transport = self._transport
        sock = transport.get_extra_info("socket") if transport is not None else None
        try:
            info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256) if sock is not None else b""
        except (OSError, AttributeError, ValueError):
            return None
        if len(info) < _TCP_INFO_BYTES_ACKED.stop:
            return None
        return int.from_bytes(info[_TCP_INFO_BYTES_ACKED], sys.byteorder)

    def _request_unreceived(self) -> bool:
        """The backend's kernel acknowledged no byte of the current request, so no process there can
        have read it: the request may go to another backend (NotSentError).

        A socket closed by its process (exit, kill, close) sends FIN, and the FIN acknowledges all
        it had received; bytes that arrive after it are answered with a reset, never acknowledged. So
        "closed, and our request not acknowledged" is a request written into a connection that was
        already dead: the moment between a backend's death and the router's kernel delivering its
        FIN, which peer_gone cannot see. The CI's pod-kill test (2026-12-03) lost a request sent 32
        ms after the killed server's processes were gone, on a loaded 2-core machine. Any doubt (no
        TCP_INFO, a closed socket) answers False: not retried, the at-most-once side."""
        acked = self._acked()
        if acked is None:
            return False
        return 0 < acked <= self._sent_before + 1  # + 1: the SYN

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        lower = name.lower()
        if lower not in _NOT_FORWARDED:
            self._headers.append((lower, value))
        elif lower == b"content-length" and value.isdigit() and len(value) <= 19:
            self._length = int(value)

    def on_headers_complete(self) -> None:
        if self._head_only:  # a HEAD response has no body, but the parser cannot be told so
            self.reusable = False
            self._complete()
            return
        length, budget = self._length, self._budget
        if budget is None or not self._admitted or length == 0:
            return
        if length is None:
            if self._parser.get_status_code() in _NO_BODY:
                return
            # Chunked: the total is unknown, so claim the most it may be, whole, as a declared answer
            # does. Counting it piece by piece instead, a piece that found the budget full was a 503
            # after the backend had done the work (9 of 10 in the unit test's storm, all but the first,
            # when requests fill their share); and pieces that waited while others held part of their
            # own answers could wait for each other forever.
            reserve = min(self._max_size, budget.headroom)
        elif length > self._max_size:  # before a byte of it is held
            self._finish(error=ResponseTooLargeError(f"response body over {self._max_size} bytes"))
            return
        else:
            reserve = length
        claimed = budget.claim(reserve, self._granted)
        if claimed is False:
            self._finish(error=OverBudgetError("the router holds too many bytes; retry later"))
            return
        self._reserved = reserve
        if claimed:
            self._counted = reserve
        else:  # waits for room: stop reading (what this read brought is kept, uncounted)
            self._queued = True
            assert self._transport is not None
            self._transport.pause_reading()

    def _granted(self) -> None:
        """Called by the budget when a waiting answer has been counted."""
        self._queued = False
        self._counted = self._reserved
        if self._transport is not None and not self._transport.is_closing():
            self._transport.resume_reading()
        if self._complete_when_granted:
            self._complete_when_granted = False
            self._complete()

    def on_body(self, body: bytes) -> None:
        if self._waiter is None:  # refused earlier in this read: nothing more is kept or counted
            return
        self._size += len(body)
        if self._size > self._max_size:
            self._finish(error=ResponseTooLargeError(f"response body over {self._max_size} bytes"))
            return
        budget = self._budget
        # The part of this piece beyond what was claimed whole: a copy's answer (all of it, as new
        # work), or a chunked answer past its reservation; counted as it comes, never waiting.
        beyond = self._size - max(self._reserved, self._size - len(body))
        if budget is not None and beyond > 0:
            if not (budget.take(beyond) if self._admitted else budget.admit(beyond)):
                self._finish(error=OverBudgetError("the router holds too many bytes; retry later"))
                return
            self._counted += beyond
        self._body.append(body)

    def on_message_complete(self) -> None:
        if not self._parser.should_keep_alive():
            self.reusable = False
        self._complete()

    def peer_gone(self) -> bool:
        """The idle connection is readable: the backend closed or reset it (or sent bytes no request
        asked for), and the event loop has not read that yet. An idle HTTP/1.1 connection is quiet
        until the next request, so readable means unusable; urllib3 checks a pooled connection the
        same way before reuse. Without this, a request taken in the moment between a backend's
        death and the loop reading its FIN was written into the dead connection and answered 502
        backend_closed, not retried (the CI's pod-kill test, 2026-12-03: a request started 20 ms
        after the killed server's processes were gone). One poll(2) per reused connection."""
        transport = self._transport
        if transport is None or transport.is_closing():
            return True
        sock = transport.get_extra_info("socket")
        if sock is None:
            return False
        poller = select.poll()
        poller.register(sock.fileno(), select.POLLIN)
        return bool(poller.poll(0))  # POLLIN, or POLLHUP/POLLERR, which poll reports unasked

    # the exchange
    def exchange(
        self, head: bytes, body: bytes, timeout: float, head_only: bool, max_size: int, admitted: bool = False
    ) -> asyncio.Future[Response]:
        assert self._transport is not None
        if self._transport.is_closing():
            raise NotSentError("the pooled connection was closed before the request was written")
        self._headers, self._body, self._got_bytes, self._head_only = [], [], False, head_only
        self._size, self._max_size = 0, max_size
        self._admitted, self._length, self._reserved = admitted, None, 0
        self._complete_when_granted = False
        self._unreceived = None
        self._waiter = self._loop.create_future()
        self._timer = self._loop.call_later(timeout, self._on_timeout)
        self._sent_before = self._sent
        self._sent += len(head) + len(body)
        self._exchanges += 1
        self._written_at = time.monotonic()
        self._transport.write(head + body if len(body) < 65536 else head)
        if len(body) >= 65536:
            self._transport.write(body)
        return self._waiter

    def _on_timeout(self) -> None:
        self._finish(error=UpstreamTimeoutError("backend did not answer in time"))

    def _complete(self) -> None:
        if self._waiter is None:  # refused earlier in this read
            return
        if self._queued:  # the whole answer came in the read that brought its head: kept until counted
            self._complete_when_granted = True
            return
        status = self._parser.get_status_code()
        unused = self._reserved - self._size  # a chunked answer's reservation, beyond its real size
        if unused > 0 and self._budget is not None:
            self._counted -= unused
            self._budget.release(unused)
        self._reserved = 0
        held, self._counted = self._counted, 0  # handed over with the body
        self._finish(response=Response(status, self._headers, b"".join(self._body), held))

    def _settle(self) -> None:
        """Give back what the budget counts for a response that will not be delivered."""
        if self._budget is None:
            return
        if self._queued:
            self._queued = self._complete_when_granted = False
            self._budget.cancel(self._granted)
        if self._counted:
            counted, self._counted = self._counted, 0
            self._budget.release(counted)

    def _finish(self, response: Response | None = None, error: UpstreamError | None = None) -> None:
        self._settle()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        waiter, self._waiter = self._waiter, None
        if error is not None:
            self.close()
        if waiter is None or waiter.done():
            return
        if error is not None:
            waiter.set_exception(error)
        else:
            assert response is not None
            waiter.set_result(response)

    def close(self) -> None:
        self.reusable = False
        self._settle()  # abandoned mid-exchange (cancelled): nothing stays counted
        if self._transport is not None:
            self._transport.close()


class UpstreamPool:
    """Keep-alive connections per "host:port"; idle ones older than `idle_seconds` are dropped."""

    budget: ByteBudget | None = None
    """Set by the router app: response bytes count against its byte budget while they arrive."""

    def __init__(
        self,
        max_idle_per_backend: int = 128,
        idle_seconds: float = 4.0,
        suspect_seconds: float = SUSPECT_SECONDS,
    ) -> None:
        self._idle: dict[str, list[_Connection]] = {}
        self._max_idle = max_idle_per_backend
        self._idle_seconds = idle_seconds
        self._suspect_seconds = suspect_seconds
        self._suspect_until: dict[str, float] = {}

    def suspects(self) -> Collection[str]:
        """Backends whose last connection attempt failed within `suspect_seconds`: new requests go
        elsewhere while they can (RoundRobin's `avoid`). An empty dict costs one truth test a request."""
        if not self._suspect_until:
            return ()
        now = time.monotonic()
        for address in [a for a, until in self._suspect_until.items() if until <= now]:
            del self._suspect_until[address]
        return self._suspect_until.keys()

    async def send(
        self,
        address: str,
        method: str,
        head: bytes,
        body: bytes,
        *,
        connect_timeout: float,
        timeout: float,
        fresh: bool = False,
        max_response_bytes: int = 1 << 62,
        admitted: bool = False,
    ) -> Response:
        """One exchange (on a new connection when `fresh`). Raises ConnectFailedError (the request
        never left: safe to retry), StaleConnectionError, UpstreamTimeoutError or BadResponseError
        (the request may have reached the backend: not retried). `admitted`: the answer of work
        the router admitted, which may wait for room in the budget (ByteBudget.claim). The caller
        releases the returned `held` bytes."""
        conn = None if fresh else self._take_idle(address)
        if conn is None:
            conn = await self._connect(address, connect_timeout)
        try:
            response = await conn.exchange(
                head,
                body,
                timeout,
                head_only=method == "HEAD",
                max_size=max_response_bytes,
                admitted=admitted,
            )
        except BaseException:
            conn.close()  # cancelled or failed mid-exchange: the connection state is unknown
            raise
        self._put_idle(address, conn)
        return response

    def _take_idle(self, address: str) -> _Connection | None:
        idle = self._idle.get(address)
        oldest_usable = time.monotonic() - self._idle_seconds
        while idle:
            conn = idle.pop()
            if conn.reusable and conn.idle_since >= oldest_usable and not conn.peer_gone():
                return conn
            conn.close()
        return None

    def _put_idle(self, address: str, conn: _Connection) -> None:
        idle = self._idle.setdefault(address, [])
        if not conn.reusable or len(idle) >= self._max_idle:
            conn.close()
            return
        conn.idle_since = time.monotonic()
        idle.append(conn)

    async def _connect(self, address: str, timeout: float) -> _Connection:
        host, _, port = address.rpartition(":")
        host = host.strip("[]")  # IPv6 literals are written [::1]:8080
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                _, protocol = await loop.create_connection(
                    lambda: _Connection(loop, self.budget), host, int(port)
                )
        except (OSError, TimeoutError) as exc:
            self._suspect_until[address] = time.monotonic() + self._suspect_seconds
            raise ConnectFailedError(f"cannot connect to {address}: {exc or type(exc).__name__}") from None
        self._suspect_until.pop(address, None)
        return protocol

    def forget(self, keep: set[str]) -> None:
        """Close idle connections to addresses that are no longer backends."""
        for address in [a for a in self._idle if a not in keep]:
            for conn in self._idle.pop(address):
                conn.close()

    def close(self) -> None:
        self.forget(set())
