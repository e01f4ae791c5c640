"""Metric texts shaped like the model server's and the router's /metrics, for analysis unit tests."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

from modeldeploy_operator.analysis.scrape import GroupScrape, PodMetrics, Snapshot, parse_metrics

T0 = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)
LATENCY_BOUNDS = (0.001, 0.005, 0.01, 0.05, 0.1)
SCORE_BOUNDS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


def _histogram(name: str, labels: str, bounds: Sequence[float], values: Sequence[float]) -> list[str]:
    lines = []
    for bound in bounds:
        lines.append(f'{name}_bucket{{{labels},le="{bound}"}} {sum(1 for v in values if v <= bound)}.0')
    lines.append(f'{name}_bucket{{{labels},le="+Inf"}} {len(values)}.0')
    lines.append(f"{name}_count{{{labels}}} {len(values)}.0")
    lines.append(f"{name}_sum{{{labels}}} {sum(values)}")
    return [f"# TYPE {name} histogram", *lines]


def server_text(
    codes: Mapping[int, int] | None = None,
    latencies: Sequence[float] = (),
    scores: Sequence[float] = (),
    feature_psi: Mapping[str, float] | None = None,
    window_rows: int | None = None,
    window_end: float | None = None,
    started: float = 1_700_000_000.0,
    version: str = "v1",
) -> str:
    """A model server's metrics: requests per status code (v2), latencies, scores, the last window."""
    model = f'model="churn",version="{version}"'
    lines = [
        "# TYPE process_start_time_seconds gauge",
        f"process_start_time_seconds {started}",
        "# TYPE modeldeploy_requests_total counter",
    ]
    for code, n in (codes or {}).items():
        lines.append(f'modeldeploy_requests_total{{code="{code}",{model},protocol="v2"}} {n}.0')
    lines.append("# TYPE modeldeploy_request_errors_total counter")
    for code, n in (codes or {}).items():
        if code >= 400:
            lines.append(f'modeldeploy_request_errors_total{{code="{code}",{model},protocol="v2"}} {n}.0')
    if latencies:
        lines += _histogram(
            "modeldeploy_request_duration_seconds", f'{model},protocol="v2"', LATENCY_BOUNDS, latencies
        )
    if scores:
        lines += _histogram("modeldeploy_prediction_score", model, SCORE_BOUNDS, scores)
    if feature_psi is not None:
        lines.append("# TYPE modeldeploy_feature_drift_psi gauge")
        for feature, psi in feature_psi.items():
            lines.append(f'modeldeploy_feature_drift_psi{{feature="{feature}",{model}}} {psi}')
    if window_rows is not None:
        lines.append("# TYPE modeldeploy_drift_window_rows gauge")
        lines.append(f"modeldeploy_drift_window_rows{{{model}}} {window_rows}.0")
    if window_end is not None:
        lines.append("# TYPE modeldeploy_drift_window_end_timestamp_seconds gauge")
        lines.append(f"modeldeploy_drift_window_end_timestamp_seconds{{{model}}} {window_end}")
    return "\n".join(lines) + "\n"


def router_text(errors: Mapping[tuple[str, str, str], int]) -> str:
    """Router-answered errors per (variant, revision, reason)."""
    lines = ["# TYPE modeldeploy_router_errors_total counter"]
    for (variant, revision, reason), n in errors.items():
        labels = f'reason="{reason}",revision="{revision}",variant="{variant}"'
        lines.append(f"modeldeploy_router_errors_total{{{labels}}} {n}.0")
    return "\n".join(lines) + "\n"


def group(**pods: str) -> GroupScrape:
    """GroupScrape from keyword `address=metrics text` (underscores stand for dots and colons)."""
    parsed: dict[str, PodMetrics] = {name: parse_metrics(text) for name, text in pods.items()}
    return GroupScrape(parsed)


def snapshot(
    at: datetime = T0,
    canary: GroupScrape | None = None,
    stable: GroupScrape | None = None,
    router: GroupScrape | None = None,
) -> Snapshot:
    return Snapshot(at, canary or GroupScrape(), stable or GroupScrape(), router or GroupScrape())
