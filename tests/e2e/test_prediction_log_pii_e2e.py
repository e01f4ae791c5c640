"""The personal-data search of issue 14 on the local cluster (real node, the serving image, the
chart-installed operator): a ModelDeployment with the prediction log on (stdout sink, every request
sampled, the HMAC key in a Secret; `at_mentions` pseudonymised, `issues_viewed` dropped,
`number_of_projects` kept, the sticky key `X-User-Id`) is sent requests, through the router and
straight to its model servers, whose policy-covered fields and sticky key hold values unique to the
request (markers), refused requests carrying markers among them, while a canary is rolled out and
promoted (so the operator scrapes the servers and routers and writes analysis, Events and status
as markers flow). Then every place a marker could land is searched:

- every container log of every pod in the namespace (model servers of both revisions, the router:
  their stdout is also the sink) and the operator's own log since the test began;
- /metrics of every container port of every pod in the namespace;
- every Event in the cluster;
- what the node (kubelet, containerd) and the control plane logged meanwhile (the local cluster's
  log files);
- the ModelDeployment object, status included.

Zero hits of a pseudonymised, dropped or sticky-key marker anywhere; the kept field's markers in no
place but the servers' log lines. The search is shown to find what is there: every kept marker of an
answered request is found in the servers' records, and each pseudonymised value appears there as its
HMAC with the Secret's key (and each sticky key in the router's records).

Floats are searched as numbers, not as one spelling: every decimal number in the searched text
(`918273.5`, `9.182735e+05`, `918273.50`) is parsed and looked up in the marker sets. The markers
are exact in float32 (at most 22 significant bits), so any printing of them parses back exactly;
integer spellings are not searched (a 32-hex-digit HMAC holds six-digit runs by chance), which is
why every marker has a fractional part. String markers share a stem (`pii-marker-`), searched
case-insensitively, so a truncated or re-cased copy is found too.

The model servers' inputs are the churn bundle's 14 features (tests/integration/serving/
test_prediction_log_personal_data.py does the same search on processes without a cluster)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from kubernetes import client

from modeldeploy_testcluster.layout import Layout

from cluster_helpers import SERVING, create_mdep, get_mdep, wait_for
from operator_fixtures import OPERATOR_PODS
from rollout_helpers import dump, model, ready_on, set_model, status
from traffic import ready_endpoints

# The session's first test also waits for the cluster lock and builds the images (pytest-timeout
# counts that setup).
pytestmark = [
    pytest.mark.cluster,
    pytest.mark.slow,
    pytest.mark.usefixtures("operator_release"),
    pytest.mark.timeout(1800),
]

FEATURES = [
    "number_of_projects", "number_of_issues", "number_of_invites", "w1_active_users",
    "w1_max_active_users", "issues_updated", "issues_commented", "issues_assigned", "at_mentions",
    "issues_viewed", "issues_completed", "mobile_usage", "sprint_started", "sprint_finished",
]  # fmt: skip  # the churn bundle's inputs, in order
KEEP, PSEUDONYMISE, DROP = "number_of_projects", "at_mentions", "issues_viewed"
STICKY_HEADER = "X-User-Id"
SECRET, SECRET_KEY = "churn-predlog", "hmac-key"
STEM = "pii-marker-"
SERVER, ROUTER = "model-server", "router"  # app.kubernetes.io/component of the pods
# Three disjoint ranges, float32-exact with a fraction (see the module docstring), far from any
# number the test or the pods print otherwise (latencies, times, PSI, counters).
KEPT_BASE, PSEUDO_BASE, DROPPED_BASE = 736_451.75, 918_273.5, 827_364.25
MAX_REQUESTS = 4_000  # below 2**22 - base: still exact in float32
NUMBER = re.compile(rb"\d+\.\d+(?:[eE][-+]?\d+)?")


def kept(i: int) -> float:
    return KEPT_BASE + i


def pseudonymised(i: int) -> float:
    return PSEUDO_BASE + i


def dropped(i: int) -> float:
    return DROPPED_BASE + i


def user(i: int) -> str:
    return f"{STEM}user-{i:05d}@example.com"


def row(i: int) -> list[float]:
    values = [kept(i), 35, 1, 4, 6, 20, 8, 17, pseudonymised(i), dropped(i), 9, 6.5, 2, 1]
    assert len(values) == len(FEATURES)
    return values


def v2_body(i: int) -> dict[str, Any]:
    return {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, len(FEATURES)], "data": row(i)}]}


def bad_request(i: int) -> tuple[str, bytes]:
    """A refused request carrying request i's markers (path, body), one of five kinds: a string where
    a number belongs, a malformed body, a per-feature tensor of the wrong type, the wrong shape, a V1
    instance (an error message once echoed the value)."""
    kind = i % 5
    if kind == 0:
        data: list[Any] = [*row(i)[:8], user(i), *row(i)[9:]]
        return "/v2/models/churn/infer", json.dumps(
            {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 14], "data": data}]}
        ).encode()
    if kind == 1:
        return "/v2/models/churn/infer", f'{{"inputs": [{{"data": [{pseudonymised(i)}, "{user(i)}"'.encode()
    if kind == 2:
        return "/v2/models/churn/infer", json.dumps(
            {"inputs": [{"name": PSEUDONYMISE, "datatype": "BYTES", "shape": [1], "data": [user(i)]}]}
        ).encode()
    if kind == 3:
        return "/v2/models/churn/infer", json.dumps(
            {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 13], "data": row(i)[1:]}]}
        ).encode()
    instance = dict(zip(FEATURES, row(i), strict=True)) | {PSEUDONYMISE: user(i)}
    return "/v1/models/churn:predict", json.dumps({"instances": [instance]}).encode()


@dataclass(frozen=True)
class Sent:
    i: int
    request_id: str
    status: int  # 0: no answer
    bad: bool
    direct: bool  # straight to a model server, not through the router


def token(key: bytes, value: Any) -> str:
    """The log's pseudonym (docs/serving.md#prediction-log): HMAC-SHA256 of the value's JSON with the
    Secret's key, 32 hex digits."""
    canonical = json.dumps(value, separators=(",", ":")).encode()
    return "hmac:" + hmac.new(key, canonical, hashlib.sha256).hexdigest()[:32]


def spec(store: str, bundles: Path) -> dict[str, Any]:
    return {
        "apiVersion": "modeldeploy.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "churn"},
        "spec": {
            "model": model(store, bundles, "1"),
            "replicas": 1,
            "traffic": {"stickyKey": {"header": STICKY_HEADER}},
            "rollout": {
                "strategy": "Canary",
                "steps": [{"setWeight": 50}, {"analysis": {"duration": "10s"}}],
                # The refused requests count as errors: about 1 in 10 here.
                "analysis": {
                    "interval": "5s",
                    "minSamples": 10,
                    "failureLimit": 0,
                    "checks": [{"name": "errors", "type": "errorRate", "threshold": {"max": 0.5}}],
                },
                "progressDeadlineSeconds": 600,
                # The previous stable's pods stay until the search has read their logs.
                "scaleDownDelaySeconds": 3600,
            },
            "drift": {"windowRows": 50, "windowSeconds": 5},
            "predictionLog": {
                "sampleRate": 1,
                "sink": "stdout",
                "pii": {"drop": [DROP], "pseudonymise": [PSEUDONYMISE], "keep": [KEEP]},
                "hmacKeySecret": {"name": SECRET, "key": SECRET_KEY},
            },
        },
    }


class MarkerTraffic:
    """Requests i = 0, 1, 2, ... through the router's ready pods (found from its EndpointSlices: no
    kube-proxy on the local cluster), about `rate` a second; every 10th is a refused request. Also
    notes every pod of the namespace it sees, so the search can tell none went unread."""

    def __init__(self, api: client.ApiClient, namespace: str, rate: float = 12) -> None:
        self.api, self.namespace, self.rate = api, namespace, rate
        self.sent: list[Sent] = []
        self.pods_seen: set[str] = set()
        self.next = 0
        self._endpoints: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=f, daemon=True) for f in (self._refresh, self._send)]

    def __enter__(self) -> MarkerTraffic:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=15)

    def _refresh(self) -> None:
        core = client.CoreV1Api(self.api)
        while not self._stop.wait(0.5):
            try:
                self._endpoints = ready_endpoints(self.api, self.namespace, "churn")
                self.pods_seen |= {p.metadata.name for p in core.list_namespaced_pod(self.namespace).items}
            except Exception:
                continue

    def _send(self) -> None:
        with httpx.Client(timeout=10) as http:
            while not self._stop.is_set() and self.next < MAX_REQUESTS:
                started = time.monotonic()
                endpoints = self._endpoints
                if endpoints:
                    i = self.next
                    self.next += 1
                    self.sent.append(send(http, endpoints[i % len(endpoints)], i, direct=False))
                self._stop.wait(max(0.0, 1 / self.rate - (time.monotonic() - started)))


def send(http: httpx.Client, base: str, i: int, *, direct: bool) -> Sent:
    bad = i % 10 == 9
    # Half the callers send their own request id, the others get the router's (the server logs the
    # router's: the records join either way). Straight to a server, the server makes its own.
    request_id = f"pii-{i:05d}" if i % 2 else ""
    headers = {STICKY_HEADER: user(i), "content-type": "application/json"}
    if request_id:
        headers["x-request-id"] = request_id
    path, body = bad_request(i) if bad else ("/v2/models/churn/infer", json.dumps(v2_body(i)).encode())
    try:
        answer = http.post(f"{base}{path}", content=body, headers=headers)
    except httpx.HTTPError:
        return Sent(i, request_id, 0, bad, direct)
    return Sent(i, request_id, answer.status_code, bad, direct)


def numbers(text: bytes) -> set[float]:
    return {float(m) for m in NUMBER.findall(text)}


def records(text: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith(b'{"request_id"')]


def component(pod: Any) -> str:
    return str((pod.metadata.labels or {}).get("app.kubernetes.io/component", "other"))


def pod_logs(core: client.CoreV1Api, namespace: str, pods: Iterable[Any]) -> dict[str, bytes]:
    """Every container's whole log (init containers and a restarted container's previous run too),
    by `log <component> <namespace>/<pod>/<container>`."""
    found: dict[str, bytes] = {}
    for pod in pods:
        statuses = [*(pod.status.init_container_statuses or []), *(pod.status.container_statuses or [])]
        for container in statuses:
            for previous in [False, True] if container.restart_count else [False]:
                text = core.read_namespaced_pod_log(
                    pod.metadata.name,
                    namespace,
                    container=container.name,
                    previous=previous,
                    _preload_content=False,
                ).data
                where = f"log {component(pod)} {namespace}/{pod.metadata.name}/{container.name}"
                found[where + " (previous)" * previous] = text
    return found


def of(found: dict[str, bytes], what: str) -> bytes:
    """The logs of one component, joined."""
    return b"\n".join(text for where, text in found.items() if where.startswith(f"log {what} "))


def pod_metrics(namespace: str, pods: Iterable[Any]) -> dict[str, bytes]:
    found: dict[str, bytes] = {}
    with httpx.Client(timeout=10) as http:
        for pod in pods:
            for container in pod.spec.containers:
                for port in container.ports or []:
                    answer = http.get(f"http://{pod.status.pod_ip}:{port.container_port}/metrics")
                    assert answer.status_code == 200, (pod.metadata.name, port.container_port, answer.text)
                    found[f"/metrics {namespace}/{pod.metadata.name}:{port.container_port}"] = answer.content
    return found


def test_no_personal_data_marker_reaches_logs_metrics_events_or_status(
    local_cluster: Layout,
    kube_api: client.ApiClient,
    namespace: str,
    model_store: str,
    churn_bundles: Path,
    operator_release: str,
) -> None:
    try:
        _scenario(local_cluster, kube_api, namespace, model_store, churn_bundles, operator_release)
    except BaseException:
        dump(kube_api, namespace)
        # The first run's router crashed at start: its log said why (the pods' logs go with the namespace).
        core = client.CoreV1Api(kube_api)
        for where, text in pod_logs(core, namespace, core.list_namespaced_pod(namespace).items).items():
            print(where, text[-1500:].decode(errors="replace"))
        raise


def _scenario(
    cluster: Layout,
    kube_api: client.ApiClient,
    namespace: str,
    store: str,
    bundles: Path,
    operator_namespace: str,
) -> None:
    began = time.time()
    # The node's and the control plane's own logs (kubelet, containerd, API server, ...), from here on.
    node_logs = {log: log.stat().st_size for log in sorted(cluster.logs_dir.glob("*.log"))}
    core = client.CoreV1Api(kube_api)
    key = secrets.token_hex(24).encode()  # a fresh key: no token of this test exists anywhere else
    core.create_namespaced_secret(
        namespace,
        {"metadata": {"name": SECRET}, "data": {SECRET_KEY: base64.b64encode(key).decode()}},
    )
    create_mdep(kube_api, namespace, spec(store, bundles))
    v1 = wait_for("v1 Ready", lambda: ready_on(kube_api, namespace, "1"), timeout=240)["stableRevision"]

    # 1. Markers through the router while a canary (v2) is rolled out, analysed and promoted.
    with MarkerTraffic(kube_api, namespace) as traffic:
        wait_for("answers through the router", lambda: sum(s.status == 200 for s in traffic.sent) >= 30, 120)
        set_model(kube_api, namespace, model(store, bundles, "2"))
        # Every status the operator writes meanwhile is searched too (the analysis readings of a step
        # are replaced by the next ones).
        statuses: set[str] = set()

        def promoted_noting_statuses() -> dict[str, Any] | None:
            statuses.add(json.dumps(status(kube_api, namespace), sort_keys=True))
            return ready_on(kube_api, namespace, "2")

        promoted = wait_for("v2 promoted", promoted_noting_statuses, timeout=480, interval=0.5)
        after = traffic.next
        wait_for("traffic after the promotion", lambda: traffic.next >= after + 30, timeout=60)
    through_router = list(traffic.sent)
    v2 = promoted["stableRevision"]
    assert v2 != v1
    assert promoted["history"][-1]["outcome"] == "Promoted"

    # 2. Markers straight to each model server (both revisions: v1's pods wait out the scale-down delay).
    servers = core.list_namespaced_pod(namespace, label_selector=SERVING.format("churn")).items
    revisions = {p.metadata.labels.get("modeldeploy.io/revision") for p in servers}
    assert {v1, v2} <= revisions, revisions
    direct: list[Sent] = []
    with httpx.Client(timeout=10) as http:
        for n, pod in enumerate(servers):
            for j in range(20):
                i = traffic.next + n * 20 + j
                direct.append(send(http, f"http://{pod.status.pod_ip}:8080", i, direct=True))
    assert all(s.status == 200 for s in direct if not s.bad), [s for s in direct if s.status != 200]
    assert all(400 <= s.status < 500 for s in direct if s.bad), [s for s in direct if s.bad]

    sent = through_router + direct
    answered = [s for s in through_router if s.status == 200 and not s.bad]
    refused = [s for s in sent if s.bad]
    assert len(answered) >= 60, len(answered)
    # A refused request is a client error, at the router as at the server: none got through.
    assert {s.status // 100 for s in refused} == {4}, {s.status for s in refused}
    assert all(s.status == 200 for s in through_router if not s.bad), "every good request answered"
    ok = [s for s in sent if s.status == 200]

    # 3. The sink is complete (its records are written by a background thread): every answered
    #    request's kept marker is in the servers' logs, and the router logged every request it answered.
    def complete() -> dict[str, bytes] | None:
        found = pod_logs(core, namespace, core.list_namespaced_pod(namespace).items)
        done = {kept(s.i) for s in ok} <= numbers(of(found, SERVER)) and len(
            records(of(found, ROUTER))
        ) >= len(through_router)
        return found if done else None

    found_logs = wait_for("every record in the sink", complete, timeout=120, interval=2)

    # 4. The sink holds what the policy keeps, and nothing else.
    server_records, router_records = records(of(found_logs, SERVER)), records(of(found_logs, ROUTER))
    assert router_records
    assert server_records
    by_kept = {r["inputs"][KEEP][0]: r for r in server_records if r["status"] == "200"}
    for s in ok:
        record = by_kept[kept(s.i)]
        assert set(record["inputs"]) == {KEEP, PSEUDONYMISE}, record  # the dropped field is gone
        assert record["inputs"][PSEUDONYMISE] == [token(key, pseudonymised(s.i))], record
        if s.request_id:
            assert record["request_id"] == s.request_id
    assert all(r["inputs"] == {} for r in server_records if r["status"] != "200")  # refused: no inputs
    sticky_tokens = {r.get("sticky_key") for r in router_records}
    assert {token(key, user(s.i)) for s in through_router} <= sticky_tokens
    assert {r["revision"] for r in router_records if r["status"] == "200"} == {v1, v2}

    # 5. The search: every pod log (again, now that all is written), the operator's log, every
    #    /metrics, every Event, the ModelDeployment.
    pods = core.list_namespaced_pod(namespace).items
    assert traffic.pods_seen <= {p.metadata.name for p in pods}, "a pod went before its log was read"
    searched: dict[str, bytes] = pod_logs(core, namespace, pods)
    operators = core.list_namespaced_pod(operator_namespace, label_selector=OPERATOR_PODS).items
    for pod in operators:
        for container in pod.spec.containers:
            since = max(1, int(time.time() - began) + 5)
            searched[f"log operator {operator_namespace}/{pod.metadata.name}/{container.name}"] = (
                core.read_namespaced_pod_log(
                    pod.metadata.name,
                    operator_namespace,
                    container=container.name,
                    since_seconds=since,
                    _preload_content=False,
                ).data
            )
    for log, start in node_logs.items():
        with log.open("rb") as handle:
            handle.seek(start)
            searched[f"cluster log {log.name}"] = handle.read()
    searched |= pod_metrics(namespace, pods)
    events = core.list_event_for_all_namespaces().items
    searched["Events"] = json.dumps(kube_api.sanitize_for_serialization(events)).encode()
    searched["ModelDeployment"] = json.dumps(get_mdep(kube_api, namespace, "churn")).encode()
    assert any(e.involved_object.name == "churn" and e.reason == "RolloutStepCompleted" for e in events)
    searched["status during the rollout"] = "\n".join(sorted(statuses)).encode()
    checks = [c for text in statuses for c in json.loads(text).get("analysis", {}).get("checks", [])]
    assert any(c["name"] == "errors" and c["result"] == "Pass" for c in checks), (
        "the analysis wrote its readings"
    )

    secret_numbers = {f(s.i) for s in sent for f in (pseudonymised, dropped)}
    kept_numbers = {kept(s.i) for s in sent}
    stem = STEM.encode()
    hits: list[tuple[str, str]] = []
    for where, text in searched.items():
        in_sink = where.startswith(f"log {SERVER} ")
        seen = numbers(text)
        hits += [(where, f"{v!r}") for v in sorted(seen & secret_numbers)]
        if not in_sink:  # kept values belong in the servers' records only
            hits += [(where, f"kept {v!r}") for v in sorted(seen & kept_numbers)]
        lowered = text.lower()
        at = lowered.find(stem)
        if at >= 0:
            hits.append((where, text[max(0, at - 80) : at + 80].decode(errors="replace")))
    sizes = {k: len(v) for k, v in searched.items()}
    print(
        f"\npii e2e: {len(sent)} requests ({len(through_router)} through the router, {len(direct)} direct, "
        f"{len(refused)} refused), {len(searched)} texts searched, {sum(sizes.values())} bytes"
    )
    assert hits == [], hits[:20]
