"""The operator also runs out of cluster, from a kubeconfig: here one holding a token of the chart's
ServiceAccount, so the chart's RBAC is what it gets (the in-cluster replicas are scaled to 0 meanwhile)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client

from modeldeploy_testcluster.kubeconfig import write_kubeconfig
from modeldeploy_testcluster.layout import Layout

from cluster_helpers import SERVING, create_mdep, get_mdep, wait_for
from local_processes import free_port
from operator_fixtures import OPERATOR_PODS

pytestmark = [pytest.mark.cluster]


@pytest.fixture
def in_cluster_operator_stopped(kube_api: client.ApiClient, operator_release: str) -> Iterator[None]:
    apps = client.AppsV1Api(kube_api)
    # Restored even when stopping fails: every later test needs the in-cluster operator.
    try:
        apps.patch_namespaced_deployment_scale("modeldeploy", operator_release, {"spec": {"replicas": 0}})
        core = client.CoreV1Api(kube_api)
        wait_for(
            "the in-cluster operator to stop",
            lambda: (
                not [
                    # Running operator pods only: a finished `helm test` pod carries the chart's labels too.
                    p
                    for p in core.list_namespaced_pod(operator_release, label_selector=OPERATOR_PODS).items
                    if p.status.phase not in ("Succeeded", "Failed")
                ]
            ),
            timeout=60,
        )
        yield
    finally:
        apps.patch_namespaced_deployment_scale("modeldeploy", operator_release, {"spec": {"replicas": 2}})
    wait_for(
        "the in-cluster operator back",
        lambda: (
            (apps.read_namespaced_deployment("modeldeploy", operator_release).status.ready_replicas or 0) >= 1
        ),
        timeout=90,
    )


@pytest.mark.usefixtures("in_cluster_operator_stopped")
@pytest.mark.cluster_exclusive  # scales the shared operator to zero and runs one on the host
def test_operator_out_of_cluster_with_the_charts_service_account(
    kube_api: client.ApiClient, namespace: str, operator_release: str, local_cluster: Layout, tmp_path: Path
) -> None:
    token = (
        client.CoreV1Api(kube_api)
        .create_namespaced_service_account_token(
            "modeldeploy", operator_release, {"spec": {"expirationSeconds": 3600}}
        )
        .status.token
    )
    kubeconfig = write_kubeconfig(
        tmp_path / "operator.kubeconfig",
        local_cluster.apiserver_url,
        local_cluster.pki_dir / "ca.crt",
        "modeldeploy",
        token=token,
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KUBERNETES_", "MODELDEPLOY_"))}
    env |= {
        "KUBECONFIG": str(kubeconfig),
        "MODELDEPLOY_OPERATOR_LEASE_NAMESPACE": operator_release,
        "MODELDEPLOY_OPERATOR_LEASE_NAME": "modeldeploy",  # the one Lease the chart's RBAC grants
        "MODELDEPLOY_OPERATOR_HEALTH_PORT": str(free_port()),
        "MODELDEPLOY_OPERATOR_METRICS_PORT": str(free_port()),
    }
    log = (tmp_path / "operator.log").open("wb")
    operator = subprocess.Popen(
        [str(Path(sys.executable).parent / "modeldeploy-operator")],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        create_mdep(
            kube_api,
            namespace,
            {
                "apiVersion": "modeldeploy.io/v1alpha1",
                "kind": "ModelDeployment",
                "metadata": {"name": "outside"},
                "spec": {
                    "model": {"uri": "http://10.244.0.1:1/x", "format": "onnx", "version": "1"},
                    "replicas": 1,
                },
            },
        )
        wait_for(
            "a status from the out-of-cluster operator",
            lambda: get_mdep(kube_api, namespace, "outside").get("status", {}).get("observedGeneration"),
            timeout=60,
        )
        deployments = (
            client.AppsV1Api(kube_api)
            .list_namespaced_deployment(namespace, label_selector=SERVING.format("outside"))
            .items
        )
        assert len(deployments) == 1
    finally:
        operator.terminate()
        operator.wait(timeout=30)
    assert operator.returncode == 0, (tmp_path / "operator.log").read_text()[-3000:]
