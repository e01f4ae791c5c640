"""Pure parts of the cluster harness: variable expansion, image names, pod IP handout."""

from __future__ import annotations

from pathlib import Path

import pytest

from modeldeploy_testcluster.images import repository_of
from modeldeploy_testcluster.processnode.agent import PodIPs
from modeldeploy_testcluster.processnode.envvars import expand

from local_processes import wait_for


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("--bind=$(POD_IP)", "--bind=10.0.0.1"),
        ("$(MISSING)", "$(MISSING)"),
        ("$$(POD_IP)", "$(POD_IP)"),
        ("a$(A)b$(A)", "a1b1"),
    ],
)
def test_expand_follows_kubernetes_rules(text: str, expected: str) -> None:
    assert expand(text, {"POD_IP": "10.0.0.1", "A": "1"}) == expected


@pytest.mark.parametrize(
    ("image", "repository"),
    [
        ("ghcr.io/modeldeploy/serving:0.1.0", "ghcr.io/modeldeploy/serving"),
        ("ghcr.io/modeldeploy/serving@sha256:abc", "ghcr.io/modeldeploy/serving"),
        ("localhost:5000/serving", "localhost:5000/serving"),
        ("localhost:5000/serving:1", "localhost:5000/serving"),
    ],
)
def test_repository_ignores_tag_and_digest(image: str, repository: str) -> None:
    assert repository_of(image) == repository


def test_pod_ips_are_unique_and_reused_after_release() -> None:
    ips = PodIPs("10.244.1.0/30")
    first, second = ips.take(), ips.take()
    assert {first, second} == {"10.244.1.1", "10.244.1.2"}
    with pytest.raises(RuntimeError, match="ran out"):
        ips.take()
    ips.give_back(first)
    assert ips.take() == first


def test_network_policy_enforcer_reads_only_and_reads_what_its_informers_watch() -> None:
    from modeldeploy_testcluster import realnode

    role, binding = realnode.network_policy_rbac()
    granted = {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    watched = {("", "pods"), ("", "namespaces"), ("", "nodes"), ("networking.k8s.io", "networkpolicies")}
    assert granted == {(g, r, v) for g, r in watched for v in ("list", "watch")}
    assert binding["subjects"] == [
        {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": realnode.NETWORK_POLICY_USER}
    ]
    assert binding["roleRef"]["name"] == role["metadata"]["name"]


def test_the_enforcers_table_is_part_of_what_down_looks_for() -> None:
    from modeldeploy_testcluster import realnode

    assert ("inet", "kube-network-policies") in realnode.NETWORK_POLICY_NFT_TABLES


def test_a_private_control_planes_component_stops_and_starts_again_as_it_was(tmp_path: Path) -> None:
    """private.component_stopped: the process is gone inside the block (even if the block fails), then
    runs again with the same command line, its log appended to."""
    from modeldeploy_testcluster.private import PrivateLayout, Process, component_stopped

    layout = PrivateLayout(tmp_path, "https://127.0.0.1:1")
    process = Process(["sleep", "302"], {}, tmp_path / "kube-apiserver.log")
    process.start()
    layout.processes["kube-apiserver"] = process
    first = process.proc
    assert first is not None
    seen: list[int | None] = []

    def fail_inside() -> None:
        with component_stopped(layout, "kube-apiserver"):
            seen.append(first.poll())
            raise RuntimeError("the body failed")

    try:
        with pytest.raises(RuntimeError):
            fail_inside()
        assert seen != [None]  # gone inside the block
        assert process.alive()
        assert process.proc is not None
        assert process.proc.pid != first.pid
        assert process.proc.args == ["sleep", "302"]
    finally:
        process.stop()


def test_a_stopped_component_starts_again_as_it_was(tmp_path: Path) -> None:
    """component_stopped: the process is gone inside the block, then runs again with the same command
    line and environment, and processes.json names the new process (so `down` stops it)."""
    from modeldeploy_testcluster import controlplane, daemons
    from modeldeploy_testcluster.layout import Layout

    layout = Layout(state_dir=tmp_path)
    layout.logs_dir.mkdir()
    other = daemons.spawn("other", ["sleep", "300"], layout.logs_dir / "other.log")
    first = daemons.spawn(
        "etcd", ["sleep", "301"], layout.logs_dir / "etcd.log", env={"PATH": "/usr/bin:/bin", "MARK": "x y"}
    )
    daemons.save(layout.processes_file, [other, first])
    # Until the child has exec'd, its /proc cmdline is empty or the parent's, which component_stopped
    # reads as "died on its own" (a loaded CI run, 2026-12-04): wait for its own command line.
    cmdline = Path(f"/proc/{first.pid}/cmdline")
    wait_for("the child's own command line", lambda: b"301" in cmdline.read_bytes(), 30, interval=0.01)
    try:
        with controlplane.component_stopped(layout, "etcd"):
            assert not daemons.is_alive(first)
        records = daemons.load(layout.processes_file)
        assert records[0] == other
        again = records[1]
        assert again.name == "etcd"
        assert again.pid != first.pid
        assert daemons.is_alive(again)
        argv, env = controlplane._command_of(again.pid)
        assert argv == ["sleep", "301"]
        assert env["MARK"] == "x y"
    finally:
        for record in daemons.load(layout.processes_file):
            daemons.stop(record, grace=1)


def test_the_authenticated_registry_is_configured_with_htpasswd_and_a_bcrypt_hash(tmp_path: Path) -> None:
    """distribution's htpasswd access controller reads bcrypt entries only (golang.org/x/crypto/bcrypt
    accepts the `$2b$` prefix libxcrypt writes); the local registry itself stays anonymous."""
    import yaml

    from modeldeploy_testcluster import registry
    from modeldeploy_testcluster.layout import Layout

    layout = Layout(state_dir=tmp_path)
    hashed = registry.bcrypt_hash("secret")
    assert hashed.startswith("$2b$04$")
    assert len(hashed) == 60
    assert registry.bcrypt_hash("secret") != hashed  # salted
    config = yaml.safe_load(registry.config_yaml(layout, "10.244.0.1:5001", tmp_path / "htpasswd"))
    assert config["http"]["addr"] == "10.244.0.1:5001"
    assert config["auth"] == {"htpasswd": {"realm": "modeldeploy-tests", "path": str(tmp_path / "htpasswd")}}
    assert "auth" not in yaml.safe_load(registry.config_yaml(layout))


def test_the_node_trusts_another_plain_http_registry_only_while_asked(tmp_path: Path) -> None:
    from modeldeploy_testcluster import realnode
    from modeldeploy_testcluster.layout import Layout

    layout = Layout(state_dir=tmp_path)
    hosts = tmp_path / "real-node" / "certs.d" / "10.244.0.1:5001" / "hosts.toml"
    with realnode.trusted_registry(layout, "10.244.0.1:5001"):
        assert hosts.read_text().startswith('server = "http://10.244.0.1:5001"')
    assert not hosts.parent.exists()


def test_listens_tells_whose_socket_a_port_is() -> None:
    """wait_http(process=...) trusts an answer only from the process it started: a port taken by another
    test's server between free_port's pick and the bind must not pass for it."""
    import os
    import socket

    from local_processes import free_port, listens

    port = free_port()
    with socket.socket() as server:
        server.bind(("127.0.0.1", port))
        assert not listens(os.getpid(), port)  # bound, not listening yet
        server.listen()
        assert listens(os.getpid(), port)
        assert not listens(os.getppid(), port)  # another process: not its socket
    assert not listens(os.getpid(), port)  # closed


def test_running_with_ready_fails_at_once_when_the_process_exits(tmp_path: Path) -> None:
    """running(..., ready=url) waits for the process it started, not the port: one that exits before
    answering (a taken port: "address already in use") fails the start at once, with its exit code,
    even while another server holds the port (the timeout would raise TimeoutError, not this)."""
    import socket
    import sys

    from local_processes import free_port, running

    port = free_port()
    with socket.socket() as other:  # another test's server on the port, answering nothing useful
        other.bind(("127.0.0.1", port))
        other.listen()
        with pytest.raises(RuntimeError, match="exited with 3"):  # noqa: SIM117
            with running(
                [sys.executable, "-c", "raise SystemExit(3)"],
                tmp_path / "x.log",
                ready=f"http://127.0.0.1:{port}/",
            ):
                pytest.fail("yielded without the process answering")
