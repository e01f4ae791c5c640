"""The Grafana dashboard the chart ships: generated from hack/dashboard.py (the committed JSON is the
generated one), and every PromQL expression in it parses. That each returns data from a real
Prometheus scraping real pods is tests/e2e/test_prometheus_analysis_e2e.py's job."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from modeldeploy_builders import REPO

BOARD = REPO / "charts" / "modeldeploy" / "dashboards" / "modeldeploy.json"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"


def _hack() -> Any:
    sys.path.insert(0, str(REPO / "hack"))
    try:
        import dashboard
    finally:
        sys.path.pop(0)
    return dashboard


def concrete(expr: str, namespace: str = ".+", modeldeployment: str = ".+", rate: str = "1m") -> str:
    """The expression as Grafana sends it, for given variable values."""
    return (
        expr.replace("$__rate_interval", rate)
        .replace("$namespace", namespace)
        .replace("$modeldeployment", modeldeployment)
    )


def test_the_committed_dashboard_is_the_generated_one() -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "hack" / "dashboard.py"), "--check"],
        check=False,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr


def test_the_dashboard_covers_what_an_operator_of_models_watches() -> None:
    board = json.loads(BOARD.read_text())
    titles = " | ".join(p["title"] for p in board["panels"]).lower()
    for topic in ("per arm", "latency", "error", "drift", "prediction-score shift", "shadow", "rollout step"):
        assert topic in titles, topic
    assert board["uid"] == "modeldeploy"
    variables = {v["name"] for v in board["templating"]["list"]}
    assert variables == {"datasource", "namespace", "modeldeployment"}
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in board["panels"]:  # nothing overlaps and nothing is wider than the grid
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24


def test_every_query_is_scoped_by_the_variables() -> None:
    for title, expr in _hack().expressions(json.loads(BOARD.read_text())):
        for selector in re.findall(r"\{([^}]*)\}", expr):
            assert 'namespace=~"$namespace"' in selector, (title, expr)
            assert 'modeldeployment=~"$modeldeployment"' in selector, (title, expr)


@pytest.mark.skipif(not Path(PROMTOOL).exists(), reason="promtool is not installed")
def test_every_query_parses(tmp_path: Path) -> None:
    queries = _hack().expressions(json.loads(BOARD.read_text()))
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:query{i}", "expr": concrete(e)} for i, (_, e) in enumerate(queries)
                ],
            }
        ]
    }
    (tmp_path / "rules.yml").write_text(yaml.safe_dump(rules))
    result = subprocess.run(
        [PROMTOOL, "check", "rules", str(tmp_path / "rules.yml")], check=False, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(queries)} rules found" in result.stdout
