"""Every repository path the docs, the README, the CRD comments and the chart README name exists:
a renamed test or script must not leave the documentation pointing at nothing."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
DOCUMENTS = [
    REPO / "README.md",
    REPO / "charts" / "modeldeploy" / "README.md",
    REPO / "crds" / "modeldeploy.io_modeldeployments.yaml",
    *sorted((REPO / "docs").glob("*.md")),
]
# Paths to files of these kinds under these folders: what a reader would open.
PATH = re.compile(
    r"\b(?:tests|bench|hack|examples|operator|serving|contract|plugin)/[\w./-]+\.(?:py|sh|yaml|json|lua)\b"
)


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: str(p.relative_to(REPO)))
def test_named_paths_exist(document: Path) -> None:
    named = set(PATH.findall(document.read_text()))
    missing = sorted(p for p in named if not (REPO / p).exists())
    assert not missing, f"{document.relative_to(REPO)} names paths that do not exist: {missing}"
