"""What the router's mirroring (rollout mirror / shadow copies) costs: router CPU per mirrored request
and the effect on the primary's latency, with wrk on 127.0.0.1 (issue 12).

    apt-get install -y wrk
    .venv/bin/python bench/router/mirror_bench.py --seconds 5 --out /tmp/mirror-bench.json

One router process in front of two constant ASGI backends (bench/router/fast_backend.py): the
primary arm (all the live weight) and a mirror arm (weight 0) that the router's `mirror` copies a
percent of the primary's requests to, compares row by row (score difference, label agreement) and
never returns. For each case (mirror off, 10 %, 50 %, 100 %, and 100 % to a mirror that answers after
`--slow-ms`, so copies pile up against `max_in_flight` and the timeout) and each concurrency: a
fresh router, 2 s of warm-up, then `--seconds` of wrk (one thread, one-row V2 body, sticky header).
Measured: the primary's throughput and p50/p99 as wrk sees them, the router's CPU time (utime +
stime from /proc, 10 ms ticks) per primary request, and from the router's own counters the copies by
outcome. `--rounds` repeats the cases interleaved; the table shows each figure's median. The CPU
per mirrored copy is (CPU per request at p % - CPU per request with the mirror off)
/ (p / 100). Everything is loopback; the run is bounded: rounds x 5 cases x len(--connections) x
(2 s + --seconds) plus start-ups, about 5 minutes with the defaults.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from run_bench import BIN, LUA, free_port, running  # noqa: E402

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}
TICKS = os.sysconf("SC_CLK_TCK")


def wrk(url: str, connections: int, seconds: int) -> dict[str, float]:
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(LUA), url]
    text = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=seconds + 30).stdout
    p50 = re.search(r"^\s+50%\s+([\d.]+)(us|ms|s)\s*$", text, re.M)
    p99 = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s)\s*$", text, re.M)
    done = re.search(r"^\s+(\d+) requests in ([\d.]+)s", text, re.M)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    if not (p50 and p99 and done):
        raise RuntimeError(f"unexpected wrk output:\n{text}")
    return {
        "requests": float(done.group(1)),
        "rps": float(done.group(1)) / float(done.group(2)),
        "p50_ms": float(p50.group(1)) * _UNITS[p50.group(2)],
        "p99_ms": float(p99.group(1)) * _UNITS[p99.group(2)],
        "non_2xx": float(errors.group(1)) if errors else 0.0,
    }


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (and its threads), from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def copies(port: int) -> dict[str, float]:
    """The router's shadow/mirror copies so far, by outcome."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("modeldeploy_router_shadow_requests_total{"):
            outcome = re.search(r'outcome="([^"]+)"', line)
            if outcome:
                out[outcome.group(1)] = out.get(outcome.group(1), 0.0) + float(line.rsplit(" ", 1)[1])
    return out


def router_config(primary: str, mirror: str, percent: float | None) -> str:
    arm = {"variant": "default", "model_name": "churn"}
    config: dict[str, object] = {
        "deployment": {"namespace": "bench", "name": "churn"},
        "arms": [
            {**arm, "revision": "r1", "weight_bp": 10_000, "endpoints": [primary]},
            {**arm, "revision": "r2", "weight_bp": 0, "endpoints": [mirror]},
        ],
        "sticky": {"header": "X-User-Id"},
    }
    if percent is not None:
        config["mirror"] = {
            "variant": "default",
            "revision": "r2",
            "percent": percent,
            "from_variant": "default",
        }
    return json.dumps(config)


def measure(
    name: str,
    percent: float | None,
    mirror_port: int,
    primary_port: int,
    args: argparse.Namespace,
    work: Path,
) -> list[dict[str, object]]:
    config = work / f"router-{len(list(work.glob('router-*.json')))}.json"
    config.write_text(router_config(f"127.0.0.1:{primary_port}", f"127.0.0.1:{mirror_port}", percent))
    port = free_port()
    cmd = [str(BIN / "modeldeploy-router"), "--config-file", str(config), "--host", "127.0.0.1"]
    cmd += ["--port", str(port), "--log-level", "warning"]
    url = f"http://127.0.0.1:{port}/v2/models/churn/infer"
    rows: list[dict[str, object]] = []
    with running(cmd, f"http://127.0.0.1:{port}/readyz", work / f"{config.stem}.log") as router:
        pid = router.pid  # the console script is the router's own Python process
        for connections in args.connections:
            wrk(url, connections, 2)  # warm-up: connections, caches, lazy imports
            before_cpu, before_copies = cpu_seconds(pid), copies(port)
            load = os.getloadavg()[0]
            found = wrk(url, connections, args.seconds)
            time.sleep(0.2)  # copies still in flight at the end are counted by their outcome
            cpu, after = cpu_seconds(pid) - before_cpu, copies(port)
            sent = {k: after.get(k, 0.0) - before_copies.get(k, 0.0) for k in after}
            rows.append(
                {
                    "case": name,
                    "percent": percent or 0.0,
                    "connections": connections,
                    "load_before": load,
                    **found,
                    "router_cpu_us_per_request": 1e6 * cpu / max(found["requests"], 1.0),
                    "copies": sent,
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    return rows


def medians(rows: list[dict[str, object]]) -> list[dict[str, object]]:
    """One row per (case, connections): the median of each figure over the rounds."""
    groups: dict[tuple[object, object], list[dict[str, object]]] = {}
    for row in rows:
        groups.setdefault((row["case"], row["connections"]), []).append(row)
    out = []
    for same in groups.values():
        merged = dict(same[0])
        for key in ("rps", "p50_ms", "p99_ms", "router_cpu_us_per_request", "load_before"):
            merged[key] = statistics.median(float(r[key]) for r in same)  # type: ignore[arg-type]
        outcomes = {k for r in same for k in r["copies"]}  # type: ignore[attr-defined]
        merged["copies"] = {
            k: statistics.median(float(r["copies"].get(k, 0.0)) for r in same)  # type: ignore[attr-defined]
            for k in outcomes
        }
        merged["rounds"] = len(same)
        out.append(merged)
    return out


def table(rows: list[dict[str, object]]) -> str:
    lines = [
        "| case | c | req/s | p50 ms | p99 ms | router CPU µs/req | CPU µs per copy | copies ok / dropped / "
        "timeout / error | load |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    base = {r["connections"]: r for r in rows if r["case"] == "mirror off"}
    for row in rows:
        cpu = float(row["router_cpu_us_per_request"])  # type: ignore[arg-type]
        percent = float(row["percent"])  # type: ignore[arg-type]
        off = base.get(row["connections"])
        per_copy = "-"
        if off is not None and percent > 0:
            extra = cpu - float(off["router_cpu_us_per_request"])  # type: ignore[arg-type]
            per_copy = f"{extra / (percent / 100):+.0f}"
        sent = row["copies"]
        assert isinstance(sent, dict)
        outcomes = " / ".join(f"{sent.get(k, 0):,.0f}" for k in ("ok", "dropped", "timeout", "error"))
        lines.append(
            f"| {row['case']} | {row['connections']} | {row['rps']:,.0f} | {row['p50_ms']:.2f} "
            f"| {row['p99_ms']:.2f} | {cpu:.0f} | {per_copy} | {outcomes} | {row['load_before']:.1f} |"
        )
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--connections", type=int, nargs="+", default=[1, 16])
    ap.add_argument("--slow-ms", type=float, default=200.0, help="the slow mirror's answer delay")
    ap.add_argument("--rounds", type=int, default=3, help="every case this many times, interleaved")
    ap.add_argument("--out", type=Path, help="write the raw figures as JSON here")
    args = ap.parse_args()
    rows: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory(prefix="mirror-bench-") as tmp:
        work = Path(tmp)
        ports = {name: free_port() for name in ("primary", "mirror", "slow")}

        def backend(name: str) -> list[str]:
            app = [
                "--app-dir",
                str(HERE),
                "fast_backend:app",
                "--host",
                "127.0.0.1",
                "--port",
                str(ports[name]),
            ]
            return [str(BIN / "uvicorn"), *app, "--loop", "uvloop", "--http", "httptools", "--no-access-log"]

        slow_env = {"BENCH_DELAY_MS": str(args.slow_ms)}
        with (
            running(backend("primary"), f"http://127.0.0.1:{ports['primary']}/", work / "primary.log"),
            running(backend("mirror"), f"http://127.0.0.1:{ports['mirror']}/", work / "mirror.log"),
            running(backend("slow"), f"http://127.0.0.1:{ports['slow']}/", work / "slow.log", slow_env),
        ):
            cases = (
                ("mirror off", None, "mirror"),
                ("mirror 10%", 10.0, "mirror"),
                ("mirror 50%", 50.0, "mirror"),
                ("mirror 100%", 100.0, "mirror"),
                (f"mirror 100%, answers after {args.slow_ms:g} ms", 100.0, "slow"),
            )
            for _ in range(args.rounds):  # interleaved: a busy minute on the machine hits every case
                for name, percent, mirror in cases:
                    rows += measure(name, percent, ports[mirror], ports["primary"], args, work)
    print(table(medians(rows)))
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
