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

from cluster_helpers import FIRST_READY_SECONDS, REPO, create_mdep, get_mdep, wait_for
from operator_fixtures import PROMETHEUS_PORT, RELEASE_NAMESPACE
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


def discover_operator(api: client.ApiClient) -> list[dict[str, Any]]:
    """The operator pods of the session's release, at their metrics port."""
    pods = client.CoreV1Api(api).list_namespaced_pod(
        RELEASE_NAMESPACE, label_selector="app.kubernetes.io/component=operator"
    )
    return [
        {"targets": [f"{pod.status.pod_ip}:9090"], "labels": {"pod": pod.metadata.name}}
        for pod in pods.items
        if pod.status.pod_ip
    ]


@pytest.fixture
def prometheus(
    local_cluster: Layout, kube_api: client.ApiClient, namespace: str, tmp_path: Path
) -> Iterator[str]:
    if not Path(PROMETHEUS).exists():
        pytest.skip("prometheus is not installed (hack/install-system-deps.sh installs it)")
    targets = tmp_path / "targets.json"
    targets.write_text("[]")
    operator_targets = tmp_path / "operator-targets.json"
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
                    targets: discover(kube_api, namespace),
                    operator_targets: discover_operator(kube_api),
                }
            except client.ApiException:
                continue
            for path, listed in found.items():
                scratch = path.with_suffix(".tmp")
                scratch.write_text(json.dumps(listed))
                scratch.replace(path)

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
    v1 = wait_for("v1 Ready", lambda: ready_on(kube_api, namespace, "1"), timeout=FIRST_READY_SECONDS)[
        "stableRevision"
    ]
    with Traffic(kube_api, namespace, "churn", rows(churn_bundles)) as traffic:
        wait_for("traffic", lambda: len(traffic.results) > 40, timeout=60)
        set_model(kube_api, namespace, model(model_store, churn_bundles, "3"))
        aborted = wait_for(
            "the analysis to abort v3",
            lambda: (s := get_mdep(kube_api, namespace, "churn").get("status", {})).get("aborted") and s,
            timeout=240,
        )
    assert aborted["stableRevision"] == v1
    results = {c["name"]: c for c in aborted["analysis"]["checks"]}
    assert results["score-shift"]["result"] == "Fail"
    user = [m for m in results["has-traffic"]["measurements"] if m.get("value") is not None]
    assert user, results["has-traffic"]
    assert traffic.failures() == []


def _dashboard_queries() -> list[tuple[str, str]]:
    board = json.loads((REPO / "charts" / "modeldeploy" / "dashboards" / "modeldeploy.json").read_text())
    return [(p["title"], t["expr"]) for p in board["panels"] for t in p.get("targets", [])]


def _instant(prometheus: str, expr: str) -> list[dict[str, Any]]:
    answer = httpx.get(f"{prometheus}/api/v1/query", params={"query": expr}, timeout=10)
    answer.raise_for_status()  # a query Prometheus cannot parse is a 400: the dashboard is broken
    result: list[dict[str, Any]] = answer.json()["data"]["result"]
    return result


def test_every_dashboard_query_returns_data(
    kube_api: client.ApiClient, namespace: str, model_store: str, churn_bundles: Path, prometheus: str
) -> None:
    """The chart's Grafana dashboard against what it will meet: a canary held in a long analysis step
    (rollout step, weights, checks) and an A/B ModelDeployment with a shadow variant (arms, shadow
    agreement), both under traffic with drift windows closing; the operator's and the pods' series
    scraped by a real Prometheus. Every expression of every panel must return data."""
    canary: dict[str, Any] = canary_md(model_store, churn_bundles, deadline=900)
    canary["spec"]["rollout"]["steps"] = [{"setWeight": 50}, {"analysis": {"duration": "900s"}}]
    # Lenient thresholds: the canary must stay in its analysis step, measured, while the queries run.
    canary["spec"]["rollout"]["analysis"] |= {
        "failureLimit": 100,
        "checks": [
            {"name": "errors", "type": "errorRate", "threshold": {"max": 0.5}},
            {
                "name": "score-shift",
                "type": "predictionShift",
                "threshold": {"max": 1000.0},
                "minSamples": 20,
            },
        ],
    }
    shadowed = {
        "apiVersion": "modeldeploy.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "ab"},
        "spec": {
            "model": model(model_store, churn_bundles, "1"),
            "variants": [
                {"name": "control", "weight": 100},
                {"name": "candidate", "weight": 0, "model": model(model_store, churn_bundles, "3")},
            ],
            "replicas": 1,
            "traffic": {
                "stickyKey": {"header": "X-User-Id"},
                "shadow": {"variant": "candidate", "percent": 100},
            },
            "drift": {"windowRows": 50, "windowSeconds": 5},
        },
    }
    create_mdep(kube_api, namespace, canary)
    create_mdep(kube_api, namespace, shadowed)
    wait_for("churn v1 Ready", lambda: ready_on(kube_api, namespace, "1"), timeout=180)
    wait_for(
        "ab Ready",
        lambda: get_mdep(kube_api, namespace, "ab").get("status", {}).get("phase") == "Ready",
        timeout=180,
    )
    data = rows(churn_bundles)
    with (
        Traffic(kube_api, namespace, "churn", data, rate=30) as churn_traffic,
        Traffic(kube_api, namespace, "ab", data, rate=30) as ab_traffic,
    ):
        wait_for(
            "traffic", lambda: len(churn_traffic.results) > 40 and len(ab_traffic.results) > 40, timeout=90
        )
        set_model(kube_api, namespace, model(model_store, churn_bundles, "2"))

        def analysing() -> dict[str, Any] | None:
            current = get_mdep(kube_api, namespace, "churn").get("status", {})
            checks = (current.get("analysis") or {}).get("checks") or []
            measured = checks and all(
                any(m.get("value") is not None for m in c.get("measurements", [])) for c in checks
            )
            return current if current.get("currentStepIndex") == 1 and measured else None

        wait_for("the canary's analysis step, measured", analysing, timeout=240)
        variables = {"$namespace": namespace, "$modeldeployment": "churn|ab", "$__rate_interval": "30s"}

        def concrete(expr: str) -> str:
            for name, value in variables.items():
                expr = expr.replace(name, value)
            return expr

        queries = _dashboard_queries()
        assert len(queries) >= 15
        empty = list(queries)

        def all_answer() -> bool:
            empty[:] = [(title, expr) for title, expr in empty if not _instant(prometheus, concrete(expr))]
            return not empty

        try:
            wait_for("every dashboard query to return data", all_answer, timeout=180, interval=2)
        except AssertionError as error:
            raise AssertionError(f"dashboard queries without data: {empty}") from error
        # Spot checks on what the data says, not only that it exists.
        selector = f'namespace="{namespace}", modeldeployment="churn"'
        weights = {
            r["metric"]["role"]: float(r["value"][1])
            for r in _instant(prometheus, f"modeldeploy_rollout_revision_weight_ratio{{{selector}}}")
            if float(r["value"][1]) > 0
        }
        assert weights == {"stable": 0.5, "canary": 0.5}
    assert churn_traffic.failures() == []
    assert ab_traffic.failures() == []
