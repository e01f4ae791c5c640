"""Leader election that cannot produce two writers (k8s/leader.py): expiry on the local clock, a renew
deadline shorter than the lease, and a fence on every write once it has passed. The API server side is
an in-memory Lease with resourceVersions; the clock is a counter the tests move (a SIGSTOP is a jump).
On a real API server with an audit log: tests/integration/operator/test_operator_ha.py."""

from __future__ import annotations

import copy
import threading
from typing import Any

import pytest
from pydantic import ValidationError

from modeldeploy_operator.config import OperatorSettings
from modeldeploy_operator.k8s import api as api_module
from modeldeploy_operator.k8s.api import FencedError, KubeApi, TransientApiError
from modeldeploy_operator.k8s.kinds import kind_of
from modeldeploy_operator.k8s.leader import LeaderElector

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

    lost = threading.Event()
    writes = len(leases.writes)
    thread = threading.Thread(target=a.keep_renewing, args=(lost,))
    a.renew = 0.01  # wake at once
    thread.start()
    assert lost.wait(5)
    thread.join(5)
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


@pytest.fixture
def fence() -> Any:
    holds = {"now": True}
    api_module.fence_writes(lambda: holds["now"])
    yield holds
    api_module.fence_writes(None)


def test_every_write_is_fenced_reads_and_the_leases_own_client_are_not(fence: dict[str, bool]) -> None:
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
    fence["now"] = False
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
