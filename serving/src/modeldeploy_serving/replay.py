"""`modeldeploy preflight`: replay a bundle's golden set against live model servers over V2.

The bundle is fetched and verified like the server does (every file's sha256, so a golden set edited
after packing is refused); each replay request carries the REPLAY_HEADER, so servers answer it without
counting it as live traffic. The judging is `modeldeploy_contract.preflight.compare()`.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import httpx
from pydantic import ValidationError

from modeldeploy_contract.preflight import (
    REPLAY_BATCH_ROWS,
    REPLAY_HEADER,
    GoldenSet,
    PreflightReport,
    PreflightThresholds,
    compare,
    outputs_from_v2,
    v2_request,
)
from modeldeploy_contract.server_settings import ServerSettings
from modeldeploy_serving.bundle import VerifiedBundle, verify_bundle
from modeldeploy_serving.errors import BundleError
from modeldeploy_serving.storage import fetch_bundle


class PreflightError(Exception):
    """Preflight could not run (bundle, golden set, thresholds or a server's answers)."""


def load_golden(bundle: VerifiedBundle) -> GoldenSet:
    entry = bundle.manifest.files.golden
    if entry is None:
        raise PreflightError(
            f"bundle {bundle.manifest.name} {bundle.manifest.version} has no golden set "
            "(pack it with --golden-data)"
        )
    try:
        golden = GoldenSet.model_validate_json(bundle.blob(entry))
    except ValidationError as exc:
        raise PreflightError(f"invalid golden set: {exc}") from exc
    if golden.features != bundle.manifest.feature_names:
        raise PreflightError("the golden set's features differ from the manifest's inputs")
    return golden


def replay(
    client: httpx.Client, url: str, model: str, golden: GoldenSet, batch_rows: int = REPLAY_BATCH_ROWS
) -> list[list[float]]:
    """The server's `golden.output` for every golden row, in order."""
    endpoint = f"{url.rstrip('/')}/v2/models/{model}/infer"
    outputs: list[list[float]] = []
    for start in range(0, len(golden.inputs), batch_rows):
        rows = golden.inputs[start : start + batch_rows]
        try:
            response = client.post(endpoint, json=v2_request(rows), headers={REPLAY_HEADER: "1"})
        except httpx.HTTPError as exc:
            raise PreflightError(f"{endpoint}: {type(exc).__name__}: {exc}") from exc
        if response.status_code != 200:
            raise PreflightError(f"{endpoint} answered {response.status_code}: {response.text[:500]}")
        try:
            outputs += outputs_from_v2(response.json(), golden.output, len(rows))
        except ValueError as exc:
            raise PreflightError(f"{endpoint}: {exc}") from exc
    return outputs


def run_preflight(
    *,
    bundle: str,
    url: str,
    stable_url: str | None = None,
    model: str | None = None,
    stable_model: str | None = None,
    bundle_sha256: str | None = None,
    thresholds_file: Path | None = None,
    thresholds: PreflightThresholds | None = None,
    timeout: float = 30.0,
) -> PreflightReport:
    if thresholds_file is not None:
        try:
            thresholds = PreflightThresholds.model_validate_json(thresholds_file.read_bytes())
        except (OSError, ValidationError) as exc:
            raise PreflightError(f"thresholds {thresholds_file}: {exc}") from exc
    with tempfile.TemporaryDirectory(prefix="modeldeploy-preflight-") as cache:
        try:
            settings = ServerSettings(model_uri=bundle, model_sha256=bundle_sha256, model_cache_dir=cache)
            verified = verify_bundle(
                fetch_bundle(bundle, settings), bundle_sha256, settings.max_artifact_bytes
            )
        except BundleError as exc:
            raise PreflightError(f"bundle {bundle}: {exc}") from exc
    golden = load_golden(verified)
    name = model or verified.manifest.name
    with httpx.Client(timeout=timeout) as client:
        new = replay(client, url, name, golden)
        stable = replay(client, stable_url, stable_model or name, golden) if stable_url else None
    try:
        return compare(golden, new, stable, thresholds)
    except ValueError as exc:
        raise PreflightError(str(exc)) from exc
