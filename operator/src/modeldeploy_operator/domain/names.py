"""Names of the objects the operator creates: deterministic, DNS-1123/1035-safe, at most 63 characters.

Names come from the spec alone (never from status), so a reconcile that lost its status still finds
its objects. Service names must be DNS-1035 labels (start with a letter, at most 63 characters); the
ModelDeployment's own name is checked by the CRD to be one, of at most 40 characters.
"""

from __future__ import annotations

import hashlib

MAX_NAME_LENGTH = 63
_DIGEST_LENGTH = 6


def fit_name(prefix: str, suffix: str, limit: int = MAX_NAME_LENGTH) -> str:
    """`prefix-suffix`, or, when that is too long, the prefix shortened and made unique by a digest.

    The suffix (a revision hash or a role) is kept whole because it is what tells objects apart;
    the digest of the full name keeps two long prefixes that share a beginning from colliding.
    """
    name = f"{prefix}-{suffix}" if suffix else prefix
    if len(name) <= limit:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:_DIGEST_LENGTH]
    room = limit - len(suffix) - len(digest) - 2
    if room < 1:
        raise ValueError(f"suffix {suffix!r} leaves no room for a name within {limit} characters")
    short = prefix[:room].rstrip("-")
    return f"{short}-{digest}-{suffix}" if suffix else f"{short}-{digest}"


def stable_service_name(deployment_name: str) -> str:
    """The Service users call: the ModelDeployment's own name, stable across revisions."""
    return deployment_name


def revision_name(deployment_name: str, variant: str, revision: str) -> str:
    """Name of the Deployment, Service and HPA that serve one (variant, revision)."""
    return fit_name(f"{deployment_name}-{variant}", revision)


def router_name(deployment_name: str) -> str:
    """Name of the built-in router's Deployment and of its ConfigMap (issue 5)."""
    return fit_name(deployment_name, "router")


def route_name(deployment_name: str) -> str:
    """Name of the HTTPRoute of the Gateway API provider."""
    return deployment_name


def stream_name(deployment_name: str, variant: str, revision: str, role: str) -> str:
    """Name of the Deployment running `modeldeploy stream` for one (variant, revision) in one role
    (`output` or `shadow`)."""
    return fit_name(f"{deployment_name}-{variant}", f"{revision}-{role}")
