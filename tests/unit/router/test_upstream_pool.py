"""The router's upstream pool never writes a request into a pooled connection the backend has
already closed: such a request provably never reached a model, so it goes on a fresh connection
(or, refused there, to another backend) instead of failing 502 backend_closed."""

from __future__ import annotations

import asyncio
import select
import socket
import struct
import threading
import time
from collections.abc import Iterator

import pytest
import uvloop

from modeldeploy_serving.router import assignment
from modeldeploy_serving.router.upstream import (
    ConnectFailedError,
    NotSentError,
    StaleConnectionError,
    UpstreamPool,
    _Connection,
    request_head,
)

ANSWER = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-type: application/json\r\n\r\n{}"


def read_request(conn: socket.socket, end: bytes) -> bytes:
    """What a test backend read of one request: up to `end`, or until the client closed."""
    data = b""
    while end not in data:
        chunk = conn.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


class OneAnswerPerConnection:
    """A backend on 127.0.0.1 that answers one request per connection and then closes it, telling
    the test when it has (so the test, not a timer, decides when to go on)."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self.listener.getsockname()[1]}"
        self.closed = threading.Semaphore(0)
        self.accepted = 0
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.accepted += 1
            self.handle(conn)
            self.closed.release()

    def handle(self, conn: socket.socket) -> None:
        with conn:
            if read_request(conn, b"\r\n\r\n"):
                conn.sendall(ANSWER)

    def stop(self) -> None:
        self.listener.close()


@pytest.fixture
def backend() -> Iterator[OneAnswerPerConnection]:
    server = OneAnswerPerConnection()
    yield server
    server.stop()


def _readable(sock: socket.socket) -> bool:
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLIN)
    return bool(poller.poll(0))


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])  # the router runs on uvloop
def test_a_pooled_connection_closed_by_the_backend_is_not_reused_even_before_the_loop_saw_it(
    backend: OneAnswerPerConnection, loop: str
) -> None:
    async def scenario() -> tuple[int, int]:
        pool = UpstreamPool()
        head = request_head("POST", b"/v2/models/m/infer", [], 2)
        kwargs = {"connect_timeout": 5.0, "timeout": 10.0}
        first = await pool.send(backend.address, "POST", head, b"{}", **kwargs)  # type: ignore[arg-type]
        # The backend has closed the connection; the FIN is in this socket, and this coroutine does
        # not yield, so the event loop has not read it (the moment between a backend's death and the
        # loop noticing). Blocking waits on conditions, not on time:
        assert backend.closed.acquire(timeout=30)
        (idle,) = pool._idle[backend.address]  # the state under test
        sock = idle._transport.get_extra_info("socket")  # type: ignore[union-attr]
        deadline = time.monotonic() + 30
        while not _readable(sock) and time.monotonic() < deadline:
            time.sleep(0.001)  # the kernel delivering the FIN on loopback, not the event loop
        assert idle.reusable, "the loop must not have seen the close yet, or this tests nothing"
        second = await pool.send(backend.address, "POST", head, b"{}", **kwargs)  # type: ignore[arg-type]
        pool.close()
        return first.status, second.status

    run = uvloop.run if loop == "uvloop" else asyncio.run
    assert run(scenario()) == (200, 200)
    assert backend.accepted == 2  # the second request went on a new connection


def test_a_quiet_pooled_connection_is_reused() -> None:
    async def scenario() -> int:
        connections = 0

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal connections
            connections += 1
            while await reader.readuntil(b"\r\n\r\n"):
                await reader.readexactly(2)
                writer.write(ANSWER)
                await writer.drain()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        address = f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
        pool = UpstreamPool()
        head = request_head("POST", b"/v2/models/m/infer", [], 2)
        for _ in range(3):
            response = await pool.send(address, "POST", head, b"{}", connect_timeout=5.0, timeout=10.0)
            assert response.status == 200
        pool.close()
        server.close()
        return connections

    assert asyncio.run(scenario()) == 1


class ReadsThenCloses(OneAnswerPerConnection):
    """A backend on 127.0.0.1 that reads each request whole and closes the connection without an
    answer: a server that died while predicting."""

    def handle(self, conn: socket.socket) -> None:
        with conn:
            read_request(conn, b"\r\n\r\n{}")


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_a_request_written_into_a_connection_already_closed_goes_elsewhere(
    backend: OneAnswerPerConnection, loop: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The FIN of a killed backend may still be on its way when the pool checks the connection (a
    CI run, 2026-12-03: 32 ms after the processes were gone). The request is written into a dead
    connection; the backend's kernel answers it with a reset and acknowledges none of it, so it
    provably never reached a process: NotSentError, which the proxy sends to another backend."""

    async def scenario() -> None:
        pool = UpstreamPool()
        head = request_head("POST", b"/v2/models/m/infer", [], 2)
        kwargs = {"connect_timeout": 5.0, "timeout": 10.0}
        first = await pool.send(backend.address, "POST", head, b"{}", **kwargs)  # type: ignore[arg-type]
        assert first.status == 200
        assert backend.closed.acquire(timeout=30)
        # The check before reuse misses the close, as when the FIN has not arrived yet.
        monkeypatch.setattr(_Connection, "peer_gone", lambda self: False)
        with pytest.raises(NotSentError, match="no byte of the request reached it"):
            await pool.send(backend.address, "POST", head, b"{}", **kwargs)  # type: ignore[arg-type]
        pool.close()

    (uvloop.run if loop == "uvloop" else asyncio.run)(scenario())
    assert backend.accepted == 1  # not sent again by the pool itself: the proxy picks another backend


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_a_request_the_backend_read_before_closing_is_not_sent_again(loop: str) -> None:
    """Closed after the backend's process read the request: it may have predicted, so the pool
    reports StaleConnectionError (502 backend_closed, at most once)."""
    one_request_fails(ReadsThenCloses(), loop, StaleConnectionError)


def one_request_fails(
    server: OneAnswerPerConnection, loop: str, error: type[Exception], match: str | None = None
) -> None:
    """One request on a new connection to `server` raises `error` (on `loop`); the server is stopped."""

    async def scenario() -> None:
        pool = UpstreamPool()
        head = request_head("POST", b"/v2/models/m/infer", [], 2)
        with pytest.raises(error, match=match):
            await pool.send(server.address, "POST", head, b"{}", connect_timeout=5.0, timeout=10.0)
        pool.close()

    try:
        (uvloop.run if loop == "uvloop" else asyncio.run)(scenario())
    finally:
        server.stop()


class AnswersThenResets(OneAnswerPerConnection):
    """Answers one request per connection, then resets it (SO_LINGER 0): the connection ends with a
    reset and no FIN, as a killed process's does when a request arrives after its death."""

    def handle(self, conn: socket.socket) -> None:
        read_request(conn, b"\r\n\r\n{}")  # the whole request: nothing unread remains
        conn.sendall(ANSWER)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_a_request_written_into_a_reset_connection_goes_elsewhere(
    loop: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reset arrives before the loop reads anything: no FIN, no eof_received, the write fails and
    the connection is lost with an error; TCP_INFO still shows the request unacknowledged."""
    backend = AnswersThenResets()

    async def scenario() -> None:
        pool = UpstreamPool()
        head = request_head("POST", b"/v2/models/m/infer", [], 2)
        kwargs = {"connect_timeout": 5.0, "timeout": 10.0}
        assert (await pool.send(backend.address, "POST", head, b"{}", **kwargs)).status == 200  # type: ignore[arg-type]
        assert backend.closed.acquire(timeout=30)
        monkeypatch.setattr(_Connection, "peer_gone", lambda self: False)
        with pytest.raises(NotSentError):
            await pool.send(backend.address, "POST", head, b"{}", **kwargs)  # type: ignore[arg-type]
        pool.close()

    try:
        (uvloop.run if loop == "uvloop" else asyncio.run)(scenario())
    finally:
        backend.stop()


class ClosesWithTheRequestUnread(OneAnswerPerConnection):
    """Takes the connection and lets the whole request arrive in its kernel buffer, unread (peeked),
    then closes: the kernel resets it, as it does for a killed server's connections holding a request
    it had not read, and for those still in its listener's accept queue (the CI's pod-kill test,
    2026-12-04: all bytes acknowledged, then a reset, 4-12 ms after the connection opened)."""

    def handle(self, conn: socket.socket) -> None:
        with conn:
            while b"\r\n\r\n{}" not in conn.recv(65536, socket.MSG_PEEK):
                select.select([conn], [], [], 1.0)  # more of it to come: wait for it, unread


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_a_request_the_backend_never_read_goes_elsewhere_though_its_kernel_acknowledged_it(
    loop: str,
) -> None:
    """Acknowledged by the backend's kernel but reset unread: no process read it, so NotSentError (the
    proxy sends it to another backend), where TCP_INFO alone said 'may have reached it'."""
    one_request_fails(ClosesWithTheRequestUnread(), loop, NotSentError, match="request unread")


HEAD_GET = request_head("GET", b"/", [], 0)


def _refused_address() -> str:
    """An address on 127.0.0.1 nothing listens on: bound, then closed."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        return f"127.0.0.1:{listener.getsockname()[1]}"


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_a_backend_that_refused_a_connection_is_a_suspect_until_it_connects_or_its_time_passes(
    loop: str, backend: OneAnswerPerConnection
) -> None:
    dead = _refused_address()

    async def scenario() -> None:
        pool = UpstreamPool()
        assert not pool.suspects()
        with pytest.raises(ConnectFailedError):
            await pool.send(dead, "GET", HEAD_GET, b"", connect_timeout=5, timeout=5)
        assert set(pool.suspects()) == {dead}
        await pool.send(backend.address, "GET", HEAD_GET, b"", connect_timeout=5, timeout=5)
        assert set(pool.suspects()) == {dead}  # another backend's success says nothing of the dead one
        expiring = UpstreamPool(suspect_seconds=0)
        with pytest.raises(ConnectFailedError):
            await expiring.send(dead, "GET", HEAD_GET, b"", connect_timeout=5, timeout=5)
        assert not expiring.suspects()  # its time passed: tried again like any other
        # A backend back on its address is no suspect from its first connection on.
        back = UpstreamPool()
        back._suspect_until[backend.address] = time.monotonic() + 60
        await back.send(backend.address, "GET", HEAD_GET, b"", connect_timeout=5, timeout=5)
        assert not back.suspects()

    (uvloop.run if loop == "uvloop" else asyncio.run)(scenario())


def test_round_robin_passes_over_suspects_while_another_backend_can_take_the_request() -> None:
    failures, _ = __import__("doctest").testmod(assignment)
    assert failures == 0
    rr = assignment.RoundRobin(["a:1", "b:1"])
    assert [rr.next(avoid=("a:1", "b:1")) for _ in range(2)] == ["a:1", "b:1"]  # all suspect: as usual
    assert assignment.RoundRobin(["a:1"]).other_than("a:1", avoid=()) is None
    assert rr.other_than("z:1") is None  # not one of this arm's backends
