"""Leader election that cannot produce two writers (k8s/leader.py): expiry on the local clock, a renew
deadline shorter than the lease, and a fence on every write once it has passed; a leader that lost the
lease steps down and campaigns again in the same process, and its writes are fenced per term (one of
an earlier term never passes). The API server side is an in-memory Lease with resourceVersions; the
clock is a counter the tests move (a SIGSTOP is a jump), and waits move it instead of sleeping.
On a real API server with an audit log: tests/integration/operator/test_operator_ha.py and
test_operator_apiserver_outage_private.py."""

from __future__ import annotations

import copy
import logging
import threading
from typing import Any, ClassVar

import pytest
from pydantic import ValidationError

from modeldeploy_operator.config import OperatorSettings
from modeldeploy_operator.k8s import api as api_module
from modeldeploy_operator.k8s.api import FencedError, KubeApi, RejectedError, TransientApiError
from modeldeploy_operator.k8s.kinds import kind_of
from modeldeploy_operator.k8s.leader import RETRY_SECONDS, LeaderElector

DURATION, RENEW, DEADLINE = 15.0, 5.0, 10.0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Leases:
    """The Lease store: get, create, replace at a resourceVersion (else a conflict)."""

    def __init__(self) -> None:
        self.lease: dict[str, Any] | None = None
        self.version = 0
        self.writes: list[str] = []

    def get(self, *_: Any) -> dict[str, Any] | None:
        return copy.deepcopy(self.lease)

    def create(self, manifest: dict[str, Any]) -> dict[str, Any]:
        if self.lease is not None:
            raise TransientApiError("409 exists")
        return self._store(manifest)

    def replace(self, manifest: dict[str, Any]) -> dict[str, Any]:
        assert self.lease is not None
        if manifest["metadata"].get("resourceVersion") != self.lease["metadata"]["resourceVersion"]:
            raise TransientApiError("409 conflict")
        return self._store(manifest)

    def _store(self, manifest: dict[str, Any]) -> dict[str, Any]:
        self.version += 1
        self.lease = copy.deepcopy(manifest)
        self.lease["metadata"]["resourceVersion"] = str(self.version)
        self.writes.append(manifest["spec"]["holderIdentity"])
        return copy.deepcopy(self.lease)


class Ticking(threading.Event):
    """An Event whose wait moves the fake clock by its timeout instead of sleeping."""

    def __init__(self, clock: Clock) -> None:
        super().__init__()
        self.clock = clock
        self.waits: list[float] = []

    def wait(self, timeout: float | None = None) -> bool:
        if not self.is_set():
            assert timeout is not None
            self.waits.append(timeout)
            self.clock.now += timeout
        return self.is_set()


def elector(leases: Leases, identity: str, clock: Clock) -> LeaderElector:
    return LeaderElector(leases, "sys", "op", identity, DURATION, RENEW, DEADLINE, clock=clock)  # type: ignore[arg-type]


def test_a_standby_takes_over_a_full_lease_after_it_saw_the_record_change_on_its_own_clock() -> None:
    clock, leases = Clock(), Leases()
    a, b = elector(leases, "a", clock), elector(leases, "b", clock)
    assert a.try_acquire_or_renew()
    # The holder's renewTime is another machine's wall clock: years off either way, it is not read.
    assert leases.lease is not None
    leases.lease["spec"]["renewTime"] = "2001-01-01T00:00:00.000000Z"
    leases.version += 1
    assert not b.try_acquire_or_renew()  # first seen now
    clock.now += DURATION - 0.1
    assert not b.try_acquire_or_renew()
    clock.now += 0.2
    assert b.try_acquire_or_renew()
    assert leases.lease["spec"]["holderIdentity"] == "b"
    assert leases.lease["spec"]["leaseTransitions"] == 1


def test_a_renewal_seen_restarts_the_standbys_count() -> None:
    clock, leases = Clock(), Leases()
    a, b = elector(leases, "a", clock), elector(leases, "b", clock)
    assert a.try_acquire_or_renew()
    assert not b.try_acquire_or_renew()
    for _ in range(10):  # a renews every 5 s: b never gets it, however long it waits
        clock.now += RENEW
        assert a.try_acquire_or_renew()
        assert not b.try_acquire_or_renew()


def test_the_old_leaders_fence_closes_before_a_standby_can_take_over() -> None:
    clock, leases = Clock(), Leases()
    a, b = elector(leases, "a", clock), elector(leases, "b", clock)
    assert a.try_acquire_or_renew()
    renewed_at = clock.now
    clock.now += 0.05  # the standby reads the renewed record just after it was written
    assert not b.try_acquire_or_renew()
    took_over = None
    while took_over is None:
        clock.now += 0.05
        if b.try_acquire_or_renew():
            took_over = clock.now
    fence_closed = renewed_at + DEADLINE
    assert not a.holds()
    assert took_over - fence_closed >= DURATION - DEADLINE


def test_a_leader_paused_past_its_deadline_stops_and_does_not_renew_when_it_wakes() -> None:
    clock, leases = Clock(), Leases()
    a, b = elector(leases, "a", clock), elector(leases, "b", clock)
    assert a.try_acquire_or_renew()
    assert a.holds()
    assert not b.try_acquire_or_renew()
    clock.now += DURATION + 5  # a is SIGSTOPped; b takes over meanwhile
    assert b.try_acquire_or_renew()
    assert not a.holds()  # on waking, before anything else: the fence is shut

    lost = Ticking(clock)
    writes = len(leases.writes)
    a.keep_renewing(1, lost)
    assert lost.is_set()
    assert leases.writes[writes:] == []  # not even a renewal attempt
    assert leases.lease is not None
    assert leases.lease["spec"]["holderIdentity"] == "b"


def test_a_leader_whose_renewals_fail_stops_at_its_deadline_not_at_the_lease() -> None:
    clock, leases = Clock(), Leases()
    a = elector(leases, "a", clock)
    assert a.try_acquire_or_renew()
    start = clock.now

    def fail(*_: Any) -> None:
        raise TransientApiError("503")

    leases.get = fail  # type: ignore[method-assign]
    clock.now = start + DEADLINE - 0.01
    assert not a.try_acquire_or_renew()
    assert a.holds()
    clock.now = start + DEADLINE
    assert not a.holds()


def test_a_renewal_that_began_before_a_pause_counts_from_its_start() -> None:
    """The deadline counts from the renewal's start: a pause between the read and the write (the
    write lands late) leaves the fence shut."""
    clock, leases = Clock(), Leases()
    a = elector(leases, "a", clock)
    assert a.try_acquire_or_renew()
    get = leases.get

    def paused_get(*args: Any) -> dict[str, Any] | None:
        clock.now += DEADLINE + 1
        return get(*args)

    leases.get = paused_get  # type: ignore[method-assign]
    assert a.try_acquire_or_renew()
    assert not a.holds()


# -- steps down and campaigns again in the same process; terms ----------------------------------------


def test_a_standby_asks_every_second_and_takes_over_within_one_of_the_lease_running_out() -> None:
    clock, leases = Clock(), Leases()
    a, b = elector(leases, "a", clock), elector(leases, "b", clock)
    assert a.try_acquire_or_renew()  # ...and then a renews no more
    first_seen = clock.now
    waiting = Ticking(clock)
    assert b.wait_for_leadership(waiting) == 1
    assert set(waiting.waits) == {RETRY_SECONDS}  # not the lease's 15 s, nor the renew period
    assert first_seen + DURATION < clock.now <= first_seen + DURATION + RETRY_SECONDS


def test_a_leader_that_cannot_renew_steps_down_at_its_deadline_and_leads_again_in_a_new_term() -> None:
    """The API server away for a minute: the leader's fence closes at its deadline and it steps down
    (no exit); it asks every second while the server is away and holds a new term within a second of
    the server answering again (nobody else took the Lease meanwhile)."""
    clock, leases = Clock(), Leases()
    a = elector(leases, "a", clock)
    assert a.wait_for_leadership(Ticking(clock)) == 1
    renewed_at = clock.now
    get, back_at = leases.get, clock.now + 60.0

    def away(*args: Any) -> dict[str, Any] | None:
        if clock.now < back_at:
            raise TransientApiError("GET lease: connection refused", unreachable=True)
        return get(*args)

    leases.get = away  # type: ignore[method-assign]
    lost = Ticking(clock)
    a.keep_renewing(1, lost)
    assert lost.is_set()
    assert not a.holds(1)
    assert not a.holds()
    assert renewed_at + DEADLINE <= clock.now <= renewed_at + DEADLINE + 1.0  # failed renewals: every 1 s
    waiting = Ticking(clock)
    assert a.wait_for_leadership(waiting) == 2
    assert back_at <= clock.now <= back_at + RETRY_SECONDS
    assert set(waiting.waits) == {RETRY_SECONDS}
    assert a.holds(2)
    assert not a.holds(1)  # the old term stays closed
    assert leases.lease is not None
    assert leases.lease["spec"]["holderIdentity"] == "a"


def test_a_renewal_that_lands_after_the_deadline_begins_a_new_term_and_never_reopens_the_old() -> None:
    clock, leases = Clock(), Leases()
    a = elector(leases, "a", clock)
    assert a.try_acquire_or_renew()
    assert (a.term, a.holds(1)) == (1, True)
    assert a.try_acquire_or_renew()  # on time: the same term, extended
    assert (a.term, a.holds(1)) == (1, True)
    clock.now += DEADLINE + 1  # paused, nobody took over meanwhile: the Lease still names a
    assert not a.holds(1)
    assert a.try_acquire_or_renew()
    assert a.term == 2
    assert a.holds(2)
    assert not a.holds(1)


def test_a_stepped_down_leader_waits_while_another_holds_the_lease() -> None:
    clock, leases = Clock(), Leases()
    a, b = elector(leases, "a", clock), elector(leases, "b", clock)
    assert a.try_acquire_or_renew()
    clock.now += DURATION + 5  # a paused; b takes over
    assert not b.try_acquire_or_renew()  # (first seen now)
    clock.now += DURATION + 0.1
    assert b.try_acquire_or_renew()
    a.step_down()
    for _ in range(30):  # b renews every 5 s; a asks every second and never gets it
        for _ in range(5):
            clock.now += RETRY_SECONDS
            assert not a.try_acquire_or_renew()
        assert b.try_acquire_or_renew()
    assert not a.holds()
    assert a.term == 1


def test_a_refused_lease_is_said_once_not_at_every_second(caplog: pytest.LogCaptureFixture) -> None:
    clock, leases = Clock(), Leases()
    a = elector(leases, "a", clock)

    def forbidden(*_: Any) -> None:
        raise RejectedError(403, "leases is forbidden")

    leases.get = forbidden  # type: ignore[method-assign]
    with caplog.at_level(logging.WARNING):
        for _ in range(5):
            assert not a.try_acquire_or_renew()
            clock.now += RETRY_SECONDS
    assert [r.getMessage() for r in caplog.records].count(
        "cannot take the lease sys/op: leases is forbidden"
    ) == 1


class _Sender:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []

    def param_serialize(self, **kwargs: Any) -> tuple[str, str, dict[str, str], Any, list[Any]]:
        return kwargs["method"], kwargs["resource_path"], {}, kwargs.get("body"), []

    def call_api(self, method: str, url: str, **_: Any) -> Any:
        self.sent.append((method, url))

        class Response:
            status = 200

            def read(self) -> bytes:
                return b"{}"

        return Response()


class FakeFence:
    def __init__(self) -> None:
        self.term = 1
        self.now = True

    def holds(self, term: int) -> bool:
        return self.now and term == self.term


@pytest.fixture
def fence() -> Any:
    fake = FakeFence()
    api_module.fence_writes(fake)
    yield fake
    api_module.fence_writes(None)


def test_every_write_is_fenced_reads_and_the_leases_own_client_are_not(fence: FakeFence) -> None:
    sender = _Sender()
    api = KubeApi(sender, "fm")
    lease_api = KubeApi(sender, "fm", fenced=False)
    cm: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "x", "namespace": "ml"},
    }
    involved = {**cm, "metadata": {**cm["metadata"], "uid": "u"}}
    api.apply(cm)
    fence.now = False
    writes: list[Any] = [
        lambda: api.apply(cm),
        lambda: api.create(cm),
        lambda: api.replace(cm),
        lambda: api.delete("v1", "ConfigMap", "ml", "x"),
        lambda: api.patch(kind_of("v1", "ConfigMap"), "ml", "x", {"data": {}}),
    ]
    for write in writes:
        with pytest.raises(FencedError):
            write()
    api.event(involved, "Reason", "dropped")  # Events are best effort: dropped quietly
    assert len(sender.sent) == 1
    assert api.get("v1", "ConfigMap", "ml", "x") == {}
    lease_api.replace(cm)
    assert [m for m, _ in sender.sent] == ["PATCH", "GET", "PUT"]


@pytest.mark.parametrize(
    ("renew", "deadline", "duration"), [(5, 15, 15), (5, 20, 15), (10, 10, 15), (12, 10, 15)]
)
def test_lease_timings_out_of_order_are_refused(renew: float, deadline: float, duration: float) -> None:
    with pytest.raises(ValidationError, match="lease_renew_deadline_seconds"):
        OperatorSettings(
            lease_renew_seconds=renew,
            lease_renew_deadline_seconds=deadline,
            lease_duration_seconds=duration,
        )
    with pytest.raises(ValueError, match="renew_deadline"):
        LeaderElector(Leases(), "s", "n", "i", duration, renew, deadline)  # type: ignore[arg-type]


def test_a_write_of_an_earlier_term_never_passes_not_even_while_a_later_term_holds() -> None:
    """Each term builds its own client (handlers.start): a reconcile of term 1 still running when the
    process leads again in term 2 writes nothing; term 2's client writes."""
    clock, leases = Clock(), Leases()
    a = elector(leases, "a", clock)
    sender = _Sender()
    cm: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "x", "namespace": "ml"},
    }
    before_any_fence = KubeApi(sender, "fm")
    api_module.fence_writes(a)
    try:
        with pytest.raises(FencedError):
            before_any_fence.apply(cm)  # made before the fence: of no term
        assert a.wait_for_leadership(Ticking(clock)) == 1
        first = KubeApi(sender, "fm")
        assert first.term == 1
        first.apply(cm)
        a.step_down()
        between = KubeApi(sender, "fm")  # made while no term holds: the last one's, closed
        for api in (first, between):
            with pytest.raises(FencedError, match="term 1"):
                api.apply(cm)
        assert a.wait_for_leadership(Ticking(clock)) == 2
        second = KubeApi(sender, "fm")
        second.apply(cm)
        for api in (first, between):
            with pytest.raises(FencedError):
                api.apply(cm)
        clock.now += DEADLINE  # term 2's deadline passes too: no write after it
        with pytest.raises(FencedError):
            second.apply(cm)
    finally:
        api_module.fence_writes(None)
    assert [m for m, _ in sender.sent] == ["PATCH", "PATCH"]


class _ScriptedElector:
    """Stands in for LeaderElector in main: wins terms 1 and 2; term 1 is lost at once."""

    made: ClassVar[list[_ScriptedElector]] = []

    def __init__(self, *_: Any, **__: Any) -> None:
        self.to_win = [1, 2]
        self.renewing: list[int] = []
        self.released = 0
        self.term = 0
        _ScriptedElector.made.append(self)

    def holds(self, term: int) -> bool:
        return term == self.term

    def wait_for_leadership(self, stop: threading.Event) -> int:
        self.term = self.to_win.pop(0)
        return self.term

    def keep_renewing(self, term: int, lost: threading.Event) -> None:
        self.renewing.append(term)
        if term == 1:
            lost.set()  # the deadline passed: step down

    def release(self) -> None:
        self.released += 1


def test_main_steps_down_and_leads_again_in_the_same_process_and_exits_cleanly_on_sigterm(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Term 1 lost: its kopf run ends and the process campaigns again (no exit); term 2 ends by
    SIGTERM (kopf returns, nothing lost): the Lease is released and main returns 0."""
    from modeldeploy_operator import main as main_module

    led: list[tuple[int, bool]] = []

    def lead(settings: OperatorSettings, lost: threading.Event, running: threading.Event) -> None:
        term = _ScriptedElector.made[-1].term
        if term == 1:
            assert lost.wait(30)  # kopf runs until the lease thread says the term is over
        led.append((term, lost.is_set()))

    monkeypatch.setattr(main_module, "LeaderElector", _ScriptedElector)
    monkeypatch.setattr(main_module, "_lead", lead)
    monkeypatch.setattr(main_module, "start_http_server", lambda *_: None)
    monkeypatch.setattr(main_module, "serve_health", lambda *_: None)
    monkeypatch.setattr(main_module, "new_api_client", object)
    try:
        assert main_module.main([]) == 0
        (made,) = _ScriptedElector.made
        assert api_module._write_fence is made  # installed once, for every term
    finally:
        api_module.fence_writes(None)
        _ScriptedElector.made.clear()
    assert led == [(1, True), (2, False)]
    assert made.renewing == [1, 2]
    assert made.released == 1
