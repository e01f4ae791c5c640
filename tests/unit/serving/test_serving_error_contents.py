"""Load and validation errors never echo a bundle file's contents (they reach /v2/health/ready)."""

from __future__ import annotations

import pytest

from modeldeploy_serving.bundle import parse_manifest
from modeldeploy_serving.errors import BundleError, validation_summary

MARKER = "PRIVATE-CONTENT-7731"


def test_an_unloadable_xgboost_model_is_not_quoted() -> None:
    from modeldeploy_serving.runtimes.xgboost import load_booster

    with pytest.raises(BundleError) as failed:
        load_booster(('{"learner": "' + MARKER + '", broken').encode())
    assert MARKER not in str(failed.value)
    assert "xgboost cannot load the model" in str(failed.value)


def test_an_undecodable_onnx_model_is_not_quoted() -> None:
    from modeldeploy_serving.runtimes.onnx import reject_external_data

    with pytest.raises(BundleError) as failed:
        reject_external_data(b"\x0a\xff\xff\xff\xff" + MARKER.encode() * 10)
    assert MARKER not in str(failed.value)
    assert "not a valid ONNX model" in str(failed.value)


def test_validation_summary_names_fields_not_values() -> None:
    with pytest.raises(BundleError) as invalid:
        parse_manifest(('{"format": "onnx", "name": "' + MARKER + '", "files": 7, "inputs": 3}').encode())
    assert MARKER not in str(invalid.value)
    assert "files" in str(invalid.value)
    assert validation_summary(ValueError("x")) == "ValueError"
