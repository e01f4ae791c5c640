"""Apply only what differs (issue 16): is the live object already what we would apply?

Two tests, both needed:
- every field of the desired manifest has that value on the live object (`covers`): catches someone
  else's edit of a field we set (the level-triggered repair), and an object we never applied;
- the live object carries the hash of exactly this manifest (`APPLIED_HASH`, written with it): catches
  a field we set before and no longer set (server-side apply removes it; `covers` alone would not
  notice, since the desired manifest no longer mentions it).
When both hold, a server-side apply would change nothing, so it is skipped: an idle reconcile writes
nothing. The server's defaults (fields we never set) do not matter: only the manifest's fields are
compared. Where the server rewrites a value we set (a quantity "0.5" stored as "500m") the two never
match and the object is applied every pass, as before: a cost, never a wrong result.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from modeldeploy_operator.domain.resource import GROUP

APPLIED_HASH = f"{GROUP}/applied-hash"


def applied_hash(manifest: dict[str, Any]) -> str:
    """A short digest of the manifest as we apply it (its own hash annotation left out)."""
    meta = dict(manifest.get("metadata") or {})
    annotations = {k: v for k, v in (meta.get("annotations") or {}).items() if k != APPLIED_HASH}
    meta["annotations"] = annotations
    canonical = json.dumps({**manifest, "metadata": meta}, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def with_applied_hash(manifest: dict[str, Any]) -> dict[str, Any]:
    """A copy of `manifest` annotated with its own hash (the input is left as it is)."""
    meta = dict(manifest.get("metadata") or {})
    meta["annotations"] = {**(meta.get("annotations") or {}), APPLIED_HASH: applied_hash(manifest)}
    return {**manifest, "metadata": meta}


def covers(live: Any, desired: Any) -> bool:
    """Every field of `desired` has the same value in `live` (lists: same length, item by item; an
    empty dict or list we set is the same as none)."""
    if isinstance(desired, dict):
        if not isinstance(live, dict):
            return not desired and live is None
        return all(covers(live.get(key), value) for key, value in desired.items())
    if isinstance(desired, list):
        if not isinstance(live, list):
            return not desired and live is None
        return len(live) == len(desired) and all(covers(a, b) for a, b in zip(live, desired, strict=True))
    if isinstance(desired, bool) or isinstance(live, bool):
        return live is desired
    return bool(live == desired)


def unchanged(desired: dict[str, Any], live: dict[str, Any] | None) -> bool:
    """Whether applying `desired` (annotated by with_applied_hash) to `live` would change nothing."""
    if live is None or (live.get("metadata") or {}).get("deletionTimestamp"):
        return False
    return covers(live, desired)
