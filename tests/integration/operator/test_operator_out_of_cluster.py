"""The operator also runs out of cluster, from a kubeconfig: here one holding a token of the chart's
ServiceAccount, so the chart's RBAC is what it gets. It runs as an operator instance of its own
(`MODELDEPLOY_OPERATOR_INSTANCE_ID`, docs/operator.md), beside the in-cluster one, which leaves its
ModelDeployment alone: the test needs neither the cluster to itself nor the shared operator stopped.
It runs without leader election: the chart's RBAC grants the one Lease the in-cluster replicas hold
(and they prove it works)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from kubernetes import client

from modeldeploy_testcluster.kubeconfig import write_kubeconfig
from modeldeploy_testcluster.layout import Layout

from cluster_helpers import SERVING, create_mdep, get_mdep, wait_for
from local_processes import free_port
from operator_fixtures import INSTANCE_LABEL

pytestmark = [pytest.mark.cluster]


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
        "MODELDEPLOY_OPERATOR_INSTANCE_ID": namespace,
        "MODELDEPLOY_OPERATOR_LEADER_ELECTION": "false",
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
                "metadata": {"name": "outside", "labels": {INSTANCE_LABEL: namespace}},
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
