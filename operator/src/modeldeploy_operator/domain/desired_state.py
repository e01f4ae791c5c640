"""What should exist for one ModelDeployment, given what exists: the Immediate strategy.

A pure function of (spec, observed Deployments). A new revision of a variant replaces the old one only
once it is ready: until then the old revision keeps serving and keeps its objects, and the stable Service
keeps selecting it. The rollout planner (canary, blue-green) generalises this for issue 6.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from . import labels as lbl
from .manifests import build_hpa, build_serving_deployment, build_serving_service, build_stable_service
from .names import revision_name
from .observed import ObservedDeployment
from .resource import ModelDeploymentRef
from .revision import ResolvedVariant, resolve_variants
from .router import build_router_config, build_router_objects
from .spec import ModelDeploymentSpec
from .traffic import Arm, build_http_route, split

OWNED_KINDS: tuple[tuple[str, str], ...] = (
    ("apps/v1", "Deployment"),
    ("v1", "Service"),
    ("autoscaling/v2", "HorizontalPodAutoscaler"),
    ("gateway.networking.k8s.io/v1", "HTTPRoute"),
    ("v1", "ConfigMap"),
)
_REVISION_KINDS = {"Deployment", "Service", "HorizontalPodAutoscaler"}


@dataclass(frozen=True)
class DesiredState:
    manifests: tuple[dict[str, Any], ...]
    """Objects to server-side apply, in order."""
    keep: frozenset[tuple[str, str]]
    """(kind, name) of owned objects that must survive pruning: applied ones and still-serving old
    revisions. Kinds matter: the stable Service and the HTTPRoute share the ModelDeployment's name."""
    serving: tuple[tuple[str, str], ...]
    """(variant, revision) pairs that take traffic now."""
    arms: tuple[Arm, ...] = ()
    """The traffic split over those pairs."""


def _serving_revision(variant: ResolvedVariant, observed: Sequence[ObservedDeployment]) -> str:
    """The revision of `variant` that should take traffic: the desired one once it has a ready pod,
    else an older one that still has ready pods, else the desired one (nothing serves yet)."""
    mine = [o for o in observed if o.variant == variant.name]
    if any(o.revision == variant.revision and o.ready_replicas > 0 for o in mine):
        return variant.revision
    ready_old = [o for o in mine if o.revision != variant.revision and o.ready_replicas > 0]
    if ready_old:
        return max(ready_old, key=lambda o: o.ready_replicas).revision
    return variant.revision


@dataclass(frozen=True)
class BuildOptions:
    """What the operator's own settings contribute to the objects it builds."""

    serving_image: str
    router_image: str
    image_pull_policy: str = "IfNotPresent"
    router_cluster_role: str = "modeldeploy-router"
    router_service_account: str | None = None
    """A ServiceAccount every router shares (namespaced installs); None: one per router, made here."""


def desired_state(
    owner: ModelDeploymentRef,
    spec: ModelDeploymentSpec,
    observed: Sequence[ObservedDeployment],
    *,
    options: BuildOptions,
    generation: int = 0,
) -> DesiredState:
    variants = resolve_variants(owner.name, spec)
    manifests: list[dict[str, Any]] = []
    serving_names: set[str] = set()  # revision objects (Deployment, Service, HPA) still needed
    serving: list[tuple[str, str]] = []
    versions: dict[tuple[str, str], str] = {}
    for variant in variants:
        manifests.append(
            build_serving_deployment(
                owner,
                variant,
                image=options.serving_image,
                replicas=variant.replicas,
                progress_deadline_seconds=spec.rollout.progress_deadline_seconds,
                image_pull_policy=options.image_pull_policy,
            )
        )
        manifests.append(build_serving_service(owner, variant))
        hpa = build_hpa(owner, variant)
        if hpa is not None:
            manifests.append(hpa)
        serving_names.add(revision_name(owner.name, variant.name, variant.revision))
        versions[(variant.name, variant.revision)] = variant.model.version
        live = _serving_revision(variant, observed)
        serving_names.add(revision_name(owner.name, variant.name, live))
        serving.append((variant.name, live))

    arms = split({v.name: v.weight for v in variants}, {name: [(rev, 100)] for name, rev in serving})
    if spec.traffic.provider == "router":
        config = build_router_config(owner, spec, arms, versions, generation)
        manifests += build_router_objects(
            owner,
            config,
            image=options.router_image,
            image_pull_policy=options.image_pull_policy,
            cluster_role=options.router_cluster_role,
        )
        selector = lbl.router_selector(owner.name)
    elif len(serving) == 1:
        selector = lbl.revision_selector(owner.name, *serving[0])
    else:
        selector = {lbl.DEPLOYMENT_LABEL: owner.name, "app.kubernetes.io/component": lbl.SERVER_COMPONENT}
    manifests.append(build_stable_service(owner, selector))
    if spec.traffic.provider == "gatewayAPI" and spec.traffic.gateway_api is not None:
        manifests.append(build_http_route(owner, spec.traffic.gateway_api, arms))
    keep = {(m["kind"], m["metadata"]["name"]) for m in manifests}
    keep |= {(kind, name) for name in serving_names for _, kind in OWNED_KINDS if kind in _REVISION_KINDS}
    return DesiredState(
        manifests=tuple(manifests), keep=frozenset(keep), serving=tuple(serving), arms=tuple(arms)
    )


def stale_objects(state: DesiredState, owned: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Owned objects that nothing desired or serving needs any more."""
    return [obj for obj in owned if (obj["kind"], obj["metadata"]["name"]) not in state.keep]
