"""Apply only what differs (issue 16): is the live object already what we would apply?

Two tests, both needed:
- every field of the desired manifest has that value on the live object (`covers`): catches someone
  else's edit of a field we set (the level-triggered repair), and an object we never applied;
- the live object carries the hash of exactly this manifest (`APPLIED_HASH`, written with it): catches
  a field we set before and no longer set (server-side apply removes it; `covers` alone would not
  notice, since the desired manifest no longer mentions it).
When both hold, a server-side apply would change nothing, so it is skipped: an idle reconcile writes
nothing. The server's defaults (fields we never set) do not matter: only the manifest's fields are
compared.

Values the server rewrites: resource quantities are stored in canonical form ("0.5" CPU comes back as
"500m", "1024Mi" as "1Gi", an int 2 as "2", a cache sizeLimit "2048Mi" as "2Gi"), so quantity fields
(container and pod `resources.requests`/`limits`, `emptyDir.sizeLimit`, an HPA target's `value` and
`averageValue`) are compared by their canonical form; without it a ModelDeployment whose spec says
`cpu: 0.5` was applied on every pass. Only those fields: an env value or a label "0.5" is a string the
server keeps, and "500m" there is a different value. Ports need no rule: every port we set is an int
or a name, and an int-or-string field keeps the type it was sent with. A value the server drops
(`omitempty`: a false, 0 or "" we set on a non-pointer field) would still never match, and that object
is applied every pass: a cost, never a wrong result. Treating a missing field as the zero value instead
would hide someone deleting a pointer field we set (`allowPrivilegeEscalation: false`), so it is not done.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from modeldeploy_operator.domain.quantity import canonical_quantity
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


QUANTITY_MAPS = frozenset({"requests", "limits"})
"""Under a `resources` key, maps of resource name to quantity (core/v1 ResourceRequirements)."""
QUANTITY_FIELDS = frozenset({"sizeLimit"})
"""Fields that are a quantity wherever they appear (emptyDir)."""
TARGET_QUANTITIES = frozenset({"value", "averageValue"})
"""Under a `target` key: an autoscaling/v2 MetricTarget's quantities."""


def is_quantity_field(path: tuple[str, ...]) -> bool:
    """Whether the value at `path` (map keys from the object's root; list items keep their list's
    path) is a resource.Quantity, which the API server stores in canonical form."""
    if not path:
        return False
    if path[-1] in QUANTITY_FIELDS:
        return True
    if len(path) >= 3 and path[-3] == "resources" and path[-2] in QUANTITY_MAPS:
        return True
    return len(path) >= 2 and path[-2] == "target" and path[-1] in TARGET_QUANTITIES


def normalise_quantity(value: Any) -> Any:
    """A quantity in the API server's canonical form ("0.5" -> "500m"); anything that is not a
    quantity (a bool, None, a malformed string) is returned as it is."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return value
    try:
        return canonical_quantity(value)
    except ValueError:
        return value


def covers(live: Any, desired: Any, path: tuple[str, ...] = ()) -> bool:
    """Every field of `desired` has the same value in `live` (lists: same length, item by item; an
    empty dict or list we set is the same as none; a quantity field the same quantity, in any form)."""
    if isinstance(desired, dict):
        if not isinstance(live, dict):
            return not desired and live is None
        return all(covers(live.get(key), value, (*path, str(key))) for key, value in desired.items())
    if isinstance(desired, list):
        if not isinstance(live, list):
            return not desired and live is None
        return len(live) == len(desired) and all(
            covers(a, b, path) for a, b in zip(live, desired, strict=True)
        )
    return _same_value(live, desired, path)


def _same_value(live: Any, desired: Any, path: tuple[str, ...]) -> bool:
    if isinstance(desired, bool) or isinstance(live, bool):
        return live is desired
    if live != desired and is_quantity_field(path):
        return bool(normalise_quantity(live) == normalise_quantity(desired))
    return bool(live == desired)


def unchanged(desired: dict[str, Any], live: dict[str, Any] | None) -> bool:
    """Whether applying `desired` (annotated by with_applied_hash) to `live` would change nothing."""
    if live is None or (live.get("metadata") or {}).get("deletionTimestamp"):
        return False
    return covers(live, desired)
