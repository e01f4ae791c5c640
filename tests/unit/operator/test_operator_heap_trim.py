"""The operator hands freed heap memory back to the system (main.py `trim_heap`): RSS after a burst."""

from __future__ import annotations

import ctypes
from pathlib import Path

import pytest

from modeldeploy_operator import main


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_freed_heap_memory_goes_back_to_the_system() -> None:
    try:
        _ = ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        pytest.skip("not glibc")
    # Objects of the size of a cached object's parts (over 512 bytes: the C heap, not Python's arenas).
    parsed = [bytearray(600 + i % 7) for i in range(60_000)]
    kept = parsed[::50]  # (a few stay: the heap cannot shrink from its top alone)
    del parsed
    before = rss_kib()
    assert main.trim_heap()
    assert rss_kib() < before - 10_000  # (about 36 MB were freed)
    assert kept


def test_without_glibc_nothing_happens(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(name: str) -> None:
        raise OSError(name)

    monkeypatch.setattr(ctypes, "CDLL", missing)
    assert main.trim_heap() is False
