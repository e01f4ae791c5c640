"""The router's byte budget, on a real router process: memory stays bounded whatever callers send.

A router process (8 MiB `max_buffered_bytes`, 2 MiB `max_body_bytes` and `max_response_bytes`) in
front of a backend that holds every request until the test lets it answer (a slow model server that
never finishes on its own: nothing here depends on timing), with a shadow arm copying every request
to another such backend. Then, all at once:

- CALLERS callers each send a 1 MiB body (CALLERS MiB offered, many times the budget): as many as fit
  below the budget minus its headroom for answers (`max_response_bytes`) are held, every other gets
  a 503 `over_budget` with `Retry-After` and a JSON body while the held ones are still waiting
  (fast: no refusal waits for a backend), and the router's RSS peak stays within the budget plus a
  fixed allowance, far below what was offered;
- bodies over `max_body_bytes` get 413: chunked ones (counted as they arrive) before the storm,
  when the budget has room to read them that far, declared ones during it (refused before reading);
- then the backend answers 1 MiB each, all at once: every held request gets its answer (200; the
  answers that do not fit wait for the ones before them to be sent, they are not refused); the
  shadow copies that do not fit are dropped and counted;
- every refusal is in `modeldeploy_router_refused_total`, and the bytes held go back to 0.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from router_harness import Router

pytestmark = pytest.mark.slow

MIB = 1024 * 1024
BUDGET = 8 * MIB
BODY = MIB
MAX_RESPONSE = 2 * MIB
CALLERS = 64
RSS_ALLOWANCE = 24 * MIB
"""Peak RSS growth allowed over the router's RSS before the storm, beyond the budget itself: the
body being assembled while it is checked (a copy of up to one body per concurrent reader's join),
the JSON answers, the shadow copies' heads. Measured growth: see docs/reliability.md (Memory)."""


@contextmanager
def gated_backend(
    response_bytes: int, chunked: bool = False
) -> Iterator[tuple[str, threading.Event, list[int]]]:
    """A keep-alive HTTP/1.1 backend in threads: reads each request whole, waits for the gate, then
    answers a V2 response padded to `response_bytes` (`chunked`: in 64 KiB chunks, no
    Content-Length). Yields its address, the gate and a one-item list counting the requests it holds
    or has held."""
    server = socket.create_server(("127.0.0.1", 0), backlog=512)
    server.settimeout(0.2)
    gate, stop = threading.Event(), threading.Event()
    seen = [0]
    lock = threading.Lock()
    answer = orjson.dumps(
        {
            "model_name": "churn",
            "outputs": [{"name": "probabilities", "datatype": "FP32", "shape": [1, 2], "data": [0.4, 0.6]}],
            "parameters": {"pad": "x" * response_bytes},
        }
    )
    response = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n" % len(
        answer
    )
    if chunked:
        parts = [answer[i : i + 65536] for i in range(0, len(answer), 65536)]
        response = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n"
        answer = b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in parts) + b"0\r\n\r\n"

    def handle(conn: socket.socket) -> None:
        with conn:
            buffer = b""
            while not stop.is_set():
                while b"\r\n\r\n" not in buffer:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    buffer += chunk
                head, _, buffer = buffer.partition(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                while len(buffer) < length:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    buffer += chunk
                buffer = buffer[length:]
                with lock:
                    seen[0] += 1
                gate.wait()
                conn.sendall(response + answer)

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            threading.Thread(target=handle, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.getsockname()[1]}", gate, seen
    finally:
        gate.set()
        stop.set()
        thread.join(5)
        server.close()


def status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"{field} not in /proc/{pid}/status")


def post(url: str, body: bytes | Iterator[bytes]) -> httpx.Response:
    with httpx.Client(timeout=httpx.Timeout(300.0)) as client:
        return client.post(f"{url}/v2/models/churn/infer", content=body)


def pieces(size: int) -> Iterator[bytes]:
    """A body of `size` bytes in 64 KiB pieces, without Content-Length (chunked)."""
    piece = b"c" * (64 * 1024)
    for _ in range(size // len(piece)):
        yield piece


@pytest.mark.parametrize("framing", ["declared", "chunked"])
def test_router_memory_is_bounded_and_excess_refused_fast(tmp_path: Path, framing: str) -> None:
    # The pool outermost: on a failed assertion the backends open their gates and the router stops
    # before the pool waits for its calls (the other way round, a failure hung until the calls'
    # own 300 s timeout).
    with (
        ThreadPoolExecutor(CALLERS + 8) as pool,
        # Chunked framing: the answers chunked too (no Content-Length), so they too must wait for room.
        gated_backend(BODY, chunked=framing == "chunked") as (primary, gate, held),
        gated_backend(1024) as (shadow, shadow_gate, copies),
    ):
        router = Router(tmp_path)
        router.write_endpoints({"svc-primary": [{"address": primary}], "svc-shadow": [{"address": shadow}]})
        router.write_config(
            {
                "deployment": {"namespace": "test", "name": "churn"},
                "arms": [
                    {"variant": "default", "revision": "r1", "weight_bp": 10_000, "service": "svc-primary",
                     "model_name": "churn"},
                    {"variant": "default", "revision": "r3", "weight_bp": 0, "service": "svc-shadow",
                     "model_name": "churn"},
                ],
                "shadow": {"variant": "default", "revision": "r3", "percent": 100, "timeout_seconds": 120},
                "timeouts": {"request_seconds": 300},
            }
        )  # fmt: skip
        env = {
            "MODELDEPLOY_ROUTER_MAX_BUFFERED_BYTES": str(BUDGET),
            "MODELDEPLOY_ROUTER_MAX_BODY_BYTES": str(2 * MIB),
            "MODELDEPLOY_ROUTER_MAX_RESPONSE_BYTES": str(MAX_RESPONSE),
            "MODELDEPLOY_ROUTER_RETRY_AFTER_SECONDS": "2",
        }
        with router.running(env) as running:
            router.wait_generation()
            pid = running.pid
            # One request through first, so the code paths are loaded before the baseline.
            gate.set()
            shadow_gate.set()
            assert post(router.url, b'{"inputs": []}').status_code == 200
            assert router_wait(lambda: copies[0] == 1)
            # A chunked body is counted as it arrives: over max_body_bytes it is 413 when the budget
            # has room to read it that far (with the budget full, 503 at its first bytes).
            for _ in range(2):
                response = post(router.url, iter([b"z" * MIB] * 3))
                assert response.status_code == 413, response.text[:200]
                assert response.json()["code"] == "body_too_large"
            gate.clear()
            shadow_gate.clear()
            held[0] = copies[0] = 0
            rss_before = status_kib(pid, "VmRSS")
            body = b"x" * BODY  # one object shared by every caller: the test's own memory stays small
            calls = [
                pool.submit(post, router.url, body if framing == "declared" else pieces(BODY))
                for _ in range(CALLERS)
            ]
            too_large = [pool.submit(post, router.url, b"y" * (3 * MIB)) for _ in range(2)]

            def refused_so_far() -> list[httpx.Response]:
                return [c.result() for c in calls if c.done()]

            # Every caller is answered except those the backend holds; the gate is still closed.
            wait = router_wait(lambda: len(refused_so_far()) + held[0] == CALLERS)
            assert wait, (len(refused_so_far()), held[0])
            refusals = refused_so_far()
            assert 1 <= held[0] <= (BUDGET - MAX_RESPONSE) // BODY, held[0]
            assert not gate.is_set()  # every refusal came while the held requests were still waiting
            for response in refusals:
                assert response.status_code == 503, response.text[:200]
                assert response.headers["retry-after"] == "2"
                assert response.json()["code"] == "over_budget"
            for call in too_large:  # declared: refused before reading, whatever the budget
                response = call.result()
                assert response.status_code == 413, response.text[:200]
                assert response.json()["code"] == "body_too_large"
            peak = status_kib(pid, "VmHWM")
            buffered = router.metric("modeldeploy_router_buffered_bytes")
            assert buffered <= BUDGET, buffered
            # The backend answers all at once: every held request gets its answer (those that do
            # not fit wait for the ones before them); copies that do not fit are dropped.
            gate.set()
            answers = [c.result() for c in calls if c.result() not in refusals]
            codes = [r.status_code for r in answers]
            assert codes == [200] * held[0], [
                (r.status_code, r.text[:200]) for r in answers if r.status_code != 200
            ]
            shadow_gate.set()
            assert router_wait(lambda: router.metric("modeldeploy_router_buffered_bytes") == 0)
            peak = max(peak, status_kib(pid, "VmHWM"))
            over_budget = router.metric('modeldeploy_router_refused_total{reason="over_budget"}')
            assert over_budget == len(refusals), (over_budget, len(refusals))
            assert router.metric('modeldeploy_router_refused_total{reason="body_too_large"}') == 4
            dropped = router.metric(
                'modeldeploy_router_shadow_requests_total{outcome="dropped",revision="r3",variant="default"}'
            )
            sent_copies = copies[0]
            assert dropped + sent_copies == codes.count(200), (dropped, sent_copies, codes.count(200))
            growth = peak - rss_before
            offered = CALLERS * BODY
            print(
                f"offered {offered / MIB:.0f} MiB at once; held by the backend {held[0]}; "
                f"refused at once {len(refusals)}; answered 200 "
                f"{codes.count(200)}; shadow copies sent {sent_copies}, dropped {dropped:.0f}; "
                f"router RSS before {rss_before / MIB:.1f} MiB, peak {peak / MIB:.1f} MiB "
                f"(+{growth / MIB:.1f} MiB)"
            )
            assert growth <= BUDGET + RSS_ALLOWANCE, growth / MIB


def router_wait(probe: Any, timeout: float = 300.0) -> bool:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if probe():
            return True
        time.sleep(0.05)
    return False
