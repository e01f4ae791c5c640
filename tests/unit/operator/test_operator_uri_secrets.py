"""Model-URI credentials: shown redacted everywhere but in the serving pod's environment."""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

import pytest
import urllib3
from kubernetes import client

from modeldeploy_contract.redact import REDACTED, ScrubFilter, redact_uri, same_origin, scrub
from modeldeploy_operator.domain import labels as lbl
from modeldeploy_operator.domain.history import record_revision
from modeldeploy_operator.domain.manifests import build_serving_deployment
from modeldeploy_operator.domain.resource import ModelDeploymentRef
from modeldeploy_operator.domain.revision import resolve_variants
from modeldeploy_operator.k8s.api import KubeApi, RejectedError, TransientApiError

from modeldeploy_builders import BASE_MODEL, make_spec

SIGNED = (
    "https://alice:hunter2@store.example.com:8443/models/churn/v1?X-Amz-Algorithm=AWS4-HMAC-SHA256"
    "&X-Amz-Credential=AKIDSECRET%2F20260101&X-Amz-Signature=SIGSECRET&token=TOKSECRET#frag"
)
SECRETS = ("hunter2", "AKIDSECRET", "SIGSECRET", "TOKSECRET", "alice")


def _clean(text: str) -> bool:
    return not any(secret in text for secret in SECRETS)


@pytest.mark.parametrize(
    ("uri", "shown"),
    [
        (
            SIGNED,
            "https://store.example.com:8443/models/churn/v1?X-Amz-Algorithm=REDACTED"
            "&X-Amz-Credential=REDACTED&X-Amz-Signature=REDACTED&token=REDACTED",
        ),
        ("s3://models/churn/v1", "s3://models/churn/v1"),
        ("gs://bucket/churn", "gs://bucket/churn"),
        ("http://u@h/x", "http://h/x"),
        ("http://[::1]:9000/x?sig=abc", "http://[::1]:9000/x?sig=REDACTED"),
        ("http://h:99999999/x", "http://REDACTED"),  # unparsable port: nothing of it shown
        ("/models/churn", "/models/churn"),
    ],
)
def test_redact_uri(uri: str, shown: str) -> None:
    assert redact_uri(uri) == shown
    assert REDACTED not in uri or shown == uri


def test_scrub_hides_urls_pairs_and_bearer_tokens_in_free_text() -> None:
    text = (
        f"GET {SIGNED} failed; retry with Authorization: Bearer eyJhbGciOi.secret and "
        "password=pw123 api_key=KEY42"
    )
    cleaned = scrub(text)
    assert _clean(cleaned)
    for secret in ("eyJhbGciOi", "pw123", "KEY42"):
        assert secret not in cleaned
    assert "store.example.com:8443/models/churn/v1" in cleaned  # where, still said
    assert scrub("nothing secret here: 3 of 4 pods") == "nothing secret here: 3 of 4 pods"


def test_same_origin() -> None:
    assert same_origin("http://h/a", "http://H:80/b")
    assert same_origin("https://h:443/a", "https://h/b?x=1")
    assert not same_origin("https://h/a", "http://h/a")
    assert not same_origin("http://h/a", "http://h:8080/a")
    assert not same_origin("http://h/a", "http://169.254.169.254/")
    assert not same_origin("http://h/a", "http://h:notaport/")


def test_annotation_and_history_show_the_uri_without_credentials(owner: ModelDeploymentRef) -> None:
    variant = resolve_variants("churn", make_spec(model=dict(BASE_MODEL) | {"uri": SIGNED}))[0]
    deployment = build_serving_deployment(owner, variant, image="img", replicas=1)
    annotation = deployment["metadata"]["annotations"][lbl.MODEL_URI_ANNOTATION]
    assert annotation == redact_uri(SIGNED)
    assert _clean(annotation)
    (entry,) = record_revision((), variant, now=dt.datetime(2026, 1, 1, tzinfo=dt.UTC), limit=10)
    assert entry.model_uri == redact_uri(SIGNED)
    # The pod still gets the URI as written: it must download with it.
    env = {e["name"]: e["value"] for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["MODELDEPLOY_SERVER_MODEL_URI"] == SIGNED
    assert _clean(str(deployment["metadata"]) + str(deployment["spec"]["template"]["metadata"]))


class _Refusing:
    """An ApiClient whose call_api fails like the API server (or the network) would."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    def param_serialize(self, **kwargs: Any) -> tuple[str, str, dict[str, str], Any, list[Any]]:
        return kwargs["method"], kwargs["resource_path"], {}, kwargs.get("body"), []

    def call_api(self, *args: Any, **kwargs: Any) -> Any:
        raise self.error


def test_api_errors_that_quote_a_uri_are_scrubbed() -> None:
    quoted = client.ApiException(status=422, reason="Unprocessable")
    quoted.body = f'{{"message": "Deployment is invalid: env[0].value: {SIGNED}: too long"}}'
    with pytest.raises(RejectedError) as rejected:
        KubeApi(_Refusing(quoted), "fm").get("v1", "Pod", "ml", "x")
    assert _clean(str(rejected.value))
    assert "store.example.com" in str(rejected.value)
    network = urllib3.exceptions.MaxRetryError(None, SIGNED, "refused")  # type: ignore[arg-type]
    with pytest.raises(TransientApiError) as transient:
        KubeApi(_Refusing(network), "fm").get("v1", "Pod", "ml", "x")
    assert _clean(str(transient.value))


def test_log_lines_are_scrubbed_whoever_writes_them(caplog: pytest.LogCaptureFixture) -> None:
    caplog.handler.addFilter(ScrubFilter())
    logging.getLogger("httpx").warning("HTTP Request: GET %s %s", SIGNED, '"HTTP/1.1 403"')
    assert _clean(caplog.text)
    assert "store.example.com" in caplog.text
