"""What the router's lean upstream client (router/upstream.py) costs per request, against httpx, the
general-purpose client it replaced, and optionally against another version of upstream.py.

    .venv/bin/python bench/router/upstream_client.py --requests 20000 --rounds 3 \
        [--compare-with path/to/old/upstream.py] [--json out.json]

The backend is bench/router/fast_backend.py on uvicorn in its own process (127.0.0.1), so the client
process's CPU time (time.process_time) is the client's own cost: one-row V2 request, the same
constant answer, keep-alive connections, `--concurrency` requests in flight from one uvloop event
loop. Each round runs every client once, in an order that rotates, and the best round is reported
(CPU time is what the router spends; wall time depends on the backend and the machine's load).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import ModuleType

import httpx
import uvloop

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1] / "serving" / "src"))

from modeldeploy_serving.router import upstream  # noqa: E402

BODY = b'{"inputs":[{"name":"input","shape":[1,6],"datatype":"FP32","data":[[12,70.5,845.0,1,0,2]]}]}'
PATH = "/v2/models/churn/infer"
HEADERS = [(b"content-type", b"application/json"), (b"host", b"backend")]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_backend(port: int) -> subprocess.Popen[bytes]:
    cmd = [
        sys.executable, "-m", "uvicorn", "--app-dir", str(HERE), "fast_backend:app",
        "--host", "127.0.0.1", "--port", str(port), "--loop", "uvloop", "--http", "httptools",
        "--no-access-log", "--log-level", "warning",
    ]  # fmt: skip
    process = subprocess.Popen(cmd)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return process
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise SystemExit("the backend did not start")


def load_upstream(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location("upstream_other", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


Send = Callable[[], Awaitable[int]]


def lean(module: ModuleType, address: str) -> tuple[Send, Callable[[], None]]:
    pool = module.UpstreamPool()
    head = module.request_head("POST", PATH.encode(), HEADERS, len(BODY))

    async def send() -> int:
        response = await pool.send(address, "POST", head, BODY, connect_timeout=5.0, timeout=10.0)
        return int(response.status)

    return send, pool.close


def httpx_client(address: str) -> tuple[Send, Callable[[], None]]:
    client = httpx.AsyncClient(
        base_url=f"http://{address}", limits=httpx.Limits(max_keepalive_connections=128)
    )
    headers = {"content-type": "application/json"}

    async def send() -> int:
        response = await client.post(PATH, content=BODY, headers=headers)
        return response.status_code

    return send, lambda: None


async def run(
    make: Callable[[], tuple[Send, Callable[[], None]]], requests: int, concurrency: int
) -> dict[str, float]:
    send, close = make()
    for _ in range(200):  # warm: connections open, code paths taken
        assert await send() == 200
    left = requests

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            status = await send()
            if status != 200:
                raise SystemExit(f"status {status}")

    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    close()
    return {"cpu_us_per_request": 1e6 * cpu / requests, "requests_per_s": requests / wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--compare-with", type=Path, help="another upstream.py (e.g. `git show REV:...`)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    port = free_port()
    backend = start_backend(port)
    address = f"127.0.0.1:{port}"
    clients: dict[str, Callable[[], tuple[Send, Callable[[], None]]]] = {
        "lean (this checkout)": lambda: lean(upstream, address),
        "httpx.AsyncClient": lambda: httpx_client(address),
    }
    if args.compare_with is not None:
        other = load_upstream(args.compare_with)
        clients[f"lean ({args.compare_with.name})"] = lambda: lean(other, address)
    results: dict[str, dict[int, list[dict[str, float]]]] = {name: {} for name in clients}
    try:
        names = list(clients)
        for round_ in range(args.rounds):
            order = names[round_ % len(names) :] + names[: round_ % len(names)]
            for concurrency in args.concurrency:
                for name in order:
                    result = uvloop.run(run(clients[name], args.requests, concurrency))
                    results[name].setdefault(concurrency, []).append(result)
    finally:
        backend.terminate()
        backend.wait(10)
    load = os.getloadavg()[0]
    print(f"{args.requests} requests per run, best of {args.rounds} rounds, load average {load:.1f}")
    print(f"{'client':28} {'c':>3} {'CPU us/request':>15} {'requests/s':>11}")
    summary: dict[str, dict[str, dict[str, float]]] = {}
    for name, by_concurrency in results.items():
        for concurrency, runs in by_concurrency.items():
            best = min(runs, key=lambda r: r["cpu_us_per_request"])
            summary.setdefault(name, {})[str(concurrency)] = best
            print(
                f"{name:28} {concurrency:>3} {best['cpu_us_per_request']:>15.1f} "
                f"{best['requests_per_s']:>11,.0f}"
            )
    if args.json is not None:
        args.json.write_text(json.dumps({"load_average": load, "best": summary, "runs": results}, indent=2))


if __name__ == "__main__":
    main()
