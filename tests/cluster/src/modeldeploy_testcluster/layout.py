"""Where the local cluster lives: its state folder, network ranges, addresses and ports.

One cluster per machine at a time: the network namespace and the ranges are fixed, so the state
folder is the one handle that `up`, `down` and the pytest fixture share.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Layout:
    """Fixed addresses of the local cluster.

    Everything a pod or a simulated pod could be reached at lies in 10.244.0.0/16 (on-link on the
    harness's own bridge) or the service range (unreachable on the host: there is no kube-proxy), so
    no request to a cluster address ever leaves the machine.
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
