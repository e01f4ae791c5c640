"""Pod start on the local cluster's real node: scheduling → Ready for a ModelDeployment's model server.

Run against a cluster where a ModelDeployment serves the churn bundle (what `make demo` leaves behind):

    .venv/bin/python bench/cluster/pod_start.py --namespace modeldeploy-demo --name churn --pods 6

Each round deletes one ready serving pod of the stable revision and follows its replacement with a
watch: the time it is first seen bound to a node (the scheduler's decision), the time its container
started (the kubelet's status: image pulled, sandbox and container created), and the time its Ready
condition turns True (the model downloaded from the store, loaded, and the readiness probe passed).
Times are this script's monotonic clock at the watch event, so they include the API server's watch
latency (tens of ms), not the 1 s resolution of the status timestamps.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from typing import Any

from kubernetes import client, config, watch


def _ready(pod: Any) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])


def _running(pod: Any) -> bool:
    return any(s.state and s.state.running for s in pod.status.container_statuses or [])


def one_round(core: client.CoreV1Api, namespace: str, selector: str, timeout: float) -> dict[str, Any]:
    pods = [p for p in core.list_namespaced_pod(namespace, label_selector=selector).items if _ready(p)]
    if not pods:
        raise SystemExit(f"no ready pod matches {selector!r} in {namespace}")
    victim = pods[0]
    known = {p.metadata.name for p in core.list_namespaced_pod(namespace, label_selector=selector).items}
    listed = core.list_namespaced_pod(namespace, label_selector=selector)
    core.delete_namespaced_pod(victim.metadata.name, namespace, grace_period_seconds=0)
    deleted = time.monotonic()
    marks: dict[str, float] = {}
    name = None
    stream = watch.Watch()
    for event in stream.stream(
        core.list_namespaced_pod,
        namespace,
        label_selector=selector,
        resource_version=listed.metadata.resource_version,
        timeout_seconds=int(timeout),
    ):
        pod = event["object"]
        if pod.metadata.name in known and name is None:
            continue
        name = name or pod.metadata.name
        if pod.metadata.name != name:
            continue
        now = time.monotonic()
        marks.setdefault("created", now)
        if pod.spec.node_name:
            marks.setdefault("scheduled", now)
        if _running(pod):
            marks.setdefault("running", now)
        if _ready(pod):
            marks.setdefault("ready", now)
            node = pod.spec.node_name
            stream.stop()
    if "ready" not in marks:
        raise SystemExit(f"the replacement pod {name} was not Ready within {timeout:.0f}s")
    return {
        "pod": name,
        "node": node,
        "created_after_delete_s": round(marks["created"] - deleted, 3),
        "scheduled_to_running_s": round(marks.get("running", marks["ready"]) - marks["scheduled"], 3),
        "scheduled_to_ready_s": round(marks["ready"] - marks["scheduled"], 3),
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--namespace", default="modeldeploy-demo")
    parser.add_argument("--name", default="churn")
    parser.add_argument("--pods", type=int, default=6, help="rounds (one replaced pod each)")
    parser.add_argument("--timeout", type=float, default=120)
    args = parser.parse_args()
    config.load_kube_config()
    core = client.CoreV1Api()
    mdep = client.CustomObjectsApi().get_namespaced_custom_object(
        "modeldeploy.io", "v1alpha1", args.namespace, "modeldeployments", args.name
    )
    revision = mdep["status"]["stableRevision"]
    selector = f"modeldeploy.io/deployment={args.name},modeldeploy.io/revision={revision}"
    rounds = []
    for _ in range(args.pods):
        rounds.append(one_round(core, args.namespace, selector, args.timeout))
        print(json.dumps(rounds[-1]), flush=True)  # the next round starts with the replacement Ready
    ready = [r["scheduled_to_ready_s"] for r in rounds]
    running = [r["scheduled_to_running_s"] for r in rounds]
    summary = {
        "pods": len(rounds),
        "scheduled_to_ready_s": {"p50": statistics.median(ready), "max": max(ready), "min": min(ready)},
        "scheduled_to_running_s": {"p50": statistics.median(running), "max": max(running)},
        "loadavg_1m": round(os.getloadavg()[0], 2),
    }
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
