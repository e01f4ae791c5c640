"""Bring the local control plane up and down.

`up()` is idempotent: a healthy cluster is left as it is, a broken one is torn down and started anew.
Order: pod network, PKI, the image registry, etcd, kube-apiserver (Node and RBAC authorization),
controller-manager, scheduler, kwok with its simulated nodes, the process-backed node agent, and the
real node (containerd, kubelet, kube-proxy) with CoreDNS.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from modeldeploy_testcluster import daemons, network, realnode, registry
from modeldeploy_testcluster.images import default_image_map
from modeldeploy_testcluster.kubeconfig import write_kubeconfig
from modeldeploy_testcluster.layout import (
    Layout,
    binaries_dir,
    cache_dir,
    default_layout,
    gateway_api_crds_dir,
)
from modeldeploy_testcluster.pki import ClusterPKI

KUBE_VERSION = "v1.34.4"
_COMPONENTS = (
    "registry",
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kwok",
    "process-node",
    "containerd",
    "kubelet",
    "kube-proxy",
)


class ClusterError(RuntimeError):
    pass


LISTEN_PORTS = range(20000, 30000)
"""Where test servers get their ports: below Linux's ephemeral range (32768-60999 here), whose ports
every outgoing connection takes as its source port. A port the kernel handed out by binding to 0 is
in that range, and a client connection took one between this check and the server's bind (a private
operator's health port, "Address already in use", CI run of 2026-12-04). Below 30000: clear of
Kubernetes' NodePort range too."""
_PICK = random.SystemRandom()  # not `random`: pytest-randomly seeds it alike in every xdist worker


def free_port(host: str = "127.0.0.1") -> int:
    """A port in LISTEN_PORTS that nothing listens on now (chosen at random, so parallel workers rarely
    try the same one)."""
    for _ in range(1000):
        port = _PICK.choice(LISTEN_PORTS)
        with socket.socket() as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {LISTEN_PORTS} on {host}")


def controller_manager_args(binary: str, kubeconfig: Path, pki: ClusterPKI, *extra: str) -> list[str]:
    """kube-controller-manager's command line, for this cluster and the private ones (private.py)."""
    return [
        binary,
        f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        "--bind-address=127.0.0.1",
        f"--secure-port={free_port()}",
        *extra,
        f"--service-account-private-key-file={pki.sa_key}",
        f"--root-ca-file={pki.ca_cert}",
        f"--cluster-signing-cert-file={pki.ca_cert}",
        f"--cluster-signing-key-file={pki.ca_key}",
        "--controllers=*",
        "--leader-elect=false",
        "--v=1",
    ]


def scheduler_args(binary: str, kubeconfig: Path) -> list[str]:
    """kube-scheduler's command line, for this cluster and the private ones (private.py)."""
    return [
        binary,
        f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        "--bind-address=127.0.0.1",
        f"--secure-port={free_port()}",
        "--leader-elect=false",
        "--v=1",
    ]


def _binary(name: str) -> str:
    path = binaries_dir() / name
    if not path.exists():
        raise ClusterError(f"{path} is missing: run `make binaries` (tests/cluster/build-binaries.sh)")
    return str(path)


def _mode_file(layout: Layout) -> Path:
    return layout.state_dir / "default-node"


def _mode(layout: Layout) -> str:
    # Which default node, and whose binaries: a session with another cache directory (a cold CI run
    # beside a developer's warm one) restarts the cluster from its own builds instead of reusing it.
    return f"{'real' if layout.real_node_default else 'process'} {cache_dir()}"


def is_healthy(layout: Layout) -> bool:
    """True when every recorded component runs, the API server answers /readyz and the cluster was
    started with the same default node (MODELDEPLOY_REAL_NODE_DEFAULT) as asked for now."""
    records = daemons.load(layout.processes_file)
    names = {r.name for r in records if daemons.is_alive(r)}
    if not set(_COMPONENTS) <= names:
        return False
    try:
        if _mode_file(layout).read_text() != _mode(layout):
            return False
    except OSError:
        return False
    return _readyz(layout)


def _admin_ssl_context(layout: Layout) -> ssl.SSLContext:
    pki = ClusterPKI(layout.pki_dir)
    context = ssl.create_default_context(cafile=str(pki.ca_cert))
    context.load_cert_chain(str(pki.cert("admin")), str(pki.key("admin")))
    return context


def _readyz(layout: Layout) -> bool:
    try:
        with urllib.request.urlopen(
            f"{layout.apiserver_url}/readyz", context=_admin_ssl_context(layout), timeout=3
        ) as response:
            return bool(response.status == 200)
    except (OSError, urllib.error.URLError, ssl.SSLError):
        return False


def _wait(what: str, condition: Callable[[], object], timeout: float, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.25)
    tail = ""
    if log and log.exists():
        tail = "\n" + "\n".join(log.read_text(errors="replace").splitlines()[-25:])
    raise ClusterError(f"timed out after {timeout:.0f}s waiting for {what}{tail}")


def up(layout: Layout | None = None, quiet: bool = False) -> Layout:
    layout = layout or default_layout()
    if is_healthy(layout):
        return layout
    if layout.state_dir.exists() or network.exists(layout):
        down(layout)
    if os.geteuid() != 0:
        raise ClusterError("the local cluster needs root (network namespaces for pod addresses)")
    started = time.monotonic()
    layout.state_dir.mkdir(parents=True)
    layout.logs_dir.mkdir()
    _mode_file(layout).write_text(_mode(layout))
    network.create(layout)
    pki = ClusterPKI(layout.pki_dir)
    pki.create(
        serving_ips=[layout.host_ip, "127.0.0.1", _first_service_ip(layout)],
        serving_dns=[
            "localhost",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
        ],
        clients={
            "admin": ("modeldeploy-admin", "system:masters"),
            "controller-manager": ("system:kube-controller-manager", None),
            "scheduler": ("system:kube-scheduler", None),
            # The real node's identities: the Node authorizer knows a kubelet by this name and
            # group; system:kube-proxy is bound to system:node-proxier by the default RBAC policy.
            "kubelet": (f"system:node:{layout.real_node_name}", "system:nodes"),
            "kube-proxy": ("system:kube-proxy", None),
            # The NetworkPolicy enforcer: a user the harness binds to a read-only ClusterRole.
            realnode.NETWORK_POLICY_COMPONENT: (realnode.NETWORK_POLICY_USER, None),
            # The API server towards kubelets (logs, exec, port-forward).
            "apiserver-kubelet-client": ("kube-apiserver-kubelet-client", "system:masters"),
        },
        servers={
            "kubelet-serving": (
                f"system:node:{layout.real_node_name}",
                [layout.real_node_ip],
                [layout.real_node_name],
            )
        },
    )
    for user, file_name in (
        ("admin", "admin"),
        ("controller-manager", "controller-manager"),
        ("scheduler", "scheduler"),
    ):
        write_kubeconfig(
            layout.state_dir / f"{user}.kubeconfig",
            layout.apiserver_url,
            pki.ca_cert,
            user,
            client_cert=pki.cert(file_name),
            client_key=pki.key(file_name),
        )
    layout.images_file.write_text(json.dumps(default_image_map(), indent=1))

    records: list[daemons.ProcessRecord] = []

    def start(name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        records.append(daemons.spawn(name, argv, layout.logs_dir / f"{name}.log", env=env))
        daemons.save(layout.processes_file, records)

    try:
        start("registry", registry.argv(layout), registry.environment())
        _wait("the image registry", lambda: registry.is_up(layout), 30, layout.logs_dir / "registry.log")
        # containerd needs neither etcd nor the API server: it starts while they do. The kubelet
        # registers, and CoreDNS is applied (hashing its 78 MB binary for the image tag, then
        # kubectl: 9 s under load), while the other nodes start; everything is waited for together.
        # Measured on the loaded 2-core machine (load average 15-19): 29-31 s with the real node
        # started after the others, 26-30 s so; within that machine's noise, but never slower.
        _start_containerd(layout, pki, start)
        _start_control_plane(layout, pki, start)
        _start_kubelet(layout, pki, start)
        with ThreadPoolExecutor(max_workers=1) as pool:
            coredns = pool.submit(realnode.install_coredns, layout, _binary("kubectl"))
            _start_nodes(layout, start)
            coredns.result()
        _wait_for_cluster_dns(layout)
        _wait(
            "NetworkPolicy enforcement (its nft table)",
            realnode.network_policies_enforced,
            60,
            layout.logs_dir / f"{realnode.NETWORK_POLICY_COMPONENT}.log",
        )
    except BaseException:
        down(layout)
        raise
    if not quiet:
        print(f"local cluster up in {time.monotonic() - started:.1f}s", file=sys.stderr)
    return layout


def _first_service_ip(layout: Layout) -> str:
    import ipaddress

    return str(next(ipaddress.ip_network(layout.service_cidr).hosts()))


Starter = Callable[..., None]


def _start_control_plane(layout: Layout, pki: ClusterPKI, start: Starter) -> None:
    state = layout.state_dir
    etcd_client, etcd_peer = free_port(), free_port()
    start(
        "etcd",
        [
            _binary("etcd"),
            "--name=modeldeploy",
            f"--data-dir={state / 'etcd'}",
            f"--listen-client-urls=http://127.0.0.1:{etcd_client}",
            f"--advertise-client-urls=http://127.0.0.1:{etcd_client}",
            f"--listen-peer-urls=http://127.0.0.1:{etcd_peer}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{etcd_peer}",
            f"--initial-cluster=modeldeploy=http://127.0.0.1:{etcd_peer}",
            "--unsafe-no-fsync",
            "--log-level=warn",
        ],
    )
    start(
        "kube-apiserver",
        [
            _binary("kube-apiserver"),
            f"--etcd-servers=http://127.0.0.1:{etcd_client}",
            f"--bind-address={layout.host_ip}",
            f"--advertise-address={layout.host_ip}",
            f"--secure-port={layout.apiserver_port}",
            f"--cert-dir={state / 'apiserver-certs'}",
            f"--tls-cert-file={pki.cert('apiserver')}",
            f"--tls-private-key-file={pki.key('apiserver')}",
            f"--client-ca-file={pki.ca_cert}",
            "--authorization-mode=Node,RBAC",
            "--enable-admission-plugins=NodeRestriction",
            f"--kubelet-client-certificate={pki.cert('apiserver-kubelet-client')}",
            f"--kubelet-client-key={pki.key('apiserver-kubelet-client')}",
            f"--kubelet-certificate-authority={pki.ca_cert}",
            "--kubelet-preferred-address-types=InternalIP",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={pki.sa_pub}",
            f"--service-account-signing-key-file={pki.sa_key}",
            f"--service-cluster-ip-range={layout.service_cidr}",
            "--allow-privileged=true",
            "--profiling=false",
            "--v=1",
        ],
    )
    _wait("kube-apiserver /readyz", lambda: _readyz(layout), 90, layout.logs_dir / "kube-apiserver.log")
    _install_gateway_api_crds(layout)
    start(
        "kube-controller-manager",
        controller_manager_args(
            _binary("kube-controller-manager"),
            state / "controller-manager.kubeconfig",
            pki,
            "--use-service-account-credentials=true",
        ),
    )
    start("kube-scheduler", scheduler_args(_binary("kube-scheduler"), state / "scheduler.kubeconfig"))


def _install_gateway_api_crds(layout: Layout) -> None:
    """Gateway API (standard channel) CRDs, so the Gateway provider can be tested against the real
    API server; the CRDs come from the Gateway API's Go module, not from a download."""
    crds = gateway_api_crds_dir()
    if not crds.exists():
        raise ClusterError(f"{crds} is missing: run `make binaries`")
    result = subprocess.run(
        [
            _binary("kubectl"),
            f"--kubeconfig={layout.admin_kubeconfig}",
            "apply",
            "--server-side",
            "--force-conflicts",
            "-f",
            str(crds),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise ClusterError(f"installing the Gateway API CRDs failed: {result.stderr.strip()}")


def _start_nodes(layout: Layout, start: Starter) -> None:
    from modeldeploy_testcluster import nodes

    client = nodes.admin_api(layout)
    nodes.create_kwok_nodes(client, layout)
    start(
        "kwok",
        [
            _binary("kwok"),
            f"--kubeconfig={layout.admin_kubeconfig}",
            "--manage-all-nodes=false",
            "--manage-nodes-with-label-selector=type=kwok",
            f"--cidr={layout.kwok_pod_cidr}",
            f"--node-ip={layout.node_ip}",
            # Node leases: without them the node lifecycle controller sees no heartbeat after its
            # 50 s grace period and marks every kwok pod NotReady (kwok sets the node Ready again,
            # not the pods): a test whose simulated pods live longer than a minute would see them go.
            "--node-lease-duration-seconds=40",
        ],
    )
    start(
        "process-node",
        [
            sys.executable,
            "-m",
            "modeldeploy_testcluster.processnode",
            f"--state-dir={layout.state_dir}",
        ],
    )
    _wait(
        "all nodes Ready",
        lambda: nodes.all_ready(client, layout),
        120,
        layout.logs_dir / "process-node.log",
    )
    _wait("the default ServiceAccount", lambda: nodes.default_service_account_exists(client), 60)


def _wait_for_cluster_dns(layout: Layout) -> None:
    from modeldeploy_testcluster import nodes

    client = nodes.admin_api(layout)
    _wait("CoreDNS ready", lambda: nodes.coredns_ready(client), 120, layout.logs_dir / "kubelet.log")


def _start_containerd(layout: Layout, pki: ClusterPKI, start: Starter) -> None:
    realnode.prepare(layout, pki)
    start("containerd", realnode.containerd_argv(layout))


def _start_kubelet(layout: Layout, pki: ClusterPKI, start: Starter) -> None:
    _wait(
        "containerd",
        lambda: realnode.containerd_answers(layout),
        60,
        layout.logs_dir / "containerd.log",
    )
    realnode.remove_all_containers(layout)  # a crashed run may have left some in the cached metadata
    realnode.start_kubelet_and_proxy(layout, pki, start, free_port)
    realnode.start_network_policies(layout, pki, start, free_port)


@contextlib.contextmanager
def network_policy_enforcement(layout: Layout) -> Iterator[None]:
    """Yields with kube-network-policies enforcing. A cluster that `up` started runs it already; one
    started by an older checkout (a developer's `make cluster-up` kept across a pull) gets it for the
    duration, recorded for `down`, and is left as it was found afterwards."""
    records = daemons.load(layout.processes_file)
    if any(r.name == realnode.NETWORK_POLICY_COMPONENT and daemons.is_alive(r) for r in records):
        _wait("NetworkPolicy enforcement (its nft table)", realnode.network_policies_enforced, 60)
        yield
        return
    pki = ClusterPKI(layout.pki_dir)
    if not pki.cert(realnode.NETWORK_POLICY_COMPONENT).exists():
        pki.issue_client(realnode.NETWORK_POLICY_COMPONENT, realnode.NETWORK_POLICY_USER)
    added: list[daemons.ProcessRecord] = []

    def start(name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        added.append(daemons.spawn(name, argv, layout.logs_dir / f"{name}.log", env=env))
        daemons.save(layout.processes_file, records + added)

    try:
        realnode.start_network_policies(layout, pki, start, free_port)
        _wait(
            "NetworkPolicy enforcement (its nft table)",
            realnode.network_policies_enforced,
            60,
            layout.logs_dir / f"{realnode.NETWORK_POLICY_COMPONENT}.log",
        )
        yield
    finally:
        for record in added:
            daemons.stop(record)
        for family, name in realnode.NETWORK_POLICY_NFT_TABLES:
            network.delete_nft_table(family, name)
        daemons.save(
            layout.processes_file, [r for r in daemons.load(layout.processes_file) if r not in added]
        )


def _command_of(pid: int) -> tuple[list[str], dict[str, str]]:
    """A running process's command line and environment, to start it again exactly as it was."""
    argv = [a.decode() for a in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if a]
    env = {}
    for entry in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
        key, sep, value = entry.decode(errors="surrogateescape").partition("=")
        if sep:
            env[key] = value
    return argv, env


@contextlib.contextmanager
def component_stopped(layout: Layout, name: str, grace: float = 10.0) -> Iterator[float]:
    """Stop one running component of the cluster (SIGTERM to its group, SIGKILL after `grace`, as
    `down` does), yield the monotonic time at which it was gone, and start it again on exit, with the
    same command line and environment, even if the body failed. The fault tests use it to take the
    API server or etcd away under a running cluster; the record in processes.json follows, so
    `is_healthy` and `down` keep working."""
    records = daemons.load(layout.processes_file)
    record = next((r for r in records if r.name == name and daemons.is_alive(r)), None)
    if record is None:
        raise ClusterError(f"{name} is not running")
    argv, env = _command_of(record.pid)
    if not argv:  # /proc/<pid>/cmdline is empty once the process is exiting: it died on its own
        raise ClusterError(f"{name} (pid {record.pid}) exited before it could be stopped")
    daemons.stop(record, grace=grace)
    try:
        yield time.monotonic()
    finally:
        started = daemons.spawn(name, argv, layout.logs_dir / f"{name}.log", env=env)
        daemons.save(
            layout.processes_file,
            [started if r == record else r for r in daemons.load(layout.processes_file)],
        )


def wait_ready(layout: Layout, timeout: float = 90) -> None:
    """Until the API server answers /readyz (which also checks its etcd)."""
    _wait("kube-apiserver /readyz", lambda: _readyz(layout), timeout, layout.logs_dir / "kube-apiserver.log")


def down(layout: Layout | None = None) -> None:
    """Stop every process this harness started (newest first) and remove what the real node made
    (containers, mounts, cgroups, nft tables), the network and the state."""
    layout = layout or default_layout()
    records = daemons.load(layout.processes_file)

    def stop_component(name: str) -> None:
        for record in records:
            if record.name == name:
                daemons.stop(record)

    realnode.teardown(layout, stop_component)
    for record in reversed(records):
        daemons.stop(record)
    # Pod processes the agent may have left behind if it was killed hard.
    for record_file in layout.pods_dir.glob("*/processes.json") if layout.pods_dir.exists() else []:
        for record in daemons.load(record_file):
            daemons.stop(record, grace=2)
    network.delete(layout)
    shutil.rmtree(layout.state_dir, ignore_errors=True)
