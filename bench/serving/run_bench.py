"""Model server benchmark: modeldeploy vs MLServer vs a plain ASGI app, same model, same load generator.

    .venv/bin/python bench/serving/run_bench.py --out /tmp/modeldeploy-bench [--mlserver-venv DIR]

Needs wrk (apt-get install -y wrk). MLServer is optional and lives in its own virtualenv so that it
never enters the project's lock:
    uv venv -p 3.11 /tmp/mlserver-venv && VIRTUAL_ENV=/tmp/mlserver-venv uv pip install mlserver mlserver-xgboost
Every server runs alone (one at a time) with the same number of uvicorn workers, on 127.0.0.1; wrk
runs one thread on the same machine. Writes results.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
# One complete customer row (no missing value: MLServer's JSON decoding refuses null).
ROW = [2, 35, 1, 4, 6, 20, 8, 17, 5, 107, 9, 6.5, 2, 1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def running(cmd: list[str], env: dict[str, str], ready_url: str, log: Path, cwd: Path | None = None) -> Iterator[None]:
    with log.open("wb") as fh:
        proc = subprocess.Popen(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT, cwd=cwd, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"{cmd[0]} exited; see {log}")
            try:
                if httpx.get(ready_url, timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        else:
            raise RuntimeError(f"{ready_url} not ready; see {log}")
        yield
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def wrk(url: str, connections: int, seconds: int, body: Path, header_length: int | None = None) -> dict[str, float]:
    env = {**os.environ, "BODY_FILE": str(body), "BINARY_HEADER_LENGTH": str(header_length or "")}
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(HERE / "body.lua"), url]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "rps": rps,
        "p50_ms": _ms(re.search(r"50%\s+([\d.]+)(us|ms|s)", out)),
        "p99_ms": _ms(re.search(r"99%\s+([\d.]+)(us|ms|s)", out)),
        "non_2xx": float(errors.group(1)) if errors else 0.0,
    }


def _ms(match: re.Match[str] | None) -> float:
    assert match is not None
    value, unit = float(match.group(1)), match.group(2)
    return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value


def bodies(folder: Path, rows: np.ndarray) -> dict[str, tuple[Path, int | None]]:
    folder.mkdir(parents=True, exist_ok=True)

    def v2(x: np.ndarray) -> bytes:
        return json.dumps(
            {"inputs": [{"name": "input", "datatype": "FP32", "shape": list(x.shape), "data": x.reshape(-1).tolist()}]}
        ).encode()

    one = np.asarray([ROW], dtype=np.float32)
    batch = np.nan_to_num(rows[:1024]).astype(np.float32)  # no nulls, for MLServer's sake
    header = json.dumps(
        {
            "inputs": [
                {"name": "input", "datatype": "FP32", "shape": [1024, 14], "parameters": {"binary_data_size": batch.nbytes}}
            ],
            "outputs": [{"name": "probabilities", "parameters": {"binary_data": True}}],
        }
    ).encode()
    files = {"one": v2(one), "batch_json": v2(batch), "batch_binary": header + batch.astype("<f4").tobytes()}
    paths = {}
    for name, data in files.items():
        (folder / name).write_bytes(data)
        paths[name] = (folder / name, len(header) if name == "batch_binary" else None)
    return paths


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--mlserver-venv", type=Path, default=Path("/tmp/benchenv/mlserver-venv"))
    ap.add_argument("--only", nargs="*", help="run only these server names")
    args = ap.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is not installed (apt-get install -y wrk)", file=sys.stderr)
        return 2
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(REPO / "examples" / "churn"))
    import make_models  # the churn example: same model for every server

    models = make_models.build(out / "models")
    normal = make_models.generate(2000, 99)[0]
    paths = bodies(out / "bodies", normal)
    venv_bin = Path(sys.executable).parent
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("MODELDEPLOY_SERVER_")}
    results: dict[str, dict[str, dict[str, float]]] = {}

    def ours(name: str, extra: dict[str, str]) -> tuple[str, list[str], dict[str, str], str, str]:
        port = free_port()
        env = {
            **base_env,
            "MODELDEPLOY_SERVER_MODEL_URI": str(models["v1"]),
            "MODELDEPLOY_SERVER_HOST": "127.0.0.1",
            "MODELDEPLOY_SERVER_PORT": str(port),
            "MODELDEPLOY_SERVER_WORKERS": str(args.workers),
            "MODELDEPLOY_SERVER_LOG_LEVEL": "warning",
            **extra,
        }
        url = f"http://127.0.0.1:{port}"
        return name, [str(venv_bin / "modeldeploy"), "serve"], env, f"{url}/v2/health/ready", f"{url}/v2/models/churn/infer"

    servers = []
    port = free_port()
    servers.append(
        (
            "plain-asgi",
            [str(venv_bin / "uvicorn"), "--app-dir", str(HERE), "plain_asgi:app", "--host", "127.0.0.1",
             "--port", str(port), "--no-access-log", "--log-level", "warning", "--workers", str(args.workers)],
            base_env,
            f"http://127.0.0.1:{port}/",
            f"http://127.0.0.1:{port}/v2/models/churn/infer",
        )
    )  # fmt: skip
    servers.append(ours("modeldeploy", {}))
    servers.append(ours("modeldeploy-drift-off", {"MODELDEPLOY_SERVER_DRIFT_ENABLED": "false"}))
    servers.append(
        ours(
            "modeldeploy-batching",
            {"MODELDEPLOY_SERVER_BATCHING_ENABLED": "true", "MODELDEPLOY_SERVER_BATCH_MAX_WAIT_MS": "0"},
        )
    )
    mlserver = args.mlserver_venv / "bin" / "mlserver"
    if mlserver.exists():
        folder = out / "mlserver"
        model_dir = folder / "churn"
        model_dir.mkdir(parents=True, exist_ok=True)
        shutil.copy(models["v1"] / "model.ubj", model_dir / "model.ubj")
        http_port = free_port()
        (folder / "settings.json").write_text(
            json.dumps(
                {
                    "http_port": http_port,
                    "grpc_port": free_port(),
                    "metrics_port": free_port(),
                    "host": "127.0.0.1",
                    "parallel_workers": 0,  # worker pool processes fail to start on this machine
                    "debug": False,
                }
            )
        )
        (model_dir / "model-settings.json").write_text(
            json.dumps(
                {
                    "name": "churn",
                    "implementation": "mlserver_xgboost.XGBoostModel",
                    "parameters": {"uri": "./model.ubj", "version": "v1"},
                }
            )
        )
        url = f"http://127.0.0.1:{http_port}"
        servers.append(
            ("mlserver", [str(mlserver), "start", str(folder)], base_env, f"{url}/v2/models/churn/ready",
             f"{url}/v2/models/churn/infer")
        )  # fmt: skip
    else:
        print(f"no MLServer at {mlserver}: skipped", file=sys.stderr)

    for name, cmd, env, ready, url in servers:
        if args.only and name not in args.only:
            continue
        print(f"== {name}", file=sys.stderr)
        results[name] = {}
        with running(cmd, env, ready, out / f"{name}.log"):
            one, _ = paths["one"]
            wrk(url, 16, 3, one)  # warm up
            for c in (1, 16, 64):
                results[name][f"c{c}"] = wrk(url, c, args.seconds, one)
                print(f"   c={c}: {results[name][f'c{c}']}", file=sys.stderr)
            if name == "plain-asgi":
                continue
            for kind in ("batch_json", "batch_binary"):
                if name == "mlserver" and kind == "batch_binary":
                    continue
                body, header_length = paths[kind]
                r = wrk(url, 4, args.seconds, body, header_length)
                r["rows_per_s"] = r["rps"] * 1024
                results[name][kind] = r
                print(f"   {kind}: {r}", file=sys.stderr)
    (out / "results.json").write_text(json.dumps(results, indent=1))
    print(table(results))
    return 0


def table(results: dict[str, dict[str, dict[str, float]]]) -> str:
    ceiling = results.get("plain-asgi", {})
    lines = [
        "| server | c | req/s | % of plain ASGI | p50 ms | p99 ms |",
        "|---|---|---|---|---|---|",
    ]
    for name, runs in results.items():
        for c in ("c1", "c16", "c64"):
            if c not in runs:
                continue
            r = runs[c]
            share = f"{100 * r['rps'] / ceiling[c]['rps']:.0f}%" if c in ceiling else ""
            lines.append(f"| {name} | {c[1:]} | {r['rps']:,.0f} | {share} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} |")
    lines += ["", "| server | 1,024-row requests | req/s | rows/s | p50 ms | p99 ms |", "|---|---|---|---|---|---|"]
    for name, runs in results.items():
        for kind in ("batch_json", "batch_binary"):
            if kind in runs:
                r = runs[kind]
                lines.append(
                    f"| {name} | {kind.replace('batch_', '')} | {r['rps']:,.0f} | {r['rows_per_s']:,.0f} "
                    f"| {r['p50_ms']:.2f} | {r['p99_ms']:.2f} |"
                )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
