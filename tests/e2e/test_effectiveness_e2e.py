"""Effectiveness on the local cluster (issue 15): the operator runs a ModelDeployment's label joiner,
its model servers feed it, and labels come back through the router's feedback route.

1. An A/B (variant a: v1, variant b: v2) with spec.effectiveness: predictions through the router,
   each caller keeping the request id it got back; later the labels (the golden set's truth) through
   POST /v2/models/churn/feedback, with a few bad ones reported per item. The joiner's summary and
   metrics show every prediction joined, per arm, with the accuracy the callers' own answers give;
   `kubectl modeldeploy status` shows the per-arm table.
2. Variant b rolled to v3 (trained on corrupted labels) as a canary gated by an `effectiveness`
   check with no joiner address in the spec: the check reads the operator's own joiner, the canary's
   AUC on the delayed labels is far below the stable's, and the rollout is aborted.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from kubernetes import client

from cluster_helpers import create_mdep, patch_mdep, router_arms, wait_for
from effectiveness_helpers import golden, plugin_status, predict, recorded, send_labels, summary_arms
from rollout_helpers import model, status
from traffic import ready_endpoints

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.usefixtures("operator_release")]
AUC_CHECK = {
    "name": "auc",
    "type": "effectiveness",
    "threshold": {"min": -0.05},
    "minSamples": 60,
    "effectiveness": {"metric": "auc", "windowSeconds": 86400},
}


def ab_md(store: str, bundles: Path) -> dict[str, Any]:
    return {
        "apiVersion": "modeldeploy.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "churn"},
        "spec": {
            "model": model(store, bundles, "1"),
            "variants": [
                {"name": "a", "weight": 50},
                {"name": "b", "weight": 50, "model": model(store, bundles, "2")},
            ],
            "replicas": 1,
            "traffic": {"stickyKey": {"header": "X-User-Id"}},
            "effectiveness": {"retention": "24h", "minLabelsPerArm": 50},
            "rollout": {
                "strategy": "Canary",
                "steps": [{"setWeight": 50}, {"analysis": {"checks": ["auc"]}}],
                "analysis": {"interval": "5s", "minSamples": 0, "failureLimit": 0, "checks": [AUC_CHECK]},
                "progressDeadlineSeconds": 600,
                "scaleDownDelaySeconds": 5,
            },
        },
    }


def test_labels_through_the_router_join_per_arm_and_gate_a_canary(
    kube_api: client.ApiClient,
    namespace: str,
    model_store: str,
    churn_bundles: Path,
    kubeconfig: Path,
) -> None:
    create_mdep(kube_api, namespace, ab_md(model_store, churn_bundles))
    wait_for("the A/B Ready", lambda: status(kube_api, namespace).get("phase") == "Ready", timeout=300)
    router = wait_for("a ready router", lambda: ready_endpoints(kube_api, namespace, "churn"), timeout=120)[0]
    joiner = wait_for(
        "a ready joiner", lambda: ready_endpoints(kube_api, namespace, "churn-joiner"), timeout=240
    )[0]
    rows = golden(churn_bundles)

    # -- 1. the A/B: predictions now, labels later, joined per arm ---------------------------------
    with httpx.Client(timeout=15) as http:
        seen = predict(http, router, rows[:300], "user")
        assert {p.variant for p in seen.values()} == {"a", "b"}
        wait_for(
            "300 prediction records in the joiner",
            lambda: recorded(joiner) == 300,
            timeout=120,
        )
        answer = send_labels(http, router, seen)
        assert answer["joined"] == 300, answer["counts"]
        wrong = [{"request_id": "never-answered", "label": 1}, {"request_id": next(iter(seen)), "label": 5}]
        bad = http.post(f"{router}/v2/models/churn/feedback", json={"labels": wrong}).json()
        assert [r["status"] for r in bad["results"]] == ["unknown_request", "invalid_label"]

    arms = summary_arms(joiner)
    for (variant, revision), quality in arms.items():
        mine = [p for p in seen.values() if (p.variant, p.revision) == (variant, revision)]
        assert quality["labelled"] == len(mine) > 0
        correct = sum(p.predicted == p.truth for p in mine)
        assert quality["accuracy"] == pytest.approx(correct / len(mine))
        assert quality["auc"] is not None
    metrics = httpx.get(f"{joiner}/metrics", timeout=30).text
    assert 'modeldeploy_joiner_labels_total{outcome="joined"} 300.0' in metrics
    assert "modeldeploy_effectiveness_auc{" in metrics

    view = plugin_status(kubeconfig, namespace, "churn")
    assert "Effectiveness: delayed labels joined to predictions" in view, view
    for variant, revision in arms:
        assert any(variant in line.split() and revision in line.split() for line in view.splitlines()), view

    # -- 2. a canary of b gated by the effectiveness check on the operator's own joiner -------------
    stable_b = next(v["revision"] for v in status(kube_api, namespace)["variants"] if v["name"] == "b")
    v3 = model(model_store, churn_bundles, "3")
    variants = [{"name": "a", "weight": 50}, {"name": "b", "weight": 50, "model": v3}]
    patch_mdep(kube_api, namespace, "churn", {"spec": {"variants": variants}})

    def canary_taking_traffic() -> str | None:
        arms = router_arms(kube_api, namespace, "churn")
        return next((r for v, r, w in arms if v == "b" and r != stable_b and w > 0), None)

    canary = wait_for("the canary of b taking traffic", canary_taking_traffic, timeout=300)
    with httpx.Client(timeout=15) as http:
        later = predict(http, router, rows[300:1000], "later")
        on_canary = [p for p in later.values() if p.revision == canary]
        assert len(on_canary) >= 60, "too few requests reached the canary"
        # Every arm's records, not only the canary's: a label sent before its prediction's record
        # reached the joiner is an unknown request (CI, 2026-12-02: 692 of 700 joined).
        total = len(seen) + len(later)
        wait_for(
            f"all {total} prediction records in the joiner",
            lambda: recorded(joiner) == total,
            timeout=120,
        )
        assert summary_arms(joiner).get(("b", canary), {}).get("predictions") == len(on_canary)
        assert send_labels(http, router, later)["joined"] == len(later)

    def aborted() -> dict[str, Any] | None:
        current = status(kube_api, namespace)
        return next(
            (h for h in current.get("history", []) if h["hash"] == canary and h["outcome"] == "Aborted"), None
        )

    entry = wait_for("the canary aborted by the effectiveness check", aborted, timeout=300)
    assert "auc" in entry["message"], entry
    final = status(kube_api, namespace)
    assert next(v["revision"] for v in final["variants"] if v["name"] == "b") == stable_b
    checks = {c["name"]: c for c in (final.get("analysis") or {}).get("checks", [])}
    if checks:  # the analysis block of the aborted revision, when status still carries it
        last = checks["auc"]["measurements"][-1]
        assert last["value"] < -0.05, last
