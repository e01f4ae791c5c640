"""The churn example's model-making module (examples/churn/make_models.py), imported once per test
process: tests train, export and pack small models with the same code the demo uses."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

from script_module import script_module

REPO = Path(__file__).resolve().parents[2]


def load_churn() -> ModuleType:
    return script_module("churn_make_models", REPO / "examples" / "churn" / "make_models.py")
