"""Where the local cluster lives: its state folder, network ranges, addresses and ports.

One cluster per machine at a time: the network namespace and the ranges are fixed, so the state
folder is the one handle that `up`, `down` and the pytest fixture share.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path


def cache_dir() -> Path:
    """Folder that survives between runs on the same machine (Go caches, built binaries)."""
    return Path(os.environ.get("MODELDEPLOY_CACHE", Path.home() / ".cache" / "modeldeploy"))


def binaries_dir() -> Path:
    return cache_dir() / "bin"


GATEWAY_API_VERSION = "v1.3.0"  # keep in step with tests/cluster/build-binaries.sh


def gateway_api_crds_dir() -> Path:
    """The Gateway API's standard-channel CRDs, taken from its Go module by build-binaries.sh."""
    return cache_dir() / "gateway-api-crds" / GATEWAY_API_VERSION


PROMETHEUS_OPERATOR_VERSION = "v0.85.0"  # keep in step with tests/cluster/build-binaries.sh


def prometheus_operator_crds_dir() -> Path:
    """The Prometheus Operator's monitoring.coreos.com CRDs, taken from its Go module
    (example/prometheus-operator-crd/) by build-binaries.sh."""
    return cache_dir() / "prometheus-operator-crds" / PROMETHEUS_OPERATOR_VERSION


REAL_NODE_DEFAULT_ENV = "MODELDEPLOY_REAL_NODE_DEFAULT"
# Harness-only taints (the product knows nothing of them): which of the two nodes that really run
# pods receives ordinary pods. A pod meant for the real node tolerates REAL_NODE_TAINT.
REAL_NODE_TAINT = {"key": "modeldeploy.io/real-node", "value": "true", "effect": "NoSchedule"}
PROCESS_NODE_TAINT = {"key": "modeldeploy.io/process-node", "value": "true", "effect": "NoSchedule"}
REAL_NODE_TOLERATION = {**REAL_NODE_TAINT, "operator": "Equal"}
PROCESS_NODE_TOLERATION = {**PROCESS_NODE_TAINT, "operator": "Equal"}


def _real_node_default() -> bool:
    # The real node (kubelet, containerd, runc) receives ordinary pods unless
    # MODELDEPLOY_REAL_NODE_DEFAULT=0 asks for the process node (kept for the harness's own tests).
    return os.environ.get(REAL_NODE_DEFAULT_ENV, "1") != "0"


def registry_storage_dir() -> Path:
    """The local registry's blobs: kept between cluster restarts, so pushed images survive `down`."""
    return cache_dir() / "registry"


def containerd_root_dir() -> Path:
    """The real node's containerd content store and snapshots, kept between cluster restarts: a
    restarted cluster starts pods without pulling again (see docs/local-cluster.md for the figures)."""
    return cache_dir() / "containerd"


@dataclass(frozen=True)
class Layout:
    """Fixed addresses of the local cluster.

    Everything a pod or a simulated pod could be reached at lies in 10.244.0.0/16 (on-link on the
    harness's own bridge) or the service range (routed onto that bridge, where only kube-proxy's
    rules give a ClusterIP a destination), so no request to a cluster address ever leaves the machine.
    """

    state_dir: Path
    bridge: str = "mdc-br0"
    pod_network: str = "10.244.0.0/16"
    host_ip: str = "10.244.0.1"  # on the bridge: the API server binds here, pods route through it
    node_ip: str = "10.244.0.2"  # also on the bridge: the nodes' InternalIP
    process_pod_cidr: str = "10.244.1.0/24"  # pod IPs handed out by the process node
    kwok_pod_cidr: str = "10.244.128.0/17"  # pod IPs kwok invents for simulated pods
    service_cidr: str = "10.96.0.0/16"
    apiserver_port: int = 6443
    process_node_name: str = "process-node"
    kwok_node_count: int = 2
    # The real node: kubelet, containerd and runc on this machine, pods in 10.244.2.0/24 on the same
    # bridge (one L2 for the host, process-node pods and real pods), kube-proxy, CoreDNS.
    real_node_name: str = "real-node"
    real_node_ip: str = "10.244.0.3"  # the kubelet serves logs/exec/port-forward here (port 10250)
    real_pod_cidr: str = "10.244.2.0/24"
    registry_port: int = 5000  # the local image registry, on host_ip (plain HTTP, bridge only)
    dns_service_ip: str = "10.96.0.10"
    cluster_domain: str = "cluster.local"
    # The one switch between the two nodes that really run pods. Off: the real node carries the taint
    # REAL_NODE_TAINT and ordinary pods land on the process node. On (MODELDEPLOY_REAL_NODE_DEFAULT=1):
    # the process node carries PROCESS_NODE_TAINT instead and ordinary pods land on the real node.
    real_node_default: bool = field(default_factory=_real_node_default)

    @property
    def registry(self) -> str:
        """`host:port` of the local registry, as written in image references."""
        return f"{self.host_ip}:{self.registry_port}"

    @property
    def real_node_taints(self) -> list[dict[str, str]]:
        return [] if self.real_node_default else [REAL_NODE_TAINT]

    @property
    def process_node_taints(self) -> list[dict[str, str]]:
        return [PROCESS_NODE_TAINT] if self.real_node_default else []

    @property
    def real_node_dir(self) -> Path:
        """The real node's per-run state: containerd state and socket, kubelet root, CNI, configs."""
        return self.state_dir / "real-node"

    @property
    def apiserver_url(self) -> str:
        return f"https://{self.host_ip}:{self.apiserver_port}"

    @property
    def admin_kubeconfig(self) -> Path:
        return self.state_dir / "admin.kubeconfig"

    @property
    def pki_dir(self) -> Path:
        return self.state_dir / "pki"

    @property
    def logs_dir(self) -> Path:
        return self.state_dir / "logs"

    @property
    def pods_dir(self) -> Path:
        return self.state_dir / "pods"

    @property
    def processes_file(self) -> Path:
        return self.state_dir / "processes.json"

    @property
    def images_file(self) -> Path:
        return self.state_dir / "images.json"


def default_layout() -> Layout:
    state = os.environ.get("MODELDEPLOY_CLUSTER_DIR", "/tmp/modeldeploy-cluster")
    return Layout(state_dir=Path(state))
