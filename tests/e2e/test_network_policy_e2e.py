"""NetworkPolicies enforced on the local cluster's real node (kube-network-policies, a host daemon):
the chart-installed operator makes them for each ModelDeployment (networkPolicies.enabled, on by
default), and

- a stranger pod in another namespace cannot open a connection to a model server, but reaches the
  router, and a prediction it sends through the router is answered (the router reaches the servers);
- a canary rollout with analysis still walks its steps and is promoted: the operator still scrapes
  the model servers' /metrics (a check passes only on data it read), with no failed request.

Connections from the host (the tests' own traffic, the kubelet's probes) are not subject to the
policies: kube-network-policies lets the node's root-owned sockets through.
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from kubernetes import client

from modeldeploy_testcluster import controlplane
from modeldeploy_testcluster.layout import Layout, binaries_dir

from cluster_helpers import create_mdep, wait_for
from rollout_helpers import canary_md, dump, model, ready_on, rows, set_model, status
from traffic import Traffic

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.usefixtures("operator_release")]

PROBE = r"""
import json, sys, time, urllib.request
results = {}
for label, url, body in json.loads(sys.argv[1]):
    started = time.monotonic()
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=4) as answer:
            results[label] = [answer.status, answer.read(2000).decode(errors="replace")]
    except urllib.error.HTTPError as error:
        results[label] = [error.code, ""]
    except Exception as error:  # connection refused, timed out: no HTTP status at all
        results[label] = [0, repr(error)]
    results[label].append(round(time.monotonic() - started, 2))
print(json.dumps(results))
"""


@pytest.fixture(scope="module")
def enforced(local_cluster: Layout) -> Iterator[None]:
    with controlplane.network_policy_enforcement(local_cluster):
        yield


@pytest.fixture
def stranger_namespace(kube_api: client.ApiClient) -> Iterator[str]:
    core = client.CoreV1Api(kube_api)
    name = f"t-{uuid.uuid4().hex[:8]}-stranger"
    core.create_namespace({"metadata": {"name": name, "labels": {"modeldeploy.io/test": "true"}}})
    yield name
    core.delete_namespace(name)


def _kubectl(layout: Layout, *args: str, timeout: float = 60) -> str:
    result = subprocess.run(
        [str(binaries_dir() / "kubectl"), f"--kubeconfig={layout.admin_kubeconfig}", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
    )
    assert result.returncode == 0, f"kubectl {' '.join(args[:3])}: {result.stderr}"
    return result.stdout


def _pods(core: client.CoreV1Api, namespace: str, component: str) -> list[Any]:
    return [
        pod
        for pod in core.list_namespaced_pod(
            namespace, label_selector=f"app.kubernetes.io/component={component}"
        ).items
        if pod.status.pod_ip and pod.metadata.deletion_timestamp is None
    ]


def _start_stranger(core: client.CoreV1Api, namespace: str, image: str) -> str:
    """A pod that is nobody's router, running the serving image for its Python, in another namespace."""
    core.create_namespaced_pod(
        namespace,
        {
            "metadata": {"name": "stranger", "labels": {"app": "stranger"}},
            "spec": {
                "terminationGracePeriodSeconds": 0,
                "containers": [
                    {
                        "name": "probe",
                        "image": image,
                        "command": ["python3", "-c", "import time; time.sleep(3600)"],
                        "securityContext": {
                            "runAsNonRoot": True,
                            "runAsUser": 10001,
                            "allowPrivilegeEscalation": False,
                            "capabilities": {"drop": ["ALL"]},
                            "seccompProfile": {"type": "RuntimeDefault"},
                        },
                    }
                ],
            },
        },
    )

    def running() -> bool:
        pod = core.read_namespaced_pod("stranger", namespace)
        return bool(pod.status.pod_ip) and any(s.ready for s in pod.status.container_statuses or [])

    wait_for("the stranger pod running", running, timeout=120)
    return "stranger"


def _probe(layout: Layout, namespace: str, targets: list[tuple[str, str, Any]]) -> dict[str, list[Any]]:
    out = _kubectl(
        layout, "exec", "-n", namespace, "stranger", "--", "python3", "-c", PROBE, json.dumps(targets)
    )
    result: dict[str, list[Any]] = json.loads(out.strip().splitlines()[-1])
    return result


def test_a_stranger_is_refused_by_model_servers_but_reaches_the_router_which_reaches_them(
    enforced: None,
    local_cluster: Layout,
    kube_api: client.ApiClient,
    namespace: str,
    stranger_namespace: str,
    model_store: str,
    churn_bundles: Path,
) -> None:
    core = client.CoreV1Api(kube_api)
    create_mdep(kube_api, namespace, canary_md(model_store, churn_bundles))
    wait_for("v1 Ready", lambda: ready_on(kube_api, namespace, "1"), timeout=180)
    policies = client.NetworkingV1Api(kube_api).list_namespaced_network_policy(namespace).items
    assert sorted(p.metadata.name for p in policies) == ["churn-model-servers", "churn-router"]
    assert all(p.metadata.owner_references[0].kind == "ModelDeployment" for p in policies)

    servers = _pods(core, namespace, "model-server")
    routers = _pods(core, namespace, "router")
    assert servers
    assert routers
    _start_stranger(core, stranger_namespace, servers[0].spec.containers[0].image)
    row = rows(churn_bundles)[0]
    infer = {"inputs": [{"name": "input", "datatype": "FP64", "shape": [1, len(row)], "data": row}]}
    service = f"http://churn.{namespace}.svc.cluster.local:8080"
    targets: list[tuple[str, str, Any]] = [
        ("router-service-ready", f"{service}/readyz", None),
        ("router-pod-ready", f"http://{routers[0].status.pod_ip}:8080/readyz", None),
        ("predict-through-router", f"{service}/v2/models/churn/infer", infer),
    ]
    targets += [
        (f"server-{i}", f"http://{pod.status.pod_ip}:8080/v2/health/ready", None)
        for i, pod in enumerate(servers)
    ]
    targets.append(("server-predict", f"http://{servers[0].status.pod_ip}:8080/v2/models/churn/infer", infer))
    results = _probe(local_cluster, stranger_namespace, targets)
    print(
        json.dumps(
            {label: [code, detail[:120], seconds] for label, (code, detail, seconds) in results.items()}
        )
    )

    assert results["router-service-ready"][0] == 200, results
    assert results["router-pod-ready"][0] == 200, results
    assert results["predict-through-router"][0] == 200, results
    assert "outputs" in results["predict-through-router"][1]
    for label, (code, detail, _) in results.items():
        if label.startswith("server-"):
            assert code == 0, f"{label}: a stranger reached a model server ({code} {detail})"
    # The host (root, like the kubelet's probes) still reaches a server directly: only pods are fenced.
    assert httpx.get(f"http://{servers[0].status.pod_ip}:8080/v2/health/ready", timeout=5).status_code == 200


def test_a_canary_with_analysis_is_promoted_with_policies_on(
    enforced: None,
    kube_api: client.ApiClient,
    namespace: str,
    model_store: str,
    churn_bundles: Path,
) -> None:
    # The deadline is not what this test is about: a CI run (2026-12-03) had this canary, early in
    # the run with every worker busy, not promoted within the default 120 s.
    create_mdep(kube_api, namespace, canary_md(model_store, churn_bundles, deadline=480))
    v1 = wait_for("v1 Ready", lambda: ready_on(kube_api, namespace, "1"), timeout=180)["stableRevision"]
    assert client.NetworkingV1Api(kube_api).list_namespaced_network_policy(namespace).items
    seen: set[tuple[str, str]] = set()
    try:
        with Traffic(kube_api, namespace, "churn", rows(churn_bundles)) as traffic:
            wait_for("traffic through the router", lambda: len(traffic.results) > 40, timeout=60)
            set_model(kube_api, namespace, model(model_store, churn_bundles, "2"))
            started = time.monotonic()
            deadline, last = started + 540, ""
            while time.monotonic() < deadline and not ready_on(kube_api, namespace, "2"):
                current = status(kube_api, namespace)
                checks = current.get("analysis", {}).get("checks", [])
                seen |= {(c["name"], c["result"]) for c in checks}
                # How the rollout went, on change only: where the time goes when it is slow (447 s
                # in a CI run of 2026-12-03, against about 100 s alone).
                now = json.dumps(
                    [current.get(k) for k in ("phase", "currentStepIndex", "canaryWeight", "pause")]
                    + [
                        (
                            c["name"],
                            c.get("result"),
                            c.get("inconclusive"),
                            (c.get("measurements") or [{}])[-1],
                        )
                        for c in checks
                    ],
                    default=str,
                )
                if now != last:
                    print(f"{time.monotonic() - started:6.1f}s {now[:600]}")
                    last = now
                time.sleep(0.5)
            final = wait_for("v2 promoted", lambda: ready_on(kube_api, namespace, "2"), timeout=5)
    except BaseException:
        print("checks seen:", sorted(seen))
        dump(kube_api, namespace)
        raise
    assert final["stableRevision"] != v1
    assert final["history"][-1]["outcome"] == "Promoted"
    # A Pass needs readings: the operator scraped the servers' /metrics through their NetworkPolicy.
    assert ("errors", "Pass") in seen, seen
    assert traffic.failures() == []


def test_a_stranger_is_refused_by_the_joiner_but_the_router_forwards_labels_to_it(
    enforced: None,
    local_cluster: Layout,
    kube_api: client.ApiClient,
    namespace: str,
    stranger_namespace: str,
    model_store: str,
    churn_bundles: Path,
) -> None:
    """spec.effectiveness with policies on: the joiner's port is closed to a stranger pod, while the
    model server's feed, the router's feedback route and the host still reach it."""
    core = client.CoreV1Api(kube_api)
    body = canary_md(model_store, churn_bundles)
    body["spec"]["effectiveness"] = {"retention": "24h"}
    create_mdep(kube_api, namespace, body)
    wait_for("v1 Ready", lambda: ready_on(kube_api, namespace, "1"), timeout=180)
    joiners = wait_for("a running joiner pod", lambda: _pods(core, namespace, "joiner") or None, timeout=240)
    policies = client.NetworkingV1Api(kube_api).list_namespaced_network_policy(namespace).items
    assert sorted(p.metadata.name for p in policies) == [
        "churn-joiner",
        "churn-model-servers",
        "churn-router",
    ]
    servers = _pods(core, namespace, "model-server")
    _start_stranger(core, stranger_namespace, servers[0].spec.containers[0].image)
    row = rows(churn_bundles)[0]
    infer = {"inputs": [{"name": "input", "datatype": "FP64", "shape": [1, len(row)], "data": row}]}
    service = f"http://churn.{namespace}.svc.cluster.local:8080"
    joiner_pod = f"http://{joiners[0].status.pod_ip}:8090"
    joiner_service = f"http://churn-joiner.{namespace}.svc.cluster.local:8090"
    label = {"request_id": "stranger-label", "label": 1}
    results = _probe(
        local_cluster,
        stranger_namespace,
        [
            ("predict-through-router", f"{service}/v2/models/churn/infer", infer),
            ("feedback-through-router", f"{service}/v2/models/churn/feedback", label),
            ("joiner-pod-ready", f"{joiner_pod}/readyz", None),
            ("joiner-service-feedback", f"{joiner_service}/v1/feedback", label),
            ("joiner-service-intake", f"{joiner_service}/v1/predictions", {"request_id": "forged"}),
        ],
    )
    print(json.dumps({k: [code, detail[:120], s] for k, (code, detail, s) in results.items()}))
    assert results["predict-through-router"][0] == 200, results
    # the router reached the joiner: a per-item answer (the label's request id is unknown to it)
    assert results["feedback-through-router"][0] == 200, results
    assert "unknown_request" in results["feedback-through-router"][1]
    for name in ("joiner-pod-ready", "joiner-service-feedback", "joiner-service-intake"):
        assert results[name][0] == 0, f"{name}: a stranger reached the joiner ({results[name]})"
    # the model servers still feed it: the stranger's prediction through the router is recorded
    wait_for(
        "the joiner recording the model servers' predictions",
        lambda: (
            'modeldeploy_joiner_predictions_total{outcome="stored"}'
            in httpx.get(f"{joiner_pod}/metrics", timeout=5).text
            or None
        ),
        timeout=120,
    )
