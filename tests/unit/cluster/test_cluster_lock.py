"""The local cluster's lock (modeldeploy_testcluster.pytest_plugin): the xdist workers of one run share
it, a session of another run waits for all of them, and the per-test readers-writer lock lets an
exclusive test run alone. Real processes and real flocks, on lock files in tmp_path."""

from __future__ import annotations

import fcntl
import multiprocessing
import os
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager as ContextManager
from pathlib import Path

import pytest

from modeldeploy_testcluster import pytest_plugin

WAIT = 30.0  # generous: the processes start on a loaded 2-core machine


def _hold(lock: str, enter: Callable[[], ContextManager[None]], held: Path, release: Path) -> None:
    """In a child process: hold what `enter` takes until told to release (or WAIT passes)."""
    os.environ["MODELDEPLOY_CLUSTER_LOCK"] = lock
    with enter():
        held.touch()
        deadline = time.monotonic() + WAIT
        while not release.exists() and time.monotonic() < deadline:
            time.sleep(0.02)


def _cluster(run: str | None) -> Callable[[], ContextManager[None]]:
    return lambda: pytest_plugin._cluster_lock(run)


def _turn(exclusive: bool) -> Callable[[], ContextManager[None]]:
    return lambda: pytest_plugin._test_turn(exclusive)


def _is_held(path: Path) -> bool:
    with path.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
        return False


def _until(condition: Callable[[], bool]) -> bool:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return False


class Holders:
    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.lock = str(tmp_path / "cluster.lock")
        self.processes: list[multiprocessing.process.BaseProcess] = []

    def start(self, name: str, enter: Callable[[], ContextManager[None]]) -> tuple[Path, Path]:
        held, release = self.tmp_path / f"{name}.held", self.tmp_path / f"{name}.release"
        (self.tmp_path / f"{name}.name").touch()
        process = multiprocessing.get_context("fork").Process(
            target=_hold, args=(self.lock, enter, held, release)
        )
        process.start()
        self.processes.append(process)
        return held, release

    def stop(self) -> None:
        for release in self.tmp_path.glob("*.name"):
            release.with_suffix(".release").touch()
        for process in self.processes:
            process.join(WAIT)
            if process.is_alive():
                process.kill()


@pytest.fixture
def holders(tmp_path: Path) -> Iterator[Holders]:
    started = Holders(tmp_path)
    yield started
    started.stop()


def test_workers_of_one_run_share_the_cluster_and_another_run_waits(holders: Holders) -> None:
    first, release_first = holders.start("a1", _cluster("run-a"))
    assert _until(first.exists)
    second, release_second = holders.start("a2", _cluster("run-a"))
    assert _until(second.exists)  # the same run: at once
    other, _ = holders.start("b", _cluster("run-b"))
    alone, _ = holders.start("solo", _cluster(None))
    release_first.touch()
    assert _until(lambda: not holders.processes[0].is_alive())
    assert not other.exists()  # run-a still holds it
    assert not alone.exists()
    release_second.touch()
    assert _until(lambda: other.exists() or alone.exists())
    assert not (other.exists() and alone.exists())  # a session without xdist holds it alone


def test_an_exclusive_test_waits_for_shared_ones_and_holds_back_new_ones(holders: Holders) -> None:
    shared, release_shared = holders.start("s1", _turn(exclusive=False))
    assert _until(shared.exists)
    exclusive, release_exclusive = holders.start("x", _turn(exclusive=True))
    # The exclusive one waits holding the turnstile: a shared one that comes later queues behind it.
    assert _until(lambda: _is_held(Path(holders.lock + ".turnstile")))
    assert not exclusive.exists()
    later, _ = holders.start("s2", _turn(exclusive=False))
    release_shared.touch()
    assert _until(exclusive.exists)
    assert not later.exists()
    release_exclusive.touch()
    assert _until(later.exists)
