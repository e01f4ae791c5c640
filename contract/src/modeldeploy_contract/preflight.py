"""The golden set of a bundle and the preflight comparison: pure, so the operator can run it.

`modeldeploy pack --golden-data FILE` writes a `GoldenSet` (golden.json, covered by the manifest's
sha256 like every bundle file): input rows, the packing model's own outputs for them, labels when the
file had a label column, and the tolerance within which a server of that bundle must reproduce the
outputs.

Before a revision takes traffic, the rows are replayed against it (and against the stable revision)
over V2, each request marked with the REPLAY_HEADER so the servers leave it out of live metrics and
drift windows; `compare()` turns the answers into a `PreflightReport` with a verdict against
`PreflightThresholds` (meant for `rollout.preflight` in the ModelDeployment).

The HTTP part is not here: `v2_request()` builds a request body and `outputs_from_v2()` reads an
answer, so any HTTP client can replay (the serving CLI uses httpx).
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from modeldeploy_contract import effectiveness as fx
from modeldeploy_contract.psi import psi

GOLDEN_NAME = "golden.json"
REPLAY_HEADER = "modeldeploy-replay"
"""Requests with this header set (any value but "0") are replays: the model server answers them but
counts them in no live metric, drift window or prediction log."""
DEFAULT_TOLERANCE = 1e-4
"""Default largest |difference| between recorded and served outputs: the ONNX/XGBoost parity that
pack checks is 1e-5, with room for the runtime a server picks for a batch size."""
GOLDEN_PATH = "/modeldeploy/golden"
"""Where a model server hands out its bundle's golden set (golden.json as packed and verified), for
the operator's preflight. Not an inference route: the router answers 404 for anything under
ADMIN_PREFIX, so callers of the front door never see the golden rows and labels."""
ADMIN_PREFIX = "/modeldeploy/"
PSI_BINS = 10
REPLAY_BATCH_ROWS = 32
"""Rows per replay request (below the server's xgboost_batch_rows, so a hybrid XGBoost bundle answers
with the ONNX export that pack recorded)."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class GoldenSet(_Frozen):
    """golden.json of a bundle."""

    schema_version: Literal[1] = 1
    features: list[str] = Field(min_length=1)
    task: Literal["classification", "regression"]
    classes: list[int] = Field(default_factory=list)
    output: str
    """The V2 output compared: "probabilities" for classifiers, "predictions" for regressors."""
    inputs: list[list[float | None]] = Field(min_length=1)
    """Rows in feature order; None is a missing value."""
    outputs: list[list[float]]
    """The packing model's `output` for each row (a probability per class, or one prediction)."""
    labels: list[float] | None = None
    """True labels (class labels for classifiers), when the golden data had them."""
    tolerance: float = Field(default=DEFAULT_TOLERANCE, ge=0)
    """Largest |served - recorded| over all output values that still means "the packed model"."""

    @model_validator(mode="after")
    def _shapes(self) -> GoldenSet:
        n, f = len(self.inputs), len(self.features)
        if any(len(row) != f for row in self.inputs):
            raise ValueError(f"every golden input row must have {f} values")
        if len(self.outputs) != n:
            raise ValueError(f"{len(self.outputs)} golden outputs for {n} input rows")
        width = len(self.classes) if self.task == "classification" else 1
        if any(len(row) != width for row in self.outputs):
            raise ValueError(f"every golden output row must have {width} values")
        if self.labels is not None and len(self.labels) != n:
            raise ValueError(f"{len(self.labels)} golden labels for {n} input rows")
        return self

    @property
    def scores(self) -> list[float]:
        return scores_of(self.outputs, self.task)


def scores_of(outputs: Sequence[Sequence[float]], task: str) -> list[float]:
    """One score per row, as the server's drift accounting has it: P(class 1) for binary classifiers,
    the winning class's probability for multi-class ones, the prediction for regressors."""
    if task != "classification":
        return [row[0] for row in outputs]
    if outputs and len(outputs[0]) == 2:
        return [row[1] for row in outputs]
    return [max(row) for row in outputs]


def v2_request(rows: Sequence[Sequence[float | None]]) -> dict[str, Any]:
    """A V2 infer body for these rows (one [N, F] FP32 tensor; None is a missing value)."""
    flat = [v for row in rows for v in row]
    width = len(rows[0]) if rows else 0
    return {"inputs": [{"name": "input", "datatype": "FP32", "shape": [len(rows), width], "data": flat}]}


def outputs_from_v2(body: Any, output: str, rows: int) -> list[list[float]]:
    """The named output of a V2 answer as `rows` rows of floats; ValueError if it is not there."""
    tensors = body.get("outputs") if isinstance(body, dict) else None
    if not isinstance(tensors, list):
        raise ValueError("the answer has no 'outputs' list")
    for t in tensors:
        if isinstance(t, dict) and t.get("name") == output:
            data = t.get("data")
            if not isinstance(data, list) or len(data) % max(rows, 1):
                raise ValueError(f"output {output!r} has {len(data or [])} values for {rows} rows")
            width = len(data) // rows if rows else 0
            values = [float(v) for v in data]
            return [values[i * width : (i + 1) * width] for i in range(rows)]
    raise ValueError(f"the answer has no output {output!r}")


class PreflightThresholds(_Frozen):
    """When a new revision fails preflight (meant for `rollout.preflight` in the ModelDeployment).

    None switches a check off. Quality checks run only when the golden set has labels; "drop" checks
    compare with the stable revision and run only when there is one.
    """

    max_output_diff: float | None = Field(default=None, ge=0)
    """Largest |new - recorded| output value; None uses the tolerance recorded by pack."""
    max_score_psi: float | None = Field(default=0.25, ge=0)
    """Largest PSI of the new revision's scores against the stable's on the same rows."""
    max_auc_drop: float | None = Field(default=0.01, ge=0)
    """Largest stable AUC - new AUC (binary classifiers)."""
    max_accuracy_drop: float | None = Field(default=0.02, ge=0)
    max_log_loss_increase: float | None = Field(default=0.05, ge=0)
    min_auc: float | None = Field(default=None, ge=0, le=1)
    min_accuracy: float | None = Field(default=None, ge=0, le=1)
    require_labels: bool = False
    """Fail when the golden set has no labels (so quality cannot be judged)."""


class Quality(_Frozen):
    rows: int
    auc: float | None = None
    accuracy: float | None = None
    log_loss: float | None = None
    brier: float | None = None


class Check(_Frozen):
    name: str
    value: float | None
    threshold: float | None
    passed: bool | None
    """None: skipped (no labels, no stable, or not applicable to the task)."""
    detail: str


class PreflightReport(_Frozen):
    verdict: Literal["Passed", "Failed"]
    rows: int
    labelled_rows: int
    max_abs_diff: float
    """Largest |new - recorded| over every output value of every golden row."""
    mean_abs_diff: float
    tolerance: float
    score_psi: float | None
    """PSI of new scores against the stable's (or, without a stable, against the recorded ones)."""
    score_psi_against: Literal["stable", "recorded"]
    recorded: Quality | None
    """Quality of the recorded outputs (the packing model) on the golden labels."""
    new: Quality | None
    stable: Quality | None
    checks: list[Check]

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if c.passed is False]

    def to_text(self) -> str:
        lines = [
            f"preflight {self.verdict}: {self.rows} golden rows ({self.labelled_rows} labelled)",
            f"  outputs vs recorded: max |diff| {self.max_abs_diff:.3g}, mean {self.mean_abs_diff:.3g} "
            f"(tolerance {self.tolerance:.3g})",
        ]
        if self.score_psi is not None:
            lines.append(f"  score PSI vs {self.score_psi_against}: {self.score_psi:.4f}")
        for name, q in (("recorded", self.recorded), ("new", self.new), ("stable", self.stable)):
            if q is not None:
                parts = [f"{k} {v:.4f}" for k, v in q.model_dump().items() if k != "rows" and v is not None]
                lines.append(f"  {name:<8} {', '.join(parts) or '-'}")
        for c in self.checks:
            mark = {True: "ok  ", False: "FAIL", None: "skip"}[c.passed]
            lines.append(f"  [{mark}] {c.name}: {c.detail}")
        return "\n".join(lines)


def quality(outputs: Sequence[Sequence[float]], golden: GoldenSet) -> Quality | None:
    """Quality of `outputs` on the golden labels (None without labels or for regressors)."""
    labels = golden.labels
    if labels is None or golden.task != "classification" or not golden.classes:
        return None
    index = {c: i for i, c in enumerate(golden.classes)}
    rows = [(out, index[int(y)]) for out, y in zip(outputs, labels, strict=True) if int(y) in index]
    predicted = [max(range(len(out)), key=out.__getitem__) for out, _ in rows]
    truth = [i for _, i in rows]
    result: dict[str, float | None] = {"accuracy": fx.accuracy(predicted, truth)}
    if len(golden.classes) == 2:
        scores = [out[1] for out, _ in rows]
        result |= {
            "auc": fx.auc(scores, truth),
            "log_loss": fx.log_loss(scores, truth),
            "brier": fx.brier(scores, truth),
        }
    else:
        result["log_loss"] = fx.true_class_log_loss([out[i] for out, i in rows])
    return Quality(rows=len(rows), **result)


def score_psi(reference: Sequence[float], current: Sequence[float], bins: int = PSI_BINS) -> float | None:
    """PSI of `current` against `reference` over the reference's quantile bins (same rows, so the
    same population: any shift is the models')."""
    finite_ref = sorted(v for v in reference if math.isfinite(v))
    finite_cur = [v for v in current if math.isfinite(v)]
    if not finite_ref or not finite_cur:
        return None
    n = len(finite_ref)
    edges = sorted({finite_ref[min(n - 1, (i * n) // bins)] for i in range(1, bins)})
    ref_counts = [0] * (len(edges) + 1)
    cur_counts = [0] * (len(edges) + 1)
    for v in finite_ref:
        ref_counts[bisect_right(edges, v)] += 1
    for v in finite_cur:
        cur_counts[bisect_right(edges, v)] += 1
    return psi(ref_counts, cur_counts)


def compare(
    golden: GoldenSet,
    new_outputs: Sequence[Sequence[float]],
    stable_outputs: Sequence[Sequence[float]] | None = None,
    thresholds: PreflightThresholds | None = None,
) -> PreflightReport:
    """The preflight report of a new revision's answers to the golden rows (and the stable's)."""
    t = thresholds or PreflightThresholds()
    n = len(golden.inputs)
    for name, outs in (("new", new_outputs), ("stable", stable_outputs)):
        if outs is not None and (
            len(outs) != n or any(len(a) != len(b) for a, b in zip(outs, golden.outputs, strict=True))
        ):
            raise ValueError(f"the {name} answers do not have the golden outputs' shape ({n} rows)")
    pairs = zip(new_outputs, golden.outputs, strict=True)
    diffs = [abs(a - b) for new, rec in pairs for a, b in zip(new, rec, strict=True)]
    finite = all(math.isfinite(d) for d in diffs)
    max_diff = max(diffs) if finite else math.inf
    mean_diff = math.fsum(diffs) / len(diffs) if finite else math.inf
    tolerance = golden.tolerance if t.max_output_diff is None else t.max_output_diff
    new_scores = scores_of(new_outputs, golden.task)
    if stable_outputs is not None:
        psi_value = score_psi(scores_of(stable_outputs, golden.task), new_scores)
        against: Literal["stable", "recorded"] = "stable"
    else:
        psi_value = score_psi(golden.scores, new_scores)
        against = "recorded"
    recorded_q = quality(golden.outputs, golden)
    new_q = quality(new_outputs, golden)
    stable_q = quality(stable_outputs, golden) if stable_outputs is not None else None

    checks = [
        Check(
            name="outputs-match-bundle",
            value=max_diff,
            threshold=tolerance,
            passed=max_diff <= tolerance,
            detail=f"max |new - recorded| {max_diff:.3g} over {len(diffs)} values, tolerance {tolerance:.3g}"
            + ("" if max_diff <= tolerance else ": the served model is not the packed one"),
        )
    ]
    if t.max_score_psi is not None:
        checks.append(_upper("score-psi", psi_value, t.max_score_psi, f"PSI of scores vs {against}"))
    labelled = new_q.rows if new_q is not None else 0
    if new_q is None:
        why = "the golden set has no labels" if golden.labels is None else "not a classifier"
        checks.append(
            Check(
                name="labels",
                value=None,
                threshold=None,
                passed=False if t.require_labels else None,
                detail=why + ("; required" if t.require_labels else "; quality not judged"),
            )
        )
    else:
        if t.min_auc is not None:
            checks.append(_lower("min-auc", new_q.auc, t.min_auc, "AUC of the new revision"))
        if t.min_accuracy is not None:
            checks.append(
                _lower("min-accuracy", new_q.accuracy, t.min_accuracy, "accuracy of the new revision")
            )
        drops = (
            ("auc-drop", "auc", t.max_auc_drop, True),
            ("accuracy-drop", "accuracy", t.max_accuracy_drop, True),
            ("log-loss-increase", "log_loss", t.max_log_loss_increase, False),
        )
        for name, field, limit, higher_better in drops:
            if limit is None:
                continue
            new_v = getattr(new_q, field)
            old_v = getattr(stable_q, field) if stable_q is not None else None
            if new_v is None or old_v is None:
                why = "no stable revision" if stable_q is None else f"{field} not defined"
                checks.append(Check(name=name, value=None, threshold=limit, passed=None, detail=why))
                continue
            worse = old_v - new_v if higher_better else new_v - old_v
            checks.append(
                _upper(name, worse, limit, f"{field} new {new_v:.4f} vs stable {old_v:.4f}, worse by")
            )
    failed = any(c.passed is False for c in checks)
    return PreflightReport(
        verdict="Failed" if failed else "Passed",
        rows=n,
        labelled_rows=labelled,
        max_abs_diff=max_diff,
        mean_abs_diff=mean_diff,
        tolerance=tolerance,
        score_psi=psi_value,
        score_psi_against=against,
        recorded=recorded_q,
        new=new_q,
        stable=stable_q,
        checks=checks,
    )


def _upper(name: str, value: float | None, limit: float, what: str) -> Check:
    if value is None:
        return Check(name=name, value=None, threshold=limit, passed=None, detail=f"{what}: not defined")
    ok = value <= limit
    return Check(
        name=name,
        value=value,
        threshold=limit,
        passed=ok,
        detail=f"{what} {value:.4f} ({'<=' if ok else '>'} {limit})",
    )


def _lower(name: str, value: float | None, limit: float, what: str) -> Check:
    if value is None:
        return Check(name=name, value=None, threshold=limit, passed=False, detail=f"{what}: not defined")
    ok = value >= limit
    return Check(
        name=name,
        value=value,
        threshold=limit,
        passed=ok,
        detail=f"{what} {value:.4f} ({'>=' if ok else '<'} {limit})",
    )
