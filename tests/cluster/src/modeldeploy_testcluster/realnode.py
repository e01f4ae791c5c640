"""The real node: containerd and runc, the kubelet, kube-proxy and CoreDNS, on this machine.

What this machine is (design-notes §10): a microVM with a hybrid cgroup v1 layout and no init system,
so the kubelet uses the cgroupfs driver and runc (crun refuses hybrid mode); nothing may lower an
oom_score_adj, so containerd's CRI runs with `restrict_oom_score_adj`.

Everything the node makes on the host is scoped so `teardown()` can find it again, even after a crash:
- containerd: its own socket and state under `<state>/real-node/containerd` (pod network namespaces
  too: `netns_mounts_under_state_dir`, so they never meet `ip netns` in /run/netns); its content store
  and snapshots in the cache folder (`containerd_root_dir()`), so a restarted cluster does not pull
  again;
- the kubelet: root dir, pod logs and volume-plugin dir under `<state>/real-node`; no iptables chains
  (`makeIPTablesUtilChains: false`); the cgroups it and runc make all lie under `kubepods` in each
  hierarchy;
- CNI: the bridge plugin joins pods to the harness's bridge, host-local keeps its leases under the
  state folder;
- kube-proxy (nftables mode): the nft tables `ip kube-proxy` and `ip6 kube-proxy`;
- kube-network-policies (the NetworkPolicy enforcer, a host daemon like kube-proxy): the nft table
  `inet kube-network-policies`, whose postrouting chain hands each new connection to or from a pod
  to the daemon through nfnetlink queue 100; the daemon accepts or drops it by the NetworkPolicies.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml

from modeldeploy_testcluster import registry
from modeldeploy_testcluster.kubeconfig import write_kubeconfig
from modeldeploy_testcluster.layout import (
    REAL_NODE_TOLERATION,
    Layout,
    binaries_dir,
    containerd_root_dir,
)
from modeldeploy_testcluster.pki import ClusterPKI

CONTAINERD_NAMESPACE = "k8s.io"  # the CRI plugin's containerd namespace
CNI_BIN_DIR = Path("/usr/lib/cni")  # Debian's containernetworking-plugins
CGROUP_MOUNTS = Path("/sys/fs/cgroup")
KUBEPODS = "kubepods"
NODE_KIND_LABEL = "modeldeploy.io/node-kind"
# Sysctls the kubelet sets at start (pkg/kubelet/cm: setupKernelTunables); restored by teardown().
KUBELET_SYSCTLS = (
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
)
KUBE_PROXY_NFT_TABLES = (("ip", "kube-proxy"), ("ip6", "kube-proxy"))
NETWORK_POLICY_COMPONENT = "kube-network-policies"
NETWORK_POLICY_USER = "modeldeploy:kube-network-policies"
NETWORK_POLICY_NFT_TABLES = (("inet", "kube-network-policies"),)
# Fixed paths the runtime writes to whatever its configuration says (measured after a run):
SHIM_SOCKETS = Path("/run/containerd/s")  # containerd 1.6: runtime/v2/shim socketRoot
CNI_RESULTS = Path("/var/lib/cni/results")  # libcni's cache of each ADD, for the DEL
DEVICE_PLUGINS = Path("/var/lib/kubelet/device-plugins")  # the kubelet's device manager socket
CNI_NETWORK = "mdc-real-node"


class RealNodeError(RuntimeError):
    pass


# -- paths ------------------------------------------------------------------------------------------
def base(layout: Layout) -> Path:
    return layout.real_node_dir


def containerd_state(layout: Layout) -> Path:
    return base(layout) / "containerd"


def containerd_socket(layout: Layout) -> Path:
    return containerd_state(layout) / "containerd.sock"


def kubelet_root(layout: Layout) -> Path:
    return base(layout) / "kubelet"


def pod_logs_dir(layout: Layout) -> Path:
    return base(layout) / "pod-logs"


def _sysctl_file(layout: Layout) -> Path:
    return base(layout) / "sysctls.json"


def _binary(name: str) -> str:
    path = binaries_dir() / name
    if not path.exists():
        raise RealNodeError(f"{path} is missing: run `make binaries` (tests/cluster/build-binaries.sh)")
    return str(path)


# -- configuration ----------------------------------------------------------------------------------
def containerd_config(layout: Layout, pause_image: str) -> str:
    runc = shutil.which("runc") or "/usr/sbin/runc"
    state = containerd_state(layout)
    cri = '[plugins."io.containerd.grpc.v1.cri"'
    return f"""version = 2
root = "{containerd_root_dir()}"
state = "{state / "state"}"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
                    "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs"]

[grpc]
  address = "{containerd_socket(layout)}"
[ttrpc]
  address = "{containerd_socket(layout)}.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "{state / "opt"}"

{cri}]
  sandbox_image = "{pause_image}"
  # This VM lacks CAP_SYS_RESOURCE: without it every sandbox fails ("can't get final child's PID").
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  {cri}.containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    {cri}.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      {cri}.containerd.runtimes.runc.options]
        BinaryName = "{runc}"
        Root = "{state / "runc"}"
        SystemdCgroup = false
  {cri}.cni]
    bin_dir = "{CNI_BIN_DIR}"
    conf_dir = "{base(layout) / "cni" / "net.d"}"
    max_conf_num = 1
  {cri}.registry]
    config_path = "{base(layout) / "certs.d"}"
"""


def registry_hosts_toml(layout: Layout, address: str | None = None) -> str:
    """Pull from the local registry (or another one on the bridge, `address`) over plain HTTP."""
    address = address or layout.registry
    return f"""server = "http://{address}"

[host."http://{address}"]
  capabilities = ["pull", "resolve"]
"""


def _hosts_dir(layout: Layout, address: str) -> Path:
    return base(layout) / "certs.d" / address


@contextlib.contextmanager
def trusted_registry(layout: Layout, address: str) -> Iterator[None]:
    """The node's containerd pulls from the registry at `address` (on the bridge) over plain HTTP while
    this lasts. containerd reads its hosts folder (`config_path`) at each pull: no restart. Without it
    the `_default` host sends every pull to a closed port."""
    folder = _hosts_dir(layout, address)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "hosts.toml").write_text(registry_hosts_toml(layout, address))
    try:
        yield
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# Every other registry (containerd's `_default` host folder) resolves to a closed local port: an image
# from anywhere else fails at once with "connection refused", is never fetched from the Internet (no
# DNS query either) and is never silently served from the local registry in its place, which would
# hide a chart that forgot `image.registry`.
UNREACHABLE_REGISTRY = "127.0.0.1:1"


def default_hosts_toml() -> str:
    return f"""server = "http://{UNREACHABLE_REGISTRY}"

[host."http://{UNREACHABLE_REGISTRY}"]
  capabilities = ["pull", "resolve"]
"""


def cni_conflist(layout: Layout) -> dict[str, Any]:
    first = next(iter(_hosts(layout.real_pod_cidr)))
    last = list(_hosts(layout.real_pod_cidr))[-1]
    return {
        "cniVersion": "1.0.0",
        "name": CNI_NETWORK,
        "plugins": [
            {
                "type": "bridge",
                "bridge": layout.bridge,
                # Not a gateway: the bridge has its address already, and isGateway would turn on
                # the global ip_forward (the network forwards on the bridge only, see network.py).
                "isGateway": False,
                "ipMasq": False,
                "hairpinMode": True,  # a pod reaching itself through its Service's ClusterIP
                "ipam": {
                    "type": "host-local",
                    "dataDir": str(base(layout) / "cni" / "ipam"),
                    # The whole pod network as the prefix: host, process-node pods and real pods
                    # share one L2; addresses handed out only from the real node's range.
                    "ranges": [
                        [
                            {
                                "subnet": layout.pod_network,
                                "rangeStart": first,
                                "rangeEnd": last,
                                "gateway": layout.host_ip,
                            }
                        ]
                    ],
                    "routes": [{"dst": "0.0.0.0/0", "gw": layout.host_ip}],
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }


def _hosts(cidr: str) -> Iterator[str]:
    import ipaddress

    return (str(ip) for ip in ipaddress.ip_network(cidr).hosts())


def kubelet_config(layout: Layout, pki: ClusterPKI, healthz_port: int) -> dict[str, Any]:
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": layout.real_node_ip,
        "port": 10250,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": healthz_port,
        "tlsCertFile": str(pki.cert("kubelet-serving")),
        "tlsPrivateKeyFile": str(pki.key("kubelet-serving")),
        # Webhook authn/authz: the API server's kubelet client certificate (and nobody anonymous)
        # may read logs, exec and port-forward.
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(pki.ca_cert)},
        },
        "authorization": {"mode": "Webhook"},
        "containerRuntimeEndpoint": f"unix://{containerd_socket(layout)}",
        "cgroupDriver": "cgroupfs",  # no systemd on this machine
        "failCgroupV1": False,  # 1.34 only warns; from 1.35 this must be set for the hybrid layout
        "failSwapOn": False,
        "clusterDNS": [layout.dns_service_ip],
        "clusterDomain": layout.cluster_domain,
        "resolvConf": "",  # no pod ever gets a nameserver outside the cluster
        "makeIPTablesUtilChains": False,  # nothing of the kubelet's in iptables to leave behind
        "registerWithTaints": layout.real_node_taints,
        "podLogsDir": str(pod_logs_dir(layout)),
        "volumePluginDir": str(base(layout) / "volume-plugins"),
        "serializeImagePulls": False,
        # Evict only when the machine is nearly out: other work shares it and must not evict pods.
        "evictionHard": {
            "memory.available": "100Mi",
            "nodefs.available": "1%",
            "imagefs.available": "1%",
            "nodefs.inodesFree": "1%",
        },
        "imageGCHighThresholdPercent": 99,
        "imageGCLowThresholdPercent": 98,
        "maxPods": 110,
        "shutdownGracePeriod": "0s",
    }


def kube_proxy_config(
    layout: Layout, kubeconfig: Path, healthz_port: int, metrics_port: int
) -> dict[str, Any]:
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "mode": "nftables",  # no IPVS on this kernel; nftables is the current recommendation
        "clientConnection": {"kubeconfig": str(kubeconfig)},
        "hostnameOverride": layout.real_node_name,
        "clusterCIDR": layout.pod_network,
        "healthzBindAddress": f"127.0.0.1:{healthz_port}",
        "metricsBindAddress": f"127.0.0.1:{metrics_port}",
        # NodePorts answer on the node's bridge address only, never on the machine's own interfaces.
        "nodePortAddresses": [f"{layout.real_node_ip}/32"],
        # Leave the machine's conntrack limits and timeouts as they are (0 = do not change).
        "conntrack": {
            "maxPerCore": 0,
            "min": 0,
            "tcpEstablishedTimeout": "0s",
            "tcpCloseWaitTimeout": "0s",
        },
    }


# -- start ------------------------------------------------------------------------------------------
Starter = Callable[[str, list[str]], None]


def prepare(layout: Layout, pki: ClusterPKI) -> str:
    """Write the node's configuration; build and push its images. Returns the pause image."""
    folder = base(layout)
    for sub in ("cni/net.d", "cni/ipam", "certs.d", "containerd", "kubelet", "pod-logs", "volume-plugins"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    pause = registry.ensure_image(layout, registry.pause_image())
    (folder / "containerd" / "config.toml").write_text(containerd_config(layout, pause))
    for host, hosts_toml in (
        (layout.registry, registry_hosts_toml(layout)),
        ("_default", default_hosts_toml()),
    ):
        (folder / "certs.d" / host).mkdir(parents=True, exist_ok=True)
        (folder / "certs.d" / host / "hosts.toml").write_text(hosts_toml)
    (folder / "cni" / "net.d" / "10-mdc-real-node.conflist").write_text(
        json.dumps(cni_conflist(layout), indent=1)
    )
    write_kubeconfig(
        folder / "kubelet.kubeconfig",
        layout.apiserver_url,
        pki.ca_cert,
        f"system:node:{layout.real_node_name}",
        client_cert=pki.cert("kubelet"),
        client_key=pki.key("kubelet"),
    )
    write_kubeconfig(
        folder / "kube-proxy.kubeconfig",
        layout.apiserver_url,
        pki.ca_cert,
        "system:kube-proxy",
        client_cert=pki.cert("kube-proxy"),
        client_key=pki.key("kube-proxy"),
    )
    return pause


def containerd_argv(layout: Layout) -> list[str]:
    containerd = shutil.which("containerd")
    if containerd is None:
        raise RealNodeError("containerd is missing: run `make system-deps`")
    return [containerd, f"--config={base(layout) / 'containerd' / 'config.toml'}"]


def containerd_answers(layout: Layout) -> bool:
    if not containerd_socket(layout).exists():
        return False
    try:
        return _ctr("version", layout=layout, check=False).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def start_kubelet_and_proxy(
    layout: Layout, pki: ClusterPKI, start: Starter, free_port: Callable[[], int]
) -> None:
    folder = base(layout)
    _save_sysctls(layout)
    (folder / "kubelet-config.yaml").write_text(yaml.safe_dump(kubelet_config(layout, pki, free_port())))
    labels = f"{NODE_KIND_LABEL}=real"
    start(
        "kubelet",
        [
            _binary("kubelet"),
            f"--config={folder / 'kubelet-config.yaml'}",
            f"--kubeconfig={folder / 'kubelet.kubeconfig'}",
            f"--root-dir={kubelet_root(layout)}",
            f"--hostname-override={layout.real_node_name}",
            f"--node-ip={layout.real_node_ip}",
            f"--node-labels={labels}",
            "--v=1",
        ],
    )
    (folder / "kube-proxy-config.yaml").write_text(
        yaml.safe_dump(kube_proxy_config(layout, folder / "kube-proxy.kubeconfig", free_port(), free_port()))
    )
    start("kube-proxy", [_binary("kube-proxy"), f"--config={folder / 'kube-proxy-config.yaml'}", "--v=1"])


# -- NetworkPolicy enforcement ----------------------------------------------------------------------
def network_policy_rbac() -> list[dict[str, Any]]:
    """What kube-network-policies reads (its informers): pods, namespaces, nodes, NetworkPolicies."""
    name = "modeldeploy:kube-network-policies"
    return [
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": name},
            "rules": [
                {"apiGroups": [""], "resources": ["pods", "namespaces", "nodes"], "verbs": ["list", "watch"]},
                {
                    "apiGroups": ["networking.k8s.io"],
                    "resources": ["networkpolicies"],
                    "verbs": ["list", "watch"],
                },
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
            "subjects": [
                {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": NETWORK_POLICY_USER}
            ],
        },
    ]


def _network_policy_argv(layout: Layout, kubeconfig: Path, metrics_port: int) -> list[str]:
    return [
        _binary(NETWORK_POLICY_COMPONENT),
        f"--kubeconfig={kubeconfig}",
        f"--hostname-override={layout.real_node_name}",
        # Packets pass (nfqueue bypass) while no daemon listens: a crashed enforcer must not cut every
        # pod of the shared cluster off; the tests that need enforcement check that a stranger is refused.
        "--fail-open",
        "--disable-nri",  # containerd 1.6 has no NRI; pod IPs come from the API server
        "--netfilter-bug-1766-fix=false",  # fixed in kernels 6.12+ (this one: 6.18)
        f"--metrics-bind-address=127.0.0.1:{metrics_port}",
        "--v=1",
    ]


def start_network_policies(
    layout: Layout, pki: ClusterPKI, start: Starter, free_port: Callable[[], int]
) -> None:
    """Start kube-network-policies as a host daemon with its own identity (the harness's PKI) bound to
    a read-only ClusterRole. Needs the API server."""
    kubeconfig = base(layout) / f"{NETWORK_POLICY_COMPONENT}.kubeconfig"
    write_kubeconfig(
        kubeconfig,
        layout.apiserver_url,
        pki.ca_cert,
        NETWORK_POLICY_USER,
        client_cert=pki.cert(NETWORK_POLICY_COMPONENT),
        client_key=pki.key(NETWORK_POLICY_COMPONENT),
    )
    result = subprocess.run(
        [_binary("kubectl"), f"--kubeconfig={layout.admin_kubeconfig}", "apply", "--server-side", "-f", "-"],
        input=json.dumps({"apiVersion": "v1", "kind": "List", "items": network_policy_rbac()}),
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise RealNodeError(f"granting kube-network-policies its reads failed: {result.stderr.strip()}")
    start(NETWORK_POLICY_COMPONENT, _network_policy_argv(layout, kubeconfig, free_port()))


def network_policies_enforced() -> bool:
    """The enforcer has written its rules (it does once its informers have synced)."""
    from modeldeploy_testcluster.network import nft_table_exists

    return all(nft_table_exists(family, name) for family, name in NETWORK_POLICY_NFT_TABLES)


# -- cluster DNS ------------------------------------------------------------------------------------
COREFILE = """.:1053 {
    errors
    health :8080
    ready :8181
    kubernetes %(domain)s in-addr.arpa ip6.arpa {
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }
    cache 30
}
"""


def coredns_manifests(layout: Layout, image: str) -> list[dict[str, Any]]:
    """CoreDNS in kube-system at the clusterDNS address. No `forward` plugin: names outside the
    cluster domain get no answer from anywhere, so no query ever leaves this machine."""
    labels = {"k8s-app": "kube-dns"}
    meta = {"name": "coredns", "namespace": "kube-system"}
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": "system:coredns"},
            "rules": [
                {
                    "apiGroups": [""],
                    "resources": ["services", "pods", "namespaces"],
                    "verbs": ["list", "watch"],
                },
                {
                    "apiGroups": ["discovery.k8s.io"],
                    "resources": ["endpointslices"],
                    "verbs": ["list", "watch"],
                },
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "system:coredns"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "system:coredns",
            },
            "subjects": [{"kind": "ServiceAccount", "name": "coredns", "namespace": "kube-system"}],
        },
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": meta,
            "data": {"Corefile": COREFILE % {"domain": layout.cluster_domain}},
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {**meta, "labels": labels},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "serviceAccountName": "coredns",
                        "priorityClassName": "system-cluster-critical",
                        "dnsPolicy": "Default",
                        "nodeSelector": {"kubernetes.io/hostname": layout.real_node_name},
                        "tolerations": [REAL_NODE_TOLERATION],
                        "securityContext": {"runAsNonRoot": True, "runAsUser": 65532, "runAsGroup": 65532},
                        "containers": [
                            {
                                "name": "coredns",
                                "image": image,
                                "args": ["-conf", "/etc/coredns/Corefile"],
                                "ports": [
                                    {"containerPort": 1053, "name": "dns", "protocol": "UDP"},
                                    {"containerPort": 1053, "name": "dns-tcp", "protocol": "TCP"},
                                ],
                                "resources": {
                                    "requests": {"cpu": "50m", "memory": "32Mi"},
                                    "limits": {"memory": "128Mi"},
                                },
                                "securityContext": {
                                    "allowPrivilegeEscalation": False,
                                    "readOnlyRootFilesystem": True,
                                    "capabilities": {"drop": ["ALL"]},
                                },
                                "livenessProbe": {
                                    "httpGet": {"path": "/health", "port": 8080},
                                    "periodSeconds": 10,
                                },
                                "readinessProbe": {
                                    "httpGet": {"path": "/ready", "port": 8181},
                                    "periodSeconds": 1,
                                },
                                "volumeMounts": [
                                    {"name": "config", "mountPath": "/etc/coredns", "readOnly": True}
                                ],
                            }
                        ],
                        "volumes": [{"name": "config", "configMap": {"name": "coredns"}}],
                    },
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "kube-dns", "namespace": "kube-system", "labels": labels},
            "spec": {
                "selector": labels,
                "clusterIP": layout.dns_service_ip,
                "ports": [
                    {"name": "dns", "port": 53, "targetPort": "dns", "protocol": "UDP"},
                    {"name": "dns-tcp", "port": 53, "targetPort": "dns-tcp", "protocol": "TCP"},
                ],
            },
        },
    ]


def install_coredns(layout: Layout, kubectl: str) -> None:
    image = registry.ensure_image(layout, registry.coredns_image())
    documents = {"apiVersion": "v1", "kind": "List", "items": coredns_manifests(layout, image)}
    result = subprocess.run(
        [kubectl, f"--kubeconfig={layout.admin_kubeconfig}", "apply", "--server-side", "-f", "-"],
        input=json.dumps(documents),
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise RealNodeError(f"installing CoreDNS failed: {result.stderr.strip()}")


# -- teardown ---------------------------------------------------------------------------------------
def _ctr(*args: str, layout: Layout, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [
            "ctr",
            f"--address={containerd_socket(layout)}",
            "--connect-timeout=5s",  # a dead containerd leaves its socket file behind
            f"--namespace={CONTAINERD_NAMESPACE}",
            *args,
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    if check and result.returncode != 0:
        raise RealNodeError(f"ctr {' '.join(args)}: {result.stderr.strip()}")
    return result


def remove_all_containers(layout: Layout) -> None:
    """Kill every task and delete every container (and its snapshot) in the CRI namespace.

    Images stay: they are the point of keeping containerd's root in the cache folder."""
    if not containerd_answers(layout):
        return
    with contextlib.suppress(subprocess.TimeoutExpired):
        listed = _ctr("containers", "list", "--quiet", layout=layout, check=False)
        for container in listed.stdout.split():
            _ctr("tasks", "delete", "--force", container, layout=layout, check=False)
            _ctr("containers", "delete", container, layout=layout, check=False)


def _processes() -> Iterator[tuple[int, str, str]]:
    """(pid, cgroup file, command line) of every live process (zombies cannot be killed again: their
    parent or, once it is gone, PID 1 reaps them)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            if stat[stat.rindex(")") + 2] == "Z":
                continue
            cgroups = (entry / "cgroup").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        yield int(entry.name), cgroups, cmdline


def leftover_processes(layout: Layout) -> list[int]:
    """Container processes (in a kubepods cgroup) and shims of this node's containerd."""
    socket = str(containerd_socket(layout))
    found = []
    for pid, cgroups, cmdline in _processes():
        in_pods = any(line.split(":", 2)[-1].startswith(f"/{KUBEPODS}") for line in cgroups.splitlines())
        our_shim = "containerd-shim" in cmdline and socket in cmdline
        if in_pods or our_shim:
            found.append(pid)
    return found


def _kill_leftovers(layout: Layout) -> None:
    deadline = time.monotonic() + 20
    while (pids := leftover_processes(layout)) and time.monotonic() < deadline:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)


def mounts_under(*folders: Path) -> list[str]:
    """Mount points at or below any of `folders` (as the kernel lists them), deepest first."""
    prefixes = [str(f.resolve()) if f.exists() else str(f) for f in folders]
    found = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        point = line.split()[1].replace("\\040", " ")
        if any(point == p or point.startswith(p.rstrip("/") + "/") for p in prefixes):
            found.append(point)
    return sorted(set(found), key=lambda p: p.count("/"), reverse=True)


def _unmount_all(layout: Layout) -> None:
    for _ in range(3):  # a bind mount may stack on another: repeat until nothing is left
        points = mounts_under(base(layout))
        if not points:
            return
        for point in points:
            subprocess.run(["umount", "--lazy", point], capture_output=True, check=False)


def kubepods_cgroups() -> list[Path]:
    """`kubepods` in every cgroup hierarchy mounted on this machine (v1 controllers and unified)."""
    found = []
    for hierarchy in CGROUP_MOUNTS.iterdir() if CGROUP_MOUNTS.exists() else []:
        candidate = hierarchy / KUBEPODS
        if candidate.is_dir():
            found.append(candidate)
    return found


def _remove_cgroups() -> None:
    deadline = time.monotonic() + 20
    while (remaining := kubepods_cgroups()) and time.monotonic() < deadline:
        for top in remaining:
            # Children first: a cgroup directory is removed with rmdir, and only when empty.
            for folder in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
                with contextlib.suppress(OSError):
                    folder.rmdir()
            with contextlib.suppress(OSError):
                top.rmdir()
        if kubepods_cgroups():
            time.sleep(0.1)


def iptables_leftovers() -> list[tuple[str, str, str]]:
    """(binary, table, chain) of chains the kubelet, kube-proxy or the CNI plugins create."""
    found = []
    for binary in ("iptables", "ip6tables"):
        if shutil.which(f"{binary}-save") is None:
            continue
        dump = subprocess.run([f"{binary}-save"], capture_output=True, text=True, check=False).stdout
        table = ""
        for line in dump.splitlines():
            if line.startswith("*"):
                table = line[1:]
            elif line.startswith(":"):
                chain = line[1:].split()[0]
                if chain.startswith(("KUBE-", "CNI-")):
                    found.append((binary, table, chain))
    return found


def _remove_iptables_leftovers() -> None:
    chains = iptables_leftovers()
    for binary, table, _ in chains:  # rules that jump to them first, in every chain of the table
        dump = subprocess.run([f"{binary}-save", "-t", table], capture_output=True, text=True, check=False)
        for line in dump.stdout.splitlines():
            if line.startswith("-A ") and any(f"-j {c}" in line for _, t, c in chains if t == table):
                rule = shlex.split(line[3:])
                subprocess.run([binary, "-t", table, "-D", *rule], capture_output=True, check=False)
    for binary, table, chain in chains:
        subprocess.run([binary, "-t", table, "-F", chain], capture_output=True, check=False)
    for binary, table, chain in chains:
        subprocess.run([binary, "-t", table, "-X", chain], capture_output=True, check=False)


def nft_leftovers() -> list[tuple[str, str]]:
    from modeldeploy_testcluster.network import nft_table_exists

    tables = KUBE_PROXY_NFT_TABLES + NETWORK_POLICY_NFT_TABLES
    return [(family, name) for family, name in tables if nft_table_exists(family, name)]


def _remove_container_log_links(layout: Layout) -> None:
    """The kubelet links every container log into /var/log/containers (a fixed path)."""
    logs = str(pod_logs_dir(layout))
    links = Path("/var/log/containers")
    for link in links.glob("*.log") if links.exists() else []:
        with contextlib.suppress(OSError):
            if link.is_symlink() and os.readlink(link).startswith(logs):
                link.unlink()
    with contextlib.suppress(OSError):  # the kubelet made the folder; remove it when nothing else is in it
        links.rmdir()


def _save_sysctls(layout: Layout) -> None:
    saved = {}
    for name in KUBELET_SYSCTLS:
        with contextlib.suppress(OSError):
            saved[name] = (Path("/proc/sys") / name).read_text().strip()
    _sysctl_file(layout).write_text(json.dumps(saved))


def _restore_sysctls(layout: Layout) -> None:
    try:
        saved: dict[str, str] = json.loads(_sysctl_file(layout).read_text())
    except (OSError, ValueError):
        return
    for name, value in saved.items():
        with contextlib.suppress(OSError):
            (Path("/proc/sys") / name).write_text(value)


def teardown(layout: Layout, stop_component: Callable[[str], None]) -> None:
    """Remove everything the real node made on this machine; safe after a crash at any point of
    `up()`, and safe to call when there is no real node at all."""
    from modeldeploy_testcluster.network import delete_nft_table

    shim_sockets = _shim_sockets(layout)  # before containerd removes the task folders they come from
    stop_component(NETWORK_POLICY_COMPONENT)  # it removes its nft table on SIGTERM (host-daemon.patch)
    stop_component("kubelet")
    stop_component("kube-proxy")
    with contextlib.suppress(RealNodeError, OSError):
        remove_all_containers(layout)
    stop_component("containerd")
    if not base(layout).exists():
        # No real node was started from this state folder (it goes last in `down`, so a crash at
        # any earlier point leaves it): what runs in `kubepods` or sits in `kube-proxy` tables on
        # this machine then is someone else's, and stays.
        return
    _kill_leftovers(layout)
    _unmount_all(layout)
    _remove_cgroups()
    for family, name in KUBE_PROXY_NFT_TABLES + NETWORK_POLICY_NFT_TABLES:  # a killed daemon leaves its own
        delete_nft_table(family, name)
    _remove_iptables_leftovers()
    _remove_container_log_links(layout)
    _remove_fixed_path_leftovers(shim_sockets)
    _restore_sysctls(layout)


def _shim_sockets(layout: Layout) -> list[Path]:
    """The socket of each task's shim: containerd 1.6 puts them in /run/containerd/s whatever its
    state folder, named sha256(<containerd socket>/<namespace>/<task id>); a killed shim leaves it."""
    tasks = containerd_state(layout) / "state" / "io.containerd.runtime.v2.task" / CONTAINERD_NAMESPACE
    ids = [p.name for p in tasks.iterdir()] if tasks.is_dir() else []
    names = (f"{containerd_socket(layout)}/{CONTAINERD_NAMESPACE}/{task}" for task in ids)
    return [SHIM_SOCKETS / hashlib.sha256(name.encode()).hexdigest() for name in names]


def fixed_path_leftovers() -> list[Path]:
    """What the node leaves outside its own folders when a run is cut short: CNI results of this
    node's network (and the loopback results of the same sandboxes), the kubelet's device-plugin
    socket."""
    found: list[Path] = []
    if CNI_RESULTS.is_dir():
        ours = [p for p in CNI_RESULTS.iterdir() if p.name.startswith(f"{CNI_NETWORK}-")]
        sandboxes = {p.name.removeprefix(f"{CNI_NETWORK}-").rsplit("-", 1)[0] for p in ours}
        found += ours + [CNI_RESULTS / f"cni-loopback-{sandbox}-lo" for sandbox in sandboxes]
    found.append(DEVICE_PLUGINS / "kubelet.sock")
    return [p for p in found if p.exists() or p.is_symlink()]


def _remove_fixed_path_leftovers(shim_sockets: list[Path]) -> None:
    for path in [*shim_sockets, *fixed_path_leftovers()]:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    # The folders the runtime made for these, when nothing else is in them (rmdir refuses otherwise).
    for folder in (
        SHIM_SOCKETS,
        SHIM_SOCKETS.parent,
        CNI_RESULTS,
        CNI_RESULTS.parent,
        DEVICE_PLUGINS,
        DEVICE_PLUGINS.parent,
    ):
        with contextlib.suppress(OSError):
            folder.rmdir()
