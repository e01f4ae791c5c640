"""Rollout analysis through a real Prometheus (Debian's package) that discovers and scrapes the
process-backed pods with kubernetes_sd from the local API server: the canary whose scores shift is
rolled back on PromQL readings, and a user-defined PromQL check is measured too."""

from __future__ import annotations

import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from kubernetes import client

from modeldeploy_testcluster.layout import Layout

from cluster_helpers import create_mdep, get_mdep, wait_for
from rollout_helpers import canary_md, model, ready_on, rows, set_model
from traffic import Traffic

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.usefixtures("operator_release")]
PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"

RELABEL = [
    {
        "source_labels": ["__meta_kubernetes_pod_annotation_prometheus_io_scrape"],
        "action": "keep",
        "regex": "true",
    },
    {
        "source_labels": ["__address__", "__meta_kubernetes_pod_annotation_prometheus_io_port"],
        "action": "replace",
        "regex": r"([^:]+)(?::\d+)?;(\d+)",
        "replacement": "$1:$2",
        "target_label": "__address__",
    },
    {"action": "labelmap", "regex": "__meta_kubernetes_pod_label_(.+)"},
    {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
    {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
]


@pytest.fixture
def prometheus(local_cluster: Layout, tmp_path: Path) -> Iterator[str]:
    if not Path(PROMETHEUS).exists():
        pytest.skip("prometheus is not installed (hack/install-system-deps.sh installs it)")
    pki = local_cluster.pki_dir
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [
            {
                "job_name": "kubernetes-pods",
                "kubernetes_sd_configs": [
                    {
                        "role": "pod",
                        "api_server": local_cluster.apiserver_url,
                        "tls_config": {
                            "ca_file": str(pki / "ca.crt"),
                            "cert_file": str(pki / "admin.crt"),
                            "key_file": str(pki / "admin.key"),
                        },
                    }
                ],
                "relabel_configs": RELABEL,
            }
        ],
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    with socket.socket() as s:
        s.bind((local_cluster.host_ip, 0))
        port = s.getsockname()[1]
    address = f"{local_cluster.host_ip}:{port}"  # on the pod network: the in-cluster operator queries it
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
    server.terminate()
    server.wait(timeout=30)


def test_analysis_on_prometheus_rolls_back_a_canary_whose_scores_shift(
    kube_api: client.ApiClient, namespace: str, model_store: str, churn_bundles: Path, prometheus: str
) -> None:
    md: dict[str, Any] = canary_md(model_store, churn_bundles)
    analysis = md["spec"]["rollout"]["analysis"]
    analysis["prometheus"] = {"address": prometheus}
    analysis["checks"] = [
        *analysis["checks"],
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
