"""Soak on the local cluster (issue 11, "Figures"): load at half capacity for N minutes while canary
rollouts cycle; RSS of the operator, the router and the model servers, and every request's status.

    .venv/bin/python bench/cluster/soak.py --minutes 30 --out /tmp/soak.json
    .venv/bin/python bench/cluster/soak.py --minutes 2                 # smoke: about 4 minutes in all

What it does, in order:

1. joins the machine's local cluster the way a pytest run's workers hold it: the cluster lock
   (/tmp/modeldeploy-cluster.lock) *shared*, joining the run that holds it shared if there is one,
   and the cluster tests' readers-writer lock shared, so other cluster tests of that run go on beside
   the soak while the ones that restart the cluster or change the operator (exclusive) wait for it.
   Brings the cluster up when it is not (and takes it down at the end if it did and no one else holds
   it). Installs the operator chart only when no operator is ready (or with --install);
2. serves the churn bundles v1..v3 (the tests' cached build) on the bridge address and creates, in a
   namespace of its own (`soak-*`, deleted at the end unless --keep), the e2e tests' canary
   ModelDeployment: v1, 2 serving replicas, the built-in router (1 pod), canary steps 25% / pause 8 s
   / 50% / analysis 12 s with an error-rate and a prediction-shift check;
3. capacity: closed loop through the router with --capacity-clients callers for --capacity-seconds
   (bounded in requests too); the soak's rate is half of what was answered per second (or --rate);
4. the soak: open-loop V2 single-row requests at that rate (each due at t0 + i/rate, sent when due
   whatever came back before, at most --max-in-flight outstanding: a due request that finds them all
   busy is not sent and counted as `not_sent`), to the router pods found from the stable Service's
   EndpointSlices (there is no kube-proxy; only addresses in the cluster's pod network are called);
5. meanwhile a rollout cycle every --cycle-seconds (measured from the previous cycle's start; the
   next starts at once when one runs longer): alternately a good canary (the other good model version
   of v1/v2) that must be promoted, and a bad one (v3, whose scores shift: the analysis aborts it),
   after which the spec is set back to the stable revision. Each cycle also changes
   `spec.server.maxBodyBytes` by 1 KiB (bodies are ~2 KB against 16 MiB), so each is a revision never
   seen before: a verdict is kept for its revision (docs/rollouts.md), and the cycles must not depend
   on what an earlier one left in status;
6. every --sample-seconds: RSS (VmRSS summed over the container's processes: the harness's
   container_pids, a process node container's child processes included) of the operator's pods,
   the router's and every serving pod's;
7. after --minutes no cycle starts; a cycle in flight is finished (load still on, at most
   --grace-seconds), then the load stops and a last sample is taken.

Every request's status is recorded. A request is on the *stable path* unless the canary revision of
the cycle in progress answered it (the router's `x-modeldeploy-revision`); a failure with no answer
or no revision header counts as stable. Failed = not 2xx, or no HTTP answer. Each request is also
put in a phase: `step_change` (due within --step-margin seconds of a cycle's spec patch, a canary
weight change seen in status, or the cycle's end), `rollout` (otherwise inside a cycle), `steady`.

Serving pods do not live through the soak: each promotion replaces them. Their RSS is reported per
pod (first and last sample, lifetime); the operator's and the router's pods live through it (a pod
restart shows as a second pod in their lists).

Prints a progress line per sample, then a summary; writes one JSON document (--out; rewritten with
the counts so far at every sample, so an interrupted run leaves its numbers).
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import dataclasses
import fcntl
import http.client
import ipaddress
import itertools
import json
import math
import os
import queue
import random
import sys
import threading
import time
import urllib.parse
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "support"))

from kubernetes import client  # noqa: E402

from modeldeploy_testcluster import controlplane, nodes  # noqa: E402
from modeldeploy_testcluster.layout import Layout, default_layout  # noqa: E402
from modeldeploy_testcluster.pytest_plugin import beside_lock, flocked  # noqa: E402

MIB = 1024 * 1024
NAME = "churn"
ROUTER_PODS = f"modeldeploy.io/deployment={NAME},app.kubernetes.io/component=router"
SERVER_PODS = f"modeldeploy.io/deployment={NAME},app.kubernetes.io/component=model-server"
DEFAULT_MAX_BODY = 16 * MIB
GOOD_VERSIONS = ("1", "2")
BAD_VERSION = "3"


# --- pure: what was recorded, and what it adds up to ------------------------------------------------


@dataclass(frozen=True)
class Sent:
    due: float  # time.monotonic() the request was due (open loop) or started (closed loop)
    latency: float  # seconds from due to the answer
    status: int  # HTTP status; 0: no HTTP answer (or not sent)
    revision: str  # the router's x-modeldeploy-revision ("" when none)
    code: str  # the router's error code of a non-2xx, or the exception's name


@dataclass(frozen=True)
class Cycle:
    """One rollout: `kind` "promote" (a good canary) or "abort" (a bad one, then the spec set back)."""

    number: int
    kind: str
    version: str
    started: float  # monotonic, the spec patch
    ended: float | None = None  # monotonic, settled again (Ready, no canary, the spec's revision)
    outcome: str = ""  # the history entry's outcome ("Promoted", "Aborted"), or what went wrong
    canary_revision: str = ""
    weight_changes: tuple[tuple[float, int], ...] = ()  # (monotonic, canary weight) as seen in status
    decided_s: float | None = None  # patch -> promoted / aborted
    message: str = ""

    def saw_weight(self, at: float, weight: int) -> Cycle:
        if self.weight_changes and self.weight_changes[-1][1] == weight:
            return self
        return dataclasses.replace(self, weight_changes=(*self.weight_changes, (at, weight)))

    def decided(self, at: float, outcome: str, message: str = "") -> Cycle:
        return dataclasses.replace(
            self, decided_s=round(at - self.started, 1), outcome=outcome, message=message
        )

    def settled(self, at: float) -> Cycle:
        return dataclasses.replace(self, ended=at)

    def expected(self) -> bool:
        return (
            self.outcome == ("Promoted" if self.kind == "promote" else "Aborted") and self.ended is not None
        )


@dataclass(frozen=True)
class Sample:
    at: float  # monotonic
    component: str  # operator | router | server
    pod: str
    rss_bytes: int


def status_key(sent: Sent) -> str:
    if sent.status == 0:
        return f"no_answer:{sent.code}"
    return str(sent.status) if not sent.code else f"{sent.status}:{sent.code}"


def ok(sent: Sent) -> bool:
    return 200 <= sent.status < 300


def phase_of(due: float, cycles: Sequence[Cycle], changes: Sequence[float], margin: float) -> str:
    """`step_change`, `rollout` or `steady` (`changes` sorted)."""
    at = bisect.bisect_left(changes, due - margin)
    if at < len(changes) and changes[at] <= due + margin:
        return "step_change"
    if any(c.started <= due <= (c.ended if c.ended is not None else float("inf")) for c in cycles):
        return "rollout"
    return "steady"


def on_canary(sent: Sent, cycles: Sequence[Cycle]) -> bool:
    """Answered by the canary of a cycle in progress at the request's due time (not the stable path)."""
    if not sent.revision:
        return False
    return any(
        c.canary_revision == sent.revision
        and c.started <= sent.due <= (c.ended if c.ended is not None else float("inf"))
        for c in cycles
    )


def change_times(cycles: Sequence[Cycle]) -> list[float]:
    times = []
    for cycle in cycles:
        times.append(cycle.started)
        times += [at for at, _ in cycle.weight_changes]
        if cycle.ended is not None:
            times.append(cycle.ended)
    return sorted(times)


def _percentile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def request_summary(sent: Sequence[Sent], cycles: Sequence[Cycle], margin: float) -> dict[str, Any]:
    """Counts by path (stable / canary), phase and status; failed = not 2xx (not_sent apart)."""
    changes = change_times(cycles)
    by: dict[str, dict[str, Counter[str]]] = {"stable": {}, "canary": {}}
    latencies: dict[str, list[float]] = {"steady": [], "rollout": [], "step_change": []}
    not_sent = 0
    for request in sent:
        if request.status == 0 and request.code == "not_sent":
            not_sent += 1
            continue
        path = "canary" if on_canary(request, cycles) else "stable"
        phase = phase_of(request.due, cycles, changes, margin)
        by[path].setdefault(phase, Counter())[status_key(request)] += 1
        if path == "stable" and ok(request):
            latencies[phase].append(request.latency)
    out: dict[str, Any] = {"not_sent": not_sent}
    for path, phases in by.items():
        total: Counter[str] = Counter()
        for counts in phases.values():
            total.update(counts)
        okays = sum(n for key, n in total.items() if key.startswith("2"))
        out[path] = {
            "sent": sum(total.values()),
            "ok": okays,
            "failed": sum(total.values()) - okays,
            "by_status": dict(sorted(total.items())),
            "by_phase": {
                phase: {
                    "sent": sum(counts.values()),
                    "failed": sum(n for key, n in counts.items() if not key.startswith("2")),
                    "by_status": dict(sorted(counts.items())),
                }
                for phase, counts in sorted(phases.items())
            },
        }
    out["stable_latency_ms"] = {
        phase: {
            "p50": _ms(_percentile(values, 0.5)),
            "p99": _ms(_percentile(values, 0.99)),
            "max": _ms(max(values) if values else None),
        }
        for phase, values in latencies.items()
    }
    return out


def per_minute(sent: Sequence[Sent], started: float) -> list[dict[str, Any]]:
    """Minute by minute from `started` (by due time): requests due, failed, not sent, and the p99
    latency of the answered ones, to tell when a tail or a shortfall happened."""
    minutes: dict[int, list[Sent]] = {}
    for request in sent:
        minutes.setdefault(max(0, int((request.due - started) // 60)), []).append(request)
    out = []
    for minute in sorted(minutes):
        these = minutes[minute]
        not_sent = sum(1 for r in these if r.status == 0 and r.code == "not_sent")
        answered = [r.latency for r in these if ok(r)]
        out.append(
            {
                "minute": minute,
                "due": len(these),
                "failed": sum(1 for r in these if not ok(r)) - not_sent,
                "not_sent": not_sent,
                "p99_ms": _ms(_percentile(answered, 0.99)),
            }
        )
    return out


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(1000 * seconds, 1)


def _mib(value: float) -> float:
    return round(value / MIB, 1)


def rss_summary(samples: Sequence[Sample]) -> dict[str, Any]:
    """Per component: the sum over its pods at the first and last sample time and its maximum, the
    growth between them, and each pod's first / last / max and lifetime (serving pods come and go)."""
    out: dict[str, Any] = {}
    for component in sorted({s.component for s in samples}):
        mine = [s for s in samples if s.component == component]
        totals: dict[float, int] = {}
        for s in mine:
            totals[s.at] = totals.get(s.at, 0) + s.rss_bytes
        times = sorted(totals)
        pods: dict[str, list[Sample]] = {}
        for s in sorted(mine, key=lambda s: s.at):
            pods.setdefault(s.pod, []).append(s)
        per_pod = {
            pod: {
                "first_mib": _mib(series[0].rss_bytes),
                "last_mib": _mib(series[-1].rss_bytes),
                "max_mib": _mib(max(s.rss_bytes for s in series)),
                "growth_mib": _mib(series[-1].rss_bytes - series[0].rss_bytes),
                "sampled_minutes": round((series[-1].at - series[0].at) / 60, 1),
                "samples": len(series),
            }
            for pod, series in pods.items()
        }
        longest = max(per_pod.items(), key=lambda item: item[1]["sampled_minutes"])
        out[component] = {
            "start_mib": _mib(totals[times[0]]),
            "end_mib": _mib(totals[times[-1]]),
            "max_mib": _mib(max(totals.values())),
            "growth_mib": _mib(totals[times[-1]] - totals[times[0]]),
            "pods_seen": len(per_pod),
            "longest_lived": {"pod": longest[0], **longest[1]},
            "pods": per_pod,
        }
    return out


def cycle_summary(cycles: Sequence[Cycle]) -> dict[str, Any]:
    done = [c for c in cycles if c.ended is not None]
    return {
        "started": len(cycles),
        "completed": len(done),
        "as_expected": sum(c.expected() for c in cycles),
        "promoted": sum(c.outcome == "Promoted" for c in cycles),
        "aborted": sum(c.outcome == "Aborted" for c in cycles),
        "cycles": [
            {
                "number": c.number,
                "kind": c.kind,
                "version": c.version,
                "outcome": c.outcome,
                "decided_s": c.decided_s,
                "settled_s": None if c.ended is None else round(c.ended - c.started, 1),
                "weights": [w for _, w in c.weight_changes],
                "canary_revision": c.canary_revision,
                "message": c.message[:200],
            }
            for c in cycles
        ],
    }


# --- the cluster: lock, operator, model store, namespace ------------------------------------------


def _lock_path() -> Path:
    return Path(os.environ.get("MODELDEPLOY_CLUSTER_LOCK", "/tmp/modeldeploy-cluster.lock"))  # noqa: S108


def log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def cluster_turn(keep_cluster: bool) -> Iterator[Layout]:
    """The local cluster, held as a pytest run's worker holds it, shared: the cluster lock shared
    (joining whichever run holds it shared; a session holding it exclusive is waited for), then the
    cluster tests' readers-writer lock shared (through its turnstile, so a waiting exclusive test is
    not starved). A run that wants the cluster exclusive (to restart or stop it) waits for the soak."""
    with _lock_path().open("a") as handle:
        with flocked(beside_lock("guard"), fcntl.LOCK_EX):
            try:
                fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
                got = True
            except BlockingIOError:
                got = False
        if not got:
            log(f"waiting for a session holding the local cluster exclusively ({_lock_path()})")
            fcntl.flock(handle, fcntl.LOCK_SH)
        try:
            layout = default_layout()
            started = False
            with flocked(beside_lock("up"), fcntl.LOCK_EX):
                if not controlplane.is_healthy(layout):
                    log("the local cluster is not up: bringing it up")
                    controlplane.up(layout)
                    started = True
            with beside_lock("tests").open("a") as tests:
                with flocked(beside_lock("turnstile"), fcntl.LOCK_EX):
                    fcntl.flock(tests, fcntl.LOCK_SH)
                try:
                    yield layout
                finally:
                    fcntl.flock(tests, fcntl.LOCK_UN)
            if started and not keep_cluster and os.environ.get("MODELDEPLOY_KEEP_CLUSTER") != "1":
                with contextlib.suppress(BlockingIOError):  # someone else holds it: leave it up
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    controlplane.down(layout)
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_operator(layout: Layout, force: bool) -> None:
    """An installed, ready operator is used as it is (re-installing would restart it under other
    tests); otherwise the chart is installed as the tests install it."""
    from operator_fixtures import RELEASE, RELEASE_NAMESPACE, install_operator

    api = nodes.admin_api(layout)
    try:
        deployment = client.AppsV1Api(api).read_namespaced_deployment(RELEASE, RELEASE_NAMESPACE)
        ready = (deployment.status.ready_replicas or 0) >= 1
    except client.ApiException as error:
        if error.status != 404:
            raise
        ready = False
    if ready and not force:
        log("using the installed operator")
        return
    log("installing the operator chart (this checkout)")
    install_operator(layout, layout.admin_kubeconfig)


def churn_bundles() -> Path:
    from built_cache import cached_build, churn_script

    return cached_build("churn-demo", [], churn_script([]))


@contextlib.contextmanager
def soak_namespace(api: client.ApiClient, keep: bool) -> Iterator[str]:
    name = f"soak-{uuid.uuid4().hex[:8]}"
    core = client.CoreV1Api(api)
    core.create_namespace({"metadata": {"name": name, "labels": {"modeldeploy.io/test": "true"}}})
    try:
        yield name
    finally:
        if keep:
            log(f"namespace {name} kept")
        else:
            with contextlib.suppress(client.ApiException):
                core.delete_namespace(name)


def wait_until(what: str, probe: Callable[[], Any], timeout: float, interval: float = 1.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = probe()
        if found:
            return found
        time.sleep(interval)
    raise TimeoutError(f"no {what} within {timeout:.0f}s")


# --- RSS ------------------------------------------------------------------------------------------


def _vmrss(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


def _descendants(root: int) -> list[int]:
    """The process and its descendants (a process-node container is one host process tree)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parent = int(stat[stat.rindex(")") + 2 :].split()[1])
        children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += children.get(pid, [])
    return found


def container_rss(container_id: str) -> int:
    from cluster_helpers import container_pids

    pids = container_pids(container_id)
    if container_id.startswith("process://"):
        pids = _descendants(pids[0])
    return sum(_vmrss(pid) for pid in pids)


def sample_rss(api: client.ApiClient, namespace: str) -> list[Sample]:
    """One sample of every pod; an API error costs this sample only (logged), not the run."""
    try:
        return _sample_rss(api, namespace)
    except Exception as error:
        log(f"no RSS sample: {type(error).__name__}: {error}")
        return []


def _sample_rss(api: client.ApiClient, namespace: str) -> list[Sample]:
    from operator_fixtures import OPERATOR_PODS, RELEASE_NAMESPACE

    core = client.CoreV1Api(api)
    at = time.monotonic()
    found = []
    for component, ns, selector in (
        ("operator", RELEASE_NAMESPACE, OPERATOR_PODS),
        ("router", namespace, ROUTER_PODS),
        ("server", namespace, SERVER_PODS),
    ):
        for pod in core.list_namespaced_pod(ns, label_selector=selector).items:
            for status in pod.status.container_statuses or []:
                if not (status.container_id and status.state and status.state.running):
                    continue
                try:
                    rss = container_rss(status.container_id)
                except (AssertionError, OSError, IndexError):
                    continue  # gone between the list and the read
                if rss:
                    found.append(Sample(at, component, pod.metadata.name, rss))
    return found


# --- load -------------------------------------------------------------------------------------------


class Endpoints:
    """The router's ready pods, refreshed every 2 s from the stable Service's EndpointSlices (as a
    kube-proxy would); only addresses in the cluster's pod network are ever used."""

    def __init__(self, layout: Layout, api: client.ApiClient, namespace: str) -> None:
        from traffic import ready_endpoints

        self._read: Callable[[], list[str]] = lambda: ready_endpoints(api, namespace, NAME)
        self._network = ipaddress.ip_network(layout.pod_network)
        self.current: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._refresh, daemon=True)

    def _allowed(self, url: str) -> bool:
        host = urllib.parse.urlsplit(url).hostname or ""
        try:
            return ipaddress.ip_address(host) in self._network
        except ValueError:
            return False

    def refresh(self) -> list[str]:
        found = self._read()
        refused = [u for u in found if not self._allowed(u)]
        if refused:
            log(f"not calling addresses outside the pod network: {refused}")
        self.current = [u for u in found if self._allowed(u)]
        return self.current

    def _refresh(self) -> None:
        while not self._stop.wait(2.0):
            with contextlib.suppress(Exception):
                self.refresh()

    def __enter__(self) -> Endpoints:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def request_bodies(bundles: Path) -> list[bytes]:
    from rollout_helpers import rows

    return [
        json.dumps(
            {"inputs": [{"name": "input", "datatype": "FP64", "shape": [1, len(row)], "data": row}]}
        ).encode()
        for row in rows(bundles)
    ]


class Caller:
    """Sends V2 requests through the router pods (round robin) and records each, from any number of
    threads, each with its own connections (the stdlib's http.client, one keep-alive connection per
    router pod).

    Why http.client in threads and not httpx's async client: on this machine, against a trivial local
    ASGI app, httpx.AsyncClient cost 3.5 ms of client CPU per request with 4 connections (248 req/s)
    and 8.0 ms with 64 (106 req/s), http.client in threads 0.34-0.38 ms (1,300-1,500 req/s). With
    httpx the first smoke run's "capacity" (203 req/s) was the client's, and its open loop at half of
    it fell behind (p50 0.33 s from due time, 14% of the due requests found 64 busy callers)."""

    IDLE_RECONNECT = 2.0
    """Seconds after which an idle connection is replaced before use: the router may have closed it
    (keep-alive timeout), and a request written into such a connection fails on the client's side."""

    def __init__(self, endpoints: Endpoints, bodies: list[bytes], users: int = 500) -> None:
        self.endpoints, self.bodies, self.users = endpoints, bodies, users
        self.sent: list[Sent] = []  # list.append is atomic: many threads append, others copy
        self._n = itertools.count()
        self._local = threading.local()

    def _connection(self, url: str) -> http.client.HTTPConnection:
        pool: dict[str, tuple[http.client.HTTPConnection, float]] = self._local.__dict__.setdefault(
            "pool", {}
        )
        found = pool.get(url)
        if found and time.monotonic() - found[1] < self.IDLE_RECONNECT:
            return found[0]
        if found:
            found[0].close()
        parts = urllib.parse.urlsplit(url)
        connection = http.client.HTTPConnection(parts.hostname or "", parts.port or 80, timeout=10)
        pool[url] = (connection, time.monotonic())
        return connection

    def _used(self, url: str, connection: http.client.HTTPConnection, keep: bool) -> None:
        pool = self._local.__dict__.setdefault("pool", {})
        if keep:
            pool[url] = (connection, time.monotonic())
        else:
            connection.close()
            pool.pop(url, None)

    def one(self, due: float) -> None:
        n = next(self._n)
        pods = self.endpoints.current
        if not pods:
            self.sent.append(Sent(due, 0.0, 0, "", "no_router_endpoint"))
            return
        url = pods[n % len(pods)]
        headers = {
            "content-type": "application/json",
            "x-user-id": f"user-{random.randrange(self.users)}",  # noqa: S311 - a load generator's pick
        }
        connection = self._connection(url)
        try:
            connection.request("POST", f"/v2/models/{NAME}/infer", self.bodies[n % len(self.bodies)], headers)
            answer = connection.getresponse()
            body = answer.read()
        except (OSError, http.client.HTTPException) as error:
            self._used(url, connection, keep=False)
            self.sent.append(Sent(due, time.monotonic() - due, 0, "", type(error).__name__))
            return
        self._used(url, connection, keep=not answer.will_close)
        code = ""
        if not 200 <= answer.status < 300:
            with contextlib.suppress(ValueError, AttributeError):
                code = str(json.loads(body).get("code", "")) or ""
        revision = answer.getheader("x-modeldeploy-revision") or ""
        self.sent.append(Sent(due, time.monotonic() - due, answer.status, revision, code))


def measure_capacity(caller: Caller, clients: int, seconds: float, max_requests: int) -> dict[str, Any]:
    """Closed loop: `clients` threads sending back to back for `seconds` (at most `max_requests`)."""
    started, cpu = time.monotonic(), time.process_time()
    budget = itertools.count()

    def loop() -> None:
        while time.monotonic() - started < seconds and next(budget) < max_requests:
            caller.one(time.monotonic())

    threads = [threading.Thread(target=loop, daemon=True) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=seconds + 30)
    elapsed = time.monotonic() - started
    answered = [s for s in caller.sent if ok(s)]
    return {
        "clients": clients,
        "seconds": round(elapsed, 1),
        "sent": len(caller.sent),
        "ok": len(answered),
        "failed": len(caller.sent) - len(answered),
        "ok_per_second": round(len(answered) / elapsed, 1),
        "p50_ms": _ms(_percentile([s.latency for s in answered], 0.5)),
        "p99_ms": _ms(_percentile([s.latency for s in answered], 0.99)),
        "client_cpu_ms_per_request": round(1000 * (time.process_time() - cpu) / max(1, len(caller.sent)), 2),
    }


class OpenLoop:
    """Requests due at t0 + i/rate, each handed when due to an idle one of `max_in_flight` sender
    threads whatever the earlier ones did (a due request that finds none idle is recorded as
    not_sent); at most `max_requests` and `max_seconds` in all; stops by itself or on stop()."""

    def __init__(
        self, caller: Caller, rate: float, max_requests: int, max_seconds: float, max_in_flight: int
    ):
        self.caller, self.rate = caller, rate
        self.max_requests, self.max_seconds, self.max_in_flight = max_requests, max_seconds, max_in_flight
        self._stop = threading.Event()
        self._due: queue.Queue[float | None] = queue.Queue()
        self._idle = threading.Semaphore(max_in_flight)
        self._senders = [threading.Thread(target=self._send, daemon=True) for _ in range(max_in_flight)]
        self._dispatcher = threading.Thread(target=self._dispatch, daemon=True)

    def _dispatch(self) -> None:
        t0 = time.monotonic()
        for i in range(self.max_requests):
            due = t0 + i / self.rate
            if due - t0 > self.max_seconds or self._stop.wait(max(0.0, due - time.monotonic())):
                break
            if self._idle.acquire(blocking=False):
                self._due.put(due)
            else:
                self.caller.sent.append(Sent(due, 0.0, 0, "", "not_sent"))
        for _ in self._senders:
            self._due.put(None)

    def _send(self) -> None:
        while (due := self._due.get()) is not None:
            try:
                self.caller.one(due)
            finally:
                self._idle.release()

    def start(self) -> None:
        for thread in (*self._senders, self._dispatcher):
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._dispatcher.join(timeout=30)
        for thread in self._senders:
            thread.join(timeout=15)


# --- rollout cycles ---------------------------------------------------------------------------------


class Cycler:
    """Starts a rollout every `period` seconds (or at once after a longer one) until stopped; records
    each cycle. A cycle waits at most `timeout` for its verdict and again for settling."""

    def __init__(
        self, api: client.ApiClient, namespace: str, store: str, bundles: Path, period: float, timeout: float
    ) -> None:
        self.api, self.namespace, self.store, self.bundles = api, namespace, store, bundles
        self.period, self.timeout = period, timeout
        self.cycles: list[Cycle] = []
        self.no_new = threading.Event()  # no cycle starts after this is set
        self.idle = threading.Event()  # set while no cycle is in flight
        self.idle.set()
        self.error = ""
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _status(self) -> dict[str, Any]:
        from cluster_helpers import get_mdep

        return dict(get_mdep(self.api, self.namespace, NAME).get("status") or {})

    def _patch(self, version: str, max_body: int) -> None:
        from cluster_helpers import patch_mdep
        from rollout_helpers import model

        spec = {"model": model(self.store, self.bundles, version), "server": {"maxBodyBytes": max_body}}
        patch_mdep(self.api, self.namespace, NAME, {"spec": spec})

    def settled_on(self, version: str) -> dict[str, Any] | None:
        """Ready on `version` with no canary (as the e2e tests' ready_on)."""
        current = self._status()
        settled = (
            current.get("phase") == "Ready"
            and current.get("modelVersion") == version
            and not current.get("canaryRevision")
        )
        return current if settled else None

    def _record(self, cycle: Cycle) -> Cycle:
        self.cycles[-1] = cycle
        return cycle

    def _one(self, number: int, stable: tuple[str, int]) -> tuple[str, int]:
        """One cycle from the stable (version, maxBodyBytes); returns the stable one after it."""
        kind = "promote" if number % 2 == 1 else "abort"
        version = next(v for v in GOOD_VERSIONS if v != stable[0]) if kind == "promote" else BAD_VERSION
        max_body = DEFAULT_MAX_BODY - 1024 * number
        before = max((e.get("revision", 0) for e in self._status().get("history") or []), default=0)
        self._patch(version, max_body)
        cycle = Cycle(number, kind, version, started=time.monotonic())
        self.cycles.append(cycle)
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            current = self._status()
            now = time.monotonic()
            cycle = cycle.saw_weight(now, int(current.get("canaryWeight") or 0))
            if current.get("canaryRevision") and not cycle.canary_revision:
                cycle = dataclasses.replace(cycle, canary_revision=current["canaryRevision"])
            # This cycle's entry: numbered after every entry there was before the patch.
            last = max(current.get("history") or [{}], key=lambda e: e.get("revision", 0))
            if last.get("revision", 0) > before and last.get("outcome") in ("Promoted", "Aborted"):
                cycle = cycle.decided(now, last["outcome"], str(last.get("message") or ""))
                if not cycle.canary_revision:
                    cycle = dataclasses.replace(cycle, canary_revision=str(last.get("hash") or ""))
                break
            self._record(cycle)
            time.sleep(1.0)
        else:
            cycle = cycle.decided(time.monotonic(), "Timeout")
        self._record(cycle)
        if cycle.outcome == "Promoted":
            settle_on = (version, max_body)
        else:  # back to the stable revision (the bad canary, or a good one that did not make it)
            settle_on = stable
            self._patch(*stable)
        try:
            wait_until(f"settled on v{settle_on[0]}", lambda: self.settled_on(settle_on[0]), self.timeout)
        except TimeoutError as error:
            self._record(dataclasses.replace(cycle, message=f"{cycle.message} {error}".strip()))
            raise
        self._record(cycle.settled(time.monotonic()))
        return settle_on

    def _run(self) -> None:
        stable = ("1", DEFAULT_MAX_BODY)
        number = 0
        next_at = time.monotonic()
        while not self.no_new.is_set():
            if self.no_new.wait(max(0.0, next_at - time.monotonic())):
                return
            self.idle.clear()  # before looking at no_new: the main thread looks at them the other way round
            if self.no_new.is_set():
                self.idle.set()
                return
            number += 1
            next_at = time.monotonic() + self.period
            try:
                stable = self._one(number, stable)
            except Exception as error:
                self.error = f"cycle {number}: {type(error).__name__}: {error}"
                log(self.error)
                return
            finally:
                self.idle.set()
            c = self.cycles[-1]
            weights = [w for _, w in c.weight_changes]
            log(f"cycle {c.number} ({c.kind} v{c.version}): {c.outcome} after {c.decided_s} s, {weights}")

    def start(self) -> None:
        self._thread.start()


# --- the run ----------------------------------------------------------------------------------------


def soak_md(store: str, bundles: Path) -> dict[str, Any]:
    from rollout_helpers import canary_md

    body = canary_md(store, bundles, deadline=300)  # pods start slowly on a loaded 2-core machine
    body["spec"]["server"] = {"maxBodyBytes": DEFAULT_MAX_BODY}
    return body


def results(
    args: argparse.Namespace,
    setup: dict[str, Any],
    caller: Caller,
    cycler: Cycler,
    samples: list[Sample],
    started: float,
    final: bool,
) -> dict[str, Any]:
    sent = list(caller.sent)
    cycles = list(cycler.cycles)
    out: dict[str, Any] = {
        "benchmark": "soak",
        "command": " ".join([".venv/bin/python", "bench/cluster/soak.py", *sys.argv[1:]]),
        "final": final,
        **setup,
        "soak_minutes": round((time.monotonic() - started) / 60, 2),
        "requests_due": len(sent),
        "rollouts": cycle_summary(cycles),
        "cycler_error": cycler.error,
        "rss": rss_summary(samples) if samples else {},
        "loadavg": [round(v, 2) for v in os.getloadavg()],
    }
    if final:
        out["requests"] = request_summary(sent, cycles, args.step_margin)
        out["per_minute"] = per_minute(sent, started)
        out["rss_samples"] = [
            {"t": round(s.at - started, 1), "component": s.component, "pod": s.pod, "mib": _mib(s.rss_bytes)}
            for s in samples
        ]
    else:
        out["requests_failed_so_far"] = sum(1 for s in sent if not ok(s) and s.code != "not_sent")
    return out


def write(path: Path, document: dict[str, Any]) -> None:
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(document, indent=2) + "\n")
    temporary.replace(path)


def progress(started: float, caller: Caller, cycler: Cycler, taken: list[Sample]) -> str:
    sent = list(caller.sent)
    failed = sum(1 for s in sent if not ok(s) and s.code != "not_sent")
    rss = Counter[str]()
    for s in taken:
        rss[s.component] += s.rss_bytes
    done = sum(c.ended is not None for c in cycler.cycles)
    return (
        f"t={(time.monotonic() - started) / 60:5.1f} min  requests {len(sent)} failed {failed}  "
        f"cycles {done}/{len(cycler.cycles)}  RSS MiB "
        + " ".join(f"{k}={_mib(v)}" for k, v in sorted(rss.items()))
        + f"  load {os.getloadavg()[0]:.1f}"
    )


def soak(args: argparse.Namespace, layout: Layout) -> dict[str, Any]:
    api = nodes.admin_api(layout)
    ensure_operator(layout, args.install)
    bundles = churn_bundles()
    bodies = request_bodies(bundles)
    from operator_fixtures import serve_folder

    with serve_folder(layout, bundles) as store, soak_namespace(api, args.keep) as namespace:
        from cluster_helpers import create_mdep

        log(f"namespace {namespace}: creating the ModelDeployment (v1, 2 replicas, router)")
        create_mdep(api, namespace, soak_md(store, bundles))
        cycler = Cycler(
            nodes.admin_api(layout), namespace, store, bundles, args.cycle_seconds, args.cycle_timeout
        )
        wait_until("v1 Ready", lambda: cycler.settled_on("1"), timeout=args.ready_timeout)
        with Endpoints(layout, nodes.admin_api(layout), namespace) as endpoints:
            wait_until("a ready router pod", endpoints.refresh, timeout=120)
            setup: dict[str, Any] = {"namespace": namespace, "router_pods": list(endpoints.current)}
            setup["rate_per_second"] = soak_rate(args, endpoints, bodies, setup)
            return run(args, api, namespace, Caller(endpoints, bodies), cycler, setup)


def soak_rate(
    args: argparse.Namespace, endpoints: Endpoints, bodies: list[bytes], setup: dict[str, Any]
) -> float:
    """--rate, or half the measured capacity (recorded in `setup`)."""
    if args.rate:
        return float(args.rate)
    log(f"capacity: {args.capacity_clients} callers, closed loop, {args.capacity_seconds:.0f} s")
    capacity = measure_capacity(
        Caller(endpoints, bodies), args.capacity_clients, args.capacity_seconds, max_requests=50_000
    )
    setup["capacity"] = capacity
    log(f"capacity: {json.dumps(capacity)}")
    if capacity["ok_per_second"] < 2:
        raise SystemExit(f"no capacity to speak of: {capacity}")
    return round(float(capacity["ok_per_second"]) / 2, 1)


def run(
    args: argparse.Namespace,
    api: client.ApiClient,
    namespace: str,
    caller: Caller,
    cycler: Cycler,
    setup: dict[str, Any],
) -> dict[str, Any]:
    """The soak proper: load on, cycles, samples; after --minutes the cycle in flight is finished."""
    rate, seconds = setup["rate_per_second"], 60 * args.minutes
    cap_seconds = seconds + args.grace_seconds
    load = OpenLoop(
        caller,
        rate,
        max_requests=min(args.max_requests, int(rate * cap_seconds) + 1),
        max_seconds=cap_seconds,
        max_in_flight=args.max_in_flight,
    )
    samples: list[Sample] = []
    out = Path(args.out)
    started = time.monotonic()

    def sample() -> None:
        samples.extend(taken := sample_rss(api, namespace))
        log(progress(started, caller, cycler, taken))

    log(f"soak: {rate}/s open loop for {args.minutes} min, a cycle every {args.cycle_seconds:.0f} s")
    load.start()
    sample()
    time.sleep(args.first_cycle_after)
    cycler.start()
    next_sample = started + args.sample_seconds
    while time.monotonic() - started < seconds:
        time.sleep(max(0.0, min(next_sample, started + seconds) - time.monotonic()))
        if time.monotonic() >= next_sample:
            sample()
            next_sample += args.sample_seconds
            write(out, results(args, setup, caller, cycler, samples, started, final=False))
    cycler.no_new.set()
    if not cycler.idle.is_set():
        log("time is up: finishing the cycle in flight (load still on)")
        grace_end = time.monotonic() + args.grace_seconds
        while not cycler.idle.wait(min(args.sample_seconds, max(0.1, grace_end - time.monotonic()))):
            if time.monotonic() >= grace_end:
                log("the cycle in flight did not finish within the grace period")
                break
            sample()
    load.stop()
    sample()
    document = results(args, setup, caller, cycler, samples, started, final=True)
    write(out, document)
    return document


def headline(document: dict[str, Any]) -> str:
    requests, rollouts, rss = document["requests"], document["rollouts"], document["rss"]
    stable = requests["stable"]
    lines = [
        f"soak {document['soak_minutes']} min at {document['rate_per_second']}/s "
        f"(capacity {document.get('capacity', {}).get('ok_per_second', 'not measured')}/s)",
        f"stable path: {stable['sent']} sent, {stable['ok']} ok, {stable['failed']} failed "
        f"{stable['by_status']}",
        "  by phase: "
        + ", ".join(f"{p} {v['sent']} sent / {v['failed']} failed" for p, v in stable["by_phase"].items()),
        f"canary path: {requests['canary']['sent']} sent, {requests['canary']['failed']} failed; "
        f"not sent (client busy): {requests['not_sent']}",
        f"rollouts: {rollouts['started']} started, {rollouts['completed']} completed, "
        f"{rollouts['promoted']} promoted, {rollouts['aborted']} aborted, "
        f"{rollouts['as_expected']} as expected",
    ]
    for component, figures in rss.items():
        longest = figures["longest_lived"]
        lines.append(
            f"RSS {component}: start {figures['start_mib']} end {figures['end_mib']} "
            f"max {figures['max_mib']} "
            f"growth {figures['growth_mib']} MiB ({figures['pods_seen']} pods; longest-lived "
            f"{longest['sampled_minutes']} min: {longest['first_mib']} -> {longest['last_mib']} MiB)"
        )
    return "\n".join(lines)


LIMITS = {
    # option: (lowest, highest); each bounds a loop in count or time, so NaN and infinities are refused
    "minutes": (0.05, 240),
    "rate": (0, 5_000),
    "capacity_seconds": (1, 600),
    "capacity_clients": (1, 64),
    "cycle_seconds": (10, 3_600),
    "first_cycle_after": (0, 3_600),
    "cycle_timeout": (10, 3_600),
    "sample_seconds": (1, 600),
    "grace_seconds": (0, 3_600),
    "step_margin": (0, 60),
    "max_in_flight": (1, 256),
    "max_requests": (1, 10_000_000),
    "ready_timeout": (10, 3_600),
}


def check_args(args: argparse.Namespace) -> str:
    """What is wrong with the options ("" when nothing): checked before the cluster is touched."""
    for name, (low, high) in LIMITS.items():
        value = getattr(args, name)
        if not (math.isfinite(value) and low <= value <= high):
            return f"--{name.replace('_', '-')} must be a number in [{low}, {high}], not {value}"
    return ""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument(
        "--rate", type=float, default=0, help="requests/s (default: half the measured capacity)"
    )
    parser.add_argument("--capacity-seconds", type=float, default=20)
    parser.add_argument("--capacity-clients", type=int, default=4)
    parser.add_argument("--cycle-seconds", type=float, default=150, help="a rollout cycle starts this often")
    parser.add_argument("--first-cycle-after", type=float, default=20)
    parser.add_argument("--cycle-timeout", type=float, default=300, help="for a verdict, and again to settle")
    parser.add_argument("--sample-seconds", type=float, default=30)
    parser.add_argument("--grace-seconds", type=float, default=300, help="to finish the cycle in flight")
    parser.add_argument("--step-margin", type=float, default=3.0)
    parser.add_argument("--max-in-flight", type=int, default=32, help="sender threads")
    parser.add_argument("--max-requests", type=int, default=2_000_000, help="hard cap on requests sent")
    parser.add_argument("--ready-timeout", type=float, default=300)
    parser.add_argument("--out", default="/tmp/soak.json")  # noqa: S108
    parser.add_argument("--install", action="store_true", help="install the chart even if an operator runs")
    parser.add_argument("--keep", action="store_true", help="keep the soak's namespace")
    parser.add_argument("--keep-cluster", action="store_true", help="leave a cluster this run started up")
    return parser


def main() -> int:
    parser = build_parser()
    args = parser.parse_args()
    refused = check_args(args)
    if refused:
        parser.error(refused)
    with cluster_turn(args.keep_cluster) as layout:
        document = soak(args, layout)
    print(headline(document))
    print(json.dumps({k: v for k, v in document.items() if k != "rss_samples"}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
