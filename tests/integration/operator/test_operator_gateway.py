"""The Gateway API provider: the operator writes an HTTPRoute that the real API server (with the
standard-channel Gateway API CRDs installed) accepts, and keeps it in step with the variants."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes import client

from cluster_helpers import create_mdep, patch_mdep, wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.usefixtures("operator_release")]


def route(api: client.ApiClient, namespace: str) -> dict[str, Any] | None:
    try:
        found: dict[str, Any] = client.CustomObjectsApi(api).get_namespaced_custom_object(
            "gateway.networking.k8s.io", "v1", namespace, "httproutes", "churn"
        )
        return found
    except client.ApiException as error:
        if error.status == 404:
            return None
        raise


def test_gateway_provider_writes_a_weighted_httproute(kube_api: client.ApiClient, namespace: str) -> None:
    create_mdep(
        kube_api,
        namespace,
        {
            "apiVersion": "modeldeploy.io/v1alpha1",
            "kind": "ModelDeployment",
            "metadata": {"name": "churn"},
            "spec": {
                "model": {"uri": "http://10.244.0.1:1/churn/v1", "format": "onnx", "version": "1"},
                "variants": [
                    {"name": "control", "weight": 80},
                    {
                        "name": "treatment",
                        "weight": 20,
                        "model": {"uri": "http://10.244.0.1:1/churn/v2", "format": "onnx", "version": "2"},
                    },
                ],
                "replicas": 1,
                "traffic": {
                    "provider": "gatewayAPI",
                    "gatewayAPI": {"parentRefs": [{"name": "public"}], "hostnames": ["churn.example"]},
                },
            },
        },
    )
    created = wait_for("the HTTPRoute", lambda: route(kube_api, namespace))
    rules = created["spec"]["rules"]
    weights = {b["name"].rsplit("-", 1)[0]: b["weight"] for b in rules[-1]["backendRefs"]}
    assert weights == {"churn-control": 8000, "churn-treatment": 2000}
    assert [r["matches"][0]["headers"][0]["value"] for r in rules[:-1]] == ["control", "treatment"]
    assert created["metadata"]["ownerReferences"][0]["name"] == "churn"
    services = {s.metadata.name for s in client.CoreV1Api(kube_api).list_namespaced_service(namespace).items}
    assert {b["name"] for b in rules[-1]["backendRefs"]} <= services

    # Switching to the built-in router removes the route.
    patch_mdep(
        kube_api, namespace, "churn", {"spec": {"traffic": {"provider": "router", "gatewayAPI": None}}}
    )
    wait_for("the HTTPRoute to be pruned", lambda: route(kube_api, namespace) is None, timeout=60)

    # ...and switching back to the Gateway API removes every router object, RBAC included.
    def router_objects() -> set[str]:
        core, apps = client.CoreV1Api(kube_api), client.AppsV1Api(kube_api)
        rbac = client.RbacAuthorizationV1Api(kube_api)
        found = {f"Deployment/{d.metadata.name}" for d in apps.list_namespaced_deployment(namespace).items}
        found |= {f"ConfigMap/{c.metadata.name}" for c in core.list_namespaced_config_map(namespace).items}
        found |= {
            f"ServiceAccount/{a.metadata.name}" for a in core.list_namespaced_service_account(namespace).items
        }
        found |= {
            f"RoleBinding/{b.metadata.name}" for b in rbac.list_namespaced_role_binding(namespace).items
        }
        found |= {f"Role/{r.metadata.name}" for r in rbac.list_namespaced_role(namespace).items}
        return {o for o in found if o.endswith(("/churn-router", "/churn-router-config"))}

    expected = {
        f"{kind}/churn-router"
        for kind in ("Deployment", "ConfigMap", "ServiceAccount", "Role", "RoleBinding")
    } | {"RoleBinding/churn-router-config"}
    wait_for("the router's objects", lambda: router_objects() == expected, timeout=60)
    patch_mdep(
        kube_api,
        namespace,
        "churn",
        {"spec": {"traffic": {"provider": "gatewayAPI", "gatewayAPI": {"parentRefs": [{"name": "public"}]}}}},
    )
    wait_for("the HTTPRoute again", lambda: route(kube_api, namespace))
    wait_for("the router's objects to be pruned", lambda: not router_objects(), timeout=60)
