"""The label joiner's HTTP protocol is the model server's and the router's (slowclients.py): a refused
body's 413 reaches the caller whole, and callers that send a request head or body too slowly are let go
after their deadlines. Before, the joiner ran plain uvicorn: no head or body deadline at all, and a
413 answered by Content-Length was followed by a close with the body unread, which the kernel turns
into a reset that can destroy the answer.

A real `modeldeploy joiner` process (SQLite in a temporary folder), raw sockets to 127.0.0.1. Every
wait is bounded in time (socket timeouts, wait_for); every loop in count.
"""

from __future__ import annotations

import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from raw_http import Exchange, post, read_answer

from local_processes import free_port, running, wait_for

FEEDBACK = "/v1/feedback"
LIMIT = 1024
BODY = 1024 * 1024
"""A refused body many times the socket buffers' first window: most of it is still on its way when the
joiner answers (test_serving_lingering_close.py measured the same on the model server)."""
HEAD_SECONDS, BODY_SECONDS = 1.0, 2.0


@pytest.fixture(scope="module")
def joiner(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    folder = tmp_path_factory.mktemp("joiner-slow")
    port = free_port()
    env = {
        "MODELDEPLOY_JOINER_DATABASE": f"sqlite:///{folder / 'joiner.db'}",
        "MODELDEPLOY_JOINER_HOST": "127.0.0.1",
        "MODELDEPLOY_JOINER_PORT": str(port),
        "MODELDEPLOY_JOINER_MAX_BODY_BYTES": str(LIMIT),
        "MODELDEPLOY_JOINER_HEADER_READ_TIMEOUT_SECONDS": str(HEAD_SECONDS),
        "MODELDEPLOY_JOINER_BODY_READ_TIMEOUT_SECONDS": str(BODY_SECONDS),
    }
    args = [sys.executable, "-m", "modeldeploy_serving.cli", "joiner"]
    with running(args, Path(folder) / "joiner.log", env, ready=f"http://127.0.0.1:{port}/readyz"):
        yield ("127.0.0.1", port)


def test_a_refused_body_gets_its_413_whole_and_a_clean_end(joiner: tuple[str, int]) -> None:
    for _ in range(20):
        exchange = post(joiner, FEEDBACK, declared=BODY, body=BODY, close=True)
        assert exchange.send_error is None, exchange.send_error
        assert exchange.read_error is None, exchange.read_error
        assert exchange.eof
        status, body = exchange.answer()
        assert status == 413, exchange.response[:300]
        assert b"1024-byte limit" in body


def _let_go(sock: socket.socket) -> Exchange:
    """Read until the joiner ends the connection (or the socket's timeout, well past the deadlines)."""
    exchange = Exchange()
    read_answer(sock, exchange, until_eof=True)
    return exchange


def test_a_head_that_never_completes_is_closed_after_the_head_deadline(joiner: tuple[str, int]) -> None:
    with socket.create_connection(joiner, timeout=HEAD_SECONDS * 20) as sock:
        sock.sendall(b"POST /v1/feedback HTTP/1.1\r\nhost: t\r\n")  # and never the blank line
        exchange = _let_go(sock)
    assert exchange.eof or isinstance(exchange.read_error, ConnectionResetError), exchange
    assert not isinstance(exchange.read_error, TimeoutError), "still open long after the head deadline"
    assert exchange.response == b""  # nothing to answer: no whole head


def test_a_body_that_stops_coming_is_answered_408(joiner: tuple[str, int]) -> None:
    with socket.create_connection(joiner, timeout=BODY_SECONDS * 20) as sock:
        sock.sendall(b"POST /v1/feedback HTTP/1.1\r\nhost: t\r\ncontent-length: 100\r\n\r\n{")
        exchange = _let_go(sock)
    assert exchange.answer()[0] == 408, exchange.response[:300]


def test_it_still_serves_after_the_slow_callers(joiner: tuple[str, int]) -> None:
    """The deadlines closed those connections only."""

    def answers() -> bool:
        body = b'{"labels":[{"request_id":"r1","label":1}]}'
        with socket.create_connection(joiner, timeout=10) as sock:
            sock.sendall(
                b"POST /v1/feedback HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\n"
                b"content-length: %d\r\n\r\n%s" % (len(body), body)
            )
            exchange = Exchange()
            read_answer(sock, exchange, until_eof=False)
        return exchange.answer()[0] == 200

    wait_for("an answer to a well-formed request", answers, timeout=30, interval=0.2)
