"""Progressive rollouts end to end on the local cluster: the chart-installed operator, real model servers
and the router on the process node, and live prediction traffic through the router.

- a good canary (v2) walks every step and is promoted, also across an operator restart mid-rollout;
- a bad canary whose scores shift (v3) is rolled back by the analysis, with the stable back at 100%
  and no failed request on the stable path;
- a bad canary that errors (a serving setting that rejects the callers' requests) is rolled back on
  its error rate, again with no failed request on the stable path;
- the same bad canary at low traffic (a few scores per interval, far below the check's minSamples of
  150) is stopped on overwhelming evidence (issue 12), not left Inconclusive until the deadline;
- a canary that never gets ready is aborted at its progress deadline;
- a BlueGreen preview runs at full size with no traffic until promoted, then takes all of it at once.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest
from kubernetes import client

from cluster_helpers import FIRST_READY_SECONDS, condition, create_mdep, patch_mdep, wait_for
from operator_fixtures import OPERATOR_PODS, PrivateOperator
from rollout_helpers import canary_md, live_arms, model, ready_on, rows, set_model, status
from traffic import Traffic, ready_endpoints

COMMAND = "modeldeploy.io/command"

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.usefixtures("operator_release")]


# On an operator of its own (PrivateOperator): restarting the shared one would need the cluster to itself.
@pytest.mark.timeout(1200)
def test_a_good_canary_is_promoted_step_by_step_even_across_an_operator_restart(
    kube_api: client.ApiClient,
    namespace: str,
    model_store: str,
    churn_bundles: Path,
    private_operator: PrivateOperator,
) -> None:
    create_mdep(kube_api, namespace, private_operator.mark(canary_md(model_store, churn_bundles)))
    v1 = wait_for("v1 Ready", lambda: ready_on(kube_api, namespace, "1"), timeout=FIRST_READY_SECONDS)[
        "stableRevision"
    ]
    with Traffic(kube_api, namespace, "churn", rows(churn_bundles)) as traffic:
        wait_for("traffic through the router", lambda: len(traffic.results) > 40, timeout=60)
        set_model(kube_api, namespace, model(model_store, churn_bundles, "2"))

        weights: list[int] = []
        restarted = False
        # 480 s: its operator's one replica, deleted, is replaced and waits out the Lease (15 s) before it
        # resumes; a CI run (2026-12-03) ran out of 240 s on the loaded machine.
        deadline = time.monotonic() + 480
        while time.monotonic() < deadline:
            current = status(kube_api, namespace)
            weight = int(current.get("canaryWeight") or 0)
            if not weights or weights[-1] != weight:
                weights.append(weight)
            if weight == 25 and not restarted:
                # Kill every operator replica mid-rollout: the rollout must resume where it was.
                client.CoreV1Api(kube_api).delete_collection_namespaced_pod(
                    namespace,
                    label_selector=OPERATOR_PODS,
                    grace_period_seconds=0,
                )
                restarted = True
            if ready_on(kube_api, namespace, "2"):
                break
            time.sleep(0.5)
        final = wait_for("v2 promoted", lambda: ready_on(kube_api, namespace, "2"), timeout=5)
        time.sleep(2)
    assert restarted
    assert [w for w in weights if w > 0][:2] == [25, 50], weights
    v2 = final["stableRevision"]
    assert v2 != v1
    assert final["history"][-1]["outcome"] == "Promoted"
    assert all(c["result"] != "Fail" for c in final.get("analysis", {}).get("checks", []))
    assert live_arms(kube_api, namespace) == [("default", v2, 10_000)]
    assert traffic.failures() == []
    answered_by = {r.revision for r in traffic.results if r.status == 200}
    assert {v1, v2} <= answered_by


def test_a_canary_whose_scores_shift_is_rolled_back_without_failing_the_stable_path(
    kube_api: client.ApiClient, namespace: str, model_store: str, churn_bundles: Path
) -> None:
    create_mdep(kube_api, namespace, canary_md(model_store, churn_bundles))
    v1 = wait_for("v1 Ready", lambda: ready_on(kube_api, namespace, "1"), timeout=FIRST_READY_SECONDS)[
        "stableRevision"
    ]
    with Traffic(kube_api, namespace, "churn", rows(churn_bundles)) as traffic:
        wait_for("traffic through the router", lambda: len(traffic.results) > 40, timeout=60)
        set_model(kube_api, namespace, model(model_store, churn_bundles, "3"))
        aborted = wait_for(
            "the analysis to abort v3",
            lambda: (s := status(kube_api, namespace)).get("aborted") and s,
            timeout=180,
        )
        time.sleep(3)
    assert aborted["canaryWeight"] == 0
    assert aborted["stableRevision"] == v1
    assert condition({"status": aborted}, "Degraded")["status"] == "True"  # type: ignore[index]
    shift = next(c for c in aborted["analysis"]["checks"] if c["name"] == "score-shift")
    assert shift["result"] == "Fail"
    assert aborted["history"][-1]["outcome"] == "Aborted"
    assert live_arms(kube_api, namespace) == [("default", v1, 10_000)]
    assert traffic.failures() == [], "the stable path answered every request"
    events = client.CoreV1Api(kube_api).list_namespaced_event(
        namespace, field_selector="involvedObject.name=churn"
    )
    assert any(e.type == "Warning" and "score-shift" in (e.message or "") for e in events.items)


def test_a_clearly_bad_canary_at_low_traffic_fails_before_its_minimum_sample_count(
    kube_api: client.ApiClient, namespace: str, model_store: str, churn_bundles: Path
) -> None:
    """At 10 requests a second the canary's 25% gives a few dozen scores per 6 s interval: the
    score-shift check never reaches its minSamples of 150 in one interval, yet v3's shift (PSI ~5) is
    overwhelming evidence, so it fails early (docs/analysis.md, "Failing before minSamples")."""
    create_mdep(kube_api, namespace, canary_md(model_store, churn_bundles, deadline=600))
    v1 = wait_for("v1 Ready", lambda: ready_on(kube_api, namespace, "1"), timeout=FIRST_READY_SECONDS)[
        "stableRevision"
    ]
    with Traffic(kube_api, namespace, "churn", rows(churn_bundles), rate=10) as traffic:
        wait_for("traffic through the router", lambda: len(traffic.results) > 20, timeout=60)
        set_model(kube_api, namespace, model(model_store, churn_bundles, "3"))
        aborted = wait_for(
            "the analysis to abort v3 before the deadline",
            lambda: (s := status(kube_api, namespace)).get("aborted") and s,
            timeout=240,
        )
    assert aborted["stableRevision"] == v1
    assert aborted["history"][-1]["outcome"] == "Aborted"
    assert "ProgressDeadlineExceeded" not in (aborted["history"][-1].get("message") or "")
    shift = next(c for c in aborted["analysis"]["checks"] if c["name"] == "score-shift")
    failed = shift["measurements"][-1]
    assert shift["result"] == "Fail"
    assert failed["samples"] < 150
    assert "beyond doubt" in failed["message"]
    assert live_arms(kube_api, namespace) == [("default", v1, 10_000)]


def test_a_canary_that_never_gets_ready_is_aborted_at_its_deadline(
    kube_api: client.ApiClient, namespace: str, model_store: str, churn_bundles: Path
) -> None:
    create_mdep(kube_api, namespace, canary_md(model_store, churn_bundles, deadline=30))
    v1 = wait_for("v1 Ready", lambda: ready_on(kube_api, namespace, "1"), timeout=FIRST_READY_SECONDS)[
        "stableRevision"
    ]
    set_model(kube_api, namespace, {"uri": f"{model_store}/missing", "format": "onnx", "version": "9"})
    aborted = wait_for(
        "the deadline to abort", lambda: (s := status(kube_api, namespace)).get("aborted") and s, timeout=120
    )
    assert aborted["stableRevision"] == v1
    assert live_arms(kube_api, namespace) == [("default", v1, 10_000)]
    assert "ProgressDeadlineExceeded" in str(aborted["history"][-1])


def test_a_canary_that_errors_is_rolled_back_without_failing_the_stable_path(
    kube_api: client.ApiClient, namespace: str, model_store: str, churn_bundles: Path
) -> None:
    create_mdep(kube_api, namespace, canary_md(model_store, churn_bundles))
    v1 = wait_for("v1 Ready", lambda: ready_on(kube_api, namespace, "1"), timeout=FIRST_READY_SECONDS)[
        "stableRevision"
    ]
    # Callers send bodies of about 2.3 KB; the new revision's server accepts at most 1 KiB: every request
    # that reaches it fails with 413, a misconfiguration only real traffic shows.
    with Traffic(kube_api, namespace, "churn", rows(churn_bundles), padding=2048) as traffic:
        wait_for("traffic through the router", lambda: len(traffic.results) > 40, timeout=60)
        patch_mdep(
            kube_api,
            namespace,
            "churn",
            {"spec": {"model": model(model_store, churn_bundles, "2"), "server": {"maxBodyBytes": 1024}}},
        )
        aborted = wait_for(
            "the error rate to abort the canary",
            lambda: (s := status(kube_api, namespace)).get("aborted") and s,
            timeout=180,
        )
        canary = aborted["canaryRevision"]
        time.sleep(3)
    errors = next(c for c in aborted["analysis"]["checks"] if c["name"] == "errors")
    assert errors["result"] == "Fail"
    assert aborted["stableRevision"] == v1
    assert live_arms(kube_api, namespace) == [("default", v1, 10_000)]
    # What callers got from the canary is its 413, or nothing: a server that refuses a body by its length
    # answers and closes with the body unread, Linux then resets the connection, and the reset can drop
    # the 413 before the router reads it; the router then sends the unread request to another backend
    # (docs/router.md, Delivery guarantee), the stable one (a CI run of 2026-12-04 saw only that).
    # The canary's 413s are in its own metrics either way: the errors check failed on them above.
    # What every caller got, by (status, revision), printed: the canary's 413s reach the router whole
    # (the lingering close, docs/serving.md "Refused bodies"), yet a CI run of 2026-12-04 saw no caller
    # answered by the canary at all, for a reason not found (the router's retry stays within the arm).
    print(f"erroring canary {canary}: callers got {Counter((r.status, r.revision) for r in traffic.results)}")
    assert {r.status for r in traffic.results if r.revision == canary} <= {413}
    assert [r for r in traffic.failures() if r.revision != canary] == [], (
        "the stable path answered every request"
    )


def test_a_blue_green_preview_takes_no_traffic_until_promoted_then_takes_it_all(
    kube_api: client.ApiClient, namespace: str, model_store: str, churn_bundles: Path
) -> None:
    md = canary_md(model_store, churn_bundles)
    md["spec"]["rollout"] = {
        "strategy": "BlueGreen",
        "steps": [{"pause": {}}],  # hold the preview until a promote command
        "progressDeadlineSeconds": 180,
        "scaleDownDelaySeconds": 5,
    }
    create_mdep(kube_api, namespace, md)
    v1 = wait_for("v1 Ready", lambda: ready_on(kube_api, namespace, "1"), timeout=FIRST_READY_SECONDS)[
        "stableRevision"
    ]
    with Traffic(kube_api, namespace, "churn", rows(churn_bundles)) as traffic:
        wait_for("traffic through the router", lambda: len(traffic.results) > 40, timeout=60)
        set_model(kube_api, namespace, model(model_store, churn_bundles, "2"))
        preview = wait_for("a preview revision", lambda: status(kube_api, namespace).get("canaryRevision"))
        wait_for(
            "the preview at full size",
            lambda: len(ready_endpoints(kube_api, namespace, f"churn-default-{preview}")) == 2,
            timeout=120,
        )
        time.sleep(4)  # the paused preview, ready, under live traffic
        assert live_arms(kube_api, namespace) == [("default", v1, 10_000)]
        assert preview not in {r.revision for r in traffic.results}, "the preview answered a caller"

        command = {"id": str(uuid.uuid4()), "action": "promote"}
        patch_mdep(
            kube_api, namespace, "churn", {"metadata": {"annotations": {COMMAND: json.dumps(command)}}}
        )
        final = wait_for("v2 promoted", lambda: ready_on(kube_api, namespace, "2"), timeout=60)
        promoted_at = time.time()  # Result.at is wall-clock time
        time.sleep(5)
    assert final["stableRevision"] == preview
    assert final["history"][-1]["outcome"] == "Promoted"
    assert live_arms(kube_api, namespace) == [("default", preview, 10_000)]  # all at once, no steps
    assert traffic.failures() == []
    after = [r.revision for r in traffic.results if r.at > promoted_at + 3]  # the router has the new table
    assert after
    assert set(after) == {preview}
