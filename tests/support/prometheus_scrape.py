"""A real Prometheus (Debian's package) scraping the local cluster's pods, and the chart's Grafana
dashboard evaluated against it: for the Prometheus analysis tests and the install walk
(tests/e2e/test_prometheus_analysis_e2e.py, tests/e2e/test_install_walk_e2e.py).

Debian builds Prometheus without Kubernetes service discovery, so a small thread stands in for it: it
lists the annotated pods from the API server and writes them, labelled as the usual `kubernetes-pods`
relabelling would (namespace, pod, every pod label with `.`/`/` as `_`), to a file_sd target file."""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import yaml
from kubernetes import client

from cluster_helpers import REPO, wait_for
from operator_fixtures import RELEASE_NAMESPACE

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"


def _label_name(key: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_]", "_", key)


def discover(api: client.ApiClient, namespace: str) -> list[dict[str, Any]]:
    """What kubernetes_sd + the documented relabelling would yield for the namespace's annotated pods."""
    targets = []
    for pod in client.CoreV1Api(api).list_namespaced_pod(namespace).items:
        notes = pod.metadata.annotations or {}
        if notes.get("prometheus.io/scrape") != "true" or not pod.status.pod_ip:
            continue
        pod_labels = pod.metadata.labels or {}
        labels = {_label_name(k): v for k, v in pod_labels.items()}
        labels |= {"namespace": namespace, "pod": pod.metadata.name}
        # The chart's PodMonitor relabelling (and docs/observability.md's for plain Prometheus).
        labels |= {
            "modeldeployment": pod_labels.get("modeldeploy.io/deployment", ""),
            "component": pod_labels.get("app.kubernetes.io/component", ""),
        }
        targets.append(
            {"targets": [f"{pod.status.pod_ip}:{notes.get('prometheus.io/port', '8080')}"], "labels": labels}
        )
    return targets


def discover_operator(api: client.ApiClient, namespace: str = RELEASE_NAMESPACE) -> list[dict[str, Any]]:
    """The operator pods of a release (the session's, or a PrivateOperator's), at their metrics port."""
    pods = client.CoreV1Api(api).list_namespaced_pod(
        namespace, label_selector="app.kubernetes.io/component=operator"
    )
    return [
        {"targets": [f"{pod.status.pod_ip}:9090"], "labels": {"pod": pod.metadata.name}}
        for pod in pods.items
        if pod.status.pod_ip
    ]


@contextlib.contextmanager
def running_prometheus(
    api: client.ApiClient,
    namespace: str,
    folder: Path,
    address: str,
    operator_namespace: str = RELEASE_NAMESPACE,
) -> Iterator[str]:
    """Prometheus on `address` (host:port, on the pod network's host address) scraping the annotated pods
    of `namespace` and the operator pods of `operator_namespace` every second; yields its base URL."""
    targets = folder / "targets.json"
    targets.write_text("[]")
    operator_targets = folder / "operator-targets.json"
    operator_targets.write_text("[]")
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [
            {
                "job_name": "kubernetes-pods",
                "file_sd_configs": [{"files": [str(targets)], "refresh_interval": "1s"}],
            },
            {
                # The chart's ServiceMonitor: the rollout series keep their own `namespace`.
                "job_name": "modeldeploy-operator",
                "honor_labels": True,
                "file_sd_configs": [{"files": [str(operator_targets)], "refresh_interval": "1s"}],
            },
        ],
    }
    stop = threading.Event()

    def keep_discovering() -> None:
        while not stop.wait(1):
            try:
                found = {
                    targets: discover(api, namespace),
                    operator_targets: discover_operator(api, operator_namespace),
                }
            except client.ApiException:
                continue
            for path, listed in found.items():
                scratch = path.with_suffix(".tmp")
                scratch.write_text(json.dumps(listed))
                scratch.replace(path)

    threading.Thread(target=keep_discovering, daemon=True).start()
    (folder / "prometheus.yml").write_text(yaml.safe_dump(config))
    server = subprocess.Popen(
        [
            PROMETHEUS,
            f"--config.file={folder / 'prometheus.yml'}",
            f"--storage.tsdb.path={folder / 'tsdb'}",
            f"--web.listen-address={address}",
        ],
        stdout=(folder / "prometheus.log").open("wb"),
        stderr=subprocess.STDOUT,
    )

    def ready() -> bool:
        try:
            return httpx.get(f"http://{address}/-/ready", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for("Prometheus", ready, timeout=30)
        yield f"http://{address}"
    finally:
        stop.set()
        server.terminate()
        server.wait(timeout=30)


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) of every target of the chart's Grafana dashboard."""
    board = json.loads((REPO / "charts" / "modeldeploy" / "dashboards" / "modeldeploy.json").read_text())
    return [(p["title"], t["expr"]) for p in board["panels"] for t in p.get("targets", [])]


def instant(prometheus: str, expr: str) -> list[dict[str, Any]]:
    answer = httpx.get(f"{prometheus}/api/v1/query", params={"query": expr}, timeout=10)
    answer.raise_for_status()  # a query Prometheus cannot parse is a 400: the dashboard is broken
    result: list[dict[str, Any]] = answer.json()["data"]["result"]
    return result


def wait_for_dashboard_data(
    prometheus: str, namespace: str, modeldeployments: str, timeout: float = 180
) -> None:
    """Every expression of every panel, with the dashboard's variables filled in as Grafana would
    (`modeldeployments` a regex, e.g. `churn|ab`), returns data within `timeout`; fails naming the
    panels whose queries never did."""
    variables = {"$namespace": namespace, "$modeldeployment": modeldeployments, "$__rate_interval": "30s"}

    def concrete(expr: str) -> str:
        for name, value in variables.items():
            expr = expr.replace(name, value)
        return expr

    queries = dashboard_queries()
    assert len(queries) >= 15
    empty = list(queries)

    def all_answer() -> bool:
        empty[:] = [(title, expr) for title, expr in empty if not instant(prometheus, concrete(expr))]
        return not empty

    try:
        wait_for("every dashboard query to return data", all_answer, timeout=timeout, interval=2)
    except AssertionError as error:
        raise AssertionError(f"dashboard queries without data: {empty}") from error
