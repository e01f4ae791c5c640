"""REST throughput with the prediction log at 100% sampling against the log off (issue 14: at most
10% lower), in the same run: the single-row V2 JSON hot path, wrk -t1 -c16, modes interleaved.

    .venv/bin/python bench/serving/predlog_bench.py --out /tmp/predlog-bench --rounds 3 --seconds 8

Modes: `off`; `kafka` (sink: a topic of a real Kafka 4.x broker on 127.0.0.1, started here from
tests/kafka); `stdout` (JSON lines on the server's stdout, here a file). The policy keeps 2 fields,
pseudonymises 2 (HMAC per value) and drops the rest, as a realistic one would. Each round starts a
fresh server per mode, warms it up 2 s, then measures; the modes alternate so that load from other
processes on a shared machine hits them alike, and each round starts one slot later in the list
than the one before (no mode always follows the same neighbour). Writes results.json and prints
requests/s, p50/p99.

The figure for the goal is the median over rounds of each round's paired ratio, a mode's requests/s
against the `off` slot of the same round: the load of other processes drifts over minutes, so a
ratio of two slots seconds apart is steadier than a ratio of medians taken over the whole run. A
digit after a mode's name runs the same mode in another slot (`off2`: a second `off` a round, whose
paired ratio against `off` is the noise floor of the run: what a difference of zero looks like).

    .venv/bin/python bench/serving/predlog_bench.py --out /tmp/predlog-bench --rounds 9 --seconds 6 \
        --modes off kafka off2 stdout
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO / "tests" / "support"))

from ab_quick import ROW, free_port, wrk  # noqa: E402


def _cpu_seconds(pid: int) -> float:
    """utime + stime of a process and of its live children (a log-writer process, if any), all
    their threads, from /proc."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if stat.parent.name == str(pid) or fields[1] == str(pid):
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def _thread_cpu(pid: int) -> dict[str, float]:
    """The server's CPU seconds by thread: `main` (the event loop: the thread whose id is the
    process's), `python` (other threads named as the interpreter: the log's drain thread, the
    micro-batcher's), `rdk` (librdkafka's own threads, named rdk:*), `other`; from /proc."""
    out = {"main": 0.0, "python": 0.0, "rdk": 0.0, "other": 0.0}
    tick = os.sysconf("SC_CLK_TCK")
    for task in Path(f"/proc/{pid}/task").glob("[0-9]*"):
        try:
            head, _, rest = (task / "stat").read_text().rpartition(")")
            fields = rest.split()
        except OSError:
            continue
        comm = head.partition("(")[2]
        kind = (
            "main"
            if task.name == str(pid)
            else "rdk"
            if comm.startswith("rdk:")
            else "python"
            if comm.startswith("python")
            else "other"
        )
        out[kind] += (int(fields[11]) + int(fields[12])) / tick
    return out


def measure(
    spec: str, bundle: Path, body: Path, seconds: int, out: Path, bootstrap: str, i: int, srcs: dict[str, str]
) -> dict[str, Any]:
    """One server of a mode: `off`, `kafka` or `stdout`, optionally `@name` to run the serving
    package of another checkout (--src name=DIR: e.g. the commit before a change, same run)."""
    mode, _, tag = spec.partition("@")
    mode = mode.rstrip("0123456789")  # off2: a second slot of `off`
    port = free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("MODELDEPLOY_SERVER_", "MODELDEPLOY_PREDLOG_"))
    }
    if tag:
        env["PYTHONPATH"] = os.pathsep.join([f"{srcs[tag]}/serving/src", env.get("PYTHONPATH", "")])
    env.update(
        {
            "MODELDEPLOY_SERVER_MODEL_URI": str(bundle),
            "MODELDEPLOY_SERVER_HOST": "127.0.0.1",
            "MODELDEPLOY_SERVER_PORT": str(port),
            "MODELDEPLOY_SERVER_LOG_LEVEL": "warning",
        }
    )
    if mode != "off":
        key = out / "hmac.key"
        key.write_text("bench-key-0123456789abcdef")
        env.update(
            {
                "MODELDEPLOY_PREDLOG_ENABLED": "true",
                "MODELDEPLOY_PREDLOG_SAMPLE_RATE": "1.0",
                "MODELDEPLOY_PREDLOG_SINK": mode,
                "MODELDEPLOY_PREDLOG_HMAC_KEY_FILE": str(key),
                "MODELDEPLOY_PREDLOG_KEEP": "number_of_projects,number_of_issues",
                "MODELDEPLOY_PREDLOG_PSEUDONYMISE": "at_mentions,issues_viewed",
                "MODELDEPLOY_PREDLOG_DEPLOYMENT": "churn",
                "MODELDEPLOY_PREDLOG_CAPACITY": "100000",
            }
        )
        if mode == "kafka":
            env["MODELDEPLOY_PREDLOG_KAFKA_BOOTSTRAP_SERVERS"] = bootstrap
            env["MODELDEPLOY_PREDLOG_KAFKA_TOPIC"] = "predictions"
    log = out / f"{spec}-{i}.log"
    with log.open("wb") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "modeldeploy_serving.cli", "serve"], env=env, stdout=fh, stderr=fh
        )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/v2/health/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        url = f"http://127.0.0.1:{port}/v2/models/churn/infer"
        wrk(url, body, 2)
        cpu_before = _cpu_seconds(proc.pid)
        threads_before = _thread_cpu(proc.pid)
        result = wrk(url, body, seconds)
        cpu = _cpu_seconds(proc.pid) - cpu_before
        threads_after = _thread_cpu(proc.pid)
        requests = result["rps"] * seconds
        # where the server's CPU goes: the event loop's thread against the others (the drain's)
        result["cpu_us_per_request_by_thread"] = {
            k: (threads_after[k] - threads_before[k]) / requests * 1e6 for k in threads_after
        }
        # CPU per request (server process: event loop, drain thread, librdkafka's threads): what the
        # log costs, robust to other load on a shared machine, unlike requests/s.
        result["cpu_us_per_request"] = cpu / (result["rps"] * seconds) * 1e6
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        counts = {
            line.split('outcome="')[1].split('"')[0]: float(line.rsplit(" ", 1)[1])
            for line in metrics.splitlines()
            if line.startswith("modeldeploy_prediction_log_records_total{")
        }
        return {
            **result,
            "log": counts,
            "loadavg_before": os.getloadavg()[0],
            "utc": time.strftime("%H:%M:%S", time.gmtime()),
        }
    finally:
        proc.terminate()
        proc.wait(10)


def _median(xs: list[float]) -> float:
    xs = sorted(xs)
    n = len(xs)
    return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2


def _paired(rs: list[dict[str, Any]], off: list[dict[str, Any]]) -> dict[str, Any]:
    """Each round's ratio against the same round's `off` slot: their median, range, and the same
    for CPU per request."""
    rps = [r["rps"] / o["rps"] - 1 for r, o in zip(rs, off, strict=True)]
    cpu = [r["cpu_us_per_request"] / o["cpu_us_per_request"] - 1 for r, o in zip(rs, off, strict=True)]
    return {
        "paired_vs_off_by_round": rps,
        "paired_vs_off": _median(rps),
        "paired_vs_off_min": min(rps),
        "paired_vs_off_max": max(rps),
        "paired_cpu_vs_off_by_round": cpu,
        "paired_cpu_vs_off": _median(cpu),
    }


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=8)
    ap.add_argument("--modes", nargs="+", default=["off", "kafka", "stdout"])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument(
        "--src", action="append", default=[], help="name=DIR: modes `<mode>@name` run DIR's serving"
    )
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(REPO / "examples" / "churn"))
    import make_models

    from kafka_broker import create_topic, kafka_broker

    bundle = args.out / "models" / "v1"
    if not (bundle / "manifest.json").exists():
        bundle = make_models.build(args.out / "models")["v1"]
    body = args.out / "one.json"
    body.write_bytes(
        json.dumps(
            {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 14], "data": ROW}]}
        ).encode()
    )
    srcs = dict(s.split("=", 1) for s in args.src)
    results: dict[str, list[dict[str, Any]]] = {m: [] for m in args.modes}
    with kafka_broker(Path(tempfile.mkdtemp(prefix="kafka-", dir=args.out))) as broker:  # a fresh log dir
        create_topic(broker.bootstrap, "predictions", 1)
        for i in range(args.rounds):
            k = i % len(args.modes)
            for mode in args.modes[k:] + args.modes[:k]:
                r = measure(mode, bundle, body, args.seconds, args.out, broker.bootstrap, i, srcs)
                results[mode].append(r)
                print(
                    f"round {i} {mode:14s} {r['rps']:8.0f} req/s  {r['cpu_us_per_request']:.1f} cpu-us/req  "
                    f"p50 {r['p50_ms']:.2f} ms  "
                    f"p99 {r['p99_ms']:.2f} ms  log {r['log']}  by thread "
                    + " ".join(f"{k} {v:.1f}" for k, v in r["cpu_us_per_request_by_thread"].items() if v),
                    flush=True,
                )
    summary = {}
    for mode, rs in results.items():
        rps = sorted(r["rps"] for r in rs)
        cpu = sorted(r["cpu_us_per_request"] for r in rs)
        summary[mode] = {
            "median_rps": rps[len(rps) // 2],
            "all_rps": rps,
            "median_cpu_us_per_request": cpu[len(cpu) // 2],
        }
    base = summary["off"]["median_rps"] if "off" in summary else None
    for mode, s in summary.items():
        if base:
            s["vs_off"] = s["median_rps"] / base - 1
            s["cpu_vs_off"] = s["median_cpu_us_per_request"] / summary["off"]["median_cpu_us_per_request"] - 1
            s.update(_paired(results[mode], results["off"]))
        print(
            f"{mode:14s} median {s['median_rps']:8.0f} req/s"
            + (
                f"  {s['vs_off']:+.1%} req/s, {s['cpu_vs_off']:+.1%} cpu/req vs off (medians);"
                f" paired by round {s['paired_vs_off']:+.1%} req/s"
                f" [{s['paired_vs_off_min']:+.1%}, {s['paired_vs_off_max']:+.1%}],"
                f" {s['paired_cpu_vs_off']:+.1%} cpu/req"
                if base
                else ""
            )
        )
    (args.out / "results.json").write_text(json.dumps({"results": results, "summary": summary}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
