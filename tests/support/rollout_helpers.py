"""Shared pieces of the end-to-end rollout tests: a canary ModelDeployment of the churn model, the
traffic rows, and small readers of its status and router table."""

from __future__ import annotations

import csv
import hashlib
import json
import math
from pathlib import Path
from typing import Any

from kubernetes import client

from cluster_helpers import get_mdep, patch_mdep, router_arms

CANARY_STEPS = [
    {"setWeight": 25},
    {"pause": {"duration": "8s"}},
    {"setWeight": 50},
    {"analysis": {"duration": "12s"}},
]
CHECKS = [
    {"name": "errors", "type": "errorRate", "threshold": {"max": 0.05}},
    # PSI over a few seconds of traffic is noisy below a few hundred scores: a check-level minimum keeps
    # small windows Inconclusive, and the bad model's shift (PSI ~5) is far above the threshold.
    {"name": "score-shift", "type": "predictionShift", "threshold": {"max": 1.0}, "minSamples": 150},
]


def rows(bundles: Path) -> list[list[float | None]]:
    with (bundles / "data" / "traffic_normal.csv").open() as handle:
        reader = csv.reader(handle)
        next(reader)
        parsed = [[float(v) if v else None for v in row] for _, row in zip(range(400), reader, strict=False)]
    return [[None if v is not None and math.isnan(v) else v for v in row] for row in parsed]


def model(store: str, bundles: Path, version: str) -> dict[str, Any]:
    manifest = bundles / f"v{version}" / "manifest.json"
    found: dict[str, Any] = {"uri": f"{store}/v{version}", "format": "onnx", "version": version}
    if manifest.exists():
        found["sha256"] = hashlib.sha256(manifest.read_bytes()).hexdigest()
    return found


def canary_md(store: str, bundles: Path, *, deadline: int = 120) -> dict[str, Any]:
    return {
        "apiVersion": "modeldeploy.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "churn"},
        "spec": {
            "model": model(store, bundles, "1"),
            "replicas": 2,
            "traffic": {"stickyKey": {"header": "X-User-Id"}},
            "rollout": {
                "strategy": "Canary",
                "steps": CANARY_STEPS,
                "analysis": {"interval": "6s", "minSamples": 20, "failureLimit": 0, "checks": CHECKS},
                "progressDeadlineSeconds": deadline,
                "scaleDownDelaySeconds": 5,
            },
            "drift": {"windowRows": 50, "windowSeconds": 5},
        },
    }


def status(api: client.ApiClient, namespace: str) -> dict[str, Any]:
    return dict(get_mdep(api, namespace, "churn").get("status") or {})


def ready_on(api: client.ApiClient, namespace: str, version: str) -> dict[str, Any] | None:
    current = status(api, namespace)
    ok = (
        current.get("phase") == "Ready"
        and current.get("modelVersion") == version
        and not current.get("canaryRevision")
    )
    return current if ok else None


def set_model(api: client.ApiClient, namespace: str, new_model: dict[str, Any]) -> None:
    patch_mdep(api, namespace, "churn", {"spec": {"model": new_model}})


def live_arms(api: client.ApiClient, namespace: str) -> list[tuple[str, str, int]]:
    return [a for a in router_arms(api, namespace, "churn") if a[2] > 0]


def dump(kube_api: client.ApiClient, namespace: str) -> None:
    """What a failed rollout test needs to be read from a CI log: pods and events first, then the
    status and the last outcomes, short (CI shows only a part of a long failure output)."""
    core = client.CoreV1Api(kube_api)
    for pod in core.list_namespaced_pod(namespace).items:
        states = [
            (c.name, c.ready, c.restart_count, str(c.state)[:300])
            for c in pod.status.container_statuses or []
        ]
        print("pod", pod.metadata.name, pod.status.phase, states)
    for event in core.list_namespaced_event(namespace).items[-30:]:
        print("event", event.involved_object.name, event.reason, (event.message or "")[:300])
    current = status(kube_api, namespace)
    print("status:", json.dumps({k: v for k, v in current.items() if k != "history"}, default=str)[:2000])
    for entry in (current.get("history") or [])[-3:]:
        print("history:", json.dumps(entry, default=str)[:400])
