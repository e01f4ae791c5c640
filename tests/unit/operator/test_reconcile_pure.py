"""The reconcile's pure steps after planning: the objects a Plan becomes, pruning, status patches."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from modeldeploy_contract.router_config import RouterConfig
from modeldeploy_operator.domain.desired_state import BuildOptions, desired_state, stale_objects
from modeldeploy_operator.domain.observed import ObservedDeployment
from modeldeploy_operator.domain.resource import ModelDeploymentRef
from modeldeploy_operator.domain.revision import resolve_variants
from modeldeploy_operator.domain.rollout.planner import plan
from modeldeploy_operator.domain.validation import parse_spec
from modeldeploy_operator.reconciler import status_patch

OWNER = ModelDeploymentRef(name="churn", namespace="ml", uid="uid-1")
IMAGE = "ghcr.io/modeldeploy/serving:0.1.0"
OPTIONS = BuildOptions(serving_image=IMAGE, router_image=IMAGE)
NOW = dt.datetime(2026, 11, 23, 12, 0, tzinfo=dt.UTC)


def spec(version: str = "1", **extra: Any) -> Any:
    model = {"uri": f"s3://models/churn/v{version}", "format": "onnx", "version": version}
    return parse_spec({"model": model, "replicas": 2, **extra})


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


def build(the_spec: Any, seen: list[ObservedDeployment], previous: Any = None) -> Any:
    decided = plan("churn", the_spec, seen, (), NOW, previous)
    return decided, desired_state(OWNER, the_spec, decided, options=OPTIONS)


def router_arms(state: Any) -> list[tuple[str, str, int]]:
    (config_map,) = [m for m in state.manifests if m["kind"] == "ConfigMap"]
    config = RouterConfig.from_json(config_map["data"]["router.json"])
    return [(a.variant, a.revision, a.weight_bp) for a in config.arms]


def stable_selector(state: Any) -> dict[str, str]:
    (service,) = [m for m in state.manifests if m["kind"] == "Service" and m["metadata"]["name"] == "churn"]
    return dict(service["spec"]["selector"])


def test_first_reconcile_builds_the_revision_the_router_and_the_stable_service() -> None:
    (variant,) = resolve_variants("churn", spec())
    _, state = build(spec(), [observed(variant.revision, 2)])
    name = f"churn-default-{variant.revision}"
    kinds = [(m["kind"], m["metadata"]["name"]) for m in state.manifests]
    assert kinds == [
        ("Deployment", name),
        ("Service", name),
        ("PodDisruptionBudget", name),
        ("ServiceAccount", "churn-router"),
        ("Role", "churn-router"),
        ("RoleBinding", "churn-router"),
        ("RoleBinding", "churn-router-config"),
        ("ConfigMap", "churn-router"),
        ("Deployment", "churn-router"),
        ("Service", "churn"),
    ]
    assert stable_selector(state) == {
        "modeldeploy.io/deployment": "churn",
        "app.kubernetes.io/component": "router",
    }
    assert router_arms(state) == [("default", variant.revision, 10_000)]
    # The router reads its own ConfigMap and nothing else of the kind; EndpointSlices through the
    # chart's role, bound by name.
    (role,) = [m for m in state.manifests if m["kind"] == "Role"]
    assert role["rules"] == [
        {
            "apiGroups": [""],
            "resources": ["configmaps"],
            "resourceNames": ["churn-router"],
            "verbs": ["list", "watch"],
        }
    ]
    bindings = {m["metadata"]["name"]: m for m in state.manifests if m["kind"] == "RoleBinding"}
    assert bindings["churn-router"]["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": "modeldeploy-router",
    }
    assert bindings["churn-router-config"]["roleRef"]["kind"] == "Role"
    assert bindings["churn-router-config"]["roleRef"]["name"] == "churn-router"
    for binding in bindings.values():
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "churn-router", "namespace": "ml"}]


def test_router_replicas_follow_the_spec_and_do_not_make_a_new_revision() -> None:
    def router_replicas(the_spec: Any) -> tuple[int, str]:
        (variant,) = resolve_variants("churn", the_spec)
        _, state = build(the_spec, [observed(variant.revision, 2)])
        deployments = {m["metadata"]["name"]: m for m in state.manifests if m["kind"] == "Deployment"}
        return deployments["churn-router"]["spec"]["replicas"], variant.revision

    one, revision = router_replicas(spec())
    three, same_revision = router_replicas(spec(traffic={"routerReplicas": 3}))
    assert (one, three) == (1, 3)
    assert same_revision == revision


def test_several_router_replicas_get_a_disruption_budget() -> None:
    def budgets(the_spec: Any) -> list[dict[str, Any]]:
        (variant,) = resolve_variants("churn", the_spec)
        _, state = build(the_spec, [observed(variant.revision, 2)])
        return [
            m
            for m in state.manifests
            if m["kind"] == "PodDisruptionBudget" and m["metadata"]["name"].endswith("-router")
        ]

    assert budgets(spec()) == []
    (budget,) = budgets(spec(traffic={"routerReplicas": 2}))
    assert budget["metadata"]["name"] == "churn-router"
    assert budget["spec"] == {
        "maxUnavailable": 1,
        "selector": {
            "matchLabels": {"modeldeploy.io/deployment": "churn", "app.kubernetes.io/component": "router"}
        },
    }


def test_without_the_router_the_stable_service_selects_the_serving_revision() -> None:
    gateway = {"provider": "gatewayAPI", "gatewayAPI": {"parentRefs": [{"name": "public"}]}}
    (variant,) = resolve_variants("churn", spec())
    _, state = build(spec(traffic=gateway), [observed(variant.revision, 2)])
    assert stable_selector(state)["modeldeploy.io/revision"] == variant.revision
    assert "HTTPRoute" in [m["kind"] for m in state.manifests]


def test_a_new_immediate_revision_gets_traffic_only_once_ready_and_the_old_stays_for_rollbacks() -> None:
    (old,) = resolve_variants("churn", spec("1"))
    (new,) = resolve_variants("churn", spec("2"))
    first, _ = build(spec("1"), [observed(old.revision, 2)])
    decided, state = build(spec("2"), [observed(old.revision, 2), observed(new.revision, 0)], first.status)
    assert [a for a in router_arms(state) if a[2] > 0] == [("default", old.revision, 10_000)]
    decided, state = build(spec("2"), [observed(old.revision, 2), observed(new.revision, 2)], decided.status)
    assert [a for a in router_arms(state) if a[2] > 0] == [("default", new.revision, 10_000)]
    # The old revision is not built from the spec any more: only its replica count is managed.
    assert f"churn-default-{old.revision}" in [name for name, _ in state.replica_patches]
    owned = [
        {"kind": "Deployment", "metadata": {"name": f"churn-default-{r}"}}
        for r in (old.revision, new.revision)
    ]
    assert stale_objects(state, owned) == []


def test_the_old_revision_keeps_its_disruption_budget_while_it_has_pods() -> None:
    """A model change: the old stable revision is no longer built from the spec, but while it still
    runs pods (it carries the traffic until the new one is ready) its PodDisruptionBudget stays; once
    the planner scales it to zero, the budget goes."""
    (old,) = resolve_variants("churn", spec("1"))
    (new,) = resolve_variants("churn", spec("2"))
    first, _ = build(spec("1"), [observed(old.revision, 2)])
    old_name, new_name = f"churn-default-{old.revision}", f"churn-default-{new.revision}"
    owned = [
        {"kind": kind, "metadata": {"name": name}}
        for name in (old_name, new_name)
        for kind in ("Deployment", "Service")
    ] + [{"kind": "PodDisruptionBudget", "metadata": {"name": old_name}}]
    decided, state = build(spec("2"), [observed(old.revision, 2), observed(new.revision, 0)], first.status)
    assert dict(state.replica_patches)[old_name] > 0
    assert stale_objects(state, owned) == []
    assert ("PodDisruptionBudget", old_name) not in [
        (m["kind"], m["metadata"]["name"]) for m in state.manifests
    ]  # kept as it is, not written again
    seen = [observed(old.revision, 2), observed(new.revision, 2)]
    promoted, state = build(spec("2"), seen, decided.status)  # promoted; the old one scales down later
    assert dict(state.replica_patches)[old_name] > 0
    assert stale_objects(state, owned) == []
    scaled_down = plan("churn", spec("2"), seen, (), NOW + dt.timedelta(hours=1), promoted.status)
    state = desired_state(OWNER, spec("2"), scaled_down, options=OPTIONS)
    assert dict(state.replica_patches)[old_name] == 0
    assert stale_objects(state, owned) == [{"kind": "PodDisruptionBudget", "metadata": {"name": old_name}}]


def test_pruning_tells_kinds_apart_when_names_are_shared() -> None:
    # The stable Service and the HTTPRoute are both named after the ModelDeployment.
    (variant,) = resolve_variants("churn", spec())
    _, state = build(spec(), [observed(variant.revision, 2)])  # router provider: no route wanted
    owned = [
        {"kind": "Service", "metadata": {"name": "churn"}},
        {"kind": "HTTPRoute", "metadata": {"name": "churn"}},
    ]
    assert [o["kind"] for o in stale_objects(state, owned)] == ["HTTPRoute"]


def test_replicas_change_is_not_a_new_revision() -> None:
    (a,) = resolve_variants("churn", spec())
    resized = parse_spec(
        {"model": {"uri": "s3://models/churn/v1", "format": "onnx", "version": "1"}, "replicas": 5}
    )
    (b,) = resolve_variants("churn", resized)
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


def test_a_stream_canary_shadows_beside_the_stable_writer_with_the_real_planner() -> None:
    stream = {"bootstrapServers": "10.244.0.1:9092", "inputTopic": "in", "outputTopic": "out", "replicas": 2}
    canary = {"strategy": "Canary", "steps": [{"setWeight": 50}, {"pause": {}}]}
    v1 = spec("1", stream=stream, rollout=canary)
    rev1 = resolve_variants("churn", v1)[0].revision
    decided, state = build(v1, [observed(rev1, 2)])
    names = {m["metadata"]["name"]: m for m in state.manifests if m["kind"] == "Deployment"}
    assert names[f"churn-default-{rev1}-output"]["spec"]["replicas"] == 2

    v2 = spec("2", stream=stream, rollout=canary)
    rev2 = resolve_variants("churn", v2)[0].revision
    _, state2 = build(v2, [observed(rev1, 2)], decided.status)
    deployments = {m["metadata"]["name"] for m in state2.manifests if m["kind"] == "Deployment"}
    assert f"churn-default-{rev2}-shadow" in deployments  # the canary shadows
    assert ("Deployment", f"churn-default-{rev1}-output") in state2.keep  # the stable keeps writing
    assert not state2.stream_handover_pending
