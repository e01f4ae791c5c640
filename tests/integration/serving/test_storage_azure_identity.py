"""Azure Blob bundles against Azurite (Microsoft's storage emulator) on 127.0.0.1, over HTTPS with
its OAuth check on (`--oauth basic`: it checks a bearer token's issuer, audience and lifetime, not its
signature), with each credential the model server knows: Shared Key, a SAS token, and an AKS
Workload Identity token exchanged at a local stand-in for Microsoft Entra's token endpoint.

The certificate of both servers comes from a throwaway CA made here; the fetching process trusts it
through SSL_CERT_FILE (httpx) and REQUESTS_CA_BUNDLE (azure-identity's requests transport)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, quote

import httpx
import jwt
import pytest

from modeldeploy_testcluster.pki import ClusterPKI

from cloud_stubs import Handler, Seen, assert_same_bundle, fetch, hermetic_env, json_answer, stub, tiny_bundle
from local_processes import free_port, running

REPO = Path(__file__).resolve().parents[3]
ACCOUNT = "devstoreaccount1"  # Azurite's built-in account and its published key
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
URI = f"https://{ACCOUNT}.blob.core.windows.net/models/churn/v1"
TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
CLIENT_ID = "0b9b4a5c-1111-2222-3333-444455556666"


def entra_token(lifetime: int = 3600) -> str:
    """An access token shaped like Entra's for Azure Storage (Azurite does not check signatures)."""
    now = int(time.time())
    claims = {
        "iss": f"https://sts.windows.net/{TENANT}/",
        "aud": "https://storage.azure.com",
        "tid": TENANT,
        "oid": "00000000-0000-0000-0000-000000000001",
        "sub": "model-reader",
        "iat": now - 60,
        "nbf": now - 60,
        "exp": now + lifetime,
    }
    return jwt.encode(claims, "not-checked-by-azurite-" * 2, algorithm="HS256")


@dataclass
class Azurite:
    url: str  # the account's endpoint (path style)
    ca: Path
    tls: tuple[Path, Path]


@pytest.fixture(scope="module")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    entry = subprocess.run(
        [str(REPO / "tests/azure/fetch-azurite.sh")], check=True, capture_output=True, text=True
    ).stdout.strip()
    root = tmp_path_factory.mktemp("azurite")
    pki = ClusterPKI(root / "pki")
    pki.create(serving_ips=["127.0.0.1"], serving_dns=["localhost"], clients={})
    tls = (pki.cert("apiserver"), pki.key("apiserver"))
    port = free_port()
    args = [
        "node",
        entry,
        "--blobHost",
        "127.0.0.1",
        "--blobPort",
        str(port),
        "--location",
        str(root / "data"),
        "--disableTelemetry",
        "--skipApiVersionCheck",
        "--oauth",
        "basic",
        "--cert",
        str(tls[0]),
        "--key",
        str(tls[1]),
    ]
    with running(args, root / "azurite.log") as proc:
        deadline = time.monotonic() + 120
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError((root / "azurite.log").read_text()[-2000:]) from None
                time.sleep(0.1)
        yield Azurite(f"https://127.0.0.1:{port}/{ACCOUNT}", pki.ca_cert, tls)


@pytest.fixture(scope="module")
def files(azurite: Azurite, tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """The bundle, uploaded with a bearer token into a private container."""
    bundle = tiny_bundle(tmp_path_factory.mktemp("azure-bundle"))
    headers = {"Authorization": f"Bearer {entra_token()}", "x-ms-version": "2021-08-06"}
    with httpx.Client(verify=ssl.create_default_context(cafile=azurite.ca), headers=headers) as client:
        created = client.put(f"{azurite.url}/models", params={"restype": "container"})
        assert created.status_code == 201, created.text
        for name, data in bundle.items():
            put = client.put(
                f"{azurite.url}/models/churn/v1/{name}", content=data, headers={"x-ms-blob-type": "BlockBlob"}
            )
            assert put.status_code == 201, put.text
    return bundle


def azure_env(tmp_path: Path, azurite: Azurite, **extra: str) -> dict[str, str]:
    return hermetic_env(
        tmp_path,
        MODELDEPLOY_SERVER_AZURE_BLOB_ENDPOINT_URL=azurite.url,
        SSL_CERT_FILE=str(azurite.ca),
        REQUESTS_CA_BUNDLE=str(azurite.ca),
        **extra,
    )


def test_shared_key(azurite: Azurite, files: dict[str, bytes], tmp_path: Path) -> None:
    env = azure_env(tmp_path, azurite, AZURE_STORAGE_ACCESS_KEY=ACCOUNT_KEY)
    assert_same_bundle(fetch(URI, env).folder, files)

    wrong = base64.b64encode(b"x" * 64).decode()
    error = fetch(URI, azure_env(tmp_path / "wrong", azurite, AZURE_STORAGE_ACCESS_KEY=wrong)).error
    # Azurite answers a signature made with another key 400 InvalidAuthenticationInfo (Azure: 403).
    assert re.search(f"{re.escape(URI)}/manifest.json answered HTTP 40[03] \\w+", error), error
    assert wrong not in error


def container_sas(permissions: str = "r", expiry: str = "2099-01-01T00:00:00Z") -> str:
    """A service SAS for the container, signed with the account key (REST version 2020-12-06 and later)."""
    version = "2021-08-06"
    fields = [permissions, "", expiry, f"/blob/{ACCOUNT}/models", "", "", "https", version, "c"]
    fields += ["", "", "", "", "", "", ""]  # snapshot time, encryption scope, rscc, rscd, rsce, rscl, rsct
    digest = hmac.new(base64.b64decode(ACCOUNT_KEY), "\n".join(fields).encode(), hashlib.sha256).digest()
    sig = quote(base64.b64encode(digest).decode(), safe="")
    return f"sv={version}&spr=https&sr=c&sp={permissions}&se={quote(expiry, safe='')}&sig={sig}"


def test_sas_token(azurite: Azurite, files: dict[str, bytes], tmp_path: Path) -> None:
    env = azure_env(tmp_path, azurite, AZURE_STORAGE_SAS_TOKEN="?" + container_sas())
    assert_same_bundle(fetch(URI, env).folder, files)

    expired = container_sas(expiry="2001-01-01T00:00:00Z")
    error = fetch(URI, azure_env(tmp_path / "expired", azurite, AZURE_STORAGE_SAS_TOKEN=expired)).error
    assert f"{URI}/manifest.json answered HTTP 403" in error
    assert "sig=" not in error


def entra(federated_token: str, refuse: bool = False) -> tuple[list[dict[str, str]], Handler]:
    """Microsoft Entra's token endpoint for a federated credential (the client assertion is the
    projected Kubernetes token, as AKS Workload Identity sends it)."""
    grants: list[dict[str, str]] = []

    def handler(seen: Seen) -> tuple[int, dict[str, str], bytes]:
        if seen.path != f"/{TENANT}/oauth2/v2.0/token":
            return json_answer({"error": "not_found"}, 404)
        form = {k: v[0] for k, v in parse_qs(seen.body.decode()).items()}
        grants.append(form)
        if refuse:
            return json_answer(
                {
                    "error": "invalid_client",
                    "error_description": "AADSTS70021: No matching federated identity record found.",
                },
                400,
            )
        ok = (
            form.get("grant_type") == "client_credentials"
            and form.get("client_id") == CLIENT_ID
            and form.get("client_assertion") == federated_token
            and form.get("client_assertion_type") == "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
            and form.get("scope") == "https://storage.azure.com/.default"
        )
        if not ok:
            return json_answer({"error": "invalid_request"}, 400)
        return json_answer({"access_token": entra_token(), "expires_in": 3600, "token_type": "Bearer"})

    return grants, handler


def workload_identity_env(tmp_path: Path, azurite: Azurite, authority: str) -> dict[str, str]:
    token = tmp_path / "azure-identity-token"
    token.write_text("projected-kubernetes-token")
    # What the AKS workload identity webhook injects for a pod labelled azure.workload.identity/use
    # whose ServiceAccount is annotated azure.workload.identity/client-id.
    return azure_env(
        tmp_path,
        azurite,
        AZURE_CLIENT_ID=CLIENT_ID,
        AZURE_TENANT_ID=TENANT,
        AZURE_FEDERATED_TOKEN_FILE=str(token),
        AZURE_AUTHORITY_HOST=authority + "/",
    )


def test_workload_identity(azurite: Azurite, files: dict[str, bytes], tmp_path: Path) -> None:
    grants, handler = entra("projected-kubernetes-token")
    with stub(handler, tls=azurite.tls) as token_endpoint:
        env = workload_identity_env(tmp_path, azurite, token_endpoint.url)
        assert_same_bundle(fetch(URI, env).folder, files)
    assert len(grants) == 1  # one token for the bundle's three files


def test_without_a_credential_a_private_container_refuses_and_says_why(
    azurite: Azurite, files: dict[str, bytes], tmp_path: Path
) -> None:
    error = fetch(URI, azure_env(tmp_path, azurite)).error
    assert f"{URI}/manifest.json answered HTTP" in error
    assert "read anonymously because no Azure token came" in error


def test_a_refused_federated_token_is_named(
    azurite: Azurite, files: dict[str, bytes], tmp_path: Path
) -> None:
    grants, handler = entra("projected-kubernetes-token", refuse=True)
    with stub(handler, tls=azurite.tls) as token_endpoint:
        error = fetch(URI, workload_identity_env(tmp_path, azurite, token_endpoint.url)).error
    assert grants
    assert "no Azure token came" in error
    assert "AADSTS70021" in error
    assert "projected-kubernetes-token" not in error


@pytest.mark.parametrize(
    "uri",
    [
        "http://devstoreaccount1.blob.core.windows.net/models/churn",  # not https
        "https://devstoreaccount1.blob.core.windows.net:8443/models/churn",  # a port
        "https://DevStoreAccount1.blob.core.windows.net/models/churn",  # upper case
        "https://devstoreaccount1.blob.core.windows.net/models/churn?sv=2021&sig=secret",  # SAS in the URI
        "https://devstoreaccount1.blob.core.windows.net/Models/churn",  # bad container
        "https://devstoreaccount1.blob.core.windows.net/",  # no container
    ],
)
def test_malformed_azure_uris_are_refused_before_any_request(tmp_path: Path, uri: str) -> None:
    error = fetch(uri, hermetic_env(tmp_path)).error
    assert "an Azure Blob model.uri must be https://<account>.blob.core.windows.net/<container>" in error
    assert "secret" not in error
