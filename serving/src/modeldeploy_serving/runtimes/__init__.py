"""One small class per model format. Each takes verified bytes and predicts on float32 [N, F] arrays.

A runtime returns class probabilities [N, C] for classifiers and values [N] for regressors; naming
outputs and deriving labels is the model's job (model.py), so every runtime answers the same way.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import numpy.typing as npt


class Runtime(Protocol):
    name: str
    """What executes the model: "onnxruntime" or "xgboost"."""

    def predict(self, x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]: ...
