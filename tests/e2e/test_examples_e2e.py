"""Every manifest under examples/ applied on the local cluster the way its README tells a user, until
its ModelDeployments are Ready (issue 13): no placeholder digest, no store that nothing creates.

What the READMEs have a user do, done here in the same order:
1. make the bundles: `examples/churn/make_models.py` (the cached build the other e2e tests share, same
   script and defaults) and `examples/sklearn_lightgbm/make_models.py` (its defaults: ZipMap exports);
2. put them in an S3-compatible store, bucket `models` (here moto's server on the pod network's host
   address, uploaded with boto3 as `aws s3 cp --recursive` would), and on a static HTTP server for the
   gateway example's https:// URI (here `python -m http.server`);
3. create the Secret `model-store` with the store's keys;
4. replace the examples' store addresses with their own (`substitute`, the only change made to a
   manifest), and `kubectl apply -f` each manifest.

All manifests go into one namespace at once (their ModelDeployments have distinct names, so they do not
interfere) and are waited for together; the namespace is deleted at the end. The manifests are found by
glob, so a new example is applied here without anyone adding it.
"""

from __future__ import annotations

import contextlib
import functools
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import numpy as np
import pytest
from kubernetes import client

from modeldeploy_testcluster import nodes
from modeldeploy_testcluster.layout import Layout

from cluster_helpers import REPO, get_mdep, kubectl, ready_now, wait_for
from example_manifests import MANIFESTS, STORE_SECRET, documents, substitute
from example_stores import STORE_KEYS, copy_churn_bundles, example_stores
from sklearn_lightgbm_example import load_example
from traffic import ready_endpoints

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.slow,
    pytest.mark.usefixtures("operator_release"),
    # The first test's setup builds, uploads and applies everything, and its wait covers the slowest
    # example's start (every example's pods start together on the real node).
    pytest.mark.timeout(900),
]

READY_SECONDS = 420
"""Every example's pods start together on the 2-core machine, beside another cluster stream's tests."""


@dataclass(frozen=True)
class Applied:
    namespace: str
    objects: dict[Path, list[tuple[str, str]]]
    """manifest -> (kind, name) of each of its documents"""
    refused: dict[Path, str]
    """manifest -> what `kubectl apply` said when it failed"""
    sklearn_lightgbm: dict[str, Any]
    """make_models.build's result: name -> (fitted model, bundle folder)"""
    started: float


@pytest.fixture(scope="module")
def applied(
    local_cluster: Layout, kubeconfig: Path, churn_bundles: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Applied]:
    host = local_cluster.host_ip
    began = time.monotonic()
    # 1. the bundles, laid out as the examples' URIs name them: churn/v1..v3, sklearn-lightgbm/<model>
    root = tmp_path_factory.mktemp("store")
    copy_churn_bundles(churn_bundles, root)
    sklearn_lightgbm = load_example().build(root / "sklearn-lightgbm")

    api = nodes.admin_api(local_cluster)
    core = client.CoreV1Api(api)
    namespace = f"ex-{uuid.uuid4().hex[:8]}"
    # 2. the stores the pods read, on the pod network's host address
    stores = contextlib.ExitStack()
    try:
        store = stores.enter_context(example_stores(host, root))

        # 3. the namespace and the store's Secret
        core.create_namespace({"metadata": {"name": namespace, "labels": {"modeldeploy.io/test": "true"}}})
        core.create_namespaced_secret(
            namespace, {"metadata": {"name": STORE_SECRET}, "stringData": dict(STORE_KEYS)}
        )

        # 4. every manifest, with the store addresses replaced, applied as written
        started = time.monotonic()
        objects: dict[Path, list[tuple[str, str]]] = {}
        refused: dict[Path, str] = {}
        for manifest in MANIFESTS:
            text = substitute((REPO / manifest).read_text(), store.s3_endpoint, store.http_store)
            objects[manifest] = [(d["kind"], d["metadata"]["name"]) for d in documents(manifest, text)]
            try:
                kubectl(kubeconfig, "apply", "-n", namespace, "-f", "-", stdin=text)
            except AssertionError as failed:  # that example's test fails with it, the others go on
                refused[manifest] = str(failed)
        # Where the setup's time goes, in a failure's captured output (and with -s).
        applying = time.monotonic() - started
        print(f"bundles, stores and upload {started - began:.1f} s; applied in {applying:.1f} s")
        yield Applied(namespace, objects, refused, sklearn_lightgbm, started)
    finally:
        try:
            core.delete_namespace(namespace)
        except client.ApiException as error:
            if error.status != 404:
                raise
        stores.close()
        api.close()


def _explain(api: client.ApiClient, namespace: str, name: str) -> str:
    """What a CI log needs when an example is not Ready: its status and its pods' states and events."""
    core = client.CoreV1Api(api)
    lines = [f"status: {get_mdep(api, namespace, name).get('status')}"[:1500]]
    for pod in core.list_namespaced_pod(namespace, label_selector=f"modeldeploy.io/deployment={name}").items:
        states = [
            (c.name, c.ready, c.restart_count, str(c.state)[:200])
            for c in pod.status.container_statuses or []
        ]
        lines.append(f"pod {pod.metadata.name} {pod.status.phase} {states}")
    events = core.list_namespaced_event(namespace).items
    lines += [
        f"event {e.involved_object.name} {e.reason} {(e.message or '')[:200]}"
        for e in events
        if e.involved_object.name.startswith(name)
    ][-15:]
    return "\n".join(lines)


@pytest.mark.parametrize("manifest", MANIFESTS, ids=[str(m.relative_to("examples")) for m in MANIFESTS])
def test_the_example_reaches_ready(applied: Applied, kube_api: client.ApiClient, manifest: Path) -> None:
    assert manifest not in applied.refused, applied.refused[manifest]
    unknown = [kind for kind, _ in applied.objects[manifest] if kind != "ModelDeployment"]
    assert not unknown, f"{manifest}: no test judges {unknown} yet (add how to tell it is ready)"
    for _, name in applied.objects[manifest]:
        left = READY_SECONDS - (time.monotonic() - applied.started)
        try:
            probe = functools.partial(ready_now, kube_api, applied.namespace, name)
            wait_for(f"{name} Ready", probe, timeout=max(left, 5))
            print(f"{name} Ready {time.monotonic() - applied.started:.1f} s after the first apply")
        except AssertionError as failed:
            raise AssertionError(f"{failed}\n{_explain(kube_api, applied.namespace, name)}") from None


def test_the_gateway_example_writes_its_httproute(applied: Applied, kube_api: client.ApiClient) -> None:
    """The Gateway API example has no router: its traffic goes through the HTTPRoute the operator
    writes for the platform's Gateway (the local cluster has the Gateway API CRDs; no Gateway controller
    runs, so the route is accepted by the API server and nothing more)."""
    wait_for(
        "churn-gw Ready", lambda: ready_now(kube_api, applied.namespace, "churn-gw"), timeout=READY_SECONDS
    )
    route = client.CustomObjectsApi(kube_api).get_namespaced_custom_object(
        "gateway.networking.k8s.io", "v1", applied.namespace, "httproutes", "churn-gw"
    )
    parents = [(p["name"], p.get("namespace"), p.get("sectionName")) for p in route["spec"]["parentRefs"]]
    assert parents == [("public", "gateways", "http")]
    assert route["spec"]["hostnames"] == ["churn.example.com"]


@pytest.mark.parametrize(("name", "classes"), [("sklearn", 2), ("lightgbm", 3)])
def test_the_zipmap_exports_serve_what_the_library_predicts(
    applied: Applied, kube_api: client.ApiClient, name: str, classes: int
) -> None:
    """The sklearn/LightGBM example serves the converters' default export, ZipMap and all, and its
    pods answer through the router with the fitted model's predict_proba."""
    import onnx

    model, bundle = applied.sklearn_lightgbm[name]
    graph = onnx.load(str(bundle / "model.onnx")).graph
    assert "ZipMap" in {node.op_type for node in graph.node}, "the example must serve the default export"
    ready = wait_for(
        f"{name} Ready", lambda: ready_now(kube_api, applied.namespace, name), timeout=READY_SECONDS
    )
    # Where status.url says to call, on a router pod (the test cannot resolve the Service's DNS name).
    path = urlsplit(ready["status"]["url"]).path
    assert path == f"/v2/models/{name}"
    endpoints = wait_for(
        f"{name}'s router endpoints", lambda: ready_endpoints(kube_api, applied.namespace, name), timeout=60
    )
    rows = load_example().generate(40, 505)[0]
    rows[::7, :] = np.nan  # all-missing rows too
    body = {
        "inputs": [
            {
                "name": "input",
                "datatype": "FP32",
                "shape": list(rows.shape),
                "data": [None if np.isnan(v) else float(v) for v in rows.reshape(-1)],
            }
        ]
    }
    answer = httpx.post(f"{endpoints[0]}{path}/infer", json=body, timeout=30)
    assert answer.status_code == 200, answer.text
    outputs = {o["name"]: o for o in answer.json()["outputs"]}
    assert outputs["probabilities"]["shape"] == [len(rows), classes]
    served = np.asarray(outputs["probabilities"]["data"], dtype=np.float64).reshape(len(rows), classes)
    expected = model.predict_proba(rows.astype(np.float32).astype(np.float64))
    np.testing.assert_allclose(served, expected, atol=1e-5, rtol=0)
    assert outputs["label"]["data"] == np.argmax(served, axis=1).tolist()
