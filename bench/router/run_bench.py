"""Router-in-front vs the backend directly, in the same run, with wrk on 127.0.0.1.

    .venv/bin/python bench/router/run_bench.py --seconds 10 --out /tmp/router-bench.json
    .venv/bin/python bench/router/run_bench.py --model-uri examples/churn/bundle   # also the model server

For each backend (the constant ASGI app; optionally `modeldeploy serve` with a real model) and each
concurrency (16, 64): wrk straight at the backend, then wrk at the router in front of it (one arm,
sticky header configured and present, so the hash runs on every request). One uvicorn worker per
process, wrk with one thread; everything shares the machine's cores. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
LUA = HERE / "v2_one_row.lua"
_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def running(
    cmd: list[str], ready_url: str, log: Path, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(ready_url, timeout=1).status_code < 500:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{cmd[0]} did not start; see {log}")
            time.sleep(0.1)
        yield proc
    finally:
        proc.terminate()
        proc.wait(timeout=15)


def wrk(
    url: str,
    connections: int,
    seconds: int,
    *,
    script: Path = LUA,
    threads: int = 1,
    env: dict[str, str] | None = None,
) -> dict[str, float]:
    cmd = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script), url]
    text = subprocess.run(
        cmd, capture_output=True, text=True, check=True, env={**os.environ, **(env or {})}
    ).stdout
    p50 = re.search(r"^\s+50%\s+([\d.]+)(us|ms|s)\s*$", text, re.M)
    p99 = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s)\s*$", text, re.M)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
    requests = re.search(r"^\s*(\d+) requests in ", text, re.M)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if not (p50 and p99 and rps and requests):
        raise RuntimeError(f"unexpected wrk output:\n{text}")
    return {
        "rps": float(rps.group(1)),
        "p50_ms": float(p50.group(1)) * _UNITS[p50.group(2)],
        "p99_ms": float(p99.group(1)) * _UNITS[p99.group(2)],
        "non_2xx": float(errors.group(1)) if errors else 0.0,
        "requests": float(requests.group(1)),
        "socket_errors": float(sum(int(n) for n in socket_errors.groups())) if socket_errors else 0.0,
    }


def router_config(backend: str) -> str:
    return json.dumps(
        {
            "deployment": {"namespace": "bench", "name": "churn"},
            "arms": [
                {
                    "variant": "default",
                    "revision": "r1",
                    "weight_bp": 10_000,
                    "endpoints": [backend],
                    "model_name": "churn",
                }
            ],
            "sticky": {"header": "X-User-Id"},
        }
    )


def bench_backend(
    name: str, backend_cmd: list[str], port: int, ready_path: str, args: argparse.Namespace, work: Path
) -> list[dict[str, object]]:
    infer = "/v2/models/churn/infer"
    config = work / f"{name}.json"
    config.write_text(router_config(f"127.0.0.1:{port}"))
    router_port = free_port()
    router_cmd = [str(BIN / "modeldeploy-router"), "--config-file", str(config), "--host", "127.0.0.1"]
    router_cmd += ["--port", str(router_port), "--log-level", "warning"]
    rows: list[dict[str, object]] = []
    with (
        running(backend_cmd, f"http://127.0.0.1:{port}{ready_path}", work / f"{name}.log"),
        running(router_cmd, f"http://127.0.0.1:{router_port}/readyz", work / f"{name}-router.log"),
    ):
        for connections in args.connections:
            direct_url, routed_url = (
                f"http://127.0.0.1:{port}{infer}",
                f"http://127.0.0.1:{router_port}{infer}",
            )
            wrk(direct_url, connections, 2)  # warm-up: connections, caches, lazy imports
            wrk(routed_url, connections, 2)
            direct = wrk(direct_url, connections, args.seconds)
            routed = wrk(routed_url, connections, args.seconds)
            rows.append({"backend": name, "connections": connections, "direct": direct, "router": routed})
    return rows


def table(rows: list[dict[str, object]]) -> str:
    lines = [
        "| backend | c | direct req/s | via router req/s | ratio | direct p50 ms | router p50 ms "
        "| added p50 ms | direct p99 ms | router p99 ms |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        d, r = row["direct"], row["router"]
        assert isinstance(d, dict)
        assert isinstance(r, dict)
        lines.append(
            f"| {row['backend']} | {row['connections']} | {d['rps']:,.0f} | {r['rps']:,.0f} "
            f"| {100 * r['rps'] / d['rps']:.0f}% | {d['p50_ms']:.2f} | {r['p50_ms']:.2f} "
            f"| {r['p50_ms'] - d['p50_ms']:+.2f} | {d['p99_ms']:.2f} | {r['p99_ms']:.2f} |"
        )
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--connections", type=int, nargs="+", default=[1, 16, 64])
    ap.add_argument("--model-uri", help="also benchmark `modeldeploy serve` with this bundle")
    ap.add_argument("--out", type=Path, help="write the raw figures as JSON here")
    args = ap.parse_args()
    rows: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory(prefix="router-bench-") as tmp:
        work = Path(tmp)
        port = free_port()
        const = [str(BIN / "uvicorn"), "--app-dir", str(HERE), "fast_backend:app", "--host", "127.0.0.1"]
        const += ["--port", str(port), "--loop", "uvloop", "--http", "httptools", "--no-access-log"]
        rows += bench_backend("constant ASGI", const, port, "/", args, work)
        if args.model_uri:
            port = free_port()
            serve = [str(BIN / "modeldeploy"), "serve", "--model-uri", args.model_uri, "--name", "churn"]
            serve += ["--host", "127.0.0.1", "--port", str(port)]
            rows += bench_backend("modeldeploy serve", serve, port, "/v2/health/ready", args, work)
    print(table(rows))
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
