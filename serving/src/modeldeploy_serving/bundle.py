"""The model bundle: a folder with the model file(s), a reference profile and a manifest.

The manifest names every file with its sha256 and size, so a bundle is verified file by file before
anything is loaded; the sha256 of manifest.json itself is the bundle's digest (what model_info and the
operator's revision history show).
"""

from __future__ import annotations

import hashlib
from pathlib import Path, PurePosixPath
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from modeldeploy_contract.model_store import BundleFormat
from modeldeploy_serving.errors import BundleError, validation_summary

MANIFEST_NAME = "manifest.json"
SCHEMA_VERSION: Literal[1] = 1
ModelFormat = BundleFormat
Datatype = Literal["FP32", "FP64", "INT32", "INT64"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FileEntry(_Strict):
    """One file of the bundle, relative to the bundle's folder."""

    path: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size: int = Field(ge=0)

    @field_validator("path")
    @classmethod
    def _plain_relative(cls, value: str) -> str:
        # A manifest comes from storage we do not trust more than the bytes: no absolute paths,
        # no "..", no sub-folders, so a bundle can never make the server read or write elsewhere.
        p = PurePosixPath(value)
        if p.is_absolute() or len(p.parts) != 1 or value in {".", ".."} or "\\" in value:
            raise ValueError(f"bundle file path must be a plain file name, got {value!r}")
        return value


class BundleFiles(_Strict):
    """The files of a bundle by role."""

    model: FileEntry
    """The model as trained: XGBoost UBJ/JSON, or the ONNX model for onnx bundles."""
    onnx: FileEntry | None = None
    """An ONNX export of an XGBoost model, checked against it by pack (served when prefer_onnx)."""
    reference_profile: FileEntry
    golden: FileEntry | None = None
    """The golden set (modeldeploy_contract.preflight.GoldenSet): rows, the packing model's outputs for
    them and labels, replayed by `modeldeploy preflight` before a revision takes traffic."""

    def entries(self) -> list[FileEntry]:
        return [e for e in (self.model, self.onnx, self.reference_profile, self.golden) if e is not None]


class FeatureSpec(_Strict):
    """One input feature (a column of the [N, F] input tensor)."""

    name: str
    datatype: Datatype = "FP32"


class OutputSpec(_Strict):
    """One named output tensor; -1 is the batch dimension."""

    name: str
    datatype: Datatype
    shape: list[int]


class PackChoice(_Strict):
    """What `modeldeploy pack` chose to serve and why (information: the server decides from the files
    and its settings; a bundle with a checked ONNX export is served through onnxruntime by default)."""

    runtime: Literal["onnxruntime", "xgboost"]
    onnx: Literal["model", "given", "exported", "none"]
    """Where the served ONNX came from: the --model itself, --onnx, pack's own export, or none."""
    reason: str = Field(max_length=1000)
    parity_max_abs_diff: float | None = None
    parity_rows: int = Field(default=0, ge=0)


class Manifest(_Strict):
    """manifest.json of a bundle."""

    schema_version: Literal[1] = SCHEMA_VERSION
    name: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    version: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    format: ModelFormat
    task: Literal["classification", "regression"]
    classes: list[int] = Field(default_factory=list)
    """Class labels by column of `probabilities` (classification only)."""
    inputs: list[FeatureSpec] = Field(min_length=1)
    outputs: list[OutputSpec] = Field(min_length=1)
    files: BundleFiles
    created_by: dict[str, str] = Field(default_factory=dict)
    """Tool versions that made the bundle (information only)."""
    packed: PackChoice | None = None
    """pack's runtime choice (absent in bundles packed before pack exported ONNX itself)."""

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.inputs]


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def parse_manifest(data: bytes) -> Manifest:
    try:
        return Manifest.model_validate_json(data)
    except ValidationError as exc:
        raise BundleError(f"invalid {MANIFEST_NAME}: {validation_summary(exc)}") from exc


class VerifiedBundle:
    """A bundle whose manifest and files were read into memory and matched their digests.

    Runtimes load from these bytes, never from the path again, so a file swapped on disk after the
    check cannot be served (no time-of-check/time-of-use gap).
    """

    def __init__(self, manifest: Manifest, digest: str, blobs: dict[str, bytes]) -> None:
        self.manifest = manifest
        self.digest = digest
        self.blobs = blobs

    def blob(self, entry: FileEntry) -> bytes:
        return self.blobs[entry.path]


def verify_bundle(
    folder: Path, expected_digest: str | None = None, max_bytes: int | None = None
) -> VerifiedBundle:
    """Read and verify a bundle folder; raise BundleError on any mismatch (fail closed)."""
    manifest_path = folder / MANIFEST_NAME
    if not manifest_path.is_file():
        raise BundleError(f"no {MANIFEST_NAME} in {folder}")
    raw = manifest_path.read_bytes()
    digest = sha256_bytes(raw)
    if expected_digest is not None and digest != expected_digest.lower():
        raise BundleError(f"manifest sha256 is {digest}, expected {expected_digest}")
    manifest = parse_manifest(raw)
    total = len(raw)
    blobs: dict[str, bytes] = {}
    for entry in manifest.files.entries():
        path = folder / entry.path
        if not path.is_file():
            raise BundleError(f"bundle file {entry.path} is missing")
        size = path.stat().st_size
        total += size
        if size != entry.size:
            raise BundleError(f"{entry.path} has {size} bytes, the manifest says {entry.size}")
        if max_bytes is not None and total > max_bytes:
            raise BundleError(f"bundle is larger than the {max_bytes}-byte limit")
        data = path.read_bytes()
        actual = sha256_bytes(data)
        if actual != entry.sha256:
            raise BundleError(f"sha256 mismatch for {entry.path}: {actual} != manifest {entry.sha256}")
        blobs[entry.path] = data
    return VerifiedBundle(manifest, digest, blobs)
