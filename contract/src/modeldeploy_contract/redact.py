"""Model URIs without their secrets, for every place a URI is shown rather than used.

A model URI may carry credentials: userinfo (`https://user:pass@host/...`), a pre-signed query
(`?X-Amz-Signature=...`, `X-Goog-Signature`, an Azure SAS `sig=`), or a token parameter. The serving
pod needs the URI as written (it is passed in its environment); everything else (status, Events,
annotations, logs, error messages, `/v2/health/ready`) shows `redact_uri(uri)`: scheme, host, port
and path, with userinfo dropped and every query value replaced by `REDACTED` (the parameter names
stay: they tell a reader that the URI is pre-signed). `scrub(text)` does the same to every URL inside
a free text (an exception message), and also hides `Bearer` tokens and `key=value` pairs whose key
looks like a secret.

Both sides use this module (the operator for status and annotations, the server for its errors).
"""

from __future__ import annotations

import logging
import re
from urllib.parse import SplitResult, parse_qsl, quote, urlsplit, urlunsplit

REDACTED = "REDACTED"
_URL = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]{0,15}://[^\s'\"<>`]+")
_SECRET_PAIR = re.compile(
    r"(?i)\b([\w.-]*(?:signature|token|secret|password|passwd|credential|sig|apikey|api_key|"
    r"access_key|security-token|auth)[\w.-]*)=([^&\s'\"<>]+)"
)
_BEARER = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]+")


def redact_uri(uri: str) -> str:
    """`uri` without userinfo, query values or fragment; an unparsable URI becomes `<scheme>://REDACTED`."""
    try:
        parts: SplitResult = urlsplit(uri)
        port = parts.port
    except ValueError:
        scheme = uri.split(":", 1)[0] if ":" in uri else ""
        return f"{scheme}://{REDACTED}" if scheme.isalnum() else REDACTED
    host = parts.hostname or ""
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    netloc = f"{host}:{port}" if port is not None else host
    query = "&".join(
        f"{quote(k, safe='')}={REDACTED}" for k, _ in parse_qsl(parts.query, keep_blank_values=True)
    )
    if parts.query and not query:
        query = REDACTED
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def scrub(text: str) -> str:
    """`text` with every URL in it redacted, and secret-looking `key=value` pairs and bearer tokens hidden."""
    text = _URL.sub(lambda m: redact_uri(m.group(0)), text)
    text = _SECRET_PAIR.sub(lambda m: f"{m.group(1)}={REDACTED}", text)
    return _BEARER.sub(lambda m: f"{m.group(1)} {REDACTED}", text)


def same_origin(a: str, b: str) -> bool:
    """Same scheme, host and port (80/443 when not written): where a redirect may go."""
    try:
        first, second = urlsplit(a), urlsplit(b)
        ports = {"http": 80, "https": 443}
        return (
            first.scheme.lower() == second.scheme.lower()
            and (first.hostname or "") == (second.hostname or "")
            and (first.port or ports.get(first.scheme.lower()))
            == (second.port or ports.get(second.scheme.lower()))
        )
    except ValueError:
        return False


class ScrubFilter(logging.Filter):
    """A handler filter that passes every record through `scrub`: libraries log URLs too (httpx logs
    each request's full URL at INFO), so the rule is enforced where lines are written, not per call."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = scrub(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


def scrub_logs(logger: logging.Logger | None = None) -> None:
    """Install `ScrubFilter` on every handler of `logger` (the root logger by default), once."""
    for handler in (logger or logging.getLogger()).handlers:
        if not any(isinstance(f, ScrubFilter) for f in handler.filters):
            handler.addFilter(ScrubFilter())
