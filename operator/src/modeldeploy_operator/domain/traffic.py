"""How traffic is split between arms (a variant's revision), and the Gateway API HTTPRoute for it.

Weights are integer basis points of all traffic (1/100 of a percent, `modeldeploy_contract.weights`),
so a variant at 10% whose canary gets 5% of it (0.5% overall, 50 bp) is still exact. An arm is one
(variant, revision) and its per-revision Service.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from . import labels as lbl
from .names import revision_name, route_name, stable_service_name
from .resource import ModelDeploymentRef
from .revision import SERVER_PORT
from .spec import GatewayAPI, Traffic

VARIANT_HEADER = "x-modeldeploy-variant"


@dataclass(frozen=True)
class Arm:
    variant: str
    revision: str
    weight_bp: int
    """Share of all traffic in basis points, 0..10000 (`arm_weight_bp` of the plan's percents)."""
    mirror_percent: int = 0
    """Percent of its variant's live requests copied to this arm (the rollout mirror; weight 0)."""


def build_http_route(owner: ModelDeploymentRef, gateway: GatewayAPI, arms: Sequence[Arm]) -> dict[str, Any]:
    """An HTTPRoute with weighted backendRefs to the per-revision Services.

    One rule per variant matches the `x-modeldeploy-variant: <name>` header (pinning a caller to a
    variant, e.g. for testing it), then a catch-all rule splits by weight. Arms at 0 stay listed with
    weight 0, so weights can move without the rule changing shape.
    """

    def backend(arm: Arm, weight: int) -> dict[str, Any]:
        return {
            "group": "",
            "kind": "Service",
            "name": revision_name(owner.name, arm.variant, arm.revision),
            "port": SERVER_PORT,
            "weight": weight,
        }

    variants = list(dict.fromkeys(arm.variant for arm in arms))
    rules: list[dict[str, Any]] = []
    for variant in variants:
        mine = [a for a in arms if a.variant == variant]
        total = sum(a.weight_bp for a in mine)
        rules.append(
            {
                "matches": [{"headers": [{"type": "Exact", "name": VARIANT_HEADER, "value": variant}]}],
                # A pinned variant keeps its revisions' relative shares (all to the first if none has any).
                "backendRefs": [
                    backend(a, a.weight_bp if total else int(i == 0)) for i, a in enumerate(mine)
                ],
            }
        )
    rules.append(
        {
            "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
            "backendRefs": [backend(a, a.weight_bp) for a in arms],
        }
    )
    parent_refs = [ref.model_dump(by_alias=True, exclude_none=True) for ref in gateway.parent_refs]
    spec: dict[str, Any] = {"parentRefs": parent_refs, "rules": rules}
    if gateway.hostnames:
        spec["hostnames"] = list(gateway.hostnames)
    labels = lbl.common_labels(owner.name, "route")
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {
            "name": route_name(owner.name),
            "namespace": owner.namespace,
            "labels": labels,
            "ownerReferences": [owner.owner_reference()],
        },
        "spec": spec,
    }


def call_url(owner: ModelDeploymentRef, traffic: Traffic, cluster_domain: str = "cluster.local") -> str:
    """Where callers reach the model (status.url): the V2 model endpoint behind the traffic split.

    With the router, the stable Service (named after the ModelDeployment, port 8080) fronts the router,
    so its in-cluster URL honours the weights. With the Gateway API provider the weights live in the
    HTTPRoute, so the URL is the route's first hostname that is not a wildcard (and its first
    parentRef's listener port, when one is given); a route without one has no name to call it by, and
    the URL falls back to the stable Service, which reaches the serving pods directly. The model name
    is the ModelDeployment's on every arm (revision.server_settings_for).
    """
    path = f"/v2/models/{owner.name}"
    gateway = traffic.gateway_api
    hostnames = [h for h in gateway.hostnames if not h.startswith("*")] if gateway else []
    if traffic.provider == "gatewayAPI" and gateway is not None and hostnames:
        ports = [ref.port for ref in gateway.parent_refs if ref.port is not None]
        port = f":{ports[0]}" if ports and ports[0] != 80 else ""
        return f"http://{hostnames[0]}{port}{path}"
    host = f"{stable_service_name(owner.name)}.{owner.namespace}.svc.{cluster_domain}"
    return f"http://{host}:{SERVER_PORT}{path}"
