"""The Gateway API HTTPRoute built from traffic arms."""

from __future__ import annotations

from modeldeploy_operator.domain.resource import ModelDeploymentRef
from modeldeploy_operator.domain.spec import GatewayAPI, ParentRef
from modeldeploy_operator.domain.traffic import VARIANT_HEADER, Arm, build_http_route

OWNER = ModelDeploymentRef(name="churn", namespace="ml", uid="u")
GATEWAY = GatewayAPI(
    parent_refs=(ParentRef(name="public", section_name="http"),), hostnames=("churn.example",)
)


def test_http_route_has_pinned_variant_rules_then_a_weighted_catch_all() -> None:
    arms = [Arm("a", "r1", 9_000), Arm("b", "r2", 1_000), Arm("b", "r3", 0)]
    route = build_http_route(OWNER, GATEWAY, arms)
    assert route["apiVersion"] == "gateway.networking.k8s.io/v1"
    assert route["metadata"]["ownerReferences"][0]["uid"] == "u"
    spec = route["spec"]
    assert spec["parentRefs"] == [
        {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "public", "sectionName": "http"}
    ]
    assert spec["hostnames"] == ["churn.example"]
    pinned_a, pinned_b, catch_all = spec["rules"]
    assert pinned_a["matches"][0]["headers"] == [{"type": "Exact", "name": VARIANT_HEADER, "value": "a"}]
    assert [(b["name"], b["weight"]) for b in pinned_b["backendRefs"]] == [
        ("churn-b-r2", 1_000),
        ("churn-b-r3", 0),
    ]
    assert [(b["name"], b["weight"], b["port"]) for b in catch_all["backendRefs"]] == [
        ("churn-a-r1", 9_000, 8080),
        ("churn-b-r2", 1_000, 8080),
        ("churn-b-r3", 0, 8080),
    ]
