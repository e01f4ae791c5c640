"""The chart as a platform team meets it: helm-unittest suites (charts/modeldeploy/tests/), the values
table generated from values.yaml, use as an umbrella chart's dependency, and its kubeVersion.

helm and the helm-unittest plugin are built from their Go modules by tests/cluster/build-binaries.sh
(`make binaries`); the tests that need them skip until then."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from modeldeploy_builders import REPO

CHART = REPO / "charts" / "modeldeploy"
CACHE = Path(os.environ.get("MODELDEPLOY_CACHE", Path.home() / ".cache" / "modeldeploy"))
HELM = shutil.which("helm") or str(CACHE / "bin" / "helm")
PLUGINS = CACHE / "helm-plugins"
needs_helm = pytest.mark.skipif(not Path(HELM).exists(), reason="helm not built yet (make binaries)")


def _helm(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [HELM, *args], capture_output=True, text=True, check=False, timeout=300, env=env or dict(os.environ)
    )


@needs_helm
@pytest.mark.skipif(
    not (PLUGINS / "unittest" / "untt").exists(), reason="helm-unittest not built yet (make binaries)"
)
def test_helm_unittest_suites_pass() -> None:
    result = _helm("unittest", "--color=false", str(CHART), env={**os.environ, "HELM_PLUGINS": str(PLUGINS)})
    assert result.returncode == 0, result.stdout + result.stderr


def test_values_table_is_up_to_date() -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "hack" / "chart_values_table.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def _leaves(node: Any, prefix: str = "") -> list[str]:
    if isinstance(node, dict) and node:
        return [leaf for key, value in node.items() for leaf in _leaves(value, f"{prefix}{key}.")]
    return [prefix.rstrip(".")]


def test_every_value_is_documented() -> None:
    sys.path.insert(0, str(REPO / "hack"))
    try:
        from chart_values_table import documented_keys
    finally:
        sys.path.pop(0)
    text = (CHART / "values.yaml").read_text()
    documented = {key for key, _ in documented_keys(text)}
    undocumented = [
        leaf
        for leaf in _leaves(yaml.safe_load(text))
        if not any(leaf == key or leaf.startswith(f"{key}.") for key in documented)
    ]
    assert undocumented == []


def test_the_generator_reads_helm_docs_comments() -> None:
    sys.path.insert(0, str(REPO / "hack"))
    try:
        from chart_values_table import documented_keys, table
    finally:
        sys.path.pop(0)
    text = (
        "# header, not a key's\n\na:\n  # -- first line\n  # second line\n  b: 1\n  c: x\n"
        "# -- top | pipe\nd: [1]\n"
    )
    assert documented_keys(text) == [("a.b", "first line second line"), ("d", "top | pipe")]
    assert "| `d` | list | `[1]` | top \\| pipe |" in table(text)


@needs_helm
def test_works_as_a_dependency_of_an_umbrella_chart(tmp_path: Path) -> None:
    umbrella = tmp_path / "platform"
    (umbrella / "charts").mkdir(parents=True)
    shutil.copytree(CHART, umbrella / "charts" / "modeldeploy")
    (umbrella / "Chart.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v2",
                "name": "platform",
                "version": "1.0.0",
                "dependencies": [{"name": "modeldeploy", "version": "0.1.0"}],
            }
        )
    )
    (umbrella / "values.yaml").write_text(
        yaml.safe_dump(
            {
                "global": {"imageRegistry": "registry.example.com", "storageClass": "fast"},
                "modeldeploy": {"replicaCount": 1, "metrics": {"serviceMonitor": {"enabled": True}}},
            }
        )
    )
    result = _helm("template", "p", str(umbrella), "--namespace", "platform")
    assert result.returncode == 0, result.stderr
    docs = [d for d in yaml.safe_load_all(result.stdout) if d]
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
    assert deployment["spec"]["replicas"] == 1
    assert _helm("lint", "--strict", str(umbrella)).returncode == 0
    # The schema still refuses an unknown key from the parent.
    (umbrella / "values.yaml").write_text(yaml.safe_dump({"modeldeploy": {"bogus": 1}}))
    refused = _helm("template", "p", str(umbrella))
    assert refused.returncode != 0
    assert "bogus" in refused.stderr


@needs_helm
@pytest.mark.parametrize(("version", "accepted"), [("1.29.9", False), ("1.30.0", True), ("1.34.4", True)])
def test_declares_the_kubernetes_versions_it_needs(version: str, accepted: bool) -> None:
    result = _helm("template", "md", str(CHART), "--kube-version", version)
    assert (result.returncode == 0) is accepted, result.stderr
    if not accepted:
        assert "kubeVersion" in result.stderr
