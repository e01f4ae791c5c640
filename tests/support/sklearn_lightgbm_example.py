"""The scikit-learn / LightGBM example's module (examples/sklearn_lightgbm/make_models.py), imported once
per test process: tests train, export and pack with the same code the example runs."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

from script_module import script_module

REPO = Path(__file__).resolve().parents[2]


def load_example() -> ModuleType:
    return script_module(
        "sklearn_lightgbm_make_models", REPO / "examples" / "sklearn_lightgbm" / "make_models.py"
    )
