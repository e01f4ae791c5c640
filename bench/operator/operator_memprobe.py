"""`modeldeploy-operator` with a memory probe, for bench/operator/rollout_memory.py (not for production).

Runs this checkout's operator (`modeldeploy_operator.main.main`) unchanged, with two additions:

- SIGUSR1 writes `<MEMPROBE_DIR>/probe-<n>.json` (VmRSS, the entry counts of the operator's
  long-lived per-object structures, after a gc, and where the RSS is: Python's small-object
  allocator's arenas and their used and free bytes, glibc's heaps in use and free, the threads)
  and, with MEMPROBE_TRACEMALLOC=<frames>, a tracemalloc snapshot `probe-<n>.tracemalloc`
  (tracemalloc started before the operator is imported);
- the built-in analysis scrape goes to local model servers instead of the pods' addresses: the pods
  of the bench run on kwok nodes (no process behind their addresses), so without this every scrape
  would fail and keep nothing. Canary addresses are replaced by the one in the file MEMPROBE_CANARY
  names (the bench writes it before each cycle: a good or a bad model's server), stable addresses
  by MEMPROBE_STABLE, router addresses by none. Everything else (the scrape, its parsing, what is
  kept) is the operator's own code.
"""

from __future__ import annotations

import ctypes
import gc
import json
import os
import re
import signal
import sys
import tempfile
import threading
import tracemalloc
from pathlib import Path
from typing import Any

FRAMES = int(os.environ.get("MEMPROBE_TRACEMALLOC", "0") or 0)
if FRAMES:
    tracemalloc.start(FRAMES)

from modeldeploy_operator import handlers  # noqa: E402
from modeldeploy_operator.analysis import scrape_source  # noqa: E402
from modeldeploy_operator.analysis.scrape import take_snapshot as _original_take_snapshot  # noqa: E402
from modeldeploy_operator.main import main  # noqa: E402

OUT = Path(os.environ["MEMPROBE_DIR"])
_probes = 0


def _redirected(
    client: Any, now: Any, canary: Any, stable: Any = (), router: Any = (), limits: Any = None
) -> Any:
    to_canary = Path(os.environ["MEMPROBE_CANARY"]).read_text().strip()
    new_canary = [to_canary] if canary else []
    new_stable = [os.environ["MEMPROBE_STABLE"]] if stable else []
    if limits is None:
        return _original_take_snapshot(client, now, new_canary, new_stable, [])
    return _original_take_snapshot(client, now, new_canary, new_stable, [], limits)


# scrape_source calls take_snapshot by the name it imported from .scrape: that name is the one to
# replace, though the module does not export it
scrape_source.take_snapshot = _redirected  # type: ignore[attr-defined]


def _rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def counts() -> dict[str, Any]:
    """Entries of every long-lived structure the operator keeps per object, revision or rollout."""
    controller = handlers._controller
    if controller is None:
        return {}
    reconciler = controller.reconciler
    analysis = reconciler.analysis
    found: dict[str, Any] = {
        "controller_bodies": len(controller._bodies),
        "controller_own_writes": len(controller._own),
        "queue_heap": len(controller.queue._heap),
        "queue_last_done": len(controller.queue._last_done),
        "scrape_baselines": len(analysis.scrape._previous),
        "scrape_baseline_samples": sum(
            len(series)
            for snapshot in analysis.scrape._previous.values()
            for group in (snapshot.canary, snapshot.stable, snapshot.router)
            for pod in group.pods.values()
            for series in pod.samples.values()
        ),
        "analysis_pool_jobs": len(analysis.pool._jobs) if analysis.pool is not None else 0,
        "server_reports_owners": len(reconciler.servers._final),
        "server_reports": sum(len(v) for v in reconciler.servers._final.values()),
        "preflight_pool_jobs": len(reconciler.preflight_pool._jobs),
    }
    cache = reconciler.cache
    if cache is not None:
        found["cache_objects"] = {key[1]: len(informer) for key, informer in cache.informers.items()}
        found["cache_own_writes"] = sum(len(i.own) for i in cache.informers.values())
    return found


def pymalloc() -> dict[str, float]:
    """Python's small-object allocator (objects up to 512 bytes): its arenas (1 MiB each, handed back
    to the system only when wholly empty) and the bytes in them in use and free, from
    sys._debugmallocstats (which writes to the C stderr: read through a temporary file)."""
    with tempfile.TemporaryFile() as capture:
        saved = os.dup(2)
        try:
            sys.stderr.flush()
            os.dup2(capture.fileno(), 2)
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        capture.seek(0)
        text = capture.read().decode(errors="replace")

    def number(pattern: str) -> float:
        found = re.search(pattern + r"\s*=\s*([\d,]+)", text)
        return int(found.group(1).replace(",", "")) / 2**20 if found else -1.0

    arenas = re.search(r"# arenas allocated current\s*=\s*([\d,]+)", text)
    return {
        "arenas": int(arenas.group(1).replace(",", "")) if arenas else -1,
        "used_mib": round(number(r"# bytes in allocated blocks"), 2),
        "free_in_pools_mib": round(number(r"# bytes in available blocks"), 2),
        "unused_pools_mib": round(
            int(m.group(1)) * int(m.group(2)) / 2**20
            if (m := re.search(r"(\d+) unused pools \* (\d+) bytes", text))
            else -1.0,
            2,
        ),
    }


class _Mallinfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def glibc() -> dict[str, float]:
    """glibc malloc (all its arenas: what Python's allocator does not take, and C libraries' own):
    heap bytes obtained by brk/per-thread heaps, in use, free inside them, and mmapped blocks."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = _Mallinfo2
        info = libc.mallinfo2()
    except (OSError, AttributeError):
        return {}
    mib = 2**20
    return {
        "heap_mib": round(info.arena / mib, 2),
        "in_use_mib": round(info.uordblks / mib, 2),
        "free_mib": round(info.fordblks / mib, 2),
        "mmapped_mib": round(info.hblkhd / mib, 2),
        "mmapped_blocks": info.hblks,
    }


def _probe(_signum: int, _frame: object) -> None:
    global _probes  # noqa: PLW0603 - one counter per process
    _probes += 1
    gc.collect()
    data = {
        "probe": _probes,
        "rss_mib": round(_rss_mib(), 2),
        "counts": counts(),
        "gc_objects": len(gc.get_objects()),
        "pymalloc": pymalloc(),
        "glibc": glibc(),
        "threads": threading.active_count(),
        "os_threads": len(os.listdir("/proc/self/task")),
    }
    if FRAMES:
        tracemalloc.take_snapshot().dump(str(OUT / f"probe-{_probes}.tracemalloc"))
        data["traced_mib"] = round(tracemalloc.get_traced_memory()[0] / 2**20, 2)
    (OUT / f"probe-{_probes}.json.tmp").write_text(json.dumps(data))
    (OUT / f"probe-{_probes}.json.tmp").rename(OUT / f"probe-{_probes}.json")


signal.signal(signal.SIGUSR1, _probe)

if __name__ == "__main__":
    sys.exit(main([]))
