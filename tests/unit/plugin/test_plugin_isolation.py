"""The plugin installs on its own: its wheel declares only the Kubernetes client, pydantic, PyYAML,
shtab and the small contract package, and a fresh environment holding just those runs every module
(no operator, no kopf). Built with uv, as `pipx install` would build it from plugin/."""

from __future__ import annotations

import email
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
UV = shutil.which("uv") or str(Path.home() / ".local" / "bin" / "uv")
FORBIDDEN = {"kopf", "modeldeploy-operator", "modeldeploy-serving", "prometheus-client", "httpx", "fastapi"}

pytestmark = pytest.mark.skipif(not Path(UV).exists(), reason="uv is not installed")


def _uv(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, UV_PYTHON_DOWNLOADS="never")
    return subprocess.run(
        [UV, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False
    )


def _requirements(wheel: Path) -> set[str]:
    with zipfile.ZipFile(wheel) as archive:
        (name,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        metadata = email.message_from_bytes(archive.read(name))
    return {
        req.split(";")[0].split(">")[0].split("=")[0].split("<")[0].strip().lower()
        for req in metadata.get_all("Requires-Dist") or []
    }


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("wheels")
    for package in ("modeldeploy-kubectl", "modeldeploy-contract"):
        built = _uv("build", "--wheel", "--package", package, "--out-dir", str(out))
        if built.returncode != 0:
            pytest.skip(f"uv build failed (offline without a cached build backend?): {built.stderr[-500:]}")
    return {p.name.split("-")[0]: p for p in out.glob("*.whl")}


@pytest.mark.slow
def test_the_wheel_declares_no_operator_dependency(wheels: dict[str, Path]) -> None:
    assert _requirements(wheels["modeldeploy_kubectl"]) == {
        "kubernetes",
        "modeldeploy-contract",
        "pydantic",
        "pyyaml",
        "shtab",
    }
    assert _requirements(wheels["modeldeploy_contract"]) == {"pydantic", "pydantic-settings"}
    with zipfile.ZipFile(wheels["modeldeploy_kubectl"]) as archive:
        entry_points = next(n for n in archive.namelist() if n.endswith("entry_points.txt"))
        scripts = archive.read(entry_points).decode()
    assert "kubectl-modeldeploy = modeldeploy_kubectl.main:main" in scripts
    assert "kubectl_complete-modeldeploy = modeldeploy_kubectl.complete:main" in scripts


@pytest.mark.slow
def test_a_fresh_environment_with_only_the_declared_dependencies_runs_it(
    wheels: dict[str, Path], tmp_path: Path
) -> None:
    venv = tmp_path / "venv"
    created = _uv("venv", "--python", sys.executable, str(venv))
    assert created.returncode == 0, created.stderr
    python = venv / "bin" / "python"
    installed = _uv("pip", "install", "--python", str(python), *map(str, wheels.values()))
    if installed.returncode != 0:
        pytest.skip(f"could not install the declared dependencies (offline?): {installed.stderr[-500:]}")
    frozen = _uv("pip", "freeze", "--python", str(python)).stdout.lower()
    present = {line.split("==")[0].split(" @ ")[0].strip() for line in frozen.splitlines()}
    assert present & FORBIDDEN == set()

    plugin = venv / "bin" / "kubectl-modeldeploy"
    shown = subprocess.run([str(plugin), "--help"], capture_output=True, text=True, timeout=60, check=False)
    assert shown.returncode == 0, shown.stderr
    assert "Exit codes" in shown.stdout
    script = subprocess.run(
        [str(plugin), "completion", "bash"], capture_output=True, text=True, timeout=60, check=False
    )
    assert script.returncode == 0
    assert "kubectl-modeldeploy" in script.stdout
    # Every module imports (the Kubernetes client included: a missing kubeconfig is exit 5, not a crash).
    missing = subprocess.run(
        [str(plugin), "--kubeconfig", str(tmp_path / "none"), "get", "churn"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert missing.returncode == 5, missing.stderr
    loaded = subprocess.run(
        [
            str(python),
            "-c",
            "import sys, modeldeploy_kubectl.main, modeldeploy_kubectl.complete, modeldeploy_kubectl.client;"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('kopf', 'modeldeploy_operator', 'modeldeploy_serving')))",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert loaded.stdout.strip() == "[]", loaded.stderr
    completer = subprocess.run(
        [str(venv / "bin" / "kubectl_complete-modeldeploy"), "his"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completer.stdout == "history\n:4\n"
