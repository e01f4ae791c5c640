"""Shared names live in the contract package: the metric names the operator's analysis reads are the
ones the serving package's collectors expose, and the API group is one constant."""

from __future__ import annotations

from typing import Any

from modeldeploy_contract import metric_names
from modeldeploy_contract.resource import GROUP


def _exposed(module: Any) -> set[str]:
    """Sample names (as scraped) of the prometheus_client collectors defined in `module`."""
    names = set()
    for value in vars(module).values():
        kind, name = getattr(value, "_type", None), getattr(value, "_name", None)
        if kind is None or name is None:
            continue
        names.add(f"{name}_total" if kind == "counter" else name)
    return names


def test_the_metric_names_analysis_reads_are_the_ones_the_servers_and_the_router_expose() -> None:
    from modeldeploy_serving import metrics as server
    from modeldeploy_serving.router import metrics as router

    served = {
        metric_names.REQUESTS,
        metric_names.ERRORS,
        metric_names.REQUEST_SECONDS,
        metric_names.FEATURE_PSI,
        metric_names.WINDOW_ROWS,
        metric_names.WINDOW_END,
        metric_names.PREDICTION_SCORE,
    }
    assert served <= _exposed(server)
    assert metric_names.ROUTER_ERRORS in _exposed(router.RouterMetrics())


def test_the_names_of_the_mirror_and_ks_checks_are_exposed() -> None:
    from modeldeploy_serving import metrics as server
    from modeldeploy_serving.router import metrics as router

    assert {
        metric_names.FEATURE_KS,
        metric_names.FEATURE_BIN_ROWS,
        metric_names.FEATURE_MISSING,
        metric_names.FEATURE_REFERENCE_ROWS,
    } <= _exposed(server)
    exposed = _exposed(router.RouterMetrics())
    assert {metric_names.SHADOW_LABEL_AGREEMENT, metric_names.SHADOW_SCORE_DIFFERENCE} <= exposed


def test_the_operator_uses_the_contracts_names() -> None:
    from modeldeploy_operator.analysis import names
    from modeldeploy_operator.domain import labels, resource

    assert names.PREDICTION_SCORE is metric_names.PREDICTION_SCORE
    # labels.py's own import of the group, read on purpose: it must be the contract's, not a copy
    assert labels.GROUP is resource.GROUP is GROUP  # type: ignore[attr-defined]
