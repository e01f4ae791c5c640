"""One bounded HTTP GET for analysis: the only way the operator reads a pod's /metrics or Prometheus.

Whatever the remote does, a fetch
- ends within `deadline_seconds` of its start plus at most one socket operation (every connect, write
  and read is itself limited to the time left, and the deadline is checked after every chunk, so a
  server that trickles bytes is cut off; the measurement pool enforces the deadline on the reading
  itself, see pool.py);
- holds at most `max_bytes` of body (streamed and counted as it arrives, never decompressed: the
  request asks for `identity` and a compressed answer is refused);
- follows no redirect (a 3xx is a failure: an allowed address cannot send the operator elsewhere);
- fails with a `FetchError` whose message is short and made by the operator, never by the remote.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import httpx

_MESSAGE_CHARS = 160


@dataclass(frozen=True)
class FetchLimits:
    deadline_seconds: float = 10.0
    """Wall-clock limit of the whole exchange: connect, request, headers and body."""
    max_bytes: int = 4 * 1024 * 1024
    """Largest body kept; a longer answer is a failure (after reading at most this much plus a chunk)."""


class FetchError(Exception):
    """The fetch failed; str() is a short message safe to put into status."""


def sanitize(text: str, limit: int = _MESSAGE_CHARS) -> str:
    """Printable ASCII only, whitespace collapsed, at most `limit` characters: what may go from a remote
    answer (a PromQL error, a parser complaint) into status or an Event."""
    cleaned = "".join(c if " " <= c <= "~" else " " for c in text)
    collapsed = " ".join(cleaned.split())
    return collapsed if len(collapsed) <= limit else collapsed[: limit - 3] + "..."


def _failure(exc: httpx.HTTPError) -> str:
    # httpx messages may carry the URL (and with it userinfo or query parameters): name the class only.
    if isinstance(exc, httpx.ConnectTimeout):
        return "connect timeout"
    if isinstance(exc, httpx.TimeoutException):
        return "timeout"
    if isinstance(exc, httpx.ConnectError):
        return "connection refused or unreachable"
    if isinstance(exc, httpx.RemoteProtocolError):
        return "connection closed or malformed HTTP"
    return f"HTTP client error ({type(exc).__name__})"


def fetch(
    client: httpx.Client,
    url: str,
    limits: FetchLimits,
    params: Mapping[str, str] | None = None,
    clock: Callable[[], float] = time.monotonic,
    *,
    method: str = "GET",
    content: bytes | None = None,
    headers: Mapping[str, str] | None = None,
) -> tuple[int, bytes]:
    """(status, body) of a GET (or `method` with `content`) to `url`; raises FetchError for anything
    that is not a complete answer within the limits. Any status is returned (the caller decides what a
    404 means) except 3xx."""
    started = clock()
    deadline = started + limits.deadline_seconds
    timeout = httpx.Timeout(limits.deadline_seconds)
    sent = {**(headers or {}), "Accept-Encoding": "identity"}
    try:
        with client.stream(
            method,
            url,
            params=params,
            headers=sent,
            content=content,
            timeout=timeout,
            follow_redirects=False,
        ) as response:
            if 300 <= response.status_code < 400:
                raise FetchError(f"HTTP {response.status_code} redirect not followed")
            encoding = response.headers.get("content-encoding", "identity").strip().lower()
            if encoding not in ("", "identity"):
                raise FetchError("compressed answer refused")
            declared = response.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > limits.max_bytes:
                raise FetchError(f"answer larger than {limits.max_bytes} bytes")
            body = bytearray()
            # As each network read arrives (a chunk size would buffer, and hide a trickle from the clock);
            # identity only (checked above), so these are the raw bytes.
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > limits.max_bytes:
                    raise FetchError(f"answer larger than {limits.max_bytes} bytes")
                if clock() > deadline:
                    raise FetchError(f"no complete answer within {limits.deadline_seconds:g}s")
            return response.status_code, bytes(body)
    except httpx.TimeoutException as exc:
        if clock() > deadline:
            raise FetchError(f"no complete answer within {limits.deadline_seconds:g}s") from exc
        raise FetchError(_failure(exc)) from exc
    except httpx.HTTPError as exc:
        raise FetchError(_failure(exc)) from exc
    except (UnicodeError, ValueError) as exc:  # an unparsable URL, never the remote's words
        raise FetchError("invalid address") from exc


def new_client() -> httpx.Client:
    """The client analysis fetches go through: no redirects, no proxy from the environment (an
    HTTP_PROXY meant for image pulls must not see pod or Prometheus traffic), no cookies kept."""
    return httpx.Client(follow_redirects=False, trust_env=False)
