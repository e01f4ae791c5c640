"""spec.model.format is auto|xgboost|onnx (issue 13): the server is told it and refuses a bundle it
cannot serve as that format; the operator reads the refusal from the server like a version mismatch
(issue 12, one path: ObservedDeployment.bundle_refused) and reports it as Degraded with reason
ModelFormatMismatch and one Event. Existing revisions keep their hashes."""

from __future__ import annotations

from typing import Any

import pytest

from modeldeploy_operator.domain.manifests import build_serving_deployment
from modeldeploy_operator.domain.observed import (
    BundleRefusal,
    ServerReport,
    mismatch_message,
    parse_server_report,
    with_server_reports,
)
from modeldeploy_operator.domain.resource import ModelDeploymentRef
from modeldeploy_operator.domain.revision import resolve_variants
from modeldeploy_operator.domain.spec import ModelDeploymentSpec

from modeldeploy_builders import make_spec, observed_for
from rollout_sim import Sim, revision_of, rollout_spec

D1, D2 = "1" * 64, "2" * 64
S = "b" * 64
OWNER = ModelDeploymentRef(name="churn", namespace="ml", uid="u-1")

# Revision hashes of specs written before `auto` (computed on main at 72daf08, before the format
# variable existed): an operator upgrade must start no rollout of any of them.
PINNED: list[tuple[dict[str, Any], list[str]]] = [
    (
        {"model": {"uri": "s3://models/churn/v1", "format": "xgboost", "version": "1", "sha256": S}},
        ["a6a681ec3e"],
    ),
    (
        {"model": {"uri": "s3://models/churn/v1", "format": "onnx", "version": "1", "sha256": S}},
        ["ec31bf08f4"],
    ),
    (
        {"model": {"uri": "https://models.example.com/churn/v3", "format": "xgboost", "version": "3"}},
        ["1af8685e0a"],
    ),
    (
        {
            "model": {
                "uri": "s3://m/c",
                "format": "onnx",
                "version": "2",
                "storage": {"s3EndpointURL": "http://minio:9000", "secretName": "creds"},
            },
            "server": {"workers": 2, "logLevel": "debug"},
        },
        ["3dc7773189"],
    ),
    (
        {
            "model": {"uri": "/models/a", "format": "xgboost", "version": "1"},
            "variants": [
                {"name": "control", "weight": 50},
                {
                    "name": "treatment",
                    "weight": 50,
                    "model": {"uri": "gs://b/m", "format": "onnx", "version": "2"},
                },
            ],
        },
        ["f751c87bbc", "0d599032de"],
    ),
]


@pytest.mark.parametrize(("raw", "hashes"), PINNED)
def test_specs_written_before_auto_keep_their_revision_hashes(raw: dict[str, Any], hashes: list[str]) -> None:
    spec = ModelDeploymentSpec.model_validate(raw)
    assert [v.revision for v in resolve_variants("churn", spec)] == hashes


def test_the_format_defaults_to_auto_and_is_part_of_the_revision() -> None:
    base = {"uri": "s3://models/churn/v1", "version": "1", "sha256": S}
    auto = resolve_variants("churn", make_spec(model=base))[0]
    assert auto.model.format == "auto"
    assert auto.settings.model_format == "auto"
    revisions = {
        fmt: resolve_variants("churn", make_spec(model=base | {"format": fmt}))[0].revision
        for fmt in ("xgboost", "onnx")
    }
    assert len({auto.revision, *revisions.values()}) == 3
    assert revisions["xgboost"] == "a6a681ec3e"


@pytest.mark.parametrize(("fmt", "env"), [("xgboost", "xgboost"), ("onnx", "onnx"), ("auto", None)])
def test_the_server_is_told_the_specs_format(fmt: str, env: str | None) -> None:
    spec = make_spec(model={"uri": "s3://models/churn/v1", "format": fmt, "version": "1"})
    variant = resolve_variants("churn", spec)[0]
    deployment = build_serving_deployment(OWNER, variant, image="serving:1", replicas=1)
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    told = {e["name"]: e["value"] for e in container["env"]}
    # auto is the server's default: not written, as every setting at its default.
    assert told.get("MODELDEPLOY_SERVER_MODEL_FORMAT") == env


# --- the server's answer, parsed and checked ------------------------------------------------------


def refused_body(found: str = "onnx", expected: str = "xgboost", sha256: str = D2) -> dict[str, Any]:
    return {
        "ready": False,
        "state": "failed",
        "error": "FormatMismatchError: bundle is onnx, spec.model.format says xgboost ...",
        "reason": "ModelFormatMismatch",
        "refused": {"format": found, "version": "1", "sha256": sha256, "expectedFormat": expected},
    }


def test_a_server_that_refused_its_bundle_for_its_format_says_both_formats() -> None:
    report = parse_server_report("r1", 503, refused_body())
    assert report == ServerReport(
        "r1",
        "failed",
        version="1",
        sha256=D2,
        reason="ModelFormatMismatch",
        format="onnx",
        expected_format="xgboost",
    )
    assert report.final


@pytest.mark.parametrize(
    "refused",
    [
        {"format": "pickle", "expectedFormat": "auto"},  # auto never refuses anything
        {"format": "onnx\n", "expectedFormat": "xgboost\n"},
        {"format": ["onnx"], "expectedFormat": "auto"},
        {"format": "ONNX", "expectedFormat": 1},
    ],
)
def test_formats_of_the_wrong_shape_are_left_out(refused: dict[str, Any]) -> None:
    body = refused_body() | {"refused": refused}
    report = parse_server_report("r1", 503, body)
    assert report is not None
    assert (report.format, report.expected_format) == (None, None)
    assert report.reason == "ModelFormatMismatch"
    message = mismatch_message(report)
    assert "of another format" in message
    assert "spec.model.format says another format" in message


@pytest.mark.parametrize(
    ("found", "expected", "says"),
    [
        ("onnx", "xgboost", "bundle is onnx, spec.model.format says xgboost"),
        (
            "xgboost",
            "onnx",
            "bundle is xgboost, spec.model.format says onnx"
            " (an xgboost bundle serves as onnx only with an ONNX export)",
        ),
    ],
)
def test_the_deployment_carries_the_refusal_with_its_reason(found: str, expected: str, says: str) -> None:
    deployment = observed_for(make_spec(), ready=0)
    report = ServerReport(
        deployment.revision, "failed", "1", D2, "ModelFormatMismatch", None, found, expected
    )
    [seen] = with_server_reports([deployment], [report, ServerReport(deployment.revision, "ready", "1", D1)])
    assert seen.bundle_refused == BundleRefusal("ModelFormatMismatch", mismatch_message(report))
    assert says in seen.bundle_refused.message
    assert deployment.revision in seen.bundle_refused.message
    assert D2[:12] in seen.bundle_refused.message
    assert seen.loaded_digests == {D1}


def test_one_refusal_is_chosen_the_same_way_whatever_order_the_pods_answered_in() -> None:
    deployment = observed_for(make_spec(), ready=0)
    rev = deployment.revision
    a = ServerReport(rev, "failed", "1", D2, "ModelFormatMismatch", None, "onnx", "xgboost")
    b = ServerReport(rev, "failed", "3", D1, "ModelVersionMismatch", "1")
    first = with_server_reports([deployment], [a, b])[0].bundle_refused
    assert first == with_server_reports([deployment], [b, a])[0].bundle_refused


# --- the planner: Degraded with the reason, one Event ---------------------------------------------


def _format_spec(version: str, fmt: str) -> ModelDeploymentSpec:
    raw = rollout_spec(version).model_dump(by_alias=True, exclude_none=True)
    raw["model"]["format"] = fmt
    return ModelDeploymentSpec.model_validate(raw)


def test_a_first_deploy_whose_servers_refuse_the_format_is_degraded_with_one_event() -> None:
    spec = _format_spec("1", "xgboost")
    sim = Sim(spec)
    rev = revision_of(spec)
    sim.unready.add(rev)
    sim.step()
    sim.server_reports = [
        ServerReport(rev, "failed", "1", D2, "ModelFormatMismatch", None, "onnx", "xgboost")
    ]
    sim.step(1)
    assert sim.status is not None
    assert sim.condition("Degraded") == ("True", "ModelFormatMismatch")
    assert sim.status.phase == "Degraded"
    assert sim.reasons().count("ModelFormatMismatch") == 1
    assert sim.status.message is not None
    assert "bundle is onnx, spec.model.format says xgboost" in sim.status.message
    sim.step(1)
    assert sim.condition("Degraded") == ("True", "ModelFormatMismatch")
    assert "ModelFormatMismatch" not in sim.reasons()  # said once
    # Fixed (the spec now says auto: a new revision whose servers load the bundle): the condition clears.
    sim.spec = _format_spec("1", "auto")
    sim.server_reports = []
    sim.unready.clear()
    sim.step(1)
    sim.step(1)
    assert sim.condition("Degraded")[0] == "False"


def test_a_canary_whose_servers_refuse_the_format_is_stopped_with_the_reason() -> None:
    sim = Sim(rollout_spec("1"))
    sim.step()
    sim.step(1)
    assert sim.status is not None
    assert sim.status.phase == "Ready"
    sim.spec = _format_spec("2", "xgboost")
    new = revision_of(sim.spec)
    sim.unready.add(new)
    sim.step()
    sim.server_reports = [
        ServerReport(new, "failed", "2", D2, "ModelFormatMismatch", None, "onnx", "xgboost")
    ]
    sim.step(1)
    assert sim.status.aborted
    assert sim.condition("Degraded") == ("True", "ModelFormatMismatch")
    assert sim.reasons().count("ModelFormatMismatch") == 1
    entry = next(e for e in sim.status.history if e.hash == new)
    assert entry.outcome == "Aborted"
    assert entry.message is not None
    assert entry.message.startswith("ModelFormatMismatch: ")
