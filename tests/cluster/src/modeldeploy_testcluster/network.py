"""The pod network: a bridge on the host and one network namespace per process-backed pod.

Kubernetes refuses loopback addresses in EndpointSlices, so pods need ordinary addresses. Each pod on
the process node gets a network namespace of its own (so two pods may both listen on 0.0.0.0:8080, as
in a real cluster), joined by a veth pair to the bridge `mdc-br0`, which holds the host side's
10.244.0.1: pods reach the API server there, and the host reaches every pod over the bridge.

Nothing addressed to the cluster's ranges can leave the machine: 10.244.0.0/16 is on-link on the bridge
(kwok's invented pod IPs simply never answer), and the service range is unreachable on the host (there
is no kube-proxy: a ClusterIP is refused at once).
"""

from __future__ import annotations

import hashlib
import ipaddress
import subprocess

from modeldeploy_testcluster.layout import Layout

POD_NETNS_PREFIX = "mdpod-"


class NetworkError(RuntimeError):
    pass


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise NetworkError(f"ip {' '.join(args)}: {result.stderr.strip()}")
    return result


def _netns_list() -> list[str]:
    # `ip netns list` prints "name (id: N)" for namespaces that have an id.
    return [line.split()[0] for line in _ip("netns", "list").stdout.splitlines() if line.strip()]


def _link_exists(name: str) -> bool:
    return _ip("link", "show", name, check=False).returncode == 0


def exists(layout: Layout) -> bool:
    return _link_exists(layout.bridge)


def create(layout: Layout) -> None:
    """Create the bridge, its addresses and the service-range route (idempotent)."""
    if exists(layout):
        return
    prefix = ipaddress.ip_network(layout.pod_network).prefixlen
    try:
        _ip("link", "add", layout.bridge, "type", "bridge")
        _ip("addr", "add", f"{layout.host_ip}/{prefix}", "dev", layout.bridge)
        _ip("addr", "add", f"{layout.node_ip}/32", "dev", layout.bridge)
        _ip("link", "set", layout.bridge, "up")
        _ip("route", "replace", "unreachable", layout.service_cidr)
    except NetworkError:
        delete(layout)
        raise


def delete(layout: Layout) -> None:
    """Remove every pod namespace, the bridge and the service-range route."""
    for name in _netns_list():
        if name.startswith(POD_NETNS_PREFIX):
            _ip("netns", "del", name, check=False)
    _ip("route", "del", "unreachable", layout.service_cidr, check=False)
    if _link_exists(layout.bridge):
        _ip("link", "del", layout.bridge, check=False)


def pod_netns(ip: str) -> str:
    return POD_NETNS_PREFIX + ip.replace(".", "-")


def create_pod_network(layout: Layout, ip: str) -> str:
    """A network namespace holding `ip` on its eth0, attached to the bridge; returns its name."""
    ns = pod_netns(ip)
    host_end = "mdv" + hashlib.sha1(ip.encode()).hexdigest()[:10]  # interface names stop at 15 chars
    prefix = ipaddress.ip_network(layout.pod_network).prefixlen
    delete_pod_network(ip)  # a leftover of a killed agent would make `add` fail
    _ip("netns", "add", ns)
    try:
        _ip("link", "add", host_end, "type", "veth", "peer", "name", "eth0", "netns", ns)
        _ip("link", "set", host_end, "master", layout.bridge, "up")
        _ip("-n", ns, "addr", "add", f"{ip}/{prefix}", "dev", "eth0")
        _ip("-n", ns, "link", "set", "eth0", "up")
        _ip("-n", ns, "link", "set", "lo", "up")
        _ip("-n", ns, "route", "add", "default", "via", layout.host_ip)
    except NetworkError:
        delete_pod_network(ip)
        raise
    return ns


def delete_pod_network(ip: str) -> None:
    """Remove a pod's namespace; its veth pair goes with it."""
    ns = pod_netns(ip)
    if ns in _netns_list():
        _ip("netns", "del", ns, check=False)
