"""The manifests under examples/ and what their READMEs tell a user to change in them: read by the
offline checks (tests/unit/docs/test_examples.py, the CRD schema test) and by the test that applies
them all on the local cluster (tests/e2e/test_examples_e2e.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
MANIFESTS = sorted(p.relative_to(REPO) for p in [*EXAMPLES.rglob("*.yaml"), *EXAMPLES.rglob("*.yml")])
"""Every manifest, found by glob: a new example is checked and applied without anyone listing it."""

# The addresses the examples are written with, which their READMEs tell a user to replace.
EXAMPLE_S3_ENDPOINT = "http://minio.modeldeploy-demo:9000"
EXAMPLE_HTTPS_STORE = "https://models.example.com"
BUCKET = "models"
STORE_SECRET = "model-store"


def substitute(text: str, s3_endpoint: str, http_store: str) -> str:
    """The READMEs' substitutions, and nothing else: the S3-compatible store's endpoint and the static
    HTTP server's base address."""
    return text.replace(EXAMPLE_S3_ENDPOINT, s3_endpoint).replace(EXAMPLE_HTTPS_STORE, http_store)


def documents(manifest: Path, text: str | None = None) -> list[dict[str, Any]]:
    """The objects of a manifest (relative to the repository), from `text` when given."""
    found = yaml.safe_load_all((REPO / manifest).read_text() if text is None else text)
    return [d for d in found if d]


def models(document: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every model a ModelDeployment names: spec.model and each variant's own."""
    spec = document["spec"]
    yield spec["model"]
    for variant in spec.get("variants") or []:
        if variant.get("model"):
            yield variant["model"]
