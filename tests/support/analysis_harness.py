"""Real processes for the analysis tests: churn bundles, model servers, the router, Prometheus.

Bundles come from `examples/churn/make_models.py` (v1 good, v2 a healthy retrain, v3 a model whose
scores shift); servers are `modeldeploy serve` on 127.0.0.1 with small drift windows; Prometheus is
Debian's `/usr/bin/prometheus`, run directly with a temporary config and storage.
"""

from __future__ import annotations

import csv
import json
import shutil
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from built_cache import cached_build, churn_script
from local_processes import free_port, running

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
WINDOW_ROWS = 200
WINDOW_SECONDS = 600
"""Drift windows close by row count only (a time close needs 10 idle minutes): the tests' exact counts
must not depend on how a loaded machine spreads requests over time."""
PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"


@dataclass(frozen=True)
class Churn:
    root: Path
    normal: list[list[float | None]]
    shifted: list[list[float | None]]

    def bundle(self, version: str) -> Path:
        return self.root / version


def _rows(path: Path) -> list[list[float | None]]:
    with path.open() as fh:
        reader = csv.reader(fh)
        next(reader)
        return [[float(v) if v else None for v in row] for row in reader]


@pytest.fixture(scope="session")
def churn(tmp_path_factory: pytest.TempPathFactory) -> Churn:
    args = ["--rows", "4000", "--trees", "40"]
    root = tmp_path_factory.mktemp("churn")  # a copy: trained once per machine and inputs (built_cache.py)
    shutil.copytree(cached_build("churn-analysis", args, churn_script(args)), root, dirs_exist_ok=True)
    data = root / "data"
    return Churn(root, _rows(data / "traffic_normal.csv"), _rows(data / "traffic_shifted.csv"))


@dataclass(frozen=True)
class Server:
    address: str

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    def infer(self, rows: list[list[float | None]]) -> int:
        body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [len(rows), 14], "data": rows}]}
        return httpx.post(f"{self.url}/v2/models/churn/infer", json=body, timeout=10).status_code

    def bad_request(self) -> int:
        body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 3], "data": [[1, 2, 3]]}]}
        return httpx.post(f"{self.url}/v2/models/churn/infer", json=body, timeout=10).status_code

    def send(self, rows: list[list[float | None]], per_request: int = 10) -> None:
        for start in range(0, len(rows), per_request):
            assert self.infer(rows[start : start + per_request]) == 200


@contextmanager
def model_server(
    bundle: Path, workdir: Path, port: int | None = None, window_rows: int = WINDOW_ROWS
) -> Iterator[Server]:
    """`modeldeploy serve` with drift windows of `window_rows` rows, no drift CPU budget."""
    port = port or free_port()
    env = {
        "MODELDEPLOY_SERVER_DRIFT_WINDOW_ROWS": str(window_rows),
        "MODELDEPLOY_SERVER_DRIFT_WINDOW_SECONDS": str(WINDOW_SECONDS),
        "MODELDEPLOY_SERVER_DRIFT_MAX_CPU_SHARE": "1",
        "MODELDEPLOY_SERVER_MODEL_CACHE_DIR": str(workdir / f"cache-{port}"),
    }
    args = [str(VENV_BIN / "modeldeploy"), "serve", "--model-uri", str(bundle)]
    args += ["--host", "127.0.0.1", "--port", str(port)]
    with running(args, workdir / f"server-{port}.log", env, ready=f"http://127.0.0.1:{port}/v2/health/ready"):
        yield Server(f"127.0.0.1:{port}")


@contextmanager
def router(arms: list[dict[str, Any]], workdir: Path) -> Iterator[str]:
    """The built-in router with a static table (arms with `endpoints`); yields its address."""
    port = free_port()
    table = {"deployment": {"namespace": "ml", "name": "churn"}, "generation": 1, "arms": arms}
    config = workdir / f"router-{port}.json"
    config.write_text(json.dumps(table))
    args = [str(VENV_BIN / "modeldeploy-router"), "--config-file", str(config)]
    args += ["--host", "127.0.0.1", "--port", str(port)]
    with running(args, workdir / f"router-{port}.log", ready=f"http://127.0.0.1:{port}/healthz"):
        yield f"127.0.0.1:{port}"


@dataclass(frozen=True)
class Prometheus:
    url: str

    def query(self, expression: str) -> list[dict[str, Any]]:
        body = httpx.get(f"{self.url}/api/v1/query", params={"query": expression}).json()
        assert body["status"] == "success", body
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def wait_scraped(self, minimum_total: float, revision: str, timeout: float = 30.0) -> None:
        """Until Prometheus has seen at least `minimum_total` requests of the revision."""
        self.wait_value(
            f'sum(modeldeploy_requests_total{{modeldeploy_io_revision="{revision}"}})', minimum_total, timeout
        )

    def wait_value(self, expression: str, minimum: float, timeout: float = 30.0) -> None:
        """Until the instant query's one value is at least `minimum` (each target is scraped on its
        own schedule: one target's last scrape says nothing of another's)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result = self.query(expression)
            if result and float(result[0]["value"][1]) >= minimum:
                return
            time.sleep(0.25)
        raise TimeoutError(f"prometheus did not see {expression} reach {minimum}")


@contextmanager
def prometheus(targets: dict[str, str], workdir: Path) -> Iterator[Prometheus]:
    """Debian's Prometheus scraping each `address` every second, with the labels the usual
    kubernetes-pods relabelling gives a model-server pod of revision `targets[address]`."""
    if not Path(PROMETHEUS).exists():
        pytest.skip(
            "prometheus binary not installed (apt-get install prometheus; hack/install-system-deps.sh)"
        )
    static = [
        {
            "targets": [address],
            "labels": {
                "namespace": "ml",
                "pod": f"churn-{revision}-{i}",
                "modeldeploy_io_deployment": "churn",
                "modeldeploy_io_variant": "default",
                "modeldeploy_io_revision": revision,
            },
        }
        for i, (address, revision) in enumerate(targets.items())
    ]
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [{"job_name": "modeldeploy-pods", "static_configs": static}],
    }
    config_file = workdir / "prometheus.yml"
    config_file.write_text(json.dumps(config))  # JSON is YAML
    port = free_port()
    args = [
        PROMETHEUS,
        f"--config.file={config_file}",
        f"--storage.tsdb.path={workdir / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--storage.tsdb.retention.time=1h",
        "--log.level=warn",
    ]
    with running(args, workdir / "prometheus.log", ready=f"http://127.0.0.1:{port}/-/ready"):
        yield Prometheus(f"http://127.0.0.1:{port}")
