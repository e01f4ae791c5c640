"""429 from the API server: Retry-After honoured by our client and by kopf; watch restarts back off."""

from __future__ import annotations

import datetime
import logging
from typing import Any

import kopf
import pytest
import urllib3
from kubernetes import client

from modeldeploy_operator import handlers
from modeldeploy_operator.k8s.api import (
    MAX_RETRY_AFTER_SECONDS,
    UNREACHABLE_RETRY_MAX_SECONDS,
    KubeApi,
    NamespaceTerminatingError,
    RejectedError,
    TransientApiError,
    backoff,
    namespace_terminating,
    retry_after_of,
    retry_cap,
)

BODY = {"metadata": {"uid": "u1", "name": "churn", "namespace": "ml"}}


class _Answering:
    """An ApiClient whose call_api fails with `error` or answers `response`."""

    def __init__(self, error: Exception | None = None, response: Any = None) -> None:
        self.error, self.response = error, response

    def param_serialize(self, **kwargs: Any) -> tuple[str, str, dict[str, str], Any, list[Any]]:
        return kwargs["method"], kwargs["resource_path"], {}, kwargs.get("body"), []

    def call_api(self, *args: Any, **kwargs: Any) -> Any:
        if self.error is not None:
            raise self.error
        return self.response


def _throttled(headers: dict[str, str] | None, body: str = '{"message": "too many requests"}') -> Exception:
    error = client.ApiException(status=429, reason="Too Many Requests")
    error.headers = urllib3.HTTPHeaderDict(headers or {})
    error.body = body
    assert isinstance(error, Exception)  # the client is untyped here (pyproject: follow_imports skip)
    return error


@pytest.mark.parametrize(
    ("headers", "body", "expected"),
    [
        ({"Retry-After": "7"}, "", 7.0),
        ({"Retry-After": "0.5"}, "", 0.5),
        ({}, '{"details": {"retryAfterSeconds": 3}}', 3.0),
        ({"Retry-After": "86400"}, "", MAX_RETRY_AFTER_SECONDS),
        ({"Retry-After": "-5"}, "", 0.0),
        ({"Retry-After": "Wed, 21 Oct 2026 07:28:00 GMT"}, "", None),
        ({"Retry-After": "nan"}, "", None),
        ({}, "not json", None),
    ],
)
def test_retry_after_of(headers: dict[str, str], body: str, expected: float | None) -> None:
    assert retry_after_of(urllib3.HTTPHeaderDict(headers), body) == expected


def test_our_client_carries_the_servers_retry_after() -> None:
    api = KubeApi(_Answering(_throttled({"Retry-After": "12"})), "fm")
    with pytest.raises(TransientApiError) as raised:
        api.list("v1", "Pod", "ml", "a=b")
    assert raised.value.retry_after == 12.0
    assert "429" in str(raised.value)


def test_a_non_exception_429_response_is_read_too() -> None:
    class Response:
        status, reason = 429, "Too Many Requests"
        headers = urllib3.HTTPHeaderDict({"Retry-After": "4"})

        def read(self) -> bytes:
            return b'{"message": "slow down"}'

    api = KubeApi(_Answering(response=Response()), "fm")
    with pytest.raises(TransientApiError) as raised:
        api.get("v1", "Pod", "ml", "x")
    assert raised.value.retry_after == 4.0


@pytest.mark.parametrize(
    "error",
    [
        urllib3.exceptions.MaxRetryError(None, "/", "Connection refused"),  # type: ignore[arg-type]
        urllib3.exceptions.ReadTimeoutError(None, "/", "read timed out"),  # type: ignore[arg-type]
        ConnectionResetError(104, "Connection reset by peer"),
    ],
)
def test_no_answer_at_all_is_unreachable_and_retried_within_seconds(error: Exception) -> None:
    with pytest.raises(TransientApiError) as raised:
        KubeApi(_Answering(error), "fm").get("v1", "Pod", "ml", "x")
    assert raised.value.unreachable
    assert retry_cap(raised.value, 60.0) == UNREACHABLE_RETRY_MAX_SECONDS


def test_an_answered_error_keeps_the_long_cap() -> None:
    unavailable = client.ApiException(status=503, reason="Service Unavailable")
    unavailable.body = '{"message": "starting"}'
    for answered in (unavailable, _throttled({"Retry-After": "1"})):
        with pytest.raises(TransientApiError) as raised:
            KubeApi(_Answering(answered), "fm").get("v1", "Pod", "ml", "x")
        assert not raised.value.unreachable
        assert retry_cap(raised.value, 60.0) == 60.0


@pytest.mark.parametrize("cap", [UNREACHABLE_RETRY_MAX_SECONDS, 60.0])
def test_one_backoff_doubles_from_its_first_pause_up_to_the_cap_it_is_given(cap: float) -> None:
    assert [backoff(n, cap) for n in range(1, 9)] == [min(cap, 2.0 ** (n - 1)) for n in range(1, 9)]
    assert [backoff(n, cap, first=2.0) for n in (1, 2, 3)] == [min(cap, 2.0), min(cap, 4.0), min(cap, 8.0)]
    assert backoff(0, cap) == 1.0  # (no failure yet counts as the first)
    for n in range(1, 12):
        assert 0.8 * min(cap, 2.0 ** (n - 1)) <= backoff(n, cap, jitter=0.2) <= 1.2 * min(cap, 2.0 ** (n - 1))


# The controller's retries (never sooner than Retry-After) are tested in test_operator_controller.py.


def test_kopf_honours_retry_after_and_backs_off_watch_restarts() -> None:
    settings = kopf.OperatorSettings()
    # called as kopf calls a startup handler (keywords only)
    handlers.configure(
        settings=settings,
        retry=0,
        started=datetime.datetime.now(datetime.UTC),
        runtime=datetime.timedelta(0),
        logger=logging.getLogger(__name__),
        memo=kopf.Memo(),
    )
    backoffs = list(settings.networking.error_backoffs)  # type: ignore[arg-type]
    assert backoffs[0] < backoffs[2]  # growing (jitter of +-20 % aside)...
    assert backoffs[0] <= 1.2
    # ...up to 4 s: kopf's one list serves a refused connection too, and its watch of ModelDeployments
    # must see an API server back within seconds (k8s/api.py UNREACHABLE_RETRY_MAX_SECONDS).
    assert max(backoffs) <= 1.2 * UNREACHABLE_RETRY_MAX_SECONDS
    assert 300 <= sum(backoffs) <= 310  # about five minutes before a request is given up
    # kopf waits max(Retry-After, backoff) (kopf/_cogs/clients/api.py): never sooner than asked.
    assert settings.networking.enforce_retry_after is False
    assert settings.watching.reconnect_backoff >= 1.0  # kopf's default 0.1 s would hammer a sick server
    assert settings.watching.server_timeout is not None
    assert settings.watching.client_timeout is not None
    assert settings.watching.client_timeout > settings.watching.server_timeout


# -- a namespace being deleted: its refusal told apart --------------------------------------------------

TERMINATING = (
    '{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"configmaps \\"c\\" is '
    'forbidden: unable to create new content in namespace x because it is being terminated","reason":'
    '"Forbidden","details":{"name":"c","kind":"configmaps","causes":[{"reason":"NamespaceTerminating",'
    '"message":"namespace x is being terminated","field":"metadata.namespace"}]},"code":403}'
)
"""kube-apiserver v1.34.4's answer to an apply in a namespace being deleted (private control plane)."""


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (403, TERMINATING, True),
        (403, TERMINATING.encode(), True),
        (422, TERMINATING, False),  # only the 403 of the admission
        (403, '{"message": "forbidden", "details": {"causes": []}}', False),  # RBAC's 403
        (403, '{"message": "... because it is being terminated"}', False),  # the message alone: no
        (403, '{"details": {"causes": [{"type": "NamespaceTerminating"}]}}', False),  # not the wire name
        (403, '{"details": {"causes": "NamespaceTerminating"}}', False),
        (403, '{"details": {"causes": [null, 3, "x", {"reason": 7}]}}', False),
        (403, '{"details": null}', False),
        (403, '["a list"]', False),
        (403, "not json", False),
        (403, "", False),
        (403, None, False),
    ],
)
def test_namespace_terminating(status: int, body: Any, expected: bool) -> None:
    assert namespace_terminating(status, body) is expected


def test_the_refusal_of_a_namespace_being_deleted_is_its_own_error() -> None:
    error = client.ApiException(status=403, reason="Forbidden")
    error.body = TERMINATING
    api = KubeApi(_Answering(error), "fm")
    with pytest.raises(NamespaceTerminatingError) as raised:
        api.apply({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "x"}})
    assert raised.value.status == 403
    assert isinstance(raised.value, RejectedError)  # handled as a refusal wherever it is not told apart
    rbac = client.ApiException(status=403, reason="Forbidden")
    rbac.body = '{"message": "configmaps is forbidden: User cannot patch"}'
    with pytest.raises(RejectedError) as refused:
        KubeApi(_Answering(rbac), "fm").apply(
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "x"}}
        )
    assert not isinstance(refused.value, NamespaceTerminatingError)
