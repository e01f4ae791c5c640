"""The operator with real model servers: status follows pods, and a new model version takes over only
once it is ready (a broken one never takes traffic from the working one)."""

from __future__ import annotations

import hashlib
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from cluster_helpers import SERVING, condition, create_mdep, get_mdep, patch_mdep, router_arms, wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.usefixtures("operator_release")]


def churn(store: str, bundles: Path, version: str, replicas: int = 2) -> dict[str, Any]:
    manifest_file = bundles / f"v{version}" / "manifest.json"
    sha = hashlib.sha256(manifest_file.read_bytes()).hexdigest() if manifest_file.exists() else None
    model: dict[str, Any] = {"uri": f"{store}/v{version}", "format": "onnx", "version": version}
    if sha:
        model["sha256"] = sha
    return {
        "apiVersion": "modeldeploy.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "churn"},
        "spec": {"model": model, "replicas": replicas},
    }


def revisions(api: client.ApiClient, namespace: str) -> set[str]:
    return {
        d.metadata.labels["modeldeploy.io/revision"]
        for d in client.AppsV1Api(api)
        .list_namespaced_deployment(namespace, label_selector=SERVING.format("churn"))
        .items
    }


def test_status_follows_pods_becoming_ready_and_pods_answer(
    kube_api: client.ApiClient, namespace: str, model_store: str, churn_bundles: Path
) -> None:
    create_mdep(kube_api, namespace, churn(model_store, churn_bundles, "1", replicas=2))
    first = wait_for("a status", lambda: get_mdep(kube_api, namespace, "churn").get("status"))
    assert first["phase"] in ("Pending", "Progressing")

    ready = wait_for(
        "phase Ready with 2/2",
        lambda: (
            (md := get_mdep(kube_api, namespace, "churn"))["status"].get("readyReplicas") == 2
            and md["status"]["phase"] == "Ready"
            and md
        ),
        timeout=120,
    )
    assert condition(ready, "Ready")["status"] == "True"  # type: ignore[index]
    assert condition(ready, "Progressing")["status"] == "False"  # type: ignore[index]
    assert ready["status"]["modelVersion"] == "1"
    assert ready["status"]["history"][0]["outcome"] == "Promoted"

    pods = client.CoreV1Api(kube_api).list_namespaced_pod(namespace, label_selector=SERVING.format("churn"))
    for pod in pods.items:
        with urllib.request.urlopen(
            f"http://{pod.status.pod_ip}:8080/v2/models/churn/ready", timeout=5
        ) as answer:
            assert answer.status == 200


def test_a_new_version_takes_over_only_once_ready_and_a_broken_one_never_does(
    kube_api: client.ApiClient, namespace: str, model_store: str, churn_bundles: Path
) -> None:
    create_mdep(kube_api, namespace, churn(model_store, churn_bundles, "1", replicas=1))
    wait_for(
        "v1 Ready",
        lambda: get_mdep(kube_api, namespace, "churn").get("status", {}).get("phase") == "Ready",
        timeout=120,
    )
    (v1,) = revisions(kube_api, namespace)

    # A version whose bundle does not exist: its pods never get ready, v1 keeps serving.
    patch_mdep(
        kube_api,
        namespace,
        "churn",
        {"spec": {"model": {"uri": f"{model_store}/v9", "version": "9", "sha256": None}}},
    )
    wait_for("the broken revision next to v1", lambda: len(revisions(kube_api, namespace)) == 2, timeout=30)
    md = wait_for(
        "status of the broken update",
        lambda: (m := get_mdep(kube_api, namespace, "churn"))["status"].get("observedGeneration") == 2 and m,
    )
    # The broken revision is in the table (so the router tracks its pods) but at weight 0.
    assert [a for a in router_arms(kube_api, namespace, "churn") if a[2] > 0] == [("default", v1, 10_000)]
    assert condition(md, "Progressing")["status"] == "True"  # type: ignore[index]

    # A good version: it takes over once ready, and the old revisions go.
    good = churn(model_store, churn_bundles, "2", replicas=1)["spec"]["model"]
    patch_mdep(kube_api, namespace, "churn", {"spec": {"model": good}})
    final = wait_for(
        "Ready on v2",
        lambda: (
            (m := get_mdep(kube_api, namespace, "churn"))["status"].get("phase") == "Ready"
            and m["status"].get("modelVersion") == "2"
            and m
        ),
        timeout=120,
    )
    v2 = final["status"]["stableRevision"]
    assert v2 not in (v1,)
    wait_for(
        "the router table on v2",
        lambda: (
            [a for a in router_arms(kube_api, namespace, "churn") if a[2] > 0] == [("default", v2, 10_000)]
        ),
    )
    # v1 leaves traffic but keeps its Deployment (scaled down later) so a rollback is a scale-up.
    assert v1 in revisions(kube_api, namespace)
    assert [h["modelVersion"] for h in final["status"]["history"]][-1] == "2"
