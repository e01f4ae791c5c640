"""The label joiner when its PostgreSQL goes away: a killed backend (pg_terminate_backend) and a
restarted server (pg_ctl stop -m immediate, start), against the private PostgreSQL of the tests.

Before store.py reconnected, one killed backend made every later request 503 for good (the one
connection was dead), while /healthz and /readyz stayed 200: the pod was neither restarted nor taken out
of its Service, and labels were refused until someone restarted it by hand."""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from local_postgres import LocalPostgres, local_postgres, postgres_url  # noqa: F401 (fixtures)

from modeldeploy_serving.joiner.parse import Feedback
from modeldeploy_serving.joiner.store import PostgresDialect, SqlStore, StoreUnavailableError, open_store

from local_processes import free_port, running

pytestmark = pytest.mark.slow


@dataclass
class Joiner:
    url: str
    log: Path

    def get(self, path: str) -> httpx.Response:
        return httpx.get(f"{self.url}{path}", timeout=30)

    def post(self, path: str, body: Any) -> httpx.Response:
        return httpx.post(f"{self.url}{path}", json=body, timeout=60)

    def metric(self, name: str) -> float:
        for line in self.get("/metrics").text.splitlines():
            key, _, value = line.rpartition(" ")
            if key == name:
                return float(value)
        return 0.0

    def wait_for(self, condition: Callable[[], bool], what: str, timeout: float = 120) -> None:
        """Until condition() holds (a bound for a broken setup, not a time window)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return
            time.sleep(0.05)
        raise AssertionError(f"{what} not met after {timeout}s:\n{self.log.read_text()[-3000:]}")


@contextmanager
def joiner_process(tmp_path: Path, dsn: str) -> Iterator[Joiner]:
    """The real `modeldeploy joiner` process; the readiness check asks the database on every probe
    (readiness_check_seconds=0) so that the test sees each change of state at once."""
    port = free_port()
    dsn_file = tmp_path / "dsn"
    dsn_file.write_text(dsn)  # as the operator mounts it from a Secret
    args = [sys.executable, "-m", "modeldeploy_serving.cli", "joiner", "--host", "127.0.0.1"]
    args += ["--port", str(port)]
    env = {
        "MODELDEPLOY_JOINER_DATABASE_FILE": str(dsn_file),
        "MODELDEPLOY_JOINER_READINESS_CHECK_SECONDS": "0",
    }
    log = tmp_path / "joiner.log"
    url = f"http://127.0.0.1:{port}"
    with running(args, log, env, ready=f"{url}/readyz"):
        yield Joiner(url, log)


def prediction(rid: str) -> dict[str, Any]:
    return {
        "request_id": rid,
        "deployment": "churn",
        "variant": "a",
        "revision": "r1",
        "model_version": "v1",
        "score": 0.8,
        "label": 1,
        "time": time.time(),
    }


def labelled(dsn: str) -> dict[str, int]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("SELECT request_id, label FROM predictions WHERE label IS NOT NULL").fetchall()
    return {rid: int(label) for rid, label in rows}


def database_of(dsn: str) -> str:
    return dsn.rsplit("/", 1)[1]


def test_a_killed_backend_and_a_restarted_server_cost_503s_not_the_joiner(
    local_postgres: LocalPostgres,  # noqa: F811
    postgres_url: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    n_batches, size = 12, 50
    batches = [[f"b{b}-{i}" for i in range(size)] for b in range(n_batches)]
    with joiner_process(tmp_path, postgres_url) as joiner:
        all_ids = [rid for batch in batches for rid in batch]
        assert joiner.post("/v1/predictions", {"predictions": [prediction(r) for r in all_ids]}).json()[
            "stored"
        ] == len(all_ids)

        def send(batch: list[str]) -> httpx.Response:
            return joiner.post("/v1/feedback", {"labels": [{"request_id": r, "label": 1} for r in batch]})

        # 1. The joiner's backend killed between two batches: the next request reconnects at once and
        # is answered as if nothing happened (it ran on the new connection, once).
        answered: dict[int, int] = {}
        for b in range(0, 3):
            answered[b] = send(batches[b]).json()["joined"]
        assert local_postgres.terminate_backends(database_of(postgres_url)) == 1
        r = send(batches[3])
        assert r.status_code == 200, r.text
        answered[3] = r.json()["joined"]
        assert answered == {0: size, 1: size, 2: size, 3: size}
        assert joiner.metric("modeldeploy_joiner_store_connection_losses_total") == 1
        assert joiner.metric('modeldeploy_joiner_store_reconnects_total{result="ok"}') == 1
        assert joiner.get("/readyz").status_code == 200

        # 2. The server down (an immediate stop: every connection cut, as a crash).
        refused: list[int] = []
        with local_postgres.stopped():
            for b in range(4, 8):
                r = send(batches[b])
                assert r.status_code == 503, r.text  # not 500, not a hang
                assert r.headers["content-type"] == "application/json"
                assert int(r.headers["retry-after"]) >= 1
                body = r.json()
                assert body["retry_after_seconds"] == int(r.headers["retry-after"])
                assert "nothing of this request was stored" in body["error"]
                refused.append(b)
            r = joiner.post("/v1/predictions", {"predictions": [prediction("during-outage")]})
            assert r.status_code == 503
            assert "retry-after" in r.headers
            assert joiner.get("/v1/effectiveness?fresh=1").status_code == 503
            joiner.wait_for(lambda: joiner.get("/readyz").status_code == 503, "/readyz 503")
            assert joiner.get("/healthz").status_code == 200  # liveness: a restart would not help
            assert joiner.metric("modeldeploy_joiner_store_up") == 0
            r = joiner.get("/metrics")  # still served, with the last statistics
            assert r.status_code == 200

        # 3. The server back: ready again without a restart of the joiner, and the refused batches join.
        joiner.wait_for(lambda: joiner.get("/readyz").status_code == 200, "/readyz 200 again")
        assert joiner.metric("modeldeploy_joiner_store_up") == 1
        # nothing of the refused batches was half-applied while the server was down
        assert not set(labelled(postgres_url)) & {r for b in refused for r in batches[b]}
        for b in [*refused, *range(8, n_batches)]:
            r = send(batches[b])
            assert r.status_code == 200, r.text
            answered[b] = r.json()["joined"]

        # Counts exact: every label joined once, answered "joined" once, counted once.
        assert answered == dict.fromkeys(range(n_batches), size)
        assert labelled(postgres_url) == dict.fromkeys(all_ids, 1)
        assert joiner.metric('modeldeploy_joiner_labels_total{outcome="joined"}') == len(all_ids)
        assert joiner.metric('modeldeploy_joiner_labels_total{outcome="duplicate"}') == 0
        assert joiner.metric('modeldeploy_joiner_rejected_requests_total{code="503"}') == len(refused) + 2
        assert joiner.metric("modeldeploy_joiner_store_connection_losses_total") == 2
        assert joiner.metric('modeldeploy_joiner_store_reconnects_total{result="ok"}') == 2
        assert joiner.metric('modeldeploy_joiner_store_reconnects_total{result="failed"}') >= 1
        summary = joiner.get("/v1/effectiveness?fresh=1").json()
        assert summary["deployments"][0]["windows"][0]["arms"][0]["quality"]["labelled"] == len(all_ids)

        # Each outage logged once at its start and once at its end, not once per request.
        text = joiner.log.read_text()
        assert len(re.findall(r"store connection lost", text)) == 2, text[-3000:]
        assert len(re.findall(r"store connection back after", text)) == 2, text[-3000:]
        assert "Traceback" not in text, text[-3000:]


def test_prediction_records_fed_during_the_outage_reach_the_joiner_once_the_server_is_back(
    local_postgres: LocalPostgres,  # noqa: F811
    postgres_url: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    """The model servers' feed (joiner/feed.py) keeps a batch the joiner answers 503 and sends it
    again with backoff: the predictions made while the database was down are there for their labels
    later (before, the batch was dropped and those labels came back unknown_request)."""
    import numpy as np

    from modeldeploy_contract.joiner_settings import JoinerFeedSettings
    from modeldeploy_serving.joiner.feed import JoinerFeed
    from modeldeploy_serving.model import to_prediction

    def stored(prefix: str) -> int:
        with psycopg.connect(postgres_url) as conn:
            row = conn.execute(
                "SELECT count(*) FROM predictions WHERE request_id LIKE %s", (prefix + "%",)
            ).fetchone()
        return int(row[0]) if row else 0

    answer = to_prediction(np.array([[0.3, 0.7]], dtype=np.float32), classification=True)
    with joiner_process(tmp_path, postgres_url) as joiner:
        settings = JoinerFeedSettings(
            url=joiner.url, deployment="churn", variant="a", revision="r1", batch=20, timeout_seconds=10
        )
        counts: dict[str, int] = {}
        feed = JoinerFeed(settings, count=lambda k, n: counts.__setitem__(k, counts.get(k, 0) + n))
        try:
            with local_postgres.stopped():
                for i in range(50):
                    assert feed.add(f"outage-{i}", "v1", answer)
                joiner.wait_for(lambda: counts.get("retried", 0) > 0, "the feed sending a batch again")
            joiner.wait_for(lambda: stored("outage-") == 50, "the 50 records stored once the server is back")
        finally:
            feed.close()
        assert counts.get("sent") == 50
        assert "failed" not in counts, counts
        assert joiner.metric('modeldeploy_joiner_rejected_requests_total{code="503"}') >= 1


# --- the store itself, on the real server --------------------------------------------------------
def feedback(ids: list[str]) -> list[Feedback]:
    return [Feedback(i, rid, 1, None) for i, rid in enumerate(ids)]


def _predictions(store: SqlStore, ids: list[str]) -> None:
    from modeldeploy_serving.joiner.parse import PredictionRecord

    records = [PredictionRecord(i, rid, "d", "a", "r", "v", 0.5, 1, 2, None) for i, rid in enumerate(ids)]
    assert store.add_predictions(records, time.time()) == [True] * len(ids)


class _Connection:
    """A real psycopg connection, with a fault: after a real COMMIT the socket is closed and the
    answer lost (what a network cut right after the server committed looks like to the client)."""

    def __init__(self, conn: psycopg.Connection[Any], lose_commit_answer: list[bool]) -> None:
        self._conn = conn
        self._lose = lose_commit_answer

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)

    def commit(self) -> None:
        self._conn.commit()
        if self._lose and self._lose.pop():
            self._conn.close()
            raise psycopg.OperationalError("the connection is lost")


def test_a_commit_whose_answer_was_lost_is_asked_about_not_run_again(postgres_url: str) -> None:  # noqa: F811
    """The connection dies during COMMIT: the store asks the server (txid_status) on a new connection.
    Committed: the answer computed before is the answer (joined), the labels are not joined twice
    (which would have answered them `duplicate`, untruthfully)."""
    lose: list[bool] = []
    store = SqlStore(lambda: _Connection(psycopg.connect(postgres_url), lose), PostgresDialect())
    try:
        _predictions(store, ["x1", "x2"])
        lose.append(True)
        assert store.join_labels(feedback(["x1", "x2"]), time.time(), 3600) == [("joined", None)] * 2
        assert not lose  # the fault happened
        assert labelled(postgres_url) == {"x1": 1, "x2": 1}
        assert store.up
    finally:
        store.close()


def test_the_outcome_of_a_lost_commit_stays_unknown_when_the_server_cannot_be_asked(
    local_postgres: LocalPostgres,  # noqa: F811
    postgres_url: str,  # noqa: F811
) -> None:
    class GoneAfterCommit(_Connection):
        def commit(self) -> None:
            self._conn.commit()
            if self._lose and self._lose.pop():
                local_postgres.stop()  # the server gone before anyone could ask it
                self._conn.close()
                raise psycopg.OperationalError("the connection is lost")

    lose: list[bool] = []
    store = SqlStore(lambda: GoneAfterCommit(psycopg.connect(postgres_url), lose), PostgresDialect())
    try:
        _predictions(store, ["y1"])
        lose.append(True)
        try:
            with pytest.raises(StoreUnavailableError) as caught:
                store.join_labels(feedback(["y1"]), time.time(), 3600)
        finally:
            local_postgres.start_server()
        assert caught.value.outcome_unknown
        assert "may have been stored" in str(caught.value)
        assert not store.up
    finally:
        store.close()
    assert labelled(postgres_url) == {"y1": 1}  # it had committed: "unknown" was the truth, not "no"


def test_a_connection_lost_before_commit_runs_the_operation_again_once(
    local_postgres: LocalPostgres,  # noqa: F811
    postgres_url: str,  # noqa: F811
) -> None:
    """The backend killed in the middle of a transaction (after its UPDATE, before COMMIT): the server
    rolled it back, the store runs it again on a new connection; a second loss in the same operation
    is an outage (StoreUnavailableError), not a loop."""
    kills: list[bool] = []
    database = database_of(postgres_url)

    class KilledBeforeCommit(PostgresDialect):
        def written_transaction(self, conn: Any) -> int | None:
            txid = super().written_transaction(conn)
            if kills and kills.pop():
                local_postgres.terminate_backends(database)
            return txid

    store = open_store(postgres_url)
    store.dialect = KilledBeforeCommit()
    try:
        _predictions(store, ["z1", "z2", "z3"])
        kills.append(True)
        assert store.join_labels(feedback(["z1"]), time.time(), 3600) == [("joined", None)]
        assert labelled(postgres_url) == {"z1": 1}
        kills.extend([True, True])  # killed on the retry as well
        with pytest.raises(StoreUnavailableError) as caught:
            store.join_labels(feedback(["z2", "z3"]), time.time(), 3600)
        assert not caught.value.outcome_unknown
        assert labelled(postgres_url) == {"z1": 1}  # nothing of it applied
        assert store.join_labels(feedback(["z2", "z3"]), time.time(), 3600) == [("joined", None)] * 2
    finally:
        store.close()


def test_while_the_server_is_down_operations_fail_fast_and_reconnects_are_spaced(
    local_postgres: LocalPostgres,  # noqa: F811
    postgres_url: str,  # noqa: F811
) -> None:
    events: list[str] = []
    store = open_store(postgres_url, on_event=events.append)
    try:
        with local_postgres.stopped():
            for _ in range(20):  # a burst of requests: one attempt at once, then none before its delay
                with pytest.raises(StoreUnavailableError) as caught:
                    store.join_labels(feedback(["w"]), time.time(), 3600)
                assert caught.value.retry_after >= 1
            assert events == ["lost", "reconnect_failed"]
            assert not store.check()
        # back: the next due attempt reconnects (waited for, not slept: the delay is jittered)
        deadline = time.monotonic() + 60
        while not store.check():
            assert time.monotonic() < deadline, events
            time.sleep(0.05)
        assert store.up
        assert events[-1] == "reconnected"
        assert events.count("lost") == 1
    finally:
        store.close()
