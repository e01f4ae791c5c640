"""The model server under overload and slow clients, with real sockets to 127.0.0.1.

Every wait is on a condition, bounded in time; every loop is bounded in count.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress

import httpx
import numpy as np

from local_processes import wait_for
from serving_harness import Bundles, Server, ServerFactory, metric_values

V2 = "/v2/models/churn/infer"
GOOD = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 14], "data": [1.0] * 14}]}


def padded_binary_request(row: np.ndarray, padding: int) -> tuple[bytes, dict[str, str]]:
    """One row as binary FP32 behind a JSON header padded with `padding` spaces."""
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "input",
                    "datatype": "FP32",
                    "shape": [1, 14],
                    "parameters": {"binary_data_size": 56},
                }
            ]
        }
    ).encode()
    header += b" " * padding
    body = header + row.astype("<f4").tobytes()
    return body, {
        "Inference-Header-Content-Length": str(len(header)),
        "content-type": "application/octet-stream",
    }


def test_drift_window_does_not_keep_request_bodies_alive(bundles: Bundles, serve: ServerFactory) -> None:
    """A one-row binary tensor behind a 1 MiB header: 120 of them must not pin 120 MiB."""
    server = serve(
        str(bundles.v1),
        env={
            "MODELDEPLOY_SERVER_MAX_BODY_BYTES": str(2 * 1024 * 1024),
            "MODELDEPLOY_SERVER_DRIFT_WINDOW_ROWS": "100000",  # the window never closes in this test
            "MODELDEPLOY_SERVER_DRIFT_WINDOW_SECONDS": "3600",
            "MODELDEPLOY_SERVER_BATCHING_ENABLED": "false",  # each request's rows reach the window as sent
        },
    )
    server.wait_ready()
    row = np.nan_to_num(bundles.normal[0], nan=0.0)
    body, headers = padded_binary_request(row, 1024 * 1024)
    with server.client() as c:
        for _ in range(5):  # warm-up: allocator arenas, caches
            assert c.post(V2, content=body, headers=headers).status_code == 200
        before = server.rss_bytes()
        for _ in range(120):
            assert c.post(V2, content=body, headers=headers).status_code == 200
        after = server.rss_bytes()
    growth = after - before
    print(f"RSS growth after 120 padded one-row binary requests: {growth / 2**20:.1f} MiB")
    assert growth < 40 * 2**20, f"{growth / 2**20:.1f} MiB kept (before the fix: ~120 MiB)"


@contextmanager
def stalled_requests(server: Server, count: int) -> Iterator[list[socket.socket]]:
    """Requests whose head arrived but whose body never completes: each holds a request slot."""
    socks = []
    try:
        for _ in range(count):
            s = socket.create_connection(server.address, timeout=10)
            s.sendall(b"POST " + V2.encode() + b" HTTP/1.1\r\nhost: x\r\ncontent-length: 1000\r\n\r\n{")
            socks.append(s)
        yield socks
    finally:
        for s in socks:
            s.close()


def test_beyond_max_concurrent_requests_is_a_fast_503_with_retry_after(
    bundles: Bundles, serve: ServerFactory
) -> None:
    server = serve(str(bundles.v1), env={"MODELDEPLOY_SERVER_MAX_CONCURRENT_REQUESTS": "4"})
    server.wait_ready()
    with server.client() as c, stalled_requests(server, 4):
        refused: list[httpx.Response] = []

        def refused_now() -> bool:
            response = c.post(V2, json=GOOD)
            if response.status_code == 503:
                refused.append(response)
                return True
            return False

        wait_for("a 503 while four requests are stalled", refused_now, 10, interval=0.02)
        response = refused[0]
        assert response.headers["retry-after"] == "1"
        assert "overloaded" in response.json()["error"]
        assert c.get("/v2/health/ready").status_code == 200  # probes are not inference: never refused
        values = metric_values(
            c.get("/metrics").text, "modeldeploy_requests_refused_total", reason="concurrency"
        )
        assert values
        assert values[0] >= 1
    with server.client() as c:  # the stalled clients went away: their slots are free again

        def served() -> bool:
            return c.post(V2, json=GOOD).status_code == 200

        wait_for("a 200 once the stalled requests are gone", served, 10, interval=0.02)


def test_slow_clients_do_not_starve_probes_and_are_closed(bundles: Bundles, serve: ServerFactory) -> None:
    """2,000 idle and 200 trickling connections: probes and inference keep answering; head and
    body deadlines close the connections; a stalled body gets 408."""
    server = serve(
        str(bundles.v1),
        env={
            "MODELDEPLOY_SERVER_HEADER_READ_TIMEOUT_SECONDS": "3",
            "MODELDEPLOY_SERVER_BODY_READ_TIMEOUT_SECONDS": "3",
        },
    )
    server.wait_ready()
    host, port = server.address
    with ExitStack() as stack:
        idle = []
        for _ in range(2000):
            s = socket.create_connection((host, port), timeout=10)
            stack.callback(s.close)
            idle.append(s)
        trickling = []
        for i in range(200):
            s = socket.create_connection((host, port), timeout=10)
            stack.callback(s.close)
            s.sendall(b"GET /v2/health/ready HTTP/1.1\r\nx-slow: " if i % 2 else b"POST " + V2.encode())
            trickling.append(s)
        slow_body = socket.create_connection((host, port), timeout=10)
        stack.callback(slow_body.close)
        slow_body.sendall(b"POST " + V2.encode() + b" HTTP/1.1\r\nhost: x\r\ncontent-length: 500\r\n\r\n{")
        with httpx.Client(base_url=server.url, timeout=10) as c:
            for _ in range(20):  # probes and inference answer while all of them are open
                assert c.get("/v2/health/live").status_code == 200
                assert c.get("/v2/health/ready").status_code == 200
                assert c.post(V2, json=GOOD).status_code == 200
                for s in trickling[:50]:  # a byte now and then: not enough to finish a head
                    with suppress(OSError):  # already closed by the head deadline
                        s.send(b"a")
        assert slow_body.recv(200).startswith(b"HTTP/1.1 408")  # blocks until the body deadline

        def closed(s: socket.socket) -> bool:
            s.settimeout(10)
            try:
                return s.recv(1) == b""
            except OSError:
                return True  # reset by the server

        # recv blocks until the head deadline closes each connection (10 s socket timeout each).
        assert all(closed(s) for s in idle[:20])
        assert all(closed(s) for s in trickling[:20])
        wait_for(
            "the last connections closed",
            lambda: closed(idle[-1]) and closed(trickling[-1]),
            15,
            interval=0.02,
        )
    with server.client() as c:
        assert c.get("/v2/health/ready").status_code == 200
