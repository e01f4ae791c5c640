"""The pod network: a network namespace of the harness's own, joined to the host by a veth pair.

Kubernetes refuses loopback addresses in EndpointSlices, so pods need ordinary addresses. They live
only inside this namespace; the host reaches them over the veth, and pods reach the API server on the
veth's host-side address. The service range is blackholed inside the namespace: with no kube-proxy, a
request to a ClusterIP fails at once instead of leaving the machine.
"""

from __future__ import annotations

import ipaddress
import subprocess

from modeldeploy_testcluster.layout import Layout


class NetworkError(RuntimeError):
    pass


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise NetworkError(f"ip {' '.join(args)}: {result.stderr.strip()}")
    return result


def exists(layout: Layout) -> bool:
    return layout.netns in _ip("netns", "list").stdout.split()


def create(layout: Layout) -> None:
    """Create the namespace, veth pair, addresses and routes (idempotent)."""
    if exists(layout):
        return
    prefix = ipaddress.ip_network(layout.pod_network).prefixlen
    ns = layout.netns
    _ip("netns", "add", ns)
    try:
        _ip("link", "add", layout.host_veth, "type", "veth", "peer", "name", layout.pod_veth)
        _ip("link", "set", layout.pod_veth, "netns", ns)
        _ip("addr", "add", f"{layout.host_ip}/{prefix}", "dev", layout.host_veth)
        _ip("link", "set", layout.host_veth, "up")
        _ip("-n", ns, "addr", "add", f"{layout.node_ip}/{prefix}", "dev", layout.pod_veth)
        _ip("-n", ns, "link", "set", layout.pod_veth, "up")
        _ip("-n", ns, "link", "set", "lo", "up")
        _ip("-n", ns, "route", "add", "default", "via", layout.host_ip)
        # ClusterIPs: routed into the namespace from the host, and refused there.
        _ip("route", "replace", layout.service_cidr, "via", layout.node_ip, "dev", layout.host_veth)
        _ip("-n", ns, "route", "add", "unreachable", layout.service_cidr)
    except NetworkError:
        delete(layout)
        raise


def delete(layout: Layout) -> None:
    """Remove the namespace; the veth pair and its routes go with it."""
    _ip("link", "del", layout.host_veth, check=False)
    if exists(layout):
        _ip("netns", "del", layout.netns)


def add_pod_ip(layout: Layout, ip: str) -> None:
    _ip("-n", layout.netns, "addr", "replace", f"{ip}/32", "dev", layout.pod_veth)


def remove_pod_ip(layout: Layout, ip: str) -> None:
    _ip("-n", layout.netns, "addr", "del", f"{ip}/32", "dev", layout.pod_veth, check=False)
