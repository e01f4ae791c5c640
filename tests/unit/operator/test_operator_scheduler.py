"""The reconcile queue (issue 16): timers in due-time order, one timer per object (the latest pass's),
events coalesced, one pass per object at a time, and first come first served so a busy object cannot
starve the others. A fake clock; `get(timeout=0)` never waits."""

from __future__ import annotations

import threading

from modeldeploy_operator.scheduler import WorkQueue


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def drain(queue: WorkQueue) -> list[object]:
    """Every key ready now, each processed (get + done) in turn."""
    out = []
    while (key := queue.get(timeout=0)) is not None:
        out.append(key)
        queue.done(key)
    return out


def test_events_coalesce_while_waiting() -> None:
    queue = WorkQueue(FakeClock())
    for _ in range(5):
        queue.add("a")
    queue.add("b")
    queue.add("a")
    assert len(queue) == 2
    assert drain(queue) == ["a", "b"]


def test_timers_fire_in_due_order_and_not_before() -> None:
    clock = FakeClock()
    queue = WorkQueue(clock)
    queue.schedule("late", clock.now + 30)
    queue.schedule("soon", clock.now + 6)
    queue.schedule("mid", clock.now + 8)
    assert drain(queue) == []
    clock.now += 7
    assert drain(queue) == ["soon"]
    clock.now += 30
    assert drain(queue) == ["mid", "late"]


def test_the_latest_pass_replaces_the_timer() -> None:
    clock = FakeClock()
    queue = WorkQueue(clock)
    queue.schedule("a", clock.now + 3600)
    queue.schedule("a", clock.now + 5)  # a later pass: a pause that ends sooner
    clock.now += 6
    assert drain(queue) == ["a"]
    queue.schedule("b", clock.now + 5)
    queue.schedule("b", clock.now + 3600)  # the later pass's plan: nothing due soon any more
    clock.now += 6
    assert drain(queue) == []
    queue.schedule("b", None)  # and no timer at all
    clock.now += 7200
    assert drain(queue) == []


def test_a_due_timer_coalesces_with_a_pending_event() -> None:
    clock = FakeClock()
    queue = WorkQueue(clock)
    queue.schedule("a", clock.now + 1)
    queue.add("a")
    clock.now += 2
    assert drain(queue) == ["a"]


def test_an_object_is_never_processed_twice_at_once_and_is_requeued_after() -> None:
    clock = FakeClock()
    queue = WorkQueue(clock)
    queue.add("a")
    assert queue.get(timeout=0) == "a"
    queue.add("a")  # an event while its pass runs
    assert queue.get(timeout=0) is None  # not handed to a second worker
    queue.done("a")
    assert queue.get(timeout=0) == "a"  # the event gets its own pass, after the first one


def test_a_busy_object_cannot_starve_the_others() -> None:
    """`a` gets an event during each of its passes (pods of a rollout changing all the time); `b`
    and `c` each got one. Served first come first served, `a` is back at the end of the line each
    time: everyone gets a pass every round."""
    queue = WorkQueue(FakeClock())
    for name in ("a", "b", "c"):
        queue.add(name)
    order = []
    for _ in range(7):
        key = queue.get(timeout=0)
        assert key is not None
        order.append(key)
        if key == "a":
            queue.add("a")
        queue.done(key)
    assert order == ["a", "b", "c", "a", "a", "a", "a"]
    assert order.index("c") < 3


def test_a_timer_never_fires_sooner_than_the_gap_after_a_pass() -> None:
    clock = FakeClock()
    queue = WorkQueue(clock, min_gap=0.5)
    queue.add("a")
    assert queue.get(timeout=0) == "a"
    queue.schedule("a", clock.now - 10)  # the pass planned a timer that is already due
    queue.done("a")
    assert queue.get(timeout=0) is None  # not in a tight loop
    clock.now += 0.5
    assert drain(queue) == ["a"]


def test_forget_drops_the_timer_and_the_pending_pass() -> None:
    clock = FakeClock()
    queue = WorkQueue(clock)
    queue.add("gone")
    queue.schedule("gone", clock.now + 1)
    queue.forget("gone")
    clock.now += 2
    assert drain(queue) == []


def test_a_waiting_worker_wakes_for_an_event_from_another_thread() -> None:
    queue = WorkQueue()
    got: list[object] = []
    worker = threading.Thread(target=lambda: got.append(queue.get(timeout=60)))
    worker.start()
    queue.add("a")
    worker.join(timeout=60)
    assert got == ["a"]


def test_shut_down_releases_waiting_workers() -> None:
    queue = WorkQueue()
    got: list[object] = ["not yet"]
    worker = threading.Thread(target=lambda: got.__setitem__(0, queue.get()))
    worker.start()
    queue.shut_down()
    worker.join(timeout=60)
    assert got == [None]


def waits_of(clock: FakeClock) -> tuple[WorkQueue, list[float]]:
    waits: list[float] = []
    return WorkQueue(clock, on_wait=waits.append), waits


def test_queue_wait_is_from_the_first_add_to_a_worker_taking_it() -> None:
    clock = FakeClock()
    queue, waits = waits_of(clock)
    queue.add("a")
    clock.now += 0.25
    queue.add("a")  # coalesced: the wait still counts from the first add
    queue.add("b")
    clock.now += 0.5
    assert queue.get(timeout=0) == "a"
    assert queue.get(timeout=0) == "b"
    assert waits == [0.75, 0.5]


def test_queue_wait_of_a_timer_is_from_its_due_time() -> None:
    clock = FakeClock()
    queue, waits = waits_of(clock)
    queue.schedule("a", clock.now + 1)
    clock.now += 3  # due at +1, taken at +3
    assert queue.get(timeout=0) == "a"
    assert waits == [2.0]


def test_queue_wait_of_an_add_during_its_pass_includes_the_rest_of_that_pass() -> None:
    clock = FakeClock()
    queue, waits = waits_of(clock)
    queue.add("a")
    assert queue.get(timeout=0) == "a"
    clock.now += 0.1
    queue.add("a")  # an event while its pass runs: a pass after this one
    clock.now += 0.3
    queue.done("a")
    clock.now += 0.2
    assert queue.get(timeout=0) == "a"
    assert waits == [0.0, 0.5]


def test_queue_wait_of_a_forgotten_key_starts_afresh() -> None:
    clock = FakeClock()
    queue, waits = waits_of(clock)
    queue.add("a")
    queue.forget("a")
    clock.now += 5
    queue.add("a")
    clock.now += 0.5
    assert queue.get(timeout=0) == "a"
    assert waits == [0.5]
