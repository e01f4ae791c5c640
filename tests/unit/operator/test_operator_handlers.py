"""The kopf wiring's error policy: transient API errors retried with growing, bounded delays; refusals
and invalid specs not retried into a storm."""

from __future__ import annotations

from typing import Any

import kopf
import pytest

from modeldeploy_operator import handlers
from modeldeploy_operator.k8s.api import RejectedError, TransientApiError


class FreshReads:
    """The API as the handler sees it: the object is re-read before each reconcile."""

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any]:
        return BODY


class FailingReconciler:
    def __init__(self, error: Exception) -> None:
        self.error = error
        self.api = FreshReads()

    def reconcile(self, body: dict[str, Any]) -> Any:
        raise self.error


BODY = {"metadata": {"uid": "u1", "name": "churn", "namespace": "ml"}}


@pytest.fixture
def failing(monkeypatch: pytest.MonkeyPatch) -> Any:
    def install(error: Exception) -> None:
        monkeypatch.setattr(handlers, "_reconciler", FailingReconciler(error))

    return install


def test_transient_errors_become_temporary_errors_with_growing_bounded_delays(failing: Any) -> None:
    failing(TransientApiError("409 conflict"))
    delays = []
    for retry in range(12):
        with pytest.raises(kopf.TemporaryError) as raised:
            handlers._run(BODY, retry)
        delays.append(raised.value.delay)
    assert delays == sorted(delays)
    assert delays[0] == handlers.SETTINGS.retry_backoff_seconds
    assert delays[-1] == handlers.SETTINGS.retry_backoff_max_seconds


def test_refusals_are_permanent_for_the_handler(failing: Any) -> None:
    failing(RejectedError(403, "forbidden"))
    with pytest.raises(kopf.PermanentError):
        handlers._run(BODY)


def test_periodic_and_event_triggered_runs_do_not_raise_on_transient_errors(failing: Any) -> None:
    failing(TransientApiError("503"))
    assert handlers._run(BODY, raise_temporary=False) is None


def test_handlers_have_a_retry_limit_and_a_timeout() -> None:
    # kopf retries forever unless told otherwise.
    assert handlers._HANDLER_OPTIONS["retries"] == handlers.SETTINGS.retry_limit > 0
    assert handlers._HANDLER_OPTIONS["timeout"] == handlers.SETTINGS.handler_timeout_seconds


# -- manual commands are acted on at once ----------------------------------------------------------

COMMAND = '{"id": "c1", "action": "pause"}'


def _with(annotation: str | None = None, last_id: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"metadata": {"uid": "u1", "name": "churn", "namespace": "ml", "annotations": {}}}
    if annotation is not None:
        body["metadata"]["annotations"]["modeldeploy.io/command"] = annotation
    if last_id is not None:
        body["status"] = {
            "lastCommand": {
                "id": last_id,
                "action": "pause",
                "result": "Applied",
                "message": "",
                "time": "2026-01-02T03:04:05Z",
            }
        }
    return body


@pytest.mark.parametrize(
    ("body", "waiting"),
    [
        (_with(), False),
        (_with(COMMAND), True),
        (_with(COMMAND, last_id="c0"), True),
        (_with(COMMAND, last_id="c1"), False),  # handled: the planner's own test says so
        (_with("not json"), True),  # an invalid command is answered (Rejected) at once too
        (_with("   "), False),
    ],
)
def test_command_waiting(body: dict[str, Any], waiting: bool) -> None:
    assert handlers.command_waiting(body) is waiting
    assert handlers._command_event_filter(body, type="MODIFIED") is waiting
    assert handlers._command_event_filter(body, type="DELETED") is False


def test_a_status_from_an_older_operator_does_not_break_the_filter() -> None:
    body = _with(COMMAND)
    body["status"] = {"lastCommand": {"id": ""}}
    assert handlers.command_waiting(body) is True


def test_the_command_trigger_is_registered_as_a_filtered_watch_event_handler() -> None:
    registry = kopf.get_default_registry()
    found = [
        h for h in registry._watching.get_all_handlers() if getattr(h.fn, "__name__", "") == "on_command"
    ]
    assert len(found) == 1
    (handler,) = found
    assert handler.when is handlers._command_event_filter
    # Every watch event reaches the filter: not only spec changes (an annotation-only patch is what
    # the plugin sends), and no label/annotation selector that an older object might not match.
    assert (handler.field, handler.value, handler.labels, handler.annotations) == (None, None, None, None)


class CountingReconciler:
    def __init__(self, fresh: dict[str, Any]) -> None:
        self.fresh = fresh
        self.reconciled = 0
        outer = self

        class Api:
            def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any]:
                return outer.fresh

        self.api = Api()

    def reconcile(self, body: dict[str, Any]) -> Any:
        self.reconciled += 1
        return None


def test_on_command_reconciles_only_while_the_fresh_object_still_waits(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    waiting = CountingReconciler(_with(COMMAND))
    monkeypatch.setattr(handlers, "_reconciler", waiting)
    handlers.on_command(body=_with(COMMAND))
    assert waiting.reconciled == 1
    # The event carried a waiting command, but another trigger handled it meanwhile: nothing to do.
    handled = CountingReconciler(_with(COMMAND, last_id="c1"))
    monkeypatch.setattr(handlers, "_reconciler", handled)
    handlers.on_command(body=_with(COMMAND))
    assert handled.reconciled == 0


# -- every pass re-arms the daemon's one wake-up -------------------------------------------------


class PlannedReconciler(CountingReconciler):
    def __init__(self, fresh: dict[str, Any], next_due: Any) -> None:
        super().__init__(fresh)
        self.next_due = next_due

    def reconcile(self, body: dict[str, Any]) -> Any:
        self.reconciled += 1
        from modeldeploy_operator.reconciler import Outcome

        return Outcome("Progressing", True, 0, 0, next_due=self.next_due)


def test_every_pass_re_arms_the_daemon_with_its_plans_next_timer(monkeypatch: pytest.MonkeyPatch) -> None:
    import datetime as dt

    from modeldeploy_operator.wakeup import WakeUps

    monkeypatch.setattr(handlers, "_wakeups", WakeUps())
    due = dt.datetime(2026, 1, 2, 3, 4, 11, tzinfo=dt.UTC)
    monkeypatch.setattr(handlers, "_reconciler", PlannedReconciler(_with(COMMAND), due))
    handlers.on_command(body=_with(COMMAND))  # a manual command: the daemon is re-armed
    wakeup = handlers._wakeups.of("u1")
    assert (wakeup.armed, wakeup.due) == (1, due.timestamp())
    monkeypatch.setattr(handlers, "_reconciler", PlannedReconciler(_with(), None))
    handlers.on_modeldeployment(body=_with(), retry=0)  # nothing timed any more: the resync
    assert (wakeup.armed, wakeup.due) == (2, None)


def test_a_transient_error_re_arms_after_a_backoff_not_at_once(
    failing: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import time

    from modeldeploy_operator.wakeup import WakeUps

    monkeypatch.setattr(handlers, "_wakeups", WakeUps())
    failing(TransientApiError("503"))
    before = time.time()
    handlers._run(BODY, raise_temporary=False)
    due = handlers._wakeups.of("u1").due
    assert due is not None
    assert due >= before + handlers.SETTINGS.retry_backoff_seconds


# -- the daemon sleeps on the latest pass's timer ----------------------------------------------------


class TimedReconciler(CountingReconciler):
    """Each reconcile plans the next timer `gap` seconds ahead; counts its passes (any thread)."""

    def __init__(self, fresh: dict[str, Any], gap: float) -> None:
        super().__init__(fresh)
        self.gap = gap
        self.passes = __import__("threading").Condition()

    def reconcile(self, body: dict[str, Any]) -> Any:
        import datetime as dt

        from modeldeploy_operator.reconciler import Outcome

        with self.passes:
            self.reconciled += 1
            self.passes.notify_all()
        due = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=self.gap)
        return Outcome("Progressing", True, 0, 0, next_due=due)


async def _run_daemon_until(reconciler: TimedReconciler, done: Any, action: Any = None) -> None:
    import asyncio

    from kopf._cogs.aiokits import aioenums

    setter: Any = aioenums.FlagSetter()
    stopped: Any = aioenums.AsyncFlagWaiter(setter)
    daemon = asyncio.ensure_future(handlers.drive(body=_with(), stopped=stopped))
    try:
        await asyncio.wait_for(_until(lambda: reconciler.reconciled >= 1), timeout=60)
        if action is not None:
            await asyncio.to_thread(action)
        await asyncio.wait_for(_until(done), timeout=60)
    finally:
        setter.set()
        await asyncio.wait_for(daemon, timeout=60)


async def _until(condition: Any) -> None:
    import asyncio

    while not condition():
        await asyncio.sleep(0.05)


async def test_the_daemon_reconciles_again_as_soon_as_its_timer_is_due(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from modeldeploy_operator.wakeup import WakeUps

    monkeypatch.setattr(handlers, "_wakeups", WakeUps())
    monkeypatch.setattr(handlers, "SETTINGS", handlers.SETTINGS.model_copy(update={"resync_seconds": 3600}))
    reconciler = TimedReconciler(_with(), gap=0)  # every plan: "due now"
    monkeypatch.setattr(handlers, "_reconciler", reconciler)
    await _run_daemon_until(reconciler, lambda: reconciler.reconciled >= 3)  # not the hour's resync
    assert handlers._wakeups._by_uid == {}  # the ended daemon's wake-up is dropped


async def test_a_command_re_arms_the_sleeping_daemon(monkeypatch: pytest.MonkeyPatch) -> None:
    """The daemon's own pass planned an hour ahead; a command's pass plans "due now": the daemon wakes
    and reconciles again (it does not sleep on its own, older timer)."""
    from modeldeploy_operator.wakeup import WakeUps

    monkeypatch.setattr(handlers, "_wakeups", WakeUps())
    monkeypatch.setattr(handlers, "SETTINGS", handlers.SETTINGS.model_copy(update={"resync_seconds": 3600}))
    reconciler = TimedReconciler(_with(COMMAND), gap=3600)
    monkeypatch.setattr(handlers, "_reconciler", reconciler)

    def command() -> None:
        reconciler.gap = 0  # the command's plan: a timer due at once (e.g. a freed rollout slot)
        handlers.on_command(body=_with(COMMAND))

    await _run_daemon_until(reconciler, lambda: reconciler.reconciled >= 3, action=command)
