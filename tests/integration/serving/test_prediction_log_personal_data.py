"""The personal-data search (issue 14): a model server and the router in front of it, both writing the
prediction log (JSON lines on stdout), are sent requests whose policy-covered fields hold unique
marker values; then the sink, both processes' whole output, their /metrics and every error body are
searched for the markers: none may appear (pseudonymised or dropped), while the kept fields do.

Real processes on 127.0.0.1 (the churn v1 bundle, `modeldeploy serve`, `modeldeploy-router`)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from serving_harness import Bundles, ServerFactory

sys.path.insert(0, str(Path(__file__).parents[1] / "router"))
from router_harness import Router, one_arm_table

pytestmark = pytest.mark.slow

FEATURES = [
    "number_of_projects", "number_of_issues", "number_of_invites", "w1_active_users",
    "w1_max_active_users", "issues_updated", "issues_commented", "issues_assigned", "at_mentions",
    "issues_viewed", "issues_completed", "mobile_usage", "sprint_started", "sprint_finished",
]  # fmt: skip  # the churn bundle's inputs, in order
N = 25
# Values no other field, id, timestamp or metric of this test can hold (float32-exact), searched for
# as JSON writes them ("918273.5"; six digits alone would match inside the hex of a token).
PSEUDONYMISED = [918_273.5 + i for i in range(N)]  # at_mentions
DROPPED = [827_364.25 + i for i in range(N)]  # issues_viewed
KEPT = 3.0  # number_of_projects
STICKY = [f"MARKER-user-{i:03d}-qzx@example.com" for i in range(N)]  # the router's sticky key


def _row(i: int) -> list[float]:
    row = [KEPT, 35, 1, 4, 6, 20, 8, 17, PSEUDONYMISED[i], DROPPED[i], 9, 6.5, 2, 1]
    assert len(row) == len(FEATURES)
    return row


def _markers() -> list[str]:
    return [*(str(v) for v in PSEUDONYMISED + DROPPED), *STICKY, "MARKER-"]


def _records(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith('{"request_id"')]


def test_no_marker_of_a_policy_covered_field_reaches_any_output(
    bundles: Bundles, serve: ServerFactory, tmp_path: Path
) -> None:
    key = tmp_path / "hmac.key"
    key.write_text("a-key-from-a-Secret-0123456789")
    plog = {
        "MODELDEPLOY_PREDLOG_ENABLED": "true",
        "MODELDEPLOY_PREDLOG_HMAC_KEY_FILE": str(key),
        "MODELDEPLOY_PREDLOG_KEEP": "number_of_projects",
        "MODELDEPLOY_PREDLOG_PSEUDONYMISE": "at_mentions",
        "MODELDEPLOY_PREDLOG_DROP": "issues_viewed",
        "MODELDEPLOY_PREDLOG_DEPLOYMENT": "churn",
    }
    server = serve(str(bundles.v1), env={**plog, "MODELDEPLOY_PREDLOG_VARIANT": "default"})
    server.wait_ready()
    address = server.url.removeprefix("http://")
    router = Router(tmp_path)
    router.write_endpoints({"svc-r1": [{"address": address}]})
    router.write_config(one_arm_table("svc-r1", sticky={"header": "X-User-Id", "salt": "churn"}))
    error_bodies: list[str] = []
    metrics: list[str] = []
    with router.running(env=plog), httpx.Client(base_url=router.url, timeout=30) as c:
        router.wait_generation()
        for i in range(N):
            body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 14], "data": _row(i)}]}
            headers = {"x-user-id": STICKY[i]}
            if i % 2:
                headers["x-request-id"] = f"req-{i}"  # else the router makes one and passes it on
            response = c.post("/v2/models/churn/infer", json=body, headers=headers)
            assert response.status_code == 200, response.text
        # Refused requests carrying the markers: a string where a number belongs, a malformed body,
        # a per-feature tensor of the wrong type, a V1 instance (the error once echoed the value).
        bad = [
            ("/v2/models/churn/infer", {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 14],
                                                     "data": [*_row(0)[:8], STICKY[0], *_row(0)[9:]]}]}),
            ("/v2/models/churn/infer", f'{{"inputs": [{{"data": [{PSEUDONYMISED[1]}, "{STICKY[1]}"'),
            ("/v2/models/churn/infer", {"inputs": [{"name": "at_mentions", "datatype": "BYTES", "shape": [1],
                                                     "data": [STICKY[2]]}]}),
            ("/v1/models/churn:predict", {"instances": [{"at_mentions": STICKY[3],
                                                         "issues_viewed": DROPPED[3]}]}),
        ]  # fmt: skip
        for path, payload in bad:
            sent = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
            response = c.post(
                path, content=sent, headers={"x-user-id": STICKY[5], "content-type": "application/json"}
            )
            assert response.status_code >= 400
            error_bodies.append(response.text)
        metrics.append(c.get("/metrics").text)
        metrics.append(httpx.get(f"{server.url}/metrics").text)
    server.stop()  # both processes have exited: their buffers are written

    server_out = server.log.read_text()
    router_out = (tmp_path / "router.log").read_text()
    server_records = {r["request_id"]: r for r in _records(server_out)}
    router_records = {r["request_id"]: r for r in _records(router_out)}
    # Every answered request is in both logs, under one request id (the router's when the caller sent none).
    assert len(router_records) == N + len(bad)
    answered = [rid for rid, r in router_records.items() if r["status"] == "200"]
    assert len(answered) == N
    assert set(answered) <= set(server_records)
    for rid in answered:
        s, r = server_records[rid], router_records[rid]
        assert set(s["inputs"]) == {"number_of_projects", "at_mentions"}  # kept + pseudonymised; dropped gone
        assert s["inputs"]["number_of_projects"] == [KEPT]  # kept: in the clear
        assert s["inputs"]["at_mentions"][0].startswith("hmac:")
        assert (r["variant"], r["revision"], r["inputs"]) == ("default", "r1", {})
        assert r["sticky_key"].startswith("hmac:")
    assert len({r["sticky_key"] for r in router_records.values()}) == N  # one token per user
    assert {f"req-{i}" for i in range(1, N, 2)} <= set(answered)

    searched = {
        "model server output (sink and log)": server_out,
        "router output (sink and log)": router_out,
        **{f"error body {i}": body for i, body in enumerate(error_bodies)},
        "router /metrics": metrics[0],
        "model server /metrics": metrics[1],
    }
    hits = [(where, m) for where, text in searched.items() for m in _markers() if m in text]
    assert hits == []
