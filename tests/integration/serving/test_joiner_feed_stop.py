"""A model server stopped while its joiner feed still holds records (issue 15, "nothing is lost on
restart"): real processes on 127.0.0.1, no cluster. The server's MODELDEPLOY_FEED_URL points at a
gate in this test that answers 503 (the joiner restarting), so the records of the live requests stay
in the feed; the server gets SIGTERM, as a rolling update or a scale-down sends it; then the gate
forwards to a real `modeldeploy joiner` (SQLite), and every record is stored exactly once. A joiner
that answers garbage, a 4xx, or nothing at all during the stop must not hold the stop past its
deadline, and what it did not take is counted and logged, not dropped silently."""

from __future__ import annotations

import collections
import http.server
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from modeldeploy_contract.joiner_settings import FEED_PATH

from local_processes import free_port, running, wait_for
from serving_harness import Bundles, Server, ServerFactory, v2_body

pytestmark = pytest.mark.slow

N = 60
GRACE_SECONDS = 30
"""The serving pods' terminationGracePeriodSeconds (operator/domain/manifests.py): a stop that takes
longer is ended by SIGKILL."""


class Gate:
    """The joiner's address as the model server sees it: answers by `mode` ("503", "400",
    "garbage": bytes that are not HTTP, "hang": never answers, "forward": to the real joiner, relaying
    its answer). Counts the attempts and the request ids the joiner took."""

    def __init__(self, joiner_url: str) -> None:
        self.mode = "503"
        self.joiner_url = joiner_url
        self.attempts = 0
        self.hanging = 0
        self.taken: list[str] = []
        self.release = threading.Event()
        gate = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                gate.attempts += 1
                mode = gate.mode
                if mode == "garbage":
                    self.wfile.write(b"\x00\xffnot http at all\r\n\r\n")
                    self.close_connection = True
                    return
                if mode == "hang":
                    gate.hanging += 1
                    gate.release.wait(120)
                    self.close_connection = True
                    return
                status = int(mode) if mode.isdigit() else 0
                if mode == "forward":
                    answer = httpx.post(gate.joiner_url + FEED_PATH, content=body, timeout=30)
                    status = answer.status_code
                    if status == 200:
                        gate.taken += [r["request_id"] for r in orjson.loads(body)["predictions"]]
                self.send_response(status)
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *_: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def joiner(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A real joiner on SQLite: (URL, database file)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    database = tmp_path / "joiner.db"
    args = [sys.executable, "-m", "modeldeploy_serving.cli", "joiner", "--host", "127.0.0.1"]
    args += ["--port", str(port), "--database", f"sqlite:///{database}"]
    with running(args, tmp_path / "joiner.log", ready=f"{url}/readyz"):
        yield url, database


@pytest.fixture
def gate(joiner: tuple[str, Path]) -> Iterator[Gate]:
    g = Gate(joiner[0])
    yield g
    g.close()


def feeding_server(
    serve: ServerFactory, bundles: Bundles, gate: Gate, shutdown_seconds: float, workers: int = 1
) -> Server:
    """A server whose records go to the gate, with N answered live requests whose records the feed
    holds (the gate answered 503 at least once)."""
    env = {
        "MODELDEPLOY_FEED_URL": gate.url,
        "MODELDEPLOY_FEED_DEPLOYMENT": "churn",
        "MODELDEPLOY_FEED_VARIANT": "default",
        "MODELDEPLOY_FEED_REVISION": "r1",
        "MODELDEPLOY_FEED_SHUTDOWN_SECONDS": str(shutdown_seconds),
    }
    server = serve(str(bundles.v1), env=env, args=["--workers", str(workers)])
    server.wait_ready()
    with server.client() as c:
        for i in range(N):
            body = v2_body(bundles.normal[i : i + 1])
            r = c.post("/v2/models/churn/infer", json=body, headers={"x-request-id": f"stop-{i}"})
            assert r.status_code == 200, r.text
    wait_for("the feed trying the joiner", lambda: gate.attempts > 0, interval=0.05)
    return server


def stop_holding(server: Server) -> float:
    """SIGTERM, then wait until the feed says it is stopping with records held; the time of the
    signal (monotonic)."""
    signalled = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    wait_for(
        "the feed stopping", lambda: "joiner feed: stopping with" in server.log.read_text(), interval=0.05
    )
    return signalled


def exited_within_grace(server: Server, signalled: float) -> float:
    """Seconds from SIGTERM to exit; fails when the kubelet would have sent SIGKILL by then."""
    try:
        server.process.wait(timeout=max(0.0, signalled + GRACE_SECONDS - time.monotonic()))
    except subprocess.TimeoutExpired:
        raise AssertionError(
            f"still stopping {GRACE_SECONDS} s after SIGTERM:\n{server.log.read_text()}"
        ) from None
    return time.monotonic() - signalled


def stored_ids(database: Path) -> collections.Counter[str]:
    with sqlite3.connect(database) as conn:
        rows = conn.execute("SELECT request_id FROM predictions").fetchall()
    return collections.Counter(row[0] for row in rows)


@pytest.mark.parametrize("workers", [1, 2])
def test_records_held_when_the_server_is_stopped_reach_the_joiner_exactly_once(
    workers: int, serve: ServerFactory, bundles: Bundles, gate: Gate, joiner: tuple[str, Path]
) -> None:
    """With two workers, uvicorn's supervisor passes SIGTERM on to each; each one's feed drains."""
    server = feeding_server(serve, bundles, gate, shutdown_seconds=15, workers=workers)
    signalled = stop_holding(server)
    gate.mode = "forward"  # the joiner is back
    took = exited_within_grace(server, signalled)
    log = server.log.read_text()
    expected = {f"stop-{i}" for i in range(N)}
    assert collections.Counter(gate.taken) == collections.Counter(expected)  # each sent once
    assert stored_ids(joiner[1]) == collections.Counter(expected)
    stopped = re.findall(r"joiner feed: stopped with nothing unsent \(sent (\d+), failed 0\)", log)
    assert len(stopped) == workers, log[-3000:]
    assert sum(map(int, stopped)) == N
    assert "lost at shutdown" not in log
    print(f"{workers} worker(s): SIGTERM to exit {took:.1f} s")


@pytest.mark.parametrize("mode", ["garbage", "400", "hang"])
def test_a_joiner_misbehaving_during_the_stop_does_not_hold_it_past_the_deadline(
    mode: str, serve: ServerFactory, bundles: Bundles, gate: Gate
) -> None:
    """Garbage and no answer are sent again until the deadline (3 s here), then every record is
    counted lost_at_shutdown in one log line; a 4xx fails the records at once (logged as dropped).
    A joiner that never answers is still hanging on to the last POST when the server has exited."""
    server = feeding_server(serve, bundles, gate, shutdown_seconds=3)
    signalled = stop_holding(server)
    gate.mode = mode
    took = exited_within_grace(server, signalled)
    log = server.log.read_text()
    lost = re.findall(r"joiner feed: (\d+) prediction records lost at shutdown", log)
    if mode == "400":
        assert lost == [], log[-3000:]
        dropped = re.findall(r"joiner feed: (\d+) records dropped \(HTTP 400\)", log)
        assert sum(map(int, dropped)) == N, log[-3000:]
        assert f"joiner feed: stopped with nothing unsent (sent 0, failed {N})" in log
    else:
        assert lost == [str(N)], log[-3000:]  # once, with the count
        assert "not sent within the 3 s stop deadline" in log
    if mode == "hang":
        assert gate.hanging >= 1
        assert not gate.release.is_set()
    print(f"{mode}: SIGTERM to exit {took:.1f} s")
