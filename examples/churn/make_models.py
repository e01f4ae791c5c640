"""Synthetic churn data, three XGBoost models and their bundles, deterministically (seeded).

    python examples/churn/make_models.py --out DIR

writes DIR/v1, DIR/v2 and DIR/v3 (model bundles for `modeldeploy serve --model-uri DIR/v1`) and
DIR/data/ (the CSVs they were trained on, plus request samples: traffic_normal.csv is drawn like
v1's data, traffic_shifted.csv from a clearly shifted population, for drift demos). Every bundle
carries the golden set data/golden.csv (labelled rows drawn like v1's) for `modeldeploy preflight`.

- v1: trained on the first period's data.
- v2: retrained on a later period whose users are slightly more engaged (a healthy update).
- v3: deliberately bad: trained on corrupted labels (mostly "retained" at random), so its
  prediction scores shift high and it ignores the features; a rollout analysis should reject it.

The table looks like a product-usage export: one row per customer team and its first weeks of
activity, with missing values where a team never used a feature (no mobile app, no sprints).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import numpy.typing as npt

FEATURES = [
    "number_of_projects",
    "number_of_issues",
    "number_of_invites",
    "w1_active_users",
    "w1_max_active_users",
    "issues_updated",
    "issues_commented",
    "issues_assigned",
    "at_mentions",
    "issues_viewed",
    "issues_completed",
    "mobile_usage",
    "sprint_started",
    "sprint_finished",
]
LABEL = "retained"
PARAMS = {"n_estimators": 200, "max_depth": 3, "learning_rate": 0.1, "subsample": 0.5, "min_child_weight": 6}

Table = tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]


def _sigmoid(z: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    return np.asarray(1.0 / (1.0 + np.exp(-z)))


def generate(n: int, seed: int, shift: float = 0.0, corrupt_labels: bool = False) -> Table:
    """n rows of features (NaN = missing) and the `retained` label; `shift` moves engagement up."""
    rng = np.random.default_rng(seed)
    engagement = rng.normal(shift, 1.0, n)
    team = np.maximum(1.0, np.round(rng.lognormal(1.3 + 0.3 * shift, 0.7, n)))
    w1_max = np.round(team * (1.0 + 0.5 * rng.random(n)))
    w1_active = rng.binomial(w1_max.astype(np.int64), _sigmoid(engagement + 0.5))
    projects = 1 + rng.poisson(np.exp(0.35 * engagement + 0.1))
    invites = rng.poisson(0.4 * team * _sigmoid(engagement))
    issues = rng.poisson(4.0 * team * np.exp(0.6 * engagement))
    updated = rng.binomial(issues, 0.6)
    commented = rng.binomial(issues, 0.1 + 0.3 * _sigmoid(engagement))
    assigned = rng.binomial(issues, 0.5)
    mentions = rng.poisson(0.6 * commented)
    viewed = rng.poisson(3.0 * issues + 2.0)
    completed = rng.binomial(assigned, _sigmoid(engagement))
    mobile = rng.exponential(2.0 + 8.0 * _sigmoid(engagement))
    sprint_started = rng.poisson(1.0 + 2.0 * _sigmoid(engagement))
    sprint_finished = rng.binomial(sprint_started, 0.5 + 0.4 * _sigmoid(engagement))

    x = np.column_stack(
        [projects, issues, invites, w1_active, w1_max, updated, commented, assigned, mentions, viewed,
         completed, mobile, sprint_started, sprint_finished]
    ).astype(np.float64)  # fmt: skip
    # Missing values: no mobile app, no sprints used, an export gap in the weekly user count.
    x[rng.random(n) < 0.25, FEATURES.index("mobile_usage")] = np.nan
    no_sprints = rng.random(n) < 0.3
    x[no_sprints, FEATURES.index("sprint_started")] = np.nan
    x[no_sprints, FEATURES.index("sprint_finished")] = np.nan
    x[rng.random(n) < 0.05, FEATURES.index("w1_max_active_users")] = np.nan

    logit = (
        -0.3
        + 1.1 * engagement
        + 0.4 * np.log1p(w1_active)
        + 0.25 * np.log1p(completed)
        - 0.15 * np.log1p(team)
        + 0.3 * (projects > 2)
    )
    retained = rng.random(n) < _sigmoid(logit)
    if corrupt_labels:
        retained = rng.random(n) < 0.85
    return x, retained.astype(np.int64)


def write_csv(path: Path, x: npt.NDArray[np.float64], y: npt.NDArray[np.int64] | None = None) -> None:
    header = FEATURES + ([LABEL] if y is not None else [])
    data = x if y is None else np.column_stack([x, y])
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [",".join(header)]
    for row in data:
        lines.append(",".join("" if np.isnan(v) else f"{v:.6g}" for v in row))
    path.write_text("\n".join(lines) + "\n")


def train_and_export(
    x: npt.NDArray[np.float64], y: npt.NDArray[np.int64], folder: Path, trees: int, seed: int
) -> None:
    """Train the classifier and write model.ubj (source of truth) and model.onnx (its export)."""
    import xgboost as xgb
    from onnxmltools import convert_xgboost
    from onnxmltools.convert.common.data_types import FloatTensorType

    params = {**PARAMS, "n_estimators": trees}
    clf = xgb.XGBClassifier(**params, random_state=seed, n_jobs=2, tree_method="hist")
    clf.fit(x.astype(np.float32), y)
    # The converter wants the default f0..fN feature names, so it runs before the names are set.
    onnx_model = convert_xgboost(clf, initial_types=[("input", FloatTensorType([None, len(FEATURES)]))])
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.onnx").write_bytes(onnx_model.SerializeToString())
    booster = clf.get_booster()
    booster.feature_names = FEATURES
    booster.save_model(str(folder / "model.ubj"))


def build(
    out: Path, rows: int = 20_000, trees: int = PARAMS["n_estimators"], seed: int = 7
) -> dict[str, Path]:
    """Write the three bundles and the data; returns {version: bundle folder}."""
    from modeldeploy_serving.pack import pack

    out.mkdir(parents=True, exist_ok=True)
    data = out / "data"
    plans = {
        "v1": {"shift": 0.0, "corrupt_labels": False, "seed": seed},
        "v2": {"shift": 0.2, "corrupt_labels": False, "seed": seed + 1},
        "v3": {"shift": 0.0, "corrupt_labels": True, "seed": seed + 2},
    }
    # The golden set every bundle carries (replayed by `modeldeploy preflight`): customers drawn like
    # the first period's, with their true outcome.
    golden_x, golden_y = generate(min(rows, 1_000), seed + 200)
    write_csv(data / "golden.csv", golden_x, golden_y)
    bundles = {}
    for version, plan in plans.items():
        x, y = generate(rows, int(plan["seed"]), float(plan["shift"]), bool(plan["corrupt_labels"]))
        cut = int(rows * 0.8)
        write_csv(data / version / "train.csv", x[:cut], y[:cut])
        write_csv(data / version / "validation.csv", x[cut:], y[cut:])
        artifacts = data / version / "artifacts"
        train_and_export(x[:cut], y[:cut], artifacts, trees, int(plan["seed"]))
        result = pack(
            model=artifacts / "model.ubj",
            onnx=artifacts / "model.onnx",
            train_data=data / version / "train.csv",
            validation_data=data / version / "validation.csv",
            label=LABEL,
            name="churn",
            version=version,
            out=out / version,
            force=True,
            golden_data=data / "golden.csv",
        )
        shutil.rmtree(artifacts)
        bundles[version] = result.out
    traffic_rows = min(rows, 2_000)
    write_csv(data / "traffic_normal.csv", generate(traffic_rows, seed + 100)[0])
    write_csv(data / "traffic_shifted.csv", generate(traffic_rows, seed + 101, shift=1.5)[0])
    return bundles


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for the bundles and data")
    parser.add_argument("--rows", type=int, default=20_000, help="rows per data set (default 20000)")
    parser.add_argument(
        "--trees", type=int, default=PARAMS["n_estimators"], help="boosting rounds (default 200)"
    )
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    start = time.monotonic()
    bundles = build(args.out, args.rows, args.trees, args.seed)
    for version, folder in bundles.items():
        print(f"{version}: {folder}")
    print(f"done in {time.monotonic() - start:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
