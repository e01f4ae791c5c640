"""The example manifests, offline: what lets tests/e2e/test_examples_e2e.py apply them all as written,
in one namespace, with only the READMEs' substitutions (issue 13)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from example_manifests import (
    EXAMPLE_HTTPS_STORE,
    EXAMPLE_S3_ENDPOINT,
    MANIFESTS,
    REPO,
    STORE_SECRET,
    documents,
    models,
    substitute,
)


def test_the_glob_finds_the_examples() -> None:
    """A moved folder would otherwise leave the cluster test applying nothing."""
    names = {str(m) for m in MANIFESTS}
    assert {"examples/churn/modeldeployment.yaml", "examples/sklearn_lightgbm/modeldeployment.yaml"} <= names


def test_names_are_unique_so_all_examples_fit_one_namespace() -> None:
    objects = Counter((d["kind"], d["metadata"]["name"]) for m in MANIFESTS for d in documents(m))
    assert [o for o, n in objects.items() if n > 1] == []


@pytest.mark.parametrize("manifest", MANIFESTS, ids=lambda m: str(m.relative_to("examples")))
def test_models_come_from_the_documented_stores(manifest: Path) -> None:
    """Each model is read from the store the README tells a user to fill (bucket `models` behind the
    S3 endpoint, with the Secret `model-store`, or the static HTTP server), with no digest: the bundles
    are made by the user's own make_models.py run, so no committed digest could match them."""
    for document in documents(manifest):
        if document["kind"] != "ModelDeployment":
            continue
        for model in models(document):
            uri, storage = model["uri"], model.get("storage") or {}
            assert "sha256" not in model, f"{manifest}: a digest no README tells how to make"
            if uri.startswith("s3://"):
                assert uri.startswith("s3://models/"), uri
                assert storage == {"s3EndpointURL": EXAMPLE_S3_ENDPOINT, "secretName": STORE_SECRET}
            else:
                assert uri.startswith(EXAMPLE_HTTPS_STORE + "/"), uri
                assert storage == {}


def test_substitute_replaces_only_the_store_addresses() -> None:
    text = (REPO / "examples/churn/modeldeployment-ab.yaml").read_text()
    changed = substitute(text, "http://10.244.0.1:9", "http://10.244.0.1:8")
    assert EXAMPLE_S3_ENDPOINT not in changed
    assert changed.replace("http://10.244.0.1:9", EXAMPLE_S3_ENDPOINT) == text
    gateway = (REPO / "examples/churn/modeldeployment-gateway.yaml").read_text()
    assert substitute(gateway, "x", "http://10.244.0.1:8").count("uri: http://10.244.0.1:8/churn/v2") == 1
