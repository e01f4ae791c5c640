"""The scikit-learn / LightGBM example's module (examples/sklearn_lightgbm/make_models.py), imported once
per test process: tests train, export and pack with the same code the example runs."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[2]


def load_example() -> ModuleType:
    name = "sklearn_lightgbm_make_models"
    if name in sys.modules:
        return sys.modules[name]
    path = REPO / "examples" / "sklearn_lightgbm" / "make_models.py"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
