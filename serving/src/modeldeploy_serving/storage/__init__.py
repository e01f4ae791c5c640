"""Fetch a bundle from a model URI into a local folder (verification happens in bundle.verify_bundle).

Local paths and file:// URIs are used in place, and so are pvc://<claim>/<path> URIs: the operator
mounts the claim read-only at /mnt/models/<claim> (modeldeploy_contract.model_store, the one parser).
Remote bundles (http(s)://, s3://, gs://, Azure Blob https://<account>.blob.core.windows.net/...) are
a "folder" URI: manifest.json is fetched first, then each file it names, each capped at the size the
manifest declares and the whole at max_artifact_bytes. Downloads go to a private temporary folder
that is renamed into the cache only when complete and verified, so concurrent workers and crashed
downloads never leave a half-written bundle that looks usable.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from urllib.parse import unquote, urlsplit

from modeldeploy_contract.model_store import StoreURIError, is_azure_blob, is_pvc_uri, parse_pvc_uri
from modeldeploy_contract.redact import redact_uri
from modeldeploy_contract.server_settings import ServerSettings
from modeldeploy_serving.bundle import MANIFEST_NAME, parse_manifest, sha256_bytes, verify_bundle
from modeldeploy_serving.errors import BundleError
from modeldeploy_serving.storage.base import Source

MANIFEST_LIMIT = 1 << 20


def local_folder(uri: str) -> Path | None:
    """The folder of a local, file:// or pvc:// URI, or None for a remote URI."""
    if is_pvc_uri(uri):
        try:
            path = Path(parse_pvc_uri(uri).local_path)
        except StoreURIError as exc:
            raise BundleError(f"invalid model URI {redact_uri(uri)}: {exc}") from exc
        return path.parent if path.name == MANIFEST_NAME else path
    parts = urlsplit(uri)
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise BundleError(f"file:// URI with a host is not supported: {redact_uri(uri)}")
        path = Path(unquote(parts.path))
    elif parts.scheme == "" or (len(parts.scheme) == 1 and os.name == "nt"):
        path = Path(uri)
    else:
        return None
    return path.parent if path.name == MANIFEST_NAME else path


def source_for(uri: str, settings: ServerSettings) -> Source:
    scheme = urlsplit(uri).scheme
    if is_azure_blob(uri):
        # Before plain http(s): an Azure Blob URL is read with the pod's Azure credentials, and a
        # malformed one (http, a port, a SAS query, a bad account name) is refused, not fetched.
        from modeldeploy_serving.storage.azure_blob import AzureBlobSource

        return AzureBlobSource(uri, settings.azure_blob_endpoint_url, settings.download_timeout_seconds)
    if scheme in ("http", "https"):
        from modeldeploy_serving.storage.http import HttpSource

        return HttpSource(uri, settings.download_timeout_seconds)
    if scheme == "s3":
        from modeldeploy_serving.storage.s3 import S3Source

        return S3Source(uri, settings.s3_endpoint_url, settings.download_timeout_seconds)
    if scheme == "gs":
        from modeldeploy_serving.storage.gcs import GcsSource

        return GcsSource(uri, settings.gcs_endpoint_url, settings.download_timeout_seconds)
    raise BundleError(f"unsupported model URI scheme {scheme!r} in {redact_uri(uri)}")


def fetch_bundle(uri: str, settings: ServerSettings) -> Path:
    """Return a local folder holding the bundle at `uri` (downloading it if remote)."""
    if not uri:
        raise BundleError("no model URI configured (MODELDEPLOY_SERVER_MODEL_URI or --model-uri)")
    folder = local_folder(uri)
    if folder is not None:
        if not folder.is_dir():
            mounted = " (the operator mounts the claim in its serving pods)" if is_pvc_uri(uri) else ""
            raise BundleError(f"model folder {folder} does not exist{mounted}")
        return folder
    source = source_for(
        uri.rstrip("/") if not uri.endswith(MANIFEST_NAME) else uri[: -len(MANIFEST_NAME)], settings
    )
    cache = Path(settings.model_cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".download-", dir=cache))
    try:
        limit = settings.max_artifact_bytes
        source.fetch(MANIFEST_NAME, work / MANIFEST_NAME, min(MANIFEST_LIMIT, limit))
        raw = (work / MANIFEST_NAME).read_bytes()
        digest = sha256_bytes(raw)
        if settings.model_sha256 and digest != settings.model_sha256.lower():
            raise BundleError(f"manifest sha256 is {digest}, expected {settings.model_sha256}")
        final = cache / digest
        if final.is_dir():
            # Another worker (or an earlier start) fetched the same digest: reuse it if it still verifies.
            try:
                verify_bundle(final, digest, limit)
                return final
            except BundleError:
                shutil.rmtree(final, ignore_errors=True)
        manifest = parse_manifest(raw)
        remaining = limit - len(raw)
        for entry in manifest.files.entries():
            if entry.size > remaining:
                raise BundleError(f"bundle is larger than the {limit}-byte limit (at {entry.path})")
            source.fetch(entry.path, work / entry.path, entry.size)
            remaining -= entry.size
        verify_bundle(work, digest, limit)
        try:
            work.rename(final)
        except OSError:
            if not final.is_dir():
                raise
            shutil.rmtree(work, ignore_errors=True)  # lost the race to a worker that renamed first
        return final
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
