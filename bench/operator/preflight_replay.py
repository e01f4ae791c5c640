"""How long the operator's preflight replay takes (issue 15): the golden set fetched from a real model
server, replayed against it and against a second one (the stable), and judged.

    .venv/bin/python bench/operator/preflight_replay.py [--repeats 20]

Trains and packs the churn example's bundles (golden set of 1,000 labelled rows) into a temporary
folder, starts two `modeldeploy serve` processes on 127.0.0.1 (v1 as the stable, v3 as the new
revision), and times `Replayer.run` (the operator's code path: bounded fetches, batches of 32 rows,
`compare()`), printing the median and the worst of the repeats and the golden set's size.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from modeldeploy_contract.preflight import GOLDEN_PATH
from modeldeploy_operator.analysis.fetch import new_client
from modeldeploy_operator.analysis.replay import Replayer, ReplayTarget
from modeldeploy_operator.domain.spec import Preflight

REPO = Path(__file__).resolve().parents[2]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serve(bundle: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = _port()
    cli = [sys.executable, "-m", "modeldeploy_serving.cli", "serve", "--model-uri", str(bundle)]
    process = subprocess.Popen(
        [*cli, "--name", "churn", "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ},
    )
    endpoint = f"127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://{endpoint}/v2/health/ready", timeout=1).status_code == 200:
                return process, endpoint
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    process.kill()
    raise SystemExit(f"the server of {bundle} did not get ready")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="preflight-bench-") as tmp:
        out = Path(tmp)
        make = [sys.executable, str(REPO / "examples" / "churn" / "make_models.py"), "--out", str(out)]
        subprocess.run(make, check=True, capture_output=True)
        stable, stable_at = _serve(out / "v1")
        new, new_at = _serve(out / "v3")
        try:
            golden = httpx.get(f"http://{new_at}{GOLDEN_PATH}", timeout=10).content
            target = ReplayTarget("churn", "default", "v3", new_at, "v1", stable_at)
            times, verdicts = [], set()
            with new_client() as client:
                replayer = Replayer(client)
                for _ in range(args.repeats):
                    started = time.perf_counter()
                    result = replayer.run(target, Preflight())
                    times.append(time.perf_counter() - started)
                    verdicts.add(result.result)
            load = os.getloadavg()[0]
            print(
                f"golden set: {result.rows} rows, {len(golden) / 1024:.0f} KiB; verdict {sorted(verdicts)}; "
                f"replay + judge: median {statistics.median(times) * 1000:.0f} ms, "
                f"max {max(times) * 1000:.0f} ms over {args.repeats} runs (load average {load:.1f})"
            )
        finally:
            for process in (stable, new):
                process.terminate()
                process.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
