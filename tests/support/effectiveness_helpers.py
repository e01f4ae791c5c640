"""Shared pieces of the effectiveness tests on the local cluster (issue 15): the churn example's golden
customers as callers, their predictions through a ModelDeployment's router (each caller keeping the
request id and the answer it got), their labels "later" through the router's feedback route, the
label joiner's summary, and the quality and A/B interval computed from the callers' own answers with
scikit-learn and numpy, not with the product's statistics (modeldeploy_contract.effectiveness)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from statistics import NormalDist
from types import ModuleType
from typing import Any

import httpx
import numpy as np
from sklearn.metrics import accuracy_score, roc_auc_score

from script_module import script_module

REPO = Path(__file__).resolve().parents[2]
PLUGIN = str(Path(sys.executable).parent / "kubectl-modeldeploy")
Rows = list[tuple[list[float | None], int]]


def demo_ab() -> ModuleType:
    """hack/demo_ab.py, the A/B part of `make demo` (a script, not a package): imported once."""
    return script_module("modeldeploy_demo_ab", REPO / "hack" / "demo_ab.py")


def golden(bundles: Path) -> Rows:
    """(features, truth) of the churn example's golden rows, read as the demo reads them: the customers
    whose truth (did they stay?) arrives "later"."""
    rows: Rows = demo_ab().golden(bundles / "data" / "golden.csv")
    return rows


@dataclass(frozen=True)
class Answer:
    """What one caller got back, and the truth that arrives later."""

    variant: str
    revision: str
    model_version: str
    predicted: int
    score: float
    """P(class 1): what the model server records for the joiner."""
    truth: int


def predict(
    http: httpx.Client,
    router: str,
    rows: Rows,
    prefix: str,
    *,
    name: str = "churn",
    headers: dict[str, str] | None = None,
) -> dict[str, Answer]:
    """request id -> answer, one request per row, each from its own user (`X-User-Id: prefix-i`, the
    sticky key) plus `headers` (e.g. a variant pin)."""
    seen = {}
    for i, (features, truth) in enumerate(rows):
        body = {
            "inputs": [{"name": "input", "datatype": "FP64", "shape": [1, len(features)], "data": features}]
        }
        sent = {"X-User-Id": f"{prefix}-{i}", **(headers or {})}
        answer = http.post(f"{router}/v2/models/{name}/infer", json=body, headers=sent)
        assert answer.status_code == 200, answer.text
        outputs = {o["name"]: o["data"] for o in answer.json()["outputs"]}
        seen[answer.headers["x-request-id"]] = Answer(
            variant=answer.headers["x-modeldeploy-variant"],
            revision=answer.headers["x-modeldeploy-revision"],
            model_version=answer.headers["x-modeldeploy-model-version"],
            predicted=int(outputs["label"][0]),
            score=float(outputs["probabilities"][1]),
            truth=truth,
        )
    return seen


def deployment_summary(joiner: str, name: str = "churn") -> dict[str, Any] | None:
    """The joiner's summary of one deployment (`GET /v1/effectiveness?fresh=1`), or None before it has
    a prediction of it."""
    body = httpx.get(f"{joiner}/v1/effectiveness", params={"fresh": 1}, timeout=30).json()
    return next((d for d in body["deployments"] if d["deployment"] == name), None)


def window_of(deployment: dict[str, Any], seconds: float) -> dict[str, Any]:
    return next(w for w in deployment["windows"] if w["window_seconds"] == seconds)


def summary_arms(
    joiner: str, name: str = "churn", window_seconds: float | None = None
) -> dict[tuple[str, str], dict[str, Any]]:
    """(variant, revision) -> quality over one of the joiner's windows (default: its longest)."""
    deployment = deployment_summary(joiner, name)
    if deployment is None:
        return {}
    window = deployment["windows"][-1] if window_seconds is None else window_of(deployment, window_seconds)
    return {(a["variant"], a["revision"]): a["quality"] for a in window["arms"]}


def recorded(joiner: str, name: str = "churn") -> int:
    """Prediction records the joiner holds for `name` in its longest window (a wait_for probe)."""
    return sum(q["predictions"] for q in summary_arms(joiner, name).values())


def send_labels(
    http: httpx.Client, router: str, answers: dict[str, Answer], name: str = "churn"
) -> dict[str, Any]:
    """Every answer's truth, in one batch through the router's feedback route; the joiner's answer."""
    labels = [{"request_id": rid, "label": a.truth} for rid, a in answers.items()]
    answer = http.post(f"{router}/v2/models/{name}/feedback", json={"labels": labels}, timeout=60)
    assert answer.status_code == 200, answer.text
    result: dict[str, Any] = answer.json()
    return result


def quality(answers: Iterable[Answer]) -> tuple[float, float]:
    """(accuracy, AUC) of these answers against their truth, by scikit-learn."""
    mine = list(answers)
    truth = [a.truth for a in mine]
    accuracy = float(accuracy_score(truth, [a.predicted for a in mine]))
    return accuracy, float(roc_auc_score(truth, [a.score for a in mine]))


def delong(answers: Iterable[Answer]) -> tuple[float, float]:
    """(AUC, its DeLong variance) from the full matrix of positive-negative comparisons (numpy)."""
    mine = list(answers)
    scores = np.array([a.score for a in mine])
    truth = np.array([a.truth for a in mine])
    positives, negatives = scores[truth == 1], scores[truth == 0]
    above = (positives[:, None] > negatives[None, :]) + 0.5 * (positives[:, None] == negatives[None, :])
    v10, v01 = above.mean(axis=1), above.mean(axis=0)
    variance = v10.var(ddof=1) / len(positives) + v01.var(ddof=1) / len(negatives)
    return float(above.mean()), float(variance)


def auc_difference_interval(
    control: Iterable[Answer], treatment: Iterable[Answer], confidence: float = 0.95
) -> tuple[float, float, float]:
    """(AUC treatment - control, lower, upper): independent arms, so the variances add."""
    auc_c, var_c = delong(control)
    auc_t, var_t = delong(treatment)
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    difference, spread = auc_t - auc_c, z * float(np.sqrt(var_c + var_t))
    return difference, difference - spread, difference + spread


def plugin_status(kubeconfig: Path, namespace: str, name: str) -> str:
    """`kubectl modeldeploy status NAME` as a user runs it."""
    return subprocess.run(
        [PLUGIN, "--kubeconfig", str(kubeconfig), "-n", namespace, "status", name],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
