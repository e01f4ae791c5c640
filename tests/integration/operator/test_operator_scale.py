"""The operator at scale, small: bench/operator/scale.py with 100 ModelDeployments on kwok nodes,
one local operator process from this checkout, bounded in time. On the bench's own control plane
(etcd, kube-apiserver, controller-manager, scheduler and kwok from the cluster's binaries, on
127.0.0.1): the shared cluster's in-cluster operator, other tests' objects and its real node would
all add requests and CPU to what is measured, and it needs neither the cluster lock nor root.

Fails when the idle API cost per ModelDeployment regresses past ten times the goal of issue 16
(one request per ModelDeployment per five idle minutes), or a reaction p99 past 50 s (the goal is
5 s; see REACTION_P99_BOUND_S).
The figures themselves, at 100, 300 and 1,000, and beside Argo Rollouts, are the benchmark's
(docs/benchmarks.md)."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from cluster_helpers import REPO
from script_module import script_module

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

COUNT = 100
"""The issue's 100. It was 40 while the test cost the suite too much at 100 (setup 427 s of a 1,445 s warm
CI test phase, its control plane 106 s of CPU; 2026-12-03, before the operator's caches); at 100 with
the caches, alone on a quiet machine (2026-12-06): 222 s in all, the 100 created and ready in 48 s,
the idle window 60 s. 300 and 1,000 are the benchmark's."""
IDLE_REQUESTS_PER_MD_PER_MIN_BOUND = 10 * (1 / 5)
"""Ten times the goal of one request per ModelDeployment per five idle minutes."""
REACTION_P99_BOUND_S = 50.0
"""Ten times the goal of a p99 under 5 s (measured with the caches, 2026-12-02: apply 0.85 s, model
change 0.42 s, step due 0.09 s at N=100; before them, 120 s was needed: apply p99 was 53 s once)."""


def _bench() -> ModuleType:
    return script_module("modeldeploy_scale_bench", REPO / "bench" / "operator" / "scale.py")


@pytest.fixture(scope="module")
def scale_result(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One run: COUNT ModelDeployments created and ready, 60 s idle, 5 reaction samples of each kind
    (their rollouts give the step-due samples); no restart or mass rollout (the benchmark has them)."""
    bench = _bench()
    opts = bench.Options(count=COUNT, samples=5, idle_seconds=60.0, rollouts=False, restart=False)
    work = Path(tmp_path_factory.mktemp("scale"))
    with bench.private_control_plane(work) as layout:
        results: list[dict[str, Any]] = bench.run(layout, [COUNT], opts, ["modeldeploy"], work)
    (result,) = results
    print(bench.table([result]))
    # What each phase cost: the operator's passes and requests, and the API server's counts.
    print(json.dumps(result.get("phases"), indent=1))
    return result


@pytest.mark.timeout(1500)
def test_operator_scale_reaction_p99_within_bound(scale_result: dict[str, Any]) -> None:
    for kind in ("apply_to_created", "model_change_to_revision", "step_due_to_table"):
        figures = scale_result[kind]
        assert figures["n"] >= 5, (kind, figures)
        assert figures["p99_s"] < REACTION_P99_BOUND_S, (kind, figures)


@pytest.mark.timeout(1500)
def test_operator_scale_idle_requests_within_bound(scale_result: dict[str, Any]) -> None:
    idle = scale_result["idle"]
    assert idle["requests_per_object_per_min_without_leases"] <= IDLE_REQUESTS_PER_MD_PER_MIN_BOUND, idle
