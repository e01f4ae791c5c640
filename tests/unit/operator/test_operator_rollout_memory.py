"""What the operator keeps per rollout stays bounded however many rollouts run (issue 11, the soak's
growing leader RSS): the built-in analysis kept each rollout's last scrape of its pods (its
"baseline", over 1 MiB parsed) for 6 hours, and every rollout is a new analysis target.

The real Reconciler runs rollout cycles against a small simulated cluster (every Deployment's pods are
Ready at once, with addresses) whose model servers answer /metrics through an httpx transport: a good
canary's requests succeed, a bad one's fail, so the analysis itself promotes or aborts. The figures
(RSS and tracemalloc before and after) are bench/operator/rollout_memory.py's, in docs/benchmarks.md."""

from __future__ import annotations

import builtins
import copy
import datetime as dt
from functools import partial
from typing import Any

import httpx
import pytest

from modeldeploy_operator import reconciler as reconciler_module
from modeldeploy_operator.analysis import AnalysisSources, BuiltinScrapeSource
from modeldeploy_operator.config import OperatorSettings
from modeldeploy_operator.domain import labels as lbl
from modeldeploy_operator.reconciler import Reconciler

from analysis_fixtures import server_text

NAMESPACE, NAME, UID = "ml", "churn", "md-uid"
START = dt.datetime(2026, 12, 3, 12, 0, tzinfo=dt.UTC)
PASS_SECONDS = 4.0
"""Simulated time per pass: shorter than the analysis interval, so the analysis runs every 2 passes."""
CYCLES = 8
"""Four promoted and four aborted rollouts: each a new revision, so a new analysis target."""


class SimCluster:
    """Stores what the reconciler applies; every Deployment is at once rolled out with all its pods
    Ready (a ReplicaSet and pods with addresses, the owner chain the reconciler follows)."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.status: dict[str, Any] = {}
        self.rv = 100
        self.ips: dict[str, str] = {}
        """pod address -> model version of its Deployment ("router" for the router's)."""
        self.subnets: dict[str, int] = {}

    def _uid(self, kind: str, name: str) -> str:
        return f"uid-{kind}-{name}"

    def apply(self, manifest: dict[str, Any], field_manager: str | None = None) -> dict[str, Any]:
        self.rv += 1
        live = copy.deepcopy(manifest)
        live["metadata"].update(
            resourceVersion=str(self.rv), uid=self._uid(manifest["kind"], manifest["metadata"]["name"])
        )
        live["metadata"]["generation"] = 1
        self.objects[(manifest["kind"], manifest["metadata"]["name"])] = live
        return live

    def patch(self, kind: Any, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        live = self.objects[("Deployment", name)]
        live["spec"]["replicas"] = patch["spec"]["replicas"]
        self.rv += 1
        live["metadata"]["resourceVersion"] = str(self.rv)
        return copy.deepcopy(live)

    def delete(self, api_version: str, kind: str, namespace: str, name: str, **_: Any) -> None:
        self.objects.pop((kind, name), None)

    def event(self, *args: Any, **kwargs: Any) -> None:
        pass

    def patch_status(self, kind: Any, namespace: str, name: str, patch: dict[str, Any], **_: Any) -> None:
        self.status = {k: v for k, v in {**self.status, **patch}.items() if v is not None}

    def list(
        self, api_version: str, kind: str, namespace: str | None, selector: str
    ) -> builtins.list[dict[str, Any]]:
        deployments = [o for (k, _), o in sorted(self.objects.items()) if k == "Deployment"]
        if kind == "Deployment":
            return [self._rolled_out(d) for d in deployments]
        if kind == "ReplicaSet":
            return [self._replica_set(d) for d in deployments]
        if kind == "Pod":
            return [pod for d in deployments for pod in self._pods(d)]
        return [o for (k, _), o in self.objects.items() if k == kind]

    def _rolled_out(self, deployment: dict[str, Any]) -> dict[str, Any]:
        replicas = deployment["spec"].get("replicas", 1)
        counts = ("replicas", "readyReplicas", "updatedReplicas", "availableReplicas")
        return {**deployment, "status": {"observedGeneration": 1, **dict.fromkeys(counts, replicas)}}

    def _replica_set(self, deployment: dict[str, Any]) -> dict[str, Any]:
        name = deployment["metadata"]["name"]
        return {
            "metadata": {
                "name": f"{name}-rs",
                "uid": self._uid("ReplicaSet", name),
                "labels": deployment["spec"]["template"]["metadata"]["labels"],
                "ownerReferences": [{"uid": deployment["metadata"]["uid"], "controller": True}],
            }
        }

    def _pods(self, deployment: dict[str, Any]) -> builtins.list[dict[str, Any]]:
        name, labels = deployment["metadata"]["name"], deployment["spec"]["template"]["metadata"]["labels"]
        n = self.subnets.setdefault(name, len(self.subnets))  # (a Deployment's pods keep their addresses)
        version = labels.get(lbl.VERSION_LABEL) if lbl.REVISION_LABEL in labels else "router"
        pods = []
        for i in range(deployment["spec"].get("replicas", 1)):
            ip = f"10.0.{n}.{i + 1}"
            self.ips[ip] = version or "router"
            pods.append(
                {
                    "metadata": {
                        "name": f"{name}-{i}",
                        "uid": f"pod-{name}-{i}",
                        "labels": labels,
                        "ownerReferences": [{"uid": self._uid("ReplicaSet", name), "controller": True}],
                    },
                    "status": {"podIP": ip, "conditions": [{"type": "Ready", "status": "True"}]},
                }
            )
        return pods


class Servers:
    """The pods' /metrics: counters that grow with each scrape; the bad model's (v3) requests fail."""

    def __init__(self, cluster: SimCluster) -> None:
        self.cluster = cluster
        self.scrapes = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.scrapes += 1
        version = self.cluster.ips.get(request.url.host, "router")
        if version == "router":
            return httpx.Response(200, text="")
        n = 100 * self.scrapes
        codes = {200: n, 500: n} if version == "3" else {200: n}
        return httpx.Response(200, text=server_text(codes, latencies=[0.01] * 20, scores=[0.3, 0.6] * 10))


def spec(version: str, max_body: int) -> dict[str, Any]:
    return {
        "model": {"uri": f"s3://models/churn/v{version}", "format": "onnx", "version": version},
        "replicas": 2,
        "server": {"maxBodyBytes": max_body},
        "rollout": {
            "strategy": "Canary",
            "steps": [{"setWeight": 50}, {"analysis": {"duration": "20s"}}],
            "analysis": {
                "interval": "8s",
                "minSamples": 10,
                "failureLimit": 0,
                "checks": [{"name": "errors", "type": "errorRate", "threshold": {"max": 0.05}}],
            },
            "progressDeadlineSeconds": 600,
            "scaleDownDelaySeconds": 0,
        },
    }


def body(the_spec: dict[str, Any], status: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "modeldeploy.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {
            "name": NAME,
            "namespace": NAMESPACE,
            "uid": UID,
            "generation": 1,
            "resourceVersion": "7",
        },
        "spec": the_spec,
        "status": copy.deepcopy(status),
    }


def test_scrape_baselines_stay_bounded_over_many_rollouts(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [START]
    monkeypatch.setattr(reconciler_module, "_now", lambda: clock[0])
    cluster = SimCluster()
    servers = Servers(cluster)
    reconciler = Reconciler(cluster, OperatorSettings())  # type: ignore[arg-type]
    scrape = BuiltinScrapeSource(httpx.Client(transport=httpx.MockTransport(servers)), clock=lambda: clock[0])
    reconciler.analysis = AnalysisSources(scrape)  # no pool: the passes measure in line

    def run_until(the_spec: dict[str, Any], done: Any, passes: int = 60) -> list[int]:
        """Passes until `done()`; the baselines kept after each."""
        kept = []
        for _ in range(passes):
            reconciler.reconcile(body(the_spec, cluster.status))
            kept.append(scrape.baselines())
            clock[0] += dt.timedelta(seconds=PASS_SECONDS)
            if done():
                return kept
        raise AssertionError(f"not done after {passes} passes: {cluster.status}")

    def settled_on(version: str) -> bool:
        status = cluster.status
        return (
            status.get("phase") == "Ready"
            and status.get("modelVersion") == version
            and not status.get("canaryRevision")
        )

    def decided_after(before: int) -> Any:
        def decided() -> bool:
            last = max(cluster.status.get("history") or [{}], key=lambda e: e.get("revision", 0))
            return last.get("revision", 0) > before and last.get("outcome") in ("Promoted", "Aborted")

        return decided

    stable = ("1", 16 * 1024 * 1024)
    run_until(spec(*stable), lambda: settled_on("1"))
    outcomes, most_kept = [], 0
    for cycle in range(1, CYCLES + 1):
        promote = cycle % 2 == 1
        version = ("2" if stable[0] == "1" else "1") if promote else "3"
        canary = (version, stable[1] - 1024 * cycle)  # a new revision every cycle, as the soak's
        before = max((e.get("revision", 0) for e in cluster.status.get("history") or []), default=0)
        kept = run_until(spec(*canary), decided_after(before))
        outcome = max(cluster.status["history"], key=lambda e: e["revision"])["outcome"]
        outcomes.append(outcome)
        most_kept = max(most_kept, *kept)
        if outcome == "Promoted":
            stable = canary
        kept = run_until(spec(*stable), partial(settled_on, stable[0]))  # (aborted: the spec set back)
        assert kept[-1] == 0, (cycle, outcome, kept)  # the rollout ended: its baseline went
    assert most_kept == 1  # during a rollout, its own baseline only
    assert scrape.baselines() == 0

    # A rollout under way keeps its baseline until the ModelDeployment is deleted.
    before = max(e.get("revision", 0) for e in cluster.status["history"])
    run_until(spec("3", 1024 * 1024), lambda: cluster.status.get("analysis") is not None)
    assert scrape.baselines() == 1
    assert not decided_after(before)()
    reconciler.forget(NAMESPACE, NAME, UID)
    assert scrape.baselines() == 0
    assert outcomes == ["Promoted", "Aborted"] * (CYCLES // 2)  # decided by the analysis itself
    assert servers.scrapes > 0
