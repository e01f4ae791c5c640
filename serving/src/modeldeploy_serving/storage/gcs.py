"""gs:// bundles through the GCS JSON API over plain HTTP; google-auth only mints the bearer token.

The token, in this order:
1. GOOGLE_OAUTH_ACCESS_TOKEN, when set (a token written by a sidecar or a helper; kept as before);
2. Application Default Credentials (`google.auth.default`): GOOGLE_APPLICATION_CREDENTIALS (a
   service-account key, or an external_account file: workload identity federation), gcloud's
   well-known file, then the metadata server (GKE Workload Identity; GCE_METADATA_HOST moves it);
3. none (and no file named in GOOGLE_APPLICATION_CREDENTIALS): the objects must be publicly readable.

google-auth, not the google-cloud-storage SDK: the download stays this module's capped, streamed
httpx GET, and the SDK would add 5.1 MiB more installed and 0.03-0.05 s more CPU to the first import
for nothing this needs (docs/benchmarks.md, "Cloud storage clients"). Off Google Cloud, the
metadata probe of step 2 costs up to 3 x 3 s before an anonymous read (google-auth's own retries);
NO_GCE_CHECK=true in the pod's env skips it.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

from modeldeploy_contract.redact import redact_uri, scrub
from modeldeploy_serving.errors import BundleError
from modeldeploy_serving.storage.base import write_capped

READ_ONLY_SCOPE = "https://www.googleapis.com/auth/devstorage.read_only"
STATIC_TOKEN_ENV = "GOOGLE_OAUTH_ACCESS_TOKEN"  # noqa: S105 - the name of a variable, not a token


class GoogleToken:
    """The Authorization header of the default credential chain, refreshed when the token expires.
    One per source: a bundle's files share it (one token request per load, not one per file)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._resolved = False
        self._credentials: Any = None
        self._request: Any = None

    def headers(self) -> dict[str, str]:
        static = os.environ.get(STATIC_TOKEN_ENV)
        if static:
            return {"Authorization": f"Bearer {static}"}
        with self._lock:
            return self._chain_headers()

    def _chain_headers(self) -> dict[str, str]:
        import google.auth
        from google.auth import exceptions
        from google.auth.credentials import with_scopes_if_required
        from google.auth.transport.requests import Request

        try:
            if not self._resolved:
                self._request = Request()
                try:
                    # Without scopes here: given scopes, default() also looks the project up for
                    # external_account credentials (a call to the Resource Manager API that needs
                    # egress and a permission, for a project id nothing here uses).
                    found, _ = google.auth.default(request=self._request)
                    self._credentials = with_scopes_if_required(found, [READ_ONLY_SCOPE])  # type: ignore[no-untyped-call]
                except exceptions.DefaultCredentialsError:
                    if os.environ.get("GOOGLE_APPLICATION_CREDENTIALS"):
                        raise  # a file was named but is missing or unreadable: an error, not anonymity
                    self._credentials = None  # nothing configured: anonymous reads of public objects
                self._resolved = True
            if self._credentials is None:
                return {}
            if not self._credentials.valid:
                self._credentials.refresh(self._request)
        except exceptions.GoogleAuthError as exc:
            # A chain that was configured but failed (a bad key, a refused exchange) is an error, not
            # an anonymous read: the message names the step, google-auth's text never holds the key.
            raise BundleError(
                f"getting a Google access token failed ({type(exc).__name__}): {scrub(str(exc))[:300]}"
            ) from exc
        return {"Authorization": f"Bearer {self._credentials.token}"}


class GcsSource:
    def __init__(self, uri: str, endpoint_url: str, timeout: float) -> None:
        parts = urlsplit(uri)
        if not parts.netloc:
            raise BundleError(f"gs URI without a bucket: {redact_uri(uri)}")
        self.bucket = parts.netloc
        self.prefix = parts.path.strip("/")
        self.endpoint_url = endpoint_url.rstrip("/")
        self.timeout = timeout
        self.token = GoogleToken()

    def fetch(self, name: str, dest: Path, limit: int) -> None:
        obj = f"{self.prefix}/{name}" if self.prefix else name
        url = f"{self.endpoint_url}/storage/v1/b/{quote(self.bucket, safe='')}/o/{quote(obj, safe='')}"
        headers = self.token.headers()
        try:
            with (
                httpx.Client(timeout=self.timeout, transport=httpx.HTTPTransport(retries=2)) as client,
                client.stream("GET", url, params={"alt": "media"}, headers=headers) as response,
            ):
                if response.status_code != 200:
                    raise BundleError(f"gs://{self.bucket}/{obj} answered HTTP {response.status_code}")
                write_capped(response.iter_bytes(1 << 20), dest, limit, f"gs://{self.bucket}/{obj}")
        except httpx.HTTPError as exc:
            raise BundleError(f"reading gs://{self.bucket}/{obj} failed ({type(exc).__name__})") from exc
