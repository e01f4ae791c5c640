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
from .spec import ModelDeploymentSpec
from .traffic import build_http_route, split

OWNED_KINDS: tuple[tuple[str, str], ...] = (
    ("apps/v1", "Deployment"),
    ("v1", "Service"),
    ("autoscaling/v2", "HorizontalPodAutoscaler"),
    ("gateway.networking.k8s.io/v1", "HTTPRoute"),
)


@dataclass(frozen=True)
class DesiredState:
    manifests: tuple[dict[str, Any], ...]
    """Objects to server-side apply, in order."""
    keep: frozenset[tuple[str, str]]
    """(kind, name) of owned objects that must survive pruning: applied ones and still-serving old
    revisions. Kinds matter: the stable Service and the HTTPRoute share the ModelDeployment's name."""
    serving: tuple[tuple[str, str], ...]
    """(variant, revision) pairs that take traffic now."""


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


def desired_state(
    owner: ModelDeploymentRef,
    spec: ModelDeploymentSpec,
    observed: Sequence[ObservedDeployment],
    *,
    image: str,
    image_pull_policy: str = "IfNotPresent",
) -> DesiredState:
    variants = resolve_variants(owner.name, spec)
    manifests: list[dict[str, Any]] = []
    serving_names: set[str] = set()  # revision objects (Deployment, Service, HPA) still needed
    serving: list[tuple[str, str]] = []
    progress_deadline = spec.rollout.progress_deadline_seconds
    for variant in variants:
        manifests.append(
            build_serving_deployment(
                owner,
                variant,
                image=image,
                replicas=variant.replicas,
                progress_deadline_seconds=progress_deadline,
                image_pull_policy=image_pull_policy,
            )
        )
        manifests.append(build_serving_service(owner, variant))
        hpa = build_hpa(owner, variant)
        if hpa is not None:
            manifests.append(hpa)
        serving_names.add(revision_name(owner.name, variant.name, variant.revision))
        live = _serving_revision(variant, observed)
        serving_names.add(revision_name(owner.name, variant.name, live))
        serving.append((variant.name, live))

    if len(serving) == 1:
        variant_name, revision = serving[0]
        selector = lbl.revision_selector(owner.name, variant_name, revision)
    else:
        # Several variants and no router yet: the Service spreads over every serving pod.
        selector = {lbl.DEPLOYMENT_LABEL: owner.name, "app.kubernetes.io/component": lbl.SERVER_COMPONENT}
    manifests.append(build_stable_service(owner, selector))
    if spec.traffic.provider == "gatewayAPI" and spec.traffic.gateway_api is not None:
        arms = split({v.name: v.weight for v in variants}, {name: [(rev, 100)] for name, rev in serving})
        route = build_http_route(owner, spec.traffic.gateway_api, arms)
        manifests.append(route)
    keep = {(m["kind"], m["metadata"]["name"]) for m in manifests}
    keep |= {(kind, name) for name in serving_names for _, kind in OWNED_KINDS if kind != "HTTPRoute"}
    return DesiredState(manifests=tuple(manifests), keep=frozenset(keep), serving=tuple(serving))


def stale_objects(state: DesiredState, owned: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Owned objects that nothing desired or serving needs any more."""
    return [obj for obj in owned if (obj["kind"], obj["metadata"]["name"]) not in state.keep]
