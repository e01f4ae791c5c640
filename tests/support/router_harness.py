"""Real processes for the router's integration tests: fake backends and the router on 127.0.0.1."""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson

from modeldeploy_contract.router_config import RouterConfig

from local_processes import free_port, running

HERE = Path(__file__).parent


@contextmanager
def fake_backend(name: str, prob: float, workdir: Path, sleep: float = 0.0) -> Iterator[str]:
    """A fake model server; yields its "127.0.0.1:port"."""
    port = free_port()
    args = [sys.executable, "-m", "uvicorn", "--app-dir", str(HERE), "fake_backend:app"]
    args += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning", "--no-access-log"]
    env = {"FAKE_NAME": name, "FAKE_PROB": str(prob), "FAKE_SLEEP": str(sleep)}
    with running(
        args, workdir / f"backend-{name}.log", env, ready=f"http://127.0.0.1:{port}/", ready_status=None
    ):
        yield f"127.0.0.1:{port}"


def one_arm_table(service: str = "r1", **extra: Any) -> dict[str, Any]:
    """A routing table of one arm (variant default, revision r1, all the weight) on `service`."""
    arm = {
        "variant": "default",
        "revision": "r1",
        "weight_bp": 10_000,
        "service": service,
        "model_name": "churn",
    }
    return {"deployment": {"namespace": "test", "name": "churn"}, "arms": [arm], **extra}


class Router:
    """The router process with a config file and an endpoints file it re-reads."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config_file = workdir / "router.json"
        self.endpoints_file = workdir / "endpoints.json"
        self.generation = 0
        self.pid = 0
        """The running router's process id."""

    def write_config(self, config: dict[str, Any]) -> RouterConfig:
        """Validate through the contract and replace the file atomically; bumps the generation."""
        self.generation += 1
        table = RouterConfig.model_validate({**config, "generation": self.generation})
        _atomic_write(self.config_file, table.to_json().encode())
        return table

    def write_endpoints(self, by_service: dict[str, list[dict[str, Any]]]) -> None:
        _atomic_write(self.endpoints_file, orjson.dumps(by_service))

    def wait_generation(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if f"modeldeploy_router_config_generation {self.generation}.0" in self.metrics():
                return
            time.sleep(0.05)
        raise TimeoutError(f"router did not apply generation {self.generation}")

    def metrics(self) -> str:
        return httpx.get(f"{self.url}/metrics").text

    def metric(self, sample: str) -> float:
        """Value of one sample line, e.g. 'modeldeploy_router_requests_total{code="200",...}'; 0 if absent."""
        for line in self.metrics().splitlines():
            if line.startswith(sample + " "):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    @contextmanager
    def running(self, env: dict[str, str] | None = None) -> Iterator[Router]:
        args = [sys.executable, "-m", "modeldeploy_serving.router.main"]
        args += ["--config-file", str(self.config_file), "--endpoints-file", str(self.endpoints_file)]
        args += ["--host", "127.0.0.1", "--port", str(self.port), "--log-level", "warning"]
        env = {
            "MODELDEPLOY_ROUTER_FILE_POLL_SECONDS": "0.05",
            "MODELDEPLOY_ROUTER_MAX_RESPONSE_BYTES": str(RESPONSE_LIMIT),
            **(env or {}),
        }
        with running(args, self.workdir / "router.log", env, ready=f"{self.url}/healthz") as process:
            self.pid = process.pid
            yield self


RESPONSE_LIMIT = 1024 * 1024


@contextmanager
def raw_backend(behaviour: str) -> Iterator[tuple[str, list[bytes]]]:
    """A socket "backend" in a thread that reads each request and then either dies with it
    (`die`: closes the connection without a byte of answer, as a crashed pod does) or answers a
    body over the router's response limit (`huge`). Yields its address and the requests seen."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    seen: list[bytes] = []
    stop = threading.Event()

    def handle(conn: socket.socket) -> None:
        with conn:
            conn.settimeout(10)
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            length = next(
                (
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length")
                ),
                0,
            )
            while len(body) < length:
                body += conn.recv(65536)
            seen.append(head + b"\r\n\r\n" + body)
            if behaviour == "huge":
                payload = b"x" * (RESPONSE_LIMIT + 1)
                conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % len(payload) + payload)

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
        yield f"127.0.0.1:{server.getsockname()[1]}", seen
    finally:
        stop.set()
        thread.join(5)
        server.close()


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)  # a new inode: the router's poll sees a change even within one mtime tick


@dataclass
class Cluster:
    """The rig of the router tests: one router and the addresses of its fake backends."""

    router: Router
    stable: str
    stable2: str
    canary: str
    shadow: str
