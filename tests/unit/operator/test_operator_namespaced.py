"""A namespaced install: kopf watches only the namespaces the chart lists; nothing outside them runs."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import kopf
import pytest

from modeldeploy_operator import handlers, main
from modeldeploy_operator.config import OperatorSettings


def test_kopf_is_told_the_watched_namespaces(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}

    async def operator(**kwargs: Any) -> None:
        seen.update(kwargs)

    monkeypatch.setattr(kopf, "operator", operator)  # the module main.py calls
    settings = OperatorSettings(namespaces="ml, ml2")  # type: ignore[arg-type]  # as the chart sets it
    lost = threading.Event()
    asyncio.run(main._operate(settings.cluster_wide, list(settings.namespaces), lost))
    lost.set()
    assert seen["clusterwide"] is False
    assert seen["namespaces"] == ["ml", "ml2"]
    assert seen["standalone"] is True
    cluster = OperatorSettings()
    assert cluster.cluster_wide is True


def test_the_caches_watch_only_the_listed_namespaces() -> None:
    """One informer per cached kind and watched namespace: events elsewhere never reach the operator."""
    settings = OperatorSettings(namespaces="ml, ml2")  # type: ignore[arg-type]
    _, cache = handlers.build_controller(None, settings)  # type: ignore[arg-type]  # nothing started
    assert {scope for (_, _, scope) in cache.informers} == {"ml", "ml2"}
    kinds = {(k.api_version, k.kind) for k in cache.kinds}
    assert len(cache.informers) == 2 * len(kinds)
    _, cluster = handlers.build_controller(None, OperatorSettings())  # type: ignore[arg-type]
    assert {scope for (_, _, scope) in cluster.informers} == {None}
