"""The router's own 413 (body over MODELDEPLOY_ROUTER_MAX_BODY_BYTES by Content-Length, before a byte
of it is read) reaches the caller whole: the router reads and drops the rest of the body, bounded, before
it closes (slowclients.py, the protocol both servers run; docs/router.md, "Refused bodies").

A real router process, raw sockets to 127.0.0.1 (a reset and a clean end of stream look alike to httpx).
No backend is needed: the refusal comes before routing.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from raw_http import Exchange, post, send_until_closed

from modeldeploy_serving.slowclients import LINGER_BYTES

from router_harness import Router, one_arm_table

BODY = 1024 * 1024
SLACK = 16 * 1024 * 1024
"""Bytes the kernels may hold beyond what the router read (both sides' socket buffers)."""


@pytest.fixture(scope="module")
def router(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Router]:
    workdir: Path = tmp_path_factory.mktemp("router-linger")
    router = Router(workdir)
    router.write_endpoints({})
    router.write_config(one_arm_table())
    env = {"MODELDEPLOY_ROUTER_MAX_BODY_BYTES": "1024", "MODELDEPLOY_ROUTER_BODY_READ_TIMEOUT_SECONDS": "600"}
    with router.running(env):
        yield router


def address(router: Router) -> tuple[str, int]:
    return "127.0.0.1", router.port


def assert_whole_413(exchange: Exchange) -> None:
    status, body = exchange.answer()
    assert status == 413, exchange
    assert b"body_too_large" in body


@pytest.mark.parametrize("close", [True, False], ids=["connection-close", "keep-alive"])
def test_the_routers_413_arrives_whole_every_time(router: Router, close: bool) -> None:
    for _ in range(50):
        exchange = post(address(router), "/v2/models/churn/infer", declared=BODY, body=BODY, close=close)
        assert exchange.send_error is None, exchange.send_error
        assert exchange.read_error is None, exchange.read_error
        assert exchange.eof is close  # keep-alive: the answer, and the connection stays open
        assert_whole_413(exchange)


def test_a_body_that_never_ends_is_dropped_up_to_a_bound_then_the_router_closes(router: Router) -> None:
    head = b"POST /v2/models/churn/infer HTTP/1.1\r\nhost: t\r\ncontent-length: %d\r\n\r\n" % (1 << 40)
    exchange = send_until_closed(address(router), head, bound=LINGER_BYTES + 4 * SLACK)
    assert_whole_413(exchange)
    assert isinstance(exchange.send_error, ConnectionResetError | BrokenPipeError), exchange.send_error
    assert LINGER_BYTES <= exchange.sent <= LINGER_BYTES + SLACK
    assert b"refused_total" in router.metrics().encode()  # still serving
