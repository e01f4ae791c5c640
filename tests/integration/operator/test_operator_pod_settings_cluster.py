"""Pods that fit the cluster, on the local cluster: serving and router pods carry the pod settings of
a ModelDeployment (pull secrets, node placement, tolerations, annotations) and reach Ready on the real
node; and replicas belong to an HPA the operator did not make, which the real HPA controller (in
kube-controller-manager) drives while the operator reconciles again and again."""

from __future__ import annotations

import base64
import functools
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from modeldeploy_testcluster.layout import REAL_NODE_TOLERATION, Layout

from cluster_helpers import SERVING, create_mdep, get_mdep, patch_mdep, wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.usefixtures("operator_release")]

ROUTER = "modeldeploy.io/deployment={},app.kubernetes.io/component=router"
FIELD_MANAGER = "modeldeploy-operator"


def churn(store: str, bundles: Path, **spec: Any) -> dict[str, Any]:
    sha = hashlib.sha256((bundles / "v1" / "manifest.json").read_bytes()).hexdigest()
    return {
        "apiVersion": "modeldeploy.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "churn"},
        "spec": {"model": {"uri": f"{store}/v1", "format": "onnx", "version": "1", "sha256": sha}, **spec},
    }


def ready(api: client.ApiClient, namespace: str) -> dict[str, Any]:
    return wait_for(
        "phase Ready",
        lambda: (md := get_mdep(api, namespace, "churn")).get("status", {}).get("phase") == "Ready" and md,
        timeout=180,
    )


def pull_secret(api: client.ApiClient, namespace: str, registry: str) -> str:
    """A kubernetes.io/dockerconfigjson Secret for the local registry. That registry asks for no
    credentials, so the pods prove they carry the secret and still pull, not that it authenticates."""
    auth = base64.b64encode(b"modeldeploy:unused").decode()
    config = {"auths": {registry: {"username": "modeldeploy", "password": "unused", "auth": auth}}}
    client.CoreV1Api(api).create_namespaced_secret(
        namespace,
        {
            "metadata": {"name": "registry-creds"},
            "type": "kubernetes.io/dockerconfigjson",
            "data": {".dockerconfigjson": base64.b64encode(json.dumps(config).encode()).decode()},
        },
    )
    return "registry-creds"


def _ready_pods(core: client.CoreV1Api, namespace: str, selector: str) -> list[Any] | None:
    """The pods the selector matches, once there are some and all are Ready (a wait_for probe)."""
    found: list[Any] = core.list_namespaced_pod(namespace, label_selector=selector).items
    ready = all(
        any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or ()) for p in found
    )
    return found if found and ready else None


def test_serving_and_router_pods_carry_pull_secrets_placement_tolerations_and_annotations(
    kube_api: client.ApiClient,
    namespace: str,
    model_store: str,
    churn_bundles: Path,
    local_cluster: Layout,
) -> None:
    secret = pull_secret(kube_api, namespace, local_cluster.registry)
    placement: dict[str, Any] = {
        "imagePullSecrets": [{"name": secret}],
        "nodeSelector": {"kubernetes.io/hostname": local_cluster.real_node_name},
        # The real node's harness taint (present when the process node is the default) and a
        # dedicated-pool toleration as a platform team would write it.
        "tolerations": [
            REAL_NODE_TOLERATION,
            {"key": "dedicated", "operator": "Equal", "value": "models", "effect": "NoSchedule"},
        ],
    }
    pods_spec: dict[str, dict[str, Any]] = {
        "serving": {**placement, "annotations": {"example.com/team": "risk"}, "labels": {"team": "risk"}},
        "router": {**placement, "annotations": {"example.com/team": "edge"}},
    }
    create_mdep(kube_api, namespace, churn(model_store, churn_bundles, replicas=1, pods=pods_spec))
    ready(kube_api, namespace)

    core = client.CoreV1Api(kube_api)
    for selector, settings in ((SERVING, pods_spec["serving"]), (ROUTER, pods_spec["router"])):
        pods = wait_for(
            f"ready pods of {selector.split(',')[-1]}",
            functools.partial(_ready_pods, core, namespace, selector.format("churn")),
            timeout=60,
        )
        for pod in pods:
            raw = kube_api.sanitize_for_serialization(pod)
            spec, meta = raw["spec"], raw["metadata"]
            assert spec["imagePullSecrets"] == [{"name": secret}]
            assert spec["nodeSelector"] == placement["nodeSelector"]
            assert spec["nodeName"] == local_cluster.real_node_name
            for toleration in placement["tolerations"]:
                assert toleration in spec["tolerations"]
            for key, value in settings["annotations"].items():
                assert meta["annotations"][key] == value
            for key, value in settings.get("labels", {}).items():
                assert meta["labels"][key] == value
            # What the operator owns is still the operator's.
            assert meta["annotations"]["prometheus.io/scrape"] == "true"
            assert spec["securityContext"]["runAsNonRoot"] is True


def _replicas_managers(deployment: Any) -> set[str]:
    return {
        entry.manager
        for entry in deployment.metadata.managed_fields or ()
        if "f:replicas" in ((entry.fields_v1 or {}).get("f:spec") or {})
    }


def test_an_hpa_the_operator_did_not_make_owns_replicas_across_reconciles(
    kube_api: client.ApiClient, namespace: str, model_store: str, churn_bundles: Path
) -> None:
    apps = client.AppsV1Api(kube_api)
    create_mdep(kube_api, namespace, churn(model_store, churn_bundles, replicas=2))
    ready(kube_api, namespace)
    (deployment,) = apps.list_namespaced_deployment(namespace, label_selector=SERVING.format("churn")).items
    name = deployment.metadata.name
    assert deployment.spec.replicas == 2
    assert FIELD_MANAGER in _replicas_managers(deployment)  # the spec's count, applied by the operator
    core = client.CoreV1Api(kube_api)

    def serving_pods() -> set[str]:
        pods = core.list_namespaced_pod(namespace, label_selector=SERVING.format("churn")).items
        return {p.metadata.uid for p in pods if p.metadata.deletion_timestamp is None}

    before = serving_pods()
    assert len(before) == 2

    # A user's HPA on CPU. There is no metrics-server here: the controller cannot read CPU, but it
    # still enforces minReplicas/maxReplicas through the scale subresource (kube-controller-manager's
    # reconcileAutoscaler checks the bounds before it needs metrics).
    hpa = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "user-hpa"},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "minReplicas": 2,
            "maxReplicas": 5,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 50}},
                }
            ],
        },
    }
    autoscaling = client.AutoscalingV2Api(kube_api)
    autoscaling.create_namespaced_horizontal_pod_autoscaler(namespace, hpa)

    policy = client.PolicyV1Api(kube_api)

    def reconciled_with(max_unavailable: int) -> None:
        # A spec change that touches no pod: the reconcile it causes shows as the budget's new value
        # (and observedGeneration), so each of these is one more reconcile seen through, not a sleep.
        patch_mdep(
            kube_api,
            namespace,
            "churn",
            {"spec": {"podDisruptionBudget": {"maxUnavailable": max_unavailable}}},
        )
        wait_for(
            f"a reconcile applying maxUnavailable {max_unavailable}",
            lambda: (
                policy.read_namespaced_pod_disruption_budget(name, namespace).spec.max_unavailable
                == max_unavailable
                and (md := get_mdep(kube_api, namespace, "churn"))["status"].get("observedGeneration")
                == md["metadata"]["generation"]
            ),
            timeout=60,
        )

    for value in (2, 3, 1):
        reconciled_with(value)
    handed = apps.read_namespaced_deployment(name, namespace)
    # Replicas changed hands without a blip: never reset to 1, which would have deleted one of the two
    # pods (and the HPA's floor would have made a new one). The Deployment's generation is no witness:
    # the apiserver bumps it for annotation changes too (pkg/registry/apps/deployment/strategy.go,
    # PrepareForUpdate), and the applied-hash annotation changes with the manifest that drops
    # spec.replicas: the 1 -> 2 seen in CI on 2026-12-02, not a spec write.
    assert handed.spec.replicas == 2
    assert serving_pods() == before
    managers = _replicas_managers(handed)
    assert FIELD_MANAGER not in managers
    assert FIELD_MANAGER + "-replicas-handover" in managers

    # The HPA controller scales: raise its floor above the current count.
    autoscaling.patch_namespaced_horizontal_pod_autoscaler(
        "user-hpa", namespace, {"spec": {"minReplicas": 3}}
    )
    wait_for(
        "the HPA controller to scale to 3",
        lambda: apps.read_namespaced_deployment(name, namespace).spec.replicas == 3,
        timeout=120,
    )
    for value in (2, 3, 1):
        reconciled_with(value)
        assert apps.read_namespaced_deployment(name, namespace).spec.replicas == 3
    scaled = wait_for(
        "3 ready replicas",
        lambda: (d := apps.read_namespaced_deployment(name, namespace)).status.ready_replicas == 3 and d,
        timeout=180,
    )
    assert FIELD_MANAGER not in _replicas_managers(scaled)
    assert not [
        h
        for h in autoscaling.list_namespaced_horizontal_pod_autoscaler(namespace).items
        if h.metadata.name != "user-hpa"
    ]  # the operator made none of its own beside the user's
    # The planner follows the HPA's count: 3/3 ready is Ready (not "updating" towards the spec's 2).
    settled = ready(kube_api, namespace)
    assert settled["status"]["readyReplicas"] == 3
