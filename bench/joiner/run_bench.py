"""Label joiner throughput and storage, SQLite and PostgreSQL, on 127.0.0.1.

    .venv/bin/python bench/joiner/run_bench.py --predictions 200000 --out /tmp/joiner-bench.json

For each store: a real `modeldeploy joiner` process (one uvicorn worker); N prediction records posted
in batches of --batch, then N labels in batches of --batch (every label joins), each phase timed end
to end from one client (HTTP, JSON parsing, per-item answers, one transaction per request). Then the
database's size with every prediction labelled, scaled to one million predictions, and the joiner
process's memory from /proc (resident set at start, and its peak after each phase). Then the same
inserts and joins straight on the store (no HTTP, no JSON; another N rows in the same database).
PostgreSQL is a private server started here (Debian's binaries, as the tests do; fsync on, the
default). Prints a Markdown table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "support"))

from local_postgres import LocalPostgres, _bin_dir  # noqa: E402

from local_processes import free_port  # noqa: E402


def memory_mb(pid: int) -> dict[str, float]:
    """The process's resident set now (VmRSS) and its peak so far (VmHWM), in MB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024  # kB
    return {"rss_mb": fields["VmRSS"], "peak_rss_mb": fields["VmHWM"]}


@contextmanager
def joiner(database: str, log: Path) -> Iterator[tuple[str, int]]:
    port = free_port()
    env = {**os.environ, "MODELDEPLOY_JOINER_DATABASE": database, "MODELDEPLOY_JOINER_HOST": "127.0.0.1"}
    env["MODELDEPLOY_JOINER_LOG_LEVEL"] = "warning"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "modeldeploy_serving.cli", "joiner", "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"joiner exited:\n{log.read_text()}")
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"joiner not ready:\n{log.read_text()}")
            time.sleep(0.1)
        yield url, proc.pid
    finally:
        proc.terminate()
        proc.wait(30)


def run_one(name: str, database: str, n: int, batch: int, work: Path) -> dict[str, Any]:
    rng = random.Random(1)  # noqa: S311 (bench data, not cryptography)
    now = time.time()
    ids = [f"req-{i:09d}-{rng.getrandbits(32):08x}" for i in range(n)]  # request ids like a UUID's length
    with joiner(database, work / f"{name}.log") as (url, pid), httpx.Client(base_url=url, timeout=120) as c:
        memory = {"start": memory_mb(pid)}
        start = time.perf_counter()
        for s in range(0, n, batch):
            records = [
                {
                    "request_id": rid,
                    "deployment": "churn",
                    "variant": "a" if i % 2 else "b",
                    "revision": "7f9c2b1",
                    "model_version": "v1",
                    "score": rng.random(),
                    "label": int(rng.random() < 0.5),
                    "time": now - rng.random() * 86_400,
                }
                for i, rid in enumerate(ids[s : s + batch])
            ]
            r = c.post("/v1/predictions", json={"predictions": records})
            if r.status_code != 200 or r.json()["stored"] != len(records):
                raise RuntimeError(r.text[:300])
        ingest = time.perf_counter() - start
        memory["predictions"] = memory_mb(pid)
        order = ids[:]
        rng.shuffle(order)  # labels arrive in another order than the predictions
        start = time.perf_counter()
        for s in range(0, n, batch):
            labels = [{"request_id": rid, "label": int(rng.random() < 0.3)} for rid in order[s : s + batch]]
            r = c.post("/v1/feedback", json={"labels": labels})
            if r.status_code != 200 or r.json()["joined"] != len(labels):
                raise RuntimeError(r.text[:300])
        join = time.perf_counter() - start
        memory["labels"] = memory_mb(pid)
        start = time.perf_counter()
        r = c.get("/v1/effectiveness", params={"fresh": 1})
        assert r.status_code == 200
        summary_seconds = time.perf_counter() - start
        memory["summary"] = memory_mb(pid)
    size = measure_size(name, database, work)
    direct = store_only(database, n, batch)
    return {
        **direct,
        "store": name,
        "predictions": n,
        "batch": batch,
        "predictions_per_second": n / ingest,
        "labels_joined_per_second": n / join,
        "summary_seconds": summary_seconds,
        "bytes": size,
        "mb_per_million_predictions": size / n * 1e6 / 1e6,
        "memory_mb": memory,
    }


def store_only(database: str, n: int, batch: int) -> dict[str, float]:
    """The same work straight on the store (no HTTP, no JSON): what the database side costs."""
    from modeldeploy_serving.joiner.parse import Feedback, PredictionRecord
    from modeldeploy_serving.joiner.store import open_store

    rng = random.Random(2)  # noqa: S311
    now = time.time()
    store = open_store(database)
    try:
        records = [
            PredictionRecord(i, f"s-{i:09d}-{rng.getrandbits(32):08x}", "churn", "a", "7f9c2b1", "v1",
                             rng.random(), 1, 2, now)
            for i in range(n)
        ]  # fmt: skip
        start = time.perf_counter()
        for s in range(0, n, batch):
            store.add_predictions(records[s : s + batch], now)
        ingest = time.perf_counter() - start
        labels = [Feedback(i, r.request_id, 1, None) for i, r in enumerate(records)]
        rng.shuffle(labels)
        start = time.perf_counter()
        for s in range(0, n, batch):
            store.join_labels(labels[s : s + batch], now, 86_400)
        join = time.perf_counter() - start
    finally:
        store.close()
    return {"store_predictions_per_second": n / ingest, "store_labels_joined_per_second": n / join}


def measure_size(name: str, database: str, work: Path) -> int:
    if name == "sqlite":
        import sqlite3

        path = Path(database[len("sqlite:///") :])
        with sqlite3.connect(path) as conn:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return path.stat().st_size
    import psycopg

    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE predictions")
        row = conn.execute(
            "SELECT pg_total_relation_size('predictions') + pg_total_relation_size('arms')"
        ).fetchone()
        assert row is not None
        return int(row[0])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--predictions", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--stores", default="sqlite,postgresql")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="joiner-bench-"))
    results = []
    try:
        for store in args.stores.split(","):
            if store == "sqlite":
                results.append(
                    run_one(store, f"sqlite:///{work / 'joiner.db'}", args.predictions, args.batch, work)
                )
                continue
            bin_dir = _bin_dir()
            if bin_dir is None:
                print("PostgreSQL binaries not found; skipped", file=sys.stderr)
                continue
            root = Path(tempfile.mkdtemp(prefix="joiner-bench-pg-"))
            pg = LocalPostgres(bin_dir, root, fsync=True)
            pg.start()
            try:
                results.append(run_one(store, pg.new_database(), args.predictions, args.batch, work))
            finally:
                pg.stop()
                shutil.rmtree(root, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(
        "| store | predictions | batch | HTTP: predictions stored/s | HTTP: labels joined/s "
        "| store only: stored/s | store only: joined/s | summary (s) | MB per million predictions |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(
            f"| {r['store']} | {r['predictions']:,} | {r['batch']} | {r['predictions_per_second']:,.0f} | "
            f"{r['labels_joined_per_second']:,.0f} | {r['store_predictions_per_second']:,.0f} | "
            f"{r['store_labels_joined_per_second']:,.0f} | {r['summary_seconds']:.2f} | "
            f"{r['mb_per_million_predictions']:.0f} |"
        )
    print()
    print("| store | joiner RSS at start (MB) | peak after predictions | after labels | after the summary |")
    print("|---|---:|---:|---:|---:|")
    for r in results:
        m = r["memory_mb"]
        print(
            f"| {r['store']} | {m['start']['rss_mb']:.0f} | {m['predictions']['peak_rss_mb']:.0f} | "
            f"{m['labels']['peak_rss_mb']:.0f} | {m['summary']['peak_rss_mb']:.0f} |"
        )
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
