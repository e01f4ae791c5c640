"""The label joiner against real databases: SQLite files and a private PostgreSQL (127.0.0.1)."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from local_postgres import local_postgres, postgres_url  # noqa: F401 (fixtures)

from modeldeploy_contract.joiner_settings import JoinerSettings
from modeldeploy_serving.joiner.app import Joiner, create_app

from local_processes import free_port, running

DAY = 86_400.0
T0 = 1_800_000_000.0


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'joiner.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@asynccontextmanager
async def joiner_client(database: str, clock: Clock, **settings: Any) -> AsyncIterator[httpx.AsyncClient]:
    """The joiner app in-process (store opened and closed explicitly: ASGITransport runs no lifespan)."""
    app = create_app(JoinerSettings(database=database, **settings), clock)
    joiner: Joiner = app.state.joiner
    await joiner.start(background=False)
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://joiner") as client:
            yield client
    finally:
        await joiner.stop()


def record(rid: str, variant: str = "a", score: float = 0.8, label: int = 1, **extra: Any) -> dict[str, Any]:
    return {
        "request_id": rid,
        "deployment": "churn",
        "variant": variant,
        "revision": "rev-1",
        "model_version": "v1",
        "score": score,
        "label": label,
        **extra,
    }


def statuses(answer: dict[str, Any]) -> list[str]:
    return [r["status"] for r in answer["results"]]


async def test_bad_feedback_is_reported_per_item_and_loses_nothing_else(database: str) -> None:
    clock = Clock()
    async with joiner_client(database, clock, retention_seconds=30 * DAY) as c:
        old = record("old", time=T0 - 31 * DAY)
        r = await c.post(
            "/v1/predictions", json={"predictions": [record("req-1"), record("req-2"), record("req-3"), old]}
        )
        assert r.status_code == 200
        assert statuses(r.json()) == ["stored"] * 4
        r = await c.post("/v1/predictions", json={"predictions": [record("req-1"), {"request_id": "x"}]})
        assert statuses(r.json()) == ["duplicate", "invalid"]

        clock.now = T0 + 3 * DAY  # the truth arrives days later
        r = await c.post("/v1/feedback", json={"request_id": "req-1", "label": 1})  # one label, not a batch
        assert r.json()["joined"] == 1
        batch = [
            {"request_id": "req-2", "label": 0},
            {"request_id": "nope", "label": 1},
            {"request_id": "req-1", "label": 1},
            {"request_id": "req-1", "label": 0},
            {"request_id": "req-3", "label": "yes"},
            {"request_id": "req-3", "label": 7},
            {"request_id": "req-3", "label": True},
            {"label": 1},
            {"request_id": "old", "label": 1},
            {"request_id": "req-3", "label": 1},
        ]
        r = await c.post("/v1/feedback", json={"labels": batch})
        assert r.status_code == 200
        answer = r.json()
        assert statuses(answer) == [
            "joined", "unknown_request", "duplicate", "conflict", "invalid_label", "invalid_label",
            "invalid_label", "invalid", "expired", "joined",
        ]  # fmt: skip
        assert (answer["joined"], answer["rejected"]) == (2, 8)
        assert "not a class" in answer["results"][5]["error"]
        assert [r["index"] for r in answer["results"]] == list(range(10))

        text = (await c.get("/metrics")).text
        assert 'modeldeploy_joiner_labels_total{outcome="joined"} 3.0' in text
        assert 'modeldeploy_joiner_labels_total{outcome="invalid_label"} 3.0' in text
        assert 'modeldeploy_joiner_predictions_total{outcome="duplicate"} 1.0' in text
        for rid in ("req-1", "req-2", "req-3", "nope"):
            assert f'"{rid}"' not in text  # request ids are never label values

        summary = (await c.get("/v1/effectiveness", params={"fresh": 1})).json()
        month = summary["deployments"][0]["windows"][-1]
        assert month["window_seconds"] == 30 * DAY
        quality = month["arms"][0]["quality"]
        assert (quality["predictions"], quality["labelled"]) == (3, 3)
        assert quality["coverage"] == 1.0
        assert quality["accuracy"] == pytest.approx(2 / 3)


async def test_a_nul_in_an_id_or_name_is_one_invalid_item_on_both_stores(database: str) -> None:
    """PostgreSQL's text cannot hold NUL: such an id failed the whole request's transaction (503, on
    every retry; a poison record for the label topic). It is refused per item, on both stores alike."""
    async with joiner_client(database, Clock()) as c:
        r = await c.post(
            "/v1/predictions",
            json={"predictions": [record("ok-1"), record("bad\x00id"), record("ok-2", variant="a\x00b")]},
        )
        assert r.status_code == 200
        assert statuses(r.json()) == ["stored", "invalid", "invalid"]
        assert "without NUL" in r.json()["results"][1]["error"]
        assert "variant" in r.json()["results"][2]["error"]
        labels = [{"request_id": "ok-1", "label": 1}, {"request_id": "ok-1\x00", "label": 1}]
        r = await c.post("/v1/feedback", json={"labels": labels})
        assert r.status_code == 200
        assert statuses(r.json()) == ["joined", "invalid"]


async def test_labels_days_later_join_across_a_restart_and_retention_purges(database: str) -> None:
    clock = Clock()
    async with joiner_client(database, clock) as c:
        preds = [record(f"q{i}", score=i / 100, label=int(i >= 50)) for i in range(100)]
        assert (await c.post("/v1/predictions", json={"predictions": preds})).json()["stored"] == 100
    # A new process on the same database, a week later.
    clock.now = T0 + 7 * DAY
    async with joiner_client(database, clock, retention_seconds=30 * DAY) as c:
        labels = [{"request_id": f"q{i}", "label": int(i >= 40)} for i in range(100)]
        answer = (await c.post("/v1/feedback", json={"labels": labels})).json()
        assert answer["joined"] == 100, answer["counts"]
        summary = (await c.get("/v1/effectiveness", params={"fresh": 1})).json()
        windows = {w["window_seconds"]: w for w in summary["deployments"][0]["windows"]}
        assert windows[DAY]["arms"] == []  # predicted a week ago: outside the one-day window
        q = windows[30 * DAY]["arms"][0]["quality"]
        assert q["labelled"] == 100
        assert q["accuracy"] == pytest.approx(0.9)
        assert q["auc"] == pytest.approx(1.0)
    clock.now = T0 + 31 * DAY
    async with joiner_client(database, clock, retention_seconds=30 * DAY) as c:
        r = await c.post("/v1/feedback", json={"request_id": "q1", "label": 0})
        assert statuses(r.json()) == ["expired"]  # still stored, past retention
        joiner: Joiner = c._transport.app.state.joiner  # type: ignore[attr-defined]
        assert await joiner.purge() == 100
        r = await c.post("/v1/feedback", json={"request_id": "q1", "label": 0})
        assert statuses(r.json()) == ["unknown_request"]
        assert "modeldeploy_joiner_purged_predictions_total 100.0" in (await c.get("/metrics")).text


async def test_whole_request_errors(tmp_path: Path) -> None:
    async with joiner_client(
        f"sqlite:///{tmp_path / 'j.db'}", Clock(), max_body_bytes=2048, max_batch_items=3
    ) as c:
        r = await c.post("/v1/feedback", content=b"{not json")
        assert r.status_code == 400
        assert "not JSON" in r.json()["error"]
        assert (await c.post("/v1/feedback", json=[1, 2])).status_code == 400
        assert (await c.post("/v1/feedback", json={"labels": {"a": 1}})).status_code == 400
        big = {"labels": [{"request_id": "x" * 200, "label": 1}] * 20}
        r = await c.post("/v1/feedback", json=big)
        assert r.status_code == 413
        r = await c.post("/v1/predictions", json={"predictions": [record(str(i)) for i in range(4)]})
        assert r.status_code == 413
        assert "at most 3" in r.json()["error"]

        async def chunks() -> AsyncIterator[bytes]:  # no content-length: counted as it streams
            for _ in range(10):
                yield b" " * 512

        assert (await c.post("/v1/feedback", content=chunks())).status_code == 413
        text = (await c.get("/metrics")).text
        assert 'modeldeploy_joiner_rejected_requests_total{code="413"} 3.0' in text


def test_sqlite_store_is_wal_and_survives_a_killed_process(tmp_path: Path) -> None:
    """The real `modeldeploy joiner` process: predictions stored, the process killed (SIGKILL, no
    shutdown), a new process joins labels to them."""
    db = tmp_path / "data" / "joiner.db"
    env = {"MODELDEPLOY_JOINER_DATABASE": f"sqlite:///{db}", "MODELDEPLOY_JOINER_HOST": "127.0.0.1"}

    for step in ("predict", "label"):
        port = free_port()
        args = [sys.executable, "-m", "modeldeploy_serving.cli", "joiner", "--port", str(port)]
        with running(args, tmp_path / f"{step}.log", {**env}) as proc:
            url = f"http://127.0.0.1:{port}"
            _wait_ready(url, proc, tmp_path / f"{step}.log")
            if step == "predict":
                preds = [record(f"k{i}", time=time.time()) for i in range(50)]
                r = httpx.post(f"{url}/v1/predictions", json={"predictions": preds})
                assert r.json()["stored"] == 50
                proc.kill()
                proc.wait()
            else:
                labels = [{"request_id": f"k{i}", "label": 1} for i in range(50)]
                r = httpx.post(f"{url}/v1/feedback", json={"labels": labels})
                assert r.json()["joined"] == 50
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("SELECT COUNT(*) FROM predictions WHERE label = 1").fetchone()[0] == 50


def _wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"joiner exited {proc.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"joiner not ready:\n{log.read_text()}")


async def test_a_simulated_ab_through_the_joiner(tmp_path: Path) -> None:
    """Two churn-like arms, the treatment truly better (binormal scores, seeded); labels sent days
    later: the summary and /metrics call the treatment better with an interval around the truth."""
    import math
    import random

    rng = random.Random(99)
    clock = Clock()
    predictions, labels = [], []
    for variant, separation in (("a", 1.0), ("b", 1.4)):
        for i in range(2500):
            y = int(rng.random() < 0.3)
            score = 1 / (1 + math.exp(-(rng.gauss(0, 1) + separation * y - 1)))
            rid = f"{variant}-{i}"
            predictions.append(record(rid, variant=variant, score=score, label=int(score >= 0.5)))
            labels.append({"request_id": rid, "label": y})
    async with joiner_client(f"sqlite:///{tmp_path / 'ab.db'}", clock, ab={"min_labels_per_arm": 2000}) as c:
        for start in range(0, len(predictions), 1000):
            r = await c.post("/v1/predictions", json={"predictions": predictions[start : start + 1000]})
            assert r.json()["stored"] == 1000
        clock.now += 5 * DAY
        summary = (await c.get("/v1/effectiveness", params={"fresh": 1})).json()
        month = summary["deployments"][0]["windows"][-1]
        assert month["ab"][0]["verdict"] == "Inconclusive"  # no labels yet
        for start in range(0, len(labels), 1000):
            r = await c.post("/v1/feedback", json={"labels": labels[start : start + 1000]})
            assert r.json()["joined"] == 1000
        summary = (await c.get("/v1/effectiveness", params={"fresh": 1})).json()
        verdict = summary["deployments"][0]["windows"][-1]["ab"][0]
        truth = 0.8389 - 0.7602  # Phi(1.4 / sqrt 2) - Phi(1 / sqrt 2)
        assert verdict["verdict"] == "TreatmentBetter"
        assert verdict["lower"] < truth < verdict["upper"]
        text = (await c.get("/metrics")).text
        assert (
            'modeldeploy_ab_verdict{control="a",deployment="churn",metric="auc",treatment="b",'
            'verdict="TreatmentBetter",window="2592000s"} 1.0'
        ) in text
        assert (
            'modeldeploy_effectiveness_auc{deployment="churn",model_version="v1",revision="rev-1",variant="b"'
            in text
        )


def test_nested_ab_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELDEPLOY_JOINER_AB__MIN_LABELS_PER_ARM", "2000")
    monkeypatch.setenv("MODELDEPLOY_JOINER_AB__METRIC", "accuracy")
    monkeypatch.setenv("MODELDEPLOY_JOINER_WINDOWS_SECONDS", "[3600, 86400]")
    settings = JoinerSettings()
    assert (settings.ab.min_labels_per_arm, settings.ab.metric) == (2000, "accuracy")
    assert settings.windows_seconds == [3600, 86400]
