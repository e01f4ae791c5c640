"""gs:// bundles with Application Default Credentials: a service-account key, a workload identity
federation (external_account) file, the metadata server of GKE Workload Identity, and the static
GOOGLE_OAUTH_ACCESS_TOKEN, each against stubs on 127.0.0.1 (token endpoints, STS, the metadata
server, and a GCS JSON API that serves only to the token it expects).

fake-gcs-server (the Go emulator) was not used: it accepts any token or none, so it could not tell
which credential a request carried, which is what these tests are about; the JSON API subset the
server uses (one GET with alt=media) is a few lines here."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from cloud_stubs import Seen, Stub, assert_same_bundle, fetch, hermetic_env, json_answer, stub, tiny_bundle

SCOPE = "https://www.googleapis.com/auth/devstorage.read_only"
SA_EMAIL = "model-reader@proj.iam.gserviceaccount.com"
AUDIENCE = "//iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/k8s/providers/p"


class Gcs:
    """The GCS JSON API's media download, for one bucket, to requests bearing `token` (None: anyone)."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.objects = {f"churn/v1/{name}": data for name, data in files.items()}
        self.token: str | None = None

    def __call__(self, seen: Seen) -> tuple[int, dict[str, str], bytes]:
        parts = urlsplit(seen.path)
        prefix = "/storage/v1/b/models/o/"
        if not parts.path.startswith(prefix) or parse_qs(parts.query).get("alt") != ["media"]:
            return json_answer({"error": "not found"}, 404)
        if self.token is not None and seen.headers.get("authorization") != f"Bearer {self.token}":
            return json_answer({"error": {"code": 401, "message": "Invalid Credentials"}}, 401)
        data = self.objects.get(unquote(parts.path[len(prefix) :]))
        if data is None:
            return json_answer({"error": "not found"}, 404)
        return 200, {"Content-Type": "application/octet-stream"}, data


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    return tiny_bundle(tmp_path_factory.mktemp("gcs-bundle"))


@pytest.fixture
def gcs(files: dict[str, bytes]) -> Iterator[tuple[Gcs, Stub]]:
    api = Gcs(files)
    with stub(api) as server:
        yield api, server


def gs_env(tmp_path: Path, gcs_server: Stub, **extra: str) -> dict[str, str]:
    return hermetic_env(tmp_path, MODELDEPLOY_SERVER_GCS_ENDPOINT_URL=gcs_server.url, **extra)


def gcs_auth(gcs_server: Stub) -> set[str | None]:
    return {s.headers.get("authorization") for s in gcs_server.seen}


def test_service_account_key_file(gcs: tuple[Gcs, Stub], files: dict[str, bytes], tmp_path: Path) -> None:
    api, gcs_server = gcs
    api.token = "sa-token"
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    assertions: list[dict[str, object]] = []

    def oauth(seen: Seen) -> tuple[int, dict[str, str], bytes]:
        form = {k: v[0] for k, v in parse_qs(seen.body.decode()).items()}
        if seen.path != "/token" or form.get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer":
            return json_answer({"error": "unsupported_grant_type"}, 400)
        # The assertion must be signed with the key's private half (checked with its public half);
        # google-auth names Google's token endpoint as its audience whatever token_uri says.
        claims = jwt.decode(
            form["assertion"],
            key.public_key(),
            algorithms=["RS256"],
            audience="https://oauth2.googleapis.com/token",
        )
        assertions.append(claims)
        return json_answer({"access_token": "sa-token", "expires_in": 3600, "token_type": "Bearer"})

    with stub(oauth) as token_endpoint:
        token_uri = f"{token_endpoint.url}/token"
        key_file = tmp_path / "key.json"
        key_file.write_text(
            json.dumps(
                {
                    "type": "service_account",
                    "project_id": "proj",
                    "private_key_id": "k1",
                    "private_key": pem,
                    "client_email": SA_EMAIL,
                    "client_id": "1",
                    "token_uri": token_uri,
                }
            )
        )
        env = gs_env(tmp_path, gcs_server, GOOGLE_APPLICATION_CREDENTIALS=str(key_file))
        assert_same_bundle(fetch("gs://models/churn/v1", env).folder, files)
    assert len(assertions) == 1  # one token for the whole bundle
    assert assertions[0]["iss"] == SA_EMAIL
    assert assertions[0]["scope"] == SCOPE
    assert gcs_auth(gcs_server) == {"Bearer sa-token"}


def federation(
    subject: str, *, impersonate: bool
) -> tuple[Callable[[Seen], tuple[int, dict[str, str], bytes]], list[str]]:
    """STS (token exchange) and IAM Credentials (impersonation) of workload identity federation."""
    calls: list[str] = []

    def handler(seen: Seen) -> tuple[int, dict[str, str], bytes]:
        if seen.path == "/v1/token":
            form = {k: v[0] for k, v in parse_qs(seen.body.decode()).items()}
            ok = (
                form.get("grant_type") == "urn:ietf:params:oauth:grant-type:token-exchange"
                and form.get("subject_token") == subject
                and form.get("subject_token_type") == "urn:ietf:params:oauth:token-type:jwt"
            )
            if not ok:
                return json_answer({"error": "invalid_grant"}, 400)
            calls.append("sts")
            return json_answer(
                {
                    "access_token": "federated-token",
                    "issued_token_type": "urn:ietf:params:oauth:token-type:access_token",
                    "token_type": "Bearer",
                    "expires_in": 3600,
                }
            )
        if impersonate and seen.path == f"/v1/projects/-/serviceAccounts/{SA_EMAIL}:generateAccessToken":
            if seen.headers.get("authorization") != "Bearer federated-token":
                return json_answer({"error": "unauthenticated"}, 401)
            assert SCOPE in json.loads(seen.body)["scope"]
            calls.append("impersonate")
            expiry = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3600))
            return json_answer({"accessToken": "impersonated-token", "expireTime": expiry})
        return json_answer({"error": "not found"}, 404)

    return handler, calls


@pytest.mark.parametrize("impersonate", [True, False], ids=["impersonating", "direct"])
def test_workload_identity_federation_file(
    gcs: tuple[Gcs, Stub], files: dict[str, bytes], tmp_path: Path, impersonate: bool
) -> None:
    """An external_account file (workload identity federation, e.g. from a cluster outside Google
    Cloud): the projected Kubernetes token is exchanged at STS, then optionally for a service
    account's token."""
    api, gcs_server = gcs
    api.token = "impersonated-token" if impersonate else "federated-token"
    subject = tmp_path / "k8s-token"
    subject.write_text("kubernetes-projected-token")
    handler, calls = federation("kubernetes-projected-token", impersonate=impersonate)
    with stub(handler) as google:
        config = {
            "type": "external_account",
            "audience": AUDIENCE,
            "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
            "token_url": f"{google.url}/v1/token",
            "credential_source": {"file": str(subject)},
        }
        if impersonate:
            config["service_account_impersonation_url"] = (
                f"{google.url}/v1/projects/-/serviceAccounts/{SA_EMAIL}:generateAccessToken"
            )
        config_file = tmp_path / "federation.json"
        config_file.write_text(json.dumps(config))
        env = gs_env(tmp_path, gcs_server, GOOGLE_APPLICATION_CREDENTIALS=str(config_file))
        assert_same_bundle(fetch("gs://models/churn/v1", env).folder, files)
    assert calls == (["sts", "impersonate"] if impersonate else ["sts"])
    assert gcs_auth(gcs_server) == {f"Bearer {api.token}"}


def test_gke_workload_identity_metadata_server(
    gcs: tuple[Gcs, Stub], files: dict[str, bytes], tmp_path: Path
) -> None:
    """No file at all: the token comes from the metadata server (on GKE, the Workload Identity
    metadata server answers as the Google service account the Kubernetes one is bound to)."""
    api, gcs_server = gcs
    api.token = "mds-token"
    base = "/computeMetadata/v1/instance/service-accounts/default/"

    def metadata(seen: Seen) -> tuple[int, dict[str, str], bytes]:
        flavor: dict[str, str] = {"Metadata-Flavor": "Google"}
        if seen.headers.get("metadata-flavor") != "Google":
            return 403, flavor, b"missing Metadata-Flavor"
        path = urlsplit(seen.path).path
        if path == "/":
            return 200, flavor, b"ok"
        if path == base:
            return json_answer({"email": SA_EMAIL, "scopes": [SCOPE], "aliases": ["default"]}, headers=flavor)
        if path == base + "token":
            return json_answer(
                {"access_token": "mds-token", "expires_in": 3600, "token_type": "Bearer"}, headers=flavor
            )
        if path == "/computeMetadata/v1/universe/universe-domain":
            return 200, flavor, b"googleapis.com"
        return 404, flavor, b"not found"

    with stub(metadata) as mds:
        host = mds.url.removeprefix("http://")
        env = gs_env(tmp_path, gcs_server, GCE_METADATA_HOST=host, GCE_METADATA_IP=host)
        del env["NO_GCE_CHECK"]
        assert_same_bundle(fetch("gs://models/churn/v1", env).folder, files)
        token_requests = [s for s in mds.seen if urlsplit(s.path).path == base + "token"]
    assert len(token_requests) == 1
    assert gcs_auth(gcs_server) == {"Bearer mds-token"}


def test_static_access_token_still_wins(
    gcs: tuple[Gcs, Stub], files: dict[str, bytes], tmp_path: Path
) -> None:
    api, gcs_server = gcs
    api.token = "static-token"
    # A key file that would fail (its token endpoint is a closed port): the static token is used first.
    key_file = tmp_path / "key.json"
    key_file.write_text(json.dumps({"type": "service_account", "token_uri": "http://127.0.0.1:9/token"}))
    env = gs_env(
        tmp_path,
        gcs_server,
        GOOGLE_OAUTH_ACCESS_TOKEN="static-token",
        GOOGLE_APPLICATION_CREDENTIALS=str(key_file),
    )
    assert_same_bundle(fetch("gs://models/churn/v1", env).folder, files)
    assert gcs_auth(gcs_server) == {"Bearer static-token"}


def test_no_credentials_reads_anonymously(
    gcs: tuple[Gcs, Stub], files: dict[str, bytes], tmp_path: Path
) -> None:
    api, gcs_server = gcs
    api.token = None  # a public bucket
    assert_same_bundle(fetch("gs://models/churn/v1", gs_env(tmp_path, gcs_server)).folder, files)
    assert gcs_auth(gcs_server) == {None}

    api.token = "needed"  # a private one: the refusal says so
    error = fetch("gs://models/churn/v1", gs_env(tmp_path / "again", gcs_server)).error
    assert "gs://models/churn/v1/manifest.json answered HTTP 401" in error


def test_a_refused_key_is_a_clear_error_without_the_key(gcs: tuple[Gcs, Stub], tmp_path: Path) -> None:
    _, gcs_server = gcs
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()

    def refuse(seen: Seen) -> tuple[int, dict[str, str], bytes]:
        return json_answer({"error": "invalid_grant", "error_description": "Invalid JWT Signature."}, 400)

    with stub(refuse) as token_endpoint:
        key_file = tmp_path / "key.json"
        key_file.write_text(
            json.dumps(
                {
                    "type": "service_account",
                    "private_key": pem,
                    "private_key_id": "k1",
                    "client_email": SA_EMAIL,
                    "token_uri": f"{token_endpoint.url}/token",
                }
            )
        )
        error = fetch(
            "gs://models/churn/v1", gs_env(tmp_path, gcs_server, GOOGLE_APPLICATION_CREDENTIALS=str(key_file))
        ).error
    assert "getting a Google access token failed (RefreshError)" in error
    assert "invalid_grant" in error
    assert "PRIVATE KEY" not in error
    assert not gcs_server.seen


def test_a_named_credentials_file_that_is_missing_is_an_error_not_anonymity(
    gcs: tuple[Gcs, Stub], tmp_path: Path
) -> None:
    api, gcs_server = gcs
    api.token = None  # even a public bucket: the pod was meant to have an identity
    env = gs_env(tmp_path, gcs_server, GOOGLE_APPLICATION_CREDENTIALS=str(tmp_path / "missing.json"))
    error = fetch("gs://models/churn/v1", env).error
    assert "getting a Google access token failed (DefaultCredentialsError)" in error
    assert "missing.json" in error
    assert not gcs_server.seen
