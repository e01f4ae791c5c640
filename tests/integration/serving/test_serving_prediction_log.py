"""The prediction log on the REST model server (issue 14): JSON lines on stdout, the stream records'
shape, the personal-data policy applied, failures logged without their body, drops counted."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from serving_harness import Bundles, ServerFactory, metric, metric_values, v2_body

FEATURES = ["number_of_projects", "at_mentions", "w1_active_users"]


def _log_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    key = tmp_path / "hmac.key"
    key.write_text("a-key-from-a-Secret-0123456789")
    return {
        "MODELDEPLOY_PREDLOG_ENABLED": "true",
        "MODELDEPLOY_PREDLOG_HMAC_KEY_FILE": str(key),
        "MODELDEPLOY_PREDLOG_KEEP": "number_of_projects",
        "MODELDEPLOY_PREDLOG_PSEUDONYMISE": "at_mentions",
        "MODELDEPLOY_PREDLOG_DEPLOYMENT": "churn",
        "MODELDEPLOY_PREDLOG_VARIANT": "default",
        "MODELDEPLOY_PREDLOG_REVISION": "abc123",
        **extra,
    }


def _records(log: Path) -> list[dict[str, object]]:
    out = []
    for line in log.read_text().splitlines():
        if line.startswith('{"request_id"'):
            out.append(json.loads(line))
    return out


def test_rest_predictions_are_logged_with_the_policy_applied(
    bundles: Bundles, serve: ServerFactory, tmp_path: Path
) -> None:
    server = serve(str(bundles.v1), env=_log_env(tmp_path))
    server.wait_ready()
    rows = bundles.normal[:30]
    answers = {}
    with server.client() as c:
        for i in range(10):
            r = c.post(
                "/v2/models/churn/infer",
                json=v2_body(rows[3 * i : 3 * i + 3]),
                headers={"x-request-id": f"req-{i}"},
            )
            assert r.status_code == 200
            answers[f"req-{i}"] = r.json()
        bad = c.post(
            "/v2/models/churn/infer",
            content=b'{"inputs": "MARKER-secret@example.com"}',
            headers={"x-request-id": "bad"},
        )
        assert bad.status_code == 400
    server.stop()  # the buffer is written at exit
    records = {r["request_id"]: r for r in _records(server.log)}
    assert set(records) == {*answers, "bad"}
    for rid, answer in answers.items():
        record = records[rid]
        assert (record["deployment"], record["variant"], record["revision"], record["status"]) == (
            "churn",
            "default",
            "abc123",
            "200",
        )
        assert record["model_version"] == answer["model_version"]
        assert isinstance(record["latency_ms"], float)
        inputs = record["inputs"]
        assert isinstance(inputs, dict)
        # keep: in the clear; pseudonymise: keyed tokens; anything else (default drop): absent
        assert set(inputs) == {"number_of_projects", "at_mentions"}
        assert all(str(t).startswith("hmac:") for t in inputs["at_mentions"])
        i = int(rid.removeprefix("req-"))
        np.testing.assert_allclose(inputs["number_of_projects"], rows[3 * i : 3 * i + 3, 0])
        outputs = record["outputs"]
        assert isinstance(outputs, dict)
        by_name = {o["name"]: o["data"] for o in answer["outputs"]}
        # the numbers the caller received, written alike (a float32 by its shortest text)
        assert np.ravel(outputs["probabilities"]).tolist() == by_name["probabilities"]
    assert records["bad"]["status"] == "400"
    assert records["bad"]["inputs"] == {}
    assert "MARKER" not in server.log.read_text()  # the refused body is nowhere in the pod's output


def test_a_full_buffer_drops_and_counts_instead_of_waiting(
    bundles: Bundles, serve: ServerFactory, tmp_path: Path
) -> None:
    server = serve(str(bundles.v1), env=_log_env(tmp_path, MODELDEPLOY_PREDLOG_CAPACITY="1"))
    server.wait_ready()
    body = v2_body(bundles.normal[:1])
    with server.client() as c:
        for _ in range(200):
            assert c.post("/v2/models/churn/infer", json=body).status_code == 200
    with server.client() as c:
        text = c.get("/metrics").text
    dropped = metric(text, "modeldeploy_prediction_log_records_total", outcome="dropped")
    assert dropped > 0
    written = sum(metric_values(text, "modeldeploy_prediction_log_records_total", outcome="written"))
    assert dropped + written <= 200
