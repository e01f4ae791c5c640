"""Pod settings: the chart's defaults merged under a ModelDeployment's own, and rendered into pod templates.

Merge rules (docs/crd.md, "Pod settings"), field by field, the ModelDeployment's value over the default:

- maps (labels, annotations, nodeSelector): merged key by key; the ModelDeployment's value wins a key.
- lists with a name (env, volumes, imagePullSecrets; volumeMounts by mountPath): merged by that key, the
  defaults' entries first (so `$(VAR)` references to a default variable keep working), then the
  ModelDeployment's; an entry of the ModelDeployment replaces the default of the same key.
- lists without one (tolerations, topologySpreadConstraints): the ModelDeployment's list, if it sets
  one, replaces the defaults' whole (there is no key to merge toleration entries on).
- single values and whole objects (serviceAccountName, priorityClassName, affinity, resources): the
  ModelDeployment's when set, else the default.

What the operator owns it writes last, so that a default can never take it over either: the chart's
defaults do not pass through the CRD's CEL rules, so `owned_name_errors` checks them at start-up.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from modeldeploy_contract.model_store import PVC_MOUNT_ROOT, PVC_VOLUME
from modeldeploy_contract.resource import GROUP

from .spec import (
    ModelDeploymentSpec,
    PodDisruptionBudgetSpec,
    Pods,
    PodSettings,
)

OPERATOR_ENV_PREFIX = "MODELDEPLOY_"
OWNED_LABEL_PREFIX = f"{GROUP}/"
OWNED_LABELS = frozenset(
    {
        "app.kubernetes.io/name",
        "app.kubernetes.io/instance",
        "app.kubernetes.io/component",
        "app.kubernetes.io/part-of",
        "app.kubernetes.io/managed-by",
        "app.kubernetes.io/version",
    }
)
OWNED_ANNOTATION_PREFIXES = (f"{GROUP}/", "prometheus.io/")
# The operator's own volumes and mounts (manifests.py; a pvc:// model store's: the contract's).
OWNED_VOLUMES = frozenset({"model-cache", PVC_VOLUME, "tmp"})
OWNED_MOUNT_PREFIXES = ("/var/cache/modeldeploy", PVC_MOUNT_ROOT, "/tmp")  # noqa: S108 - mount paths, not files

T = TypeVar("T")


@dataclass(frozen=True)
class PodDefaults:
    """The chart's defaults (operator settings), applied where a ModelDeployment is silent."""

    serving: PodSettings = field(default_factory=PodSettings)
    router: PodSettings = field(default_factory=PodSettings)
    pod_disruption_budget: PodDisruptionBudgetSpec = field(default_factory=PodDisruptionBudgetSpec)


def _by_key(defaults: Iterable[T], own: Iterable[T], key: Callable[[T], str]) -> tuple[T, ...]:
    own = tuple(own)
    mine = {key(item) for item in own}
    return (*(item for item in defaults if key(item) not in mine), *own)


def merge_pod_settings(own: PodSettings, default: PodSettings) -> PodSettings:
    """`own` (a ModelDeployment's) over `default` (the chart's), by the rules of this module's docstring."""
    return PodSettings(
        labels={**default.labels, **own.labels},
        annotations={**default.annotations, **own.annotations},
        service_account_name=own.service_account_name or default.service_account_name,
        image_pull_secrets=_by_key(default.image_pull_secrets, own.image_pull_secrets, lambda s: s.name),
        node_selector={**default.node_selector, **own.node_selector},
        tolerations=own.tolerations or default.tolerations,
        affinity=own.affinity if own.affinity is not None else default.affinity,
        topology_spread_constraints=own.topology_spread_constraints or default.topology_spread_constraints,
        priority_class_name=own.priority_class_name or default.priority_class_name,
        env=_by_key(default.env, own.env, lambda e: e.name),
        volumes=_by_key(default.volumes, own.volumes, lambda v: v.name),
        volume_mounts=_by_key(default.volume_mounts, own.volume_mounts, lambda m: m.mount_path),
        resources=own.resources if own.resources is not None else default.resources,
    )


def with_pod_defaults(spec: ModelDeploymentSpec, defaults: PodDefaults) -> ModelDeploymentSpec:
    """The spec the operator acts on: its pod settings merged over the chart's defaults.

    The serving defaults' `resources` become spec.resources when neither the spec nor a variant sets
    any (a variant's own resources still win: `revision.resolve_variant`)."""
    serving = merge_pod_settings(spec.pods.serving, defaults.serving)
    update: dict[str, Any] = {
        "pods": Pods(
            serving=serving.model_copy(update={"resources": None}),
            router=merge_pod_settings(spec.pods.router, defaults.router),
        ),
        "pod_disruption_budget": spec.pod_disruption_budget or defaults.pod_disruption_budget,
    }
    if spec.resources is None and defaults.serving.resources is not None:
        update["resources"] = defaults.serving.resources
    return spec.model_copy(update=update)


def owned_name_errors(settings: PodSettings, where: str) -> list[str]:
    """What in `settings` would take over a name the operator owns (the CRD's CEL rules, for settings
    that do not come through the API server: the chart's defaults)."""
    errors = [
        f"{where}.labels: {key} is the operator's"
        for key in settings.labels
        if key.startswith(OWNED_LABEL_PREFIX) or key in OWNED_LABELS
    ]
    errors += [
        f"{where}.annotations: {key} is the operator's"
        for key in settings.annotations
        if key.startswith(OWNED_ANNOTATION_PREFIXES)
    ]
    errors += [
        f"{where}.env: {var.name} is the operator's (MODELDEPLOY_*)"
        for var in settings.env
        if var.name.startswith(OPERATOR_ENV_PREFIX)
    ]
    errors += [
        f"{where}.volumes: {v.name} is the operator's" for v in settings.volumes if v.name in OWNED_VOLUMES
    ]
    errors += [
        f"{where}.volumeMounts: {m.mount_path} is the operator's"
        for m in settings.volume_mounts
        if any(m.mount_path == p or m.mount_path.startswith(p + "/") for p in OWNED_MOUNT_PREFIXES)
    ]
    return errors


def _dump(model: Any) -> dict[str, Any]:
    out: dict[str, Any] = model.model_dump(by_alias=True, exclude_none=True)
    return out


def render_pod_settings(
    template: dict[str, Any],
    settings: PodSettings,
    *,
    container: str,
    spread_selector: Mapping[str, str],
) -> dict[str, Any]:
    """`template` (a pod template the operator built: its own labels, annotations, env, volumes) with
    `settings` added. The operator's entries come last in every map and win every name, so that even
    a setting that slipped past validation cannot change a selector label, a MODELDEPLOY_* variable
    or the model cache. Pure: returns a new template."""
    meta = template["metadata"]
    spec = dict(template["spec"])
    labels = {**settings.labels, **meta.get("labels", {})}
    annotations = {**settings.annotations, **meta.get("annotations", {})}
    if settings.service_account_name:
        spec["serviceAccountName"] = settings.service_account_name
    if settings.image_pull_secrets:
        spec["imagePullSecrets"] = [{"name": s.name} for s in settings.image_pull_secrets]
    if settings.node_selector:
        spec["nodeSelector"] = dict(settings.node_selector)
    if settings.tolerations:
        spec["tolerations"] = [_dump(t) for t in settings.tolerations]
    if settings.affinity is not None:
        spec["affinity"] = settings.affinity
    if settings.topology_spread_constraints:
        # A constraint without a labelSelector counts no pods and so spreads nothing: it spreads the
        # pods of this Deployment (the revision's, or the router's) unless it says otherwise.
        spec["topologySpreadConstraints"] = [
            {"labelSelector": {"matchLabels": dict(spread_selector)}, **c} if "labelSelector" not in c else c
            for c in settings.topology_spread_constraints
        ]
    if settings.priority_class_name:
        spec["priorityClassName"] = settings.priority_class_name
    owned_volumes = {v["name"] for v in spec.get("volumes", [])}
    extra_volumes = [_dump(v) for v in settings.volumes if v.name not in owned_volumes]
    if extra_volumes:
        spec["volumes"] = [*spec.get("volumes", []), *extra_volumes]
    containers = []
    for original in spec["containers"]:
        item = dict(original)
        if item["name"] == container:
            owned_env = {e["name"] for e in item.get("env", [])}
            extra_env = [
                _dump(e)
                for e in settings.env
                if e.name not in owned_env and not e.name.startswith(OPERATOR_ENV_PREFIX)
            ]
            item["env"] = [*item.get("env", []), *extra_env]
            owned_mounts = {m["mountPath"] for m in item.get("volumeMounts", [])}
            extra_mounts = [_dump(m) for m in settings.volume_mounts if m.mount_path not in owned_mounts]
            if extra_mounts:
                item["volumeMounts"] = [*item.get("volumeMounts", []), *extra_mounts]
        containers.append(item)
    spec["containers"] = containers
    return {"metadata": {**meta, "labels": labels, "annotations": annotations}, "spec": spec}
