"""Azure Blob bundles (https://<account>.blob.core.windows.net/<container>/<path>, see
modeldeploy_contract.model_store) through the Blob REST API over plain httpx.

Credentials, in this order (the first that is set wins):
1. AZURE_STORAGE_SAS_TOKEN: a SAS token (from the storage Secret), added to each request's query;
2. AZURE_STORAGE_ACCESS_KEY: the account key (from the storage Secret), each GET signed with Shared Key;
3. a Microsoft Entra token for https://storage.azure.com from azure-identity's DefaultAzureCredential,
   limited to what a pod can use: a service principal in the environment (AZURE_CLIENT_SECRET, ...),
   AKS Workload Identity (AZURE_FEDERATED_TOKEN_FILE, AZURE_CLIENT_ID, AZURE_TENANT_ID,
   AZURE_AUTHORITY_HOST, injected by the webhook), then managed identity (IMDS);
4. none: the container must then allow anonymous reads. When no token could be had the read is tried
   anonymously, and a refusal names why no token came.

azure-identity for the token, not the azure-storage-blob SDK: the download stays the same capped,
streamed httpx GET as the other stores (size checks, error text without credentials), and the SDK
adds 3.3 MiB installed and about 0.07 s of CPU to the first import for what is here one signed GET
(docs/benchmarks.md, "Cloud storage clients").
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import threading
import time
from email.utils import formatdate
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

from modeldeploy_contract.model_store import parse_azure_blob
from modeldeploy_contract.redact import redact_uri, scrub
from modeldeploy_serving.errors import BundleError
from modeldeploy_serving.storage.base import write_capped

API_VERSION = (
    "2021-08-06"  # the first REST version with every header used here; bearer tokens need >= 2017-11-09
)
STORAGE_SCOPE = "https://storage.azure.com/.default"
SAS_ENV = "AZURE_STORAGE_SAS_TOKEN"
KEY_ENV = "AZURE_STORAGE_ACCESS_KEY"


def shared_key_signature(key: str, method: str, headers: dict[str, str], account: str, url: str) -> str:
    """The Shared Key Authorization value of a request without a body (GET), as the Blob service
    computes it: the standard headers (all empty here but x-ms-*), the x-ms-* headers sorted, then
    /<account><encoded path> and the query parameters, sorted, one per line."""
    parts = urlsplit(url)
    ms = sorted((k.lower().strip(), v.strip()) for k, v in headers.items() if k.lower().startswith("x-ms-"))
    canonical_headers = "".join(f"{k}:{v}\n" for k, v in ms)
    resource = f"/{account}{parts.path}"
    if parts.query:
        params: dict[str, list[str]] = {}
        for pair in parts.query.split("&"):
            name, _, value = pair.partition("=")
            params.setdefault(name.lower(), []).append(value)
        resource += "".join(f"\n{k}:{','.join(sorted(v))}" for k, v in sorted(params.items()))
    to_sign = f"{method}\n" + "\n" * 11 + canonical_headers + resource
    digest = hmac.new(base64.b64decode(key), to_sign.encode(), hashlib.sha256).digest()
    return f"SharedKey {account}:{base64.b64encode(digest).decode()}"


class AzureToken:
    """A token of the pod's Azure identity (DefaultAzureCredential without the developer tools),
    refreshed five minutes before it expires; shared by a bundle's files."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._credential: Any = None
        self._token: Any = None

    def bearer(self) -> str:
        """The token; raises azure.core's ClientAuthenticationError when no credential gives one."""
        with self._lock:
            if self._token is None or self._token.expires_on - 300 < time.time():
                if self._credential is None:
                    from azure.identity import DefaultAzureCredential

                    # The developer-machine credentials (CLIs, IDE caches, a browser) never apply in a
                    # pod and the CLI ones start subprocesses: excluded.
                    self._credential = DefaultAzureCredential(
                        exclude_cli_credential=True,
                        exclude_developer_cli_credential=True,
                        exclude_powershell_credential=True,
                        exclude_visual_studio_code_credential=True,
                        exclude_shared_token_cache_credential=True,
                        exclude_interactive_browser_credential=True,
                        exclude_broker_credential=True,
                    )
                self._token = self._credential.get_token(STORAGE_SCOPE)
            return str(self._token.token)


class AzureBlobSource:
    def __init__(self, uri: str, endpoint_url: str | None, timeout: float) -> None:
        try:
            self.location = parse_azure_blob(uri)
        except ValueError as exc:
            raise BundleError(f"{exc} (got {redact_uri(uri)})") from None
        # endpoint_url replaces https://<account>.blob.core.windows.net, e.g. an emulator's
        # http://127.0.0.1:10000/devstoreaccount1 (the account is then the first path segment).
        self.base_url = (endpoint_url or self.location.account_url).rstrip("/")
        self.timeout = timeout
        self.token = AzureToken()

    def _where(self, blob: str) -> str:
        return f"{self.location.account_url}/{self.location.container}/{blob}"

    def _auth(self, url: str, headers: dict[str, str]) -> tuple[str, str | None]:
        """(url, why no credential worked or None): adds the first credential that is set."""
        sas = os.environ.get(SAS_ENV, "").strip().lstrip("?")
        if sas:
            return f"{url}?{sas}", None
        key = os.environ.get(KEY_ENV, "").strip()
        if key:
            try:
                headers["Authorization"] = shared_key_signature(
                    key, "GET", headers, self.location.account, url
                )
            except ValueError as exc:  # not base64
                raise BundleError(f"{KEY_ENV} is not a valid account key ({type(exc).__name__})") from None
            return url, None
        from azure.core.exceptions import ClientAuthenticationError

        try:
            headers["Authorization"] = f"Bearer {self.token.bearer()}"
        except ClientAuthenticationError as exc:
            # DefaultAzureCredential's message has one line per credential it tried: keep the ones
            # that were configured and failed (not those merely unavailable), at most 600 characters.
            lines = [" ".join(line.split()) for line in str(exc).splitlines() if line.strip()]
            tried = [line for line in lines[1:] if "unavailable" not in line.lower()]
            return url, scrub("; ".join(lines[:1] + tried) or type(exc).__name__)[:600]
        return url, None

    def fetch(self, name: str, dest: Path, limit: int) -> None:
        blob = f"{self.location.prefix}/{name}" if self.location.prefix else name
        where = self._where(blob)
        url = f"{self.base_url}/{self.location.container}/{quote(blob, safe='/~')}"
        headers = {"x-ms-date": formatdate(usegmt=True), "x-ms-version": API_VERSION}
        url, no_token = self._auth(url, headers)
        try:
            with (
                httpx.Client(timeout=self.timeout, transport=httpx.HTTPTransport(retries=2)) as client,
                client.stream("GET", url, headers=headers) as response,
            ):
                if response.status_code != 200:
                    code = response.headers.get("x-ms-error-code", "")
                    why = f"; read anonymously because no Azure token came: {no_token}" if no_token else ""
                    raise BundleError(f"{where} answered HTTP {response.status_code} {code}".rstrip() + why)
                declared = response.headers.get("content-length")
                if declared is not None and declared.isdigit() and int(declared) > limit:
                    raise BundleError(f"{where} is {declared} bytes, more than the {limit} allowed")
                write_capped(response.iter_bytes(1 << 20), dest, limit, where)
        except httpx.HTTPError as exc:
            raise BundleError(f"reading {where} failed ({type(exc).__name__})") from exc
