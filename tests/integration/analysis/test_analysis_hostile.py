"""Analysis against hostile or broken servers, for real, on 127.0.0.1: a server that hangs, trickles,
answers 2 GiB, redirects, or is blackholed (listening, never accepting). Every time: the fetch ends
(its deadline, its byte cap), memory stays bounded, nothing is followed, and the reading is
Inconclusive with a short message of the operator's own making.

The servers are plain sockets in threads; every loop of theirs is bounded in count and ends when the
test does.
"""

from __future__ import annotations

import socket
import threading
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta

import httpx
import pytest

from modeldeploy_operator.analysis import (
    AddressPolicy,
    AnalysisSources,
    AnalysisTarget,
    BuiltinScrapeSource,
    FetchError,
    FetchLimits,
    MeasurementPool,
)
from modeldeploy_operator.analysis.fetch import fetch, new_client
from modeldeploy_operator.domain.readings import CheckReading
from modeldeploy_operator.domain.spec import Analysis, Check, Threshold

DEADLINE = 1.0
CAP = 1024 * 1024
TWO_GIB = 2 * 1024**3
CHUNK = 64 * 1024
LIMITS = FetchLimits(deadline_seconds=DEADLINE, max_bytes=CAP)


class Server:
    """One listening socket on 127.0.0.1; each connection is served by `behaviour` in a thread."""

    def __init__(self, behaviour: Callable[[socket.socket, Server], None] | None) -> None:
        self.stop = threading.Event()
        self.sent = 0
        self.connections = 0
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.address = f"127.0.0.1:{self.port}"
        self.url = f"http://{self.address}"
        self._behaviour = behaviour
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def start(self) -> None:
        if self._behaviour is None:  # blackhole: a backlog of one, never accepted, never answered
            self.listener.listen(0)
            return
        self.listener.listen(8)
        self.listener.settimeout(0.2)
        thread = threading.Thread(target=self._accept, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _accept(self) -> None:
        for _ in range(3000):  # bounded: at most ~10 minutes of 0.2 s accept timeouts
            if self.stop.is_set():
                return
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self.connections += 1
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _serve(self, conn: socket.socket) -> None:
        assert self._behaviour is not None
        with conn:
            conn.settimeout(5)
            try:
                conn.recv(65536)  # the request (small GETs arrive in one segment on loopback)
                self._behaviour(conn, self)
            except OSError:
                pass  # the client gave up: that is the point

    def add_sent(self, n: int) -> None:
        with self._lock:
            self.sent += n

    def close(self) -> None:
        self.stop.set()
        self.listener.close()
        for thread in self._threads:
            thread.join(timeout=10)


@contextmanager
def serving(behaviour: Callable[[socket.socket, Server], None] | None) -> Iterator[Server]:
    server = Server(behaviour)
    server.start()
    try:
        yield server
    finally:
        server.close()


def hang(conn: socket.socket, server: Server) -> None:
    server.stop.wait(30)


def trickle(conn: socket.socket, server: Server) -> None:
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 100000\r\n\r\n")
    for _ in range(1500):  # one byte every 20 ms: never a read timeout, never a complete answer
        if server.stop.wait(0.02):
            return
        conn.sendall(b"#")
        server.add_sent(1)


def huge(declared: bool) -> Callable[[socket.socket, Server], None]:
    def answer(conn: socket.socket, server: Server) -> None:
        length = f"Content-Length: {TWO_GIB}\r\n" if declared else "Connection: close\r\n"
        conn.sendall(f"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n{length}\r\n".encode())
        block = b"# " + b"x" * (CHUNK - 3) + b"\n"
        for _ in range(TWO_GIB // CHUNK):  # 2 GiB, streamed, unless the client hangs up first
            if server.stop.is_set():
                return
            conn.sendall(block)
            server.add_sent(len(block))

    return answer


def redirect_to(location: str) -> Callable[[socket.socket, Server], None]:
    def answer(conn: socket.socket, server: Server) -> None:
        conn.sendall(f"HTTP/1.1 302 Found\r\nLocation: {location}\r\nContent-Length: 0\r\n\r\n".encode())

    return answer


def metrics(conn: socket.socket, server: Server) -> None:
    body = b"up 1\n"
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))


def short_and_ours(detail: str) -> bool:
    """Printable, bounded, and nothing of the remote's body in it (a built-in check's message also
    names its PromQL, the operator's own text: hence the 600)."""
    return len(detail) < 600 and detail.isprintable() and "xxxx" not in detail and "###" not in detail


# --- fetch itself --------------------------------------------------------------------------------


def test_a_hanging_server_is_cut_at_the_deadline() -> None:
    with (
        serving(hang) as server,
        new_client() as client,
        pytest.raises(FetchError, match=f"no complete answer within {DEADLINE:g}s"),
    ):
        fetch(client, server.url + "/metrics", LIMITS)


def test_a_trickling_server_is_cut_at_the_deadline_not_per_read() -> None:
    with serving(trickle) as server, new_client() as client:
        with pytest.raises(FetchError, match=f"no complete answer within {DEADLINE:g}s"):
            fetch(client, server.url + "/metrics", LIMITS)
        assert 0 < server.sent < 1500  # it was still sending, slowly, when the client gave up


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "close-delimited"])
def test_a_2gib_answer_is_cut_at_the_cap_with_bounded_memory(declared: bool) -> None:
    with serving(huge(declared)) as server, new_client() as client:
        tracemalloc.start()
        try:
            with pytest.raises(FetchError, match=f"larger than {CAP} bytes"):
                fetch(client, server.url + "/metrics", LIMITS)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert peak < 16 * CAP  # a few copies of the cap at most, never the answer
        assert server.sent < TWO_GIB // 8  # the client hung up long before the end


def test_a_redirect_is_not_followed() -> None:
    with serving(metrics) as elsewhere:
        with (
            serving(redirect_to(elsewhere.url + "/metrics")) as server,
            new_client() as client,
            pytest.raises(FetchError, match="HTTP 302 redirect not followed"),
        ):
            fetch(client, server.url + "/metrics", LIMITS)
        assert elsewhere.connections == 0


def test_a_blackholed_address_is_cut_at_the_deadline() -> None:
    with serving(None) as server, new_client() as client:
        fillers = []
        for _ in range(4):  # fill the backlog, so that further connects get no answer at all
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", server.port))
            fillers.append(filler)
        try:
            with pytest.raises(FetchError) as raised:
                fetch(client, server.url + "/metrics", LIMITS)
            assert str(raised.value) in (f"no complete answer within {DEADLINE:g}s", "connect timeout")
        finally:
            for filler in fillers:
                filler.close()


# --- as readings: the built-in scrape and Prometheus ---------------------------------------------

HOSTILE = {
    "hang": hang,
    "trickle": trickle,
    "2GiB": huge(False),
    "redirect": redirect_to("http://127.0.0.1:1/"),
    "blackhole": None,
}
CHECK = Check(name="errors", type="errorRate", threshold=Threshold(max=0.05))
USER = Check(name="custom", type="prometheus", threshold=Threshold(max=1), query="up")


@pytest.mark.parametrize("kind", list(HOSTILE))
def test_a_hostile_pod_gives_an_inconclusive_reading_with_a_short_message(kind: str) -> None:
    with serving(HOSTILE[kind]) as server:
        scrape = BuiltinScrapeSource(limits=LIMITS)
        target = AnalysisTarget("ml", "churn", "default", "c0ffee", canary_endpoints=(server.address,))
        (reading,) = scrape.read([CHECK], target, timedelta(seconds=30))
        scrape.close()
    assert reading.value is None
    assert "no canary pod could be scraped" in reading.detail
    assert short_and_ours(reading.detail), reading.detail


@pytest.mark.parametrize("kind", list(HOSTILE))
def test_a_hostile_prometheus_gives_inconclusive_readings_on_the_pool(kind: str) -> None:
    with serving(HOSTILE[kind]) as server:
        pool: MeasurementPool[list[CheckReading]] = MeasurementPool(2, 10.0)
        sources = AnalysisSources(
            policy=AddressPolicy((server.url,)), pool=pool, max_answer_bytes=CAP, deadline_seconds=10.0
        )
        analysis = Analysis.model_validate(
            {
                "interval": "30s",
                "checks": [CHECK, USER],
                "prometheus": {"address": server.url, "timeoutSeconds": DEADLINE},
            }
        )
        target = AnalysisTarget("ml", "churn", "default", "c0ffee", "1b9e04")
        assert sources.measure(analysis, analysis.checks, target) is None  # never waits
        assert pool.wait(sources.measurement_key(analysis, analysis.checks, target), 60)
        readings = sources.measure(analysis, analysis.checks, target)
        pool.close()
    assert readings is not None
    assert [r.value for r in readings] == [None, None]
    for reading in readings:
        assert "query failed" in reading.detail
        assert short_and_ours(reading.detail), reading.detail


def test_prometheus_through_a_redirect_never_reaches_the_other_server() -> None:
    with serving(metrics) as elsewhere:
        with serving(redirect_to(elsewhere.url + "/api/v1/query")) as server:
            sources = AnalysisSources(policy=AddressPolicy((server.url,)))
            analysis = Analysis.model_validate(
                {"interval": "30s", "checks": [USER], "prometheus": {"address": server.url}}
            )
            (reading,) = sources.read(analysis, [USER], AnalysisTarget("ml", "churn", "default", "c0ffee"))
        assert elsewhere.connections == 0
    assert reading.detail == "query failed: HTTP 302 redirect not followed"


def test_the_scrape_client_ignores_proxy_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:1")
    with serving(metrics) as server, new_client() as client:
        status, body = fetch(client, server.url + "/metrics", LIMITS)
    assert (status, body) == (200, b"up 1\n")
    assert isinstance(client, httpx.Client)
