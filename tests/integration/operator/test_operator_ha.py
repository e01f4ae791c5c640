"""Two operator replicas: one leads (holds the Lease and reconciles), the other waits; when the leader
goes, another replica takes over. Each replica exposes health and Prometheus metrics."""

from __future__ import annotations

import urllib.request

import pytest
from kubernetes import client

from cluster_helpers import create_mdep, get_mdep, wait_for
from operator_fixtures import OPERATOR_PODS

pytestmark = [pytest.mark.cluster, pytest.mark.usefixtures("operator_release")]


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return str(response.read().decode())


def _leader_metric(text: str) -> float:
    line = next(li for li in text.splitlines() if li.startswith("modeldeploy_operator_leader "))
    return float(line.split()[1])


@pytest.mark.cluster_exclusive  # deletes the shared operator's leader
def test_one_replica_leads_and_a_standby_takes_over(
    kube_api: client.ApiClient, namespace: str, operator_release: str
) -> None:
    core = client.CoreV1Api(kube_api)
    leases = client.CoordinationV1Api(kube_api)

    def running_pods() -> list[client.V1Pod]:
        pods = core.list_namespaced_pod(operator_release, label_selector=OPERATOR_PODS).items
        return [
            p
            for p in pods
            if p.status.phase == "Running"
            and not p.metadata.deletion_timestamp
            and all(c.ready for c in p.status.container_statuses or [])
        ]

    pods = wait_for(
        "two ready operator replicas",
        lambda: running if len(running := running_pods()) == 2 else None,
        timeout=90,
    )
    holder = wait_for(
        "a lease holder among them",
        lambda: (
            (h := leases.read_namespaced_lease("modeldeploy", operator_release).spec.holder_identity)
            in {p.metadata.name for p in pods}
            and h
        ),
        timeout=60,
    )

    for pod in pods:
        assert _get(f"http://{pod.status.pod_ip}:8081/healthz") == '{"status":"ok"}'
        metrics = _get(f"http://{pod.status.pod_ip}:9090/metrics")
        assert _leader_metric(metrics) == (1.0 if pod.metadata.name == holder else 0.0)

    create_mdep(
        kube_api,
        namespace,
        {
            "apiVersion": "modeldeploy.io/v1alpha1",
            "kind": "ModelDeployment",
            "metadata": {"name": "ha"},
            "spec": {
                "model": {"uri": "http://10.244.0.1:1/x", "format": "onnx", "version": "1"},
                "replicas": 1,
            },
        },
    )
    wait_for("the leader to reconcile", lambda: get_mdep(kube_api, namespace, "ha").get("status"))
    leader = next(p for p in pods if p.metadata.name == holder)
    assert "modeldeploy_operator_reconciles_total" in _get(f"http://{leader.status.pod_ip}:9090/metrics")

    # The old leader releases the Lease on SIGTERM; another replica (the standby, or the pod that
    # replaces the deleted one, whichever asks first) takes it.
    core.delete_namespaced_pod(holder, operator_release)

    def new_holder() -> str | None:
        current = leases.read_namespaced_lease("modeldeploy", operator_release).spec.holder_identity
        alive = {p.metadata.name for p in running_pods()}
        return current if current and current != holder and current in alive else None

    wait_for("another replica to take the lease", new_holder, timeout=60)
