"""The reconcile's pure decisions: desired objects under the Immediate strategy, and status patches."""

from __future__ import annotations

from typing import Any

import pytest

from modeldeploy_contract.router_config import RouterConfig
from modeldeploy_operator.domain.desired_state import BuildOptions, desired_state, stale_objects
from modeldeploy_operator.domain.observed import ObservedDeployment
from modeldeploy_operator.domain.resource import ModelDeploymentRef
from modeldeploy_operator.domain.revision import resolve_variants
from modeldeploy_operator.domain.validation import parse_spec
from modeldeploy_operator.reconciler import status_patch

OWNER = ModelDeploymentRef(name="churn", namespace="ml", uid="uid-1")
IMAGE = "ghcr.io/modeldeploy/serving:0.1.0"
OPTIONS = BuildOptions(serving_image=IMAGE, router_image=IMAGE)


def spec(version: str = "1", **extra: Any) -> Any:
    return parse_spec(
        {
            "model": {"uri": f"s3://models/churn/v{version}", "format": "onnx", "version": version},
            "replicas": 2,
            **extra,
        }
    )


def observed(revision: str, ready: int, variant: str = "default") -> ObservedDeployment:
    return ObservedDeployment(
        name=f"churn-{variant}-{revision}",
        variant=variant,
        revision=revision,
        replicas=2,
        ready_replicas=ready,
        updated_replicas=ready,
        available_replicas=ready,
        generation=1,
        observed_generation=1,
    )


def router_arms(state: Any) -> list[tuple[str, str, float]]:
    (config_map,) = [m for m in state.manifests if m["kind"] == "ConfigMap"]
    config = RouterConfig.from_json(config_map["data"]["router.json"])
    return [(a.variant, a.revision, a.weight) for a in config.arms]


def selector_of_stable_service(state: Any) -> dict[str, str]:
    (service,) = [m for m in state.manifests if m["kind"] == "Service" and m["metadata"]["name"] == "churn"]
    return dict(service["spec"]["selector"])


def test_first_reconcile_builds_the_revision_the_router_and_the_stable_service() -> None:
    state = desired_state(OWNER, spec(), [], options=OPTIONS)
    kinds = [(m["kind"], m["metadata"]["name"]) for m in state.manifests]
    (variant,) = resolve_variants("churn", spec())
    name = f"churn-default-{variant.revision}"
    assert kinds == [
        ("Deployment", name),
        ("Service", name),
        ("ServiceAccount", "churn-router"),
        ("RoleBinding", "churn-router"),
        ("ConfigMap", "churn-router"),
        ("Deployment", "churn-router"),
        ("Service", "churn"),
    ]
    assert selector_of_stable_service(state) == {
        "modeldeploy.io/deployment": "churn",
        "app.kubernetes.io/component": "router",
    }
    assert router_arms(state) == [("default", variant.revision, 100.0)]


def test_without_the_router_the_stable_service_selects_the_serving_revision() -> None:
    gateway = {"provider": "gatewayAPI", "gatewayAPI": {"parentRefs": [{"name": "public"}]}}
    state = desired_state(OWNER, spec(traffic=gateway), [], options=OPTIONS)
    (variant,) = resolve_variants("churn", spec())
    assert selector_of_stable_service(state)["modeldeploy.io/revision"] == variant.revision
    assert "HTTPRoute" in [m["kind"] for m in state.manifests]


@pytest.mark.parametrize(
    ("new_ready", "expected_serving"),
    [(0, "old"), (1, "new")],
    ids=["new-not-ready-old-keeps-serving", "new-ready-takes-over"],
)
def test_a_new_revision_replaces_the_old_only_once_ready(new_ready: int, expected_serving: str) -> None:
    (old,) = resolve_variants("churn", spec("1"))
    (new,) = resolve_variants("churn", spec("2"))
    state = desired_state(
        OWNER, spec("2"), [observed(old.revision, 2), observed(new.revision, new_ready)], options=OPTIONS
    )
    serving = old.revision if expected_serving == "old" else new.revision
    assert state.serving == (("default", serving),)
    assert router_arms(state) == [("default", serving, 100.0)]
    owned = [
        {"kind": "Deployment", "metadata": {"name": f"churn-default-{r}"}}
        for r in (old.revision, new.revision)
    ]
    stale = [o["metadata"]["name"] for o in stale_objects(state, owned)]
    assert stale == ([] if expected_serving == "old" else [f"churn-default-{old.revision}"])


def test_replicas_change_is_not_a_new_revision() -> None:
    (a,) = resolve_variants("churn", spec())
    (b,) = resolve_variants(
        "churn",
        parse_spec(
            {"model": {"uri": "s3://models/churn/v1", "format": "onnx", "version": "1"}, "replicas": 5}
        ),
    )
    assert a.revision == b.revision


@pytest.mark.parametrize(
    ("current", "new", "expected"),
    [
        ({"phase": "Ready"}, {"phase": "Ready"}, None),
        ({"phase": "Ready", "kopf": {"x": 1}}, {"phase": "Ready"}, None),
        ({"phase": "Pending"}, {"phase": "Ready"}, {"phase": "Ready"}),
        (
            {"phase": "Failed", "lastError": {"reason": "X"}},
            {"phase": "Ready"},
            {"phase": "Ready", "lastError": None},
        ),
    ],
    ids=["unchanged", "kopf-field-ignored", "changed", "removed-field-nulled"],
)
def test_status_patch(current: dict[str, Any], new: dict[str, Any], expected: dict[str, Any] | None) -> None:
    assert status_patch(current, new) == expected


def test_pruning_tells_kinds_apart_when_names_are_shared() -> None:
    # The stable Service and the HTTPRoute are both named after the ModelDeployment.
    state = desired_state(OWNER, spec(), [], options=OPTIONS)  # router provider: no route wanted
    owned = [
        {"kind": "Service", "metadata": {"name": "churn"}},
        {"kind": "HTTPRoute", "metadata": {"name": "churn"}},
    ]
    assert [o["kind"] for o in stale_objects(state, owned)] == ["HTTPRoute"]
