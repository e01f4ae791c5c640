"""Rollout analysis through a real Prometheus (Debian's package) scraping the process-backed pods: the
canary whose scores shift is rolled back on PromQL readings, and a user-defined PromQL check is
measured too.

Debian builds Prometheus without Kubernetes service discovery, so a small thread stands in for it: it
lists the annotated pods from the API server and writes them, labelled as the usual `kubernetes-pods`
relabelling would (namespace, pod, every pod label with `.`/`/` as `_`), to a file_sd target file."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from kubernetes import client

from modeldeploy_testcluster.layout import Layout

from cluster_helpers import create_mdep, get_mdep, wait_for
from operator_fixtures import PROMETHEUS_PORT
from rollout_helpers import canary_md, model, ready_on, rows, set_model
from traffic import Traffic

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.usefixtures("operator_release")]
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
        labels = {_label_name(k): v for k, v in (pod.metadata.labels or {}).items()}
        labels |= {"namespace": namespace, "pod": pod.metadata.name}
        targets.append(
            {"targets": [f"{pod.status.pod_ip}:{notes.get('prometheus.io/port', '8080')}"], "labels": labels}
        )
    return targets


@pytest.fixture
def prometheus(
    local_cluster: Layout, kube_api: client.ApiClient, namespace: str, tmp_path: Path
) -> Iterator[str]:
    if not Path(PROMETHEUS).exists():
        pytest.skip("prometheus is not installed (hack/install-system-deps.sh installs it)")
    targets = tmp_path / "targets.json"
    targets.write_text("[]")
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [
            {
                "job_name": "kubernetes-pods",
                "file_sd_configs": [{"files": [str(targets)], "refresh_interval": "1s"}],
            }
        ],
    }
    stop = threading.Event()

    def keep_discovering() -> None:
        while not stop.wait(1):
            try:
                found = discover(kube_api, namespace)
            except client.ApiException:
                continue
            scratch = targets.with_suffix(".tmp")
            scratch.write_text(json.dumps(found))
            scratch.replace(targets)

    threading.Thread(target=keep_discovering, daemon=True).start()
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    # On the pod network, at the one address the installed operator's allow-list names.
    address = f"{local_cluster.host_ip}:{PROMETHEUS_PORT}"
    server = subprocess.Popen(
        [
            PROMETHEUS,
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address={address}",
        ],
        stdout=(tmp_path / "prometheus.log").open("wb"),
        stderr=subprocess.STDOUT,
    )

    def ready() -> bool:
        try:
            return httpx.get(f"http://{address}/-/ready", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for("Prometheus", ready, timeout=30)
    yield f"http://{address}"
    stop.set()
    server.terminate()
    server.wait(timeout=30)


def test_analysis_on_prometheus_rolls_back_a_canary_whose_scores_shift(
    kube_api: client.ApiClient, namespace: str, model_store: str, churn_bundles: Path, prometheus: str
) -> None:
    md: dict[str, Any] = canary_md(model_store, churn_bundles)
    analysis = md["spec"]["rollout"]["analysis"]
    analysis["prometheus"] = {"address": prometheus}
    # increase() over a few seconds extrapolates from fewer points than the direct scrape sees.
    checks = [dict(c, minSamples=100) if c["type"] == "predictionShift" else c for c in analysis["checks"]]
    analysis["checks"] = [
        *checks,
        {
            "name": "has-traffic",
            "type": "prometheus",
            "threshold": {"min": 1},
            "query": f'sum(rate(modeldeploy_requests_total{{namespace="{namespace}"}}[20s]))',
        },
    ]
    create_mdep(kube_api, namespace, md)
    v1 = wait_for("v1 Ready", lambda: ready_on(kube_api, namespace, "1"), timeout=120)["stableRevision"]
    with Traffic(kube_api, namespace, "churn", rows(churn_bundles)) as traffic:
        wait_for("traffic", lambda: len(traffic.results) > 40, timeout=60)
        set_model(kube_api, namespace, model(model_store, churn_bundles, "3"))
        aborted = wait_for(
            "the analysis to abort v3",
            lambda: (s := get_mdep(kube_api, namespace, "churn").get("status", {})).get("aborted") and s,
            timeout=240,
        )
    assert aborted["stableRevision"] == v1
    checks = {c["name"]: c for c in aborted["analysis"]["checks"]}
    assert checks["score-shift"]["result"] == "Fail"
    user = [m for m in checks["has-traffic"]["measurements"] if m.get("value") is not None]
    assert user, checks["has-traffic"]
    assert traffic.failures() == []
