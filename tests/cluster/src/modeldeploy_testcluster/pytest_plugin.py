"""pytest fixtures for the local cluster: `local_cluster` (session), `kube_api`, `kubeconfig`, `namespace`.

The cluster is started on first use and stopped at the end of the session, unless it was already up
(then it is left running, so a developer's `make cluster-up` survives a test run) or
MODELDEPLOY_KEEP_CLUSTER=1 is set.

Under pytest-xdist the run's workers share the cluster (tests/conftest.py spreads its tests over a few
streams): the first worker to need it brings it up, the controller stops it after the last worker, a
readers-writer lock lets tests marked `cluster_exclusive` run alone, and `restarts_cluster` tests wait
for every other cluster test of the run.
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
from typing import IO

import pytest
from kubernetes import client

from modeldeploy_testcluster import controlplane, nodes
from modeldeploy_testcluster.layout import Layout, default_layout

_LOCK_ENV = "MODELDEPLOY_CLUSTER_LOCK"
RUN_ENV = "MODELDEPLOY_TEST_RUN"
"""Names one pytest run across its xdist workers: the controller sets it before they start (they
inherit its environment), so they can share the cluster with each other and with no one else."""
_XDIST_WORKER = "workerinput"


def _lock_path() -> Path:
    return Path(os.environ.get(_LOCK_ENV, "/tmp/modeldeploy-cluster.lock"))


def beside_lock(suffix: str) -> Path:
    path = _lock_path()
    return path.with_name(f"{path.name}.{suffix}")


@contextlib.contextmanager
def flocked(path: Path, mode: int) -> Iterator[None]:
    with path.open("a") as handle:
        fcntl.flock(handle, mode)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _wait_for_lock(handle: IO[str], mode: int) -> None:
    try:
        fcntl.flock(handle, mode | fcntl.LOCK_NB)
    except BlockingIOError:
        sys.stderr.write(
            f"\nwaiting for another test session to release the local cluster ({_lock_path()})\n"
        )
        waited = time.monotonic()
        fcntl.flock(handle, mode)
        sys.stderr.write(f"got the local cluster after waiting {time.monotonic() - waited:.0f}s\n")


@contextlib.contextmanager
def _cluster_lock(run: str | None = None) -> Iterator[None]:
    """One pytest session at a time uses the machine's single local cluster (its bridge, addresses
    and state directory are fixed): a second session (another checkout, CI beside a developer) waits
    here instead of restarting the cluster under the first one's feet.

    The workers of one xdist run (`run`, from RUN_ENV) share it: each holds the lock shared, and the
    run's name in the `.run` file says whose shared holders they are. A worker of another run, or a
    session without xdist, needs it exclusive and so waits until every holder is gone."""
    with _lock_path().open("a") as handle:
        if run is None:
            _wait_for_lock(handle, fcntl.LOCK_EX)
        else:
            _join_run(handle, run)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _join_run(handle: IO[str], run: str) -> None:
    owner = beside_lock("run")
    while True:
        with flocked(beside_lock("guard"), fcntl.LOCK_EX):  # one worker at a time decides
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                pass
            else:  # free: this run takes it, shared (a waiting session may slip in: then we wait)
                owner.write_text(run)
                fcntl.flock(handle, fcntl.LOCK_SH)
                return
            if holds(owner, run):
                try:
                    fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
                except BlockingIOError:
                    pass
                else:  # another worker of this run holds it
                    return
        _wait_for_lock(handle, fcntl.LOCK_EX)  # someone else's: wait for them, then decide again
        fcntl.flock(handle, fcntl.LOCK_UN)


def is_xdist_worker(config: pytest.Config) -> bool:
    return hasattr(config, _XDIST_WORKER)


def _run_of(config: pytest.Config) -> str | None:
    """This xdist worker's run, or None outside xdist."""
    return os.environ.get(RUN_ENV) if is_xdist_worker(config) else None


def _under_xdist_controller(config: pytest.Config) -> bool:
    workers = getattr(config.option, "numprocesses", None)
    return not is_xdist_worker(config) and workers not in (None, 0)


def pytest_configure(config: pytest.Config) -> None:
    if _under_xdist_controller(config):
        os.environ[RUN_ENV] = uuid.uuid4().hex


@pytest.hookimpl(wrapper=True)
def pytest_runtestloop(session: pytest.Session) -> Iterator[None]:
    """Takes the cluster's lock before the first test when any selected test uses the cluster, and
    holds it to the end: the wait is outside every test, so pytest-timeout never counts it."""
    uses_cluster = any(is_cluster_test(item) for item in session.items)
    if not uses_cluster or session.config.option.collectonly or is_xdist_worker(session.config):
        return (yield)
    with _cluster_lock():
        return (yield)


# --- Several cluster streams in one run -------------------------------------------------------------
# tests/conftest.py spreads the cluster's tests over a few xdist groups ("streams"), which run at once on
# the one cluster: each test its own namespace, one operator for all. A test that changes what the
# others share (the operator, the cluster's components, global counters it asserts on) is marked
# `cluster_exclusive` and runs alone; `restarts_cluster` tests run alone and after every other cluster
# test of the run, in any stream (the operator and the other session fixtures do not survive them);
# among them, the ones that wipe the cluster after the ones that keep its data (restart_level).
_BARRIER_PATIENCE = 900.0
"""Seconds without another cluster test finishing after which a `restarts_cluster` test stops waiting
for the rest (a stream whose worker crashed or stopped at -x never finishes them)."""


def is_cluster_test(item: pytest.Item) -> bool:
    return "local_cluster" in getattr(item, "fixturenames", ())


def restart_level(item: pytest.Item) -> int:
    """0 for a test that leaves the cluster up; 1 for one that restarts a part of it and keeps its data
    (etcd, the API server: the installed operator and CRDs survive); 2 for one that tears it down
    (`restarts_cluster(wipes=True)`: it comes back empty). A test waits for every cluster test of a
    lower level: a CI run (2026-12-03) ran the etcd-restart test after a teardown, and got a 404 on its
    ModelDeployment, the CRD gone with the old cluster's data."""
    marker = item.get_closest_marker("restarts_cluster")
    if marker is None:
        return 0
    return 2 if marker.kwargs.get("wipes", False) else 1


def restarts(item: pytest.Item) -> bool:
    return restart_level(item) > 0


@contextlib.contextmanager
def _test_turn(exclusive: bool) -> Iterator[None]:
    """A readers-writer lock over the cluster's tests: shared for most, exclusive for the marked ones.
    Everyone passes the turnstile first, so a waiting exclusive test holds back new shared ones instead
    of waiting for a gap that two streams might never leave."""
    with beside_lock("tests").open("a") as handle:
        with flocked(beside_lock("turnstile"), fcntl.LOCK_EX):
            fcntl.flock(handle, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def awaited(items: list[pytest.Item], level: int) -> set[str]:
    """The cluster tests a test of restart `level` runs after: those of every lower level."""
    return {i.nodeid for i in items if is_cluster_test(i) and restart_level(i) < level}


def _wait_for_the_other_cluster_tests(session: pytest.Session, done: Path, level: int) -> None:
    expected = awaited(session.items, level)
    seen, progress = -1, time.monotonic()
    while True:
        finished = set(done.read_text().splitlines()) if done.exists() else set()
        if expected <= finished:
            return
        if len(finished) != seen:
            seen, progress = len(finished), time.monotonic()
        elif time.monotonic() - progress > _BARRIER_PATIENCE:
            missing = len(expected - finished)
            sys.stderr.write(f"\n{missing} cluster tests never finished; restarting anyway\n")
            return
        time.sleep(1)


@pytest.hookimpl(wrapper=True, tryfirst=True)  # outside pytest-timeout's timer: waits are not the test's
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    run = _run_of(item.config)
    if run is None or not is_cluster_test(item):
        return (yield)
    done = beside_lock(f"done-{run}")
    if restarts(item):
        _wait_for_the_other_cluster_tests(item.session, done, restart_level(item))
    exclusive = restarts(item) or item.get_closest_marker("cluster_exclusive") is not None
    with _test_turn(exclusive):
        try:
            return (yield)
        finally:
            with done.open("a") as record:  # one short line per append: whole under O_APPEND
                record.write(item.nodeid + "\n")


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Under xdist the controller stops the cluster once every worker is done, if one of them started
    it: a worker cannot know whether the other streams still use it."""
    if not _under_xdist_controller(session.config):
        return
    run = os.environ.get(RUN_ENV)
    beside_lock(f"done-{run}").unlink(missing_ok=True)
    started_by = beside_lock("started-by")
    if os.environ.get("MODELDEPLOY_KEEP_CLUSTER") == "1" or not holds(started_by, run):
        return
    with _cluster_lock():
        if holds(started_by, run):  # no session came between and kept it
            controlplane.down(default_layout())
            started_by.unlink()


def holds(path: Path, run: str | None) -> bool:
    """The marker file `path` names `run` (a missing file names no one)."""
    try:
        return path.read_text() == run
    except OSError:
        return False


@pytest.fixture(scope="session")
def local_cluster(request: pytest.FixtureRequest) -> Iterator[Layout]:
    run = _run_of(request.config)
    if run is None:
        yield from _local_cluster()
        return
    # Under pytest-xdist every worker collects every test; the ones that run cluster tests (the
    # streams of tests/conftest.py) take the lock here, when their first cluster test starts (a wait
    # here counts against that test's timeout), and bring the cluster up once for the run.
    with _cluster_lock(run):
        layout = default_layout()
        with flocked(beside_lock("up"), fcntl.LOCK_EX):
            checked = beside_lock("checked")
            # Asked once per run: a /readyz that times out under load would make `up` restart the
            # cluster under a stream that is using it.
            if not holds(checked, run):
                if not controlplane.is_healthy(layout):
                    controlplane.up(layout)
                    beside_lock("started-by").write_text(run)
                checked.write_text(run)
        yield layout


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
