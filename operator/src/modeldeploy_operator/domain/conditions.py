"""Pure helpers for metav1.Condition lists.

lastTransitionTime moves only when a condition's status changes, so `kubectl wait` and alerts see
real transitions rather than every reconcile.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from .status_model import Condition, ConditionStatus


def find_condition(conditions: Sequence[Condition], type_: str) -> Condition | None:
    """The condition of that type, or None."""
    return next((c for c in conditions if c.type == type_), None)


def is_true(conditions: Sequence[Condition], type_: str) -> bool:
    """True when the condition exists and its status is "True"."""
    condition = find_condition(conditions, type_)
    return condition is not None and condition.status == "True"


def set_condition(
    conditions: Sequence[Condition],
    type_: str,
    status: ConditionStatus,
    reason: str,
    message: str,
    *,
    now: datetime,
    observed_generation: int | None = None,
) -> tuple[Condition, ...]:
    """A copy of `conditions` with the condition of `type_` set; order kept, new types appended."""
    previous = find_condition(conditions, type_)
    changed = previous is None or previous.status != status
    transition = now.replace(microsecond=0) if changed or previous is None else previous.last_transition_time
    updated = Condition(
        type=type_,
        status=status,
        reason=reason,
        message=message,
        last_transition_time=transition,
        observed_generation=observed_generation,
    )
    if previous is None:
        return (*conditions, updated)
    return tuple(updated if c.type == type_ else c for c in conditions)


def remove_condition(conditions: Sequence[Condition], type_: str) -> tuple[Condition, ...]:
    """A copy of `conditions` without the condition of `type_`."""
    return tuple(c for c in conditions if c.type != type_)
