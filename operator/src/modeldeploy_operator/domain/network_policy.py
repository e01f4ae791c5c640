"""NetworkPolicies of one ModelDeployment: who may open a connection to its model servers and router.

Pure builders. With the built-in router (traffic.provider=router), callers reach only the router and
only the router reaches the model servers:
- model-server pods accept connections on their port from this ModelDeployment's router pods, from the
  operator's pods (preflight replay and the built-in metrics analysis scrape them) and from the
  namespaces named in `metrics_namespaces` (Prometheus); nothing else;
- router pods accept callers from anywhere on their port. Their /metrics is served on that same port,
  and a NetworkPolicy works on addresses and ports, not paths: it is as reachable as the traffic.
- the label joiner's pods (spec.effectiveness) accept connections on its port from this
  ModelDeployment's model servers and stream pods (prediction records), its router (the feedback
  route), the operator's pods (effectiveness checks read its summary) and the metrics namespaces
  (its /metrics); nothing else.
With the Gateway API or no traffic provider, the Gateway's data plane or the callers themselves reach
the model servers through the stable Service, so their port stays open to every source; so does the
joiner's (with no router there is no feedback route: callers post labels to the joiner's Service).

Only ingress is restricted (policyTypes: [Ingress]): egress (the model store, DNS, the API server)
stays open. Peers are selected by labels, as NetworkPolicy allows: whoever may create pods labelled as
this ModelDeployment's router in its namespace is trusted as its router.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from modeldeploy_contract.joiner_settings import JOINER_PORT

from . import labels as lbl
from .joiner import JOINER_COMPONENT, joiner_name, joiner_selector
from .manifests import _metadata
from .names import fit_name, router_name
from .resource import ModelDeploymentRef
from .revision import SERVER_PORT

API_VERSION = "networking.k8s.io/v1"
KIND = "NetworkPolicy"
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"
"""Set by the API server on every namespace (1.22+): selects a namespace by name."""


@dataclass(frozen=True)
class NetworkPolicyOptions:
    """Who besides the router may reach model servers: the operator and the metrics namespaces."""

    operator_namespace: str
    operator_pod_labels: tuple[tuple[str, str], ...]
    """Labels that select the operator's pods (the chart's selector labels), as (key, value) pairs."""
    metrics_namespaces: tuple[str, ...] = ()
    """Namespaces whose pods may scrape model servers' /metrics (e.g. Prometheus's)."""


def server_policy_name(deployment_name: str) -> str:
    return fit_name(deployment_name, "model-servers")


def router_policy_name(deployment_name: str) -> str:
    return router_name(deployment_name)


def joiner_policy_name(deployment_name: str) -> str:
    return joiner_name(deployment_name)


def _port(port: int = SERVER_PORT) -> list[dict[str, Any]]:
    return [{"protocol": "TCP", "port": port}]


def _namespaces_peer(names: tuple[str, ...]) -> dict[str, Any]:
    return {
        "namespaceSelector": {
            "matchExpressions": [{"key": NAMESPACE_NAME_LABEL, "operator": "In", "values": sorted(names)}]
        }
    }


def _operator_and_metrics(options: NetworkPolicyOptions) -> list[dict[str, Any]]:
    peers: list[dict[str, Any]] = [
        {
            "namespaceSelector": {"matchLabels": {NAMESPACE_NAME_LABEL: options.operator_namespace}},
            "podSelector": {"matchLabels": dict(options.operator_pod_labels)},
        }
    ]
    if options.metrics_namespaces:
        peers.append(_namespaces_peer(options.metrics_namespaces))
    return peers


def _server_sources(owner: ModelDeploymentRef, options: NetworkPolicyOptions) -> list[dict[str, Any]]:
    # A podSelector alone means "pods of the policy's own namespace": the router lives beside the servers.
    peers: list[dict[str, Any]] = [{"podSelector": {"matchLabels": lbl.router_selector(owner.name)}}]
    return peers + _operator_and_metrics(options)


def _component(owner: ModelDeploymentRef, component: str) -> dict[str, Any]:
    """This ModelDeployment's pods of one component, in its own namespace."""
    return {
        "podSelector": {
            "matchLabels": {lbl.DEPLOYMENT_LABEL: owner.name, "app.kubernetes.io/component": component}
        }
    }


def build_joiner_network_policy(
    owner: ModelDeploymentRef, options: NetworkPolicyOptions, *, behind_router: bool
) -> dict[str, Any]:
    """Ingress to this ModelDeployment's label joiner. Behind the built-in router: its model servers and
    stream pods (the feed), its router (feedback), the operator (effectiveness checks) and the metrics
    namespaces; without it, every source (callers post labels to the joiner's Service)."""
    rule: dict[str, Any] = {"ports": _port(JOINER_PORT)}
    if behind_router:
        rule["from"] = [
            _component(owner, lbl.SERVER_COMPONENT),
            _component(owner, lbl.STREAM_COMPONENT),
            _component(owner, lbl.ROUTER_COMPONENT),
            *_operator_and_metrics(options),
        ]
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": _metadata(
            owner, joiner_policy_name(owner.name), lbl.common_labels(owner.name, JOINER_COMPONENT)
        ),
        "spec": {
            "podSelector": {"matchLabels": joiner_selector(owner.name)},
            "policyTypes": ["Ingress"],
            "ingress": [rule],
        },
    }


def build_server_network_policy(
    owner: ModelDeploymentRef, options: NetworkPolicyOptions, *, behind_router: bool
) -> dict[str, Any]:
    """Ingress to this ModelDeployment's model-server pods. `behind_router`: callers come through the
    built-in router (then only it, the operator and the metrics namespaces may connect)."""
    rule: dict[str, Any] = {"ports": _port()}
    if behind_router:
        rule["from"] = _server_sources(owner, options)
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": _metadata(
            owner, server_policy_name(owner.name), lbl.common_labels(owner.name, lbl.SERVER_COMPONENT)
        ),
        "spec": {
            "podSelector": {
                "matchLabels": {
                    lbl.DEPLOYMENT_LABEL: owner.name,
                    "app.kubernetes.io/component": lbl.SERVER_COMPONENT,
                }
            },
            "policyTypes": ["Ingress"],
            "ingress": [rule],
        },
    }


def build_router_network_policy(owner: ModelDeploymentRef) -> dict[str, Any]:
    """Ingress to this ModelDeployment's router pods: callers from anywhere, on the router's port only."""
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": _metadata(
            owner, router_policy_name(owner.name), lbl.common_labels(owner.name, lbl.ROUTER_COMPONENT)
        ),
        "spec": {
            "podSelector": {"matchLabels": lbl.router_selector(owner.name)},
            "policyTypes": ["Ingress"],
            "ingress": [{"ports": _port()}],
        },
    }


def build_network_policies(
    owner: ModelDeploymentRef, options: NetworkPolicyOptions, *, behind_router: bool, joiner: bool = False
) -> list[dict[str, Any]]:
    """The NetworkPolicies of one ModelDeployment: its servers', its router's when it has one, its
    label joiner's when it has one (`joiner`: spec.effectiveness is on)."""
    policies = [build_server_network_policy(owner, options, behind_router=behind_router)]
    if behind_router:
        policies.append(build_router_network_policy(owner))
    if joiner:
        policies.append(build_joiner_network_policy(owner, options, behind_router=behind_router))
    return policies
