"""Fixtures of the operator's unit tests."""

from __future__ import annotations

import pytest

from modeldeploy_operator.domain.resource import ModelDeploymentRef


@pytest.fixture
def owner() -> ModelDeploymentRef:
    return ModelDeploymentRef(name="churn", namespace="ml", uid="1234-uid")
