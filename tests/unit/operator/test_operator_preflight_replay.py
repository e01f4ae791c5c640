"""The preflight replay's I/O (operator/analysis/replay.py) against a local HTTP server on 127.0.0.1:
verdicts, the replay header, and bounds (a missing golden set, error answers, an oversized or
malformed golden set, answers of the wrong shape, a server that never answers in time)."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from modeldeploy_contract.preflight import GOLDEN_PATH, REPLAY_BATCH_ROWS, REPLAY_HEADER, GoldenSet
from modeldeploy_operator.analysis.fetch import new_client
from modeldeploy_operator.analysis.replay import MAX_GOLDEN_BYTES, Replayer, ReplayTarget, thresholds_of
from modeldeploy_operator.domain.spec import Preflight

Outputs = Callable[[list[list[float | None]]], list[list[float]]]


def _golden(n: int = 100, *, labels: bool = True) -> GoldenSet:
    inputs: list[list[float | None]] = [[i / n, 1.0 - i / n] for i in range(n)]
    outputs = [[1 - (i / n), i / n] for i in range(n)]
    return GoldenSet(
        features=["a", "b"],
        task="classification",
        classes=[0, 1],
        output="probabilities",
        inputs=inputs,
        outputs=outputs,
        labels=[float(i >= n // 2) for i in range(n)] if labels else None,
    )


def packed(rows: list[list[float | None]]) -> list[list[float]]:
    """The model that was packed: P(1) = a."""
    return [[1 - float(r[0] or 0), float(r[0] or 0)] for r in rows]


def inverted(rows: list[list[float | None]]) -> list[list[float]]:
    """Another model: P(1) = 1 - a (AUC 0 on the golden labels)."""
    return [[float(r[0] or 0), 1 - float(r[0] or 0)] for r in rows]


@dataclass
class Behaviour:
    golden_status: int = 200
    golden_body: bytes | None = None
    model: Outputs = packed
    infer_status: int = 200
    infer_body: bytes | None = None
    delay: float = 0.0
    seen_headers: list[dict[str, str]] = field(default_factory=list)


class _Handler(BaseHTTPRequestHandler):
    behaviour: Behaviour
    golden: GoldenSet

    def log_message(self, *_: Any) -> None:
        pass

    def _send(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the reader stopped at its limit
            self.wfile.write(body)

    def do_GET(self) -> None:
        b = self.behaviour
        if self.path != GOLDEN_PATH:
            self._send(404, b"{}")
            return
        body = b.golden_body if b.golden_body is not None else self.golden.model_dump_json().encode()
        self._send(b.golden_status, body)

    def do_POST(self) -> None:
        b = self.behaviour
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        b.seen_headers.append({k.lower(): v for k, v in self.headers.items()})
        if b.delay:
            time.sleep(b.delay)
        if b.infer_body is not None or b.infer_status != 200:
            self._send(b.infer_status, b.infer_body or b'{"error": "no"}')
            return
        tensor = body["inputs"][0]
        n, width = tensor["shape"]
        rows = [tensor["data"][i * width : (i + 1) * width] for i in range(n)]
        outs = b.model(rows)
        answer = {"outputs": [{"name": "probabilities", "data": [v for row in outs for v in row]}]}
        self._send(200, json.dumps(answer).encode())


@dataclass
class Server:
    endpoint: str
    behaviour: Behaviour


@pytest.fixture
def servers() -> Iterator[Callable[[Behaviour], Server]]:
    started: list[ThreadingHTTPServer] = []

    def start(behaviour: Behaviour, golden: GoldenSet | None = None) -> Server:
        handler = type("H", (_Handler,), {"behaviour": behaviour, "golden": golden or _golden()})
        httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        httpd.daemon_threads = True
        threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        started.append(httpd)
        return Server(f"127.0.0.1:{httpd.server_address[1]}", behaviour)

    yield start
    for httpd in started:
        httpd.shutdown()
        httpd.server_close()


def _target(new: Server, stable: Server | None) -> ReplayTarget:
    return ReplayTarget(
        model="churn",
        variant="default",
        revision="newrev",
        endpoint=new.endpoint,
        stable_revision="oldrev",
        stable_endpoint=stable.endpoint if stable else None,
    )


def _run(new: Server, stable: Server | None, preflight: Preflight | None = None, attempts: int = 0) -> Any:
    with new_client() as client:
        return Replayer(client).run(_target(new, stable), preflight or Preflight(), attempts)


def test_the_packed_model_passes_and_every_request_is_marked_as_a_replay(servers: Any) -> None:
    new, stable = servers(Behaviour()), servers(Behaviour())
    result = _run(new, stable)
    assert result.result == "Passed", result.message
    assert result.rows == 100
    assert result.labelled_rows == 100
    assert result.max_abs_diff == 0
    assert result.stable_revision == "oldrev"
    assert result.new.auc == pytest.approx(1.0)
    assert {c.name for c in result.checks} >= {"outputs-match-bundle", "score-psi", "auc-drop"}
    batches = -(-100 // REPLAY_BATCH_ROWS)
    for server in (new, stable):
        assert len(server.behaviour.seen_headers) == batches
        assert all(h.get(REPLAY_HEADER) == "1" for h in server.behaviour.seen_headers)


def test_a_served_model_that_is_not_the_packed_one_fails_on_the_recorded_outputs(servers: Any) -> None:
    result = _run(servers(Behaviour(model=inverted)), servers(Behaviour(model=inverted)))
    assert result.result == "Failed"
    failed = {c.name for c in result.checks if c.passed is False}
    assert "outputs-match-bundle" in failed
    assert "not the packed one" in result.message
    assert result.max_abs_diff > result.tolerance


def test_a_quality_drop_against_the_stable_fails_with_the_figures(servers: Any) -> None:
    # the new revision is its packed model (outputs match), the stable is better on the labels
    golden = _golden()
    worse = golden.model_copy(update={"outputs": inverted(golden.inputs)})
    new = servers(Behaviour(model=inverted), worse)
    result = _run(new, servers(Behaviour()), Preflight.model_validate({"maxScorePSI": 100}))
    assert result.result == "Failed"
    checks = {c.name: c for c in result.checks}
    assert checks["outputs-match-bundle"].passed is True
    assert checks["auc-drop"].passed is False
    assert checks["auc-drop"].value == pytest.approx(1.0)
    assert result.stable.auc == pytest.approx(1.0)
    assert result.new.auc == pytest.approx(0.0)


def test_without_a_stable_endpoint_it_compares_with_the_recorded_outputs_only(servers: Any) -> None:
    result = _run(servers(Behaviour()), None)
    assert result.result == "Passed"
    assert result.stable is None
    assert result.stable_revision is None
    assert {c.name: c.passed for c in result.checks}["auc-drop"] is None  # no stable: not judged


def test_a_bundle_without_a_golden_set_is_skipped(servers: Any) -> None:
    result = _run(servers(Behaviour(golden_status=404)), None)
    assert result.result == "Skipped"
    assert "no golden set" in result.message


@pytest.mark.parametrize(
    ("behaviour", "why"),
    [
        (Behaviour(golden_status=503, golden_body=b'{"error": "loading"}'), "HTTP 503"),
        (Behaviour(infer_status=500), "HTTP 500"),
        (Behaviour(infer_status=429), "HTTP 429"),
    ],
)
def test_a_replay_that_cannot_complete_is_pending_and_counts_an_attempt(
    servers: Any, behaviour: Behaviour, why: str
) -> None:
    result = _run(servers(behaviour), None, attempts=2)
    assert result.result == "Pending"
    assert result.attempts == 3
    assert why in result.message


def test_an_unreachable_pod_is_pending(servers: Any) -> None:
    server = servers(Behaviour())
    gone = Server("127.0.0.1:9", server.behaviour)  # discard port: nothing listens
    result = _run(gone, None)
    assert result.result == "Pending"
    assert "connection refused" in result.message


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b"not json", "invalid"),
        (b'{"features": [], "task": "classification"}', "invalid"),
        (json.dumps({**json.loads(_golden().model_dump_json()), "outputs": [[0.5]]}).encode(), "invalid"),
    ],
)
def test_a_malformed_golden_set_fails(servers: Any, body: bytes, why: str) -> None:
    result = _run(servers(Behaviour(golden_body=body)), None)
    assert result.result == "Failed"
    assert why in result.message


def test_an_oversized_golden_set_is_refused_without_reading_it_all(servers: Any) -> None:
    big = b" " * (MAX_GOLDEN_BYTES + 10)
    result = _run(servers(Behaviour(golden_body=big)), None)
    assert result.result == "Pending"
    assert "larger than" in result.message


@pytest.mark.parametrize(
    "body",
    [b"[]", b'{"outputs": [{"name": "probabilities", "data": [1, 2, 3]}]}', b'{"outputs": "x"}', b"\xff"],
)
def test_answers_of_the_wrong_shape_fail(servers: Any, body: bytes) -> None:
    result = _run(servers(Behaviour(infer_body=body)), None)
    assert result.result == "Failed"
    assert "do not fit the golden set" in result.message


def test_the_whole_replay_is_bounded_by_the_timeout(servers: Any) -> None:
    slow = servers(Behaviour(delay=0.2))
    clock_start = time.monotonic()
    with new_client() as client:
        # a fake clock that runs 10 s per read: the 5 s budget is gone after the golden set
        ticks = iter(range(0, 10_000, 10))
        replayer = Replayer(client, clock=lambda: float(next(ticks)))
        result = replayer.run(_target(slow, None), Preflight.model_validate({"timeoutSeconds": 5}))
    assert result.result == "Pending"
    assert "ran out of time" in result.message or "within" in result.message
    assert time.monotonic() - clock_start < 5


def test_thresholds_come_from_the_spec() -> None:
    spec = Preflight.model_validate({"maxOutputDiff": 0.01, "maxAUCDrop": 0.005, "minAUC": 0.7})
    t = thresholds_of(spec)
    assert t.max_output_diff == 0.01
    assert t.max_auc_drop == 0.005
    assert t.min_auc == 0.7
    assert thresholds_of(Preflight()).max_output_diff is None  # the tolerance pack recorded


# --- the reconciler's call boundary ---------------------------------------------------------------


def test_the_reconciler_replays_off_the_lock_once_and_retries_a_failed_attempt_later(servers: Any) -> None:
    """Reconciler._preflight only polls its pool: Pending while the replay runs, then the verdict;
    a verdict in status is never replayed; an attempt that could not complete waits 2^attempts s."""
    import datetime as dt

    from modeldeploy_operator.config import OperatorSettings
    from modeldeploy_operator.domain.resource import ModelDeploymentRef
    from modeldeploy_operator.reconciler import Observation, Reconciler

    from rollout_sim import Sim, revision_of, rollout_spec

    sim = Sim(rollout_spec("1", preflight={}))
    sim.step()
    sim.step(1)
    stable = revision_of(sim.spec)
    sim.spec = rollout_spec("2", preflight={})
    new = revision_of(sim.spec)
    slow = servers(Behaviour(delay=0.05))
    reconciler = Reconciler(None, OperatorSettings())  # type: ignore[arg-type]  # _preflight makes no API call
    owner = ModelDeploymentRef(name="churn", namespace="ml", uid="u")
    seen = Observation(
        owned={},
        deployments=sim.observed(),
        ready_endpoints={new: [slow.endpoint], stable: [servers(Behaviour()).endpoint]},
    )
    results, pending = reconciler._preflight(owner, sim.spec, sim.current(), seen, sim.now)
    assert pending
    assert [(r.revision, r.result, r.message) for r in results] == [
        (new, "Pending", "replaying the golden set")
    ]
    key = ("preflight", "ml", "churn", "default", new)
    assert reconciler.preflight_pool.wait(key, 30)
    results, pending = reconciler._preflight(owner, sim.spec, sim.current(), seen, sim.now)
    assert not pending
    (passed,) = results
    assert passed.result == "Passed"
    assert passed.stable_revision == stable
    # the plan keeps it in status; the next reconcile takes it from there without replaying
    sim.step(1, preflight=results)
    calls = len(slow.behaviour.seen_headers)
    results, pending = reconciler._preflight(owner, sim.spec, sim.current(), seen, sim.now)
    assert results == [passed]
    assert not pending
    assert len(slow.behaviour.seen_headers) == calls
    assert reconciler.preflight_pool.running() == 0

    # a pod that cannot answer: Pending with an attempt counted, not retried before 2 s
    broken = Sim(rollout_spec("1", preflight={}))
    broken.step()
    broken.step(1)
    broken.spec = rollout_spec("3", preflight={})
    v3 = revision_of(broken.spec)
    failing = Observation(
        owned={},
        deployments=broken.observed(),
        ready_endpoints={v3: [servers(Behaviour(infer_status=500)).endpoint]},
    )
    reconciler._preflight(owner, broken.spec, broken.current(), failing, broken.now)
    assert reconciler.preflight_pool.wait(("preflight", "ml", "churn", "default", v3), 30)
    (attempt,), pending = reconciler._preflight(owner, broken.spec, broken.current(), failing, broken.now)
    assert pending
    assert (attempt.result, attempt.attempts) == ("Pending", 1)
    assert "HTTP 500" in attempt.message
    broken.step(0, preflight=[attempt])
    (again,), _ = reconciler._preflight(
        owner, broken.spec, broken.current(), failing, broken.now + dt.timedelta(seconds=1)
    )
    assert again == attempt  # backing off: nothing started
    assert reconciler.preflight_pool.running() == 0
    (retry,), _ = reconciler._preflight(
        owner, broken.spec, broken.current(), failing, broken.now + dt.timedelta(seconds=3)
    )
    assert retry.message == "replaying the golden set"
    assert retry.attempts == 1
    reconciler.preflight_pool.close()
