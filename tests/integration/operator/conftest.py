"""The operator, installed with its Helm chart into the local cluster and running in-cluster on the
process node with the chart's ServiceAccount and RBAC (never admin credentials)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cluster_helpers import REPO, helm, wait_for
from kubernetes import client

from modeldeploy_testcluster import nodes
from modeldeploy_testcluster.layout import Layout

RELEASE = "modeldeploy"
RELEASE_NAMESPACE = "modeldeploy-system"


def _operator_ready(api: client.ApiClient) -> bool:
    deployment = client.AppsV1Api(api).read_namespaced_deployment(RELEASE, RELEASE_NAMESPACE)
    return (deployment.status.ready_replicas or 0) >= 1


@pytest.fixture(scope="session")
def operator_release(local_cluster: Layout, kubeconfig: Path) -> Iterator[str]:
    """Installs (or upgrades) the chart once per session; yields the release namespace."""
    helm(
        "upgrade",
        "--install",
        RELEASE,
        str(REPO / "charts" / "modeldeploy"),
        "--namespace",
        RELEASE_NAMESPACE,
        "--create-namespace",
        "--wait",
        "--timeout",
        "120s",
        "--set",
        "operator.resyncSeconds=10",
        # The pods run this checkout's code: restart them so an upgrade picks up edits.
        "--set-string",
        rf"podAnnotations.modeldeploy\.io/test-session={time.time_ns()}",
        kubeconfig=kubeconfig,
    )
    api = nodes.admin_api(local_cluster)
    wait_for("the operator to be ready", lambda: _operator_ready(api), timeout=60)
    yield RELEASE_NAMESPACE
    helm("uninstall", RELEASE, "--namespace", RELEASE_NAMESPACE, "--wait", kubeconfig=kubeconfig)
