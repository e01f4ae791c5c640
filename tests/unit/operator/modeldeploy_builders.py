"""Builders shared by the operator's unit tests (a module, not conftest, so tests can import it)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from modeldeploy_operator.domain.observed import ObservedDeployment
from modeldeploy_operator.domain.revision import resolve_variants
from modeldeploy_operator.domain.spec import ModelDeploymentSpec

REPO = Path(__file__).resolve().parents[3]
CRD_PATH = REPO / "crds" / "modeldeploy.io_modeldeployments.yaml"
NOW = dt.datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=dt.UTC)
SHA = "b" * 64
BASE_MODEL: dict[str, Any] = {"uri": "s3://models/churn/v1", "format": "onnx", "version": "1", "sha256": SHA}


def make_spec(**overrides: Any) -> ModelDeploymentSpec:
    """A minimal valid spec (one implicit variant, two replicas), with camelCase overrides."""
    raw: dict[str, Any] = {"model": dict(BASE_MODEL), "replicas": 2}
    raw.update(overrides)
    return ModelDeploymentSpec.model_validate(raw)


def observed_for(
    spec: ModelDeploymentSpec,
    *,
    ready: int,
    variant_index: int = 0,
    replicas: int | None = None,
    deadline_exceeded: bool = False,
    name: str = "churn",
) -> ObservedDeployment:
    """An observed Deployment of the spec's desired revision of one variant."""
    variant = resolve_variants(name, spec)[variant_index]
    wanted = replicas if replicas is not None else (variant.replicas or 1)
    return ObservedDeployment(
        name=f"{name}-{variant.name}-{variant.revision}",
        variant=variant.name,
        revision=variant.revision,
        replicas=wanted,
        model_version=variant.model.version,
        ready_replicas=ready,
        updated_replicas=wanted,
        available_replicas=ready,
        generation=1,
        observed_generation=1,
        progress_deadline_exceeded=deadline_exceeded,
    )
