"""Rollout analysis through a real Prometheus (Debian's package) scraping the process-backed pods: the
canary whose scores shift is rolled back on PromQL readings, and a user-defined PromQL check is
measured too.

Prometheus and the dashboard's queries: tests/support/prometheus_scrape.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from modeldeploy_testcluster.layout import Layout

from cluster_helpers import FIRST_READY_SECONDS, create_mdep, get_mdep, wait_for
from operator_fixtures import PROMETHEUS_PORT
from prometheus_scrape import PROMETHEUS, instant, running_prometheus, wait_for_dashboard_data
from rollout_helpers import canary_md, model, ready_on, rows, set_model
from traffic import Traffic

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.usefixtures("operator_release")]


@pytest.fixture
def prometheus(
    local_cluster: Layout, kube_api: client.ApiClient, namespace: str, tmp_path: Path
) -> Iterator[str]:
    if not Path(PROMETHEUS).exists():
        pytest.skip("prometheus is not installed (hack/install-system-deps.sh installs it)")
    # On the pod network, at the one address the installed operator's allow-list names.
    address = f"{local_cluster.host_ip}:{PROMETHEUS_PORT}"
    with running_prometheus(kube_api, namespace, tmp_path, address) as url:
        yield url


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
        wait_for_dashboard_data(prometheus, namespace, "churn|ab")
        # Spot checks on what the data says, not only that it exists.
        selector = f'namespace="{namespace}", modeldeployment="churn"'
        weights = {
            r["metric"]["role"]: float(r["value"][1])
            for r in instant(prometheus, f"modeldeploy_rollout_revision_weight_ratio{{{selector}}}")
            if float(r["value"][1]) > 0
        }
        assert weights == {"stable": 0.5, "canary": 0.5}
    assert churn_traffic.failures() == []
    assert ab_traffic.failures() == []
