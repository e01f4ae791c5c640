"""Model server benchmark: modeldeploy vs MLServer vs a plain ASGI app, same model, same load generator.

    .venv/bin/python bench/serving/run_bench.py --out /tmp/modeldeploy-bench [--workers 1]
        [--mlserver-venv DIR] [--only NAME ...] [--seconds 10]

Needs wrk (apt-get install -y wrk). MLServer is optional and lives in its own virtualenv so that it
never enters the project's lock (default ~/.cache/modeldeploy/mlserver-venv):
    uv venv -p 3.11 DIR && VIRTUAL_ENV=DIR uv pip install mlserver mlserver-xgboost
Every server runs alone (one at a time) with the same number of uvicorn workers, on 127.0.0.1; wrk
runs one thread on the same machine. Writes results.json and prints Markdown tables.
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
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
VENV_BIN = Path(sys.executable).parent
# One complete customer row (no missing value: MLServer's JSON decoding refuses null).
ROW = [2, 35, 1, 4, 6, 20, 8, 17, 5, 107, 9, 6.5, 2, 1]
Results = dict[str, dict[str, dict[str, float]]]


@dataclass
class ServerSpec:
    name: str
    cmd: list[str]
    env: dict[str, str]
    ready_url: str
    infer_url: str
    batch_kinds: list[str] = field(default_factory=lambda: ["batch_json", "batch_binary"])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def running(spec: ServerSpec, log: Path) -> Iterator[None]:
    with log.open("wb") as fh:
        proc = subprocess.Popen(
            spec.cmd, env=spec.env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"{spec.name} exited; see {log}")
            try:
                if httpx.get(spec.ready_url, timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        else:
            raise RuntimeError(f"{spec.ready_url} not ready; see {log}")
        yield
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def foreign_load() -> list[str]:
    """Other load generators on this machine (shared machines run other sessions' benchmarks too)."""
    pattern = "^(wrk|hey|ab|locust|k6|oha)$"
    found = subprocess.run(["pgrep", "-a", pattern], capture_output=True, text=True, check=False)
    return [line for line in found.stdout.splitlines() if line]


def wait_quiet(limit: float = 300.0) -> float:
    """Wait until no other load generator runs; returns the seconds waited (kept in the results)."""
    start = time.monotonic()
    while foreign_load() and time.monotonic() - start < limit:
        time.sleep(1)
    if foreign_load():
        print(f"   WARNING: measuring while other load runs: {foreign_load()}", file=sys.stderr)
    return time.monotonic() - start


def wrk(
    url: str, connections: int, seconds: int, body: Path, header_length: int | None = None
) -> dict[str, float]:
    waited = wait_quiet()
    load_before = os.getloadavg()[0]
    env = {**os.environ, "BODY_FILE": str(body), "BINARY_HEADER_LENGTH": str(header_length or "")}
    script = str(HERE / "body.lua")
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", script, url]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    assert rps is not None, out
    return {
        "rps": float(rps.group(1)),
        "p50_ms": _ms(re.search(r"50%\s+([\d.]+)(us|ms|s)", out)),
        "p99_ms": _ms(re.search(r"99%\s+([\d.]+)(us|ms|s)", out)),
        "non_2xx": float(errors.group(1)) if errors else 0.0,
        "waited_s": round(waited, 1),
        "loadavg_before": round(load_before, 2),
        "contended": float(bool(foreign_load())),
    }


def _ms(match: re.Match[str] | None) -> float:
    assert match is not None
    value, unit = float(match.group(1)), match.group(2)
    return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value


def _v2(x: np.ndarray) -> bytes:
    tensor = {"name": "input", "datatype": "FP32", "shape": list(x.shape), "data": x.reshape(-1).tolist()}
    return json.dumps({"inputs": [tensor]}).encode()


def write_bodies(folder: Path, rows: np.ndarray) -> dict[str, tuple[Path, int | None]]:
    """One-row JSON, 1,024-row JSON, and 1,024 rows in the binary extension (binary output too)."""
    folder.mkdir(parents=True, exist_ok=True)
    batch = np.nan_to_num(rows[:1024]).astype(np.float32)  # no nulls, for MLServer's sake
    tensor = {
        "name": "input",
        "datatype": "FP32",
        "shape": [1024, 14],
        "parameters": {"binary_data_size": batch.nbytes},
    }
    wanted = [{"name": "probabilities", "parameters": {"binary_data": True}}]
    header = json.dumps({"inputs": [tensor], "outputs": wanted}).encode()
    files = {
        "one": (_v2(np.asarray([ROW], dtype=np.float32)), None),
        "batch_json": (_v2(batch), None),
        "batch_binary": (header + batch.astype("<f4").tobytes(), len(header)),
    }
    paths = {}
    for name, (data, header_length) in files.items():
        (folder / name).write_bytes(data)
        paths[name] = (folder / name, header_length)
    return paths


def plain_spec(env: dict[str, str], workers: int) -> ServerSpec:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [str(VENV_BIN / "uvicorn"), "--app-dir", str(HERE), "plain_asgi:app", "--host", "127.0.0.1",
           "--port", str(port), "--no-access-log", "--log-level", "warning",
           "--workers", str(workers)]  # fmt: skip
    return ServerSpec("plain-asgi", cmd, env, f"{url}/", f"{url}/v2/models/churn/infer", [])


def modeldeploy_spec(
    name: str, bundle: Path, env: dict[str, str], workers: int, extra: dict[str, str]
) -> ServerSpec:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    settings = {
        "MODELDEPLOY_SERVER_MODEL_URI": str(bundle),
        "MODELDEPLOY_SERVER_HOST": "127.0.0.1",
        "MODELDEPLOY_SERVER_PORT": str(port),
        "MODELDEPLOY_SERVER_WORKERS": str(workers),
        "MODELDEPLOY_SERVER_LOG_LEVEL": "warning",
    }
    cmd = [str(VENV_BIN / "modeldeploy"), "serve"]
    return ServerSpec(
        name, cmd, {**env, **settings, **extra}, f"{url}/v2/health/ready", f"{url}/v2/models/churn/infer"
    )


def mlserver_spec(venv: Path, bundle: Path, out: Path, env: dict[str, str]) -> ServerSpec | None:
    mlserver = venv / "bin" / "mlserver"
    if not mlserver.exists():
        print(f"no MLServer at {mlserver}: skipped", file=sys.stderr)
        return None
    folder = out / "mlserver"
    model_dir = folder / "churn"
    model_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy(bundle / "model.ubj", model_dir / "model.ubj")
    http_port = free_port()
    settings = {
        "http_port": http_port,
        "grpc_port": free_port(),
        "metrics_port": free_port(),
        "host": "127.0.0.1",
        "parallel_workers": 0,  # its worker-pool processes do not start on this machine
    }
    (folder / "settings.json").write_text(json.dumps(settings))
    model = {
        "name": "churn",
        "implementation": "mlserver_xgboost.XGBoostModel",
        "parameters": {"uri": "./model.ubj"},
    }
    (model_dir / "model-settings.json").write_text(json.dumps(model))
    url = f"http://127.0.0.1:{http_port}"
    cmd = [str(mlserver), "start", str(folder)]
    return ServerSpec(
        "mlserver", cmd, env, f"{url}/v2/models/churn/ready", f"{url}/v2/models/churn/infer", ["batch_json"]
    )


def measure(
    spec: ServerSpec, paths: dict[str, tuple[Path, int | None]], seconds: int, log: Path
) -> dict[str, dict[str, float]]:
    result: dict[str, dict[str, float]] = {}
    with running(spec, log):
        one, _ = paths["one"]
        wrk(spec.infer_url, 16, 3, one)  # warm up
        for c in (1, 16, 64):
            result[f"c{c}"] = wrk(spec.infer_url, c, seconds, one)
            print(f"   c={c}: {result[f'c{c}']}", file=sys.stderr)
        for kind in spec.batch_kinds:
            body, header_length = paths[kind]
            r = wrk(spec.infer_url, 4, seconds, body, header_length)
            r["rows_per_s"] = r["rps"] * 1024
            result[kind] = r
            print(f"   {kind}: {r}", file=sys.stderr)
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument(
        "--mlserver-venv", type=Path, default=Path.home() / ".cache" / "modeldeploy" / "mlserver-venv"
    )
    ap.add_argument("--only", nargs="*", help="run only these servers (names as in the tables)")
    args = ap.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is not installed (apt-get install -y wrk)", file=sys.stderr)
        return 2
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(REPO / "examples" / "churn"))
    import make_models  # the churn example: the same model for every server

    bundle = make_models.build(out / "models")["v1"]
    paths = write_bodies(out / "bodies", make_models.generate(2000, 99)[0])
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELDEPLOY_SERVER_")}
    w = args.workers
    specs = [
        plain_spec(env, w),
        modeldeploy_spec("modeldeploy", bundle, env, w, {}),
        modeldeploy_spec(
            "modeldeploy-drift-off", bundle, env, w, {"MODELDEPLOY_SERVER_DRIFT_ENABLED": "false"}
        ),
        modeldeploy_spec(
            "modeldeploy-no-batching", bundle, env, w, {"MODELDEPLOY_SERVER_BATCHING_ENABLED": "false"}
        ),
        # The same bundle through the xgboost runtime alone (its ONNX export unused): what a bundle
        # without pack's ONNX export gets (issue 13, "Fast by default").
        modeldeploy_spec(
            "modeldeploy-xgboost-runtime", bundle, env, w, {"MODELDEPLOY_SERVER_PREFER_ONNX": "false"}
        ),
    ]
    ml = mlserver_spec(args.mlserver_venv, bundle, out, env) if w == 1 else None
    if ml is not None:
        specs.append(ml)
    results: Results = {}
    for spec in specs:
        if args.only and spec.name not in args.only:
            continue
        print(f"== {spec.name}", file=sys.stderr)
        results[spec.name] = measure(spec, paths, args.seconds, out / f"{spec.name}.log")
    (out / "results.json").write_text(json.dumps(results, indent=1))
    print(table(results))
    return 0


def table(results: Results) -> str:
    ceiling = results.get("plain-asgi", {})
    lines = ["| server | c | req/s | % of plain ASGI | p50 ms | p99 ms |", "|---|---|---|---|---|---|"]
    for name, runs in results.items():
        for c in ("c1", "c16", "c64"):
            if c in runs:
                r = runs[c]
                share = f"{100 * r['rps'] / ceiling[c]['rps']:.0f}%" if c in ceiling else ""
                latency = f"{r['p50_ms']:.2f} | {r['p99_ms']:.2f}"
                lines.append(f"| {name} | {c[1:]} | {r['rps']:,.0f} | {share} | {latency} |")
    lines += [
        "",
        "| server | 1,024-row requests (c=4) | req/s | rows/s | p50 ms | p99 ms |",
        "|---|---|---|---|---|---|",
    ]
    for name, runs in results.items():
        for kind in ("batch_json", "batch_binary"):
            if kind in runs:
                r = runs[kind]
                lines.append(
                    f"| {name} | {kind.removeprefix('batch_')} | {r['rps']:,.0f} | {r['rows_per_s']:,.0f} "
                    f"| {r['p50_ms']:.2f} | {r['p99_ms']:.2f} |"
                )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
