"""A rollback inside the rollback window (issue 12) on the local cluster: the chart-installed operator,
real model servers on the real node, live traffic through the router.

After v2 replaces v1, v1 keeps one warm Ready pod (spec.rollout.rollbackWindow). `rollback --to 1`
then moves the traffic in the reconcile that reads the command: the first status that answers the
command already serves v1, and at that moment v1's only Ready pod was the warm one (the scale-up to
full size is decided in that same pass, so no new pod can have served). The router table follows,
answers come from v1 with no failed request, and v1 is scaled back to its full replica count.

Then the benchmarks run against the same ModelDeployment (timing is never asserted here):
bench/operator/rollback_switch.py (command -> router table -> first answer from the warm revision) and
bench/operator/command_latency.py (annotate -> status.lastCommand). Their JSON lines are printed (run
with -s) and, with MODELDEPLOY_BENCH_OUT=<dir>, written there; MODELDEPLOY_ROLLBACK_ROUNDS (default 2)
and MODELDEPLOY_COMMAND_COUNT (default 10) size them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, watch

from modeldeploy_contract.commands import command_patch
from modeldeploy_contract.resource import GROUP, PLURAL, VERSION
from modeldeploy_operator.domain.names import revision_name

from cluster_helpers import FIRST_READY_SECONDS, REPO, create_mdep, wait_for
from rollout_helpers import canary_md, live_arms, model, ready_on, rows, set_model, status
from traffic import Traffic, ready_endpoints

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.usefixtures("operator_release")]


def _revision(current: dict[str, Any], revision: str) -> dict[str, Any] | None:
    for variant in current.get("variants") or []:
        for entry in variant.get("revisions") or []:
            if entry["revision"] == revision:
                return dict(entry)
    return None


def _warm(api: client.ApiClient, namespace: str, revision: str) -> dict[str, Any] | None:
    """The revision down to its rollback window's one Ready pod (its scale-down delay over)."""
    entry = _revision(status(api, namespace), revision)
    ok = (
        entry is not None
        and entry.get("warmUntil")
        and not entry.get("scaleDownAt")
        and entry.get("replicas") == 1
        and entry.get("readyReplicas") == 1
    )
    return entry if ok else None


def _first_answer(api: client.ApiClient, namespace: str, command_id: str, version: str) -> dict[str, Any]:
    """The first status (from `version` on) whose lastCommand answers `command_id`."""
    stream = watch.Watch()
    for event in stream.stream(
        client.CustomObjectsApi(api).list_namespaced_custom_object,
        GROUP,
        VERSION,
        namespace,
        PLURAL,
        field_selector="metadata.name=churn",
        resource_version=version,
        timeout_seconds=120,
    ):
        current = (event["object"] or {}).get("status") or {}
        if (current.get("lastCommand") or {}).get("id") == command_id:
            stream.stop()
            return dict(current)
    raise AssertionError(f"command {command_id} not answered within 120 s")


def _bench(script: str, kubeconfig: Path, namespace: str, *args: str) -> dict[str, Any]:
    """Run one bench script against the ModelDeployment; its last stdout line is its JSON summary."""
    done = subprocess.run(
        [
            sys.executable,
            str(REPO / "bench" / "operator" / script),
            *("--kubeconfig", str(kubeconfig), "-n", namespace, "--name", "churn"),
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    print(done.stderr, done.stdout, sep="\n")
    assert done.stdout.strip(), f"{script} printed nothing (exit {done.returncode}):\n{done.stderr}"
    summary: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    out = os.environ.get("MODELDEPLOY_BENCH_OUT")
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        with (Path(out) / f"{summary['benchmark']}.jsonl").open("a") as handle:
            handle.write(
                json.dumps(summary | {"at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}) + "\n"
            )
    return summary


@pytest.mark.timeout(1200)  # two revisions started cold, then both benchmarks
def test_a_rollback_inside_the_window_moves_traffic_to_the_warm_pod_without_a_cold_start(
    kube_api: client.ApiClient, namespace: str, model_store: str, churn_bundles: Path, kubeconfig: Path
) -> None:
    md = canary_md(model_store, churn_bundles)
    md["spec"]["rollout"] = {
        "strategy": "Immediate",
        "scaleDownDelaySeconds": 3,
        "rollbackWindow": {"seconds": 1800, "replicas": 1},
    }
    create_mdep(kube_api, namespace, md)
    v1 = wait_for("v1 Ready", lambda: ready_on(kube_api, namespace, "1"), timeout=FIRST_READY_SECONDS)[
        "stableRevision"
    ]
    set_model(kube_api, namespace, model(model_store, churn_bundles, "2"))
    v2 = wait_for("v2 serving", lambda: ready_on(kube_api, namespace, "2"), timeout=180)["stableRevision"]
    assert v2 != v1
    wait_for("v1 down to its warm pod", lambda: _warm(kube_api, namespace, v1), timeout=120)
    v1_service = revision_name("churn", "default", v1)
    warm_pods = set(ready_endpoints(kube_api, namespace, v1_service))
    assert len(warm_pods) == 1, warm_pods

    with Traffic(kube_api, namespace, "churn", rows(churn_bundles)) as traffic:
        wait_for("traffic through the router", lambda: len(traffic.results) > 40, timeout=60)
        version = client.CustomObjectsApi(kube_api).get_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, "churn"
        )["metadata"]["resourceVersion"]
        command_id, patch = command_patch("rollback", revision=1)
        sent = time.time()  # Result.at is wall-clock time
        client.CustomObjectsApi(kube_api).patch_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, "churn", patch
        )
        answered = _first_answer(kube_api, namespace, command_id, version)
        wait_for(
            "the router table on v1", lambda: live_arms(kube_api, namespace) == [("default", v1, 10_000)]
        )
        wait_for(
            "an answer from v1 through the router",
            lambda: any(r.revision == v1 and r.status == 200 and r.at > sent for r in traffic.results),
        )
        full = wait_for(
            "v1 back at full size",
            lambda: (e := _revision(status(kube_api, namespace), v1)) and e.get("readyReplicas") == 2 and e,
            timeout=180,
        )
        time.sleep(1)

    # Switched in the pass that read the command: v1 had only its warm pod then (no cold start).
    assert answered["lastCommand"]["result"] == "Applied"
    assert answered["stableRevision"] == v1
    assert answered["pinnedRevision"] == 1
    in_answer = _revision(answered, v1)
    assert in_answer is not None
    assert (in_answer["role"], in_answer["weight"], in_answer["replicas"]) == ("pinned", 100, 2)
    assert in_answer["readyReplicas"] == 1  # the warm pod; the second is starting
    assert full["replicas"] == 2
    # v2 served until the command: it has a window of its own (rolling forward is instant too).
    replaced = _revision(status(kube_api, namespace), v2)
    assert replaced is not None
    assert replaced.get("warmUntil")
    assert traffic.failures() == [], "every request was answered"

    rollback = _bench(
        "rollback_switch.py",
        kubeconfig,
        namespace,
        "--rounds",
        os.environ.get("MODELDEPLOY_ROLLBACK_ROUNDS", "2"),
    )
    assert rollback["rounds"] >= 1
    commands = _bench(
        "command_latency.py",
        kubeconfig,
        namespace,
        "-N",
        os.environ.get("MODELDEPLOY_COMMAND_COUNT", "10"),
        "--gap",
        "0.3",
    )
    assert commands["count"] >= 1
