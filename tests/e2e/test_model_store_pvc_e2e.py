"""A PersistentVolumeClaim as the model store, end to end (issue 13): a hostPath PersistentVolume on the
real node holding packed churn bundles, bound to a claim in the test's namespace; a ModelDeployment
with `model.uri: pvc://<claim>/<path>` gets the claim mounted read-only by the chart-installed
operator, its server reads the bundle there, and it becomes Ready and predicts. The same store under
a spec whose `model.format` the bundle cannot be served as ends Degraded with reason
ModelFormatMismatch and one Warning Event, from the server's refusal (this checkout's images: the
operator_release fixture builds and pushes them first)."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from kubernetes import client

from modeldeploy_testcluster.layout import Layout

from cluster_helpers import FIRST_READY_SECONDS, condition, create_mdep, get_mdep, hostpath_claim, wait_for
from rollout_helpers import rows
from traffic import ready_endpoints

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.slow,
    pytest.mark.usefixtures("operator_release"),  # this checkout's CRD, operator and serving image
]

CLAIM = "models"


@pytest.fixture(scope="module")
def onnx_bundle(churn_bundles: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The churn v1 model packed as an ONNX bundle (its checked export as the model): a bundle that an
    xgboost spec must refuse."""
    from modeldeploy_serving.pack import pack

    out = tmp_path_factory.mktemp("onnx-bundle") / "bundle"
    pack(
        model=churn_bundles / "v1" / "model.onnx",
        onnx=None,
        train_data=churn_bundles / "data" / "v1" / "train.csv",
        validation_data=churn_bundles / "data" / "v1" / "validation.csv",
        label="retained",
        name="churn",
        version="1",
        out=out,
    )
    return out


@dataclass(frozen=True)
class Store:
    claim: str
    folder: Path
    """The PersistentVolume's hostPath on the real node (this machine)."""


@pytest.fixture
def pvc_store(
    kube_api: client.ApiClient,
    namespace: str,
    local_cluster: Layout,
    churn_bundles: Path,
    onnx_bundle: Path,
) -> Iterator[Store]:
    """A claim `models` in the test's namespace, bound to a hostPath PersistentVolume on the real node
    holding `churn/v1` (an XGBoost bundle with its ONNX export) and `churn/onnx-v1` (an ONNX bundle)."""
    if not local_cluster.real_node_default:
        pytest.skip("a hostPath volume needs the real node (MODELDEPLOY_REAL_NODE_DEFAULT=1)")
    folder = Path(tempfile.mkdtemp(prefix=f"modeldeploy-pvc-{namespace}-"))
    shutil.copytree(churn_bundles / "v1", folder / "churn" / "v1")
    shutil.copytree(onnx_bundle, folder / "churn" / "onnx-v1")
    # The server runs as uid 10001 and a hostPath volume keeps the host's owners and modes.
    for path in [folder, *folder.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    try:
        with hostpath_claim(kube_api, namespace, local_cluster, CLAIM, folder, "ReadOnlyMany") as claim:
            yield Store(claim, folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def mdep(uri: str, **model: str) -> dict[str, Any]:
    return {
        "apiVersion": "modeldeploy.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "churn"},
        "spec": {"model": {"uri": uri, "version": "1", **model}, "replicas": 1},
    }


def serving_pods(api: client.ApiClient, namespace: str) -> list[Any]:
    selector = "modeldeploy.io/deployment=churn,app.kubernetes.io/component=model-server"
    return list(client.CoreV1Api(api).list_namespaced_pod(namespace, label_selector=selector).items)


def test_a_model_deployment_serves_a_bundle_from_a_claim(
    kube_api: client.ApiClient, namespace: str, pvc_store: Store, churn_bundles: Path, local_cluster: Layout
) -> None:
    create_mdep(kube_api, namespace, mdep(f"pvc://{pvc_store.claim}/churn/v1"))

    def ready() -> dict[str, Any] | None:
        body = get_mdep(kube_api, namespace, "churn")
        return body if (body.get("status") or {}).get("phase") == "Ready" else None

    ready_body = wait_for("Ready from the claim", ready, timeout=FIRST_READY_SECONDS)
    assert ready_body["spec"]["model"]["format"] == "auto"  # the CRD's default
    # The claim is mounted read-only where the server reads it, on the real node.
    (pod, *_) = serving_pods(kube_api, namespace)
    assert pod.spec.node_name == local_cluster.real_node_name
    (volume,) = [v for v in pod.spec.volumes if v.name == "model-store"]
    assert (volume.persistent_volume_claim.claim_name, volume.persistent_volume_claim.read_only) == (
        pvc_store.claim,
        True,
    )
    (mount,) = [m for m in pod.spec.containers[0].volume_mounts if m.name == "model-store"]
    assert (mount.mount_path, mount.read_only) == (f"/mnt/models/{pvc_store.claim}", True)
    # ... and it predicts, through the router (the stable Service's endpoints, on the pod network).
    endpoints = wait_for("the router's endpoints", lambda: ready_endpoints(kube_api, namespace, "churn"))
    batch = rows(churn_bundles)[:5]
    body = {
        "inputs": [
            {
                "name": "input",
                "datatype": "FP32",
                "shape": [len(batch), len(batch[0])],
                "data": [v for row in batch for v in row],
            }
        ]
    }
    answer = httpx.post(f"{endpoints[0]}/v2/models/churn/infer", json=body, timeout=30)
    assert answer.status_code == 200, answer.text
    outputs = {o["name"]: o for o in answer.json()["outputs"]}
    assert outputs["probabilities"]["shape"][0] == len(batch)


def test_a_bundle_of_another_format_on_the_claim_is_degraded_with_the_reason(
    kube_api: client.ApiClient, namespace: str, pvc_store: Store
) -> None:
    # An ONNX bundle under a spec that says xgboost.
    create_mdep(kube_api, namespace, mdep(f"pvc://{pvc_store.claim}/churn/onnx-v1", format="xgboost"))

    def degraded() -> dict[str, Any] | None:
        found = condition(get_mdep(kube_api, namespace, "churn"), "Degraded")
        return found if found and found.get("reason") == "ModelFormatMismatch" else None

    found = wait_for("Degraded ModelFormatMismatch", degraded, timeout=FIRST_READY_SECONDS)
    assert found["status"] == "True"
    assert "bundle is onnx, spec.model.format says xgboost" in found["message"]

    def events() -> list[Any]:
        return [
            e
            for e in client.CoreV1Api(kube_api)
            .list_namespaced_event(namespace, field_selector="involvedObject.name=churn")
            .items
            if e.reason == "ModelFormatMismatch"
        ]

    (event,) = wait_for("the ModelFormatMismatch Event", events, timeout=30)
    assert event.type == "Warning"
    assert "bundle is onnx, spec.model.format says xgboost" in event.message
    # The servers never became ready with the refused bundle.
    assert all(
        not any(c.ready for c in pod.status.container_statuses or [])
        for pod in serving_pods(kube_api, namespace)
    )
