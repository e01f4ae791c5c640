"""http(s):// bundles: files are fetched relative to the bundle's base URL.

Redirects are followed only within the bundle's origin (same scheme, host and port), at most
`MAX_REDIRECTS` times: a store that answers with a redirect elsewhere (another host, http from
https) is refused, so a model URI cannot be bounced to an internal address. Errors name the URL
without its credentials or query values (`redact_uri`), never the HTTP client's own message.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote, urljoin

import httpx

from modeldeploy_contract.redact import redact_uri, same_origin
from modeldeploy_serving.errors import BundleError
from modeldeploy_serving.storage.base import write_capped

MAX_REDIRECTS = 5


class HttpSource:
    def __init__(self, base_url: str, timeout: float) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout

    def fetch(self, name: str, dest: Path, limit: int) -> None:
        url = f"{self.base_url}/{quote(name)}"
        shown = redact_uri(url)
        transport = httpx.HTTPTransport(retries=2)
        try:
            with httpx.Client(transport=transport, timeout=self.timeout, follow_redirects=False) as client:
                for _ in range(MAX_REDIRECTS + 1):
                    with client.stream("GET", url) as response:
                        if response.is_redirect:
                            target = urljoin(url, response.headers.get("location", ""))
                            if not same_origin(self.base_url, target):
                                raise BundleError(
                                    f"GET {shown} redirects to another origin ({redact_uri(target)}); refused"
                                )
                            url = target
                            continue
                        if response.status_code != 200:
                            raise BundleError(f"GET {shown} answered HTTP {response.status_code}")
                        declared = response.headers.get("content-length")
                        if declared is not None and declared.isdigit() and int(declared) > limit:
                            raise BundleError(f"{shown} is {declared} bytes, more than the {limit} allowed")
                        write_capped(response.iter_bytes(1 << 20), dest, limit, shown)
                        return
                raise BundleError(f"GET {shown}: more than {MAX_REDIRECTS} redirects")
        except httpx.HTTPError as exc:
            raise BundleError(f"GET {shown} failed ({type(exc).__name__})") from exc
