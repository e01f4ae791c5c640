"""The pod network: a bridge on the host and one network namespace per pod.

Kubernetes refuses loopback addresses in EndpointSlices, so pods need ordinary addresses. Each pod on
the process node gets a network namespace of its own (so two pods may both listen on 0.0.0.0:8080, as
in a real cluster), joined by a veth pair to the bridge `mdc-br0`, which holds the host side's
10.244.0.1: pods reach the API server there, and the host reaches every pod over the bridge. The real
node's pods join the same bridge through the CNI bridge plugin (realnode.py).

Nothing addressed to the cluster's ranges can leave the machine:
- 10.244.0.0/16 is on-link on the bridge (kwok's invented pod IPs simply never answer);
- the service range is routed onto the bridge too: kube-proxy's rules (DNAT in prerouting and output)
  turn a ClusterIP into a pod IP on the bridge; an address no Service holds is asked for by ARP on the
  bridge and never answered. (Before kube-proxy the range was `unreachable`; a local socket's connect()
  fails on such a route before any netfilter rule could rewrite the address, so the host could not
  reach ClusterIPs.)
- forwarding is enabled on the bridge only (`net.ipv4.conf.mdc-br0.forwarding`, not the global
  ip_forward: IPv4 decides by the incoming interface), for pod -> ClusterIP -> pod; and the nft table
  `inet modeldeploy_cluster` drops whatever would be forwarded from the bridge to any other interface,
  or sent by the host to a cluster range through any other interface.
"""

from __future__ import annotations

import hashlib
import ipaddress
import subprocess
from pathlib import Path

from modeldeploy_testcluster.layout import Layout

POD_NETNS_PREFIX = "mdpod-"
NFT_TABLE = "modeldeploy_cluster"  # family inet


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
        _ip("addr", "add", f"{layout.real_node_ip}/32", "dev", layout.bridge)
        _ip("link", "set", layout.bridge, "up")
        _ip("route", "replace", layout.service_cidr, "dev", layout.bridge, "src", layout.host_ip)
        _nft(_fence_ruleset(layout))
        Path(f"/proc/sys/net/ipv4/conf/{layout.bridge}/forwarding").write_text("1")
    except (NetworkError, OSError):
        delete(layout)
        raise


def _fence_ruleset(layout: Layout) -> str:
    ranges = f"{{ {layout.pod_network}, {layout.service_cidr} }}"
    return f"""
table inet {NFT_TABLE} {{
  chain forward {{
    type filter hook forward priority filter; policy accept;
    iifname "{layout.bridge}" oifname != "{layout.bridge}" drop
    ip daddr {ranges} oifname != "{layout.bridge}" drop
  }}
  chain output {{
    type filter hook output priority filter; policy accept;
    ip daddr {ranges} oifname != {{ "{layout.bridge}", "lo" }} drop
  }}
}}
"""


def _nft(script: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["nft", "-f", "-"], input=script, capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise NetworkError(f"nft: {result.stderr.strip()}")
    return result


def nft_table_exists(family: str, name: str) -> bool:
    result = subprocess.run(["nft", "list", "table", family, name], capture_output=True, check=False)
    return result.returncode == 0


def delete_nft_table(family: str, name: str) -> None:
    if nft_table_exists(family, name):
        _nft(f"delete table {family} {name}\n", check=False)


def delete(layout: Layout) -> None:
    """Remove every pod namespace, the bridge (its routes and settings go with it) and the fence."""
    for name in _netns_list():
        if name.startswith(POD_NETNS_PREFIX):
            _ip("netns", "del", name, check=False)
    _release_netns_folder()
    # A cluster started before kube-proxy existed left an `unreachable` route; remove either kind.
    _ip("route", "del", layout.service_cidr, check=False)
    if _link_exists(layout.bridge):
        _ip("link", "del", layout.bridge, check=False)
    delete_nft_table("inet", NFT_TABLE)


NETNS_FOLDER = Path("/run/netns")


def _release_netns_folder() -> None:
    """`ip netns add` bind-mounts /run/netns onto itself (to make it shared) the first time it runs.
    Once the last named namespace is gone, undo that: a plain (not lazy) umount fails while anything
    is still mounted inside, so somebody else's namespaces are never touched; `ip netns add` redoes
    the mount whenever it is needed again."""
    try:
        empty = not any(NETNS_FOLDER.iterdir())
    except OSError:
        return
    mounted = any(
        line.split()[1] == str(NETNS_FOLDER) for line in Path("/proc/self/mounts").read_text().splitlines()
    )
    if empty and mounted:
        subprocess.run(["umount", str(NETNS_FOLDER)], capture_output=True, check=False)


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
