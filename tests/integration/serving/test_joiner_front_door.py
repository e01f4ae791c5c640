"""Effectiveness end to end without a cluster (issue 15): real processes on 127.0.0.1, wired the way the
operator wires them. A model server with MODELDEPLOY_FEED_* sends its answers to a `modeldeploy
joiner` (SQLite file); a router with `feedback` in its table sits in front. Predictions go through the
router, the caller keeps the request id it got back, labels come back through the router's feedback
route, and the joiner's summary shows them joined per arm."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from modeldeploy_contract.preflight import REPLAY_HEADER
from modeldeploy_contract.router_config import RouterConfig

from local_processes import free_port, running, wait_for
from serving_harness import Bundles, ServerFactory, v2_body

pytestmark = pytest.mark.slow

REVISION = "r1"


@pytest.fixture
def front_door(bundles: Bundles, serve: ServerFactory, tmp_path: Path) -> Iterator[tuple[str, str, str]]:
    """(router URL, joiner URL, model server URL)."""
    joiner_port, router_port = free_port(), free_port()
    joiner_url = f"http://127.0.0.1:{joiner_port}"
    joiner = [sys.executable, "-m", "modeldeploy_serving.cli", "joiner", "--host", "127.0.0.1"]
    joiner += ["--port", str(joiner_port), "--database", f"sqlite:///{tmp_path / 'joiner.db'}"]
    with running(joiner, tmp_path / "joiner.log", ready=f"{joiner_url}/readyz"):
        feed = {
            "MODELDEPLOY_FEED_URL": joiner_url,
            "MODELDEPLOY_FEED_DEPLOYMENT": "churn",
            "MODELDEPLOY_FEED_VARIANT": "default",
            "MODELDEPLOY_FEED_REVISION": REVISION,
        }
        server = serve(str(bundles.v1), env=feed)
        server.wait_ready()
        table = RouterConfig.model_validate(
            {
                "deployment": {"namespace": "test", "name": "churn"},
                "arms": [
                    {"variant": "default", "revision": REVISION, "weight_bp": 10_000, "service": "svc",
                     "model_name": "churn", "model_version": "v1"},
                ],
                "feedback": {"address": f"127.0.0.1:{joiner_port}", "max_body_bytes": 64 * 1024},
            }
        )  # fmt: skip
        (tmp_path / "router.json").write_text(table.to_json())
        address = server.url.removeprefix("http://")
        (tmp_path / "endpoints.json").write_bytes(orjson.dumps({"svc": [{"address": address}]}))
        router = [sys.executable, "-m", "modeldeploy_serving.router.main"]
        router += ["--config-file", str(tmp_path / "router.json")]
        router += ["--endpoints-file", str(tmp_path / "endpoints.json")]
        router += ["--host", "127.0.0.1", "--port", str(router_port), "--log-level", "warning"]
        router_url = f"http://127.0.0.1:{router_port}"
        with running(router, tmp_path / "router.log", ready=f"{router_url}/readyz"):
            yield router_url, joiner_url, server.url


def arm_of(summary: dict[str, Any]) -> dict[str, Any] | None:
    for deployment in summary["deployments"]:
        if deployment["deployment"] == "churn":
            window = deployment["windows"][-1]
            for arm in window["arms"]:
                if (arm["variant"], arm["revision"]) == ("default", REVISION):
                    return dict(arm["quality"])
    return None


def test_labels_through_the_front_door_join_the_predictions_the_callers_got(
    front_door: tuple[str, str, str], bundles: Bundles
) -> None:
    router_url, joiner_url, _ = front_door
    rows = bundles.normal[:40]
    predicted: dict[str, int] = {}
    with httpx.Client(base_url=router_url, timeout=30) as c:
        for i in range(30):
            headers = {"x-request-id": f"caller-{i}"} if i < 10 else {}
            extra = {"id": f"body-{i}"} if 10 <= i < 20 else {}
            r = c.post("/v2/models/churn/infer", json=v2_body(rows[i : i + 1], **extra), headers=headers)
            assert r.status_code == 200, r.text
            rid = r.headers["x-request-id"]  # what the caller keeps for its label
            expected = f"caller-{i}" if i < 10 else f"body-{i}" if i < 20 else None
            if expected is not None:
                assert rid == expected
            label = next(o for o in r.json()["outputs"] if o["name"] == "label")["data"][0]
            predicted[rid] = int(label)
        r = c.post("/v2/models/churn/infer", json=v2_body(rows[30:33]), headers={"x-request-id": "batch"})
        assert r.status_code == 200
        assert r.headers["x-request-id"] == "batch"

        # The server sends its records in the background: wait until the joiner has all 33.
        def recorded() -> bool:
            arm = arm_of(httpx.get(f"{joiner_url}/v1/effectiveness", params={"fresh": 1}).json())
            return arm is not None and arm["predictions"] == 33

        wait_for("33 prediction records in the joiner", recorded, interval=0.05)

        # Labels "later": the truth is the predicted class for the first 20, the other for the rest.
        ids = list(predicted)
        truth = {rid: predicted[rid] if k < 20 else 1 - predicted[rid] for k, rid in enumerate(ids)}
        batch = [{"request_id": rid, "label": truth[rid]} for rid in ids]
        batch += [
            {"request_id": "batch:1", "label": 0},
            {"request_id": "never-seen", "label": 1},
            {"request_id": ids[0], "label": truth[ids[0]]},  # the same label again
            {"request_id": ids[1], "label": 1 - truth[ids[1]]},  # a different label for a labelled id
            {"request_id": "batch:2", "label": 7},
            {"request_id": "batch:0", "label": "yes"},
            {"label": 1},
        ]
        r = c.post("/v2/models/churn/feedback", json={"labels": batch})
        assert r.status_code == 200, r.text
        answer = r.json()
        statuses = [item["status"] for item in answer["results"]]
        assert statuses == ["joined"] * 31 + [
            "unknown_request",
            "duplicate",
            "conflict",
            "invalid_label",
            "invalid_label",
            "invalid",
        ]
        assert answer["joined"] == 31
        assert "0..1" in answer["results"][34]["error"]

        # One label, not a batch, for the last row of the batch request.
        r = c.post("/v2/models/churn/feedback", json={"request_id": "batch:0", "label": 1})
        assert r.json()["joined"] == 1

        # Bad input through the router: clear 4xx answers, nothing stored.
        assert c.post("/v2/models/fraud/feedback", json={"request_id": "x", "label": 1}).status_code == 404
        r = c.post("/v2/models/churn/feedback", content=b"not json")
        assert r.status_code == 400
        assert "not JSON" in r.json()["error"]
        r = c.post("/v2/models/churn/feedback", content=b"")
        assert (r.status_code, r.json()["code"]) == (400, "empty_body")
        r = c.post("/v2/models/churn/feedback", content=b"x" * (64 * 1024 + 1))
        assert (r.status_code, r.json()["code"]) == (413, "body_too_large")

    arm = arm_of(httpx.get(f"{joiner_url}/v1/effectiveness", params={"fresh": 1}).json())
    assert arm is not None
    assert (arm["predictions"], arm["labelled"]) == (33, 32)
    # 20 of the 30 single-row labels agree with the prediction, the 2 batch rows are unknown here.
    assert arm["accuracy"] is not None
    assert 20 / 32 <= arm["accuracy"] <= 22 / 32
    metrics = httpx.get(f"{joiner_url}/metrics").text
    assert 'modeldeploy_joiner_labels_total{outcome="joined"} 32.0' in metrics


def test_a_golden_set_replay_is_never_recorded_for_the_joiner(
    front_door: tuple[str, str, str], bundles: Bundles
) -> None:
    """Replays (the operator's preflight, straight to a pod) are not live traffic: the server sends no
    prediction record for them, so no label can ever join them and no arm counts them."""
    _, joiner_url, server_url = front_door
    rows = bundles.normal[:8]
    with httpx.Client(base_url=server_url, timeout=30) as c:
        for i in range(4):
            headers = {REPLAY_HEADER: "1", "x-request-id": f"replay-{i}"}
            r = c.post("/v2/models/churn/infer", json=v2_body(rows[i : i + 1]), headers=headers)
            assert r.status_code == 200, r.text
        # then live requests: the feed sends in order, so once these are in, the replays would be too
        for i in range(4):
            headers = {"x-request-id": f"live-{i}"}
            assert c.post("/v2/models/churn/infer", json=v2_body(rows[i : i + 1]), headers=headers).is_success

    def recorded() -> bool:
        arm = arm_of(httpx.get(f"{joiner_url}/v1/effectiveness", params={"fresh": 1}).json())
        return arm is not None and arm["predictions"] >= 4

    wait_for("the live records in the joiner", recorded, interval=0.05)
    labels = [{"request_id": f"{kind}-{i}", "label": 1} for kind in ("replay", "live") for i in range(4)]
    answer = httpx.post(f"{joiner_url}/v1/feedback", json={"labels": labels}, timeout=30).json()
    assert [r["status"] for r in answer["results"]] == ["unknown_request"] * 4 + ["joined"] * 4
    arm = arm_of(httpx.get(f"{joiner_url}/v1/effectiveness", params={"fresh": 1}).json())
    assert arm is not None
    assert arm["predictions"] == 4
