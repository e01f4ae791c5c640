"""A loaded, verified, warmed-up model: the only thing the data plane predicts with."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import numpy.typing as npt
from pydantic import ValidationError

from modeldeploy_contract.server_settings import ServerSettings
from modeldeploy_serving.bundle import Manifest, VerifiedBundle, verify_bundle
from modeldeploy_serving.drift.profile import ReferenceProfile
from modeldeploy_serving.errors import (
    BundleError,
    FormatMismatchError,
    VersionMismatchError,
    validation_summary,
)
from modeldeploy_serving.runtimes import Runtime
from modeldeploy_serving.storage import fetch_bundle

log = logging.getLogger(__name__)


class Prediction:
    """Named output tensors (batch first) and one score per row for drift accounting.

    rows() gives each request of a micro-batch a view of its rows of the shared model call: nothing
    is sliced until asked for, and batch_cache (one dict shared by every view of the batch) lets a
    codec do its per-batch work once, for example the JSON text of every row.
    """

    __slots__ = ("_outputs", "_scores", "batch_cache", "start", "stop")

    def __init__(self, outputs: dict[str, npt.NDArray[np.generic]], scores: npt.NDArray[np.floating]) -> None:
        self._outputs = outputs
        self._scores = scores
        self.start = 0
        self.stop = len(scores)
        self.batch_cache: dict[str, Any] = {}

    @property
    def whole(self) -> bool:
        return self.start == 0 and self.stop == len(self._scores)

    @property
    def outputs(self) -> dict[str, npt.NDArray[np.generic]]:
        if self.whole:
            return self._outputs
        return {k: v[self.start : self.stop] for k, v in self._outputs.items()}

    @property
    def scores(self) -> npt.NDArray[np.floating]:
        return self._scores if self.whole else self._scores[self.start : self.stop]

    @property
    def batch_outputs(self) -> dict[str, npt.NDArray[np.generic]]:
        """The outputs of the whole model call these rows belong to (these are rows start:stop)."""
        return self._outputs

    def rows(self, start: int, stop: int) -> Prediction:
        view = Prediction.__new__(Prediction)
        view._outputs, view._scores, view.batch_cache = self._outputs, self._scores, self.batch_cache
        view.start, view.stop = self.start + start, self.start + stop
        return view


class LoadedModel:
    def __init__(
        self, bundle: VerifiedBundle, runtime: Runtime, profile: ReferenceProfile, version: str | None = None
    ) -> None:
        """`version`: the one the server was told and the manifest matched (check_version), spelled as
        told, so that the server, the router's header and the joiner name an arm's version alike (a
        spec's "2" for a bundle packed as "v2"); the manifest's when the server was told none."""
        self.manifest: Manifest = bundle.manifest
        self.digest = bundle.digest
        self.runtime = runtime
        self.profile = profile
        self.name = bundle.manifest.name
        self.version = version if version is not None else bundle.manifest.version
        self.n_features = len(bundle.manifest.inputs)
        self.feature_names = bundle.manifest.feature_names
        self.feature_index = {n: i for i, n in enumerate(self.feature_names)}
        self.output_names = [o.name for o in bundle.manifest.outputs]
        golden = bundle.manifest.files.golden
        self.golden: bytes | None = bundle.blob(golden) if golden is not None else None
        """golden.json as packed (verified against the manifest), for the operator's preflight."""
        classes = bundle.manifest.classes
        self._classes = np.asarray(classes, dtype=np.int64) if classes else None
        self._classification = bundle.manifest.task == "classification"

    def predict(self, x: npt.NDArray[np.float32]) -> Prediction:
        return to_prediction(self.runtime.predict(x), self._classification, self._classes)


def to_prediction(
    raw: npt.NDArray[np.float32], classification: bool, classes: npt.NDArray[np.int64] | None = None
) -> Prediction:
    """Name a runtime's raw output and derive labels and the per-row drift score."""
    if not classification:
        return Prediction({"predictions": raw}, raw)
    index = np.argmax(raw, axis=1)
    label = classes[index] if classes is not None else index.astype(np.int64)
    # The drift score is P(positive) for binary models and the winning class's probability otherwise.
    score = raw[:, 1] if raw.shape[1] == 2 else raw[np.arange(raw.shape[0]), index]
    return Prediction({"probabilities": raw, "label": label}, score)


def outputs_for(task: str, n_classes: int) -> list[dict[str, object]]:
    """The output schema a bundle of this task declares (pack writes it, the server serves it)."""
    if task == "classification":
        return [
            {"name": "probabilities", "datatype": "FP32", "shape": [-1, n_classes]},
            {"name": "label", "datatype": "INT64", "shape": [-1]},
        ]
    return [{"name": "predictions", "datatype": "FP32", "shape": [-1]}]


class HybridRuntime:
    """An XGBoost model and its parity-checked ONNX export: onnxruntime for small calls (its per-call
    cost is ~8 us against xgboost's ~200 us), xgboost for large ones (~4 us a row against < 1 us)."""

    name = "onnxruntime+xgboost"

    def __init__(self, small: Runtime, large: Runtime, min_large_rows: int) -> None:
        self._small = small
        self._large = large
        self._min_large_rows = min_large_rows

    def predict(self, x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        return (self._large if x.shape[0] >= self._min_large_rows else self._small).predict(x)


def build_runtime(bundle: VerifiedBundle, settings: ServerSettings) -> Runtime:
    from modeldeploy_serving.runtimes.onnx import OnnxRuntime
    from modeldeploy_serving.runtimes.xgboost import XGBoostRuntime

    m = bundle.manifest
    n = len(m.inputs)
    if m.format == "onnx":
        return OnnxRuntime(bundle.blob(m.files.model), n, m.task, settings.onnx_threads)
    xgb = XGBoostRuntime(bundle.blob(m.files.model), n, m.task, settings.xgboost_threads)
    if not settings.prefer_onnx or m.files.onnx is None:
        return xgb
    onnx = OnnxRuntime(bundle.blob(m.files.onnx), n, m.task, settings.onnx_threads)
    if settings.xgboost_batch_rows <= 0:
        return onnx
    return HybridRuntime(onnx, xgb, settings.xgboost_batch_rows)


def warm_up(model: LoadedModel) -> None:
    """Predict on rows built from the profile (means, and all-missing); fail unless outputs are sane."""
    means = [f.mean if f.mean is not None else 0.0 for f in model.profile.features]
    x = np.array([means, [np.nan] * model.n_features], dtype=np.float32)
    pred = model.predict(x)
    for name, value in pred.outputs.items():
        if value.shape[0] != 2:
            raise BundleError(f"warm-up output {name} has shape {value.shape}, expected 2 rows")
    if not np.all(np.isfinite(pred.scores)):
        raise BundleError("warm-up prediction returned non-finite scores")
    expected = {o.name for o in model.manifest.outputs}
    if set(pred.outputs) != expected:
        raise BundleError(
            f"model outputs {sorted(pred.outputs)} differ from the manifest's {sorted(expected)}"
        )


def same_version(a: str, b: str) -> bool:
    """Whether two version strings name one version: equal once one leading `v` or `V` before a digit
    is dropped from each (npm's semver.clean and Helm read `v1.2` as `1.2` too), so a spec saying "2"
    matches a bundle packed as "v2"; nothing else is forgiven (case, whitespace, "2.0" against "2").

    >>> same_version("2", "v2"), same_version("v1.0", "1.0"), same_version("2", "3")
    (True, True, False)
    >>> same_version("2.0", "2"), same_version("vx", "x"), same_version("V2", "v2")
    (False, False, True)
    """

    def bare(version: str) -> str:
        return version[1:] if version[:1] in ("v", "V") and version[1:2].isdigit() else version

    return bare(a) == bare(b)


def check_version(bundle: VerifiedBundle, expected: str | None) -> None:
    """Fail closed when the manifest's version is not the one the server was told (before anything
    is loaded: a mismatched bundle is never warmed up, let alone served)."""
    if expected is not None and not same_version(bundle.manifest.version, expected):
        raise VersionMismatchError(expected, bundle.manifest.version, bundle.digest)


def served_as(manifest: Manifest) -> tuple[str, ...]:
    """The formats a bundle can be served as: its own, and onnx too for an XGBoost bundle with a
    checked ONNX export (pack's default, served through onnxruntime: the churn example's bundles,
    which every spec before `auto` called onnx)."""
    if manifest.format == "xgboost" and manifest.files.onnx is not None:
        return ("xgboost", "onnx")
    return (manifest.format,)


def check_format(bundle: VerifiedBundle, expected: str) -> None:
    """Fail closed when the spec names a format (not auto) the bundle cannot be served as: a spec
    that says xgboost is a promise about the bundle, never a way to read an ONNX model as XGBoost."""
    if expected != "auto" and expected not in served_as(bundle.manifest):
        raise FormatMismatchError(expected, bundle.manifest.format, bundle.manifest.version, bundle.digest)


def load_model(settings: ServerSettings) -> LoadedModel:
    """Fetch, verify (sha256 of every file), load and warm up; raise BundleError on any failure."""
    folder = fetch_bundle(settings.model_uri, settings)
    bundle = verify_bundle(folder, settings.model_sha256, settings.max_artifact_bytes)
    check_format(bundle, settings.model_format)
    check_version(bundle, settings.model_version)
    try:
        profile = ReferenceProfile.model_validate_json(bundle.blob(bundle.manifest.files.reference_profile))
    except ValidationError as exc:
        raise BundleError(f"invalid reference profile: {validation_summary(exc)}") from exc
    if [f.name for f in profile.features] != bundle.manifest.feature_names:
        raise BundleError("reference profile features differ from the manifest's inputs")
    runtime = build_runtime(bundle, settings)
    model = LoadedModel(bundle, runtime, profile, version=settings.model_version)
    warm_up(model)
    log.info(
        "model %s version %s loaded (%s via %s, sha256 %s)",
        model.name,
        model.version,
        bundle.manifest.format,
        runtime.name,
        model.digest,
    )
    return model
