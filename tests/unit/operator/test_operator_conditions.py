import datetime as dt

from modeldeploy_operator.domain.conditions import find_condition, is_true, remove_condition, set_condition

from modeldeploy_builders import NOW

LATER = NOW + dt.timedelta(minutes=5)


def test_new_condition_is_appended_with_second_precision() -> None:
    conditions = set_condition(
        (), "Ready", "False", "Starting", "pods starting", now=NOW, observed_generation=3
    )
    (ready,) = conditions
    assert (ready.type, ready.status, ready.reason, ready.observed_generation) == (
        "Ready",
        "False",
        "Starting",
        3,
    )
    assert ready.last_transition_time == NOW.replace(microsecond=0)


def test_same_status_keeps_transition_time_but_updates_reason_and_message() -> None:
    first = set_condition((), "Ready", "True", "A", "a", now=NOW)
    second = set_condition(first, "Ready", "True", "B", "b", now=LATER, observed_generation=2)
    ready = find_condition(second, "Ready")
    assert ready is not None
    assert ready.last_transition_time == NOW.replace(microsecond=0)
    assert (ready.reason, ready.message, ready.observed_generation) == ("B", "b", 2)


def test_status_change_moves_transition_time() -> None:
    first = set_condition((), "Ready", "True", "A", "a", now=NOW)
    second = set_condition(first, "Ready", "False", "A", "a", now=LATER)
    ready = find_condition(second, "Ready")
    assert ready is not None
    assert ready.last_transition_time == LATER.replace(microsecond=0)


def test_order_is_kept_and_other_conditions_untouched() -> None:
    conditions = set_condition((), "Ready", "True", "A", "", now=NOW)
    conditions = set_condition(conditions, "Degraded", "False", "A", "", now=NOW)
    updated = set_condition(conditions, "Ready", "False", "B", "", now=LATER)
    assert [c.type for c in updated] == ["Ready", "Degraded"]
    assert updated[1] == conditions[1]
    assert conditions[0].status == "True"  # the input is not mutated


def test_is_true_and_remove() -> None:
    conditions = set_condition((), "Ready", "True", "A", "", now=NOW)
    assert is_true(conditions, "Ready")
    assert not is_true(conditions, "Degraded")
    assert remove_condition(conditions, "Ready") == ()
