"""Quick A/B of the single-row V2 JSON hot path: two source trees, wrk -t1 -c16, runs interleaved.

    .venv/bin/python bench/serving/ab_quick.py --before /tmp/before/serving/src \
        --after serving/src --rounds 3 --seconds 8 --out /tmp/ab

Each round starts the server from each tree (PYTHONPATH first, so the tree's modeldeploy_serving
wins over the installed one), warms it up 2 s, then measures; before and after alternate so that
load from other processes on a shared machine hits both alike. Prints requests/s and p50/p99.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
ROW = [2, 35, 1, 4, 6, 20, 8, 17, 5, 107, 9, 6.5, 2, 1]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wrk(url: str, body: Path, seconds: int) -> dict[str, float]:
    env = {**os.environ, "BODY_FILE": str(body)}
    out = subprocess.run(
        ["wrk", "-t1", "-c16", f"-d{seconds}s", "--latency", "-s", str(HERE / "body.lua"), url],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]

    def pct(p: str) -> float:
        m = re.search(rf"\s{p}%\s+([\d.]+)(us|ms|s)", out)
        assert m is not None, out
        return float(m.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[m.group(2)]

    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "rps": rps,
        "p50_ms": pct("50"),
        "p99_ms": pct("99"),
        "non2xx": float(non2xx.group(1)) if non2xx else 0,
    }


def measure(tree: Path, bundle: Path, body: Path, seconds: int, log: Path) -> dict[str, float]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELDEPLOY_SERVER_")}
    env.update(
        {
            "PYTHONPATH": str(tree),
            "MODELDEPLOY_SERVER_MODEL_URI": str(bundle),
            "MODELDEPLOY_SERVER_HOST": "127.0.0.1",
            "MODELDEPLOY_SERVER_PORT": str(port),
            "MODELDEPLOY_SERVER_LOG_LEVEL": "warning",
        }
    )
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
        return wrk(url, body, seconds)
    finally:
        proc.terminate()
        proc.wait(10)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--before", type=Path, required=True)
    ap.add_argument("--after", type=Path, required=True)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=8)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(REPO / "examples" / "churn"))
    import make_models

    bundle = args.out / "models" / "churn" / "v1"
    if not (bundle / "manifest.json").exists():
        bundle = make_models.build(args.out / "models")["v1"]
    body = args.out / "one.json"
    body.write_bytes(
        json.dumps(
            {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 14], "data": ROW}]}
        ).encode()
    )
    results: dict[str, list[dict[str, float]]] = {"before": [], "after": []}
    for i in range(args.rounds):
        for name, tree in (("before", args.before), ("after", args.after)):
            r = measure(tree.resolve(), bundle, body, args.seconds, args.out / f"{name}-{i}.log")
            results[name].append(r)
            print(
                f"round {i} {name}: {r['rps']:.0f} req/s p50 {r['p50_ms']:.2f} ms p99 {r['p99_ms']:.2f} ms "
                f"non-2xx {r['non2xx']:.0f} (load {os.getloadavg()[0]:.1f})",
                flush=True,
            )
    (args.out / "ab.json").write_text(json.dumps(results, indent=1))
    for name, rs in results.items():
        rps = sorted(r["rps"] for r in rs)
        print(f"{name}: median {rps[len(rps) // 2]:.0f} req/s (min {rps[0]:.0f}, max {rps[-1]:.0f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
