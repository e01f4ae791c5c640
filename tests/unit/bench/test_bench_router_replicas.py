"""The router-per-core benchmark's pure parts (bench/router/replicas.py): reading CPU ticks from
/proc/<pid>/stat lines, adding up a process tree, the per-core arithmetic and wrk's thread count.
The benchmark itself runs wrk against local processes; its figures are in docs/benchmarks.md."""

from __future__ import annotations

import contextlib
from pathlib import Path
from types import ModuleType

import pytest
from hypothesis import given
from hypothesis import strategies as st

from script_module import script_module

REPO = Path(__file__).resolve().parents[3]


def _bench() -> ModuleType:
    return script_module("modeldeploy_router_replicas_bench", REPO / "bench" / "router" / "replicas.py")


bench = _bench()


def stat(pid: int, comm: str, ppid: int, utime: int, stime: int) -> str:
    """A /proc/<pid>/stat line as Linux writes it (52 fields; 14 and 15 are utime and stime)."""
    fields = ["S", str(ppid), *["0"] * 9, str(utime), str(stime), *["0"] * 37]
    return f"{pid} ({comm}) " + " ".join(fields) + "\n"


def test_parse_stat_reads_ppid_and_cpu_ticks() -> None:
    assert bench.parse_stat(stat(42, "python3", 7, 150, 25)) == (7, 175)


def test_parse_stat_counts_fields_from_the_last_parenthesis() -> None:
    # A process may name itself anything (prctl PR_SET_NAME): spaces and ") 9 9" must not shift fields.
    assert bench.parse_stat(stat(42, "a) 9 9 (b", 7, 3, 4)) == (7, 7)


def test_parse_stat_of_a_real_process() -> None:
    ppid, ticks = bench.parse_stat(Path("/proc/self/stat").read_text())
    assert ppid > 0
    assert ticks >= 0


@given(st.text(max_size=40))
def test_parse_stat_fails_only_with_value_or_index_error(text: str) -> None:
    # tree_ticks skips a line that raises these (a process gone mid-read leaves an empty one).
    with contextlib.suppress(ValueError, IndexError):
        bench.parse_stat(text)


def test_tree_ticks_adds_the_roots_and_every_descendant_once() -> None:
    stats = {
        10: stat(10, "uvicorn", 1, 5, 5),  # supervisor
        11: stat(11, "python", 10, 100, 20),  # worker
        12: stat(12, "python", 10, 200, 30),  # worker
        13: stat(13, "python", 12, 1, 1),  # a worker's child
        20: stat(20, "router", 1, 1000, 1000),  # another group: not counted
        30: "",  # gone mid-read
    }
    assert bench.tree_ticks(stats, [10]) == 10 + 120 + 230 + 2
    assert bench.tree_ticks(stats, [10, 11]) == 362  # a root that is also a descendant counts once
    assert bench.tree_ticks(stats, [20]) == 2000
    assert bench.tree_ticks(stats, [99]) == 0  # exited


def test_per_core_is_work_per_cpu_second() -> None:
    # 12,000 requests in a run that used 0.8 CPU-seconds: one busy core would serve 15,000/s.
    assert bench.per_core(12_000, 0.8) == pytest.approx(15_000)
    assert bench.per_core(1024 * 300, 2.0) == pytest.approx(153_600)
    assert bench.per_core(100, 0.0) is None


def test_wrk_threads_give_every_replica_the_same_connections() -> None:
    assert bench.wrk_threads([1, 2, 4], [16, 64]) == 4
    assert bench.wrk_threads([1, 2, 4, 1, 2], [16, 64, 4]) == 4
    assert bench.wrk_threads([1, 3], [6, 12]) == 3
    assert bench.wrk_threads([0], [1]) == 1
    with pytest.raises(ValueError, match="multiples of 4"):
        bench.wrk_threads([4], [2, 16])
    with pytest.raises(ValueError, match="multiples of 4"):
        bench.wrk_threads([1, 4], [16, 18])
