#!/usr/bin/env python3
"""Generates the Grafana dashboard the chart ships (charts/modeldeploy/dashboards/modeldeploy.json).

Plain dictionaries in Grafana's dashboard JSON model (schemaVersion 39): the panels are few and
uniform, so a helper per panel kind stays shorter than a dependency would be. `make dashboard`
writes the file; `--check` exits 1 when the committed file differs (tests/unit/operator/
test_dashboard.py). Every PromQL expression here is evaluated against a real Prometheus scraping
real pods by tests/e2e/test_prometheus_analysis_e2e.py, which must get data back from each.

Queries select by `namespace` and `modeldeployment`, the labels the chart's PodMonitor (and the
documented plain-Prometheus relabelling) put on the model-server and router series, and that the
operator's rollout series carry themselves. Ratios whose numerator may have no series yet (no
errors, no disagreement) fall back to `0 *` the denominator, so a healthy service shows 0, not "No
data".
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent.parent / "charts" / "modeldeploy" / "dashboards" / "modeldeploy.json"
SEL = 'namespace=~"$namespace", modeldeployment=~"$modeldeployment"'
RATE = "[$__rate_interval]"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}


def _rate(metric: str, by: str, extra: str = "") -> str:
    selector = f"{SEL}, {extra}" if extra else SEL
    return f"sum by ({by}) (rate({metric}{{{selector}}}{RATE}))"


def _ratio_or_zero(numerator: str, denominator: str) -> str:
    return f"({numerator} or 0 * {denominator}) / {denominator}"


def _quantile(q: float, metric: str, by: str) -> str:
    return f"histogram_quantile({q}, {_rate(metric + '_bucket', 'le, ' + by)})"


class Layout:
    """Places panels left to right on Grafana's 24-column grid, rows of equal height."""

    def __init__(self) -> None:
        self.panels: list[dict[str, Any]] = []
        self.x = 0
        self.y = 0
        self.row_height = 0
        self.next_id = 1

    def row(self, title: str) -> None:
        self._newline()
        self.panels.append(
            {
                "id": self._id(),
                "type": "row",
                "title": title,
                "collapsed": False,
                "panels": [],
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": self.y},
            }
        )
        self.y += 1

    def panel(
        self,
        kind: str,
        title: str,
        description: str,
        targets: list[tuple[str, str]],
        *,
        unit: str = "short",
        width: int = 8,
        height: int = 8,
        options: dict[str, Any] | None = None,
        custom: dict[str, Any] | None = None,
    ) -> None:
        if self.x + width > 24:
            self._newline()
        self.panels.append(
            {
                "id": self._id(),
                "type": kind,
                "title": title,
                "description": description,
                "datasource": DATASOURCE,
                "gridPos": {"h": height, "w": width, "x": self.x, "y": self.y},
                "fieldConfig": {"defaults": {"unit": unit, "custom": custom or {}}, "overrides": []},
                "options": options or {},
                "targets": [
                    {
                        "refId": chr(ord("A") + i),
                        "datasource": DATASOURCE,
                        "expr": expr,
                        "legendFormat": legend,
                    }
                    for i, (expr, legend) in enumerate(targets)
                ],
            }
        )
        self.x += width
        self.row_height = max(self.row_height, height)

    def _newline(self) -> None:
        if self.x:
            self.y += self.row_height
        self.x, self.row_height = 0, 0

    def _id(self) -> int:
        self.next_id += 1
        return self.next_id - 1


def _variables() -> list[dict[str, Any]]:
    def query(name: str, label: str, expr: str) -> dict[str, Any]:
        return {
            "name": name,
            "label": label,
            "type": "query",
            "datasource": DATASOURCE,
            "query": {"query": expr, "refId": f"{name}-variable"},
            "definition": expr,
            "refresh": 2,
            "multi": True,
            "includeAll": True,
            "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
            "sort": 1,
        }

    return [
        {
            "name": "datasource",
            "label": "Prometheus",
            "type": "datasource",
            "query": "prometheus",
            "current": {},
            "refresh": 1,
        },
        query("namespace", "Namespace", "label_values(modeldeploy_rollout_info, namespace)"),
        query(
            "modeldeployment",
            "ModelDeployment",
            'label_values(modeldeploy_rollout_info{namespace=~"$namespace"}, modeldeployment)',
        ),
    ]


def dashboard() -> dict[str, Any]:
    grid = Layout()
    series = {"drawStyle": "line", "lineWidth": 1, "fillOpacity": 10, "showPoints": "never"}
    steps = {"drawStyle": "line", "lineInterpolation": "stepAfter", "lineWidth": 2, "showPoints": "never"}
    legend = {"legend": {"displayMode": "list", "placement": "bottom"}, "tooltip": {"mode": "multi"}}

    grid.row("Rollout")
    grid.panel(
        "stat",
        "Phase",
        "The phase of each ModelDeployment (operator: modeldeploy_rollout_phase).",
        [
            (
                f"max by (namespace, modeldeployment, phase) (modeldeploy_rollout_phase{{{SEL}}}) == 1",
                "{{modeldeployment}}: {{phase}}",
            )
        ],
        width=6,
        options={"reduceOptions": {"calcs": ["lastNotNull"]}, "textMode": "name", "colorMode": "background"},
    )
    grid.panel(
        "timeseries",
        "Rollout step and canary weight",
        "The current step index (0-based) and the canary's share of traffic (0-1).",
        [
            (f"modeldeploy_rollout_step{{{SEL}}}", "{{modeldeployment}} step"),
            (f"modeldeploy_rollout_canary_weight_ratio{{{SEL}}}", "{{modeldeployment}} canary weight"),
        ],
        width=9,
        custom=steps,
        options=legend,
    )
    grid.panel(
        "timeseries",
        "Traffic weight per revision",
        "Each running revision's share of traffic as the operator set it (0-1).",
        [
            (
                f"modeldeploy_rollout_revision_weight_ratio{{{SEL}}}",
                "{{modeldeployment}} {{variant}}/{{revision}} ({{role}})",
            )
        ],
        unit="percentunit",
        width=9,
        custom=steps,
        options=legend,
    )
    grid.panel(
        "timeseries",
        "Analysis checks: latest value",
        "The latest measured value of each analysis check of the rollout under analysis.",
        [(f"modeldeploy_rollout_check_value{{{SEL}}}", "{{modeldeployment}} {{check}}")],
        width=12,
        custom=steps,
        options=legend,
    )
    grid.panel(
        "table",
        "Analysis checks: latest result",
        "Pass, Fail or Inconclusive: the latest result of each check.",
        [(f"modeldeploy_rollout_check_result{{{SEL}}} == 1", "")],
        width=12,
        options={"showHeader": True},
    )

    grid.row("Traffic")
    grid.panel(
        "timeseries",
        "Requests per arm (router)",
        "Requests per second the router sent to each variant and revision.",
        [
            (
                _rate("modeldeploy_router_requests_total", "modeldeployment, variant, revision"),
                "{{modeldeployment}} {{variant}}/{{revision}}",
            )
        ],
        unit="reqps",
        width=12,
        custom=series,
        options=legend,
    )
    grid.panel(
        "timeseries",
        "Requests per model version (servers)",
        "Inference requests per second the model servers answered, per model version.",
        [
            (
                _rate("modeldeploy_requests_total", "modeldeployment, version"),
                "{{modeldeployment}} v{{version}}",
            )
        ],
        unit="reqps",
        width=12,
        custom=series,
        options=legend,
    )

    grid.row("Latency")
    grid.panel(
        "timeseries",
        "Latency per arm, p95 (router)",
        "From the request's arrival at the router to the full upstream answer.",
        [
            (
                _quantile(
                    0.95, "modeldeploy_router_request_duration_seconds", "modeldeployment, variant, revision"
                ),
                "{{modeldeployment}} {{variant}}/{{revision}}",
            )
        ],
        unit="s",
        width=12,
        custom=series,
        options=legend,
    )
    grid.panel(
        "timeseries",
        "Latency per model version (servers)",
        "Whole request time inside the model server: p50, p95, p99.",
        [
            (
                _quantile(q, "modeldeploy_request_duration_seconds", "modeldeployment, version"),
                f"{{{{modeldeployment}}}} v{{{{version}}}} p{int(q * 100)}",
            )
            for q in (0.5, 0.95, 0.99)
        ],
        unit="s",
        width=12,
        custom=series,
        options=legend,
    )

    grid.row("Errors")
    grid.panel(
        "timeseries",
        "Error ratio per model version (servers)",
        "Share of inference requests answered with HTTP 4xx or 5xx.",
        [
            (
                _ratio_or_zero(
                    _rate("modeldeploy_request_errors_total", "modeldeployment, version"),
                    _rate("modeldeploy_requests_total", "modeldeployment, version"),
                ),
                "{{modeldeployment}} v{{version}}",
            )
        ],
        unit="percentunit",
        width=12,
        custom=series,
        options=legend,
    )
    grid.panel(
        "timeseries",
        "Errors the router answered itself",
        "Requests that never reached a model server (no backend, connect, timeout, bad answer), per second.",
        [
            (
                f"{_rate('modeldeploy_router_errors_total', 'modeldeployment, variant, revision, reason')}"
                f" or 0 * {_rate('modeldeploy_router_requests_total', 'modeldeployment, variant, revision')}",
                "{{modeldeployment}} {{variant}}/{{revision}} {{reason}}",
            )
        ],
        unit="reqps",
        width=12,
        custom=series,
        options=legend,
    )

    grid.row("Drift")
    grid.panel(
        "timeseries",
        "Feature drift (PSI) per feature",
        "Population stability index of each feature in the last drift window against the training profile.",
        [
            (
                f"max by (modeldeployment, version, feature) (modeldeploy_feature_drift_psi{{{SEL}}})",
                "{{modeldeployment}} v{{version}} {{feature}}",
            )
        ],
        width=12,
        custom=steps,
        options=legend,
    )
    grid.panel(
        "timeseries",
        "Prediction-score shift",
        "PSI of prediction scores against the validation scores, and the mean score, per model version.",
        [
            (
                f"max by (modeldeployment, version) (modeldeploy_prediction_drift_psi{{{SEL}}})",
                "{{modeldeployment}} v{{version}} PSI",
            ),
            (
                f"{_rate('modeldeploy_prediction_score_sum', 'modeldeployment, version')}"
                f" / {_rate('modeldeploy_prediction_score_count', 'modeldeployment, version')}",
                "{{modeldeployment}} v{{version}} mean score",
            ),
        ],
        width=12,
        custom=steps,
        options=legend,
    )

    grid.row("Shadow")
    grid.panel(
        "timeseries",
        "Shadow label agreement",
        "Share of shadow answers whose predicted label agrees with the primary's.",
        [
            (
                _ratio_or_zero(
                    _rate(
                        "modeldeploy_router_shadow_label_agreement_total",
                        "modeldeployment, variant",
                        'result="agree"',
                    ),
                    _rate("modeldeploy_router_shadow_label_agreement_total", "modeldeployment, variant"),
                ),
                "{{modeldeployment}} {{variant}}",
            )
        ],
        unit="percentunit",
        width=8,
        custom=series,
        options=legend,
    )
    grid.panel(
        "timeseries",
        "Shadow score difference, p95",
        "Absolute difference between the primary's and the shadow's first score.",
        [
            (
                _quantile(0.95, "modeldeploy_router_shadow_score_difference", "modeldeployment, variant"),
                "{{modeldeployment}} {{variant}}",
            )
        ],
        width=8,
        custom=series,
        options=legend,
    )
    grid.panel(
        "timeseries",
        "Shadow copies by outcome",
        "Shadow copies per second: ok, error, timeout, dropped (saturated).",
        [
            (
                _rate("modeldeploy_router_shadow_requests_total", "modeldeployment, variant, outcome"),
                "{{modeldeployment}} {{variant}} {{outcome}}",
            )
        ],
        unit="reqps",
        width=8,
        custom=series,
        options=legend,
    )

    return {
        "uid": "modeldeploy",
        "title": "modeldeploy",
        "description": "Traffic, latency, errors, drift, shadow agreement and rollouts of ModelDeployments.",
        "tags": ["modeldeploy", "mlops"],
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "graphTooltip": 1,
        "time": {"from": "now-1h", "to": "now"},
        "refresh": "30s",
        "timezone": "browser",
        "annotations": {"list": []},
        "links": [],
        "templating": {"list": _variables()},
        "panels": grid.panels,
    }


def render() -> str:
    return json.dumps(dashboard(), indent=2, ensure_ascii=False) + "\n"


def expressions(board: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, PromQL) for every query target of a dashboard."""
    return [(p["title"], t["expr"]) for p in board["panels"] for t in p.get("targets", [])]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the committed JSON is out of date")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    wanted = render()
    if args.check:
        if not args.out.exists() or args.out.read_text() != wanted:
            print(f"{args.out} is out of date: run `make dashboard`", file=sys.stderr)
            return 1
        return 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(wanted)
    return 0


if __name__ == "__main__":
    sys.exit(main())
