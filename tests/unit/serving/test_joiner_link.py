"""The joiner store's reconnect decisions (joiner/link.py): pure, with the time and jitter given."""

from __future__ import annotations

import math
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from modeldeploy_contract.joiner_settings import JoinerSettings
from modeldeploy_serving.joiner.link import Link, ReconnectPolicy
from modeldeploy_serving.joiner.store import StoreError, open_store

POLICY = ReconnectPolicy(first_seconds=0.5, max_seconds=10.0, factor=2.0)


def test_a_lost_connection_is_tried_again_at_once_then_with_growing_capped_waits() -> None:
    link = Link(last_contact=0.0).lost(100.0)
    assert not link.up
    assert link.may_attempt(100.0)  # the first new connection at once: a killed backend costs nothing
    waits = []
    now = 100.0
    for _ in range(8):
        link = link.attempt_failed(now, POLICY, jitter=1.0)
        waits.append(link.next_attempt - now)
        assert not link.may_attempt(now)
        now = link.next_attempt
        assert link.may_attempt(now)
    assert waits == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0, 10.0]
    assert link.down_since == 100.0  # the outage's start stays (logged at its end)
    back = link.reconnected(now)
    assert (back.up, back.failures, back.down_since, back.last_contact) == (True, 0, None, now)


def test_losing_again_while_down_does_not_restart_the_outage() -> None:
    link = Link().lost(5.0).attempt_failed(5.0, POLICY, jitter=0.0)
    assert link.lost(6.0) == link


def test_retry_after_is_whole_seconds_to_the_next_attempt_and_at_least_one() -> None:
    link = Link().lost(0.0).attempt_failed(0.0, POLICY, jitter=1.0)  # next attempt at 0.5
    assert link.retry_after(0.0) == 1
    link = Link(up=False, next_attempt=12.2)
    assert link.retry_after(10.0) == 3
    assert link.retry_after(50.0) == 1  # overdue: "try again now" is still 1 s, never 0 or negative


def test_readiness_asks_the_database_only_when_nothing_did_for_the_interval() -> None:
    link = Link(last_contact=100.0)
    assert not link.needs_check(104.9, interval=5.0)
    assert link.needs_check(105.0, interval=5.0)
    assert link.contact(104.0).needs_check(105.0, interval=5.0) is False
    assert Link(last_contact=100.0).needs_check(100.0, interval=0.0)
    down = link.lost(200.0).attempt_failed(200.0, POLICY, jitter=1.0)
    assert not down.needs_check(200.2, interval=0.0)  # down: only when an attempt is due
    assert down.needs_check(200.5, interval=60.0)


@given(
    failures=st.integers(min_value=0, max_value=10_000),
    jitter=st.floats(allow_nan=False, allow_infinity=True),
)
def test_any_failure_count_and_jitter_give_a_wait_within_half_and_all_of_the_capped_step(
    failures: int, jitter: float
) -> None:
    delay = POLICY.delay(failures, jitter)
    step = min(POLICY.max_seconds, POLICY.first_seconds * 2.0 ** min(64, max(0, failures - 1)))
    assert math.isfinite(delay)
    assert step / 2 <= delay <= step


@pytest.mark.parametrize("value", ["-1", "3601", "soon", "nan"])
def test_bad_readiness_check_seconds_are_refused(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELDEPLOY_JOINER_READINESS_CHECK_SECONDS", value)
    with pytest.raises(ValidationError, match="readiness_check_seconds"):
        JoinerSettings()


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("host=db port=5432 = broken", "not a PostgreSQL DSN"),
        ("postgresql://u@[::1/db", "not a PostgreSQL DSN"),
        ("sqlite://relative.db", "sqlite:///<path>"),
        ("sqlite:///", "sqlite:///<path>"),
    ],
)
def test_a_malformed_database_url_is_refused_at_start_with_why(url: str, why: str) -> None:
    with pytest.raises(StoreError, match=re.escape(why)):
        open_store(url)
