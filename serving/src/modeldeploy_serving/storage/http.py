"""http(s):// bundles: files are fetched relative to the bundle's base URL."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

import httpx

from modeldeploy_serving.errors import BundleError
from modeldeploy_serving.storage.base import write_capped


class HttpSource:
    def __init__(self, base_url: str, timeout: float) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout

    def fetch(self, name: str, dest: Path, limit: int) -> None:
        url = f"{self.base_url}/{quote(name)}"
        transport = httpx.HTTPTransport(retries=2)
        try:
            with (
                httpx.Client(transport=transport, timeout=self.timeout, follow_redirects=True) as client,
                client.stream("GET", url) as response,
            ):
                if response.status_code != 200:
                    raise BundleError(f"GET {url} answered HTTP {response.status_code}")
                declared = response.headers.get("content-length")
                if declared is not None and declared.isdigit() and int(declared) > limit:
                    raise BundleError(f"{url} is {declared} bytes, more than the {limit} allowed")
                write_capped(response.iter_bytes(1 << 20), dest, limit, url)
        except httpx.HTTPError as exc:
            raise BundleError(f"GET {url} failed: {exc}") from exc
