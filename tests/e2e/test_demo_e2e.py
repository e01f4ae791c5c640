"""`make demo`'s script, end to end on the local cluster (the README promises it works)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from modeldeploy_testcluster.layout import Layout

from cluster_helpers import REPO
from operator_fixtures import install_operator

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


def test_the_demo_runs_green(local_cluster: Layout, kubeconfig: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}  # the demo starts/uses the local cluster
    try:
        result = subprocess.run(
            ["bash", str(REPO / "hack" / "demo.sh")],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
    finally:
        install_operator(local_cluster, kubeconfig)  # the demo installs the chart with its defaults
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert "version=v1" in result.stdout
    assert "=> v2: Promoted" in result.stdout
    assert "=> v3: Aborted" in result.stdout
    assert "failed requests during both rollouts: 0" in result.stdout
