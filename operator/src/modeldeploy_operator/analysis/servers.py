"""Ask each model server what it loaded: one GET of /v2/health/ready per server process.

The answer says which bundle the server loaded (the manifest's version and sha256: the revision's
history records the digests the servers actually run) or why it refused one (reason
ModelVersionMismatch: the manifest names another version than the spec). A server loads once per
process, so a final answer (ready, or failed) is kept for as long as that pod's container does not
restart, and asked again only then: a steady ModelDeployment costs no request at all. The GETs run on
a small pool off the reconcile path (a hung pod never holds a reconcile up); the answer is parsed and
checked by the pure `domain.observed.parse_server_report`, and the reconciler hands the reports to
the planner as observations (`with_server_reports`), never deciding anything here.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import httpx

from modeldeploy_operator.domain.observed import ServerReport, parse_server_report

from .fetch import FetchError, FetchLimits, fetch
from .pool import MeasurementPool

HEALTH_PATH = "/v2/health/ready"
PROBE_LIMITS = FetchLimits(deadline_seconds=2.0, max_bytes=64 * 1024)
"""The server answers a cached dict of a few hundred bytes; the probe kubelet runs every 2 s."""
RETRY_SECONDS = 2.0
"""A server still loading is asked again after this (and the object looked at again meanwhile: a
server that fails to load changes nothing else the operator watches)."""
MAX_BACKOFF_SECONDS = 300.0
"""A server that does not answer is asked again after 2, 4, 8, ... seconds, at most this, and only
when the object is reconciled for another reason: an unreachable pod (a kwok node's) never keeps a
ModelDeployment busy."""

PodKey = tuple[str, int]
"""(pod uid, restarts of its server container): one server process."""


@dataclass(frozen=True)
class ServerPod:
    key: PodKey
    revision: str
    address: str
    """ip:port of the server."""


def probe(client: httpx.Client, pod: ServerPod, limits: FetchLimits = PROBE_LIMITS) -> ServerReport | str:
    """The server's report, or a short reason (made here, never copied from the pod) why there is none."""
    base = pod.address if "://" in pod.address else f"http://{pod.address}"
    try:
        status, body = fetch(client, base.rstrip("/") + HEALTH_PATH, limits)
    except FetchError as error:
        return str(error)
    try:
        data = json.loads(body)
    except ValueError:
        return "not JSON"
    report = parse_server_report(pod.revision, status, data)
    return report if report is not None else f"no health report (HTTP {status})"


class ServerReports:
    """The final reports of the servers of each ModelDeployment, kept while their pods live."""

    def __init__(
        self,
        client: httpx.Client,
        pool: MeasurementPool[ServerReport | str],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.pool = pool
        self.clock = clock
        self._final: dict[str, dict[PodKey, ServerReport]] = {}
        self._retry_at: dict[str, dict[PodKey, tuple[float, int]]] = {}
        """owner -> pod -> (when to ask again, failed attempts so far)."""

    def _probe_of(self, pod: ServerPod) -> Callable[[], ServerReport | str]:
        return lambda: probe(self.client, pod)

    def observe(self, owner: str, pods: Sequence[ServerPod]) -> tuple[list[ServerReport], bool]:
        """Every final report of `pods` known now, and whether one is still awaited (a probe running,
        a server loading): then the caller looks again soon. Pods not listed are forgotten."""
        now = self.clock()
        known, retry = self._final.get(owner, {}), self._retry_at.get(owner, {})
        final = {pod.key: known[pod.key] for pod in pods if pod.key in known}
        retry_at = {pod.key: retry[pod.key] for pod in pods if pod.key in retry}
        pending = False
        for pod in pods:
            if pod.key in final:
                continue
            when, failures = retry_at.get(pod.key, (0.0, 0))
            if now < when:
                pending = pending or failures == 0  # loading: look again; silent: wait for a reason
                continue
            result = self.pool.poll(("server", owner, pod.key), self._probe_of(pod), _timed_out)
            if result is None:  # the probe runs: collect it soon
                pending = True
            elif isinstance(result, ServerReport) and result.final:
                final[pod.key] = result
                retry_at.pop(pod.key, None)
            elif isinstance(result, ServerReport):  # loading
                retry_at[pod.key] = (now + RETRY_SECONDS, 0)
                pending = True
            else:  # no answer: back off, and do not keep the object busy for it
                retry_at[pod.key] = (now + min(2.0 ** (failures + 1), MAX_BACKOFF_SECONDS), failures + 1)
        self._final[owner], self._retry_at[owner] = final, retry_at
        if not pods:
            self._final.pop(owner, None)
            self._retry_at.pop(owner, None)
        return sorted(final.values(), key=lambda r: (r.revision, r.sha256 or "")), pending

    def forget(self, owner: str) -> None:
        """The ModelDeployment is gone: its servers' reports go."""
        self._final.pop(owner, None)
        self._retry_at.pop(owner, None)


def _timed_out(seconds: float) -> str:
    return f"no answer within {seconds:g}s"
