"""Which Prometheus servers a ModelDeployment may send the operator to: an allow-list set at install.

A ModelDeployment is written by a tenant; the operator runs with its own network position and rights.
Without a list, `spec.rollout.analysis.prometheus.address` would let anyone who can create a
ModelDeployment make the operator send GETs anywhere (cloud metadata, the API server, internal
services) and wait on them. So an address is used only if it matches an entry of the chart value
`analysis.prometheus.allowedAddresses` (operator setting `prometheus_allowed_addresses`):

- same scheme, host (case-insensitive) and port (80/443 when not written);
- the entry's path is a prefix of the address's path at a `/` boundary (`http://p:9090/prom` allows
  `http://p:9090/prom` and `http://p:9090/prom/x`, not `http://p:9090/promx`);
- no credentials, query or fragment in either (an address with them is refused outright).
An empty list allows nothing: prometheus checks are then Inconclusive with a message saying why.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit

_DEFAULT_PORTS = {"http": 80, "https": 443}
SETTING_HINT = "the Helm value analysis.prometheus.allowedAddresses"


@dataclass(frozen=True)
class _Origin:
    scheme: str
    host: str
    port: int
    path: str


def _parse(address: str) -> _Origin | str:
    """The address's parts, or why it is not an acceptable Prometheus address."""
    try:
        parts: SplitResult = urlsplit(address.strip())
        port = parts.port
    except ValueError:
        return "not a valid URL"
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        return "not an http(s) URL with a host"
    if parts.username is not None or parts.password is not None:
        return "credentials in the address are not accepted"
    if parts.query or parts.fragment:
        return "a query or fragment in the address is not accepted"
    path = "/" + parts.path.strip("/") if parts.path.strip("/") else ""
    return _Origin(scheme, parts.hostname.lower(), port or _DEFAULT_PORTS[scheme], path)


def origin_of(address: str) -> str:
    """`scheme://host:port` of an address, for messages (never its credentials or path)."""
    parsed = _parse(address)
    if isinstance(parsed, str):
        return "an invalid address"
    return f"{parsed.scheme}://{parsed.host}:{parsed.port}"


@dataclass(frozen=True)
class AddressPolicy:
    allowed: tuple[str, ...] = ()
    what: str = "prometheus"
    """What the addresses are for, in messages (the same rules guard the label joiner's)."""
    hint: str = SETTING_HINT

    def __post_init__(self) -> None:
        for entry in self.allowed:
            if isinstance(_parse(entry), str):
                raise ValueError(f"allowed {self.what.capitalize()} address {entry!r}: {_parse(entry)}")

    def refusal(self, address: str) -> str | None:
        """None when the operator may query `address`, else a short reason for status."""
        parsed = _parse(address)
        if isinstance(parsed, str):
            return f"{self.what} address refused: {parsed}"
        for entry in self.allowed:
            allowed = _parse(entry)
            assert not isinstance(allowed, str)  # checked in __post_init__
            same_origin = (parsed.scheme, parsed.host, parsed.port) == (
                allowed.scheme,
                allowed.host,
                allowed.port,
            )
            if same_origin and (parsed.path + "/").startswith(allowed.path + "/"):
                return None
        if not self.allowed:
            return f"{self.what} checks are disabled: no address is allowed ({self.hint})"
        return f"{self.what} address {origin_of(address)} is not in the operator's allow-list ({self.hint})"
