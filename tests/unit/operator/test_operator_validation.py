from typing import Any

import pytest

from modeldeploy_operator.domain.durations import parse_duration
from modeldeploy_operator.domain.quantity import parse_quantity
from modeldeploy_operator.domain.validation import InvalidSpecError, parse_spec, validate_name, validate_spec

from modeldeploy_builders import BASE_MODEL, make_spec

CHECKS = [{"name": "errors", "type": "errorRate", "threshold": {"max": 0.01}}]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"resources": {"requests": {"cpu": "2"}, "limits": {"cpu": "1"}}},
            "spec.resources.requests.cpu: 2 exceeds the limit 1",
        ),
        ({"resources": {"requests": {"memory": "2Gi"}, "limits": {"memory": "1000Mi"}}}, "requests.memory"),
        ({"resources": {"requests": {"cpu": "lots"}}}, "is not a resource quantity"),
        (
            {"replicas": None, "autoscaling": {"maxReplicas": 3}},
            "spec.resources.requests.cpu: required with spec.autoscaling",
        ),
        (
            {"server": {"maxBatchRows": 10, "batching": {"enabled": True, "maxSize": 64}}},
            "batching.maxSize: 64 exceeds",
        ),
        (
            {
                "rollout": {
                    "strategy": "Canary",
                    "steps": [{"setWeight": 10}],
                    "analysis": {"interval": "1h", "checks": CHECKS},
                }
            },
            "must be shorter than spec.rollout.progressDeadlineSeconds",
        ),
        (
            {
                "rollout": {
                    "strategy": "Canary",
                    "steps": [{"setWeight": 10}, {"analysis": {"duration": "10s"}}],
                    "analysis": {"interval": "1m", "checks": CHECKS},
                }
            },
            "spec.rollout.steps[1].analysis.duration: 10s is shorter than",
        ),
        (
            {"rollout": {"strategy": "Canary", "steps": [{"setWeight": 50}, {"setWeight": 50}]}},
            "setWeight values must strictly increase",
        ),
        (
            {"variants": [{"name": "a", "weight": 60}, {"name": "b", "weight": 60}]},
            "weights must sum to 100, they sum to 120",
        ),
        (
            {"variants": [{"name": "a", "weight": 50}, {"name": "a", "weight": 50}]},
            "names must be unique, repeated: a",
        ),
        ({"model": None}, "has no model and spec.model is not set"),
        (
            {"model": {**BASE_MODEL, "uri": "https://m/x", "storage": {"s3EndpointURL": "http://s3"}}},
            "only applies to s3:// URIs",
        ),
        ({"traffic": {"provider": "gatewayAPI"}}, "gatewayAPI.parentRefs: required"),
        (
            {
                "variants": [{"name": "a", "weight": 100}, {"name": "s", "weight": 0}],
                "traffic": {"shadow": {"variant": "a"}},
            },
            "'a' must have weight 0",
        ),
        ({"traffic": {"shadow": {"variant": "nosuch"}}}, "'nosuch' is not in spec.variants"),
    ],
)
def test_semantic_problems_have_clear_messages(overrides: dict[str, Any], message: str) -> None:
    messages = validate_spec(make_spec(**overrides))
    assert any(message in m for m in messages), messages


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"replicas": None, "autoscaling": {"maxReplicas": 3}, "resources": {"requests": {"cpu": "250m"}}},
        {"resources": {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"cpu": 1, "memory": "1Gi"}}},
        {
            "variants": [{"name": "a", "weight": 100}, {"name": "s", "weight": 0}],
            "traffic": {"shadow": {"variant": "s"}},
        },
    ],
)
def test_good_specs_pass(overrides: dict[str, Any]) -> None:
    assert validate_spec(make_spec(**overrides)) == []


def test_parse_spec_turns_type_errors_into_messages() -> None:
    with pytest.raises(InvalidSpecError) as error:
        parse_spec({"model": {"uri": "s3://a", "format": "pickle", "version": "1"}, "replicas": "two"})
    assert any(m.startswith("spec.model.format:") for m in error.value.messages)
    assert any(m.startswith("spec.replicas:") for m in error.value.messages)


def test_parse_spec_rejects_fields_the_operator_does_not_know() -> None:
    with pytest.raises(InvalidSpecError, match=r"spec\.futureField"):
        parse_spec({"model": BASE_MODEL, "futureField": 1})


def test_parse_spec_runs_semantic_checks() -> None:
    with pytest.raises(InvalidSpecError, match="exceeds the limit"):
        parse_spec({"model": BASE_MODEL, "resources": {"requests": {"cpu": "2"}, "limits": {"cpu": "1"}}})
    assert parse_spec({"model": BASE_MODEL}).model is not None


@pytest.mark.parametrize(
    ("name", "ok"), [("churn", True), ("a" * 40, True), ("a" * 41, False), ("9x", False), ("a.b", False)]
)
def test_names_must_be_dns_1035_labels_of_40(name: str, ok: bool) -> None:
    assert (validate_name(name) == []) is ok


@pytest.mark.parametrize(("text", "seconds"), [("30s", 30), ("5m", 300), ("1h30m", 5400), ("1h2m3s", 3723)])
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "5", "m", "1d", "1m30"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("text", "value"),
    [("500m", "0.5"), ("1Gi", str(2**30)), ("2", "2"), ("1e3", "1000"), ("1.5k", "1500"), (3, "3")],
)
def test_quantities(text: str | int, value: str) -> None:
    assert parse_quantity(text) == parse_quantity(value)


# --- spec.drift.psiThreshold: the maximum of an inputDrift check that names none (issue 12) --------


def _drift_spec(check: dict[str, object], drift: dict[str, object] | None = None) -> dict[str, object]:
    spec: dict[str, object] = {
        "model": {"uri": "s3://m/churn/v1", "format": "onnx", "version": "1"},
        "rollout": {
            "strategy": "Canary",
            "steps": [{"setWeight": 10}],
            "analysis": {
                "checks": [{"name": "errors", "type": "errorRate", "threshold": {"max": 0.01}}, check]
            },
        },
    }
    if drift is not None:
        spec["drift"] = drift
    return spec


@pytest.mark.parametrize(
    ("check", "drift", "expected"),
    [
        ({"name": "drift", "type": "inputDrift"}, None, 0.25),  # the default psiThreshold
        ({"name": "drift", "type": "inputDrift"}, {"psiThreshold": 0.4}, 0.4),
        ({"name": "drift", "type": "inputDrift", "reference": "stable"}, {"psiThreshold": 0.1}, 0.1),
        # a threshold of its own wins
        ({"name": "drift", "type": "inputDrift", "threshold": {"max": 2.0}}, {"psiThreshold": 0.4}, 2.0),
    ],
)
def test_an_input_drift_check_without_a_threshold_fails_above_psi_threshold(
    check: dict[str, object], drift: dict[str, object] | None, expected: float
) -> None:
    from modeldeploy_operator.domain.spec import ModelDeploymentSpec

    spec = ModelDeploymentSpec.model_validate(_drift_spec(check, drift))
    assert spec.rollout.analysis is not None
    errors, found = spec.rollout.analysis.checks
    assert found.threshold.max == expected
    assert found.threshold.min is None
    assert errors.threshold.max == 0.01  # other checks untouched
    # read back from its own dump (status, views): the same spec
    assert ModelDeploymentSpec.model_validate(spec.model_dump(by_alias=True)) == spec


@pytest.mark.parametrize(
    "check",
    [
        {"name": "ks", "type": "inputDriftKS"},  # a KS distance is not a PSI: no default
        {"name": "shift", "type": "predictionShift"},
        {"name": "errors2", "type": "errorRate"},
        {"name": "drift", "type": "inputDrift", "threshold": None, "bad": 1},
    ],
)
def test_other_checks_still_need_a_threshold(check: dict[str, object]) -> None:
    from pydantic import ValidationError

    from modeldeploy_operator.domain.spec import ModelDeploymentSpec

    with pytest.raises(ValidationError):
        ModelDeploymentSpec.model_validate(_drift_spec(check))


def test_a_bad_psi_threshold_is_refused_even_when_a_check_borrows_it() -> None:
    from pydantic import ValidationError

    from modeldeploy_operator.domain.spec import ModelDeploymentSpec

    for bad in (0, -1, 11, "high"):
        with pytest.raises(ValidationError):
            ModelDeploymentSpec.model_validate(
                _drift_spec({"name": "drift", "type": "inputDrift"}, {"psiThreshold": bad})
            )
