"""Container probes (httpGet, tcpSocket, exec) run against the pod's own IP, with the kubelet's
thresholds: a probe's result flips only after successThreshold or failureThreshold outcomes in a row."""

from __future__ import annotations

import socket
import subprocess
import time
import urllib.error
import urllib.request
from typing import Any


def _port(container: Any, port: int | str) -> int:
    if isinstance(port, int) or str(port).isdigit():
        return int(port)
    for declared in container.ports or []:
        if declared.name == port:
            return int(declared.container_port)
    raise ValueError(f"container {container.name} has no port named {port}")


def run_once(probe: Any, container: Any, pod_ip: str, netns: str) -> bool:
    timeout = probe.timeout_seconds or 1
    try:
        if probe.http_get is not None:
            get = probe.http_get
            host = get.host or pod_ip
            scheme = (get.scheme or "HTTP").lower()
            url = f"{scheme}://{host}:{_port(container, get.port)}{get.path or '/'}"
            request = urllib.request.Request(url, headers={h.name: h.value for h in get.http_headers or []})
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return bool(200 <= response.status < 400)
        if probe.tcp_socket is not None:
            with socket.create_connection(
                (probe.tcp_socket.host or pod_ip, _port(container, probe.tcp_socket.port)), timeout=timeout
            ):
                return True
        if probe._exec is not None:
            result = subprocess.run(
                ["ip", "netns", "exec", netns, *probe._exec.command],
                capture_output=True,
                timeout=timeout,
                check=False,
            )
            return result.returncode == 0
    except (OSError, urllib.error.URLError, subprocess.TimeoutExpired, ValueError):
        return False
    return False  # grpc probes are not emulated: never succeed, so the gap is visible


class ProbeState:
    """Tracks one probe of one container across periods."""

    def __init__(self, probe: Any, started_at: float, initially: bool) -> None:
        self.probe = probe
        self.result = initially
        self.next_at = started_at + (probe.initial_delay_seconds or 0)
        self._successes = 0
        self._failures = 0

    def due(self, now: float) -> bool:
        return now >= self.next_at

    def record(self, ok: bool, now: float) -> bool:
        """Record one outcome; returns the (possibly new) result."""
        self.next_at = now + (self.probe.period_seconds or 10)
        if ok:
            self._successes, self._failures = self._successes + 1, 0
            if self._successes >= (self.probe.success_threshold or 1):
                self.result = True
        else:
            self._failures, self._successes = self._failures + 1, 0
            if self._failures >= (self.probe.failure_threshold or 3):
                self.result = False
        return self.result


def now() -> float:
    return time.monotonic()
