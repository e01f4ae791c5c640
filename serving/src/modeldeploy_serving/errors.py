"""Errors that become HTTP answers: each carries its status code and a message naming the problem."""

from __future__ import annotations


class ServingError(Exception):
    """A request that cannot be served; `status` is the HTTP code the caller gets."""

    status = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequestError(ServingError):
    """Malformed or inconsistent input (JSON, shape, datatype, data length, row count)."""

    status = 400


class NotFoundError(ServingError):
    """Unknown model or version."""

    status = 404


class PayloadTooLargeError(ServingError):
    """The request body exceeds the configured limit."""

    status = 413


class UnavailableError(ServingError):
    """The model is not ready yet (loading) or failed to load."""

    status = 503


class OverloadedError(ServingError):
    """Refused at once: the worker holds as many requests or queued rows as it may (503 + Retry-After)."""

    status = 503

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class BundleError(Exception):
    """A model bundle that must not be served: missing file, digest mismatch, oversize, bad manifest."""

    reason = "ModelLoadFailed"
    """The machine-readable cause on /v2/health/ready (KServe's FailureInfo reasons)."""


class RefusedBundleError(BundleError):
    """A sound bundle that is not the one the spec names: the server refuses it, and says what it
    found and what it was told on /v2/health/ready (`refused`), for the operator's condition."""

    def refused(self) -> dict[str, str]:
        raise NotImplementedError


class VersionMismatchError(RefusedBundleError):
    """The bundle's manifest names another version than the one this server was told to serve."""

    reason = "ModelVersionMismatch"

    def __init__(self, expected: str, found: str, digest: str) -> None:
        super().__init__(
            f"the bundle's manifest says version {found!r} but this server was told to serve version "
            f"{expected!r} (MODELDEPLOY_SERVER_MODEL_VERSION, the spec's model.version): refusing to "
            f"serve it (manifest sha256 {digest})"
        )
        self.expected, self.found, self.digest = expected, found, digest

    def refused(self) -> dict[str, str]:
        return {"version": self.found, "sha256": self.digest, "expectedVersion": self.expected}


class FormatMismatchError(RefusedBundleError):
    """The bundle's manifest is of another format than the one this server was told (not auto)."""

    reason = "ModelFormatMismatch"

    def __init__(self, expected: str, found: str, version: str, digest: str) -> None:
        export = " (an xgboost bundle serves as onnx only with an ONNX export)" if found == "xgboost" else ""
        super().__init__(
            f"bundle is {found}, spec.model.format says {expected}{export} "
            f"(MODELDEPLOY_SERVER_MODEL_FORMAT): refusing to serve it (manifest sha256 {digest})"
        )
        self.expected, self.found, self.version, self.digest = expected, found, version, digest

    def refused(self) -> dict[str, str]:
        return {
            "format": self.found,
            "version": self.version,
            "sha256": self.digest,
            "expectedFormat": self.expected,
        }


def validation_summary(exc: object, limit: int = 5) -> str:
    """Where and why a pydantic validation failed, without the input it saw: a file's contents (or
    a secret in it) must never travel into an error, a log or /v2/health/ready."""
    errors = getattr(exc, "errors", None)
    if not callable(errors):
        return type(exc).__name__
    found = errors(include_url=False, include_input=False, include_context=False)
    parts = [
        f"{'.'.join(str(p) for p in e.get('loc', ())) or '(root)'}: {e.get('msg', 'invalid')}" for e in found
    ]
    more = f" (and {len(parts) - limit} more)" if len(parts) > limit else ""
    return "; ".join(parts[:limit]) + more
