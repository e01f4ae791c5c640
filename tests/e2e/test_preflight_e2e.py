"""Preflight end to end (issue 15): the chart-installed operator replays a bundle's golden set against
the new revision's pods (and the stable's) before the new revision takes any traffic.

- a v2 whose golden-set AUC drops (the churn example's v3, trained on corrupted labels) is stopped
  before any traffic: its weight is never above 0 and the router table never gives it a share;
- a v2 whose bundle was altered after packing (the model files replaced by another model's, the
  manifest's digests fixed so that the server loads it, the golden outputs left as packed) is stopped
  by the recorded-output comparison, under the Immediate strategy;
- a good v2 passes its preflight and is promoted.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from cluster_helpers import condition, create_mdep, router_arms, wait_for
from rollout_helpers import model, ready_on, set_model, status

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.slow,
    pytest.mark.usefixtures("operator_release"),  # which applies this checkout's CRD
]


def preflight_md(store: str, bundles: Path, strategy: str, preflight: dict[str, Any]) -> dict[str, Any]:
    rollout: dict[str, Any] = {
        "strategy": strategy,
        "preflight": preflight,
        "progressDeadlineSeconds": 180,
        "scaleDownDelaySeconds": 5,
    }
    if strategy == "Canary":
        rollout["steps"] = [{"setWeight": 50}, {"pause": {"duration": "3s"}}]
    return {
        "apiVersion": "modeldeploy.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "churn"},
        "spec": {"model": model(store, bundles, "1"), "replicas": 1, "rollout": rollout},
    }


def swapped_bundle(bundles: Path, name: str, packed: str, served: str) -> None:
    """bundles/<name>: bundle <packed> whose model files were replaced by bundle <served>'s after
    packing, with the manifest's digests fixed (the server verifies and loads it) but the golden set,
    with the outputs <packed> gave, left as it was: the served model is not the packed one."""
    out = bundles / name
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(bundles / packed, out)
    manifest = json.loads((out / "manifest.json").read_text())
    for key in ("model", "onnx"):
        entry = manifest["files"].get(key)
        if entry is None:
            continue
        shutil.copyfile(bundles / served / entry["path"], out / entry["path"])
        data = (out / entry["path"]).read_bytes()
        entry["sha256"] = hashlib.sha256(data).hexdigest()
        entry["size"] = len(data)
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))


def entry_of(current: dict[str, Any], revision: str | None = None) -> dict[str, Any] | None:
    for entry in current.get("preflight") or ():
        if revision is None or entry["revision"] == revision:
            return dict(entry)
    return None


def watch_until_decided(
    api: client.ApiClient, namespace: str, stable: str, timeout: float = 240
) -> tuple[dict[str, Any], list[tuple[str, str, int]]]:
    """Poll status and the router table until the new revision's preflight is decided (and, when
    it failed, the revision is aborted); every router arm seen on the way is returned."""
    seen_arms: list[tuple[str, str, int]] = []
    weights: list[int] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        current = status(api, namespace)
        weights.append(int(current.get("canaryWeight") or 0))
        seen_arms += router_arms(api, namespace, "churn")
        entry = entry_of(current)
        if entry is not None and entry["result"] in ("Failed", "Passed", "Skipped"):
            done = entry["result"] != "Failed" or any(
                h["hash"] == entry["revision"] and h["outcome"] == "Aborted"
                for h in current.get("history", [])
            )
            if done:
                seen_arms += router_arms(api, namespace, "churn")
                return current, seen_arms
        time.sleep(0.3)
    raise AssertionError(f"preflight not decided in {timeout}s: {status(api, namespace)}")


def degraded_by_preflight(api: client.ApiClient, namespace: str) -> dict[str, Any] | None:
    found = condition({"status": status(api, namespace)}, "Degraded")
    return found if found is not None and found.get("reason") == "PreflightFailed" else None


def events(api: client.ApiClient, namespace: str, reason: str) -> list[str]:
    found = client.CoreV1Api(api).list_namespaced_event(namespace, field_selector=f"reason={reason}")
    return [e.message or "" for e in found.items]


def test_a_v2_whose_golden_auc_drops_is_stopped_before_any_traffic(
    kube_api: client.ApiClient, namespace: str, model_store: str, churn_bundles: Path
) -> None:
    # The score-PSI limit is lifted so that the quality comparison is what stops it.
    md = preflight_md(model_store, churn_bundles, "Canary", {"maxScorePSI": 100, "maxAUCDrop": 0.02})
    create_mdep(kube_api, namespace, md)
    v1 = wait_for("v1 Ready", lambda: ready_on(kube_api, namespace, "1"), timeout=180)["stableRevision"]
    set_model(kube_api, namespace, model(model_store, churn_bundles, "3"))
    final, arms = watch_until_decided(kube_api, namespace, v1)

    entry = entry_of(final)
    assert entry is not None
    bad = entry["revision"]
    assert entry["result"] == "Failed", entry
    checks = {c["name"]: c for c in entry["checks"]}
    assert checks["auc-drop"]["passed"] is False
    assert checks["auc-drop"]["value"] > 0.2  # v3's AUC on the golden rows: 0.58 against v1's 0.83
    assert checks["outputs-match-bundle"]["passed"] is True  # it is the packed model, just a bad one
    assert entry["new"]["auc"] < entry["stable"]["auc"] - 0.2
    assert entry["stableRevision"] == v1
    # never any traffic: no weight in status, no share in the router table
    assert not [a for a in arms if a[1] == bad and a[2] > 0], arms
    assert final["stableRevision"] == v1
    assert int(final.get("canaryWeight") or 0) == 0
    history = next(h for h in final["history"] if h["hash"] == bad)
    assert history["outcome"] == "Aborted"
    assert "PreflightFailed" in history["message"]
    degraded = wait_for(
        "Degraded PreflightFailed", lambda: degraded_by_preflight(kube_api, namespace), timeout=30
    )
    assert "auc" in degraded["message"]
    assert wait_for(
        "the PreflightFailed Event", lambda: events(kube_api, namespace, "PreflightFailed"), timeout=30
    )
    # and it stays so: the stable keeps all the traffic
    assert [a for a in router_arms(kube_api, namespace, "churn") if a[2] > 0] == [("default", v1, 10_000)]


def test_a_bundle_swapped_after_packing_is_stopped_by_the_recorded_outputs(
    kube_api: client.ApiClient, namespace: str, model_store: str, churn_bundles: Path
) -> None:
    swapped_bundle(churn_bundles, "v9", packed="v2", served="v1")
    md = preflight_md(model_store, churn_bundles, "Immediate", {})
    create_mdep(kube_api, namespace, md)
    v1 = wait_for("v1 Ready", lambda: ready_on(kube_api, namespace, "1"), timeout=180)["stableRevision"]
    # The swapped bundle keeps v2's manifest, version "v2" included: the spec says "2", as a user who
    # packed v2 would (any other version is refused by the servers before preflight, ModelVersionMismatch).
    set_model(kube_api, namespace, {**model(model_store, churn_bundles, "9"), "version": "2"})
    final, arms = watch_until_decided(kube_api, namespace, v1)

    entry = entry_of(final)
    assert entry is not None
    swapped = entry["revision"]
    assert entry["result"] == "Failed", entry
    checks = {c["name"]: c for c in entry["checks"]}
    assert checks["outputs-match-bundle"]["passed"] is False
    assert "not the packed one" in checks["outputs-match-bundle"]["detail"]
    assert entry["maxAbsDiff"] > entry["tolerance"]
    # the served model is v1's, so against the stable (v1) nothing else differs
    assert checks["score-psi"]["passed"] is True
    assert checks["auc-drop"]["passed"] is True
    assert not [a for a in arms if a[1] == swapped and a[2] > 0], arms
    assert final["stableRevision"] == v1
    history = next(h for h in final["history"] if h["hash"] == swapped)
    assert history["outcome"] == "Aborted"
    assert wait_for(
        "the PreflightFailed Event", lambda: events(kube_api, namespace, "PreflightFailed"), timeout=30
    )
    assert [a for a in router_arms(kube_api, namespace, "churn") if a[2] > 0] == [("default", v1, 10_000)]


def test_a_good_v2_passes_preflight_and_is_promoted(
    kube_api: client.ApiClient, namespace: str, model_store: str, churn_bundles: Path
) -> None:
    md = preflight_md(model_store, churn_bundles, "Canary", {})
    create_mdep(kube_api, namespace, md)
    v1 = wait_for("v1 Ready", lambda: ready_on(kube_api, namespace, "1"), timeout=180)["stableRevision"]
    set_model(kube_api, namespace, model(model_store, churn_bundles, "2"))
    decided, _arms = watch_until_decided(kube_api, namespace, v1)
    entry = entry_of(decided)
    assert entry is not None
    assert entry["result"] == "Passed", entry
    assert all(c["passed"] is not False for c in entry["checks"])
    assert entry["rows"] == entry["labelledRows"] == 1000
    assert entry["maxAbsDiff"] <= entry["tolerance"]
    final = wait_for("v2 promoted", lambda: ready_on(kube_api, namespace, "2"), timeout=180)
    assert final["stableRevision"] == entry["revision"]
    assert final["history"][-1]["outcome"] == "Promoted"
    kept = entry_of(final, entry["revision"])
    assert kept is not None
    assert kept["result"] == "Passed"
    assert wait_for(
        "the PreflightPassed Event", lambda: events(kube_api, namespace, "PreflightPassed"), timeout=30
    )


def test_the_api_server_keeps_preflight_in_spec_and_status(
    kube_api: client.ApiClient, namespace: str, model_store: str, churn_bundles: Path
) -> None:
    """Nothing of rollout.preflight is pruned, and its defaults are applied."""
    md = preflight_md(model_store, churn_bundles, "Canary", {"minAUC": 0.7})
    created = create_mdep(kube_api, namespace, md)
    assert created["spec"]["rollout"]["preflight"] == {
        "enabled": True,
        "minAUC": 0.7,
        "maxScorePSI": 0.25,
        "maxAUCDrop": 0.01,
        "maxAccuracyDrop": 0.02,
        "maxLogLossIncrease": 0.05,
        "requireLabels": False,
        "timeoutSeconds": 60,
    }
