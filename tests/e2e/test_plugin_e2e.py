"""`kubectl modeldeploy` against the real cluster and the in-cluster operator: every command, -o json,
list, get --watch, the exit codes, and status.url."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from cluster_helpers import FIRST_READY_SECONDS, condition, create_mdep, get_mdep, patch_mdep, wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.usefixtures("operator_release")]
PLUGIN = str(Path(sys.executable).parent / "kubectl-modeldeploy")


def plugin(kubeconfig: Path, namespace: str, *args: str, check: bool = True) -> str:
    result = subprocess.run(
        [PLUGIN, "--kubeconfig", str(kubeconfig), "-n", namespace, *args, "--wait", "30"]
        if args[0] not in ("status", "get", "list", "history")
        else [PLUGIN, "--kubeconfig", str(kubeconfig), "-n", namespace, *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"kubectl modeldeploy {' '.join(args)} exited {result.returncode}:\n"
            f"{result.stdout}\n{result.stderr}"
        )
    return result.stdout + result.stderr


def status(api: client.ApiClient, namespace: str) -> dict[str, Any]:
    return dict(get_mdep(api, namespace, "churn").get("status") or {})


def test_every_plugin_command_against_the_operator(
    kube_api: client.ApiClient, namespace: str, model_store: str, kubeconfig: Path
) -> None:
    md = {
        "apiVersion": "modeldeploy.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "churn"},
        "spec": {
            "model": {"uri": f"{model_store}/v1", "format": "onnx", "version": "1"},
            "replicas": 1,
            "rollout": {
                "strategy": "Canary",
                "steps": [
                    {"setWeight": 20},
                    {"pause": {}},
                    {"setWeight": 60},
                    {"pause": {"duration": "10m"}},
                ],
                "scaleDownDelaySeconds": 5,
            },
        },
    }
    create_mdep(kube_api, namespace, md)
    wait_for(
        "v1 Ready", lambda: status(kube_api, namespace).get("phase") == "Ready", timeout=FIRST_READY_SECONDS
    )
    assert (
        "ignored" in plugin(kubeconfig, namespace, "abort", "churn").lower()
    )  # no rollout: a no-op, said so

    patch_mdep(
        kube_api, namespace, "churn", {"spec": {"model": {"uri": f"{model_store}/v2", "version": "2"}}}
    )
    wait_for(
        "the indefinite pause at 20%",
        lambda: (s := status(kube_api, namespace)).get("canaryWeight") == 20 and s.get("pause"),
        timeout=120,
    )
    shown = plugin(kubeconfig, namespace, "status", "churn")
    assert "20" in shown
    assert "pause" in shown.lower()
    # The live view: a watch that ends at --timeout with exit 0, its first frame the paused step.
    watched = subprocess.run(
        [
            PLUGIN,
            "--kubeconfig",
            str(kubeconfig),
            "-n",
            namespace,
            "get",
            "churn",
            "--watch",
            "--timeout",
            "3s",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert watched.returncode == 0, watched.stderr
    assert "  Step:      2/4" in watched.stdout
    assert "▶ 2. pause (until resumed)" in watched.stdout
    assert "\x1b[" not in watched.stdout  # not a terminal: no colour, no clear-screen
    as_json = json.loads(plugin(kubeconfig, namespace, "get", "churn", "-o", "json"))
    assert as_json["status"]["url"] == f"http://churn.{namespace}.svc.cluster.local:8080/v2/models/churn"
    listed = plugin(kubeconfig, namespace, "list").splitlines()
    assert listed[0].split()[:3] == ["NAME", "MODEL", "PHASE"]
    assert listed[1].split()[:4] == ["churn", "1", "Paused", "2/4"]

    plugin(kubeconfig, namespace, "resume", "churn")
    wait_for("60%", lambda: status(kube_api, namespace).get("canaryWeight") == 60, timeout=120)
    plugin(kubeconfig, namespace, "pause", "churn")
    assert wait_for(
        "a manual pause",
        lambda: (status(kube_api, namespace).get("pause") or {}).get("reason") == "Manual",
        timeout=30,
    )
    plugin(kubeconfig, namespace, "resume", "churn")
    assert wait_for(
        "back on the timed pause step",
        lambda: (status(kube_api, namespace).get("pause") or {}).get("reason") == "Step",
        timeout=30,
    )
    plugin(kubeconfig, namespace, "promote", "churn")
    promoted = wait_for(
        "v2 promoted",
        lambda: (
            (s := status(kube_api, namespace)).get("modelVersion") == "2"
            and not s.get("canaryRevision")
            and s.get("phase") == "Ready"
            and s
        ),
        timeout=120,
    )

    history = plugin(kubeconfig, namespace, "history", "churn")
    assert "Promoted" in history
    plugin(kubeconfig, namespace, "rollback", "churn", "--to", "1")
    # The pin is recorded in the pass that reads the command; revision 1 serves (stableRevision) once
    # its pods are ready again: after a promotion they may have been scaled down, and status shows
    # the pin with the old stable until then (a consistent state, not a half-written one).
    rolled = wait_for(
        "revision 1 serving again",
        lambda: (
            (s := status(kube_api, namespace)).get("pinnedRevision") == 1
            and s.get("stableRevision") != promoted["stableRevision"]
            and s
        ),
        timeout=120,
    )
    diverged = condition({"status": rolled}, "SpecDiverged")
    assert diverged is not None
    assert diverged["status"] == "True"

    missing = subprocess.run(
        [PLUGIN, "--kubeconfig", str(kubeconfig), "-n", namespace, "rollback", "churn", "--to", "99"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert missing.returncode == 1  # not found: a revision the history does not have
    assert "99" in missing.stderr
    # A bad flag is a usage error (exit 2), before anything is written.
    usage = subprocess.run(
        [PLUGIN, "--kubeconfig", str(kubeconfig), "-n", namespace, "abort", "churn", "--wait", "soon"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert usage.returncode == 2
    assert "invalid duration" in usage.stderr
    gone = subprocess.run(
        [PLUGIN, "--kubeconfig", str(kubeconfig), "-n", namespace, "status", "nope"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert gone.returncode == 1
