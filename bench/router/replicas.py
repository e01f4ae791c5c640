"""The router per core: 1, 2 and 4 router replicas, requests/s per busy router core from /proc.

    .venv/bin/python bench/router/replicas.py --out /tmp/router-replicas.json

Part 1, the router as the bottleneck: the constant ASGI backend (fast_backend.py, uvicorn with
--backend-workers workers) behind 0 (wrk straight at the backend), 1, 2 and 4 router replicas, one
uvicorn process each on its own port, single-row V2 requests (v2_one_row.lua) at c = 16 and 64.
The load is spread the way a Kubernetes Service spreads connections over router pods: wrk runs with
as many threads as the largest replica count and thread i sends all its connections to replica
i mod n (spread.lua), so every replica holds the same share of the connections. (The router does not
bind with SO_REUSEPORT; in a cluster each replica is its own pod, with its own port.)

Part 2, end to end (skipped with --no-model): `modeldeploy serve` with the churn example's model
(one worker) behind 0, 1 and 2 replicas: single-row requests at c = 64 and 1,024-row JSON and binary
requests at c = 4 (the bodies of bench/serving/run_bench.py), rows/s per busy core of the router
and the model server together.

CPU time, not wall time, is the per-core figure: utime + stime of every process of each router
replica (and of the backend, and wrk) from /proc over the measured run, so "requests per router
CPU-second" is what one router core serves when busy, whatever else shares the machine. The wall-clock
requests/s come from wrk and need a quiet machine. Prints a Markdown table; --out writes JSON.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from urllib.parse import urlsplit

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
SPREAD = HERE / "spread.lua"
INFER = "/v2/models/churn/infer"
TICKS = os.sysconf("SC_CLK_TCK")
BATCH_CONNECTIONS = 4  # as bench/serving/run_bench.py's 1,024-row requests


def _load(name: str, path: Path) -> ModuleType:
    """The neighbouring benches' helpers (both files are called run_bench.py, hence by path)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


rb = _load("router_run_bench", HERE / "run_bench.py")  # wrk, running, router_config, free_port
sb = _load("serving_run_bench", REPO / "bench" / "serving" / "run_bench.py")  # bodies, serve's settings


# ---- pure helpers (tests/unit/bench/test_bench_router_replicas.py) ----


def parse_stat(text: str) -> tuple[int, int]:
    """(parent pid, utime + stime in clock ticks) from a /proc/<pid>/stat line. The command name
    (field 2) is in parentheses and may itself hold spaces and parentheses: the fields are counted
    from the last ')'."""
    rest = text[text.rindex(")") + 2 :].split()
    # rest[0] is field 3 (state): ppid is field 4, utime field 14, stime field 15.
    return int(rest[1]), int(rest[11]) + int(rest[12])


def tree_ticks(stats: dict[int, str], roots: Sequence[int]) -> int:
    """CPU ticks of the roots and all their descendants (uvicorn --workers forks its workers), from
    {pid: stat line} of every process; a line that does not parse (a process gone mid-read) counts 0."""
    parsed: dict[int, tuple[int, int]] = {}
    for pid, text in stats.items():
        try:
            parsed[pid] = parse_stat(text)
        except (ValueError, IndexError):
            continue
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in parsed.items():
        children.setdefault(ppid, []).append(pid)
    total, seen, todo = 0, set(), list(roots)
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        total += parsed.get(pid, (0, 0))[1]
        todo += children.get(pid, [])
    return total


def per_core(work: float, cpu_seconds: float) -> float | None:
    """Work (requests, rows) per CPU-second: what one fully busy core does. None without CPU time
    (too short a run for the clock's ticks)."""
    return work / cpu_seconds if cpu_seconds > 0 else None


def wrk_threads(replica_counts: Sequence[int], connections: Sequence[int]) -> int:
    """One thread count for every run (the load generator stays the same across replica counts):
    a multiple of every replica count, so each replica gets the same number of threads, and no more
    threads than the fewest connections."""
    threads = math.lcm(*[n for n in replica_counts if n > 0] or [1])
    fewest = min(connections)
    if threads > fewest or any(c % threads for c in connections):
        raise ValueError(f"connections {list(connections)} must be multiples of {threads} (wrk threads)")
    return threads


# ---- processes ----


def all_stats() -> dict[int, str]:
    stats = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stats[int(entry)] = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue  # gone since listdir
    return stats


def children_cpu() -> float:
    """CPU seconds of this process's waited-for children: wrk, reaped when it exits (the servers
    are reaped only at the end, so the difference over one wrk run is wrk's own CPU)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@dataclass
class Group:
    """The processes whose CPU one column reports: the backend, or one router replica."""

    name: str
    pids: list[int]

    def seconds(self, stats: dict[int, str]) -> float:
        return tree_ticks(stats, self.pids) / TICKS


def measure(
    url: str,
    connections: int,
    args: argparse.Namespace,
    routers: list[Group],
    backend: Group,
    ports: list[int],
    body_env: dict[str, str],
) -> dict[str, object]:
    env = {**body_env, "WRK_PORTS": ",".join(map(str, ports))}
    load_before = os.getloadavg()[0]
    before, wrk_before, start = all_stats(), children_cpu(), time.monotonic()
    result = rb.wrk(url, connections, args.seconds, script=SPREAD, threads=args.threads, env=env)
    after, wrk_cpu, wall = all_stats(), children_cpu() - wrk_before, time.monotonic() - start
    replica_cpu = [g.seconds(after) - g.seconds(before) for g in routers]
    router_cpu = sum(replica_cpu)
    backend_cpu = backend.seconds(after) - backend.seconds(before)
    requests = result["requests"]
    return {
        **result,
        "replicas": len(routers),
        "connections": connections,
        "wrk_threads": args.threads,
        "wall_s": round(wall, 2),
        "loadavg_before": round(load_before, 2),
        "router_cpu_s": round(router_cpu, 2),
        "router_cores": round(router_cpu / wall, 2),
        "replica_cores": [round(s / wall, 2) for s in replica_cpu],
        "backend_cpu_s": round(backend_cpu, 2),
        "backend_cores": round(backend_cpu / wall, 2),
        "wrk_cores": round(wrk_cpu / wall, 2),
        "requests_per_router_cpu_s": per_core(requests, router_cpu),
        "requests_per_backend_cpu_s": per_core(requests, backend_cpu),
    }


@contextmanager
def routers(count: int, backend_port: int, work: Path, tag: str) -> Iterator[tuple[list[Group], list[int]]]:
    """count router replicas in front of the backend, each on its own port (none: the backend's)."""
    if count == 0:
        yield [], [backend_port]
        return
    config = work / f"{tag}-router.json"
    config.write_text(rb.router_config(f"127.0.0.1:{backend_port}"))
    groups, ports = [], []
    with ExitStack() as stack:
        for i in range(count):
            port = rb.free_port()
            cmd = [str(rb.BIN / "modeldeploy-router"), "--config-file", str(config)]
            cmd += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
            ready = f"http://127.0.0.1:{port}/readyz"
            proc = stack.enter_context(rb.running(cmd, ready, work / f"{tag}-router-{i}.log"))
            groups.append(Group(f"router-{i}", [proc.pid]))
            ports.append(port)
        yield groups, ports


def run_points(
    label: str,
    backend: Group,
    backend_port: int,
    points: list[tuple[str, int, dict[str, str], int]],
    replica_counts: list[int],
    args: argparse.Namespace,
    work: Path,
) -> list[dict[str, object]]:
    """Every (load, connections) point at every replica count; a 2 s warm-up per replica count."""
    rows: list[dict[str, object]] = []
    for count in replica_counts:
        with routers(count, backend_port, work, f"{label}-{count}") as (groups, ports):
            url = f"http://127.0.0.1:{ports[0]}{INFER}"
            warm_env = {**points[0][2], "WRK_PORTS": ",".join(map(str, ports))}
            rb.wrk(url, points[0][1], 2, script=SPREAD, threads=args.threads, env=warm_env)
            for load, connections, body_env, rows_per_request in points:
                row = measure(url, connections, args, groups, backend, ports, body_env)
                row.update(backend=label, load=load, rows_per_request=rows_per_request)
                if rows_per_request > 1:
                    row["rows_per_s"] = float(row["rps"]) * rows_per_request  # type: ignore[arg-type]
                cpu = float(row["router_cpu_s"]) + float(row["backend_cpu_s"])  # type: ignore[arg-type]
                row["rows_per_cpu_s_end_to_end"] = per_core(
                    float(row["requests"]) * rows_per_request,  # type: ignore[arg-type]
                    cpu,
                )
                print(f"   {label} replicas={count} {load} c={connections}: {brief(row)}", file=sys.stderr)
                rows.append(row)
    return rows


def brief(row: dict[str, object]) -> str:
    keys = ("rps", "router_cores", "replica_cores", "backend_cores", "wrk_cores", "requests_per_router_cpu_s")
    return ", ".join(f"{k}={row[k]}" for k in keys)


def constant_part(args: argparse.Namespace, work: Path) -> list[dict[str, object]]:
    port = rb.free_port()
    cmd = [str(rb.BIN / "uvicorn"), "--app-dir", str(HERE), "fast_backend:app", "--host", "127.0.0.1"]
    cmd += ["--port", str(port), "--loop", "uvloop", "--http", "httptools", "--no-access-log"]
    cmd += ["--log-level", "warning", "--workers", str(args.backend_workers)]
    body = {"WRK_BODY_SCRIPT": str(rb.LUA)}
    points = [("one-row", c, body, 1) for c in args.connections]
    with rb.running(cmd, f"http://127.0.0.1:{port}/", work / "constant.log") as proc:
        backend = Group("constant ASGI", [proc.pid])
        return run_points("constant ASGI", backend, port, points, [0, *args.replicas], args, work)


def model_part(args: argparse.Namespace, work: Path) -> list[dict[str, object]]:
    sys.path.insert(0, str(REPO / "examples" / "churn"))
    import make_models  # the model and rows of bench/serving/run_bench.py (its per-core section)

    bundle = Path(args.model_uri) if args.model_uri else make_models.build(work / "models")["v1"]
    bodies = sb.write_bodies(work / "bodies", make_models.generate(2000, 99)[0])
    lua = str(sb.HERE / "body.lua")

    def body(kind: str) -> dict[str, str]:
        path, header_length = bodies[kind]
        return {
            "WRK_BODY_SCRIPT": lua,
            "BODY_FILE": str(path),
            "BINARY_HEADER_LENGTH": str(header_length or ""),
        }

    points = [("one-row", args.connections[-1], body("one"), 1)]
    points += [(kind, BATCH_CONNECTIONS, body(kind), 1024) for kind in ("batch_json", "batch_binary")]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELDEPLOY_SERVER_")}
    spec = sb.modeldeploy_spec("modeldeploy serve", bundle, env, 1, {})
    port = urlsplit(spec.ready_url).port
    with rb.running(spec.cmd, spec.ready_url, work / "serve.log", env=spec.env) as proc:
        backend = Group("modeldeploy serve", [proc.pid])
        return run_points("modeldeploy serve", backend, port, points, [0, *args.model_replicas], args, work)


def table(rows: list[dict[str, object]]) -> str:
    lines = [
        "| backend | load | c | replicas | req/s (wall) | rows/s (wall) "
        "| router cores (per replica) | backend cores | wrk cores | req per router CPU-s "
        "| rows per CPU-s, router + backend | p50 / p99 ms |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        per = r["requests_per_router_cpu_s"]
        end = r["rows_per_cpu_s_end_to_end"]
        replicas = r["replica_cores"]
        assert isinstance(replicas, list)
        cores = f"{r['router_cores']} ({' + '.join(map(str, replicas))})" if r["replicas"] else "(direct)"
        rows_s = f"{r['rows_per_s']:,.0f}" if "rows_per_s" in r else ""
        lines.append(
            f"| {r['backend']} | {r['load']} | {r['connections']} | {r['replicas'] or 'direct'} "
            f"| {r['rps']:,.0f} | {rows_s} | {cores} | {r['backend_cores']} | {r['wrk_cores']} "
            f"| {f'{per:,.0f}' if isinstance(per, float) else ''} "
            f"| {f'{end:,.0f}' if isinstance(end, float) else ''} "
            f"| {r['p50_ms']:.2f} / {r['p99_ms']:.2f} |"
        )
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    ap.add_argument("--seconds", type=int, default=8)
    ap.add_argument("--connections", type=int, nargs="+", default=[16, 64])
    ap.add_argument("--replicas", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--backend-workers", type=int, default=2, help="uvicorn workers of the constant backend")
    ap.add_argument("--model-replicas", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--model-uri", help="bundle for part 2 (default: build the churn example's v1)")
    ap.add_argument("--no-model", action="store_true", help="skip part 2 (the real model server)")
    ap.add_argument("--out", type=Path, help="write the figures as JSON here")
    args = ap.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is not installed (hack/install-system-deps.sh or apt-get install -y wrk)", file=sys.stderr)
        return 2
    counts = [*args.replicas, *([] if args.no_model else args.model_replicas)]
    args.threads = wrk_threads(counts, [*args.connections, *([] if args.no_model else [BATCH_CONNECTIONS])])
    started = time.monotonic()
    rows: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory(prefix="router-replicas-") as tmp:
        work = Path(tmp)
        rows += constant_part(args, work)
        if not args.no_model:
            rows += model_part(args, work)
    print(table(rows))
    result = {
        "command": sys.argv,
        "cpus": os.cpu_count(),
        "seconds_per_point": args.seconds,
        "wrk_threads": args.threads,
        "backend_workers": args.backend_workers,
        "took_s": round(time.monotonic() - started, 1),
        "rows": rows,
    }
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
