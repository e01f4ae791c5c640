"""`kubectl modeldeploy status` with spec.effectiveness: per-arm quality from the label joiner and the
A/B verdicts, read through the API server's service proxy (a fake cluster here)."""

from __future__ import annotations

import io
from typing import Any

from modeldeploy_contract.effectiveness import (
    ABVerdict,
    ArmQuality,
    ArmWindow,
    DeploymentSummary,
    DeploymentWindow,
    EffectivenessSummary,
)
from modeldeploy_kubectl.client import ApiError
from modeldeploy_kubectl.main import EXIT_OK, run
from modeldeploy_kubectl.render import render_effectiveness

from plugin_fakes import FakeCluster, ready_body


def quality(labelled: int, accuracy: float, auc: float) -> ArmQuality:
    return ArmQuality(
        predictions=labelled * 2,
        labelled=labelled,
        positives=labelled // 2,
        coverage=0.5,
        accuracy=accuracy,
        auc=auc,
        log_loss=0.5,
        brier=0.2,
        ece=0.05,
    )


def summary() -> bytes:
    verdict = ABVerdict(
        metric="auc",
        control="a",
        treatment="b",
        control_value=0.70,
        treatment_value=0.78,
        difference=0.08,
        lower=0.05,
        upper=0.11,
        confidence=0.95,
        method="DeLong",
        labelled_control=2400,
        labelled_treatment=2500,
        samples_needed_per_arm=1200,
        labels_still_needed=0,
        verdict="TreatmentBetter",
        non_inferior=None,
        reason="the interval excludes 0",
    )
    window = DeploymentWindow(
        window_seconds=86400,
        arms=[
            ArmWindow(
                variant="a", revision="aaaa111111", model_version="1", quality=quality(2400, 0.7, 0.70)
            ),
            ArmWindow(
                variant="b", revision="bbbb222222", model_version="2", quality=quality(2500, 0.75, 0.78)
            ),
        ],
        variants=[],
        ab=[verdict],
    )
    deployments = [DeploymentSummary(deployment="churn", control_variant="a", windows=[window])]
    body = EffectivenessSummary(generated_at=0, retention_seconds=86400 * 30, deployments=deployments)
    return body.model_dump_json().encode()


def with_effectiveness(**block: Any) -> dict[str, Any]:
    body = ready_body()
    body["spec"]["effectiveness"] = block
    return body


def status(cluster: FakeCluster) -> str:
    out = io.StringIO()
    assert run(["status", "churn", "-n", "ml"], cluster=cluster, out=out, environ={}) == EXIT_OK
    return out.getvalue()


def test_status_shows_each_arm_and_the_ab_verdict() -> None:
    cluster = FakeCluster(with_effectiveness(), effectiveness=summary())
    text = status(cluster)
    assert cluster.summaries_read == [("ml", "churn")]
    assert "Effectiveness: delayed labels joined to predictions (label joiner, control a)" in text
    row = next(line for line in text.splitlines() if "bbbb222222" in line and "2500" in line)
    assert row.split() == ["24h", "b", "bbbb222222", "2", "5000", "2500", "50%", "0.75", "0.78", "0.5", "0.2"]
    assert "A/B 24h auc b - a: +0.0800 [+0.0500, +0.1100] at 95%  TreatmentBetter (labels 2500/2400)" in text


def test_without_effectiveness_the_joiner_is_not_asked() -> None:
    for body in (ready_body(), with_effectiveness(enabled=False)):
        cluster = FakeCluster(body, effectiveness=summary())
        assert "Effectiveness" not in status(cluster)
        assert cluster.summaries_read == []


def test_an_unreachable_joiner_is_one_line_not_a_failure() -> None:
    cluster = FakeCluster(with_effectiveness(), effectiveness=ApiError("API server: 503 Service Unavailable"))
    text = status(cluster)
    assert "Effectiveness: the label joiner could not be read: API server: 503 Service Unavailable" in text
    assert "Phase:" in text  # the rest of the view is there


def test_odd_answers_are_explained() -> None:
    assert render_effectiveness(
        "churn",
        b"<html>",
    )[0].startswith("Effectiveness: the label joiner's answer is not understood")
    empty = EffectivenessSummary(generated_at=0, retention_seconds=1, deployments=[]).model_dump_json()
    assert render_effectiveness("churn", empty.encode()) == [
        "Effectiveness: no predictions recorded by the label joiner yet"
    ]
    assert render_effectiveness("churn", None) == []
