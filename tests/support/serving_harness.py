"""Harness for the model server's integration tests: bundles trained here, real uvicorn processes.

Every server is `python -m modeldeploy_serving.cli serve` in a subprocess on 127.0.0.1 and a free
port, configured through MODELDEPLOY_SERVER_* variables exactly as the operator configures pods.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest

from built_cache import cached_build
from churn_example import load_churn
from local_processes import STARTUP_TIMEOUT, free_port

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Bundles:
    root: Path
    v1: Path  # XGBoost UBJ + checked ONNX export (served through onnxruntime)
    v2: Path
    v3: Path
    xgb_only: Path  # XGBoost UBJ only (served through xgboost)
    onnx_only: Path  # an ONNX model as the bundle's model
    artifacts: Path  # model.ubj / model.onnx of v1 and the CSVs
    normal: np.ndarray  # rows drawn like the training data
    shifted: np.ndarray  # rows from a shifted population


@pytest.fixture(scope="session")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> Bundles:
    churn = load_churn()
    rows, trees, seed = 4000, 40, 11
    cut = rows * 4 // 5

    def build(root: Path) -> None:
        from modeldeploy_serving.pack import pack

        churn.build(root, rows=rows, trees=trees, seed=seed)
        x, y = churn.generate(rows, seed)
        artifacts = root / "artifacts"
        churn.train_and_export(x[:cut], y[:cut], artifacts, trees, seed)
        churn.write_csv(artifacts / "train.csv", x[:cut], y[:cut])
        churn.write_csv(artifacts / "validation.csv", x[cut:], y[cut:])
        common = {
            "train_data": artifacts / "train.csv",
            "validation_data": artifacts / "validation.csv",
            "label": "retained",
            "name": "churn",
            "version": "v1",
        }
        # export_onnx=False: pack would otherwise export ONNX itself (the default since issue 13)
        pack(model=artifacts / "model.ubj", onnx=None, export_onnx=False, out=root / "xgb-only", **common)  # type: ignore[arg-type]
        pack(model=artifacts / "model.onnx", onnx=None, out=root / "onnx-only", **common)  # type: ignore[arg-type]

    # A copy (tests add tampered bundles beside these): trained once per machine and inputs (built_cache.py).
    root = tmp_path_factory.mktemp("bundles")
    shutil.copytree(
        cached_build("churn-serving", [rows, trees, seed, "xgb-only", "onnx-only"], build),
        root,
        dirs_exist_ok=True,
    )
    artifacts = root / "artifacts"
    return Bundles(
        root=root,
        v1=root / "v1",
        v2=root / "v2",
        v3=root / "v3",
        xgb_only=root / "xgb-only",
        onnx_only=root / "onnx-only",
        artifacts=artifacts,
        normal=churn.generate(3000, 12345)[0],
        shifted=churn.generate(3000, 54321, shift=1.5)[0],
    )


@dataclass
class Server:
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30)

    @property
    def address(self) -> tuple[str, int]:
        """(host, port), for raw sockets."""
        host, port = self.url.removeprefix("http://").rsplit(":", 1)
        return host, int(port)

    def rss_bytes(self) -> int:
        """The server process's resident memory (its VmRSS)."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS")

    def wait_ready(self, timeout: float = STARTUP_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        with self.client() as c:
            while time.monotonic() < deadline:
                if c.get("/v2/health/ready").status_code == 200:
                    return
                time.sleep(0.05)
        raise AssertionError(f"server not ready after {timeout}s; log:\n{self.log.read_text()}")

    def metrics(self) -> dict[str, float]:
        with self.client() as c:
            text = c.get("/metrics").text
        return parse_metrics(text)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


def parse_metrics(text: str) -> dict[str, float]:
    """{'name{label="v",...}': value} with labels in exposition order (sorted by the client)."""
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            values[key] = float(value)
    return values


def start_server(
    tmp_path: Path, model_uri: str, env: dict[str, str] | None = None, args: list[str] | None = None
) -> Server:
    port = free_port()
    log = tmp_path / f"server-{port}.log"
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("MODELDEPLOY_SERVER_")}
    full_env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    full_env.update(
        {
            "MODELDEPLOY_SERVER_MODEL_URI": model_uri,
            "MODELDEPLOY_SERVER_HOST": "127.0.0.1",
            "MODELDEPLOY_SERVER_PORT": str(port),
            "MODELDEPLOY_SERVER_MODEL_CACHE_DIR": str(tmp_path / f"cache-{port}"),
            "MODELDEPLOY_SERVER_LOG_LEVEL": "info",
            **(env or {}),
        }
    )
    with log.open("wb") as fh:
        process = subprocess.Popen(
            [sys.executable, "-m", "modeldeploy_serving.cli", "serve", *(args or [])],
            env=full_env,
            stdout=fh,
            stderr=subprocess.STDOUT,
        )
    server = Server(f"http://127.0.0.1:{port}", process, log)
    # Bounded by the shared startup bound, not 30 s: on a 2-core machine at load 20 a server that was
    # up ("Uvicorn running" in its log) did not answer /v2/health/live within 30 s while it loaded.
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"server exited with {process.returncode}; log:\n{log.read_text()}")
        try:
            if httpx.get(f"{server.url}/v2/health/live", timeout=1).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    server.stop()
    raise AssertionError(f"server not live after {STARTUP_TIMEOUT}s; log:\n{log.read_text()}")


ServerFactory = Callable[..., Server]


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[ServerFactory]:
    """Start servers for one test; all are stopped at its end."""
    started: list[Server] = []

    def factory(model_uri: str, env: dict[str, str] | None = None, args: list[str] | None = None) -> Server:
        server = start_server(tmp_path, model_uri, env, args)
        started.append(server)
        return server

    yield factory
    for server in started:
        server.stop()


@pytest.fixture(scope="module")
def module_serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerFactory]:
    """Like serve, shared by the tests of one module."""
    started: list[Server] = []
    tmp = tmp_path_factory.mktemp("servers")

    def factory(model_uri: str, env: dict[str, str] | None = None, args: list[str] | None = None) -> Server:
        server = start_server(tmp, model_uri, env, args)
        started.append(server)
        return server

    yield factory
    for server in started:
        server.stop()


def v2_body(rows: np.ndarray, datatype: str = "FP32", **extra: object) -> dict[str, object]:
    data = [None if np.isnan(v) else float(v) for v in rows.reshape(-1)]
    return {
        "inputs": [{"name": "input", "datatype": datatype, "shape": list(rows.shape), "data": data}],
        **extra,
    }


_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def metric_values(text: str, name: str, **labels: str) -> list[float]:
    """Values of the samples called `name` whose labels include `labels`."""
    found = []
    for line in text.splitlines():
        if not line.startswith(name):
            continue
        key, _, value = line.rpartition(" ")
        sample, _, label_text = key.partition("{")
        if sample != name:
            continue
        have = dict(_LABEL.findall(label_text))
        if all(have.get(k) == v for k, v in labels.items()):
            found.append(float(value))
    return found


def metric(text: str, name: str, **labels: str) -> float:
    values = metric_values(text, name, **labels)
    assert len(values) == 1, f"{name} {labels}: {values}"
    return values[0]
