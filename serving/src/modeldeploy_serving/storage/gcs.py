"""gs:// bundles through the GCS JSON API over plain HTTP (no SDK: the serving image stays small).

A bearer token is taken from GOOGLE_OAUTH_ACCESS_TOKEN when set (for example written by a sidecar or
workload identity helper); without it the objects must be publicly readable.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import quote, urlsplit

import httpx

from modeldeploy_contract.redact import redact_uri
from modeldeploy_serving.errors import BundleError
from modeldeploy_serving.storage.base import write_capped


class GcsSource:
    def __init__(self, uri: str, endpoint_url: str, timeout: float) -> None:
        parts = urlsplit(uri)
        if not parts.netloc:
            raise BundleError(f"gs URI without a bucket: {redact_uri(uri)}")
        self.bucket = parts.netloc
        self.prefix = parts.path.strip("/")
        self.endpoint_url = endpoint_url.rstrip("/")
        self.timeout = timeout

    def fetch(self, name: str, dest: Path, limit: int) -> None:
        obj = f"{self.prefix}/{name}" if self.prefix else name
        url = f"{self.endpoint_url}/storage/v1/b/{quote(self.bucket, safe='')}/o/{quote(obj, safe='')}"
        headers = {}
        token = os.environ.get("GOOGLE_OAUTH_ACCESS_TOKEN")
        if token:
            headers["Authorization"] = f"Bearer {token}"
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
