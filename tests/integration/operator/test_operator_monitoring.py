"""Monitoring on the real API server: the Prometheus Operator's CRDs (from its Go module) installed,
the chart's ServiceMonitor, PodMonitor and dashboard ConfigMap accepted by `helm install`, and the
chart's `helm test` hook passing against the installed operator."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from modeldeploy_testcluster.layout import Layout, binaries_dir, prometheus_operator_crds_dir

from cluster_helpers import REPO, helm
from operator_fixtures import RELEASE, RELEASE_NAMESPACE

pytestmark = [pytest.mark.cluster, pytest.mark.usefixtures("operator_release")]
MONITORING = ("monitoring.coreos.com", "v1")
CRDS = ("servicemonitors", "podmonitors")


def _kubectl(kubeconfig: Path, *args: str) -> str:
    result = subprocess.run(
        [str(binaries_dir() / "kubectl"), f"--kubeconfig={kubeconfig}", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture
def prometheus_operator_crds(local_cluster: Layout, kubeconfig: Path) -> list[str]:
    """The ServiceMonitor and PodMonitor CRDs (left installed, like the Gateway API's: nothing in the
    chart uses them unless asked)."""
    folder = prometheus_operator_crds_dir()
    if not folder.exists():
        pytest.skip(f"{folder} is missing: run `make binaries`")
    names = [f"{plural}.{MONITORING[0]}" for plural in CRDS]
    for plural in CRDS:
        path = folder / f"{MONITORING[0]}_{plural}.yaml"
        _kubectl(kubeconfig, "apply", "--server-side", "--force-conflicts", "-f", str(path))
    _kubectl(kubeconfig, "wait", "--for=condition=Established", "--timeout=60s", *(f"crd/{n}" for n in names))
    return names


@pytest.fixture
def monitored_release(
    prometheus_operator_crds: list[str], kubeconfig: Path, namespace: str, local_cluster: Layout
) -> Iterator[str]:
    """A second, namespaced release (it watches only the test's empty namespace, so it never meets
    the session operator's ModelDeployments) with every monitoring object on."""
    release, release_namespace = "mdmon", f"{namespace}-sys"
    helm(
        "upgrade",
        "--install",
        release,
        str(REPO / "charts" / "modeldeploy"),
        "--namespace",
        release_namespace,
        "--create-namespace",
        "--set",
        "replicaCount=1",
        "--set",
        "watch.scope=namespaced",
        "--set",
        f"watch.namespaces={{{namespace}}}",
        "--set",
        "metrics.serviceMonitor.enabled=true",
        "--set",
        "metrics.serviceMonitor.interval=15s",
        "--set",
        "metrics.serviceMonitor.labels.release=kube-prometheus-stack",
        "--set",
        "metrics.podMonitor.enabled=true",
        "--set",
        "dashboards.enabled=true",
        "--set",
        f"image.registry={local_cluster.registry}",
        kubeconfig=kubeconfig,
    )
    yield release_namespace
    helm("uninstall", release, "--namespace", release_namespace, "--wait", kubeconfig=kubeconfig)
    _kubectl(kubeconfig, "delete", "namespace", release_namespace, "--wait=false")


def _get(api: client.ApiClient, plural: str, namespace: str, name: str) -> dict[str, Any]:
    found: dict[str, Any] = client.CustomObjectsApi(api).get_namespaced_custom_object(
        *MONITORING, namespace, plural, name
    )
    return found


def test_the_api_server_accepts_the_charts_monitors_and_dashboard(
    kube_api: client.ApiClient, monitored_release: str, namespace: str
) -> None:
    service_monitor = _get(kube_api, "servicemonitors", monitored_release, "mdmon-modeldeploy")
    assert service_monitor["spec"]["endpoints"] == [
        {"port": "metrics", "path": "/metrics", "honorLabels": True, "interval": "15s"}
    ]
    assert service_monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    # The Service it selects exists and has the port it names.
    selector = service_monitor["spec"]["selector"]["matchLabels"]
    services = client.CoreV1Api(kube_api).list_namespaced_service(
        monitored_release, label_selector=",".join(f"{k}={v}" for k, v in selector.items())
    )
    assert [p.name for s in services.items for p in s.spec.ports] == ["metrics", "health"]

    pod_monitor = _get(kube_api, "podmonitors", monitored_release, "mdmon-modeldeploy-serving")
    assert pod_monitor["spec"]["namespaceSelector"] == {"matchNames": [namespace]}
    assert pod_monitor["spec"]["podMetricsEndpoints"][0]["port"] == "http"

    dashboard = client.CoreV1Api(kube_api).read_namespaced_config_map(
        "mdmon-modeldeploy-dashboard", monitored_release
    )
    assert dashboard.metadata.labels["grafana_dashboard"] == "1"
    assert json.loads(dashboard.data["modeldeploy.json"])["uid"] == "modeldeploy"


def test_the_api_server_refuses_a_monitor_the_crd_forbids(
    kube_api: client.ApiClient, prometheus_operator_crds: list[str], namespace: str
) -> None:
    """The CRDs really validate (so the acceptance above means something)."""
    bad = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PodMonitor",
        "metadata": {"name": "bad"},
        "spec": {"selector": {}, "podMetricsEndpoints": [{"port": "http", "scheme": "gopher"}]},
    }
    with pytest.raises(client.ApiException) as refused:
        client.CustomObjectsApi(kube_api).create_namespaced_custom_object(
            *MONITORING, namespace, "podmonitors", bad
        )
    assert refused.value.status == 422
    assert "scheme" in refused.value.body


def test_helm_test_calls_the_operators_health_endpoint(kubeconfig: Path) -> None:
    # `helm test` fails (and helm() raises) unless the hook pod succeeds.
    out = helm(
        "test",
        RELEASE,
        "--namespace",
        RELEASE_NAMESPACE,
        "--timeout",
        "180s",
        "--logs",
        kubeconfig=kubeconfig,
    )
    assert "healthz 200" in out, out
    assert "metrics 200 ok" in out, out
