"""status.url: where to call a ModelDeployment, for each traffic provider, written with the rest of
status in the reconcile's one status write."""

from __future__ import annotations

from typing import Any

import pytest

from modeldeploy_operator.config import OperatorSettings
from modeldeploy_operator.domain.resource import ModelDeploymentRef
from modeldeploy_operator.domain.revision import SERVER_PORT
from modeldeploy_operator.domain.spec import Traffic
from modeldeploy_operator.domain.traffic import call_url
from modeldeploy_operator.reconciler import Reconciler

OWNER = ModelDeploymentRef(name="churn", namespace="ml", uid="uid-1")
GATEWAY = {"parentRefs": [{"name": "gw"}]}


def traffic(**raw: Any) -> Traffic:
    return Traffic.model_validate(raw)


@pytest.mark.parametrize(
    ("raw", "url"),
    [
        ({}, "http://churn.ml.svc.cluster.local:8080/v2/models/churn"),
        ({"provider": "router", "routerReplicas": 3}, "http://churn.ml.svc.cluster.local:8080/v2/models/churn"),
        ({"provider": "gatewayAPI", "gatewayAPI": GATEWAY}, "http://churn.ml.svc.cluster.local:8080/v2/models/churn"),
        (
            {"provider": "gatewayAPI", "gatewayAPI": {**GATEWAY, "hostnames": ["churn.example.com"]}},
            "http://churn.example.com/v2/models/churn",
        ),
        (
            {
                "provider": "gatewayAPI",
                "gatewayAPI": {**GATEWAY, "hostnames": ["*.example.com", "ml.example.com"]},
            },
            "http://ml.example.com/v2/models/churn",
        ),
        (
            {"provider": "gatewayAPI", "gatewayAPI": {**GATEWAY, "hostnames": ["*.example.com"]}},
            "http://churn.ml.svc.cluster.local:8080/v2/models/churn",
        ),
        (
            {
                "provider": "gatewayAPI",
                "gatewayAPI": {"parentRefs": [{"name": "gw", "port": 8443}], "hostnames": ["a.example.com"]},
            },
            "http://a.example.com:8443/v2/models/churn",
        ),
        (
            {
                "provider": "gatewayAPI",
                "gatewayAPI": {"parentRefs": [{"name": "gw", "port": 80}], "hostnames": ["a.example.com"]},
            },
            "http://a.example.com/v2/models/churn",
        ),
    ],
)  # fmt: skip
def test_call_url(raw: dict[str, Any], url: str) -> None:
    assert call_url(OWNER, traffic(**raw)) == url


def test_call_url_uses_the_stable_service_port_and_the_cluster_domain() -> None:
    assert f":{SERVER_PORT}/" in call_url(OWNER, traffic())
    assert (
        call_url(OWNER, traffic(), "corp.internal")
        == "http://churn.ml.svc.corp.internal:8080/v2/models/churn"
    )


class RecordingApi:
    """Enough of KubeApi for one reconcile of a first revision: nothing exists yet; writes recorded."""

    field_manager = "test"

    def __init__(self) -> None:
        self.status_writes: list[dict[str, Any]] = []
        self.applied: list[str] = []

    def list(self, api_version: str, kind: str, namespace: str | None, selector: str) -> list[dict[str, Any]]:
        return []

    def apply(self, manifest: dict[str, Any]) -> dict[str, Any]:
        self.applied.append(manifest["kind"])
        return manifest

    def patch(self, *args: Any) -> dict[str, Any]:
        return {}

    def delete(self, *args: Any, **kwargs: Any) -> None:
        pass

    def event(self, *args: Any, **kwargs: Any) -> None:
        pass

    def patch_status(self, kind: Any, namespace: str, name: str, status: dict[str, Any], **_: Any) -> None:
        self.status_writes.append(status)


def body(status: dict[str, Any] | None = None, **traffic_spec: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"model": {"uri": "s3://models/churn/v1", "format": "onnx", "version": "1"}}
    if traffic_spec:
        spec["traffic"] = traffic_spec
    return {
        "apiVersion": "modeldeploy.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {
            "name": "churn",
            "namespace": "ml",
            "uid": "uid-1",
            "generation": 1,
            "resourceVersion": "7",
        },
        "spec": spec,
        "status": status or {},
    }


def test_the_url_is_written_in_the_one_status_write_and_not_again() -> None:
    api = RecordingApi()
    reconciler = Reconciler(api, OperatorSettings())  # type: ignore[arg-type]
    reconciler.reconcile(body())
    (written,) = api.status_writes  # one status write per reconcile, the URL in it
    assert written["url"] == "http://churn.ml.svc.cluster.local:8080/v2/models/churn"
    assert written["phase"]
    reconciler.reconcile(body(status=written))
    assert len(api.status_writes) == 1  # nothing changed, the URL included: no second write


def test_the_url_follows_the_settings_cluster_domain_and_the_gateway_hostname() -> None:
    api = RecordingApi()
    reconciler = Reconciler(api, OperatorSettings(cluster_domain="corp.internal"))  # type: ignore[arg-type]
    reconciler.reconcile(body())
    assert api.status_writes[-1]["url"] == "http://churn.ml.svc.corp.internal:8080/v2/models/churn"
    reconciler.reconcile(
        body(
            provider="gatewayAPI", gatewayAPI={"parentRefs": [{"name": "gw"}], "hostnames": ["m.example.com"]}
        )
    )
    assert api.status_writes[-1]["url"] == "http://m.example.com/v2/models/churn"


def test_a_command_on_an_invalid_spec_is_answered_rejected_not_left_waiting() -> None:
    api = RecordingApi()
    reconciler = Reconciler(api, OperatorSettings())  # type: ignore[arg-type]
    broken = body()
    broken["spec"]["replicas"] = 2
    broken["spec"]["autoscaling"] = {"maxReplicas": 3}  # autoscaling without a CPU request: invalid
    broken["metadata"]["annotations"] = {"modeldeploy.io/command": '{"id": "c1", "action": "abort"}'}
    reconciler.reconcile(broken)
    (written,) = api.status_writes
    assert written["phase"] == "Failed"
    assert written["lastCommand"]["id"] == "c1"
    assert written["lastCommand"]["result"] == "Rejected"
    assert written["lastCommand"]["message"].startswith("the spec is invalid; fix it first: ")
    broken["status"] = written
    reconciler.reconcile(broken)  # answered once: nothing more to write
    assert len(api.status_writes) == 1
