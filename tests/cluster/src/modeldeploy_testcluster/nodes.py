"""Nodes of the local cluster: simulated kwok nodes, and readiness checks.

Scheduling rule (kept out of the product's defaults): kwok nodes carry the taint
`kwok.x-k8s.io/node=fake:NoSchedule` and the label `type=kwok`, so ordinary pods (everything
modeldeploy creates) land on a node where they really run. A test that wants simulated pods adds the
toleration and a `type: kwok` node selector. Of the two nodes that really run pods, the real node
carries `modeldeploy.io/real-node=true:NoSchedule` (ordinary pods go to the process node) unless
MODELDEPLOY_REAL_NODE_DEFAULT=1, when the process node carries `modeldeploy.io/process-node=true:NoSchedule`
instead (layout.py).
"""

from __future__ import annotations

import ipaddress
from typing import Any

from kubernetes import client, config

from modeldeploy_testcluster.layout import Layout

KWOK_TAINT = {"key": "kwok.x-k8s.io/node", "value": "fake", "effect": "NoSchedule"}
KWOK_TOLERATION = {"key": "kwok.x-k8s.io/node", "operator": "Equal", "value": "fake", "effect": "NoSchedule"}


def admin_api(layout: Layout) -> client.ApiClient:
    return config.new_client_from_config(config_file=str(layout.admin_kubeconfig))


def kwok_node_names(layout: Layout) -> list[str]:
    return [f"kwok-node-{i}" for i in range(layout.kwok_node_count)]


def kwok_node(name: str, subnet: str) -> dict[str, Any]:
    """A Node that kwok simulates (annotation `kwok.x-k8s.io/node: fake`), tainted for kwok pods only."""
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {
                "type": "kwok",
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "modeldeploy.io/node-kind": "kwok",
            },
            "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
        },
        "spec": {"taints": [KWOK_TAINT], "podCIDR": subnet, "podCIDRs": [subnet]},
    }


def create_kwok_nodes(api: client.ApiClient, layout: Layout) -> None:
    core = client.CoreV1Api(api)
    subnets = ipaddress.ip_network(layout.kwok_pod_cidr).subnets(new_prefix=24)
    for name, subnet in zip(kwok_node_names(layout), subnets, strict=False):
        body = kwok_node(name, str(subnet))
        try:
            core.create_node(body)
        except client.ApiException as error:
            if error.status != 409:
                raise


def _node_ready(node: Any) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in (node.status.conditions or []))


def all_ready(api: client.ApiClient, layout: Layout, real: bool = True) -> bool:
    """The kwok nodes and the process node are Ready (and the real node too, unless `real` is False)."""
    try:
        nodes = client.CoreV1Api(api).list_node().items
    except (client.ApiException, OSError):
        return False
    wanted = {*kwok_node_names(layout), layout.process_node_name}
    if real:
        wanted.add(layout.real_node_name)
    ready = {n.metadata.name for n in nodes if _node_ready(n)}
    return wanted <= ready


def coredns_ready(api: client.ApiClient) -> bool:
    try:
        deployment = client.AppsV1Api(api).read_namespaced_deployment("coredns", "kube-system")
    except (client.ApiException, OSError):
        return False
    return bool((deployment.status.ready_replicas or 0) >= 1)


def default_service_account_exists(api: client.ApiClient) -> bool:
    try:
        client.CoreV1Api(api).read_namespaced_service_account("default", "default")
    except client.ApiException:
        return False
    return True
