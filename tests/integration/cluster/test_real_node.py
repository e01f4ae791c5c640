"""The real node: kubelet, containerd and runc, kube-proxy and CoreDNS, with images pulled from the
local registry. Each pod here tolerates the real node's harness taint and selects it by name."""

from __future__ import annotations

import ipaddress
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from kubernetes import client

from modeldeploy_testcluster import controlplane, daemons, network, nodes, realnode, registry
from modeldeploy_testcluster.layout import REAL_NODE_TOLERATION, Layout, binaries_dir, containerd_root_dir

import cluster_helpers

pytestmark = pytest.mark.cluster
T = TypeVar("T")


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = 90) -> T:
    """The shared wait, with a longer default: a pull and a container start on a loaded machine."""
    return cluster_helpers.wait_for(what, probe, timeout)


def kubectl(
    layout: Layout, *args: str, check: bool = True, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(binaries_dir() / "kubectl"), f"--kubeconfig={layout.admin_kubeconfig}", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} failed: {result.stderr}")
    return result


@pytest.fixture(scope="module")
def busybox(local_cluster: Layout) -> str:
    """The test image, built with buildah and pushed to the local registry (once: tagged by content)."""
    return registry.ensure_image(local_cluster, registry.busybox_image())


def real_pod(
    layout: Layout,
    name: str,
    image: str,
    script: str,
    labels: dict[str, str] | None = None,
    container: dict[str, Any] | None = None,
    pod: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": labels or {"app": name}},
        "spec": {
            "nodeSelector": {"kubernetes.io/hostname": layout.real_node_name},
            "tolerations": [REAL_NODE_TOLERATION],
            "terminationGracePeriodSeconds": 2,
            "containers": [
                {"name": "main", "image": image, "command": ["/bin/sh", "-c", script], **(container or {})}
            ],
            **(pod or {}),
        },
    }


# `exec` keeps the shell out of the way; PID 1 ignores SIGTERM unless it handles it, hence the trap.
SLEEPER = "trap 'exit 0' TERM; sleep 3600 & wait"
WEB = (
    "mkdir -p /tmp/www && echo pong-from-$(hostname) > /tmp/www/index.html && "
    "echo serving on 8080 && exec httpd -f -p 8080 -h /tmp/www"
)
# Without a probe the kubelet calls the pod Ready once the shell starts, before httpd listens: a CI run
# (2026-12-03) got "connection refused" from a Ready pod. Ready now means the port answers.
WEB_READY = {"readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1}}


def ready(core: client.CoreV1Api, namespace: str, name: str) -> Any:
    pod = core.read_namespaced_pod(name, namespace)
    conditions = {c.type: c.status for c in pod.status.conditions or []}
    return pod if conditions.get("Ready") == "True" else None


@pytest.fixture
def core(kube_api: client.ApiClient) -> client.CoreV1Api:
    return client.CoreV1Api(kube_api)


def test_pod_runs_from_the_local_registry_with_an_ip_in_the_real_range(
    core: client.CoreV1Api, namespace: str, local_cluster: Layout, busybox: str
) -> None:
    core.create_namespaced_pod(namespace, real_pod(local_cluster, "web", busybox, WEB, container=WEB_READY))
    scheduled = wait_for(
        "the pod to be scheduled", lambda: core.read_namespaced_pod("web", namespace).spec.node_name
    )
    seen_scheduled = time.monotonic()
    pod = wait_for("the pod to be Ready", lambda: ready(core, namespace, "web"))
    print(f"pod start (scheduled -> Ready seen): {time.monotonic() - seen_scheduled:.2f}s")
    assert scheduled == local_cluster.real_node_name
    assert pod.status.phase == "Running"
    assert ipaddress.ip_address(pod.status.pod_ip) in ipaddress.ip_network(local_cluster.real_pod_cidr)
    assert pod.status.container_statuses[0].image_id.startswith(f"{local_cluster.registry}/")
    assert pod.status.container_statuses[0].container_id.startswith("containerd://")
    # The host reaches the pod directly over the bridge.
    with urllib.request.urlopen(f"http://{pod.status.pod_ip}:8080/", timeout=5) as response:
        assert response.read().decode().strip() == "pong-from-web"


def test_an_image_from_any_other_registry_is_never_fetched(
    core: client.CoreV1Api, namespace: str, local_cluster: Layout
) -> None:
    core.create_namespaced_pod(
        namespace, real_pod(local_cluster, "foreign", "docker.io/library/busybox:1.36", SLEEPER)
    )

    def pull_failed() -> str | None:
        statuses = core.read_namespaced_pod("foreign", namespace).status.container_statuses or []
        waiting = statuses[0].state.waiting if statuses else None
        if waiting is None or waiting.reason not in ("ErrImagePull", "ImagePullBackOff"):
            return None
        return str(waiting.message) if waiting.message else None

    message = wait_for("the pull to fail", pull_failed)
    assert realnode.UNREACHABLE_REGISTRY in message


def test_kubectl_logs_exec_and_port_forward(
    core: client.CoreV1Api, namespace: str, local_cluster: Layout, busybox: str
) -> None:
    core.create_namespaced_pod(namespace, real_pod(local_cluster, "web", busybox, WEB, container=WEB_READY))
    wait_for("the pod to be Ready", lambda: ready(core, namespace, "web"))

    def logged() -> str | None:
        result = kubectl(local_cluster, "-n", namespace, "logs", "web", check=False)
        return result.stdout if "serving on 8080" in result.stdout else None

    wait_for("the container's log line", logged)

    executed = kubectl(local_cluster, "-n", namespace, "exec", "web", "--", "cat", "/tmp/www/index.html")
    assert executed.stdout.strip() == "pong-from-web"
    failed = kubectl(local_cluster, "-n", namespace, "exec", "web", "--", "sh", "-c", "exit 7", check=False)
    assert failed.returncode == 7

    with cluster_helpers.port_forward(
        local_cluster.admin_kubeconfig, namespace, "pod/web", 8080
    ) as local_port:
        response = urllib.request.urlopen(f"http://127.0.0.1:{local_port}/", timeout=10)
        assert response.read().decode().strip() == "pong-from-web"


def test_service_cluster_ip_and_dns_name_work_from_pods_and_the_host(
    core: client.CoreV1Api, namespace: str, local_cluster: Layout, busybox: str
) -> None:
    core.create_namespaced_pod(namespace, real_pod(local_cluster, "web", busybox, WEB, container=WEB_READY))
    core.create_namespaced_pod(namespace, real_pod(local_cluster, "client", busybox, SLEEPER))
    service = core.create_namespaced_service(
        namespace,
        {
            "metadata": {"name": "web"},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]},
        },
    )
    cluster_ip = service.spec.cluster_ip
    assert ipaddress.ip_address(cluster_ip) in ipaddress.ip_network(local_cluster.service_cidr)
    wait_for("both pods Ready", lambda: ready(core, namespace, "web") and ready(core, namespace, "client"))

    def from_client(*command: str) -> str | None:
        result = kubectl(local_cluster, "-n", namespace, "exec", "client", "--", *command, check=False)
        return result.stdout if result.returncode == 0 else None

    def http_from_client(address: str) -> str | None:
        # busybox-static's wget dies of SIGSEGV on this machine (static glibc); nc speaks HTTP/1.0.
        request = f"printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {address} 80"
        answer = from_client("sh", "-c", request)
        return answer if answer and "200 OK" in answer else None

    # kube-proxy programs the Service shortly after its endpoint turns ready: wait for it, not a time.
    body = wait_for("the ClusterIP from another pod", lambda: http_from_client(cluster_ip))
    assert body.strip().endswith("pong-from-web")

    def from_host() -> str | None:
        try:
            with urllib.request.urlopen(f"http://{cluster_ip}/", timeout=3) as response:
                return str(response.read().decode())
        except (OSError, urllib.error.URLError):
            return None

    assert wait_for("the ClusterIP from the host", from_host).strip() == "pong-from-web"

    resolv = from_client("cat", "/etc/resolv.conf") or ""
    nameservers = [line.split()[1] for line in resolv.splitlines() if line.startswith("nameserver")]
    assert nameservers == [local_cluster.dns_service_ip]
    name = f"web.{namespace}.svc.{local_cluster.cluster_domain}"
    answer = wait_for(f"CoreDNS to resolve {name}", lambda: from_client("nslookup", name))
    assert cluster_ip in answer
    # busybox's nslookup tries every search domain and fails if one does; the answer is still there.
    short = kubectl(local_cluster, "-n", namespace, "exec", "client", "--", "nslookup", "web", check=False)
    assert cluster_ip in short.stdout
    # No forwarding: a name outside the cluster domain is not answered by anything.
    assert from_client("nslookup", "example.com") is None


def _container_cgroup(pod: Any, controller: str) -> Path:
    container_id = pod.status.container_statuses[0].container_id.removeprefix("containerd://")
    matches = list((Path("/sys/fs/cgroup") / controller / realnode.KUBEPODS).rglob(container_id))
    assert len(matches) == 1, matches
    return matches[0]


def test_security_context_and_resource_limits_are_enforced(
    core: client.CoreV1Api, namespace: str, local_cluster: Layout, busybox: str
) -> None:
    secured = real_pod(
        local_cluster,
        "secured",
        busybox,
        SLEEPER,
        container={
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": 65534,
                "readOnlyRootFilesystem": True,
                "allowPrivilegeEscalation": False,
                "capabilities": {"drop": ["ALL"]},
            },
            "resources": {"limits": {"memory": "64Mi", "cpu": "200m"}},
        },
    )
    core.create_namespaced_pod(namespace, secured)
    pod = wait_for("the pod to be Ready", lambda: ready(core, namespace, "secured"))

    written = kubectl(local_cluster, "-n", namespace, "exec", "secured", "--", "touch", "/probe", check=False)
    assert written.returncode != 0
    assert "Read-only file system" in written.stderr
    assert (
        kubectl(local_cluster, "-n", namespace, "exec", "secured", "--", "id", "-u").stdout.strip() == "65534"
    )
    assert pod.status.qos_class == "Guaranteed"
    memory = _container_cgroup(pod, "memory")
    assert int((memory / "memory.limit_in_bytes").read_text()) == 64 * 1024 * 1024
    cpu = _container_cgroup(pod, "cpu")
    assert int((cpu / "cpu.cfs_quota_us").read_text()) == 20000  # 200m of a 100 ms period

    # runAsNonRoot is the kubelet's check: a container that would run as root does not start.
    as_root = real_pod(
        local_cluster,
        "as-root",
        busybox,
        SLEEPER,
        container={"securityContext": {"runAsNonRoot": True, "runAsUser": 0}},
    )
    core.create_namespaced_pod(namespace, as_root)

    def refused() -> str | None:
        statuses = core.read_namespaced_pod("as-root", namespace).status.container_statuses or []
        waiting = statuses[0].state.waiting if statuses else None
        return waiting.message if waiting and waiting.reason == "CreateContainerConfigError" else None

    assert "non-root" in wait_for("the kubelet to refuse the root container", refused)


def test_ordinary_pods_land_on_the_default_node(
    core: client.CoreV1Api, namespace: str, local_cluster: Layout, busybox: str
) -> None:
    """The one switch (MODELDEPLOY_REAL_NODE_DEFAULT): a pod with no toleration and no selector is
    scheduled on the real node when it is the default, on the process node otherwise."""
    core.create_namespaced_pod(
        namespace,
        {"metadata": {"name": "plain"}, "spec": {"containers": [{"name": "c", "image": busybox}]}},
    )
    node = wait_for(
        "the pod to be scheduled", lambda: core.read_namespaced_pod("plain", namespace).spec.node_name
    )
    expected = (
        local_cluster.real_node_name if local_cluster.real_node_default else local_cluster.process_node_name
    )
    assert node == expected


@pytest.mark.cluster_exclusive  # asks `up` on the running cluster
def test_cluster_up_is_idempotent_with_the_real_node(local_cluster: Layout) -> None:
    before = daemons.load(local_cluster.processes_file)
    controlplane.up(local_cluster, quiet=True)
    assert daemons.load(local_cluster.processes_file) == before


def leftovers(layout: Layout) -> dict[str, Any]:
    """Everything the real node could leave on this machine, by kind; empty lists when clean."""
    mounts = Path("/proc/self/mounts").read_text().splitlines()
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False).stdout
    route = subprocess.run(
        ["ip", "route", "show", layout.service_cidr], capture_output=True, text=True, check=False
    )
    return {
        "processes": realnode.leftover_processes(layout),
        "mounts": realnode.mounts_under(layout.state_dir, containerd_root_dir())
        + [m for m in mounts if " /run/netns" in m or "kubelet" in m or "containerd" in m],
        "netns": [line for line in netns.splitlines() if line.startswith(network.POD_NETNS_PREFIX)],
        "cgroups": [str(p) for p in realnode.kubepods_cgroups()],
        "nft": realnode.nft_leftovers()
        + ([("inet", network.NFT_TABLE)] if network.nft_table_exists("inet", network.NFT_TABLE) else []),
        "iptables": realnode.iptables_leftovers(),
        "routes": route.stdout.split(),
        "files": [str(p) for p in realnode.fixed_path_leftovers()]
        + [str(p) for p in (realnode.SHIM_SOCKETS.iterdir() if realnode.SHIM_SOCKETS.exists() else [])],
        "container-log-links": [
            str(p)
            for p in Path("/var/log/containers").glob("*.log")
            if p.is_symlink() and str(realnode.pod_logs_dir(layout)) in str(p.readlink())
        ]
        if Path("/var/log/containers").exists()
        else [],
    }


@pytest.mark.restarts_cluster(wipes=True)
def test_cluster_down_leaves_nothing_of_the_real_node_behind_even_after_a_crash(
    core: client.CoreV1Api, local_cluster: Layout, busybox: str
) -> None:
    if not any(
        r.name == realnode.NETWORK_POLICY_COMPONENT and daemons.is_alive(r)
        for r in daemons.load(local_cluster.processes_file)
    ):  # a cluster an older checkout started: check one with every component of this checkout
        controlplane.down(local_cluster)
        controlplane.up(local_cluster, quiet=True)  # waits for the default ServiceAccount
        core = client.CoreV1Api(nodes.admin_api(local_cluster))  # a new cluster: a new CA
        busybox = registry.ensure_image(local_cluster, registry.busybox_image())
    core.create_namespaced_pod("default", real_pod(local_cluster, "down-check", busybox, SLEEPER))
    core.create_namespaced_service(
        "default",
        {
            "metadata": {"name": "down-check"},
            "spec": {"selector": {"app": "down-check"}, "ports": [{"port": 80}]},
        },
    )
    wait_for("the pod to be Ready", lambda: ready(core, "default", "down-check"))
    records = daemons.load(local_cluster.processes_file)
    running = leftovers(local_cluster)
    ports = subprocess.run(
        ["ip", "-o", "link", "show", "master", local_cluster.bridge],
        capture_output=True,
        text=True,
        check=True,
    )
    pod_links = [line.split(":")[1].strip().split("@")[0] for line in ports.stdout.splitlines()]
    assert pod_links
    for kind in ("processes", "mounts", "cgroups", "nft"):  # the check below would see these
        assert running[kind], kind
    assert set(realnode.NETWORK_POLICY_NFT_TABLES) <= set(running["nft"])
    # As if the harness had crashed: containerd, the kubelet and the NetworkPolicy enforcer die at once,
    # their shims, containers, mounts, cgroups and nft table stay, and containerd can no longer be asked
    # to clean up.
    for record in records:
        if record.name in ("containerd", "kubelet", realnode.NETWORK_POLICY_COMPONENT) and daemons.is_alive(
            record
        ):
            os.kill(record.pid, signal.SIGKILL)
    wait_for("containerd to be gone", lambda: not realnode.containerd_answers(local_cluster))

    controlplane.down(local_cluster)

    assert [r.name for r in records if daemons.is_alive(r)] == []
    assert {kind: found for kind, found in leftovers(local_cluster).items() if found} == {}
    # The host ends of the pods' veth pairs go with their namespaces; the kernel frees a namespace
    # asynchronously once its last mount and process are gone.
    wait_for(
        "the pods' veth pairs to be gone",
        lambda: not [name for name in pod_links if network._link_exists(name)],
        timeout=30,
    )
    assert not network.exists(local_cluster)
    assert not local_cluster.state_dir.exists()
    controlplane.up(local_cluster, quiet=True)  # leave the cluster as the session fixture expects it
