"""The built-in router of one ModelDeployment: its routing table and the objects that run it.

One router per ModelDeployment (see docs/router.md): its own Deployment behind the stable Service, its
table in the ConfigMap `<name>-router` (key `router.json`, the typed `RouterConfig` shared with the
router), and a ServiceAccount with exactly the rights the router uses: its own ConfigMap (a Role
`<name>-router` with resourceNames, bound by `<name>-router-config`) and the EndpointSlices of its
namespace (the chart's router role, bound by `<name>-router`; the operator may `bind` that one role by
name and no other). All owned by the ModelDeployment, so all garbage-collected.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from modeldeploy_contract.router_config import (
    CONFIG_KEY,
    ENV_PREFIX,
    ArmConfig,
    RouterConfig,
    ShadowConfig,
    StickyConfig,
    TimeoutConfig,
    arm_id,
    config_map_name,
)
from modeldeploy_contract.router_config import ModelDeploymentRef as RouterDeploymentRef
from modeldeploy_contract.slots import SlotTable, rebalance

from . import labels as lbl
from .joiner import feedback_config
from .manifests import PORT_NAME, RUN_AS_USER, _metadata, _resources, _restricted_container_security
from .names import revision_name, router_name
from .pods import render_pod_settings
from .predlog import add_prediction_log
from .resource import ModelDeploymentRef
from .revision import SERVER_PORT
from .spec import ModelDeploymentSpec, PodSettings, PredictionLog
from .traffic import Arm

ROUTER_COMMAND = ("modeldeploy-router",)
ROUTER_CONTAINER = "router"
DEFAULT_ROUTER_RESOURCES: dict[str, Any] = {
    "requests": {"cpu": "50m", "memory": "64Mi"},
    "limits": {"memory": "256Mi"},
}
"""The router's resources when neither the ModelDeployment nor the chart's defaults set any."""


def previous_slots(previous_table: str | None) -> SlotTable | None:
    """The slot table of the router table now in the ConfigMap (`router.json`), to edit minimally.

    None, and so a fresh `initial_layout`, when there is none (a first table) or when it is unusable:
    not valid JSON, not a valid table of this schema (a v1 table from before slot tables, a hand-edited
    one the routers refuse too). Deterministic: every operator replica falls back to the same table.
    The cost of a fallback is one reshuffle: keys move as much as between the lost layout and the
    initial one, once; every later change is minimal again."""
    if previous_table is None:
        return None
    try:
        table = RouterConfig.from_json(previous_table)
    except ValueError:  # pydantic's ValidationError is a ValueError
        return None
    ids = [arm.arm_id for arm in table.arms]
    return SlotTable(tuple(map(ids.__getitem__, table.slot_arms())))


def _mirror(arms: Sequence[Arm], shadow: ShadowConfig | None) -> ShadowConfig | None:
    """The rollout mirror of the table: the arm the planner gave a mirror share (at most one: one
    rollout at a time), fed with copies of its own variant's requests. Left out when the spec's
    shadow already copies to that arm."""
    arm = next((a for a in arms if a.mirror_percent > 0 and a.weight_bp == 0), None)
    if arm is None:
        return None
    if shadow is not None and (shadow.variant, shadow.revision) == (arm.variant, arm.revision):
        return None
    return ShadowConfig(
        variant=arm.variant,
        revision=arm.revision,
        percent=arm.mirror_percent,
        from_variant=arm.variant,
        score_output="probabilities",
        label_output="label",
    )


def build_router_config(
    owner: ModelDeploymentRef,
    spec: ModelDeploymentSpec,
    arms: Sequence[Arm],
    model_versions: Mapping[tuple[str, str], str],
    generation: int,
    previous_table: str | None = None,
) -> RouterConfig:
    """The routing table. Its slot table is `previous_table`'s (the ConfigMap's current `router.json`)
    rebalanced to the arms' weights: a key moves only from an arm whose weight fell to one whose weight
    rose (`modeldeploy_contract.slots.rebalance`). The arm order only decides who takes freed slots
    first and the layout of a first table (canary first, so that table grows it from slot 0)."""
    traffic = spec.traffic
    slots = rebalance(
        previous_slots(previous_table), [(arm_id(a.variant, a.revision), a.weight_bp) for a in arms]
    )
    configs = tuple(
        ArmConfig(
            variant=arm.variant,
            revision=arm.revision,
            weight_bp=arm.weight_bp,
            service=revision_name(owner.name, arm.variant, arm.revision),
            port_name=PORT_NAME,
            model_name=owner.name,
            model_version=model_versions.get((arm.variant, arm.revision)),
        )
        for arm in arms
    )
    sticky = None
    if traffic.sticky_key is not None:
        sticky = StickyConfig(
            header=traffic.sticky_key.header,
            body_field=traffic.sticky_key.body_field,
            protocol=spec.server.protocol,  # the body shape callers send (docs/crd.md, server.protocol)
            salt=owner.name,
        )
    shadow = None
    if traffic.shadow is not None and traffic.shadow.percent > 0:
        target = next((a for a in arms if a.variant == traffic.shadow.variant), None)
        if target is not None:
            shadow = ShadowConfig(
                variant=target.variant,
                revision=target.revision,
                percent=traffic.shadow.percent,
                score_output="probabilities",
                label_output="label",
            )
    mirror = _mirror(arms, shadow)
    return RouterConfig(
        deployment=RouterDeploymentRef(namespace=owner.namespace, name=owner.name, uid=owner.uid),
        generation=generation,
        arms=configs,
        slots=slots.encode([arm.arm_id for arm in configs]),
        sticky=sticky,
        pin_header=traffic.variant_pin_header,  # off unless the spec names a header
        shadow=shadow,
        mirror=mirror,
        timeouts=TimeoutConfig(request_seconds=traffic.timeout_seconds),
        when_arm_unavailable="reject" if traffic.no_ready_backend == "Reject" else "redistribute",
        feedback=feedback_config(spec, owner.name),
    )


def build_router_objects(
    owner: ModelDeploymentRef,
    config: RouterConfig,
    *,
    image: str,
    image_pull_policy: str,
    cluster_role: str,
    shared_service_account: str | None = None,
    replicas: int = 1,
    role_kind: str = "ClusterRole",
    pod: PodSettings | None = None,
    prediction_log: PredictionLog | None = None,
) -> list[dict[str, Any]]:
    """ServiceAccount, Role, RoleBindings, ConfigMap, Deployment and (with 2+ replicas)
    PodDisruptionBudget of the router, in the order to apply them. `cluster_role` is the chart's
    EndpointSlice reader, a ClusterRole (cluster-wide install) or a Role of this namespace
    (`role_kind` Role: namespaced install).

    With `shared_service_account` (a namespaced install, where the chart provides the router's
    ServiceAccount and Role), no RBAC objects are built and the pods run as that account.

    `pod`: the router pod settings (spec.pods.router over the chart's defaults). With its own
    serviceAccountName, the pods run as that account and (unless shared) the operator binds the
    router's Roles to it instead of making a ServiceAccount.

    With `prediction_log` (spec.predictionLog) the router logs each request it answered: the arm it
    chose and the sticky key, pseudonymised with the same key as the servers' records."""
    pod = pod or PodSettings()
    name = router_name(owner.name)
    own_account = pod.service_account_name or name
    labels = lbl.common_labels(owner.name, lbl.ROUTER_COMPONENT)
    service_account = {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": _metadata(owner, name, labels),
    }
    subjects = [{"kind": "ServiceAccount", "name": own_account, "namespace": owner.namespace}]
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": _metadata(owner, name, labels),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": cluster_role},
        "subjects": subjects,
    }
    config_role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": _metadata(owner, name, labels),
        # The router lists and watches with fieldSelector metadata.name=<name>, which RBAC authorises
        # against resourceNames (it never GETs).
        "rules": [
            {
                "apiGroups": [""],
                "resources": ["configmaps"],
                "resourceNames": [config_map_name(owner.name)],
                "verbs": ["list", "watch"],
            }
        ],
    }
    config_binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": _metadata(owner, f"{name}-config", labels),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        "subjects": subjects,
    }
    config_map = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(owner, config_map_name(owner.name), labels),
        "data": {CONFIG_KEY: config.to_json()},
    }
    container = {
        "name": ROUTER_CONTAINER,
        "image": image,
        "imagePullPolicy": image_pull_policy,
        "command": list(ROUTER_COMMAND),
        "env": [
            {"name": f"{ENV_PREFIX}CONFIG_MAP", "value": config_map_name(owner.name)},
            {"name": f"{ENV_PREFIX}PORT", "value": str(SERVER_PORT)},
        ],
        "ports": [{"name": PORT_NAME, "containerPort": SERVER_PORT, "protocol": "TCP"}],
        "readinessProbe": {
            "httpGet": {"path": "/readyz", "port": PORT_NAME},
            "periodSeconds": 2,
            "timeoutSeconds": 2,
            "failureThreshold": 2,
        },
        "livenessProbe": {
            "httpGet": {"path": "/healthz", "port": PORT_NAME},
            "periodSeconds": 10,
            "timeoutSeconds": 2,
            "failureThreshold": 3,
        },
        "resources": _resources(pod.resources) if pod.resources is not None else DEFAULT_ROUTER_RESOURCES,
        "securityContext": _restricted_container_security(),
    }
    deployment: dict[str, Any] = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(owner, name, labels),
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": lbl.router_selector(owner.name)},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": render_pod_settings(
                {
                    "metadata": {
                        "labels": labels,
                        # Per-arm request/error/latency metrics, for Prometheus-based analysis.
                        "annotations": {
                            "prometheus.io/scrape": "true",
                            "prometheus.io/port": str(SERVER_PORT),
                            "prometheus.io/path": "/metrics",
                        },
                    },
                    "spec": {
                        # The user's choice wins even in a namespaced install (docs/crd.md: bind it
                        # to the chart's router Role there).
                        "serviceAccountName": pod.service_account_name or shared_service_account or name,
                        "enableServiceLinks": False,
                        "securityContext": {
                            "runAsNonRoot": True,
                            "runAsUser": RUN_AS_USER,
                            "runAsGroup": RUN_AS_USER,
                            "seccompProfile": {"type": "RuntimeDefault"},
                        },
                        "terminationGracePeriodSeconds": 15,
                        "containers": [container],
                    },
                },
                pod.model_copy(update={"service_account_name": None}),  # decided above
                container=ROUTER_CONTAINER,
                spread_selector=lbl.router_selector(owner.name),
            ),
        },
    }
    if prediction_log is not None:
        add_prediction_log(deployment["spec"]["template"]["spec"], prediction_log, owner.name, "", "")
    objects: list[dict[str, Any]] = [config_map, deployment]
    if not shared_service_account:
        # The user's own ServiceAccount (a cloud identity, say) is theirs: bound to, never made here.
        accounts = [] if pod.service_account_name else [service_account]
        objects = [*accounts, config_role, binding, config_binding, *objects]
    if replicas > 1:
        # With several router pods, a node drain or a cluster upgrade takes them one at a time: the
        # front door is never emptied by voluntary evictions.
        objects.append(
            {
                "apiVersion": "policy/v1",
                "kind": "PodDisruptionBudget",
                "metadata": _metadata(owner, name, labels),
                "spec": {"maxUnavailable": 1, "selector": {"matchLabels": lbl.router_selector(owner.name)}},
            }
        )
    return objects
