"""Bundles, pack, storage URIs, ONNX external data, the micro-batcher and the churn example."""

from __future__ import annotations

import asyncio
import functools
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from modeldeploy_contract.server_settings import ServerSettings
from modeldeploy_serving.batching import MicroBatcher
from modeldeploy_serving.bundle import MANIFEST_NAME, sha256_file, verify_bundle
from modeldeploy_serving.cli import main as cli_main
from modeldeploy_serving.errors import BundleError
from modeldeploy_serving.model import Prediction, load_model
from modeldeploy_serving.pack import PackError, pack
from modeldeploy_serving.rows import ListRows, Rows, row_count, stack
from modeldeploy_serving.runtimes.onnx import reject_external_data
from modeldeploy_serving.storage import fetch_bundle, local_folder

from churn_example import load_churn

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """model.ubj, model.onnx, train.csv, validation.csv, and model3.onnx from other labels."""
    c = load_churn()
    folder = tmp_path_factory.mktemp("trained")
    x, y = c.generate(2000, 3)
    c.train_and_export(x[:1600], y[:1600], folder, 20, 3)
    c.write_csv(folder / "train.csv", x[:1600], y[:1600])
    c.write_csv(folder / "validation.csv", x[1600:], y[1600:])
    other = folder / "other"
    c.train_and_export(x[:1600], 1 - y[:1600], other, 20, 3)
    return folder


@pytest.fixture
def bundle(trained: Path, tmp_path: Path) -> Path:
    out = tmp_path / "bundle"
    pack(
        model=trained / "model.ubj",
        onnx=trained / "model.onnx",
        train_data=trained / "train.csv",
        validation_data=trained / "validation.csv",
        label="retained",
        name="churn",
        version="1.0",
        out=out,
    )
    return out


def test_pack_writes_a_verifiable_bundle(bundle: Path) -> None:
    verified = verify_bundle(bundle)
    m = verified.manifest
    assert (m.name, m.version, m.format, m.task, m.classes) == (
        "churn",
        "1.0",
        "xgboost",
        "classification",
        [0, 1],
    )
    assert m.feature_names == load_churn().FEATURES
    assert m.files.onnx is not None
    assert verified.digest == sha256_file(bundle / MANIFEST_NAME)
    profile = json.loads((bundle / "reference_profile.json").read_text())
    assert profile["score_source"] == "validation"
    mobile = next(f for f in profile["features"] if f["name"] == "mobile_usage")
    assert 0.15 < mobile["missing_ratio"] < 0.35
    assert sum(profile["score"]["counts"]) == 400
    assert sorted(p.name for p in bundle.iterdir()) == [
        "manifest.json",
        "model.onnx",
        "model.ubj",
        "reference_profile.json",
    ]


def test_pack_refuses_an_onnx_export_that_disagrees(trained: Path, tmp_path: Path) -> None:
    with pytest.raises(PackError, match="disagrees"):
        pack(
            model=trained / "model.ubj",
            onnx=trained / "other" / "model.onnx",
            train_data=trained / "train.csv",
            validation_data=None,
            label="retained",
            name="churn",
            version="1",
            out=tmp_path / "bad",
        )
    assert not (tmp_path / "bad").exists()


def test_pack_checks_columns_and_label(trained: Path, tmp_path: Path) -> None:
    with pytest.raises(PackError, match="label column 'churned'"):
        pack(model=trained / "model.ubj", onnx=None, train_data=trained / "train.csv", validation_data=None,
             label="churned", name="c", version="1", out=tmp_path / "x")  # fmt: skip
    with pytest.raises(PackError, match="differ from the data's columns"):
        # Without --label the label column is taken as a feature: refused by name.
        pack(model=trained / "model.ubj", onnx=None, train_data=trained / "train.csv", validation_data=None,
             label=None, name="c", version="1", out=tmp_path / "y")  # fmt: skip


def test_pack_cli_with_parquet(trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    for name in ("train", "validation"):
        table = pacsv.read_csv(trained / f"{name}.csv")
        pq.write_table(
            table.cast(pa.schema([pa.field(f.name, pa.float64()) for f in table.schema])),
            tmp_path / f"{name}.parquet",
        )
    args = ["pack", "--model", str(trained / "model.ubj"), "--onnx", str(trained / "model.onnx"),
            "--train-data", str(tmp_path / "train.parquet"),
            "--validation-data", str(tmp_path / "validation.parquet"),
            "--label", "retained", "--name", "churn", "--version", "2",
            "--out", str(tmp_path / "b")]  # fmt: skip
    assert cli_main(args) == 0
    assert "ONNX parity max |diff|" in capsys.readouterr().out
    assert verify_bundle(tmp_path / "b").manifest.version == "2"
    assert cli_main(args) == 2  # the folder exists now
    assert "exists" in capsys.readouterr().err
    assert cli_main([*args, "--force"]) == 0


def test_verify_refuses_changed_and_oversized_bundles(bundle: Path) -> None:
    with pytest.raises(BundleError, match="larger than"):
        verify_bundle(bundle, max_bytes=1000)
    (bundle / "model.ubj").write_bytes((bundle / "model.ubj").read_bytes()[:-1])
    with pytest.raises(BundleError, match="bytes, the manifest says"):
        verify_bundle(bundle)


def test_manifest_paths_cannot_escape_the_bundle(bundle: Path) -> None:
    manifest = json.loads((bundle / MANIFEST_NAME).read_text())
    manifest["files"]["model"]["path"] = "../model.ubj"
    (bundle / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="plain file name"):
        verify_bundle(bundle)


def test_load_model_warm_up_and_expected_digest(bundle: Path) -> None:
    settings = ServerSettings(model_uri=str(bundle))
    model = load_model(settings)
    assert model.runtime.name == "onnxruntime+xgboost"
    pred = model.predict(np.full((3, 14), np.nan, dtype=np.float32))
    assert pred.outputs["probabilities"].shape == (3, 2)
    with pytest.raises(BundleError, match="manifest sha256"):
        load_model(ServerSettings(model_uri=str(bundle), model_sha256="f" * 64))


def test_local_uris(tmp_path: Path) -> None:
    assert local_folder(str(tmp_path)) == tmp_path
    assert local_folder(tmp_path.as_uri()) == tmp_path
    assert local_folder((tmp_path / MANIFEST_NAME).as_uri()) == tmp_path
    assert local_folder("s3://bucket/x") is None
    with pytest.raises(BundleError, match="with a host"):
        local_folder("file://server/share/model")
    with pytest.raises(BundleError, match="unsupported model URI scheme 'ftp'"):
        fetch_bundle("ftp://host/x", ServerSettings())
    with pytest.raises(BundleError, match="no model URI"):
        fetch_bundle("", ServerSettings())


def test_onnx_with_external_data_is_refused(tmp_path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.ones((1, 3), dtype=np.float32), name="w")
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "w"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 3])],
        [weight],
    )
    model = helper.make_model(graph)
    reject_external_data(model.SerializeToString())  # inline data is fine
    onnx.save_model(
        model, str(tmp_path / "m.onnx"), save_as_external_data=True, size_threshold=0, location="w.bin"
    )
    with pytest.raises(BundleError, match="external data"):
        reject_external_data((tmp_path / "m.onnx").read_bytes())


def test_micro_batcher_merges_and_splits() -> None:
    calls: list[int] = []

    def predict(x: np.ndarray) -> Prediction:
        calls.append(len(x))
        return Prediction({"label": x[:, 0].astype(np.int64)}, x[:, 0])

    async def run() -> list[Prediction]:
        batcher = MicroBatcher(predict, max_rows=8, max_wait_seconds=0)
        rows = [np.full((n, 2), i, dtype=np.float32) for i, n in enumerate([1, 2, 3, 1, 4])]
        return await asyncio.gather(*(batcher.submit(r) for r in rows))

    results = asyncio.run(run())
    assert [r.outputs["label"].tolist() for r in results] == [[0], [1, 1], [2, 2, 2], [3], [4, 4, 4, 4]]
    assert calls == [7, 4]  # the 5th request would overflow 8 rows: it starts the next batch


def test_micro_batcher_converts_json_lists_and_arrays_together() -> None:
    seen: list[np.ndarray] = []

    def predict(x: np.ndarray) -> Prediction:
        seen.append(x)
        return Prediction({"label": x[:, 0].astype(np.int64)}, x[:, 0])

    async def run() -> list[Prediction]:
        batcher = MicroBatcher(predict, max_rows=64, max_wait_seconds=0)
        parts: list[Rows] = [
            ListRows([1, None], 1, 2),
            ListRows([2.5, 3, 4, 10**30], 2, 2),
            np.full((1, 2), 7, np.float32),
        ]
        return await asyncio.gather(*(batcher.submit(p) for p in parts))

    results = asyncio.run(run())
    assert len(seen) == 1
    assert seen[0].dtype == np.float32
    np.testing.assert_array_equal(seen[0], np.array([[1, np.nan], [2.5, 3], [4, 1e30], [7, 7]], np.float32))
    assert [r.scores.tolist() for r in results] == [[1.0], [2.5, 4.0], [7.0]]
    only_lists = stack([ListRows([1, 2], 1, 2), ListRows([3, None], 1, 2)])
    np.testing.assert_array_equal(only_lists, np.array([[1, 2], [3, np.nan]], np.float32))
    assert row_count(ListRows([0] * 6, 3, 2)) == 3


def test_xgboost_runtime_calls_the_c_entry_point_with_identical_answers(bundle: Path) -> None:
    from modeldeploy_serving.runtimes.xgboost import XGBoostRuntime

    runtime = XGBoostRuntime((bundle / "model.ubj").read_bytes(), 14, "classification", threads=1)
    assert runtime._predict is not runtime._inplace_predict  # the probe accepted the C call
    x = np.random.default_rng(3).normal(size=(300, 14)).astype(np.float32) * 20
    x[::5, 2] = np.nan
    misaligned = np.frombuffer(b"\0" + x[:9].tobytes(), dtype=np.float32, offset=1).reshape(9, 14)
    assert not misaligned.flags.aligned  # as a tensor of a binary request body can be
    np.testing.assert_array_equal(runtime.predict(misaligned), runtime.predict(x[:9]))
    for rows in (1, 7, 300):
        np.testing.assert_array_equal(
            runtime.predict(x[:rows]),
            np.stack([1 - runtime._inplace_predict(x[:rows]), runtime._inplace_predict(x[:rows])], axis=1),
        )


def test_micro_batcher_propagates_model_errors() -> None:
    def predict(x: np.ndarray) -> Prediction:
        raise RuntimeError("boom")

    async def run() -> None:
        batcher = MicroBatcher(predict, max_rows=8, max_wait_seconds=0.001)
        with pytest.raises(RuntimeError, match="boom"):
            await asyncio.gather(
                batcher.submit(np.zeros((1, 2), np.float32)), batcher.submit(np.zeros((1, 2), np.float32))
            )

    asyncio.run(run())


def test_settings_round_trip_through_env() -> None:
    settings = ServerSettings(model_uri="s3://b/m", port=9000, batching_enabled=False)
    env = settings.to_env()
    assert env == {
        "MODELDEPLOY_SERVER_MODEL_URI": "s3://b/m",
        "MODELDEPLOY_SERVER_PORT": "9000",
        "MODELDEPLOY_SERVER_BATCHING_ENABLED": "false",
    }
    full = settings.to_env(include_defaults=True)
    assert full["MODELDEPLOY_SERVER_DRIFT_WINDOW_ROWS"] == "1000"
    assert "MODELDEPLOY_SERVER_MODEL_SHA256" not in full


@pytest.mark.slow
def test_churn_example_script_makes_three_bundles(tmp_path: Path) -> None:
    out = tmp_path / "churn"
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "examples" / "churn" / "make_models.py"),
            "--out",
            str(out),
            "--rows",
            "4000",
            "--trees",
            "40",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    digests = set()
    for version in ("v1", "v2", "v3"):
        verified = verify_bundle(out / version)
        assert verified.manifest.version == version
        digests.add(verified.digest)
    assert len(digests) == 3
    assert (out / "data" / "traffic_shifted.csv").is_file()
    # Deterministic: the same seed gives a byte-identical model (tests/support/built_cache.py reuses
    # trained bundles on that ground). v1's model trained again alone, not the whole script: the
    # script twice was this test's cost (318 s in a contended run, about 48 s of CPU).
    churn = load_churn()
    x, y = churn.generate(4000, 7)
    churn.train_and_export(x[:3200], y[:3200], tmp_path / "again", 40, 7)
    assert sha256_file(tmp_path / "again" / "model.ubj") == sha256_file(out / "v1" / "model.ubj")


def test_readiness_needs_every_live_worker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    from modeldeploy_serving import workers

    assert workers.all_ready(2)  # no shared folder: one worker, its own state decides
    monkeypatch.setenv(workers.WORKER_STATE_DIR, str(tmp_path))
    workers.mark("ready")
    assert workers.all_ready(1)
    assert not workers.all_ready(2)
    (tmp_path / "999999999.ready").touch()  # a dead worker's leftover does not count
    assert not workers.all_ready(2)
    assert (tmp_path / f"{os.getpid()}.ready").exists()


def test_a_bundle_of_another_version_than_the_server_was_told_is_refused(bundle: Path) -> None:
    """One truth for a model's version (issue 12): MODELDEPLOY_SERVER_MODEL_VERSION (the spec's
    model.version) must be the manifest's, or the server refuses the bundle before loading it."""
    from modeldeploy_serving.bundle import sha256_bytes
    from modeldeploy_serving.errors import VersionMismatchError

    assert load_model(ServerSettings(model_uri=str(bundle), model_version="1.0")).version == "1.0"
    digest = sha256_bytes((bundle / MANIFEST_NAME).read_bytes())
    with pytest.raises(VersionMismatchError) as refused:
        load_model(ServerSettings(model_uri=str(bundle), model_version="2.0"))
    assert refused.value.reason == "ModelVersionMismatch"
    assert (refused.value.expected, refused.value.found, refused.value.digest) == ("2.0", "1.0", digest)
    assert "'1.0'" in str(refused.value)
    assert "'2.0'" in str(refused.value)
    # One leading "v" is the only difference forgiven (the churn example packs "v1" and its specs say
    # "1"); whitespace and other spellings of a version are not.
    # The server then names the version as it was told (the spec's spelling), as the router's
    # header and the joiner's arms do: one spelling of one arm's version everywhere.
    assert load_model(ServerSettings(model_uri=str(bundle), model_version="v1.0")).version == "v1.0"
    assert load_model(ServerSettings(model_uri=str(bundle))).version == "1.0"  # told none: the manifest's
    for other in ("1.0 ", "1.0.0", "1", "version1.0"):
        with pytest.raises(VersionMismatchError):
            load_model(ServerSettings(model_uri=str(bundle), model_version=other))


def test_same_version_forgives_one_leading_v_only() -> None:
    import doctest

    from modeldeploy_serving import model

    assert doctest.testmod(model).failed == 0
    assert model.same_version("v1", "1")
    assert model.same_version("1", "V1")
    assert not model.same_version("vv1", "1")
    assert not model.same_version("v", "")
    assert not model.same_version("1", "l")


def test_health_says_what_was_loaded_or_why_not(bundle: Path) -> None:
    from modeldeploy_serving.bundle import sha256_bytes
    from modeldeploy_serving.dataplane import DataPlane

    digest = sha256_bytes((bundle / MANIFEST_NAME).read_bytes())

    async def loaded(settings: ServerSettings) -> dict[str, object]:
        plane = DataPlane(settings)
        await plane._load()
        return plane.health()

    settings = functools.partial(
        ServerSettings, model_uri=str(bundle), drift_enabled=False, model_name="churn"
    )
    ok = asyncio.run(loaded(settings(model_version="1.0")))
    assert ok["state"] == "ready"
    assert ok["model"] == {"name": "churn", "version": "1.0", "sha256": digest}
    assert "reason" not in ok
    refused = asyncio.run(loaded(settings(model_version="2.0")))
    assert (refused["ready"], refused["state"], refused["reason"]) == (
        False,
        "failed",
        "ModelVersionMismatch",
    )
    assert refused["refused"] == {"version": "1.0", "sha256": digest, "expectedVersion": "2.0"}
    assert "model" not in refused
    broken = asyncio.run(loaded(settings(model_sha256="0" * 64)))
    assert broken["reason"] == "ModelLoadFailed"
    assert "refused" not in broken
