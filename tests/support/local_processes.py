"""Real server processes for tests that need no cluster: a free port, and a process that is always
stopped (SIGTERM, then SIGKILL after 10 s) when the test is done."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import httpx

from modeldeploy_testcluster import controlplane

STARTUP_TIMEOUT = 120.0
"""How long a server process may take to answer: a model server loads onnxruntime, xgboost and a
bundle, which took over 20 s on a 2-core machine at load average 15 (2-3 s when idle). A bound for a
broken server, not a window the test depends on."""


T = TypeVar("T")


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = 60, interval: float = 0.25) -> T:
    """Poll `probe` until it returns something truthy; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def free_port(host: str = "127.0.0.1") -> int:
    """A port for a test server: below the ephemeral range (modeldeploy_testcluster's free_port)."""
    return controlplane.free_port(host)


@contextmanager
def running(
    args: list[str],
    log: Path,
    env: dict[str, str] | None = None,
    *,
    ready: str | None = None,
    ready_status: int | None = 200,
) -> Iterator[subprocess.Popen[bytes]]:
    """Run `args` with output to `log`. The environment is the test's, plus `env`, minus KUBERNETES_*:
    the process is not in a cluster, whatever runs the tests (a router must not look for a token).
    With `ready`: yields only once this process itself answers `ready_status` there (any when None),
    and fails at once if it exits first (wait_http with `process`, which says why)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("KUBERNETES_")}
    with log.open("wb") as out:
        proc = subprocess.Popen(args, env={**base, **(env or {})}, stdout=out, stderr=subprocess.STDOUT)
    try:
        if ready is not None:
            wait_http(ready, status=ready_status, process=proc)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_http(
    url: str,
    timeout: float = STARTUP_TIMEOUT,
    status: int | None = 200,
    process: subprocess.Popen[bytes] | None = None,
) -> None:
    """Until `url` answers `status` (any status when None). With `process`: only once that process
    listens on the URL's port itself, and fail at once if it exits. Why: free_port's port can be taken
    by another test's server between the pick and the bind; the process then exits ("address already
    in use") while the other server answers, and the test talks to the wrong one (a CI run of
    2026-12-06: the restarted joiner of test_stream_joiner.py exited so, and a reset came back)."""
    port = httpx.URL(url).port
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the server for {url} exited with {process.returncode} before answering")
        try:
            response = httpx.get(url, timeout=1.0)
            answered = status is None or response.status_code == status
            if answered and (process is None or port is None or listens(process.pid, port)):
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"{url} did not answer {status or 'at all'} within {timeout:.0f}s")


def listens(pid: int, port: int) -> bool:
    """Whether process `pid` holds a TCP socket listening on `port` (Linux: /proc/net/tcp{,6} for the
    listening sockets' inodes, /proc/<pid>/fd for the process's own)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if len(fields) > 9 and fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(f"socket:[{fields[9]}]")
    try:
        fds = list(Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return False
    for fd in fds:
        try:
            if os.readlink(fd) in inodes:
                return True
        except OSError:
            continue
    return False
