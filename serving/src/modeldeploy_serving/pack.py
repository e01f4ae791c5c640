"""`modeldeploy pack`: a trained model plus data in, a verified bundle with a reference profile out.

When both an XGBoost model and its ONNX export are given, the export is served (it is much cheaper
per call), so pack refuses to write the bundle unless the two agree within PARITY_TOLERANCE on
held-out rows, including rows with missing values (converters have mis-routed missing values before).
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

from modeldeploy_serving.bundle import (
    MANIFEST_NAME,
    BundleFiles,
    FeatureSpec,
    FileEntry,
    Manifest,
    OutputSpec,
    sha256_bytes,
)
from modeldeploy_serving.drift.profile import PROFILE_NAME, build_profile
from modeldeploy_serving.errors import BundleError
from modeldeploy_serving.model import outputs_for, to_prediction
from modeldeploy_serving.runtimes import Runtime
from modeldeploy_serving.tabular import read_table

PARITY_TOLERANCE = 1e-5
PARITY_ROWS = 500


class PackError(Exception):
    pass


@dataclass(frozen=True)
class PackResult:
    out: Path
    digest: str
    parity_max_abs_diff: float | None
    parity_rows: int


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
) -> PackResult:
    suffix = model.suffix.lower()
    if suffix not in (".ubj", ".json", ".onnx"):
        raise PackError(f"--model must be .ubj or .json (XGBoost) or .onnx, got {model.name}")
    if suffix == ".onnx" and onnx is not None:
        raise PackError("--onnx is the ONNX export of an XGBoost --model; give an ONNX model once")
    if out.exists() and any(out.iterdir()) and not force:
        raise PackError(f"{out} exists and is not empty (use --force to replace it)")
    features, train = _features_and_matrix(train_data, label)
    if validation_data is not None:
        val_features, validation = _features_and_matrix(validation_data, label)
        if val_features != features:
            raise PackError(f"validation columns {val_features} differ from training columns {features}")
        score_source: Literal["validation", "training"] = "validation"
        held_out = validation
    else:
        validation = train
        score_source = "training"
        held_out = train[-max(len(train) // 5, 1) :]

    model_bytes = model.read_bytes()
    served: Runtime
    parity: float | None = None
    parity_count = 0
    if suffix == ".onnx":
        fmt: Literal["xgboost", "onnx"] = "onnx"
        served, task = _onnx_runtime(model_bytes, len(features), None)
        classes = (
            list(range(served.predict(validation[:1].astype(np.float32)).shape[1]))
            if task == "classification"
            else []
        )
        onnx_bytes = None
    else:
        fmt = "xgboost"
        reference, task, classes = _xgboost_runtime(model_bytes, features)
        served = reference
        onnx_bytes = onnx.read_bytes() if onnx is not None else None
        if onnx_bytes is not None:
            exported, _ = _onnx_runtime(onnx_bytes, len(features), task)
            rows = parity_rows(held_out)
            parity_count = len(rows)
            parity = float(np.max(np.abs(reference.predict(rows) - exported.predict(rows))))
            if not parity <= PARITY_TOLERANCE:  # also catches NaN
                raise PackError(
                    f"the ONNX export disagrees with the XGBoost model by {parity:.3g} "
                    f"(> {PARITY_TOLERANCE}) on {parity_count} held-out rows with missing values; not packed"
                )
            served = exported
    classes_arr = np.asarray(classes, dtype=np.int64) if classes else None
    scores = to_prediction(
        served.predict(validation.astype(np.float32)), task == "classification", classes_arr
    ).scores
    profile = build_profile(features, train, scores.astype(np.float64), score_source)

    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    work.chmod(0o755)  # mkdtemp makes it private; a bundle is meant to be read by others (servers, uploads)
    try:
        model_entry = _entry(work, "model.onnx" if fmt == "onnx" else f"model{suffix}", model_bytes)
        onnx_entry = _entry(work, "model.onnx", onnx_bytes) if onnx_bytes is not None else None
        profile_entry = _entry(work, PROFILE_NAME, profile.model_dump_json(indent=1).encode())
        manifest = Manifest(
            name=name,
            version=version,
            format=fmt,
            task="classification" if task == "classification" else "regression",
            classes=classes,
            inputs=[FeatureSpec(name=f, datatype="FP32") for f in features],
            outputs=[OutputSpec.model_validate(o) for o in outputs_for(task, len(classes))],
            files=BundleFiles(model=model_entry, onnx=onnx_entry, reference_profile=profile_entry),
            created_by=_tool_versions(),
        )
        raw = manifest.model_dump_json(indent=1, exclude_none=True).encode()
        (work / MANIFEST_NAME).write_bytes(raw)
        if out.exists():
            shutil.rmtree(out)
        work.rename(out)
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
    return PackResult(out=out, digest=sha256_bytes(raw), parity_max_abs_diff=parity, parity_rows=parity_count)


def _tool_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for dist in ("modeldeploy-serving", "xgboost", "onnxruntime"):
        try:
            found[dist] = version(dist)
        except PackageNotFoundError:
            continue
    return found
