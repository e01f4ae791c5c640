"""A scikit-learn and a LightGBM classifier exported to ONNX and packed, on synthetic data (seeded).

    python examples/sklearn_lightgbm/make_models.py --out DIR [--no-zipmap]

writes DIR/sklearn and DIR/lightgbm (bundles for `modeldeploy serve --model-uri DIR/sklearn`) and
DIR/data/ (the CSVs they were packed with, and DIR/data/requests.csv to send).

- sklearn: SimpleImputer -> StandardScaler -> LogisticRegression, binary, exported by skl2onnx.
- lightgbm: LGBMClassifier, three classes, missing values left to LightGBM, exported by onnxmltools.

Both converters end a classifier with ZipMap by default (probabilities as a sequence of
{class: probability} maps). The model server serves such a model as it is: it reads the [N, C]
tensor ZipMap is made from (docs/serving.md, "ONNX classifiers and ZipMap"). `--no-zipmap` exports
without ZipMap (skl2onnx `options={...: {"zipmap": False}}`, onnxmltools `zipmap=False`), which gives
the same served predictions. Models are kept in memory and written only as ONNX: nothing is pickled.

Feature values are multiples of 1/16: LightGBM splits at midpoints of training values in double
precision and ONNX tree ensembles compare in float32, so a value that sits between a double threshold
and its float32 rounding would go the other way. Midpoints of sixteenths are exact in float32; with
real data, pack's own check on held-out rows tells whether an export agrees.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

FEATURES = ["tenure", "seats", "logins", "tickets", "spend", "nps"]
LABEL = "label"


def generate(
    n: int, seed: int
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """n rows (NaN = missing), a binary label and a three-class label."""
    rng = np.random.default_rng(seed)
    x = np.round(rng.normal(0.0, 2.0, (n, len(FEATURES))) * 16) / 16
    x = np.clip(x, -8.0, 8.0)
    x[rng.random(x.shape) < 0.1] = np.nan
    filled = np.nan_to_num(x)
    score = 0.8 * filled[:, 0] - 0.5 * filled[:, 2] + 0.3 * filled[:, 4] + rng.normal(0, 1.0, n)
    binary = (score > 0).astype(np.int64)
    three = np.digitize(score, [-1.0, 1.0]).astype(np.int64)
    return x, binary, three


def write_csv(path: Path, x: npt.NDArray[np.float64], y: npt.NDArray[np.int64] | None = None) -> None:
    header = FEATURES + ([LABEL] if y is not None else [])
    data = x if y is None else np.column_stack([x, y])
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [",".join(header)]
    # repr-exact: sixteenths print exactly with %.10g
    lines += [",".join("" if np.isnan(v) else f"{v:.10g}" for v in row) for row in data]
    path.write_text("\n".join(lines) + "\n")


def train_sklearn(x: npt.NDArray[np.float64], y: npt.NDArray[np.int64]) -> Any:
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(SimpleImputer(strategy="median"), StandardScaler(), LogisticRegression()).fit(x, y)


def export_sklearn(model: Any, zipmap: bool = True) -> bytes:
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.linear_model import LogisticRegression

    options = None if zipmap else {LogisticRegression: {"zipmap": False}}
    onnx_model = to_onnx(
        model, initial_types=[("input", FloatTensorType([None, len(FEATURES)]))], options=options
    )
    return bytes(onnx_model.SerializeToString())


def train_lightgbm(x: npt.NDArray[np.float64], y: npt.NDArray[np.int64], seed: int) -> Any:
    import lightgbm as lgb

    clf = lgb.LGBMClassifier(n_estimators=40, num_leaves=15, learning_rate=0.1, random_state=seed, verbose=-1)
    return clf.fit(x, y)


def export_lightgbm(model: Any, zipmap: bool = True) -> bytes:
    from onnxmltools import convert_lightgbm
    from onnxmltools.convert.common.data_types import FloatTensorType

    onnx_model = convert_lightgbm(
        model, initial_types=[("input", FloatTensorType([None, len(FEATURES)]))], zipmap=zipmap
    )
    return bytes(onnx_model.SerializeToString())


def build(out: Path, rows: int = 3000, seed: int = 3, zipmap: bool = True) -> dict[str, Any]:
    """Train both models, export and pack them; {name: (fitted model, bundle folder)}."""
    from modeldeploy_serving.pack import pack

    x, binary, three = generate(rows, seed)
    cut = int(rows * 0.8)
    data = out / "data"
    write_csv(data / "requests.csv", generate(200, seed + 100)[0])
    built: dict[str, Any] = {}
    for name, labels in (("sklearn", binary), ("lightgbm", three)):
        if name == "sklearn":
            model = train_sklearn(x[:cut], labels[:cut])
            onnx_bytes = export_sklearn(model, zipmap)
        else:
            model = train_lightgbm(x[:cut], labels[:cut], seed)
            onnx_bytes = export_lightgbm(model, zipmap)
        folder = data / name
        write_csv(folder / "train.csv", x[:cut], labels[:cut])
        write_csv(folder / "validation.csv", x[cut:], labels[cut:])
        (folder / "model.onnx").write_bytes(onnx_bytes)
        result = pack(
            model=folder / "model.onnx",
            onnx=None,
            train_data=folder / "train.csv",
            validation_data=folder / "validation.csv",
            label=LABEL,
            name=name,
            version="v1",
            out=out / name,
            force=True,
        )
        built[name] = (model, result.out)
    return built


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--rows", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--no-zipmap", action="store_true", help="export probabilities as a plain tensor")
    args = parser.parse_args(argv)
    built = build(args.out, args.rows, args.seed, zipmap=not args.no_zipmap)
    for name, (_, folder) in built.items():
        print(f"{name}: modeldeploy serve --model-uri {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
