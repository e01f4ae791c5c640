"""Fixtures of the operator's unit tests."""

from __future__ import annotations

from typing import Any

import pytest

from modeldeploy_operator.domain.resource import ModelDeploymentRef
from modeldeploy_operator.k8s.projection import projection
from modeldeploy_operator.reconciler import Reconciler


@pytest.fixture
def owner() -> ModelDeploymentRef:
    return ModelDeploymentRef(name="churn", namespace="ml", uid="1234-uid")


class CachedReads:
    """A fake API's lists as the operator's caches answer them: each object projected
    (k8s/projection.py), so every whole-reconcile test also shows that the readers find what they read
    in what the caches keep."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def list(self, api_version: str, kind: str, namespace: str | None, selector: str) -> list[dict[str, Any]]:
        keep = projection(kind)
        return [keep(obj) for obj in self.inner.list(api_version, kind, namespace, selector)]


@pytest.fixture(autouse=True)
def reads_as_cached(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every Reconciler of these tests reads what the operator's caches would keep, not the whole
    objects its fake API holds (in the operator, reads come from the caches)."""
    original = Reconciler.__init__

    def init(self: Reconciler, api: Any, settings: Any, cache: Any = None) -> None:
        original(self, api, settings, cache)
        self.reads = CachedReads(self.reads)

    monkeypatch.setattr(Reconciler, "__init__", init)
