"""The router as a real process in front of real (fake) model servers: split, stickiness, hot
reload, readiness, shadow, passthrough and metrics."""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any

import httpx
import orjson
import pytest

from router_harness import Cluster, raw_backend

pytestmark = pytest.mark.slow

INFER = "/v2/models/churn/infer"
V2_BODY = b'{"inputs":[{"name":"input","datatype":"FP32","shape":[1,3],"data":[1,2,3]}]}'


def table(canary_percent: int, **extra: Any) -> dict[str, Any]:
    """A hand-written table (no `slots`: the initial layout, canary first): canary r2, stable r1, r3 at 0."""
    canary = canary_percent * 100  # basis points
    return {
        "deployment": {"namespace": "test", "name": "churn"},
        "arms": [
            {"variant": "default", "revision": "r2", "weight_bp": canary, "service": "svc-canary",
             "model_name": "churn", "model_version": "2"},
            {"variant": "default", "revision": "r1", "weight_bp": 10_000 - canary, "service": "svc-stable",
             "model_name": "churn", "model_version": "1"},
            {"variant": "default", "revision": "r3", "weight_bp": 0, "service": "svc-shadow",
             "model_name": "churn"},
        ],
        **extra,
    }  # fmt: skip


def endpoints(rig: Cluster, *, stable2_ready: bool = True, canary_ready: bool = True) -> dict[str, Any]:
    return {
        "svc-stable": [{"address": rig.stable}, {"address": rig.stable2, "ready": stable2_ready}],
        "svc-canary": [{"address": rig.canary, "ready": canary_ready}],
        "svc-shadow": [{"address": rig.shadow}],
    }


def configure(rig: Cluster, config: dict[str, Any], backends: dict[str, Any] | None = None) -> None:
    rig.router.write_endpoints(backends or endpoints(rig))
    time.sleep(0.2)  # several polls of the endpoints file before the table is swapped
    rig.router.write_config(config)
    rig.router.wait_generation()


def arm_of(response: httpx.Response) -> str:
    assert response.status_code == 200, response.text
    return response.headers["x-modeldeploy-revision"]


def requests_total(rig: Cluster, revision: str) -> float:
    sample = f'modeldeploy_router_requests_total{{code="200",revision="{revision}",variant="default"}}'
    return float(rig.router.metric(sample))


def test_weighted_random_split_follows_the_weights(rig: Cluster) -> None:
    configure(rig, table(30))
    before = {r: requests_total(rig, r) for r in ("r1", "r2")}
    n = 2000
    revisions: Counter[str] = Counter()
    backends: Counter[tuple[str, str]] = Counter()
    with httpx.Client(base_url=rig.router.url) as client:
        for _ in range(n):
            response = client.post(INFER, content=V2_BODY)
            revisions[arm_of(response)] += 1
            backends[(response.headers["x-modeldeploy-revision"], response.headers["x-backend"])] += 1
    sigma = (n * 0.3 * 0.7) ** 0.5
    assert revisions["r2"] == pytest.approx(0.3 * n, abs=5 * sigma)
    assert set(backends) == {("r2", "canary"), ("r1", "stable-1"), ("r1", "stable-2")}
    assert backends[("r1", "stable-1")] == pytest.approx(backends[("r1", "stable-2")], abs=2)
    for revision in ("r1", "r2"):  # per-arm metrics count exactly what was served
        assert requests_total(rig, revision) - before[revision] == revisions[revision]
    assert (
        rig.router.metric(
            'modeldeploy_router_request_duration_seconds_count{revision="r2",variant="default"}'
        )
        >= revisions["r2"]
    )


def sticky_assignment(rig: Cluster, keys: list[str]) -> dict[str, str]:
    with httpx.Client(base_url=rig.router.url) as client:
        return {k: arm_of(client.post(INFER, content=V2_BODY, headers={"X-User-Id": k})) for k in keys}


def test_sticky_keys_only_move_into_the_canary_when_its_weight_rises(rig: Cluster) -> None:
    keys = [f"customer-{i}" for i in range(1000)]
    configure(rig, table(10, sticky={"header": "X-User-Id"}))
    at_10 = sticky_assignment(rig, keys)
    assert sticky_assignment(rig, keys[:200]) == {k: at_10[k] for k in keys[:200]}  # same weights: same arm

    # Raise the canary to 50 % by a hot reload while traffic keeps flowing: nothing may fail.
    failures: list[int] = []
    stop = threading.Event()

    def background_traffic() -> None:
        with httpx.Client(base_url=rig.router.url) as client:
            while not stop.is_set():
                status = client.post(INFER, content=V2_BODY, headers={"X-User-Id": "bg"}).status_code
                if status != 200:
                    failures.append(status)

    thread = threading.Thread(target=background_traffic)
    thread.start()
    try:
        configure(rig, table(50, sticky={"header": "X-User-Id"}))
    finally:
        stop.set()
        thread.join()
    assert failures == []

    at_50 = sticky_assignment(rig, keys)
    moves = Counter((at_10[k], at_50[k]) for k in keys if at_10[k] != at_50[k])
    assert set(moves) == {("r1", "r2")}  # only stable -> canary
    assert Counter(at_10.values())["r2"] == pytest.approx(100, abs=5 * (1000 * 0.09) ** 0.5)
    assert Counter(at_50.values())["r2"] == pytest.approx(500, abs=5 * (1000 * 0.25) ** 0.5)


def test_key_from_v1_and_v2_bodies_when_the_header_is_absent(rig: Cluster) -> None:
    configure(rig, table(50, sticky={"header": "X-User-Id", "body_field": "customer_id"}))
    keys = [f"c{i}" for i in range(40)]
    by_header = sticky_assignment(rig, keys)
    with httpx.Client(base_url=rig.router.url) as client:
        for key in keys:
            v1 = orjson.dumps({"instances": [{"customer_id": key, "age": 40}]})
            v2 = orjson.dumps({"inputs": [], "parameters": {"customer_id": key}})
            assert arm_of(client.post("/v1/models/churn:predict", content=v1)) == by_header[key]
            assert arm_of(client.post(INFER, content=v2)) == by_header[key]
    assert set(by_header.values()) == {"r1", "r2"}


def test_unready_backends_get_no_traffic(rig: Cluster) -> None:
    configure(rig, table(50), endpoints(rig, stable2_ready=False, canary_ready=False))
    with httpx.Client(base_url=rig.router.url) as client:
        seen = Counter(client.post(INFER, content=V2_BODY).headers["x-backend"] for _ in range(300))
    assert seen == {"stable-1": 300}  # the canary's share went to the ready stable pod
    assert rig.router.metric('modeldeploy_router_ready_backends{revision="r2",variant="default"}') == 0
    assert rig.router.metric('modeldeploy_router_ready_backends{revision="r1",variant="default"}') == 1


def test_reject_mode_answers_503_for_an_arm_without_ready_backends(rig: Cluster) -> None:
    configure(rig, table(50, when_arm_unavailable="reject"), endpoints(rig, canary_ready=False))
    with httpx.Client(base_url=rig.router.url) as client:
        responses = [client.post(INFER, content=V2_BODY) for _ in range(200)]
    statuses = Counter(r.status_code for r in responses)
    assert statuses[503] == pytest.approx(100, abs=40)
    assert statuses[200] == 200 - statuses[503]
    rejected = next(r for r in responses if r.status_code == 503)
    assert rejected.headers["content-type"] == "application/json"
    assert rejected.json() == {"error": "arm default/r2 has no ready backend", "code": "no_ready_backend"}


def test_no_ready_backend_at_all_is_a_503_and_not_ready(rig: Cluster) -> None:
    nothing = {"svc-stable": [{"address": rig.stable, "ready": False}], "svc-canary": [], "svc-shadow": []}
    configure(rig, table(10), nothing)
    response = httpx.post(rig.router.url + INFER, content=V2_BODY)
    assert response.status_code == 503
    assert response.json()["code"] == "no_ready_backend"
    assert httpx.get(rig.router.url + "/readyz").status_code == 503
    assert httpx.get(rig.router.url + "/healthz").status_code == 200
    configure(rig, table(10))
    assert httpx.get(rig.router.url + "/readyz").json() == {
        "status": "ready",
        "generation": rig.router.generation,
    }


def test_shadow_never_changes_nor_delays_the_primary(rig: Cluster) -> None:
    shadow = {"variant": "default", "revision": "r3", "percent": 100, "timeout_seconds": 3}
    configure(rig, table(0, shadow=shadow))
    sample = 'modeldeploy_router_shadow_requests_total{outcome="ok",revision="r3",variant="default"}'
    agree = 'modeldeploy_router_shadow_label_agreement_total{result="agree",revision="r3",variant="default"}'
    diff_sum = 'modeldeploy_router_shadow_score_difference_sum{revision="r3",variant="default"}'
    before = rig.router.metric(sample), rig.router.metric(agree), rig.router.metric(diff_sum)
    n = 30
    elapsed = []
    with httpx.Client(base_url=rig.router.url) as client:
        for _ in range(n):
            started = time.perf_counter()
            response = client.post(INFER, content=V2_BODY)
            elapsed.append(time.perf_counter() - started)
            assert response.headers["x-backend"] in {"stable-1", "stable-2"}
            assert response.json()["outputs"][0]["data"] == [0.8, 0.2]  # the primary's answer
    # The shadow backend answers after 1 s: a router that waited for the copy would have taken at least
    # n s for the n answers. Half of that leaves a loaded 2-core machine room (a bound on each answer,
    # 0.25 s, failed under load); the router's own cost is a benchmark's (bench/router).
    assert sum(elapsed) < n * 1.0 / 2, sorted(elapsed)[-5:]
    deadline = time.monotonic() + 5
    while rig.router.metric(sample) - before[0] < n and time.monotonic() < deadline:
        time.sleep(0.1)
    assert rig.router.metric(sample) - before[0] == n
    assert rig.router.metric(agree) - before[1] == n  # both predict label 0
    assert rig.router.metric(diff_sum) - before[2] == pytest.approx(n * 0.2, abs=1e-3)  # |0.2 - 0.4|


def test_saturated_shadow_drops_copies_instead_of_queueing(rig: Cluster) -> None:
    shadow = {"variant": "default", "revision": "r3", "percent": 100, "max_in_flight": 2}
    configure(rig, table(0, shadow=shadow))
    dropped = 'modeldeploy_router_shadow_requests_total{outcome="dropped",revision="r3",variant="default"}'
    before = rig.router.metric(dropped)
    with httpx.Client(base_url=rig.router.url) as client:
        for _ in range(10):
            assert client.post(INFER, content=V2_BODY).status_code == 200
    assert rig.router.metric(dropped) - before == 8


def test_requests_and_responses_pass_through_unchanged(rig: Cluster) -> None:
    configure(rig, table(0))
    headers = {"x-request-id": "req-123", "x-custom": "a value", "content-type": "application/json"}
    response = httpx.post(f"{rig.router.url}{INFER}?trace=1&x=y", content=V2_BODY, headers=headers)
    assert response.status_code == 200
    echoed = response.json()["parameters"]
    assert (echoed["method"], echoed["path"], echoed["query"]) == ("POST", INFER, "trace=1&x=y")
    assert echoed["body"] == V2_BODY.decode()
    assert response.json()["id"] == "req-123"
    for name, value in headers.items():
        assert echoed["headers"][name] == value
    assert response.headers["x-custom-response"] == "kept"
    assert response.headers["x-modeldeploy-variant"] == "default"
    assert response.headers["x-modeldeploy-revision"] == "r1"
    assert response.headers["x-modeldeploy-model-version"] == "1"
    assert response.headers["content-length"] == str(len(response.content))

    missing = httpx.get(f"{rig.router.url}/missing")
    assert missing.status_code == 404  # the backend's status, not the router's
    assert missing.json()["parameters"]["method"] == "GET"
    assert (
        rig.router.metric('modeldeploy_router_requests_total{code="404",revision="r1",variant="default"}')
        >= 1
    )


def test_a_refused_connection_is_retried_on_another_backend(rig: Cluster) -> None:
    from local_processes import free_port

    dead = f"127.0.0.1:{free_port()}"  # nothing listens: connection refused, as from a pod just gone
    backends = endpoints(rig)
    backends["svc-stable"] = [{"address": dead}, {"address": rig.stable}]
    configure(rig, table(0), backends)
    retries = 'modeldeploy_router_retries_total{reason="connect",revision="r1",variant="default"}'
    before = rig.router.metric(retries)
    with httpx.Client(base_url=rig.router.url) as client:
        assert all(client.post(INFER, content=V2_BODY).status_code == 200 for _ in range(20))
    # The first request that drew the dead backend was retried on the live one; the dead one was then
    # passed over by the others (UpstreamPool.suspects, for SUSPECT_SECONDS), not retried each time.
    assert rig.router.metric(retries) - before == 1


def test_a_backend_dying_mid_request_is_never_retried(rig: Cluster) -> None:
    """The request reached the dying backend: at most once, so a 502 and no second send anywhere."""
    with raw_backend("die") as (dying, seen):
        backends = endpoints(rig)
        backends["svc-stable"] = [{"address": dying}, {"address": rig.stable}]
        configure(rig, table(0), backends)
        with httpx.Client(base_url=rig.router.url, timeout=30) as client:
            answers = [
                client.post(INFER, content=V2_BODY, headers={"x-request-id": f"q{i}"}) for i in range(10)
            ]
        failed = [a for a in answers if a.status_code != 200]
        assert failed, "round robin sends every other request to the dying backend"
        assert all(a.status_code == 502 for a in failed)
        assert all(a.json()["code"] == "backend_closed" for a in failed)
        # Each failed request reached the dying backend exactly once (not retried there), and was
        # not sent to the healthy one either (it would have answered 200).
        assert len(seen) == len(failed)
        assert len({s.split(b"x-request-id: ")[1].split(b"\r\n")[0] for s in seen}) == len(seen)
    configure(rig, table(0))


def test_a_response_over_the_limit_is_a_502_not_buffered(rig: Cluster) -> None:
    with raw_backend("huge") as (huge, seen):
        backends = endpoints(rig)
        backends["svc-stable"] = [{"address": huge}]
        configure(rig, table(0), backends)
        with httpx.Client(base_url=rig.router.url, timeout=30) as client:
            answer = client.post(INFER, content=V2_BODY)
        assert answer.status_code == 502
        assert answer.json()["code"] == "response_too_large"
        assert len(seen) == 1
    configure(rig, table(0))


def test_a_client_that_goes_while_the_backend_works_is_abandoned(rig: Cluster) -> None:
    """The shadow backend answers after 1 s; the client gives up after 0.3 s: the router closes the
    upstream exchange (the model server sees its caller gone) and counts the request."""
    backends = endpoints(rig)
    backends["svc-stable"] = [{"address": rig.shadow}]
    configure(rig, table(0), backends)
    sample = 'modeldeploy_router_refused_total{reason="client_gone"}'
    before = rig.router.metric(sample)
    with httpx.Client(base_url=rig.router.url, timeout=0.3) as client, pytest.raises(httpx.ReadTimeout):
        client.post(INFER, content=V2_BODY)
    deadline = time.monotonic() + 10
    while rig.router.metric(sample) == before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert rig.router.metric(sample) == before + 1
    with httpx.Client(base_url=rig.router.url, timeout=10) as client:  # the router still serves
        assert client.post(INFER, content=V2_BODY).status_code == 200
    configure(rig, table(0))
