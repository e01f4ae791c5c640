"""The operator image installs only modeldeploy-operator's declared dependencies (and the contract's):
a module importing anything else (orjson, numpy: present in the development venv through the serving
package) works in the tests and crashes the operator pod at start. Checked here from the sources."""

from __future__ import annotations

import ast
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
# distribution name -> module name, where they differ
THROUGH = {"urllib3"}
"""Installed with a declared dependency and imported for its exception types (kubernetes' client)."""
MODULE_OF = {
    "pyyaml": "yaml",
    "prometheus-client": "prometheus_client",
    "pydantic-settings": "pydantic_settings",
}


def _declared(*projects: str) -> set[str]:
    modules = set()
    for project in projects:
        meta = tomllib.loads((REPO / project / "pyproject.toml").read_text())["project"]
        for requirement in meta["dependencies"]:
            name = requirement.split(">")[0].split("=")[0].split("<")[0].split("[")[0].strip().lower()
            modules.add(MODULE_OF.get(name, name.replace("-", "_")))
    return modules


def _imports(package: Path) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                found.setdefault(name.split(".")[0], set()).add(str(path.relative_to(REPO)))
    return found


@pytest.mark.parametrize(
    ("package", "projects"),
    [
        ("operator/src/modeldeploy_operator", ("operator", "contract")),
        ("contract/src/modeldeploy_contract", ("contract",)),
    ],
)
def test_only_declared_dependencies_are_imported(package: str, projects: tuple[str, ...]) -> None:
    allowed = (
        _declared(*projects)
        | set(sys.stdlib_module_names)
        | {"modeldeploy_operator", "modeldeploy_contract"}
        | THROUGH
    )
    foreign = {name: where for name, where in _imports(REPO / package).items() if name not in allowed}
    assert foreign == {}, f"imported but not declared in {projects}' pyproject.toml: {foreign}"
