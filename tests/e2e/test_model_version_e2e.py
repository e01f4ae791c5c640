"""One truth for a model's version, end to end (issue 12): the chart-installed operator tells each
server the spec's model.version; a canary whose bundle's manifest names another version is refused by
its servers and stopped by the operator with reason ModelVersionMismatch (never a silent rollout or a
wait for the progress deadline), and status.history records the digests the servers actually loaded.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from cluster_helpers import condition, create_mdep, wait_for
from rollout_helpers import canary_md, model, ready_on, set_model, status

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.slow,
    pytest.mark.usefixtures("operator_release"),  # which applies this checkout's CRD
]


def digest(bundles: Path, version: str) -> str:
    return hashlib.sha256((bundles / f"v{version}" / "manifest.json").read_bytes()).hexdigest()


def test_history_records_the_digest_the_servers_loaded(
    kube_api: client.ApiClient, namespace: str, model_store: str, churn_bundles: Path, kubeconfig: Path
) -> None:
    create_mdep(kube_api, namespace, canary_md(model_store, churn_bundles))
    wait_for("v1 Ready", lambda: ready_on(kube_api, namespace, "1"), timeout=180)

    def loaded() -> list[str] | None:
        history = status(kube_api, namespace).get("history") or []
        found = history[-1].get("loadedSha256") if history else None
        return list(found) if found else None

    assert wait_for("v1's loaded digest in history", loaded, timeout=60) == [digest(churn_bundles, "1")]
    # ... and `kubectl modeldeploy history` shows it (LOADED, the first 12 hex characters)
    command = [str(Path(sys.executable).parent / "kubectl-modeldeploy"), "--kubeconfig", str(kubeconfig)]
    shown = subprocess.run(
        [*command, "-n", namespace, "history", "churn"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    header, first = shown.splitlines()[:2]
    loaded_column = header.split().index("LOADED")
    assert first.split()[loaded_column] == digest(churn_bundles, "1")[:12], shown


def test_a_canary_whose_bundle_names_another_version_is_stopped_with_the_reason(
    kube_api: client.ApiClient, namespace: str, model_store: str, churn_bundles: Path
) -> None:
    create_mdep(kube_api, namespace, canary_md(model_store, churn_bundles, deadline=600))
    v1 = wait_for("v1 Ready", lambda: ready_on(kube_api, namespace, "1"), timeout=180)["stableRevision"]
    # The v3 bundle (manifest version "v3") under a spec that says version "2".
    wrong: dict[str, Any] = model(model_store, churn_bundles, "3") | {"version": "2"}
    set_model(kube_api, namespace, wrong)

    def stopped() -> dict[str, Any] | None:
        current = status(kube_api, namespace)
        degraded = condition({"status": current}, "Degraded")
        if degraded is None or degraded.get("reason") != "ModelVersionMismatch":
            return None
        return current

    # Well before the 600 s progress deadline: the servers say why at once.
    current = wait_for("ModelVersionMismatch", stopped, timeout=180)
    degraded = condition({"status": current}, "Degraded")
    assert degraded is not None
    assert "'v3'" in degraded["message"]
    assert "'2'" in degraded["message"]
    aborted = [h for h in current["history"] if h["outcome"] == "Aborted"]
    assert aborted
    assert aborted[-1]["message"].startswith("ModelVersionMismatch: ")
    assert "loadedSha256" not in aborted[-1]  # no server loaded it
    assert current["stableRevision"] == v1
    assert current.get("canaryWeight", 0) == 0
