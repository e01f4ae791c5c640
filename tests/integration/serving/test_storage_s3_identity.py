"""s3:// bundles with the pod's AWS identity and no static key: IRSA (a web identity token exchanged
at STS) and EKS Pod Identity (the pod's credentials endpoint), against moto's server on 127.0.0.1.

Every S3 request passes through a recording proxy, so the tests see which access key signed it: the
one STS or the credentials endpoint handed out, in an environment that holds no other credential
(the control test: without the token, boto3 finds none)."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from pathlib import Path

import boto3
import httpx
import pytest

from cloud_stubs import (
    Seen,
    Stub,
    assert_same_bundle,
    fetch,
    hermetic_env,
    json_answer,
    stub,
    tiny_bundle,
)
from local_processes import free_port

ACCOUNT = "123456789012"
ROLE_ARN = f"arn:aws:iam::{ACCOUNT}:role/model-reader"


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture(scope="module")
def bundle(moto_url: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    files = tiny_bundle(tmp_path_factory.mktemp("s3-bundle"))
    s3 = boto3.client(
        "s3",
        endpoint_url=moto_url,
        aws_access_key_id="setup",
        aws_secret_access_key="setup",
        region_name="us-east-1",
    )
    s3.create_bucket(Bucket="models")
    for name, data in files.items():
        s3.put_object(Bucket="models", Key=f"churn/v1/{name}", Body=data)
    return files


@pytest.fixture
def s3_proxy(moto_url: str) -> Iterator[Stub]:
    """Forwards to moto and records each request's Authorization header."""

    def forward(seen: Seen) -> tuple[int, dict[str, str], bytes]:
        headers = {k: v for k, v in seen.headers.items() if k not in ("host", "content-length")}
        upstream = httpx.request(seen.method, moto_url + seen.path, headers=headers, content=seen.body)
        keep = {
            k: v
            for k, v in upstream.headers.items()
            if k.lower() not in ("content-length", "transfer-encoding", "content-encoding", "connection")
        }
        return upstream.status_code, keep, upstream.content

    with stub(forward) as proxy:
        yield proxy


def signing_keys(proxy: Stub) -> set[str]:
    return {
        m.group(1)
        for s in proxy.seen
        if (m := re.search(r"Credential=([A-Z0-9]+)/", s.headers.get("authorization", "")))
    }


def test_irsa_web_identity_token_is_exchanged_at_sts(
    moto_url: str, s3_proxy: Stub, bundle: dict[str, bytes], tmp_path: Path
) -> None:
    from moto.sts.models import sts_backends

    token = tmp_path / "eks.amazonaws.com" / "token"
    token.parent.mkdir()
    token.write_text("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6bWw6cmVhZGVyIn0.c2ln")
    env = hermetic_env(
        tmp_path,
        # What the EKS pod identity webhook injects for a ServiceAccount annotated
        # eks.amazonaws.com/role-arn (and nothing else: no AWS_ACCESS_KEY_ID anywhere).
        AWS_ROLE_ARN=ROLE_ARN,
        AWS_WEB_IDENTITY_TOKEN_FILE=str(token),
        AWS_STS_REGIONAL_ENDPOINTS="regional",
        AWS_ENDPOINT_URL_STS=moto_url,
        MODELDEPLOY_SERVER_S3_ENDPOINT_URL=s3_proxy.url,
    )
    before = len(sts_backends[ACCOUNT]["aws"].assumed_roles)
    assert_same_bundle(fetch("s3://models/churn/v1", env).folder, bundle)

    assumed = sts_backends[ACCOUNT]["aws"].assumed_roles[before:]
    assert [r.role_arn for r in assumed] == [ROLE_ARN]
    assert signing_keys(s3_proxy) == {assumed[0].access_key_id}
    assert len(s3_proxy.seen) == 3  # manifest, model, profile


def test_without_the_token_there_is_no_credential_at_all(
    moto_url: str, s3_proxy: Stub, bundle: dict[str, bytes], tmp_path: Path
) -> None:
    """The control of the tests here: the hermetic environment holds no credential of its own."""
    env = hermetic_env(
        tmp_path, AWS_ENDPOINT_URL_STS=moto_url, MODELDEPLOY_SERVER_S3_ENDPOINT_URL=s3_proxy.url
    )
    error = fetch("s3://models/churn/v1", env).error
    assert "Unable to locate credentials" in error
    assert not s3_proxy.seen


def test_a_refused_web_identity_token_is_a_clear_error(
    s3_proxy: Stub, bundle: dict[str, bytes], tmp_path: Path
) -> None:
    def sts(seen: Seen) -> tuple[int, dict[str, str], bytes]:
        body = (
            b"<ErrorResponse><Error><Type>Sender</Type><Code>InvalidIdentityToken</Code>"
            b"<Message>No OpenIDConnect provider found in your account</Message></Error></ErrorResponse>"
        )
        return 400, {"Content-Type": "text/xml"}, body

    token = tmp_path / "token"
    token.write_text("not-a-jwt")
    with stub(sts) as fake_sts:
        env = hermetic_env(
            tmp_path,
            AWS_ROLE_ARN=ROLE_ARN,
            AWS_WEB_IDENTITY_TOKEN_FILE=str(token),
            AWS_ENDPOINT_URL_STS=fake_sts.url,
            MODELDEPLOY_SERVER_S3_ENDPOINT_URL=s3_proxy.url,
        )
        error = fetch("s3://models/churn/v1", env).error
    assert "InvalidIdentityToken" in error
    assert "s3://models/churn/v1/manifest.json" in error
    assert "not-a-jwt" not in error
    assert not s3_proxy.seen


def test_eks_pod_identity_credentials_endpoint(
    s3_proxy: Stub, bundle: dict[str, bytes], tmp_path: Path
) -> None:
    """EKS Pod Identity: the webhook sets AWS_CONTAINER_CREDENTIALS_FULL_URI (the node agent) and a
    projected token file whose content goes in the Authorization header of the credentials request."""
    token = tmp_path / "eks-pod-identity-token"
    token.write_text("pod-identity-token-0001")
    expiration = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")

    def agent(seen: Seen) -> tuple[int, dict[str, str], bytes]:
        if seen.path != "/v1/credentials" or seen.headers.get("authorization") != "pod-identity-token-0001":
            return json_answer({"Message": "bad token"}, 403)
        return json_answer(
            {
                "AccessKeyId": "ASIAPODIDENTITY00001",
                "SecretAccessKey": "pod-identity-secret",
                "Token": "pod-identity-session",
                "AccountId": ACCOUNT,
                "Expiration": expiration,
            }
        )

    with stub(agent) as credentials_endpoint:
        env = hermetic_env(
            tmp_path,
            AWS_CONTAINER_CREDENTIALS_FULL_URI=f"{credentials_endpoint.url}/v1/credentials",
            AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE=str(token),
            MODELDEPLOY_SERVER_S3_ENDPOINT_URL=s3_proxy.url,
        )
        assert_same_bundle(fetch("s3://models/churn/v1", env).folder, bundle)
        assert [s.headers.get("authorization") for s in credentials_endpoint.seen] == [
            "pod-identity-token-0001"
        ]
    assert signing_keys(s3_proxy) == {"ASIAPODIDENTITY00001"}
    assert all(s.headers.get("x-amz-security-token") == "pod-identity-session" for s in s3_proxy.seen)
