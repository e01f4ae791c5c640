"""Analysis on mirrored traffic end to end (issue 12, "Analysis for every strategy"): the chart-installed
operator, real model servers and the router, and live prediction traffic through the router.

- a BlueGreen preview, which answers no caller, is judged on copies of live requests the router
  mirrors to it (its servers count them as traffic="mirror"), passes its checks (errorRate and
  shadowAgreement) and is promoted without a human;
- a Canary whose first step is a shadow step receives mirrored copies and answers no caller while
  the step runs, then passes its checks on them and goes on to take live weight and be promoted.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import httpx
import pytest
from kubernetes import client

from cluster_helpers import create_mdep, router_arms, wait_for
from rollout_helpers import canary_md, live_arms, model, ready_on, rows, set_model, status
from traffic import Traffic, ready_endpoints

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.usefixtures("operator_release")]

MIRROR_CHECKS = [
    {"name": "errors", "type": "errorRate", "threshold": {"max": 0.05}},
    # v2 is a retrained v1: most labels agree; a broken model would agree on about half or fewer.
    {"name": "agreement", "type": "shadowAgreement", "threshold": {"min": 0.6}},
]
_MIRROR_SAMPLE = re.compile(r'^modeldeploy_requests_total\{[^}]*traffic="mirror"[^}]*\} ([0-9.e+]+)$', re.M)


def mirrored_requests(api: client.ApiClient, namespace: str, revision: str) -> float:
    """Requests the revision's ready servers counted as traffic="mirror" (read from their /metrics)."""
    total = 0.0
    for endpoint in ready_endpoints(api, namespace, f"churn-default-{revision}"):
        try:
            text = httpx.get(f"{endpoint}/metrics", timeout=5).text
        except httpx.HTTPError:
            continue
        total += sum(float(v) for v in _MIRROR_SAMPLE.findall(text))
    return total


def mirror_target(api: client.ApiClient, namespace: str) -> str | None:
    """The revision the router table mirrors to now (None: no mirror)."""
    from modeldeploy_contract.router_config import CONFIG_KEY, RouterConfig, config_map_name

    data = client.CoreV1Api(api).read_namespaced_config_map(config_map_name("churn"), namespace).data
    config = RouterConfig.from_json(data[CONFIG_KEY])
    return config.mirror.revision if config.mirror is not None else None


def test_a_blue_green_preview_is_promoted_on_mirrored_traffic(
    kube_api: client.ApiClient, namespace: str, model_store: str, churn_bundles: Path
) -> None:
    md = canary_md(model_store, churn_bundles)
    md["spec"]["rollout"] = {
        "strategy": "BlueGreen",
        "steps": [{"analysis": {"duration": "12s"}}],
        "analysis": {
            "interval": "6s",
            "minSamples": 20,
            "failureLimit": 0,
            "mirrorPercent": 100,
            "checks": MIRROR_CHECKS,
        },
        "progressDeadlineSeconds": 180,
        "scaleDownDelaySeconds": 5,
    }
    create_mdep(kube_api, namespace, md)
    v1 = wait_for("v1 Ready", lambda: ready_on(kube_api, namespace, "1"), timeout=120)["stableRevision"]
    with Traffic(kube_api, namespace, "churn", rows(churn_bundles)) as traffic:
        wait_for("traffic through the router", lambda: len(traffic.results) > 40, timeout=60)
        set_model(kube_api, namespace, model(model_store, churn_bundles, "2"))
        preview = wait_for("a preview revision", lambda: status(kube_api, namespace).get("canaryRevision"))
        wait_for(
            "the router table mirrors to the preview", lambda: mirror_target(kube_api, namespace) == preview
        )
        mirrored = wait_for(
            "mirrored requests at the preview",
            lambda: (n := mirrored_requests(kube_api, namespace, preview)) > 20 and n,
            timeout=120,
        )
        # Before promotion every live answer came from v1: the preview answered no caller.
        assert live_arms(kube_api, namespace) == [("default", v1, 10_000)]
        assert preview not in {r.revision for r in traffic.results}, "the preview answered a caller"
        final = wait_for(
            "v2 promoted on mirrored traffic", lambda: ready_on(kube_api, namespace, "2"), timeout=180
        )
        promoted_at = time.time()
        wait_for("the mirror removed", lambda: mirror_target(kube_api, namespace) is None, timeout=30)
        wait_for(
            "answers from the promoted revision",
            lambda: any(r.revision == preview and r.at > promoted_at for r in traffic.results),
            timeout=30,
        )
    assert final["stableRevision"] == preview
    assert final["history"][-1]["outcome"] == "Promoted"
    checks = {c["name"]: c for c in final.get("analysis", {}).get("checks", [])}
    assert {"errors", "agreement"} <= set(checks), final.get("analysis")
    for check in checks.values():
        passed = [m for m in check["measurements"] if m["result"] == "Pass"]
        assert passed, check
        assert passed[-1]["samples"] >= 20, check
    assert mirrored > 20
    assert traffic.failures() == []


def test_a_shadow_step_gates_a_canary_that_answers_no_caller_until_it_passes(
    kube_api: client.ApiClient, namespace: str, model_store: str, churn_bundles: Path
) -> None:
    md = canary_md(model_store, churn_bundles)
    md["spec"]["rollout"] = {
        "strategy": "Canary",
        "steps": [
            {"shadow": {"percent": 100, "duration": "12s"}},
            {"setWeight": 50},
            {"pause": {"duration": "4s"}},
        ],
        "analysis": {
            "interval": "6s",
            "minSamples": 20,
            "failureLimit": 0,
            "mirrorPercent": 0,  # only the shadow step mirrors
            "checks": MIRROR_CHECKS,
        },
        "progressDeadlineSeconds": 180,
        "scaleDownDelaySeconds": 5,
    }
    create_mdep(kube_api, namespace, md)
    v1 = wait_for("v1 Ready", lambda: ready_on(kube_api, namespace, "1"), timeout=120)["stableRevision"]
    with Traffic(kube_api, namespace, "churn", rows(churn_bundles)) as traffic:
        wait_for("traffic through the router", lambda: len(traffic.results) > 40, timeout=60)
        set_model(kube_api, namespace, model(model_store, churn_bundles, "2"))
        canary = wait_for("a canary revision", lambda: status(kube_api, namespace).get("canaryRevision"))

        mirrored_while_dark = 0.0
        checked_dark = 0
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            answered = len(traffic.results)  # answers before the table below was read
            weight = {r: w for _, r, w in router_arms(kube_api, namespace, "churn")}.get(canary, 0)
            if weight > 0:
                break
            # The router never runs ahead of its ConfigMap: every answer so far came from v1.
            assert canary not in {r.revision for r in traffic.results[:answered]}, "canary answered a caller"
            checked_dark += 1
            if mirror_target(kube_api, namespace) == canary:
                mirrored_while_dark = max(mirrored_while_dark, mirrored_requests(kube_api, namespace, canary))
            time.sleep(0.5)
        assert mirrored_while_dark > 0, "the canary got no mirrored request during its shadow step"
        assert checked_dark > 3
        final = wait_for("v2 promoted", lambda: ready_on(kube_api, namespace, "2"), timeout=120)
        time.sleep(2)
    assert final["stableRevision"] == canary != v1
    assert final["history"][-1]["outcome"] == "Promoted"
    checks = {c["name"]: c for c in final.get("analysis", {}).get("checks", [])}
    # Measured on the mirrored copies during the shadow step (later, with live weight and no mirror,
    # it has no rows to compare and reads Inconclusive).
    passed = [m for m in checks["agreement"]["measurements"] if m["result"] == "Pass"]
    assert passed, checks
    assert passed[0]["samples"] >= 20, checks
    assert traffic.failures() == []
    assert canary in {r.revision for r in traffic.results if r.status == 200}
