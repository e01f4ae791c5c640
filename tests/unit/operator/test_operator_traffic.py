"""Traffic split arithmetic and the Gateway API HTTPRoute built from it."""

from __future__ import annotations

import pytest

from modeldeploy_operator.domain.resource import ModelDeploymentRef
from modeldeploy_operator.domain.spec import GatewayAPI, ParentRef
from modeldeploy_operator.domain.traffic import (
    TOTAL_BASIS_POINTS,
    VARIANT_HEADER,
    Arm,
    build_http_route,
    split,
)

OWNER = ModelDeploymentRef(name="churn", namespace="ml", uid="u")
GATEWAY = GatewayAPI(
    parent_refs=(ParentRef(name="public", section_name="http"),), hostnames=("churn.example",)
)


@pytest.mark.parametrize(
    ("variants", "revisions", "expected"),
    [
        ({"default": 100}, {"default": [("r1", 100)]}, [("default", "r1", 10_000)]),
        (
            {"a": 90, "b": 10},
            {"a": [("r1", 100)], "b": [("r2", 100)]},
            [("a", "r1", 9_000), ("b", "r2", 1_000)],
        ),
        (
            {"a": 10, "b": 90},
            {"a": [("s", 95), ("c", 5)], "b": [("r", 100)]},
            [("a", "s", 950), ("a", "c", 50), ("b", "r", 9_000)],
        ),
    ],
    ids=["single", "ab", "canary-inside-a-variant"],
)
def test_split_keeps_every_share_exact(
    variants: dict[str, int],
    revisions: dict[str, list[tuple[str, int]]],
    expected: list[tuple[str, str, int]],
) -> None:
    arms = split(variants, revisions)
    assert [(a.variant, a.revision, a.basis_points) for a in arms] == expected
    assert sum(a.basis_points for a in arms) == TOTAL_BASIS_POINTS


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
