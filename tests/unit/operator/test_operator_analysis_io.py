"""Analysis I/O bounds without a network: the Prometheus allow-list, the measurement pool, messages."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import httpx
import pytest

from modeldeploy_operator.analysis import (
    AddressPolicy,
    AnalysisSources,
    AnalysisTarget,
    BuiltinScrapeSource,
    MeasurementPool,
)
from modeldeploy_operator.analysis.fetch import FetchError, FetchLimits, fetch, sanitize
from modeldeploy_operator.analysis.prometheus import parse_answer
from modeldeploy_operator.config import OperatorSettings
from modeldeploy_operator.domain.spec import Analysis, Check, Threshold

TARGET = AnalysisTarget("ml", "churn", "default", "c0ffee", "1b9e04")


def _check(kind: str, query: str | None = None) -> Check:
    return Check(name=kind.lower(), type=kind, threshold=Threshold(max=1), query=query)  # type: ignore[arg-type]


# --- allow-list ----------------------------------------------------------------------------------

ALLOWED = AddressPolicy(("http://prometheus.monitoring:9090", "https://thanos.example.com/prom"))


@pytest.mark.parametrize(
    "address",
    [
        "http://prometheus.monitoring:9090",
        "http://PROMETHEUS.monitoring:9090/",
        "http://prometheus.monitoring:9090/sub/path",
        "https://thanos.example.com:443/prom",
        "https://thanos.example.com/prom/api",
    ],
)
def test_allowed_addresses(address: str) -> None:
    assert ALLOWED.refusal(address) is None


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("http://169.254.169.254", "not in the operator's allow-list"),
        ("http://prometheus.monitoring:9091", "not in the operator's allow-list"),
        ("https://prometheus.monitoring:9090", "not in the operator's allow-list"),
        ("http://thanos.example.com/prom", "not in the operator's allow-list"),  # scheme differs
        ("https://thanos.example.com/promx", "not in the operator's allow-list"),  # not at a / boundary
        ("https://thanos.example.com/", "not in the operator's allow-list"),
        ("http://prometheus.monitoring:9090.evil.com", "not a valid URL"),
        ("http://user:secret@prometheus.monitoring:9090", "credentials in the address"),
        ("http://prometheus.monitoring:9090/?x=1", "a query or fragment"),
        ("file:///etc/passwd", "not an http(s) URL"),
        ("gopher://prometheus.monitoring:9090", "not an http(s) URL"),
    ],
)
def test_refused_addresses_say_why_without_echoing_secrets(address: str, why: str) -> None:
    refusal = ALLOWED.refusal(address)
    assert refusal is not None
    assert why in refusal
    assert "secret" not in refusal
    assert "analysis.prometheus.allowedAddresses" in refusal or "refused" in refusal


def test_an_empty_list_allows_nothing() -> None:
    refusal = AddressPolicy().refusal("http://prometheus:9090")
    assert refusal is not None
    assert "disabled" in refusal


def test_a_malformed_entry_fails_at_start_up() -> None:
    with pytest.raises(ValueError, match="allowed Prometheus address"):
        AddressPolicy(("prometheus:9090",))
    with pytest.raises(ValueError, match="allowed Prometheus address"):
        OperatorSettings(prometheus_allowed_addresses="http://ok:9090,nonsense")  # type: ignore[arg-type]
    settings = OperatorSettings(prometheus_allowed_addresses="http://a:9090, https://b/prom")  # type: ignore[arg-type]
    assert settings.prometheus_allowed_addresses == ("http://a:9090", "https://b/prom")


def test_a_refused_address_is_never_requested() -> None:
    requested: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        requested.append(request)
        return httpx.Response(
            200, json={"status": "success", "data": {"resultType": "scalar", "result": [0, "1"]}}
        )

    scrape = BuiltinScrapeSource(httpx.Client(transport=httpx.MockTransport(handler)))
    sources = AnalysisSources(scrape, policy=ALLOWED)
    checks = (_check("prometheus", "up"), _check("errorRate"))
    analysis = Analysis.model_validate(
        {"interval": "30s", "checks": checks, "prometheus": {"address": "http://169.254.169.254/latest"}}
    )
    readings = sources.read(analysis, checks, TARGET)
    assert requested == []  # neither Prometheus nor (the built-in checks go to Prometheus too) a pod
    assert all(r.value is None for r in readings)
    assert all("169.254.169.254:80 is not in the operator's allow-list" in r.detail for r in readings)
    assert all("latest" not in r.detail for r in readings)


# --- what the remote says, in status -------------------------------------------------------------


def test_sanitize_keeps_short_printable_text() -> None:
    assert sanitize("parse error\n at char 3\x1b[31m") == "parse error at char 3 [31m"
    assert len(sanitize("x" * 10_000)) == 160
    assert sanitize("é<b>") == "<b>"  # non-ASCII becomes a space, trimmed


def test_a_prometheus_error_reaches_status_only_short_and_printable() -> None:
    answer = {"status": "error", "errorType": "bad_data\n" * 50, "error": "\x00" + "A" * 100_000}
    error = parse_answer(answer).error
    assert error is not None
    assert len(error) < 250
    assert error.isprintable()
    malformed = {"status": "success", "data": {"resultType": "vector", "result": [{"value": [0, "SECRET"]}]}}
    assert "SECRET" not in str(parse_answer(malformed).error)


def test_fetch_failures_never_carry_the_url() -> None:
    def refused(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError(f"cannot reach {request.url}", request=request)

    client = httpx.Client(transport=httpx.MockTransport(refused))
    url = "http://user:hunter2@10.0.0.1:9090/api/v1/query?X-Amz-Signature=abc"
    with pytest.raises(FetchError) as raised:
        fetch(client, url, FetchLimits(1.0, 1024))
    assert "hunter2" not in str(raised.value)
    assert "Signature" not in str(raised.value)


def test_fetch_refuses_redirects_compression_and_declared_oversize() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/redirect":
            return httpx.Response(302, headers={"Location": "http://169.254.169.254/"})
        if path == "/gzip":
            return httpx.Response(200, headers={"Content-Encoding": "gzip"}, content=b"\x1f\x8b")
        return httpx.Response(200, headers={"Content-Length": str(2**31)}, content=b"")

    client = httpx.Client(transport=httpx.MockTransport(handler))
    limits = FetchLimits(1.0, 1024)
    with pytest.raises(FetchError, match="302 redirect not followed"):
        fetch(client, "http://p/redirect", limits)
    with pytest.raises(FetchError, match="compressed answer refused"):
        fetch(client, "http://p/gzip", limits)
    with pytest.raises(FetchError, match="larger than 1024 bytes"):
        fetch(client, "http://p/big", limits)


# --- the pool -------------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def gate() -> Iterator[threading.Event]:
    event = threading.Event()
    yield event
    event.set()  # never leave a worker blocked


def test_poll_starts_then_returns_the_result_once(gate: threading.Event) -> None:
    pool: MeasurementPool[str] = MeasurementPool(2, 10.0)
    assert pool.poll("a", lambda: "done", lambda s: "late") is None  # started, not waited for
    assert pool.wait("a", 10)
    assert pool.poll("a", lambda: "again", lambda s: "late") == "done"
    assert pool.poll("a", lambda: "again", lambda s: "late") is None  # a new measurement
    pool.close()


def test_a_hanging_measurement_blocks_neither_the_caller_nor_other_keys(gate: threading.Event) -> None:
    clock = Clock()
    pool: MeasurementPool[str] = MeasurementPool(2, 10.0, clock=clock)
    assert (
        pool.poll("hangs", lambda: "never" if gate.wait(60) else "x", lambda s: f"late after {s:g}s") is None
    )
    assert pool.poll("fine", lambda: "ok", lambda s: "late") is None
    assert pool.wait("fine", 10)
    assert pool.poll("fine", lambda: "ok", lambda s: "late") == "ok"
    assert pool.poll("hangs", lambda: "x", lambda s: "late") is None  # still within its deadline
    clock.now += 10.0
    assert pool.poll("hangs", lambda: "x", lambda s: f"late after {s:g}s") == "late after 10s"
    assert pool.running() == 1  # given up, but its worker still counts until it ends
    gate.set()
    pool.close()


def test_the_pool_starts_no_more_than_max_jobs(gate: threading.Event) -> None:
    pool: MeasurementPool[str] = MeasurementPool(1, 10.0, max_jobs=2)
    for key in ("a", "b", "c"):
        assert pool.poll(key, lambda: "x" if gate.wait(60) else "y", lambda s: "late") is None
    assert pool.running() == 2  # "c" was not started: its object asks again later
    gate.set()
    assert pool.wait("a", 10)
    assert pool.wait("b", 10)
    pool.close()


def test_sources_measure_returns_at_once_and_inconclusive_on_timeout(gate: threading.Event) -> None:
    def hang(request: httpx.Request) -> httpx.Response:
        gate.wait(60)
        raise httpx.ConnectError("gone", request=request)

    clock = Clock()
    pool: MeasurementPool[list] = MeasurementPool(2, 5.0, clock=clock)  # type: ignore[type-arg]
    scrape = BuiltinScrapeSource(httpx.Client(transport=httpx.MockTransport(hang)))
    sources = AnalysisSources(scrape, pool=pool)
    checks = (_check("errorRate"),)
    analysis = Analysis(interval="30s", checks=checks)
    target = AnalysisTarget("ml", "churn", "default", "c0ffee", canary_endpoints=("10.0.0.1:8080",))
    assert sources.measure(analysis, checks, target) is None
    clock.now += 5.0
    readings = sources.measure(analysis, checks, target)
    assert readings is not None
    assert [(r.value, r.detail) for r in readings] == [(None, "no measurement within the 5s deadline")]
    gate.set()
    pool.close()


# --- the reconciler's call boundary ---------------------------------------------------------------


def test_the_reconciler_never_waits_on_a_measurement(gate: threading.Event) -> None:
    """What runs under the per-object lock (Reconciler._measure) only polls the pool: a scrape that
    hangs does not hold the reconcile; the readings are picked up by a later reconcile."""
    from modeldeploy_operator.domain.resource import ModelDeploymentRef
    from modeldeploy_operator.reconciler import Observation, Reconciler

    from rollout_sim import Sim, rollout_spec

    sim = Sim(rollout_spec("1"))
    sim.step()
    sim.step(1)
    sim.spec = rollout_spec("2")
    sim.step()
    assert sim.status is not None
    canary = sim.status.canary_revision
    assert canary is not None

    def hang(request: httpx.Request) -> httpx.Response:
        gate.wait(60)
        return httpx.Response(200, text="modeldeploy_requests_total 1\n")

    reconciler = Reconciler(None, OperatorSettings())  # type: ignore[arg-type]  # _measure makes no API call
    pool: MeasurementPool[list] = MeasurementPool(1, 30.0)  # type: ignore[type-arg]
    reconciler.analysis = AnalysisSources(
        BuiltinScrapeSource(httpx.Client(transport=httpx.MockTransport(hang))), pool=pool
    )
    owner = ModelDeploymentRef(name="churn", namespace="ml", uid="u")
    seen = Observation(owned={}, deployments=[], ready_endpoints={canary: ["10.0.0.1:8080"]})
    assert reconciler._measure(owner, sim.spec, sim.status, seen, sim.now) is None  # returned, still hanging
    assert reconciler._measure(owner, sim.spec, sim.status, seen, sim.now) is None  # polled, not restarted
    assert pool.running() == 1
    gate.set()
    analysis = sim.spec.rollout.analysis
    assert analysis is not None
    variant = sim.status.rollout_variant or ""
    stable = next(v.revision for v in sim.status.variants if v.name == variant)
    target = AnalysisTarget("ml", "churn", variant, canary, stable)
    assert pool.wait(reconciler.analysis.measurement_key(analysis, analysis.checks, target), 30)
    readings = reconciler._measure(owner, sim.spec, sim.status, seen, sim.now)
    assert readings is not None
    assert [r.check for r in readings] == [c.name for c in analysis.checks]
    pool.close()
