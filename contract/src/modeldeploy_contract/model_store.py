"""What the operator and the model server agree on about where a bundle is and what it is: the
model URI's grammar per store, decided in one place.

A PersistentVolumeClaim is a model store: `pvc://<claimName>` or `pvc://<claimName>/<path/in/claim>`.
The operator mounts the claim read-only at `PVC_MOUNT_ROOT/<claimName>` in every serving pod and the
server reads the bundle from that local folder, so both sides read a URI with `parse_pvc_uri`, the
one parser. The CRD says the same thing to the API server (a pattern and CEL rules on model.uri):
tests/unit/operator/test_operator_model_store.py checks that the CRD's rule is PVC_URI_PATTERN and
that the two accept the same strings, and test_operator_reconcile.py asks kube-apiserver itself.

The CRD checks model.uri with `URI_PATTERN` and, for Azure Blob URLs, with the CEL rule
`AZURE_BLOB_RULE` (both copied into crds/; tests/unit/serving/test_model_uri.py checks the copies
and that `parse_azure_blob` accepts exactly what those expressions accept). The operator repeats the
rule (domain/validation.py) for clusters running an older CRD; the model server picks its source by
`is_azure_blob`.

Azure Blob bundles are named the way the Azure portal shows a blob folder and KServe accepts them:
https://<account>.blob.core.windows.net/<container>[/<path>] (and the two sovereign clouds' suffixes).
No new scheme: an az:// scheme has no single meaning (adlfs reads az://<container>/<path> with the
account given elsewhere). A query string is refused there: a SAS token in the URI would be a
credential in the spec; it belongs in the storage Secret (AZURE_STORAGE_SAS_TOKEN).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal
from urllib.parse import unquote

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


# -- Azure Blob -----------------------------------------------------------------------------------

URI_PATTERN = r"^((s3|gs|https?|file|pvc)://.+|/.+)$"
"""The CRD's pattern of model.uri: the schemes the model server reads, or an absolute path in the pod.
A pvc:// URI's own grammar is `PVC_URI_PATTERN`."""

AZURE_BLOB_SUFFIXES = ("blob.core.windows.net", "blob.core.chinacloudapi.cn", "blob.core.usgovcloudapi.net")
# [.] rather than \. : the same expression in Python, RE2 and the CRD's CEL string, without escapes.
_SUFFIXES = "|".join(s.replace(".", "[.]") for s in AZURE_BLOB_SUFFIXES)

AZURE_BLOB_HOST = rf"(?i)^https?://[^/?#]*[.]({_SUFFIXES})(:[0-9]*)?([/?#]|$)"
"""A URI that names Azure Blob storage (any case, http too, any user info or port): such a URI must
then be a well-formed one, `AZURE_BLOB_URI` and `AZURE_BLOB_CONTAINER`."""

AZURE_BLOB_URI = rf"^https://[a-z0-9]{{3,24}}[.]({_SUFFIXES})/[a-z0-9]+(-[a-z0-9]+)*(/[^?#]*)?$"
"""https, an account name of 3-24 lowercase letters and digits, a container of lowercase letters,
digits and single hyphens (not at either end), an optional path; no port, user info, query or fragment."""

AZURE_BLOB_CONTAINER = r"^https://[^/]+/[a-z0-9-]{3,63}(/|$)"
"""The container name's length (3-63), which `AZURE_BLOB_URI` cannot say together with the hyphen rule."""

AZURE_BLOB_MESSAGE = (
    "an Azure Blob model.uri must be https://<account>.blob.core.windows.net/<container>[/<path>]: "
    "account 3-24 lowercase letters and digits, container 3-63 lowercase letters, digits and single "
    "hyphens (not first or last), no port, user info or query (a SAS token goes in the storage Secret "
    "as AZURE_STORAGE_SAS_TOKEN)"
)


def _cel_string(regex: str) -> str:
    if "\\" in regex or "'" in regex:  # written into the CEL string as it is
        raise ValueError(f"a CEL string would need escapes: {regex}")
    return f"'{regex}'"


AZURE_BLOB_RULE = (
    f"!self.uri.matches({_cel_string(AZURE_BLOB_HOST)})"
    f" || (self.uri.matches({_cel_string(AZURE_BLOB_URI)})"
    f" && self.uri.matches({_cel_string(AZURE_BLOB_CONTAINER)}))"
)
"""The CEL rule on a model object (crds/: model and variants[].model), as written there."""

# \Z for $: Python's $ also matches before a final newline, RE2's (the API server's) only at the end.
_AZURE_HOST_RE = re.compile(AZURE_BLOB_HOST.replace("$", r"\Z"))
_ACCOUNT_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789")


@dataclass(frozen=True)
class AzureBlobLocation:
    """Where an Azure Blob bundle is: `prefix` is the blob-name prefix (decoded, no slashes at the ends)."""

    account: str
    suffix: str
    container: str
    prefix: str

    @property
    def account_url(self) -> str:
        return f"https://{self.account}.{self.suffix}"


def is_azure_blob(uri: str) -> bool:
    """Whether `uri` names Azure Blob storage (well-formed or not: `parse_azure_blob` says which)."""
    return _AZURE_HOST_RE.search(uri) is not None


def _container_ok(name: str) -> bool:
    return (
        3 <= len(name) <= 63
        and all(c in _ACCOUNT_CHARS or c == "-" for c in name)
        and not name.startswith("-")
        and not name.endswith("-")
        and "--" not in name
    )


def parse_azure_blob(uri: str) -> AzureBlobLocation:
    """The location of an Azure Blob URI; ValueError (`AZURE_BLOB_MESSAGE` and what is wrong) if it
    is not a well-formed one. Written as plain code, not with the CRD's expressions, so that the
    property test comparing the two checks something."""

    def bad(why: str) -> ValueError:
        return ValueError(f"{AZURE_BLOB_MESSAGE}; {why}")

    if not uri.startswith("https://"):
        raise bad("it must start with https://")
    rest = uri[len("https://") :]
    if "?" in rest or "#" in rest:
        raise bad("it has a query or a fragment")
    host, slash, path = rest.partition("/")
    if not slash:
        raise bad("it names no container")
    account, dot, suffix = host.partition(".")
    if not dot or suffix not in AZURE_BLOB_SUFFIXES:
        raise bad(f"the host must end in one of {', '.join(AZURE_BLOB_SUFFIXES)}, with no port")
    if not 3 <= len(account) <= 24 or any(c not in _ACCOUNT_CHARS for c in account):
        raise bad("the account name is not 3-24 lowercase letters and digits")
    container, _, blob_path = path.partition("/")
    if not _container_ok(container):
        raise bad(f"the container name {container[:70]!r} is not valid")
    return AzureBlobLocation(account, suffix, container, unquote(blob_path).strip("/"))
