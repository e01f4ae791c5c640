"""What every remote bundle source provides."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

from modeldeploy_serving.errors import BundleError


class Source(Protocol):
    def fetch(self, name: str, dest: Path, limit: int) -> None:
        """Write bundle file `name` to `dest`; raise BundleError if it is missing or over `limit` bytes."""


def write_capped(chunks: Iterable[bytes], dest: Path, limit: int, what: str) -> None:
    """Stream chunks to dest, stopping (and failing) as soon as more than `limit` bytes arrived."""
    written = 0
    with dest.open("wb") as fh:
        for chunk in chunks:
            written += len(chunk)
            if written > limit:
                raise BundleError(f"{what} is larger than the {limit} bytes allowed")
            fh.write(chunk)
