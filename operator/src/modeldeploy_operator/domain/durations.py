"""Durations as the CRD spells them: `30s`, `5m`, `1h30m` (a subset of Go's duration syntax)."""

from __future__ import annotations

import re

_DURATION = re.compile(r"^(?:(?P<h>[0-9]+)h)?(?:(?P<m>[0-9]+)m)?(?:(?P<s>[0-9]+)s)?$")


def parse_duration(text: str) -> float:
    """Seconds in `text`; raises ValueError for anything the CRD's pattern would reject."""
    match = _DURATION.match(text)
    if not text or match is None:
        raise ValueError(f"invalid duration {text!r}: use forms like 30s, 5m or 1h30m")
    hours, minutes, seconds = (int(match.group(unit) or 0) for unit in ("h", "m", "s"))
    return float(hours * 3600 + minutes * 60 + seconds)
