"""The golden set in a bundle and the pure preflight comparison."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from modeldeploy_contract.preflight import (
    GOLDEN_NAME,
    GoldenSet,
    PreflightThresholds,
    compare,
    outputs_from_v2,
    score_psi,
    v2_request,
)
from modeldeploy_serving.bundle import verify_bundle
from modeldeploy_serving.cli import main as cli_main
from modeldeploy_serving.errors import BundleError
from modeldeploy_serving.pack import PackError, pack
from modeldeploy_serving.replay import PreflightError, load_golden

from churn_example import load_churn

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A good model, one trained on flipped labels (a worse one), and a labelled golden CSV."""
    c = load_churn()
    folder = tmp_path_factory.mktemp("trained")
    x, y = c.generate(2400, 5)
    c.train_and_export(x[:1600], y[:1600], folder, 20, 5)
    c.write_csv(folder / "train.csv", x[:1600], y[:1600])
    c.write_csv(folder / "validation.csv", x[1600:2000], y[1600:2000])
    c.write_csv(folder / "golden.csv", x[2000:], y[2000:])
    c.write_csv(folder / "golden-unlabelled.csv", x[2000:])
    noisy = np.where(np.random.default_rng(1).random(1600) < 0.4, 1 - y[:1600], y[:1600])
    c.train_and_export(x[:1600], noisy, folder / "worse", 20, 6)
    c.train_and_export(x[:1600], y[:1600], folder / "other", 20, 99)  # same data, another seed
    return folder


def _pack(trained: Path, out: Path, model: Path, golden: str = "golden.csv") -> Path:
    pack(
        model=model,
        onnx=model.with_suffix(".onnx"),
        train_data=trained / "train.csv",
        validation_data=trained / "validation.csv",
        label="retained",
        name="churn",
        version="1",
        out=out,
        golden_data=trained / golden,
    )
    return out


@pytest.fixture(scope="module")
def bundles(trained: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, GoldenSet]:
    root = tmp_path_factory.mktemp("bundles")
    found = {}
    for name, model in (
        ("good", trained / "model.ubj"),
        ("worse", trained / "worse" / "model.ubj"),
        ("other", trained / "other" / "model.ubj"),
    ):
        found[name] = load_golden(verify_bundle(_pack(trained, root / name, model)))
    return found


def test_pack_stores_inputs_outputs_and_labels_under_the_manifest(trained: Path, tmp_path: Path) -> None:
    out = _pack(trained, tmp_path / "b", trained / "model.ubj")
    verified = verify_bundle(out)
    entry = verified.manifest.files.golden
    assert entry is not None
    assert entry.path == GOLDEN_NAME
    golden = load_golden(verified)
    assert len(golden.inputs) == 400
    assert golden.labels is not None
    assert set(golden.labels) == {0.0, 1.0}
    assert golden.output == "probabilities"
    assert golden.classes == [0, 1]
    assert all(abs(sum(row) - 1) < 1e-5 for row in golden.outputs)
    assert any(v is None for row in golden.inputs for v in row)  # missing values kept as missing

    # Tampering: the golden file edited after packing no longer matches the manifest's digest.
    # (same size, one recorded output changed: only the sha256 can tell)
    raw = (out / GOLDEN_NAME).read_bytes()
    at = raw.index(b'"outputs":[[0.') + len(b'"outputs":[[0.')
    (out / GOLDEN_NAME).write_bytes(raw[:at] + (b"1" if raw[at : at + 1] != b"1" else b"2") + raw[at + 1 :])
    with pytest.raises(BundleError, match=f"sha256 mismatch for {GOLDEN_NAME}"):
        verify_bundle(out)
    code = cli_main(["preflight", "--bundle", str(out), "--url", "http://127.0.0.1:9"])
    assert code == 2


def test_golden_set_without_labels_and_bad_golden_files(trained: Path, tmp_path: Path) -> None:
    out = _pack(trained, tmp_path / "b", trained / "model.ubj", golden="golden-unlabelled.csv")
    golden = load_golden(verify_bundle(out))
    assert golden.labels is None
    report = compare(golden, golden.outputs)
    assert report.verdict == "Passed"
    assert [c.passed for c in report.checks if c.name == "labels"] == [None]
    assert (
        compare(golden, golden.outputs, thresholds=PreflightThresholds(require_labels=True)).verdict
        == "Failed"
    )

    (tmp_path / "narrow.csv").write_text("number_of_projects\n1\n")
    with pytest.raises(PackError, match="lacks the feature columns"):
        _pack(trained, tmp_path / "c", trained / "model.ubj", golden=str(tmp_path / "narrow.csv"))
    bad = (trained / "golden.csv").read_text().splitlines()
    bad[1] = bad[1].rsplit(",", 1)[0] + ",7"
    (tmp_path / "badlabel.csv").write_text("\n".join(bad) + "\n")
    with pytest.raises(PackError, match=r"labels \[7.0\] are not classes"):
        _pack(trained, tmp_path / "d", trained / "model.ubj", golden=str(tmp_path / "badlabel.csv"))


def test_a_bundle_without_golden_set_is_refused_by_preflight(trained: Path, tmp_path: Path) -> None:
    pack(
        model=trained / "model.ubj",
        onnx=None,
        train_data=trained / "train.csv",
        validation_data=None,
        label="retained",
        name="churn",
        version="1",
        out=tmp_path / "b",
    )
    with pytest.raises(PreflightError, match="no golden set"):
        load_golden(verify_bundle(tmp_path / "b"))


def test_identical_model_passes(bundles: dict[str, GoldenSet]) -> None:
    golden = bundles["good"]
    report = compare(golden, golden.outputs, golden.outputs)
    assert report.verdict == "Passed", report.to_text()
    assert report.max_abs_diff == 0
    assert report.score_psi == pytest.approx(0)
    assert report.new == report.stable == report.recorded
    assert report.new is not None
    assert report.new.auc is not None
    assert report.new.auc > 0.7


def test_a_swapped_model_is_caught_by_the_recorded_outputs(bundles: dict[str, GoldenSet]) -> None:
    """A different model, validly packed (its own bundle verifies), served in place of the packed one:
    the digests cannot tell, the recorded outputs do — even though its quality is just as good."""
    golden, impostor = bundles["good"], bundles["other"]
    report = compare(golden, impostor.outputs, golden.outputs)
    assert report.verdict == "Failed"
    assert [c.name for c in report.failures] == ["outputs-match-bundle"]
    assert report.max_abs_diff > 1e-3
    assert "not the packed one" in report.to_text()


def test_a_worse_models_auc_drop_is_caught(bundles: dict[str, GoldenSet]) -> None:
    good, worse = bundles["good"], bundles["worse"]
    # The worse model's own bundle: it is served faithfully, but it is worse than the stable.
    report = compare(worse, worse.outputs, good.outputs)
    assert report.verdict == "Failed", report.to_text()
    assert report.new is not None
    assert report.stable is not None
    assert report.new.auc is not None
    assert report.stable.auc is not None
    assert report.stable.auc - report.new.auc > 0.01
    failed = {c.name for c in report.failures}
    assert "auc-drop" in failed
    assert "outputs-match-bundle" not in failed
    # Thresholds loose enough let it through; the report is the same JSON either way.
    loose = PreflightThresholds(
        max_auc_drop=1, max_accuracy_drop=1, max_log_loss_increase=10, max_score_psi=None
    )
    assert compare(worse, worse.outputs, good.outputs, loose).verdict == "Passed"
    assert json.loads(report.model_dump_json())["verdict"] == "Failed"


def test_thresholds_are_frozen_and_strict() -> None:
    t = PreflightThresholds()
    with pytest.raises(ValueError, match="frozen"):
        t.max_auc_drop = 0.5
    with pytest.raises(ValueError, match="Extra inputs"):
        PreflightThresholds.model_validate({"max_auc_dorp": 0.1})


def test_psi_of_identical_scores_is_zero_and_of_shifted_ones_large() -> None:
    ref = [i / 1000 for i in range(1000)]
    assert score_psi(ref, ref) == pytest.approx(0)
    assert (score_psi(ref, [min(v + 0.3, 1.0) for v in ref]) or 0) > 0.25
    assert score_psi([], ref) is None


def test_v2_helpers_round_trip() -> None:
    body = v2_request([[1.0, None], [3.0, 4.0]])
    assert body["inputs"][0]["shape"] == [2, 2]
    answer = {"outputs": [{"name": "probabilities", "shape": [2, 2], "data": [0.1, 0.9, 0.8, 0.2]}]}
    assert outputs_from_v2(answer, "probabilities", 2) == [[0.1, 0.9], [0.8, 0.2]]
    with pytest.raises(ValueError, match="no output"):
        outputs_from_v2(answer, "predictions", 2)
    with pytest.raises(ValueError, match="3 values for 2 rows"):
        outputs_from_v2({"outputs": [{"name": "p", "data": [1, 2, 3]}]}, "p", 2)


def test_compare_refuses_answers_of_the_wrong_shape(bundles: dict[str, GoldenSet]) -> None:
    golden = bundles["good"]
    with pytest.raises(ValueError, match="shape"):
        compare(golden, golden.outputs[:-1])
