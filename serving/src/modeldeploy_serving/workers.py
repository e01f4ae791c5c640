"""Readiness across uvicorn worker processes.

With several workers the CLI gives them a shared folder (WORKER_STATE_DIR). Each worker records its
load result there as <pid>.ready or <pid>.failed, and a worker reports the pod ready only when every
live worker is: a readiness probe reaches one worker, but the pod's traffic reaches all of them.
"""

from __future__ import annotations

import os

WORKER_STATE_DIR = "MODELDEPLOY_WORKER_STATE_DIR"


def mark(state: str) -> None:
    folder = os.environ.get(WORKER_STATE_DIR)
    if folder:
        with open(os.path.join(folder, f"{os.getpid()}.{state}"), "w"):
            pass


def all_ready(expected: int) -> bool:
    """True without a shared folder (one worker); else whether `expected` live workers are ready."""
    folder = os.environ.get(WORKER_STATE_DIR)
    if not folder:
        return True
    ready = 0
    for entry in os.scandir(folder):
        pid, _, state = entry.name.partition(".")
        if state == "ready" and pid.isdigit() and _alive(int(pid)):
            ready += 1
    return ready >= expected


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True
