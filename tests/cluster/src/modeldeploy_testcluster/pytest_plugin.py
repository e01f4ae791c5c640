"""pytest fixtures for the local cluster: `local_cluster` (session), `kube_api`, `kubeconfig`, `namespace`.

The cluster is started on first use and stopped at the end of the session, unless it was already up
(then it is left running, so a developer's `make cluster-up` survives a test run) or
MODELDEPLOY_KEEP_CLUSTER=1 is set.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client

from modeldeploy_testcluster import controlplane, nodes
from modeldeploy_testcluster.layout import Layout, default_layout


@contextlib.contextmanager
def _cluster_lock() -> Iterator[None]:
    """One pytest session at a time uses the machine's single local cluster (its bridge, addresses
    and state directory are fixed): a second session (another checkout, CI beside a developer) waits
    here instead of restarting the cluster under the first one's feet."""
    path = Path(os.environ.get("MODELDEPLOY_CLUSTER_LOCK", "/tmp/modeldeploy-cluster.lock"))
    with path.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            sys.stderr.write(f"\nwaiting for another test session to release the local cluster ({path})\n")
            waited = time.monotonic()
            fcntl.flock(handle, fcntl.LOCK_EX)
            sys.stderr.write(f"got the local cluster after waiting {time.monotonic() - waited:.0f}s\n")
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@pytest.hookimpl(wrapper=True)
def pytest_runtestloop(session: pytest.Session) -> Iterator[None]:
    """Takes the cluster's lock before the first test when any selected test uses the cluster, and
    holds it to the end: the wait is outside every test, so pytest-timeout never counts it."""
    uses_cluster = any("local_cluster" in getattr(item, "fixturenames", ()) for item in session.items)
    if not uses_cluster or session.config.option.collectonly or hasattr(session.config, _XDIST_WORKER):
        return (yield)
    with _cluster_lock():
        return (yield)


# Under pytest-xdist every worker collects every test, but only the one that runs the cluster tests
# (they share one xdist group, tests/conftest.py) may hold the lock: that worker takes it in the
# fixture, when its first cluster test starts (a wait there counts against that test's timeout).
_XDIST_WORKER = "workerinput"


@pytest.fixture(scope="session")
def local_cluster(request: pytest.FixtureRequest) -> Iterator[Layout]:
    with contextlib.ExitStack() as stack:
        if hasattr(request.config, _XDIST_WORKER):
            stack.enter_context(_cluster_lock())
        yield from _local_cluster()


def _local_cluster() -> Iterator[Layout]:
    layout = default_layout()
    was_up = controlplane.is_healthy(layout)
    controlplane.up(layout)
    yield layout
    if not was_up and os.environ.get("MODELDEPLOY_KEEP_CLUSTER") != "1":
        controlplane.down(layout)


@pytest.fixture(scope="session")
def kubeconfig(local_cluster: Layout) -> Path:
    return local_cluster.admin_kubeconfig


@pytest.fixture
def kube_api(local_cluster: Layout) -> Iterator[client.ApiClient]:
    # Function-scoped: a test that restarts the cluster must not leave others a stale client.
    api = nodes.admin_api(local_cluster)
    yield api
    api.close()


@pytest.fixture
def namespace(kube_api: client.ApiClient) -> Iterator[str]:
    """A fresh namespace per test, deleted afterwards (without waiting for it to go)."""
    name = f"t-{uuid.uuid4().hex[:8]}"
    core = client.CoreV1Api(kube_api)
    core.create_namespace({"metadata": {"name": name, "labels": {"modeldeploy.io/test": "true"}}})
    yield name
    try:
        core.delete_namespace(name)
    except client.ApiException as error:
        if error.status != 404:
            raise
