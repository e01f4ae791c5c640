"""`modeldeploy-operator`: start metrics and health endpoints, win the leader Lease, then run kopf.

kopf runs once per leadership term: a leader that loses the Lease stops kopf (its reconciles) and
waits for the Lease again in the same process; winning it starts kopf anew (k8s/leader.py)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import gc
import logging
import os
import socket
import sys
import threading
from collections.abc import Callable

import kopf
from prometheus_client import start_http_server

from modeldeploy_contract.redact import scrub_logs
from modeldeploy_operator import handlers
from modeldeploy_operator.config import OperatorSettings, __version__
from modeldeploy_operator.health import serve_health
from modeldeploy_operator.k8s.api import KubeApi, fence_writes, new_api_client
from modeldeploy_operator.k8s.leader import LeaderElector
from modeldeploy_operator.metrics import GC_PAUSES, IS_LEADER

log = logging.getLogger("modeldeploy.operator")

HEAP_TRIM_SECONDS = 60.0
"""How often freed heap memory is handed back to the system (`trim_heap`)."""


def trim_heap() -> bool:
    """Hand the C heap's free pages back to the system (glibc's malloc_trim); False where there is none.

    Python frees most of what a list of thousands of objects or a burst of watch events parsed, but
    glibc keeps the freed pages of its heaps (one per thread that allocated: the informers', kopf's, the
    workers') mapped, so the RSS stays at the peak: the operator's RSS is what its memory limit and the
    issue's goal measure. Costs a walk of the heaps (milliseconds), nothing for the objects kept."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.malloc_trim(0))
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to hand back this way
        return False


def _trim_heap_every(seconds: float, stop: threading.Event) -> None:
    while not stop.wait(seconds):
        trim_heap()


GC_UNFREEZE_SECONDS = 3600.0
"""How often what `FreezeAfterFullCollection` froze is handed back to the collector (`_unfreeze_every`)."""


class FreezeAfterFullCollection:
    """After each full (generation 2) collection, move what survived it to the permanent generation
    (gc.freeze), which later collections do not walk (a gc.callbacks callback: it runs in the
    collecting thread, the collection done).

    Why: a full collection walks every tracked object, and with the informer caches of 1,000
    ModelDeployments in memory (RSS ~223 MiB) it paused every thread 0.14-1.6 s, 15 times while the
    1,000 became ready, and once during each run's reaction samples (0.35 s and 0.69 s), each time
    under a sample that became one of the slowest (bench/operator/scale.py at N = 1,000:
    docs/benchmarks.md, "The reaction tail at N = 1,000"). What survived a full collection is mostly
    the caches, which live as long as the process; frozen, a full collection walks only what was kept
    since the previous one: with this, none took 0.25 s or more, and none 0.1 s or more during the
    reaction samples. An object frozen and later dropped
    is still freed at once by reference counting (the caches hold plain dicts and lists, without
    cycles); only a reference cycle that was alive at a freeze and became garbage after it waits,
    until `unfreeze` hands the frozen objects back (hourly: one long collection an hour)."""

    def __init__(
        self, freeze: Callable[[], None] = gc.freeze, unfreeze: Callable[[], None] = gc.unfreeze
    ) -> None:
        self._freeze = freeze
        self._unfreeze = unfreeze

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "stop" and info.get("generation") == 2:
            self._freeze()

    def unfreeze(self) -> None:
        """Frozen objects back to the oldest generation: its next collection walks them (and frees the
        cycles among them that became garbage since), and then freezes what survives again."""
        self._unfreeze()

    def install(self) -> None:
        if self not in gc.callbacks:
            gc.callbacks.append(self)


GC_FREEZER = FreezeAfterFullCollection()


def _unfreeze_every(seconds: float, stop: threading.Event) -> None:
    while not stop.wait(seconds):
        GC_FREEZER.unfreeze()


def _own_namespace() -> str:
    path = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
    if os.environ.get("POD_NAMESPACE"):
        return os.environ["POD_NAMESPACE"]
    try:
        with open(path) as handle:
            return handle.read().strip()
    except OSError:
        return "default"


async def _operate(cluster_wide: bool, namespaces: list[str], lost: threading.Event) -> None:
    """Run kopf until SIGTERM/SIGINT or until leadership is lost.

    The stop flag is an asyncio.Event set from the lease thread: kopf waits on thread-based flags
    (threading.Event, concurrent Futures) in an executor thread, which then blocks its shutdown.
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def relay() -> None:
        lost.wait()
        with contextlib.suppress(RuntimeError):  # the loop may be closed already on a clean exit
            loop.call_soon_threadsafe(stop.set)

    threading.Thread(target=relay, name="lease-relay", daemon=True).start()
    await kopf.operator(
        standalone=True,  # no kopf peering: leadership comes from the Lease
        clusterwide=cluster_wide,
        namespaces=namespaces,
        stop_flag=stop,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="modeldeploy-operator",
        description="The modeldeploy operator: reconciles ModelDeployments. It takes no arguments; "
        "MODELDEPLOY_OPERATOR_* variables configure it (the Helm chart sets them).",
    )
    parser.add_argument("--version", action="version", version=f"modeldeploy-operator {__version__}")
    parser.parse_args(argv)
    settings = handlers.SETTINGS
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    scrub_logs()  # a model URI's credentials (in specs, API errors) never reach a log line
    start_http_server(settings.metrics_port)
    GC_PAUSES.install()  # (first: the pause it times is the collection's alone)
    GC_FREEZER.install()
    running = threading.Event()
    serve_health(settings.health_port, running.is_set)

    if not settings.leader_election:
        _lead(settings, threading.Event(), running)
        return 0
    identity = os.environ.get("POD_NAME") or f"{socket.gethostname()}-{os.getpid()}"
    elector = LeaderElector(
        KubeApi(new_api_client(), settings.field_manager, fenced=False),
        settings.lease_namespace or _own_namespace(),
        settings.lease_name,
        identity,
        settings.lease_duration_seconds,
        settings.lease_renew_seconds,
        settings.lease_renew_deadline_seconds,
    )
    fence_writes(elector)
    never = threading.Event()  # a waiting replica holds nothing: SIGTERM ends it (the default action)
    while True:
        term = elector.wait_for_leadership(never)
        if term is None:  # (only a set `never` ends the wait without a term)
            return 0
        lost = threading.Event()  # set when this term ends; it also stops kopf
        threading.Thread(target=elector.keep_renewing, args=(term, lost), name="lease", daemon=True).start()
        _lead(settings, lost, running)
        if not lost.is_set():  # SIGTERM/SIGINT: a clean exit, the Lease given up for a standby
            lost.set()  # ends the renewal thread
            elector.release()
            return 0
        # Step down and campaign again in this process: its fence is closed for this term's writes
        # for good (KubeApi.term), so nothing of the term goes on writing, and a process that stays
        # up is back within a second of the API server answering (it used to exit and come back
        # as a standby after a container restart: docs/reliability.md, "the API server down").
        log.warning("stepped down after losing leadership (term %d); waiting for the lease again", term)


def _lead(settings: OperatorSettings, lost: threading.Event, running: threading.Event) -> None:
    """Run kopf (the reconciles) for one term, until SIGTERM/SIGINT or until `lost` is set."""
    IS_LEADER.set(1)
    running.set()
    threading.Thread(
        target=_trim_heap_every, args=(HEAP_TRIM_SECONDS, lost), name="trim", daemon=True
    ).start()
    threading.Thread(
        target=_unfreeze_every, args=(GC_UNFREEZE_SECONDS, lost), name="gc-unfreeze", daemon=True
    ).start()
    try:
        asyncio.run(_operate(settings.cluster_wide, list(settings.namespaces), lost))
    finally:
        IS_LEADER.set(0)
        running.clear()


if __name__ == "__main__":
    sys.exit(main())
