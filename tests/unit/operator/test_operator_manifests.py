from typing import Any

import pytest

from modeldeploy_contract.server_settings import ServerSettings
from modeldeploy_operator.domain.labels import router_selector
from modeldeploy_operator.domain.manifests import (
    build_hpa,
    build_serving_deployment,
    build_serving_service,
    build_stable_service,
)
from modeldeploy_operator.domain.resource import ModelDeploymentRef
from modeldeploy_operator.domain.revision import ResolvedVariant, resolve_variants

from modeldeploy_builders import BASE_MODEL, make_spec

IMAGE = "ghcr.io/modeldeploy/serving:0.1.0"


def _variant(**overrides: Any) -> ResolvedVariant:
    return resolve_variants("churn", make_spec(**overrides))[0]


def _deployment(owner: ModelDeploymentRef, **overrides: Any) -> dict[str, Any]:
    variant = _variant(**overrides)
    return build_serving_deployment(owner, variant, image=IMAGE, replicas=variant.replicas)


def _container(deployment: dict[str, Any]) -> dict[str, Any]:
    container: dict[str, Any]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container


def test_deployment_identity_and_ownership(owner: ModelDeploymentRef) -> None:
    variant = _variant()
    deployment = _deployment(owner)
    meta = deployment["metadata"]
    assert (deployment["apiVersion"], deployment["kind"]) == ("apps/v1", "Deployment")
    assert meta["name"] == f"churn-default-{variant.revision}"
    assert meta["namespace"] == "ml"
    assert meta["ownerReferences"] == [
        {
            "apiVersion": "modeldeploy.io/v1alpha1",
            "kind": "ModelDeployment",
            "name": "churn",
            "uid": "1234-uid",
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]


def test_labels_selector_and_revision_annotation(owner: ModelDeploymentRef) -> None:
    variant = _variant()
    deployment = _deployment(owner)
    labels = deployment["metadata"]["labels"]
    assert labels == {
        "app.kubernetes.io/name": "modeldeploy-model-server",
        "app.kubernetes.io/instance": "churn",
        "app.kubernetes.io/component": "model-server",
        "app.kubernetes.io/part-of": "modeldeploy",
        "app.kubernetes.io/managed-by": "modeldeploy-operator",
        "app.kubernetes.io/version": "1",
        "modeldeploy.io/deployment": "churn",
        "modeldeploy.io/variant": "default",
        "modeldeploy.io/revision": variant.revision,
    }
    selector = deployment["spec"]["selector"]["matchLabels"]
    template = deployment["spec"]["template"]["metadata"]
    assert selector == {
        "modeldeploy.io/deployment": "churn",
        "modeldeploy.io/variant": "default",
        "modeldeploy.io/revision": variant.revision,
    }
    assert selector.items() <= template["labels"].items()
    assert template["annotations"]["modeldeploy.io/revision"] == variant.revision


def test_restricted_security_context(owner: ModelDeploymentRef) -> None:
    deployment = _deployment(owner)
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    assert pod["enableServiceLinks"] is False
    assert _container(deployment)["securityContext"] == {
        "runAsNonRoot": True,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def test_writable_cache_and_tmp_are_empty_dirs(owner: ModelDeploymentRef) -> None:
    deployment = _deployment(owner)
    pod = deployment["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in _container(deployment)["volumeMounts"]}
    assert mounts == {"/var/cache/modeldeploy": "model-cache", "/tmp": "tmp"}
    assert all("emptyDir" in volumes[name] for name in mounts.values())
    settings = _variant().settings
    assert settings.model_cache_dir.startswith("/var/cache/modeldeploy/")


def test_probes_and_ports(owner: ModelDeploymentRef) -> None:
    container = _container(_deployment(owner))
    assert container["command"] == ["modeldeploy", "serve"]
    assert container["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    assert container["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
    assert container["startupProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert container["image"] == IMAGE


def test_env_round_trips_through_server_settings(
    owner: ModelDeploymentRef, monkeypatch: pytest.MonkeyPatch
) -> None:
    container = _container(_deployment(owner, server={"batching": {"enabled": True}, "workers": 2}))
    env = {e["name"]: e["value"] for e in container["env"]}
    assert all(name.startswith("MODELDEPLOY_SERVER_") for name in env)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    read_back = ServerSettings()  # what the model server will read in the pod
    assert read_back == _variant(server={"batching": {"enabled": True}, "workers": 2}).settings
    assert read_back.batching_enabled is True
    assert read_back.workers == 2
    assert read_back.model_uri == BASE_MODEL["uri"]


def test_resources_and_storage_secret(owner: ModelDeploymentRef) -> None:
    model = {**BASE_MODEL, "storage": {"secretName": "store-creds", "s3EndpointURL": "http://minio:9000"}}
    container = _container(
        _deployment(owner, model=model, resources={"requests": {"cpu": "500m", "memory": 1024}, "limits": {}})
    )
    assert container["resources"] == {"requests": {"cpu": "500m", "memory": "1024"}}
    assert container["envFrom"] == [{"secretRef": {"name": "store-creds"}}]


def test_replicas_left_out_when_the_hpa_owns_them(owner: ModelDeploymentRef) -> None:
    variant = _variant(replicas=None, autoscaling={"maxReplicas": 4})
    deployment = build_serving_deployment(owner, variant, image=IMAGE, replicas=None)
    assert "replicas" not in deployment["spec"]
    assert _deployment(owner)["spec"]["replicas"] == 2


def test_build_is_pure_and_deterministic(owner: ModelDeploymentRef) -> None:
    assert _deployment(owner) == _deployment(owner)


def test_serving_service_selects_one_revision(owner: ModelDeploymentRef) -> None:
    variant = _variant()
    service = build_serving_service(owner, variant)
    assert service["metadata"]["name"] == f"churn-default-{variant.revision}"
    assert service["spec"]["selector"]["modeldeploy.io/revision"] == variant.revision
    assert service["spec"]["ports"][0] == {
        "name": "http",
        "port": 8080,
        "targetPort": "http",
        "protocol": "TCP",
    }
    assert service["metadata"]["ownerReferences"][0]["uid"] == "1234-uid"


def test_stable_service_is_named_after_the_modeldeployment(owner: ModelDeploymentRef) -> None:
    service = build_stable_service(owner, router_selector("churn"))
    assert service["metadata"]["name"] == "churn"
    assert service["spec"]["selector"] == {
        "modeldeploy.io/deployment": "churn",
        "app.kubernetes.io/component": "router",
    }


def test_hpa_targets_the_revision_deployment(owner: ModelDeploymentRef) -> None:
    variant = _variant(
        replicas=None, autoscaling={"minReplicas": 2, "maxReplicas": 5, "targetCPUUtilizationPercentage": 60}
    )
    hpa = build_hpa(owner, variant)
    assert hpa is not None
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": f"churn-default-{variant.revision}",
    }
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 5)
    assert hpa["spec"]["metrics"][0]["resource"]["target"] == {
        "type": "Utilization",
        "averageUtilization": 60,
    }
    assert build_hpa(owner, _variant()) is None


def test_cloud_identity_takes_a_service_account_and_no_static_key(owner: ModelDeploymentRef) -> None:
    """Without a storage Secret the pod has no credential variable at all (an empty AWS_ACCESS_KEY_ID
    would stop boto3's chain before the web identity token), and the ServiceAccount and pod label
    that EKS, GKE and AKS key their identity on reach the pod template."""
    from modeldeploy_operator.domain.spec import PodSettings

    variant = _variant()
    pod = PodSettings(service_account_name="model-reader", labels={"azure.workload.identity/use": "true"})
    template = build_serving_deployment(owner, variant, image=IMAGE, replicas=1, pod=pod)["spec"]["template"]
    container = _container({"spec": {"template": template}})
    assert "envFrom" not in container
    assert not [e for e in container["env"] if e["name"].startswith(("AWS_", "GOOGLE_", "AZURE_", "GCE_"))]
    assert template["spec"]["serviceAccountName"] == "model-reader"
    assert template["metadata"]["labels"]["azure.workload.identity/use"] == "true"
    # The identity webhooks (EKS, AKS) add projected token volumes of their own; only the Kubernetes
    # API token stays out of the pod.
    assert template["spec"]["automountServiceAccountToken"] is False
