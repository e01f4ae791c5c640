"""A private control plane: etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok on
127.0.0.1, in a folder of the caller's, for as long as a `with` block.

It shares nothing with the machine's local cluster (layout.py): not its lock
(/tmp/modeldeploy-cluster.lock), not its state folder (/tmp/modeldeploy-cluster), not its addresses
(that one's API server binds 10.244.0.1:6443 on the harness's bridge; every port here is a free
127.0.0.1 port the kernel hands out, from the ephemeral range, never a fixed one), and it needs no
root: no real node, no pod network. Pods go to kwok nodes (`kwok_nodes`), whose pod addresses
(10.250.0.0/16) lead nowhere: the operator does dial them (it asks model servers what they loaded),
so a blackhole route keeps those requests on the machine (`_blackhole_kwok_pods`). So several can
run beside the shared cluster and beside each other: the scale bench (bench/operator/scale.py
--private-control-plane) and the tests that run the operator under an identity of their own
(tests/integration/operator/test_operator_rbac_private.py).
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import signal
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes import client

from modeldeploy_testcluster import nodes
from modeldeploy_testcluster.controlplane import controller_manager_args, free_port, scheduler_args
from modeldeploy_testcluster.kubeconfig import write_kubeconfig
from modeldeploy_testcluster.layout import binaries_dir
from modeldeploy_testcluster.pki import ClusterPKI

KWOK_POD_CIDR = "10.250.0.0/16"


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def wait_until(what: str, probe: Callable[[], Any], timeout: float, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


@dataclass
class Process:
    """A child process with its output in a log file; KUBERNETES_* and MODELDEPLOY_* of this
    environment are not passed on (only `env`'s)."""

    argv: list[str]
    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0

    def start(self) -> None:
        base = {k: v for k, v in os.environ.items() if not k.startswith(("KUBERNETES_", "MODELDEPLOY_"))}
        with self.log_path.open("ab") as out:
            self.proc = subprocess.Popen(
                self.argv, env={**base, **self.env}, stdout=out, stderr=subprocess.STDOUT
            )
        self.started_at = time.time()

    def stop(self, grace: float = 30.0) -> None:
        """SIGTERM, and SIGKILL if it has not exited after `grace` seconds."""
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def cpu_seconds(self) -> float:
        assert self.proc is not None
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / ticks  # utime, stime

    def rss_mib(self) -> float:
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0


@dataclass(frozen=True)
class PrivateLayout:
    """What callers need of a Layout (layout.py), for a private control plane."""

    state_dir: Path
    apiserver_url: str
    kwok_pod_cidr: str = KWOK_POD_CIDR
    kwok_node_count: int = 0
    processes: dict[str, Process] = field(default_factory=dict, compare=False, repr=False)
    """The running components by name ("etcd", "kube-apiserver", ...): `component_stopped` stops one."""

    @property
    def pki_dir(self) -> Path:
        return self.state_dir / "pki"

    @property
    def admin_kubeconfig(self) -> Path:
        return self.state_dir / "admin.kubeconfig"

    @property
    def audit_log(self) -> Path:
        """The API server's audit log (JSON lines), when started with `audit_policy`."""
        return self.state_dir / "audit.log"

    def admin_get(self, path: str) -> str:
        """GET `path` of the API server as the admin (client certificate), e.g. /readyz or /metrics."""
        pki = ClusterPKI(self.pki_dir)
        context = ssl.create_default_context(cafile=str(pki.ca_cert))
        context.load_cert_chain(str(pki.cert("admin")), str(pki.key("admin")))
        with urllib.request.urlopen(self.apiserver_url + path, context=context, timeout=30) as response:
            return str(response.read().decode())


def _default_service_account(api: client.ApiClient) -> bool:
    try:
        client.CoreV1Api(api).read_namespaced_service_account("default", "default")
    except (client.ApiException, OSError):
        return False
    return True


def _blackhole_kwok_pods() -> None:
    """Route kwok's pod range nowhere. Without it the operator's health asks to those addresses went
    out through the default gateway (seen 2026-12-03: hundreds of requests, answered 404 by something
    off the machine); tests talk only to 127.0.0.1 and the harness's own networks."""
    if ipaddress.ip_network(KWOK_POD_CIDR).overlaps(ipaddress.ip_network("10.244.0.0/16")):
        raise AssertionError("kwok's pod range must not overlap the local cluster's")
    done = subprocess.run(
        ["ip", "route", "replace", "blackhole", KWOK_POD_CIDR], capture_output=True, check=False
    )
    if done.returncode != 0:  # not root: say so, the run goes on (a developer's own machine)
        print(f"warning: no blackhole route for {KWOK_POD_CIDR}: {done.stderr.decode(errors='replace')}")


@contextlib.contextmanager
def private_control_plane(
    work: Path,
    *,
    admission_plugins: Sequence[str] = ("NodeRestriction",),
    audit_policy: dict[str, Any] | None = None,
    kwok_nodes: int = 0,
) -> Iterator[PrivateLayout]:
    """The control plane, in `work`/control-plane (which must not exist yet), with the harness's
    binaries and the API server flags that matter to an operator: RBAC, service-account tokens, API
    Priority and Fairness (on by default). `admission_plugins`: kube-apiserver's
    --enable-admission-plugins (e.g. OwnerReferencesPermissionEnforcement, on in some distributions).
    `audit_policy`: an audit.k8s.io/v1 Policy; the API server then logs to `layout.audit_log`.
    `kwok_nodes`: kwok nodes made Ready before it is handed over (label type=kwok, kwok's taint)."""
    state = work / "control-plane"
    state.mkdir(parents=True)
    pki = ClusterPKI(state / "pki")
    pki.create(
        serving_ips=["127.0.0.1", "10.97.0.1"],
        serving_dns=["localhost"],
        clients={"admin": ("modeldeploy-admin", "system:masters")},
        servers={},
    )
    etcd_client, etcd_peer, port = free_port(), free_port(), free_port()
    layout = PrivateLayout(state, f"https://127.0.0.1:{port}", kwok_node_count=kwok_nodes)
    if kwok_nodes:
        _blackhole_kwok_pods()
    kubeconfig = write_kubeconfig(
        layout.admin_kubeconfig,
        layout.apiserver_url,
        pki.ca_cert,
        "admin",
        client_cert=pki.cert("admin"),
        client_key=pki.key("admin"),
    )
    audit: list[str] = []
    if audit_policy is not None:
        import yaml

        policy = state / "audit-policy.yaml"
        policy.write_text(yaml.safe_dump(audit_policy))
        audit = [
            f"--audit-policy-file={policy}",
            f"--audit-log-path={layout.audit_log}",
            "--audit-log-format=json",
            "--audit-log-mode=blocking",  # an event is on disk before its response is sent
        ]

    def binary(name: str) -> str:
        return str(binaries_dir() / name)

    processes: list[Process] = []

    def start(name: str, argv: list[str]) -> None:
        processes.append(Process(argv, {}, state / f"{name}.log"))
        processes[-1].start()
        layout.processes[name] = processes[-1]

    try:
        start(
            "etcd",
            [
                binary("etcd"),
                "--name=private",
                f"--data-dir={state / 'etcd'}",
                f"--listen-client-urls=http://127.0.0.1:{etcd_client}",
                f"--advertise-client-urls=http://127.0.0.1:{etcd_client}",
                f"--listen-peer-urls=http://127.0.0.1:{etcd_peer}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{etcd_peer}",
                f"--initial-cluster=private=http://127.0.0.1:{etcd_peer}",
                "--unsafe-no-fsync",
                "--log-level=warn",
            ],
        )
        start(
            "kube-apiserver",
            [
                binary("kube-apiserver"),
                f"--etcd-servers=http://127.0.0.1:{etcd_client}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={port}",
                f"--cert-dir={state / 'apiserver-certs'}",
                f"--tls-cert-file={pki.cert('apiserver')}",
                f"--tls-private-key-file={pki.key('apiserver')}",
                f"--client-ca-file={pki.ca_cert}",
                "--authorization-mode=Node,RBAC",
                f"--enable-admission-plugins={','.join(admission_plugins)}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={pki.sa_pub}",
                f"--service-account-signing-key-file={pki.sa_key}",
                "--service-cluster-ip-range=10.97.0.0/16",
                "--profiling=false",
                "--v=1",
                *audit,
            ],
        )

        def ready() -> bool:
            try:
                return layout.admin_get("/readyz") == "ok"
            except OSError:
                return False

        wait_until("the private kube-apiserver", ready, 120, interval=0.5)
        start(
            "kube-controller-manager",
            controller_manager_args(binary("kube-controller-manager"), kubeconfig, pki),
        )
        start("kube-scheduler", scheduler_args(binary("kube-scheduler"), kubeconfig))
        start(
            "kwok",
            [
                binary("kwok"),
                f"--kubeconfig={kubeconfig}",
                "--manage-all-nodes=false",
                "--manage-nodes-with-label-selector=type=kwok",
                f"--cidr={layout.kwok_pod_cidr}",
                "--node-ip=127.0.0.1",
                # Node leases: without them the node lifecycle controller finds no heartbeat after
                # 50 s and marks every kwok pod NotReady (kwok then sets the node Ready again, not the pods).
                "--node-lease-duration-seconds=40",
            ],
        )
        api = nodes.admin_api(layout)  # type: ignore[arg-type]  # a Layout's admin_kubeconfig is all it reads
        wait_until("the default ServiceAccount", lambda: _default_service_account(api), 120, interval=0.5)
        if kwok_nodes:
            core = client.CoreV1Api(api)
            subnets = ipaddress.ip_network(layout.kwok_pod_cidr).subnets(new_prefix=24)
            names = [f"kwok-node-{i}" for i in range(kwok_nodes)]
            for name, subnet in zip(names, subnets, strict=False):
                core.create_node(nodes.kwok_node(name, str(subnet)))

            def all_ready() -> bool:
                found = {n.metadata.name: n for n in core.list_node().items}
                return all(name in found and nodes._node_ready(found[name]) for name in names)

            wait_until("the kwok nodes", all_ready, 120, interval=0.5)
        log(f"private control plane up at {layout.apiserver_url} (logs in {state})")
        yield layout
    finally:
        for process in reversed(processes):
            process.stop()


@contextlib.contextmanager
def component_stopped(layout: PrivateLayout, name: str, grace: float = 10.0) -> Iterator[float]:
    """Stop one component of a private control plane (SIGTERM, SIGKILL after `grace` seconds), yield the
    monotonic time it was gone, and start it again with the same command line on exit, even if the body
    failed (its log goes on in the same file). The API server stopped so refuses connections, as
    `controlplane.component_stopped` does it on the shared cluster (the same 10 s grace); this one
    touches only the private control plane's processes. The caller waits for it to be ready again
    (`layout.admin_get("/readyz")`). A kube-apiserver stops listening at once on SIGTERM but was seen
    (2026-12-04) not to exit within 30 s: the outage begins at the SIGTERM, not at the time yielded."""
    process = layout.processes[name]
    process.stop(grace)
    try:
        yield time.monotonic()
    finally:
        process.start()
