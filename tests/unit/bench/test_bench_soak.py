"""The soak benchmark's pure parts (bench/cluster/soak.py): how requests are put on the stable or the
canary path and in a phase, what the RSS samples add up to, and the guard that keeps its load on the
cluster's pod network. The soak itself runs on the local cluster; its figures are in docs/."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from modeldeploy_testcluster.layout import default_layout

from script_module import script_module

REPO = Path(__file__).resolve().parents[3]
MIB = 1024 * 1024


def _bench() -> ModuleType:
    return script_module("modeldeploy_soak_bench", REPO / "bench" / "cluster" / "soak.py")


soak = _bench()


def sent(due: float, status: int = 200, revision: str = "stable1", code: str = "") -> Any:
    return soak.Sent(due=due, latency=0.01, status=status, revision=revision, code=code)


def cycle(
    started: float, ended: float | None, canary: str, weights: tuple[tuple[float, int], ...] = ()
) -> Any:
    return soak.Cycle(
        1, "abort", "3", started=started, ended=ended, canary_revision=canary, weight_changes=weights
    )


def test_requests_are_put_in_a_phase_by_their_due_time() -> None:
    cycles = [cycle(100.0, 200.0, "canary1", ((130.0, 25), (150.0, 50)))]
    changes = soak.change_times(cycles)
    assert changes == [100.0, 130.0, 150.0, 200.0]
    assert soak.phase_of(50.0, cycles, changes, 3.0) == "steady"
    assert soak.phase_of(98.0, cycles, changes, 3.0) == "step_change"  # just before the patch
    assert soak.phase_of(132.9, cycles, changes, 3.0) == "step_change"
    assert soak.phase_of(140.0, cycles, changes, 3.0) == "rollout"
    assert soak.phase_of(203.5, cycles, changes, 3.0) == "steady"
    # A cycle still running at the end of the soak has no end yet.
    assert soak.phase_of(900.0, [cycle(800.0, None, "c")], [800.0], 3.0) == "rollout"


def test_only_the_canary_of_a_cycle_in_progress_is_off_the_stable_path() -> None:
    cycles = [cycle(100.0, 200.0, "canary1")]
    assert soak.on_canary(sent(150.0, revision="canary1"), cycles)
    assert not soak.on_canary(sent(150.0, revision="stable1"), cycles)
    # Promoted: the same revision after the cycle is the stable path.
    assert not soak.on_canary(sent(250.0, revision="canary1"), cycles)
    # No revision header (connection error, a router error before any arm): counted as stable.
    assert not soak.on_canary(sent(150.0, status=0, revision="", code="ConnectError"), cycles)


def test_request_summary_counts_failures_by_path_phase_and_status() -> None:
    cycles = [cycle(100.0, 200.0, "canary1", ((130.0, 25),))]
    requests = [
        sent(10.0),
        sent(11.0, status=503, code="no_ready_backend"),
        sent(12.0, status=0, revision="", code="ReadTimeout"),
        sent(13.0, status=0, revision="", code="not_sent"),
        sent(131.0, status=502, code="backend_closed"),
        sent(160.0, revision="canary1"),
        sent(161.0, status=413, revision="canary1"),
        sent(170.0),
    ]
    summary = soak.request_summary(requests, cycles, 3.0)
    assert summary["not_sent"] == 1
    stable = summary["stable"]
    assert (stable["sent"], stable["ok"], stable["failed"]) == (5, 2, 3)
    assert stable["by_status"] == {
        "200": 2,
        "502:backend_closed": 1,
        "503:no_ready_backend": 1,
        "no_answer:ReadTimeout": 1,
    }
    assert stable["by_phase"]["steady"]["failed"] == 2
    assert stable["by_phase"]["step_change"] == {
        "sent": 1,
        "failed": 1,
        "by_status": {"502:backend_closed": 1},
    }
    assert stable["by_phase"]["rollout"]["failed"] == 0
    assert summary["canary"]["sent"] == 2
    assert summary["canary"]["failed"] == 1
    assert summary["stable_latency_ms"]["steady"]["p50"] == 10.0


def test_per_minute_tells_when_failures_and_shortfalls_happened() -> None:
    requests = [
        sent(100.0),
        sent(130.0, status=503, code="over_budget"),
        sent(170.0, status=0, revision="", code="not_sent"),
        sent(175.0),
        sent(95.0),  # due before the start (capacity phase leftovers are not in the soak's list)
    ]
    minutes = soak.per_minute(requests, started=100.0)
    assert [m["minute"] for m in minutes] == [0, 1]
    assert minutes[0] == {"minute": 0, "due": 3, "failed": 1, "not_sent": 0, "p99_ms": 10.0}
    assert minutes[1] == {"minute": 1, "due": 2, "failed": 0, "not_sent": 1, "p99_ms": 10.0}
    assert soak.per_minute([], started=0.0) == []


def test_rss_summary_gives_component_totals_and_each_pods_life() -> None:
    samples = [
        soak.Sample(0.0, "router", "r", 60 * MIB),
        soak.Sample(0.0, "server", "a", 100 * MIB),
        soak.Sample(0.0, "server", "b", 110 * MIB),
        soak.Sample(30.0, "router", "r", 64 * MIB),
        soak.Sample(30.0, "server", "a", 105 * MIB),
        soak.Sample(30.0, "server", "b", 112 * MIB),
        soak.Sample(30.0, "server", "c", 90 * MIB),  # a canary pod
        soak.Sample(90.0, "router", "r", 62 * MIB),
        soak.Sample(90.0, "server", "c", 95 * MIB),  # promoted: a and b are gone
    ]
    summary = soak.rss_summary(samples)
    router = summary["router"]
    assert (router["start_mib"], router["end_mib"], router["max_mib"], router["growth_mib"]) == (
        60,
        62,
        64,
        2,
    )
    server = summary["server"]
    assert (server["start_mib"], server["end_mib"], server["max_mib"]) == (210, 95, 307)
    assert server["pods_seen"] == 3
    assert server["longest_lived"]["pod"] == "c"
    assert server["longest_lived"]["sampled_minutes"] == 1.0
    assert server["pods"]["a"] == {
        "first_mib": 100.0,
        "last_mib": 105.0,
        "max_mib": 105.0,
        "growth_mib": 5.0,
        "sampled_minutes": 0.5,
        "samples": 2,
    }


def test_a_cycle_records_weight_changes_once_and_knows_its_expected_outcome() -> None:
    c = soak.Cycle(2, "promote", "2", started=10.0)
    c = c.saw_weight(11.0, 0).saw_weight(12.0, 0).saw_weight(20.0, 25).saw_weight(21.0, 25)
    assert c.weight_changes == ((11.0, 0), (20.0, 25))
    decided = c.decided(55.0, "Promoted")
    assert decided.decided_s == 45.0
    assert not decided.expected()  # not settled yet
    assert decided.settled(60.0).expected()
    assert not c.decided(55.0, "Aborted").settled(60.0).expected()
    assert soak.Cycle(3, "abort", "3", started=0.0).decided(9.0, "Aborted").settled(20.0).expected()


def test_the_load_only_calls_addresses_in_the_clusters_pod_network() -> None:
    endpoints = soak.Endpoints(default_layout(), None, "ns")
    endpoints._read = lambda: [
        "http://10.244.2.7:8080",
        "http://127.0.0.1:8080",
        "http://192.168.1.10:8080",
        "http://10.1.2.3:8080",
        "http://example.com:8080",
        "http://[::1]:8080",
    ]
    assert endpoints.refresh() == ["http://10.244.2.7:8080"]


@pytest.mark.parametrize(
    "argv",
    [
        ["--minutes", "0"],
        ["--minutes", "-1"],
        ["--minutes", "241"],
        ["--minutes", "nan"],
        ["--minutes", "inf"],
        ["--rate", "nan"],
        ["--rate", "-5"],
        ["--cycle-seconds", "0"],
        ["--sample-seconds", "inf"],
        ["--max-requests", "0"],
        ["--max-in-flight", "100000"],
    ],
)
def test_absurd_options_are_refused_before_the_cluster_is_touched(argv: list[str]) -> None:
    # main() parses and checks before it takes the cluster lock; NaN once went through (a NaN
    # duration passed `minutes <= 0 or minutes > 240` and the run failed only after a minute of setup).
    refused = soak.check_args(soak.build_parser().parse_args(argv))
    assert refused.startswith(f"{argv[0]} must be a number in")


def test_words_for_numbers_are_refused_by_the_parser() -> None:
    with pytest.raises(SystemExit) as exit_:
        soak.build_parser().parse_args(["--minutes", "thirty"])
    assert exit_.value.code == 2


def test_the_defaults_are_accepted() -> None:
    assert soak.check_args(soak.build_parser().parse_args([])) == ""
    assert soak.check_args(soak.build_parser().parse_args(["--minutes", "2", "--rate", "40"])) == ""
