"""Types of the C module _predlog_lines.c (see its header comment for the contract)."""

from typing import Any

def one_row_lines(items: list[tuple[Any, ...]], spec: tuple[Any, ...], /) -> bytes | None: ...
