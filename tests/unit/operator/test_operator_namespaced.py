"""A namespaced install: kopf watches only the namespaces the chart lists; nothing outside them runs."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from modeldeploy_operator import handlers, main
from modeldeploy_operator.config import OperatorSettings


def test_kopf_is_told_the_watched_namespaces(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}

    async def operator(**kwargs: Any) -> None:
        seen.update(kwargs)

    monkeypatch.setattr(main.kopf, "operator", operator)
    settings = OperatorSettings(namespaces="ml, ml2")  # type: ignore[arg-type]  # as the chart sets it
    lost = threading.Event()
    asyncio.run(main._operate(settings.cluster_wide, list(settings.namespaces), lost))
    lost.set()
    assert seen["clusterwide"] is False
    assert seen["namespaces"] == ["ml", "ml2"]
    assert seen["standalone"] is True
    cluster = OperatorSettings()
    assert cluster.cluster_wide is True


def test_owned_deployment_events_outside_the_watched_namespaces_are_ignored(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(handlers, "SETTINGS", OperatorSettings(namespaces="ml"))  # type: ignore[arg-type]

    class Untouchable:
        @property
        def api(self) -> Any:
            raise AssertionError("no API call for a namespace the operator does not watch")

    monkeypatch.setattr(handlers, "_reconciler", Untouchable())
    body = {
        "metadata": {
            "name": "churn-default-abc",
            "namespace": "elsewhere",
            "ownerReferences": [
                {
                    "kind": "ModelDeployment",
                    "apiVersion": "modeldeploy.io/v1alpha1",
                    "name": "churn",
                    "uid": "u",
                }
            ],
        }
    }
    handlers.on_owned_deployment(body)  # type: ignore[arg-type]
