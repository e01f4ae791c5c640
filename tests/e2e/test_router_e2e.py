"""The built-in router on the local cluster: A/B split, stickiness across a weight change, unready
pods, shadow traffic, headers and metrics, two router replicas that agree, with real HTTP through the
router pods the operator made."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from kubernetes import client

from cluster_helpers import SERVING, container_pids, create_mdep, get_mdep, patch_mdep, router_arms, wait_for
from rollout_helpers import model, rows
from traffic import ready_endpoints

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.usefixtures("operator_release")]
USERS = [f"customer-{i}" for i in range(2000)]


def ab_md(store: str, bundles: Path, control: int) -> dict[str, Any]:
    return {
        "apiVersion": "modeldeploy.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "churn"},
        "spec": {
            "model": model(store, bundles, "1"),
            "variants": [
                {"name": "control", "weight": control},
                {"name": "treatment", "weight": 100 - control, "model": model(store, bundles, "2")},
                {"name": "candidate", "weight": 0, "model": model(store, bundles, "3")},
            ],
            "replicas": 1,
            "traffic": {
                "stickyKey": {"header": "X-User-Id"},
                "shadow": {"variant": "candidate", "percent": 50},
                "routerReplicas": 2,
            },
        },
    }


def assign(router: str, row: list[float | None]) -> tuple[dict[str, str], list[float]]:
    """Send every user once; returns user -> variant, and the latencies."""
    seen, latencies = {}, []
    with httpx.Client(timeout=10) as http:
        for user in USERS:
            body = {
                "id": f"r-{user}",
                "inputs": [{"name": "input", "datatype": "FP64", "shape": [1, len(row)], "data": row}],
            }
            started = time.perf_counter()
            answer = http.post(
                f"{router}/v2/models/churn/infer",
                json=body,
                headers={"X-User-Id": user, "X-Request-Id": f"r-{user}"},
            )
            latencies.append(time.perf_counter() - started)
            assert answer.status_code == 200, answer.text
            assert answer.json()["id"] == f"r-{user}"  # the request id passes through both hops
            seen[user] = answer.headers["x-modeldeploy-variant"]
            assert answer.headers["x-modeldeploy-revision"]
    return seen, latencies


def share(seen: dict[str, str], variant: str) -> float:
    return sum(v == variant for v in seen.values()) / len(seen)


def test_ab_split_stickiness_unready_pods_and_shadow_through_the_router(
    kube_api: client.ApiClient, namespace: str, model_store: str, churn_bundles: Path
) -> None:
    create_mdep(kube_api, namespace, ab_md(model_store, churn_bundles, control=90))
    wait_for(
        "Ready",
        lambda: get_mdep(kube_api, namespace, "churn").get("status", {}).get("phase") == "Ready",
        timeout=180,
    )

    def two_routers() -> list[str] | None:
        found = ready_endpoints(kube_api, namespace, "churn")
        return found if len(found) == 2 else None

    routers = wait_for("both router replicas ready", two_routers)
    budget = client.PolicyV1Api(kube_api).read_namespaced_pod_disruption_budget("churn-router", namespace)
    assert budget.spec.max_unavailable == 1  # a drain takes the two routers one at a time
    router = routers[0]
    row = rows(churn_bundles)[0]

    # 1. Proportions: 2,000 distinct users split 90/10 (5 sigma: +-0.034); the shadow never answers.
    first, _ = assign(router, row)
    assert abs(share(first, "treatment") - 0.10) < 0.034
    assert "candidate" not in first.values()
    # Both router replicas put every user on the same arm (assignment is a pure function).
    other, _ = assign(routers[1], row)
    assert other == first

    # 2. Stickiness: raise treatment 10 -> 50; only users moving into treatment change.
    patch_mdep(
        kube_api,
        namespace,
        "churn",
        {"spec": {"variants": ab_md(model_store, churn_bundles, control=50)["spec"]["variants"]}},
    )
    wait_for(
        "the router table at 50/50",
        lambda: sorted(a[2] for a in router_arms(kube_api, namespace, "churn")) == [0, 5_000, 5_000],
    )
    time.sleep(3)  # the router watches its ConfigMap
    second, latencies = assign(router, row)
    assert abs(share(second, "treatment") - 0.50) < 0.056
    moved = {u for u in USERS if first[u] != second[u]}
    assert all(first[u] == "control" and second[u] == "treatment" for u in moved)
    assert all(second[u] == "treatment" for u in USERS if first[u] == "treatment")

    # 3. Shadow: copies reach the candidate and agreement is measured; the primary stays fast.
    metrics = httpx.get(f"{router}/metrics", timeout=5).text
    assert "modeldeploy_router_shadow_requests_total{" in metrics
    assert "modeldeploy_router_shadow_label_agreement_total{" in metrics
    assert "modeldeploy_router_requests_total{" in metrics
    assert sorted(latencies)[len(latencies) // 2] < 0.05

    # 4. An unready pod gets no traffic: freeze treatment's server until its readiness probe fails.
    core = client.CoreV1Api(kube_api)
    (pod,) = core.list_namespaced_pod(
        namespace, label_selector=SERVING.format("churn") + ",modeldeploy.io/variant=treatment"
    ).items
    pids = container_pids(pod.status.container_statuses[0].container_id)
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        wait_for(
            "treatment unready",
            lambda: (
                not core.read_namespaced_pod(pod.metadata.name, namespace).status.container_statuses[0].ready
            ),
            timeout=60,
        )

        # The EndpointSlice, then the router, follow: treatment's weight goes to the arm that can answer.
        def all_on_control() -> bool:
            try:
                return set(assign(router, row)[0].values()) == {"control"}
            except httpx.TimeoutException:
                # A request the router sent to the frozen pod before its EndpointSlice said unready
                # outlasts the client's 10 s (a CI run, 2026-12-03): not yet, ask again.
                return False

        wait_for("every user on control", all_on_control, 120)
    finally:
        for pid in pids:
            # Gone when the liveness probe had the frozen container restarted first (a loaded CI run).
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


def three_variants_md(store: str, bundles: Path, weights: tuple[int, int, int]) -> dict[str, Any]:
    return {
        "apiVersion": "modeldeploy.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "churn"},
        "spec": {
            "variants": [
                {"name": name, "weight": weight, "model": model(store, bundles, version)}
                for name, weight, version in zip(("a", "b", "c"), weights, ("1", "2", "3"), strict=True)
            ],
            "replicas": 1,
            "traffic": {"stickyKey": {"header": "X-User-Id"}},
        },
    }


def router_weights(router: str) -> dict[str, int]:
    """variant -> weight in basis points, as the router pod applied it (its 0-1 ratio gauge)."""
    found: dict[str, int] = {}
    for line in httpx.get(f"{router}/metrics", timeout=5).text.splitlines():
        if line.startswith("modeldeploy_router_arm_weight_ratio{"):
            variant = line.split('variant="', 1)[1].split('"', 1)[0]
            found[variant] = round(float(line.rsplit(" ", 1)[1]) * 10_000)
    return found


def test_three_variants_reweighted_move_only_the_minimum_through_the_router(
    kube_api: client.ApiClient, namespace: str, model_store: str, churn_bundles: Path
) -> None:
    """The issue's case on the cluster: A/B/C 50/30/20 -> 60/30/10 moved 21 % of users (B's too) with
    cumulative buckets; with the operator's slot table only C's users move, into A: 10 %, the TV
    distance."""
    create_mdep(kube_api, namespace, three_variants_md(model_store, churn_bundles, (50, 30, 20)))
    wait_for(
        "Ready",
        lambda: get_mdep(kube_api, namespace, "churn").get("status", {}).get("phase") == "Ready",
        timeout=180,
    )
    router = wait_for("the router ready", lambda: ready_endpoints(kube_api, namespace, "churn"))[0]
    row = rows(churn_bundles)[0]
    wait_for("the router at 50/30/20", lambda: router_weights(router) == {"a": 5000, "b": 3000, "c": 2000})
    before, _ = assign(router, row)

    patch_mdep(
        kube_api,
        namespace,
        "churn",
        {
            "spec": {
                "variants": three_variants_md(model_store, churn_bundles, (60, 30, 10))["spec"]["variants"]
            }
        },
    )
    wait_for("the router at 60/30/10", lambda: router_weights(router) == {"a": 6000, "b": 3000, "c": 1000})
    after, _ = assign(router, row)
    moves = {(before[u], after[u]) for u in USERS if before[u] != after[u]}
    moved = sum(before[u] != after[u] for u in USERS) / len(USERS)
    print(f"\nthree variants re-weighted on the cluster: {moved:.2%} of {len(USERS)} users moved (TV 10 %)")
    assert moves == {("c", "a")}  # nobody of B moved, though cumulative buckets moved 21 %
    assert abs(moved - 0.10) < 0.03  # 2,000 users: sigma 0.7 points
