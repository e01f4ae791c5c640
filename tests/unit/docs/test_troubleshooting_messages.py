"""docs/troubleshooting.md quotes modeldeploy's own messages in ```message blocks: every part of each
quote outside `<placeholders>` must still be in the source tree, so a reworded message fails here until
the page follows."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
PAGE = REPO / "docs" / "troubleshooting.md"
SOURCES = ["operator/src", "serving/src", "contract/src", "plugin/src", "charts/modeldeploy/templates"]
BLOCK = re.compile(r"^```message\n(.*?)^```", re.MULTILINE | re.DOTALL)
PLACEHOLDER = re.compile(r"<[^<>]*>")
# Implicitly concatenated literals ("...is "\n    "measured...") read as one string.
CONTINUATION = re.compile(r"\"\s*\n\s*[rbfRBF]*\"")


def _quotes() -> list[str]:
    return [line for block in BLOCK.findall(PAGE.read_text()) for line in block.splitlines() if line.strip()]


def _source_text() -> str:
    texts = []
    for folder in SOURCES:
        for path in sorted((REPO / folder).rglob("*")):
            if path.suffix in (".py", ".yaml", ".tpl", ".txt") and path.is_file():
                texts.append(CONTINUATION.sub("", path.read_text()))
    return "\n".join(texts)


def _fragments(quote: str) -> list[str]:
    """The literal parts of a quote, without placeholders; parts of < 3 characters say nothing."""
    return [part.strip() for part in PLACEHOLDER.split(quote) if len(part.strip()) >= 3]


def test_the_page_has_its_eleven_entries_and_quotes() -> None:
    text = PAGE.read_text()
    assert len(re.findall(r"^## \d+\. ", text, re.MULTILINE)) == 11
    assert len(_quotes()) >= 10


@pytest.mark.parametrize("quote", _quotes())
def test_quoted_message_is_in_the_source(quote: str) -> None:
    fragments = _fragments(quote)
    # A quote must pin something: at least one literal part long enough to be that message.
    assert max((len(f) for f in fragments), default=0) >= 15, f"nothing checkable in {quote!r}"
    source = _source_text()
    missing = [f for f in fragments if f not in source]
    assert not missing, f"docs/troubleshooting.md quotes {quote!r}, but the code no longer says {missing}"


def test_a_reworded_message_would_be_caught() -> None:
    source = _source_text()
    assert "is not in the operator's allow-list" in source
    assert "is not on the operator's allow-list" not in source
    assert _fragments("manifest sha256 is <x>, expected <y>") == ["manifest sha256 is", ", expected"]
