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
