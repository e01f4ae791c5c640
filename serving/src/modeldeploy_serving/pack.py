"""`modeldeploy pack`: a trained model plus data in, a verified bundle with a reference profile out.

When both an XGBoost model and its ONNX export are given, the export is served (it is much cheaper
per call), so pack refuses to write the bundle unless the two agree within PARITY_TOLERANCE on
held-out rows, including rows with missing values (converters have mis-routed missing values before).

Given an XGBoost model alone, pack makes the ONNX export itself (onnxmltools, the `export` extra)
and puts it in the bundle under the same parity check: a single-row V2 request through onnxruntime
reached 60-78% of the plain-ASGI ceiling against 35-45% through xgboost (issue 13, same machine and
run). When the export cannot be made or disagrees, the bundle is packed for the xgboost runtime and
pack says why; `export_onnx=False` (`--no-onnx`) asks for that directly.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from modeldeploy_contract.preflight import DEFAULT_TOLERANCE, GOLDEN_NAME, GoldenSet
from modeldeploy_serving.bundle import (
    MANIFEST_NAME,
    BundleFiles,
    FeatureSpec,
    FileEntry,
    Manifest,
    OutputSpec,
    PackChoice,
    sha256_bytes,
)
from modeldeploy_serving.drift.profile import PROFILE_NAME, build_profile
from modeldeploy_serving.errors import BundleError
from modeldeploy_serving.model import outputs_for, to_prediction
from modeldeploy_serving.runtimes import Runtime
from modeldeploy_serving.tabular import read_table

PARITY_TOLERANCE = 1e-5
PARITY_ROWS = 500
GOLDEN_MAX_ROWS = 20_000


class PackError(Exception):
    pass


@dataclass(frozen=True)
class PackResult:
    out: Path
    digest: str
    parity_max_abs_diff: float | None
    parity_rows: int
    golden_rows: int = 0
    golden_labelled: bool = False
    choice: PackChoice | None = None


def _features_and_matrix(path: Path, label: str | None) -> tuple[list[str], npt.NDArray[np.float64]]:
    columns, data = read_table(path)
    if label is not None:
        if label not in columns:
            raise PackError(f"label column {label!r} is not in {path}")
        keep = [i for i, c in enumerate(columns) if c != label]
        return [columns[i] for i in keep], data[:, keep]
    return columns, data


def parity_rows(rows: npt.NDArray[np.float64], seed: int = 0) -> npt.NDArray[np.float32]:
    """Held-out rows plus copies with ~30% of values blanked, an all-missing row and alternating ones."""
    rng = np.random.default_rng(seed)
    base = rows[:PARITY_ROWS].astype(np.float32)
    holed = base.copy()
    holed[rng.random(holed.shape) < 0.3] = np.nan
    n_features = base.shape[1]
    special = np.full((3, n_features), np.nan, dtype=np.float32)
    special[1, ::2] = base[0, ::2]
    special[2, 1::2] = base[0, 1::2]
    return np.concatenate([base, holed, special])


def _xgboost_runtime(model_bytes: bytes, features: list[str]) -> tuple[Runtime, str, list[int]]:
    from modeldeploy_serving.runtimes.xgboost import XGBoostRuntime, load_booster, objective_of, task_of

    booster: Any = load_booster(model_bytes)
    names = booster.feature_names
    if names is not None and list(names) != features:
        raise PackError(f"the model's features {list(names)} differ from the data's columns {features}")
    objective = objective_of(booster)
    task = task_of(objective)
    classes: list[int] = []
    if task == "classification":
        config = json.loads(booster.save_config())
        n_classes = int(config["learner"]["learner_model_param"].get("num_class", "0")) or 2
        classes = list(range(n_classes))
    try:
        return XGBoostRuntime(model_bytes, len(features), task), task, classes
    except BundleError as exc:
        raise PackError(str(exc)) from exc


def _onnx_runtime(model_bytes: bytes, n_features: int, task: str | None) -> tuple[Runtime, str]:
    from modeldeploy_serving.runtimes.onnx import OnnxRuntime

    try:
        task = task or OnnxRuntime.task_of(model_bytes)
        return OnnxRuntime(model_bytes, n_features, task), task
    except BundleError as exc:
        raise PackError(str(exc)) from exc


def _entry(folder: Path, name: str, data: bytes) -> FileEntry:
    (folder / name).write_bytes(data)
    return FileEntry(path=name, sha256=sha256_bytes(data), size=len(data))


@dataclass(frozen=True)
class _Data:
    features: list[str]
    train: npt.NDArray[np.float64]
    validation: npt.NDArray[np.float64]
    held_out: npt.NDArray[np.float64]
    score_source: Literal["validation", "training"]


@dataclass(frozen=True)
class _Models:
    format: Literal["xgboost", "onnx"]
    task: str
    classes: list[int]
    served: Runtime
    onnx_bytes: bytes | None
    parity: float | None
    parity_rows: int
    golden_rows: int = 0
    golden_labelled: bool = False
    choice: PackChoice | None = None


def _read_data(train_data: Path, validation_data: Path | None, label: str | None) -> _Data:
    features, train = _features_and_matrix(train_data, label)
    if validation_data is None:
        # No validation set: score deciles come from training rows, parity from its last fifth.
        return _Data(features, train, train, train[-max(len(train) // 5, 1) :], "training")
    val_features, validation = _features_and_matrix(validation_data, label)
    if val_features != features:
        raise PackError(f"validation columns {val_features} differ from training columns {features}")
    return _Data(features, train, validation, validation, "validation")


def export_xgboost_onnx(model_bytes: bytes, n_features: int) -> tuple[bytes, str]:
    """The ONNX export of an XGBoost model by onnxmltools, and "onnxmltools <version>".

    Raises OnnxExportError with a one-line reason: the converter missing, or refusing the model.
    """
    from importlib.metadata import PackageNotFoundError, version

    try:
        from onnxmltools import convert_xgboost
        from onnxmltools.convert.common.data_types import FloatTensorType
    except ImportError as exc:
        raise OnnxExportError(
            "onnxmltools is not installed (pip install 'modeldeploy-serving[export]')"
        ) from exc
    from modeldeploy_serving.runtimes.xgboost import load_booster

    booster: Any = load_booster(model_bytes)
    # The converter reads splits as f0..fN from the tree dump: with names set it cannot map them.
    booster.feature_names = None
    booster.feature_types = None
    try:
        exported = convert_xgboost(booster, initial_types=[("input", FloatTensorType([None, n_features]))])
    except Exception as exc:  # the converter raises many unrelated types for models it cannot map
        raise OnnxExportError(f"onnxmltools cannot convert it ({type(exc).__name__}: {exc})"[:300]) from exc
    try:
        tool = f"onnxmltools {version('onnxmltools')}"
    except PackageNotFoundError:
        tool = "onnxmltools"
    return bytes(exported.SerializeToString()), tool


class OnnxExportError(Exception):
    pass


def _parity(reference: Runtime, exported: Runtime, held_out: npt.NDArray[np.float64]) -> tuple[float, int]:
    rows = parity_rows(held_out)
    try:
        diff = np.abs(reference.predict(rows) - exported.predict(rows))
    except ValueError:  # shapes that do not broadcast: the export has other outputs
        return float("inf"), len(rows)
    return float(np.max(diff)), len(rows)


def _load_models(model: Path, onnx: Path | None, data: _Data, export_onnx: bool) -> _Models:
    model_bytes = model.read_bytes()
    n_features = len(data.features)
    if model.suffix.lower() == ".onnx":
        served, task = _onnx_runtime(model_bytes, n_features, None)
        width = served.predict(data.validation[:1].astype(np.float32)).shape
        classes = list(range(width[1])) if task == "classification" else []
        choice = PackChoice(runtime="onnxruntime", onnx="model", reason="the model is ONNX")
        return _Models("onnx", task, classes, served, None, None, 0, choice=choice)
    reference, task, classes = _xgboost_runtime(model_bytes, data.features)
    if onnx is not None:
        onnx_bytes = onnx.read_bytes()
        exported, _ = _onnx_runtime(onnx_bytes, n_features, task)
        parity, n_rows = _parity(reference, exported, data.held_out)
        if not parity <= PARITY_TOLERANCE:  # also catches NaN
            raise PackError(
                f"the ONNX export disagrees with the XGBoost model by {parity:.3g} "
                f"(> {PARITY_TOLERANCE}) on {n_rows} held-out rows with missing values; not packed"
            )
        choice = PackChoice(
            runtime="onnxruntime",
            onnx="given",
            reason=f"--onnx {onnx.name} agrees with the XGBoost model",
            parity_max_abs_diff=parity,
            parity_rows=n_rows,
        )
        return _Models("xgboost", task, classes, exported, onnx_bytes, parity, n_rows, choice=choice)
    if not export_onnx:
        choice = PackChoice(runtime="xgboost", onnx="none", reason="ONNX export turned off (--no-onnx)")
        return _Models("xgboost", task, classes, reference, None, None, 0, choice=choice)
    try:
        onnx_bytes, tool = export_xgboost_onnx(model_bytes, n_features)
        exported, _ = _onnx_runtime(onnx_bytes, n_features, task)
    except (OnnxExportError, PackError) as exc:
        reason = f"no ONNX export: {exc}"
        choice = PackChoice(runtime="xgboost", onnx="none", reason=reason[:1000])
        return _Models("xgboost", task, classes, reference, None, None, 0, choice=choice)
    parity, n_rows = _parity(reference, exported, data.held_out)
    if not parity <= PARITY_TOLERANCE:  # also catches NaN
        reason = (
            f"the ONNX export by {tool} disagrees with the XGBoost model by {parity:.3g} "
            f"(> {PARITY_TOLERANCE}) on {n_rows} held-out rows with missing values; left out"
        )
        choice = PackChoice(
            runtime="xgboost",
            onnx="none",
            reason=reason,
            parity_max_abs_diff=_finite(parity),
            parity_rows=n_rows,
        )
        return _Models("xgboost", task, classes, reference, None, None, 0, choice=choice)
    choice = PackChoice(
        runtime="onnxruntime",
        onnx="exported",
        reason=f"exported by {tool}; agrees with the XGBoost model",
        parity_max_abs_diff=parity,
        parity_rows=n_rows,
    )
    return _Models("xgboost", task, classes, exported, onnx_bytes, parity, n_rows, choice=choice)


def _finite(value: float) -> float | None:
    """JSON has no NaN or infinity: a disagreement that large is recorded as unknown."""
    return value if np.isfinite(value) else None


def pack(
    *,
    model: Path,
    onnx: Path | None,
    train_data: Path,
    validation_data: Path | None,
    label: str | None,
    name: str,
    version: str,
    out: Path,
    force: bool = False,
    golden_data: Path | None = None,
    golden_tolerance: float = DEFAULT_TOLERANCE,
    export_onnx: bool = True,
) -> PackResult:
    suffix = model.suffix.lower()
    if suffix not in (".ubj", ".json", ".onnx"):
        raise PackError(f"--model must be .ubj or .json (XGBoost) or .onnx, got {model.name}")
    if suffix == ".onnx" and onnx is not None:
        raise PackError("--onnx is the ONNX export of an XGBoost --model; give an ONNX model once")
    if onnx is not None and not export_onnx:
        raise PackError("--onnx and --no-onnx contradict each other; give one")
    if out.exists() and any(out.iterdir()) and not force:
        raise PackError(f"{out} exists and is not empty (use --force to replace it)")
    data = _read_data(train_data, validation_data, label)
    models = _load_models(model, onnx, data, export_onnx)
    classes_arr = np.asarray(models.classes, dtype=np.int64) if models.classes else None
    raw = models.served.predict(data.validation.astype(np.float32))
    scores = to_prediction(raw, models.task == "classification", classes_arr).scores
    # Profile what the model sees: float32 values, so live values (float32 too) fall in the same bins
    # even when they sit exactly on an edge.
    train32 = data.train.astype(np.float32).astype(np.float64)
    profile = build_profile(data.features, train32, scores.astype(np.float64), data.score_source)
    golden = (
        None
        if golden_data is None
        else _golden_set(golden_data, label, data.features, models, golden_tolerance)
    )

    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    work.chmod(0o755)  # mkdtemp makes it private; a bundle is meant to be read by others (servers, uploads)
    try:
        model_entry = _entry(
            work, "model.onnx" if models.format == "onnx" else f"model{suffix}", model.read_bytes()
        )
        onnx_entry = _entry(work, "model.onnx", models.onnx_bytes) if models.onnx_bytes is not None else None
        profile_entry = _entry(work, PROFILE_NAME, profile.model_dump_json(indent=1).encode())
        golden_entry = (
            None
            if golden is None
            else _entry(work, GOLDEN_NAME, golden.model_dump_json(exclude_none=True).encode())
        )
        manifest = Manifest(
            name=name,
            version=version,
            format=models.format,
            task="classification" if models.task == "classification" else "regression",
            classes=models.classes,
            inputs=[FeatureSpec(name=f, datatype="FP32") for f in data.features],
            outputs=[OutputSpec.model_validate(o) for o in outputs_for(models.task, len(models.classes))],
            files=BundleFiles(
                model=model_entry, onnx=onnx_entry, reference_profile=profile_entry, golden=golden_entry
            ),
            created_by=_tool_versions(),
            packed=models.choice,
        )
        manifest_bytes = manifest.model_dump_json(indent=1, exclude_none=True).encode()
        (work / MANIFEST_NAME).write_bytes(manifest_bytes)
        if out.exists():
            shutil.rmtree(out)
        work.rename(out)
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
    return PackResult(
        out,
        sha256_bytes(manifest_bytes),
        models.parity,
        models.parity_rows,
        0 if golden is None else len(golden.inputs),
        golden is not None and golden.labels is not None,
        models.choice,
    )


def _golden_set(
    path: Path, label: str | None, features: list[str], models: _Models, tolerance: float
) -> GoldenSet:
    """The golden rows (features by name, in the model's order), the served model's outputs for them
    and the label column's values when the file has one."""
    columns, data = read_table(path)
    missing = [f for f in features if f not in columns]
    if missing:
        raise PackError(f"--golden-data {path} lacks the feature columns {missing}")
    if len(data) > GOLDEN_MAX_ROWS:
        raise PackError(f"--golden-data {path} has {len(data)} rows; at most {GOLDEN_MAX_ROWS} are kept")
    x = data[:, [columns.index(f) for f in features]].astype(np.float32)
    labels = None
    classification = models.task == "classification"
    if label is not None and label in columns:
        y = data[:, columns.index(label)]
        if np.isnan(y).any():
            raise PackError(f"--golden-data {path}: label column {label!r} has missing values")
        if classification:
            bad = sorted({float(v) for v in y if float(v) not in models.classes})[:5]
            if bad:
                raise PackError(f"--golden-data {path}: labels {bad} are not classes {models.classes}")
        labels = [float(v) for v in y]
    raw = np.asarray(models.served.predict(x), dtype=np.float32)
    outputs = raw.reshape(len(x), -1) if classification else raw.reshape(len(x), 1)
    if not np.all(np.isfinite(outputs)):
        raise PackError(f"the model gives non-finite outputs for rows of --golden-data {path}")
    return GoldenSet(
        features=features,
        task="classification" if classification else "regression",
        classes=models.classes,
        output="probabilities" if classification else "predictions",
        # float32 values, exactly (a float64 holds every float32): the server reads them back unchanged
        inputs=[[None if np.isnan(v) else float(v) for v in row] for row in x],
        outputs=[[float(v) for v in row] for row in outputs],
        labels=labels,
        tolerance=tolerance,
    )


def _tool_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for dist in ("modeldeploy-serving", "xgboost", "onnxruntime"):
        try:
            found[dist] = version(dist)
        except PackageNotFoundError:
            continue
    return found
