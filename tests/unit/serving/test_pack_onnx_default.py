"""`modeldeploy pack` of an XGBoost model alone: it exports ONNX itself, checks it, says what it chose,
and falls back to an xgboost-only bundle (with the reason) when the export cannot be made or disagrees."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from modeldeploy_serving.bundle import verify_bundle
from modeldeploy_serving.cli import main as cli_main
from modeldeploy_serving.pack import PARITY_TOLERANCE, PackError, PackResult, pack

from churn_example import load_churn


@pytest.fixture(scope="module")
def churn_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """model.ubj (with feature names, as the churn example saves it), train.csv, validation.csv."""
    c = load_churn()
    folder = tmp_path_factory.mktemp("churn-model")
    x, y = c.generate(1500, 5)
    c.train_and_export(x[:1200], y[:1200], folder, 15, 5)
    c.write_csv(folder / "train.csv", x[:1200], y[:1200])
    c.write_csv(folder / "validation.csv", x[1200:], y[1200:])
    return folder


def _pack_cli(folder: Path, out: Path, *extra: str) -> int:
    args = ["pack", "--model", str(folder / "model.ubj"), "--train-data", str(folder / "train.csv"),
            "--validation-data", str(folder / "validation.csv"), "--label", "retained",
            "--name", "churn", "--version", "1", "--out", str(out), *extra]  # fmt: skip
    return cli_main(args)


def _pack(model: Path, out: Path) -> PackResult:
    folder = model.parent
    return pack(model=model, onnx=None, train_data=folder / "train.csv", validation_data=None,
                label="retained", name="c", version="1", out=out)  # fmt: skip


def test_pack_exports_onnx_itself_and_says_so(
    churn_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _pack_cli(churn_model, tmp_path / "b") == 0
    captured = capsys.readouterr()
    assert "runtime: onnxruntime (exported by onnxmltools" in captured.out
    assert "ONNX parity max |diff|" in captured.out
    assert captured.err == ""
    m = verify_bundle(tmp_path / "b").manifest
    assert m.format == "xgboost"
    assert m.files.onnx is not None
    assert m.files.onnx.path == "model.onnx"
    assert m.packed is not None
    assert (m.packed.runtime, m.packed.onnx) == ("onnxruntime", "exported")
    assert m.packed.parity_max_abs_diff is not None
    assert m.packed.parity_max_abs_diff <= PARITY_TOLERANCE
    assert m.packed.parity_rows == 300 * 2 + 3  # validation rows, their holed copies, 3 special rows
    raw = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert raw["packed"]["runtime"] == "onnxruntime"


def test_no_onnx_keeps_the_xgboost_only_bundle(
    churn_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _pack_cli(churn_model, tmp_path / "b", "--no-onnx") == 0
    captured = capsys.readouterr()
    assert "runtime: xgboost (ONNX export turned off (--no-onnx))" in captured.out
    assert captured.err == ""  # asked for: no note
    m = verify_bundle(tmp_path / "b").manifest
    assert m.files.onnx is None
    assert m.packed is not None
    assert (m.packed.runtime, m.packed.onnx) == ("xgboost", "none")
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == [
        "manifest.json",
        "model.ubj",
        "reference_profile.json",
    ]


def test_onnx_and_no_onnx_together_are_refused(
    churn_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        _pack_cli(churn_model, tmp_path / "b", "--no-onnx", "--onnx", str(churn_model / "model.onnx"))
    assert exit_info.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err
    with pytest.raises(PackError, match="contradict"):
        pack(model=churn_model / "model.ubj", onnx=churn_model / "model.onnx", export_onnx=False,
             train_data=churn_model / "train.csv", validation_data=None, label="retained",
             name="c", version="1", out=tmp_path / "c")  # fmt: skip
    assert not (tmp_path / "b").exists()
    assert not (tmp_path / "c").exists()


def test_without_onnxmltools_pack_falls_back_with_a_note(
    churn_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "onnxmltools", None)  # import fails as when it is not installed
    assert _pack_cli(churn_model, tmp_path / "b") == 0
    captured = capsys.readouterr()
    assert "runtime: xgboost (no ONNX export: onnxmltools is not installed" in captured.out
    assert "modeldeploy pack: note: packed for the xgboost runtime" in captured.err
    assert "modeldeploy-serving[export]" in captured.err
    m = verify_bundle(tmp_path / "b").manifest
    assert m.files.onnx is None
    assert m.packed is not None
    assert m.packed.runtime == "xgboost"


def test_a_converter_failure_falls_back(
    churn_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import onnxmltools

    def refuse(*_: object, **__: object) -> None:
        raise RuntimeError("Unable to interpret 'dart'")

    monkeypatch.setattr(onnxmltools, "convert_xgboost", refuse)
    result = _pack(churn_model / "model.ubj", tmp_path / "b")
    assert result.choice is not None
    assert result.choice.runtime == "xgboost"
    assert "onnxmltools cannot convert it (RuntimeError: Unable to interpret 'dart')" in result.choice.reason
    assert verify_bundle(tmp_path / "b").manifest.files.onnx is None


def test_an_export_that_disagrees_is_left_out(
    churn_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A converter that mis-maps the model (here: it returns another model's export) never gets served."""
    import modeldeploy_serving.pack as pack_module

    c = load_churn()
    x, y = c.generate(1500, 5)
    c.train_and_export(x[:1200], 1 - y[:1200], tmp_path / "other", 15, 5)
    wrong = (tmp_path / "other" / "model.onnx").read_bytes()
    monkeypatch.setattr(pack_module, "export_xgboost_onnx", lambda *_: (wrong, "onnxmltools 0.0"))
    result = _pack(churn_model / "model.ubj", tmp_path / "b")
    assert result.choice is not None
    assert result.choice.runtime == "xgboost"
    assert "the ONNX export by onnxmltools 0.0 disagrees with the XGBoost model" in result.choice.reason
    assert "rows with missing values; left out" in result.choice.reason
    assert result.choice.parity_rows == 240 * 2 + 3  # the last fifth of the training rows
    assert result.choice.parity_max_abs_diff is not None
    assert result.choice.parity_max_abs_diff > PARITY_TOLERANCE
    m = verify_bundle(tmp_path / "b").manifest
    assert m.files.onnx is None
    assert m.packed == result.choice


def test_an_onnx_model_records_its_runtime(churn_model: Path, tmp_path: Path) -> None:
    result = _pack(churn_model / "model.onnx", tmp_path / "b")
    assert result.choice is not None
    assert (result.choice.runtime, result.choice.onnx) == ("onnxruntime", "model")
