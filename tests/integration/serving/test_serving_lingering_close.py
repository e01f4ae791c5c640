"""A refused body's answer reaches the caller: the model server reads and discards the rest of a body it
refused (bounded: slowclients.LINGER_BYTES, LINGER_SECONDS) before it closes, so the kernel has no unread
bytes to answer with a reset that would destroy the answer (docs/serving.md, "Refused bodies").

Real server processes, raw sockets to 127.0.0.1: a reset and a clean end of stream look alike to httpx.
Every wait is on a condition bounded in time (the sockets' timeouts); every loop is bounded in count.
"""

from __future__ import annotations

import socket

import pytest
from raw_http import CHUNK, Exchange, post, read_answer, send_until_closed

from modeldeploy_serving.slowclients import LINGER_BYTES

from local_processes import wait_for
from serving_harness import Bundles, Server, ServerFactory

V2 = "/v2/models/churn/infer"
GOOD = b'{"inputs":[{"name":"input","datatype":"FP32","shape":[1,14],"data":[1,1,1,1,1,1,1,1,1,1,1,1,1,1]}]}'
BODY = 1024 * 1024
"""The refused bodies: 1 MiB, many times the socket buffers' first window, so that most of it is still on
its way when the server answers (a 2.3 KB body sent whole never lost its answer here)."""
SLACK = 16 * 1024 * 1024
"""Bytes the kernels may hold beyond what the server read: both sides' socket buffers (tcp_rmem and
tcp_wmem maxima, 6 MiB and 4 MiB here, grown by autotuning)."""


@pytest.fixture(scope="module")
def server(bundles: Bundles, module_serve: ServerFactory) -> Server:
    # A 1 KiB limit, as the erroring-canary e2e's canary; the body deadline far beyond the linger bounds,
    # so that a connection closed here was closed by them.
    server = module_serve(
        str(bundles.v1),
        env={
            "MODELDEPLOY_SERVER_MAX_BODY_BYTES": "1024",
            "MODELDEPLOY_SERVER_BODY_READ_TIMEOUT_SECONDS": "600",
        },
    )
    server.wait_ready()
    return server


def assert_whole_413(exchange: Exchange) -> None:
    status, body = exchange.answer()
    assert status == 413, exchange
    assert b"1024-byte limit" in body


def test_a_caller_that_asks_to_close_gets_the_413_whole_every_time(server: Server) -> None:
    """Before: the server answered and closed with the body unread; the kernel reset the connection, and
    the caller, still writing its body, got a broken pipe or a reset instead of the answer."""
    for _ in range(50):
        exchange = post(server.address, V2, declared=BODY, body=BODY, close=True)
        assert exchange.send_error is None, exchange.send_error
        assert exchange.read_error is None, exchange.read_error
        assert exchange.eof  # a clean end of stream after the answer
        assert_whole_413(exchange)


def test_the_413_is_whole_for_a_body_without_content_length(server: Server) -> None:
    """Chunked: refused while reading, as the limit is passed; the rest is discarded the same way."""
    chunk = b"%x\r\n%s\r\n" % (len(CHUNK), CHUNK)
    for _ in range(20):
        with socket.create_connection(server.address, timeout=30) as sock:
            sock.sendall(
                b"POST %s HTTP/1.1\r\nhost: t\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"
                % V2.encode()
            )
            for _ in range(BODY // len(CHUNK)):
                sock.sendall(chunk)
            sock.sendall(b"0\r\n\r\n")
            exchange = Exchange()
            read_answer(sock, exchange, until_eof=True)
        assert exchange.read_error is None, exchange.read_error
        assert exchange.eof
        assert_whole_413(exchange)


def test_a_keep_alive_connection_serves_the_next_request_after_a_refused_body(server: Server) -> None:
    """Without `connection: close` the refused body is read to its end and the connection stays usable."""
    with socket.create_connection(server.address, timeout=30) as sock:
        for _ in range(10):
            sock.sendall(b"POST %s HTTP/1.1\r\nhost: t\r\ncontent-length: %d\r\n\r\n" % (V2.encode(), BODY))
            for _ in range(BODY // len(CHUNK)):
                sock.sendall(CHUNK)
            refused = Exchange()
            read_answer(sock, refused, until_eof=False)
            assert_whole_413(refused)
            sock.sendall(
                b"POST %s HTTP/1.1\r\nhost: t\r\ncontent-length: %d\r\n\r\n%s"
                % (V2.encode(), len(GOOD), GOOD)
            )
            good = Exchange()
            read_answer(sock, good, until_eof=False)
            assert good.answer()[0] == 200, good


def assert_serves(server: Server) -> None:
    with socket.create_connection(server.address, timeout=30) as sock:
        sock.sendall(
            b"POST %s HTTP/1.1\r\nhost: t\r\ncontent-length: %d\r\n\r\n%s" % (V2.encode(), len(GOOD), GOOD)
        )
        good = Exchange()
        read_answer(sock, good, until_eof=False)
    assert good.answer()[0] == 200, good


def endless_body(server: Server, *, close: bool) -> tuple[Exchange, int]:
    """A body declared as 1 TiB, written as fast as the server takes it until the server ends the
    connection, while the answer is read beside it. Returns what was read and sent, and the server's
    resident memory growth meanwhile."""
    before = server.rss_bytes()
    head = b"POST %s HTTP/1.1\r\nhost: t\r\ncontent-length: %d\r\n" % (V2.encode(), 1 << 40)
    head += b"connection: close\r\n\r\n" if close else b"\r\n"
    # The server reads at most LINGER_BYTES of it.
    exchange = send_until_closed(server.address, head, bound=LINGER_BYTES + 4 * SLACK)
    return exchange, server.rss_bytes() - before


@pytest.mark.parametrize("close", [True, False], ids=["connection-close", "keep-alive"])
def test_a_body_that_never_ends_is_discarded_up_to_a_bound_then_the_connection_closes(
    server: Server, close: bool
) -> None:
    exchange, growth = endless_body(server, close=close)
    assert_whole_413(exchange)  # read while the body was still being written
    assert isinstance(exchange.send_error, ConnectionResetError | BrokenPipeError), exchange.send_error
    assert LINGER_BYTES <= exchange.sent <= LINGER_BYTES + SLACK
    assert growth < 8 * 1024 * 1024, f"the server grew by {growth} bytes: it kept what it discarded"
    assert_serves(server)


@pytest.mark.parametrize("close", [True, False], ids=["connection-close", "keep-alive"])
def test_a_body_that_stops_coming_is_waited_for_a_bounded_time(server: Server, close: bool) -> None:
    """A refused body whose caller stops sending and never closes: the server lets the connection go
    after the linger time, not after the body deadline (600 s here)."""
    with socket.create_connection(server.address, timeout=60) as sock:
        head = b"POST %s HTTP/1.1\r\nhost: t\r\ncontent-length: %d\r\n" % (V2.encode(), 1 << 40)
        sock.sendall(head + (b"connection: close\r\n\r\n" if close else b"\r\n") + CHUNK)
        exchange = Exchange()
        read_answer(sock, exchange, until_eof=close)
        assert_whole_413(exchange)
        assert exchange.eof is close  # with connection: close a FIN follows the answer at once

        def released() -> bool:
            """A byte sent to a connection its server process has closed is answered with a reset."""
            try:
                sock.sendall(b"x")
            except (ConnectionResetError, BrokenPipeError):
                return True
            return False

        wait_for("the server to let the connection go", released, timeout=60, interval=0.1)


def test_a_head_over_the_limit_gets_its_431_whole(server: Server) -> None:
    """The protocol's own refusal of a head over 64 KiB, written while the head still arrives."""
    for _ in range(20):
        with socket.create_connection(server.address, timeout=30) as sock:
            exchange = Exchange()
            try:
                sock.sendall(b"POST %s HTTP/1.1\r\nhost: t\r\nx-big: " % V2.encode())
                for _ in range(4):
                    sock.sendall(CHUNK)
            except OSError as exc:
                exchange.send_error = exc
            read_answer(sock, exchange, until_eof=True)
        assert exchange.send_error is None, exchange.send_error
        assert exchange.read_error is None, exchange.read_error
        assert exchange.eof
        assert exchange.answer()[0] == 431, exchange
