"""What the operator and the model server agree on about where a bundle is and what it is.

A PersistentVolumeClaim is a model store: `pvc://<claimName>` or `pvc://<claimName>/<path/in/claim>`.
The operator mounts the claim read-only at `PVC_MOUNT_ROOT/<claimName>` in every serving pod and the
server reads the bundle from that local folder, so both sides read a URI with `parse_pvc_uri`, the
one parser. The CRD says the same thing to the API server (a pattern and CEL rules on model.uri):
tests/unit/operator/test_operator_model_store.py checks that the CRD's rule is PVC_URI_PATTERN and
that the two accept the same strings, and test_operator_reconcile.py asks kube-apiserver itself.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

ModelFormat = Literal["auto", "xgboost", "onnx"]
"""spec.model.format: `auto` serves whatever the bundle's manifest says; xgboost or onnx is also a
promise about the bundle, and a server refuses a bundle it cannot serve as that format
(ModelFormatMismatch): an ONNX bundle as xgboost, an XGBoost bundle without an ONNX export as onnx."""
BundleFormat = Literal["xgboost", "onnx"]
"""What a bundle's manifest can say (never `auto`)."""

PVC_SCHEME = "pvc://"
PVC_MOUNT_ROOT = "/mnt/models"
"""Where the operator mounts a model-store claim (read-only) in serving pods: PVC_MOUNT_ROOT/<claim>."""
PVC_VOLUME = "model-store"
"""Name of that volume in the pod (one model per server: at most one claim per pod)."""
MAX_URI_LENGTH = 2048
"""spec.model.uri's maxLength, for every scheme."""
MAX_CLAIM_LENGTH = 253
"""A PersistentVolumeClaim name is a DNS-1123 subdomain: at most 253 characters."""

# `[.]`, not an escaped dot: the pattern is written into a CEL string literal, where `\.` is no escape.
_CLAIM = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
# A path segment starts with a letter, digit or underscore: never `.` or `..` (no way out of the
# claim's folder), never empty (no `//`, no trailing `/`), no other characters than these.
_SEGMENT = r"[A-Za-z0-9_][-A-Za-z0-9_.]*"
PVC_URI_PATTERN = rf"^pvc://{_CLAIM}(/{_SEGMENT})*$"
"""The whole grammar of a pvc:// URI, as RE2 (the API server's CEL) and Python both read it. In the
CRD: `!self.uri.startsWith('pvc://') || self.uri.matches(PVC_URI_PATTERN)`. Python's `$` also
matches before a trailing newline where RE2's does not: Python code uses it with `re.fullmatch`
(`_PVC_URI`), never `re.match`/`search`."""
_PVC_URI = re.compile(PVC_URI_PATTERN.removeprefix("^").removesuffix("$"))


class StoreURIError(ValueError):
    """A model URI that names a store in a way the operator and the server refuse."""


@dataclass(frozen=True)
class PvcLocation:
    """A bundle in a PersistentVolumeClaim: the claim and the folder inside it ("" for its root)."""

    claim: str
    path: str

    @property
    def mount_path(self) -> str:
        """Where the claim is mounted in a serving pod."""
        return f"{PVC_MOUNT_ROOT}/{self.claim}"

    @property
    def local_path(self) -> str:
        """The bundle's folder in a serving pod."""
        return f"{self.mount_path}/{self.path}" if self.path else self.mount_path


def is_pvc_uri(uri: str) -> bool:
    return uri.startswith(PVC_SCHEME)


def parse_pvc_uri(uri: str) -> PvcLocation:
    """The claim and path of a pvc:// URI; StoreURIError (saying what is wrong) for anything the
    grammar (PVC_URI_PATTERN) or the length limits refuse.

    >>> parse_pvc_uri("pvc://models/churn/v2")
    PvcLocation(claim='models', path='churn/v2')
    >>> parse_pvc_uri("pvc://models").local_path
    '/mnt/models/models'
    """
    if not is_pvc_uri(uri):
        raise StoreURIError("not a pvc:// URI")
    if len(uri) > MAX_URI_LENGTH:
        raise StoreURIError(f"a model URI has at most {MAX_URI_LENGTH} characters")
    claim, _, path = uri[len(PVC_SCHEME) :].partition("/")
    if len(claim) > MAX_CLAIM_LENGTH:
        raise StoreURIError(f"the claim name has at most {MAX_CLAIM_LENGTH} characters")
    if _PVC_URI.fullmatch(uri) is None:
        raise StoreURIError(
            "a pvc:// URI is pvc://<claimName>[/<path>]: the claim name a DNS-1123 subdomain "
            "(lower-case letters, digits, '-' and '.'), each path segment letters, digits, '_', '-' "
            "and '.' not starting with '.' or '-', no empty segment and no trailing '/'"
        )
    return PvcLocation(claim=claim, path=path)
