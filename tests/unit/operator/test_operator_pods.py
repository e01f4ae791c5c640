"""Pod settings (spec.pods and the chart's defaults), PodDisruptionBudgets and autoscaling the operator
never fights: merge rules, rendering into the Deployments, and the replicas the operator leaves alone."""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
from typing import Any

import pytest

from modeldeploy_operator.config import OperatorSettings
from modeldeploy_operator.domain.desired_state import BuildOptions, desired_state
from modeldeploy_operator.domain.manifests import HANDOVER_SUFFIX, build_replicas_handover
from modeldeploy_operator.domain.observed import ObservedDeployment, externally_scaled
from modeldeploy_operator.domain.pods import PodDefaults, merge_pod_settings, with_pod_defaults
from modeldeploy_operator.domain.resource import ModelDeploymentRef
from modeldeploy_operator.domain.revision import resolve_variants
from modeldeploy_operator.domain.rollout.planner import plan
from modeldeploy_operator.domain.spec import PodDisruptionBudgetSpec, PodSettings
from modeldeploy_operator.domain.validation import InvalidSpecError, parse_spec

from modeldeploy_builders import REPO

OWNER = ModelDeploymentRef(name="churn", namespace="ml", uid="uid-1")
IMAGE = "registry.example/modeldeploy/serving:0.1.0"
OPTIONS = BuildOptions(serving_image=IMAGE, router_image=IMAGE)
NOW = dt.datetime(2026, 11, 23, 12, 0, tzinfo=dt.UTC)
MODEL = {"uri": "s3://models/churn/v1", "format": "onnx", "version": "1"}


def pod(**fields: Any) -> PodSettings:
    return PodSettings.model_validate(fields)


def build(raw: dict[str, Any], defaults: PodDefaults | None = None, **kwargs: Any) -> list[dict[str, Any]]:
    spec = parse_spec({"model": MODEL, **raw}, defaults)
    (variant,) = resolve_variants("churn", spec)
    seen = [
        ObservedDeployment(
            name=f"churn-default-{variant.revision}",
            variant="default",
            revision=variant.revision,
            replicas=2,
            ready_replicas=2,
            updated_replicas=2,
            available_replicas=2,
            generation=1,
            observed_generation=1,
        )
    ]
    decided = plan("churn", spec, seen, (), NOW, None)
    return list(desired_state(OWNER, spec, decided, options=OPTIONS, **kwargs).manifests)


def one(manifests: list[dict[str, Any]], kind: str, suffix: str = "") -> dict[str, Any]:
    (found,) = [m for m in manifests if m["kind"] == kind and m["metadata"]["name"].endswith(suffix)]
    return found


def serving(manifests: list[dict[str, Any]]) -> dict[str, Any]:
    (found,) = [
        m for m in manifests if m["kind"] == "Deployment" and not m["metadata"]["name"].endswith("-router")
    ]
    return found


# --- the generated schema is the one in the CRD and the chart ---------------------------------------


def test_crd_and_values_schema_match_the_generator() -> None:
    loaded = importlib.util.spec_from_file_location("crd_pod_schema", REPO / "hack" / "crd_pod_schema.py")
    assert loaded is not None
    assert loaded.loader is not None
    module = importlib.util.module_from_spec(loaded)
    loaded.loader.exec_module(module)
    assert module.main(["--check"]) == 0, "run: .venv/bin/python hack/crd_pod_schema.py"


# --- merge rules ---------------------------------------------------------------------------------


DEFAULT = pod(
    labels={"team": "platform", "cost-center": "42"},
    annotations={"a": "default"},
    serviceAccountName="default-sa",
    imagePullSecrets=[{"name": "registry"}],
    nodeSelector={"pool": "cpu", "zone": "a"},
    tolerations=[{"key": "dedicated", "operator": "Exists"}],
    affinity={"nodeAffinity": {}},
    topologySpreadConstraints=[{"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "ScheduleAnyway"}],
    priorityClassName="low",
    env=[{"name": "A", "value": "default"}, {"name": "B", "value": "default"}],
    volumes=[{"name": "certs", "secret": {"secretName": "certs"}}],
    volumeMounts=[{"name": "certs", "mountPath": "/etc/certs"}],
    resources={"requests": {"cpu": "50m"}},
)


@pytest.mark.parametrize(
    ("own", "field", "expected"),
    [
        (pod(), "labels", {"team": "platform", "cost-center": "42"}),
        (pod(labels={"team": "risk"}), "labels", {"team": "risk", "cost-center": "42"}),
        (pod(nodeSelector={"pool": "gpu"}), "node_selector", {"pool": "gpu", "zone": "a"}),
        (pod(), "service_account_name", "default-sa"),
        (pod(serviceAccountName="mine"), "service_account_name", "mine"),
        (pod(priorityClassName="high"), "priority_class_name", "high"),
        (pod(affinity={"podAntiAffinity": {}}), "affinity", {"podAntiAffinity": {}}),
        (pod(imagePullSecrets=[{"name": "mine"}]), "image_pull_secrets", ("registry", "mine")),
        (pod(imagePullSecrets=[{"name": "registry"}]), "image_pull_secrets", ("registry",)),
        (pod(env=[{"name": "B", "value": "mine"}, {"name": "C", "value": "mine"}]), "env", ("A", "B", "C")),
        (pod(tolerations=[{"key": "gpu", "operator": "Exists"}]), "tolerations", ("gpu",)),
        (pod(), "tolerations", ("dedicated",)),
    ],
    ids=lambda v: str(v)[:40],
)
def test_merge_rules(own: PodSettings, field: str, expected: Any) -> None:
    merged = getattr(merge_pod_settings(own, DEFAULT), field)
    if field == "image_pull_secrets":
        merged = tuple(s.name for s in merged)
    elif field == "env":
        merged = tuple(e.name for e in merged)
    elif field == "tolerations":
        merged = tuple(t.key for t in merged)
    assert merged == expected


def test_merged_env_keeps_the_model_deployments_value() -> None:
    merged = merge_pod_settings(pod(env=[{"name": "B", "value": "mine"}]), DEFAULT)
    assert [(e.name, e.value) for e in merged.env] == [("A", "default"), ("B", "mine")]


def test_serving_resources_default_only_where_spec_and_variant_are_silent() -> None:
    defaults = PodDefaults(serving=pod(resources={"requests": {"cpu": "50m", "memory": "128Mi"}}))
    silent = with_pod_defaults(parse_spec({"model": MODEL}), defaults)
    assert silent.resources is not None
    assert silent.resources.requests == {"cpu": "50m", "memory": "128Mi"}
    assert silent.pods.serving.resources is None  # one place for serving resources: spec.resources
    own = parse_spec({"model": MODEL, "resources": {"requests": {"cpu": "2"}}}, defaults)
    assert own.resources is not None
    assert own.resources.requests == {"cpu": "2"}
    variants = parse_spec(
        {
            "model": MODEL,
            "variants": [
                {"name": "a", "weight": 50, "resources": {"requests": {"cpu": "1"}}},
                {"name": "b", "weight": 50},
            ],
        },
        defaults,
    )
    a, b = resolve_variants("churn", variants)
    assert (a.resources.requests, b.resources.requests) == ({"cpu": "1"}, {"cpu": "50m", "memory": "128Mi"})


def test_pod_disruption_budget_default_applies_when_the_spec_sets_none() -> None:
    defaults = PodDefaults(pod_disruption_budget=PodDisruptionBudgetSpec(enabled=False))
    assert parse_spec({"model": MODEL}, defaults).pod_disruption_budget == (
        PodDisruptionBudgetSpec(enabled=False)
    )
    own = parse_spec({"model": MODEL, "podDisruptionBudget": {"minAvailable": 1}}, defaults)
    assert own.pod_disruption_budget == PodDisruptionBudgetSpec(min_available=1)


# --- rendering -----------------------------------------------------------------------------------


SERVING_POD = {
    "serviceAccountName": "churn-reader",
    "imagePullSecrets": [{"name": "registry-creds"}],
    "nodeSelector": {"pool": "models"},
    "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "models", "effect": "NoSchedule"}],
    "affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": []}},
    "topologySpreadConstraints": [
        {"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "ScheduleAnyway"}
    ],
    "priorityClassName": "models",
    "labels": {"team": "risk"},
    "annotations": {"example.com/owner": "risk"},
    "env": [{"name": "OMP_NUM_THREADS", "value": "1"}],
    "volumes": [{"name": "extra", "configMap": {"name": "churn-extra"}}],
    "volumeMounts": [{"name": "extra", "mountPath": "/etc/extra", "readOnly": True}],
}


def test_serving_pods_carry_the_pod_settings() -> None:
    deployment = serving(build({"replicas": 2, "pods": {"serving": SERVING_POD}}))
    template = deployment["spec"]["template"]
    spec = template["spec"]
    assert spec["serviceAccountName"] == "churn-reader"
    assert spec["imagePullSecrets"] == [{"name": "registry-creds"}]
    assert spec["nodeSelector"] == {"pool": "models"}
    assert spec["tolerations"] == SERVING_POD["tolerations"]
    assert spec["affinity"] == SERVING_POD["affinity"]
    assert spec["priorityClassName"] == "models"
    # A constraint without a labelSelector would count no pods: it spreads this revision's pods.
    (spread,) = spec["topologySpreadConstraints"]
    assert spread["labelSelector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    assert template["metadata"]["labels"]["team"] == "risk"
    assert template["metadata"]["annotations"]["example.com/owner"] == "risk"
    assert template["metadata"]["annotations"]["prometheus.io/scrape"] == "true"
    (container,) = spec["containers"]
    names = [e["name"] for e in container["env"]]
    assert names[-1] == "OMP_NUM_THREADS"
    assert names[0].startswith("MODELDEPLOY_SERVER_")
    assert [v["name"] for v in spec["volumes"]] == ["model-cache", "tmp", "extra"]
    assert container["volumeMounts"][-1] == {"name": "extra", "mountPath": "/etc/extra", "readOnly": True}
    # What the operator owns is untouched.
    assert container["command"] == ["modeldeploy", "serve"]
    assert spec["automountServiceAccountToken"] is False
    assert container["securityContext"]["readOnlyRootFilesystem"] is True


def test_without_pod_settings_the_template_is_as_before() -> None:
    spec = serving(build({"replicas": 2}))["spec"]["template"]["spec"]
    for key in ("serviceAccountName", "imagePullSecrets", "nodeSelector", "tolerations", "affinity"):
        assert key not in spec


def test_the_operators_labels_and_env_win_even_over_settings_that_slipped_past_validation() -> None:
    defaults = PodDefaults()
    spec = parse_spec({"model": MODEL, "replicas": 1}, defaults)
    # Built by hand, as an older CRD without the CEL rules would let through.
    hostile = spec.model_copy(
        update={
            "pods": spec.pods.model_copy(
                update={
                    "serving": pod(
                        labels={"modeldeploy.io/revision": "evil"},
                        env=[{"name": "MODELDEPLOY_SERVER_MODEL_URI", "value": "s3://evil"}],
                    )
                }
            )
        }
    )
    (variant,) = resolve_variants("churn", hostile)
    decided = plan("churn", hostile, [], (), NOW, None)
    manifests = desired_state(OWNER, hostile, decided, options=OPTIONS).manifests
    deployment = serving(list(manifests))
    template = deployment["spec"]["template"]
    assert template["metadata"]["labels"]["modeldeploy.io/revision"] == variant.revision
    env = template["spec"]["containers"][0]["env"]
    uris = [e["value"] for e in env if e["name"] == "MODELDEPLOY_SERVER_MODEL_URI"]
    assert uris == ["s3://models/churn/v1"]


def test_router_pods_carry_their_settings_and_default_resources() -> None:
    manifests = build(
        {
            "replicas": 1,
            "pods": {
                "router": {
                    "nodeSelector": {"pool": "edge"},
                    "annotations": {"example.com/x": "y"},
                    "env": [{"name": "TZ", "value": "UTC"}],
                    "resources": {"requests": {"cpu": "200m"}},
                }
            },
        }
    )
    template = one(manifests, "Deployment", "-router")["spec"]["template"]
    assert template["spec"]["nodeSelector"] == {"pool": "edge"}
    assert template["metadata"]["annotations"]["example.com/x"] == "y"
    (container,) = template["spec"]["containers"]
    assert container["resources"] == {"requests": {"cpu": "200m"}}
    assert container["env"][-1] == {"name": "TZ", "value": "UTC"}
    plain = one(build({"replicas": 1}), "Deployment", "-router")["spec"]["template"]["spec"]
    assert plain["containers"][0]["resources"]["requests"] == {"cpu": "50m", "memory": "64Mi"}


def test_a_router_service_account_of_the_users_is_bound_not_made() -> None:
    manifests = build({"replicas": 1, "pods": {"router": {"serviceAccountName": "edge-identity"}}})
    assert not [m for m in manifests if m["kind"] == "ServiceAccount"]
    template = one(manifests, "Deployment", "-router")["spec"]["template"]
    assert template["spec"]["serviceAccountName"] == "edge-identity"
    bindings = [m for m in manifests if m["kind"] == "RoleBinding"]
    assert len(bindings) == 2
    assert all(
        b["subjects"] == [{"kind": "ServiceAccount", "name": "edge-identity", "namespace": "ml"}]
        for b in bindings
    )


def test_chart_defaults_reach_the_pods_where_the_spec_is_silent() -> None:
    defaults = PodDefaults(
        serving=pod(imagePullSecrets=[{"name": "registry"}], nodeSelector={"pool": "cpu"}),
        router=pod(tolerations=[{"key": "edge", "operator": "Exists"}]),
    )
    manifests = build({"replicas": 1, "pods": {"serving": {"nodeSelector": {"zone": "b"}}}}, defaults)
    spec = serving(manifests)["spec"]["template"]["spec"]
    assert spec["imagePullSecrets"] == [{"name": "registry"}]
    assert spec["nodeSelector"] == {"pool": "cpu", "zone": "b"}
    router = one(manifests, "Deployment", "-router")["spec"]["template"]["spec"]
    assert router["tolerations"] == [{"key": "edge", "operator": "Exists"}]


@pytest.mark.parametrize(
    ("raw", "defaults", "message"),
    [
        (
            {"pods": {"serving": {"volumeMounts": [{"name": "nowhere", "mountPath": "/data"}]}}},
            PodDefaults(),
            "volume 'nowhere' is not in spec.pods.serving.volumes",
        ),
        (
            {"pods": {"router": {"resources": {"requests": {"memory": "2Gi"}, "limits": {"memory": "1Gi"}}}}},
            PodDefaults(),
            "spec.pods.router.resources.requests.memory: 2Gi exceeds the limit 1Gi",
        ),
        (
            {"autoscaling": {"maxReplicas": 3}},
            PodDefaults(),
            "requests.cpu: required with spec.autoscaling",
        ),
    ],
)
def test_invalid_merged_pod_settings_are_refused(
    raw: dict[str, Any], defaults: PodDefaults, message: str
) -> None:
    with pytest.raises(InvalidSpecError) as refused:
        parse_spec({"model": MODEL, **raw}, defaults)
    assert message in str(refused.value)


def test_a_mount_may_use_a_volume_of_the_defaults_and_cpu_may_come_from_them() -> None:
    defaults = PodDefaults(
        serving=pod(
            volumes=[{"name": "certs", "secret": {"secretName": "certs"}}],
            resources={"requests": {"cpu": "1"}},
        )
    )
    parse_spec(
        {
            "model": MODEL,
            "autoscaling": {"maxReplicas": 3},
            "pods": {"serving": {"volumeMounts": [{"name": "certs", "mountPath": "/etc/certs"}]}},
        },
        defaults,
    )


# --- PodDisruptionBudgets ------------------------------------------------------------------------


def test_every_traffic_taking_revision_gets_a_disruption_budget_by_default() -> None:
    manifests = build({"replicas": 2})
    deployment = serving(manifests)
    budget = one(manifests, "PodDisruptionBudget", deployment["metadata"]["name"])
    assert budget["spec"] == {"selector": deployment["spec"]["selector"], "maxUnavailable": 1}
    assert budget["metadata"]["ownerReferences"][0]["uid"] == "uid-1"  # garbage-collected with it


@pytest.mark.parametrize(
    ("budget", "expected"),
    [
        ({"minAvailable": "50%"}, {"minAvailable": "50%"}),
        ({"maxUnavailable": 2}, {"maxUnavailable": 2}),
        ({"enabled": False}, None),
    ],
)
def test_disruption_budget_settings(budget: dict[str, Any], expected: dict[str, Any] | None) -> None:
    manifests = build({"replicas": 2, "podDisruptionBudget": budget})
    budgets = [m for m in manifests if m["kind"] == "PodDisruptionBudget"]
    if expected is None:
        assert budgets == []
    else:
        (found,) = budgets
        assert {k: v for k, v in found["spec"].items() if k != "selector"} == expected


# --- autoscaling the operator never fights -----------------------------------------------------------


def test_with_our_hpa_replicas_are_left_out() -> None:
    manifests = build({"autoscaling": {"maxReplicas": 4}, "resources": {"requests": {"cpu": "100m"}}})
    assert "replicas" not in serving(manifests)["spec"]
    assert one(manifests, "HorizontalPodAutoscaler")["spec"]["maxReplicas"] == 4


def test_external_autoscaling_makes_no_hpa_and_leaves_replicas_out() -> None:
    manifests = build({"autoscaling": {"provider": "External"}})
    assert "replicas" not in serving(manifests)["spec"]
    assert not [m for m in manifests if m["kind"] == "HorizontalPodAutoscaler"]


def test_a_foreign_hpa_takes_the_replicas_and_ours_stands_aside() -> None:
    spec = parse_spec(
        {"model": MODEL, "autoscaling": {"maxReplicas": 4}, "resources": {"requests": {"cpu": "1"}}}
    )
    (variant,) = resolve_variants("churn", spec)
    name = f"churn-default-{variant.revision}"
    manifests = build(
        {"autoscaling": {"maxReplicas": 4}, "resources": {"requests": {"cpu": "1"}}},
        externally_scaled=frozenset({name}),
    )
    assert "replicas" not in serving(manifests)["spec"]
    assert not [m for m in manifests if m["kind"] == "HorizontalPodAutoscaler"]  # no AmbiguousSelector
    plain = build({"replicas": 3}, externally_scaled=frozenset({name}))
    assert "replicas" not in serving(plain)["spec"]


def test_externally_scaled_finds_hpas_that_are_not_ours() -> None:
    def hpa(target: str, owner: str | None = None, kind: str = "Deployment") -> dict[str, Any]:
        meta: dict[str, Any] = {"name": f"hpa-{target}"}
        if owner:
            meta["ownerReferences"] = [{"uid": owner, "controller": True}]
        return {
            "metadata": meta,
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": kind, "name": target}},
        }

    hpas = [
        hpa("a"),
        hpa("b", owner="uid-1"),
        hpa("c", kind="StatefulSet"),
        hpa("other"),
        hpa("d", owner="x"),
    ]
    assert externally_scaled(hpas, ["a", "b", "c", "d"], "uid-1") == frozenset({"a", "d"})


def _live(manager: str, owns_replicas: bool, replicas: int = 5) -> dict[str, Any]:
    fields: dict[str, Any] = {"f:spec": {"f:template": {}}}
    if owns_replicas:
        fields["f:spec"]["f:replicas"] = {}
    return {
        "metadata": {"managedFields": [{"manager": manager, "operation": "Apply", "fieldsV1": fields}]},
        "spec": {"replicas": replicas},
    }


def test_replicas_are_handed_over_before_the_operator_lets_go_of_them() -> None:
    desired = serving(build({"autoscaling": {"provider": "External"}}))
    handover = build_replicas_handover(desired, _live("modeldeploy-operator", True), "modeldeploy-operator")
    assert handover is not None
    manager, manifest = handover
    assert manager == "modeldeploy-operator" + HANDOVER_SUFFIX
    assert manifest["spec"] == {"replicas": 5}  # the live count, not a reset to 1
    assert manifest["metadata"] == {"name": desired["metadata"]["name"], "namespace": "ml"}


@pytest.mark.parametrize(
    ("raw", "live"),
    [
        ({"autoscaling": {"provider": "External"}}, None),  # nothing live yet
        ({"autoscaling": {"provider": "External"}}, _live("modeldeploy-operator", False)),  # already let go
        ({"autoscaling": {"provider": "External"}}, _live("kube-controller-manager", True)),
        ({"replicas": 2}, _live("modeldeploy-operator", True)),  # replicas still ours to set
    ],
)
def test_no_handover_when_there_is_nothing_to_hand_over(
    raw: dict[str, Any], live: dict[str, Any] | None
) -> None:
    assert build_replicas_handover(serving(build(raw)), live, "modeldeploy-operator") is None


# --- the chart's defaults reach the operator as typed settings ----------------------------------------


def test_pod_defaults_are_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "MODELDEPLOY_OPERATOR_SERVING_POD_DEFAULTS",
        json.dumps({"nodeSelector": {"pool": "cpu"}, "resources": {"requests": {"cpu": "50m"}}}),
    )
    monkeypatch.setenv(
        "MODELDEPLOY_OPERATOR_POD_DISRUPTION_BUDGET_DEFAULT", '{"enabled": true, "maxUnavailable": 1}'
    )
    settings = OperatorSettings()
    assert settings.serving_pod_defaults.node_selector == {"pool": "cpu"}
    assert settings.pod_disruption_budget_default.max_unavailable == 1
    assert settings.router_pod_defaults == PodSettings()


@pytest.mark.parametrize(
    "bad",
    [
        {"labels": {"app.kubernetes.io/component": "x"}},
        {"annotations": {"prometheus.io/port": "1"}},
        {"env": [{"name": "MODELDEPLOY_SERVER_PORT", "value": "1"}]},
        {"volumes": [{"name": "tmp", "emptyDir": {}}]},
        {"volumeMounts": [{"name": "x", "mountPath": "/tmp"}]},
    ],
)
def test_pod_defaults_may_not_take_the_operators_names(
    monkeypatch: pytest.MonkeyPatch, bad: dict[str, Any]
) -> None:
    monkeypatch.setenv("MODELDEPLOY_OPERATOR_ROUTER_POD_DEFAULTS", json.dumps(bad))
    with pytest.raises(ValueError, match="the operator's"):
        OperatorSettings()


def test_the_planner_follows_a_foreign_hpas_count() -> None:
    spec = parse_spec({"model": MODEL, "replicas": 2})
    (variant,) = resolve_variants("churn", spec)
    seen = ObservedDeployment(
        name=f"churn-default-{variant.revision}",
        variant="default",
        revision=variant.revision,
        replicas=5,
        ready_replicas=5,
        updated_replicas=5,
        available_replicas=5,
        generation=1,
        observed_generation=1,
        externally_scaled=True,
    )
    decided = plan("churn", spec, [seen], (), NOW, None)
    (revision,) = [r for v in decided.variants for r in v.revisions]
    assert revision.replicas == 5
    assert decided.status.phase == "Ready"


class FakeApi:
    """Enough of KubeApi for one reconcile over a live serving Deployment and a user's HPA on it."""

    field_manager = "modeldeploy-operator"

    def __init__(self, objects: dict[str, list[dict[str, Any]]]) -> None:
        self.objects = objects
        self.applied: list[tuple[str | None, dict[str, Any]]] = []
        self.patched: list[Any] = []

    def list(self, api_version: str, kind: str, namespace: str | None, selector: str) -> list[dict[str, Any]]:
        return [dict(o, apiVersion=api_version, kind=kind) for o in self.objects.get(kind, [])]

    def apply(self, manifest: dict[str, Any], field_manager: str | None = None) -> dict[str, Any]:
        self.applied.append((field_manager, manifest))
        return manifest

    def patch(self, *args: Any) -> dict[str, Any]:
        self.patched.append(args)
        return {}

    def delete(self, *args: Any, **kwargs: Any) -> None:
        pass

    def event(self, *args: Any, **kwargs: Any) -> None:
        pass

    def patch_status(self, *args: Any, **kwargs: Any) -> None:
        pass


def test_a_reconcile_hands_replicas_to_a_users_hpa_and_never_writes_them() -> None:
    from modeldeploy_operator.reconciler import Reconciler

    raw = {"model": MODEL, "replicas": 2}
    (variant,) = resolve_variants("churn", parse_spec(raw))
    name = f"churn-default-{variant.revision}"
    owner_ref = {"uid": "uid-1", "controller": True}
    live = {
        "metadata": {
            "name": name,
            "namespace": "ml",
            "uid": "d-1",
            "generation": 3,
            "labels": {"modeldeploy.io/variant": "default", "modeldeploy.io/revision": variant.revision},
            "ownerReferences": [owner_ref],
            "managedFields": [
                {
                    "manager": "modeldeploy-operator",
                    "operation": "Apply",
                    "fieldsV1": {"f:spec": {"f:replicas": {}}},
                },
            ],
        },
        "spec": {"replicas": 4},
        "status": {"readyReplicas": 4, "updatedReplicas": 4, "availableReplicas": 4, "observedGeneration": 3},
    }
    user_hpa = {
        "metadata": {"name": "user-hpa", "namespace": "ml"},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name}},
    }
    api = FakeApi({"Deployment": [live], "HorizontalPodAutoscaler": [user_hpa]})
    body = {
        "apiVersion": "modeldeploy.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {
            "name": "churn",
            "namespace": "ml",
            "uid": "uid-1",
            "generation": 1,
            "resourceVersion": "1",
        },
        "spec": raw,
    }
    Reconciler(api, OperatorSettings()).reconcile(body)  # type: ignore[arg-type]
    serving_applies = [
        (m, o) for m, o in api.applied if o["kind"] == "Deployment" and o["metadata"]["name"] == name
    ]
    (handover, main) = serving_applies
    assert handover == ("modeldeploy-operator" + HANDOVER_SUFFIX, {**handover[1], "spec": {"replicas": 4}})
    assert main[0] is None
    assert "replicas" not in main[1]["spec"]
    assert not [o for _, o in api.applied if o["kind"] == "HorizontalPodAutoscaler"]
    assert api.patched == []  # no scale patch either
