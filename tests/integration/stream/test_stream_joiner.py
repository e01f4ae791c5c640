"""The label joiner beside stream mode, against the real broker (issue 15): stream pods feed it their
predictions, and labels arrive on a Kafka topic as well as over HTTP."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from kafka_broker import Broker
from local_processes import free_port, running, wait_http
from stream_harness import Topics, feature_records, parse_metrics, produce, read_topic, stream_process

pytestmark = pytest.mark.slow


@dataclass
class JoinerProcess:
    url: str
    log: Path

    def metrics(self) -> dict[str, float]:
        return parse_metrics(httpx.get(f"{self.url}/metrics", timeout=10).text)

    def count(self, family: str, outcome: str) -> float:
        return self.metrics().get(f'modeldeploy_joiner_{family}_total{{outcome="{outcome}"}}', 0.0)

    def wait_for(self, condition: Callable[[], bool], what: str, timeout: float = 120) -> None:
        """Until condition() holds (a bound for a broken setup, not a time window)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return
            time.sleep(0.1)
        raise AssertionError(f"{what} not met after {timeout}s:\n{self.log.read_text()[-3000:]}")


@contextmanager
def joiner_process(
    tmp_path: Path, env: dict[str, str] | None = None, name: str = "joiner"
) -> Iterator[JoinerProcess]:
    port = free_port()
    args = [sys.executable, "-m", "modeldeploy_serving.cli", "joiner", "--host", "127.0.0.1"]
    args += ["--port", str(port), "--database", f"sqlite:///{tmp_path / 'joiner.db'}"]
    log = tmp_path / f"{name}.log"
    with running(args, log, env):
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/readyz")
        yield JoinerProcess(url, log)


def arm(joiner: JoinerProcess, variant: str = "default", revision: str = "r1") -> dict[str, Any] | None:
    summary = httpx.get(f"{joiner.url}/v1/effectiveness", params={"fresh": "true"}, timeout=10).json()
    for deployment in summary["deployments"]:
        for a in deployment["windows"][-1]["arms"]:
            if (a["variant"], a["revision"]) == (variant, revision):
                return dict(a["quality"])
    return None


# --- stream pods feed the joiner (point 2) ---
def test_stream_predictions_reach_the_joiner_under_their_output_request_ids(
    kafka: Broker, churn_bundle: Path, tmp_path: Path
) -> None:
    n = 2000
    topics = Topics.create(kafka.bootstrap, partitions=2)
    _, values = feature_records(n)
    v2 = json.dumps(
        {
            "id": "v2-req",
            "inputs": [{"name": "input", "datatype": "FP32", "shape": [2, 14], "data": [1.0] * 28}],
        }
    ).encode()
    headers: list[list[tuple[str, bytes]] | None] = [[("request-id", b"req-%d" % i)] for i in range(n)]
    produce(kafka.bootstrap, topics.input, [*values, v2, b"{not json"], headers=[*headers, None, None])
    with joiner_process(tmp_path) as joiner:
        feed = {
            "MODELDEPLOY_FEED_URL": joiner.url,
            "MODELDEPLOY_FEED_DEPLOYMENT": "churn",
            "MODELDEPLOY_FEED_VARIANT": "default",
            "MODELDEPLOY_FEED_REVISION": "r1",
        }
        with stream_process(
            kafka.bootstrap, churn_bundle, topics, tmp_path / "stream.log", env=feed
        ) as stream:
            stream.wait_ready(timeout=240)  # a bound for a loaded machine (load 20 on 2 cores seen)
            outputs = read_topic(kafka.bootstrap, topics.output, lambda rs: len(rs) >= n + 1, timeout=240)
            # every scored row is recorded: n one-row records and the V2 record's two rows; the dead
            # letter is not (it has no prediction)
            joiner.wait_for(lambda: joiner.count("predictions", "stored") >= n + 2, "n + 2 records stored")
            stream.wait_for(
                lambda: stream.metric(r'modeldeploy_joiner_feed_records_total\{outcome="sent"\}') == n + 2,
                what="the feed counted what it sent",
            )
        ids = [r.headers["request-id"].decode() for r in outputs]
        assert sorted(ids) == sorted([f"req-{i}" for i in range(n)] + ["v2-req"])
        labels = [{"request_id": f"req-{i}", "label": i % 2} for i in range(n)]
        labels += [{"request_id": "v2-req:0", "label": 1}, {"request_id": "v2-req:1", "label": 0}]
        answer = httpx.post(f"{joiner.url}/v1/feedback", json={"labels": labels}, timeout=30).json()
        assert answer["counts"] == {"joined": n + 2}
        assert joiner.count("predictions", "stored") == n + 2
        quality = arm(joiner)
        assert quality is not None
        assert (quality["labelled"], quality["predictions"]) == (n + 2, n + 2)
