"""The server is told spec.model.format (auto|xgboost|onnx, issue 13) and refuses a bundle it cannot
serve as that format, saying why on /v2/health/ready (reason ModelFormatMismatch); and it reads a
pvc:// URI as the folder where the operator mounts the claim."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from modeldeploy_contract.model_store import ModelFormat
from modeldeploy_contract.server_settings import ServerSettings
from modeldeploy_serving.bundle import MANIFEST_NAME, sha256_bytes
from modeldeploy_serving.errors import BundleError, FormatMismatchError
from modeldeploy_serving.model import load_model
from modeldeploy_serving.pack import pack
from modeldeploy_serving.storage import fetch_bundle, local_folder

from churn_example import load_churn


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Three bundles of one model: XGBoost with its ONNX export (pack's default), XGBoost alone, ONNX."""
    churn = load_churn()
    folder = tmp_path_factory.mktemp("formats")
    x, y = churn.generate(1000, 5)
    churn.train_and_export(x[:800], y[:800], folder, 10, 5)
    churn.write_csv(folder / "train.csv", x[:800], y[:800])
    common: dict[str, Any] = {
        "train_data": folder / "train.csv",
        "validation_data": None,
        "label": "retained",
        "name": "churn",
        "version": "1",
    }
    pack(model=folder / "model.ubj", onnx=folder / "model.onnx", out=folder / "xgb-onnx", **common)
    pack(model=folder / "model.ubj", onnx=None, export_onnx=False, out=folder / "xgb-only", **common)
    pack(model=folder / "model.onnx", onnx=None, out=folder / "onnx", **common)
    return {name: folder / name for name in ("xgb-onnx", "xgb-only", "onnx")}


@pytest.mark.parametrize(
    ("bundle", "told"),
    [
        ("xgb-onnx", "auto"),
        ("xgb-onnx", "xgboost"),
        ("xgb-onnx", "onnx"),  # served through its checked ONNX export: what specs said before auto
        ("xgb-only", "auto"),
        ("xgb-only", "xgboost"),
        ("onnx", "auto"),
        ("onnx", "onnx"),
    ],
)
def test_a_bundle_that_can_be_served_as_the_format_is_loaded(
    bundles: dict[str, Path], bundle: str, told: ModelFormat
) -> None:
    model = load_model(ServerSettings(model_uri=str(bundles[bundle]), model_format=told, drift_enabled=False))
    assert model.version == "1"


@pytest.mark.parametrize(
    ("bundle", "told", "says"),
    [
        ("onnx", "xgboost", "bundle is onnx, spec.model.format says xgboost"),
        (
            "xgb-only",
            "onnx",
            "bundle is xgboost, spec.model.format says onnx (an xgboost bundle serves as onnx only with an "
            "ONNX export)",
        ),
    ],
)
def test_a_bundle_of_another_format_is_refused_before_loading(
    bundles: dict[str, Path], bundle: str, told: ModelFormat, says: str
) -> None:
    digest = sha256_bytes((bundles[bundle] / MANIFEST_NAME).read_bytes())
    with pytest.raises(FormatMismatchError) as refused:
        load_model(ServerSettings(model_uri=str(bundles[bundle]), model_format=told))
    assert refused.value.reason == "ModelFormatMismatch"
    assert str(refused.value).startswith(says)
    assert digest in str(refused.value)
    assert refused.value.refused() == {
        "format": "onnx" if bundle == "onnx" else "xgboost",
        "version": "1",
        "sha256": digest,
        "expectedFormat": told,
    }


def test_health_says_which_format_was_refused(bundles: dict[str, Path]) -> None:
    from modeldeploy_serving.dataplane import DataPlane

    plane = DataPlane(
        ServerSettings(model_uri=str(bundles["onnx"]), model_format="xgboost", model_name="churn")
    )
    asyncio.run(plane._load())
    health = plane.health()
    assert (health["ready"], health["state"], health["reason"]) == (False, "failed", "ModelFormatMismatch")
    assert health["refused"] == {
        "format": "onnx",
        "version": "1",
        "sha256": sha256_bytes((bundles["onnx"] / MANIFEST_NAME).read_bytes()),
        "expectedFormat": "xgboost",
    }
    assert "bundle is onnx, spec.model.format says xgboost" in str(health["error"])
    assert "model" not in health


@pytest.mark.parametrize("bad", ["pickle", "AUTO", "", "onnx\n"])
def test_the_format_setting_is_one_of_three(bad: Any) -> None:
    with pytest.raises(ValueError, match="model_format"):
        ServerSettings(model_format=bad)


# --- pvc:// ---------------------------------------------------------------------------------------


def test_a_pvc_uri_is_the_folder_where_the_claim_is_mounted() -> None:
    assert local_folder("pvc://models/churn/v2") == Path("/mnt/models/models/churn/v2")
    assert local_folder("pvc://models") == Path("/mnt/models/models")
    assert local_folder("pvc://models/churn/manifest.json") == Path("/mnt/models/models/churn")


@pytest.mark.parametrize(
    "uri", ["pvc://models/../../etc", "pvc://Models/x", "pvc://m//x", "pvc://m/x\n", "pvc://"]
)
def test_a_bad_pvc_uri_is_a_bundle_error_not_a_path(uri: str) -> None:
    with pytest.raises(BundleError, match="invalid model URI"):
        local_folder(uri)


def test_an_unmounted_claim_fails_closed_with_a_hint() -> None:
    with pytest.raises(BundleError, match=r"does not exist \(the operator mounts the claim"):
        fetch_bundle("pvc://not-mounted-here/churn", ServerSettings())
