"""The operator's rollout-state metrics: phase, step, weights per revision as 0-1 ratios, each check's
latest value and result; series that go when their ModelDeployment, revision or check goes."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from modeldeploy_contract import metric_names as names
from modeldeploy_operator.domain.status_model import ModelDeploymentStatus
from modeldeploy_operator.metrics import ROLLOUT_STATE, RolloutStateCollector

NOW = dt.datetime(2026, 12, 2, 8, 0, tzinfo=dt.UTC)


def canary_status(**extra: Any) -> ModelDeploymentStatus:
    return ModelDeploymentStatus.model_validate(
        {
            "phase": "Progressing",
            "stableRevision": "aaa111",
            "canaryRevision": "bbb222",
            "rolloutVariant": "default",
            "currentStepIndex": 1,
            "canaryWeight": 25,
            "variants": [
                {
                    "name": "default",
                    "weight": 100,
                    "revisions": [
                        {"revision": "aaa111", "role": "stable", "weight": 75, "readyReplicas": 2},
                        {"revision": "bbb222", "role": "canary", "weight": 25, "readyReplicas": 1},
                    ],
                }
            ],
            "analysis": {
                "revision": "bbb222",
                "checks": [
                    {
                        "name": "errorRate",
                        "result": "Pass",
                        "measurements": [
                            {"time": NOW.isoformat(), "value": 0.2, "result": "Fail"},
                            {"time": NOW.isoformat(), "value": 0.01, "result": "Pass"},
                        ],
                        "failures": 1,
                    },
                    {"name": "drift", "result": "Inconclusive", "measurements": []},
                ],
            },
            **extra,
        }
    )


def samples(collector: RolloutStateCollector) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    registry = CollectorRegistry()
    registry.register(collector)
    text = generate_latest(registry).decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(found: dict[Any, float], name: str, **labels: str) -> float | None:
    return found.get((name, tuple(sorted(labels.items()))))


KEY = {"namespace": "ml", "modeldeployment": "churn"}


def test_a_canary_is_exported_with_ratios_step_and_checks() -> None:
    collector = RolloutStateCollector()
    collector.observe("ml", "churn", canary_status())
    found = samples(collector)
    assert value(found, names.ROLLOUT_PHASE, **KEY, phase="Progressing") == 1
    assert value(found, names.ROLLOUT_PHASE, **KEY, phase="Ready") == 0
    assert len([k for k in found if k[0] == names.ROLLOUT_PHASE]) == 6
    info = {
        **KEY,
        "phase": "Progressing",
        "stable_revision": "aaa111",
        "canary_revision": "bbb222",
        "rollout_variant": "default",
    }
    assert value(found, names.ROLLOUT_INFO, **info) == 1
    assert value(found, names.ROLLOUT_STEP, **KEY) == 1
    assert value(found, names.ROLLOUT_PAUSED, **KEY) == 0
    assert value(found, names.ROLLOUT_CANARY_WEIGHT, **KEY) == 0.25
    stable = {**KEY, "variant": "default", "revision": "aaa111", "role": "stable"}
    canary = {**KEY, "variant": "default", "revision": "bbb222", "role": "canary"}
    assert value(found, names.ROLLOUT_REVISION_WEIGHT, **stable) == 0.75
    assert value(found, names.ROLLOUT_REVISION_WEIGHT, **canary) == 0.25
    assert value(found, names.ROLLOUT_REVISION_READY_REPLICAS, **canary) == 1
    check = {**KEY, "revision": "bbb222", "check": "errorRate"}
    assert value(found, names.ROLLOUT_CHECK_VALUE, **check) == 0.01  # the latest measurement
    assert value(found, names.ROLLOUT_CHECK_RESULT, **check, result="Pass") == 1
    assert value(found, names.ROLLOUT_CHECK_RESULT, **check, result="Fail") == 0
    assert value(found, names.ROLLOUT_CHECK_FAILURES, **check) == 1
    drift = {**KEY, "revision": "bbb222", "check": "drift"}
    assert value(found, names.ROLLOUT_CHECK_VALUE, **drift) is None  # no measurement: no value
    assert value(found, names.ROLLOUT_CHECK_RESULT, **drift, result="Inconclusive") == 1


def test_a_promoted_revision_takes_its_series_with_it() -> None:
    collector = RolloutStateCollector()
    collector.observe("ml", "churn", canary_status())
    collector.observe(
        "ml",
        "churn",
        ModelDeploymentStatus.model_validate(
            {
                "phase": "Ready",
                "stableRevision": "bbb222",
                "variants": [
                    {
                        "name": "default",
                        "weight": 100,
                        "revisions": [{"revision": "bbb222", "role": "stable", "weight": 100}],
                    }
                ],
            }
        ),
    )
    found = samples(collector)
    revisions = {dict(k[1])["revision"] for k in found if k[0] == names.ROLLOUT_REVISION_WEIGHT}
    assert revisions == {"bbb222"}
    assert value(found, names.ROLLOUT_STEP, **KEY) is None  # no rollout, no step
    assert not [k for k in found if k[0].startswith("modeldeploy_rollout_check")]
    assert value(found, names.ROLLOUT_CANARY_WEIGHT, **KEY) == 0


def test_a_deleted_modeldeployment_leaves_no_series() -> None:
    collector = RolloutStateCollector()
    collector.observe("ml", "churn", canary_status())
    collector.observe("ml", "other", ModelDeploymentStatus())
    collector.forget("ml", "churn")
    collector.forget("ml", "never-seen")  # harmless
    found = samples(collector)
    assert {dict(k[1])["modeldeployment"] for k in found} == {"other"}


def test_series_are_bounded_by_what_exists() -> None:
    collector = RolloutStateCollector()
    for round_ in range(50):  # fifty rollouts, each with a fresh canary revision
        status = canary_status(canaryRevision=f"rev{round_}")
        collector.observe("ml", "churn", status)
    assert len(samples(collector)) == len(
        samples(_with(RolloutStateCollector(), "ml", "churn", canary_status()))
    )


def _with(collector: RolloutStateCollector, namespace: str, name: str, status: Any) -> RolloutStateCollector:
    collector.observe(namespace, name, status)
    return collector


def test_the_process_collector_is_registered() -> None:
    from prometheus_client import REGISTRY

    ROLLOUT_STATE.observe("unit-test", "md", ModelDeploymentStatus(phase="Ready"))
    try:
        assert (
            REGISTRY.get_sample_value(
                names.ROLLOUT_PHASE, {"namespace": "unit-test", "modeldeployment": "md", "phase": "Ready"}
            )
            == 1
        )
    finally:
        ROLLOUT_STATE.forget("unit-test", "md")
    assert (
        REGISTRY.get_sample_value(
            names.ROLLOUT_PHASE, {"namespace": "unit-test", "modeldeployment": "md", "phase": "Ready"}
        )
        is None
    )


def test_a_reconcile_exports_the_status_it_wrote_and_not_one_it_failed_to_write() -> None:
    from prometheus_client import REGISTRY
    from test_operator_status_url import RecordingApi, body

    from modeldeploy_operator.config import OperatorSettings
    from modeldeploy_operator.k8s.api import TransientApiError
    from modeldeploy_operator.reconciler import Reconciler

    labels = {"namespace": "ml", "modeldeployment": "churn"}
    api = RecordingApi()
    try:
        Reconciler(api, OperatorSettings()).reconcile(body())  # type: ignore[arg-type]
        (written,) = api.status_writes
        phase = {**labels, "phase": written["phase"]}
        assert REGISTRY.get_sample_value(names.ROLLOUT_PHASE, phase) == 1
        ROLLOUT_STATE.forget("ml", "churn")

        class Conflicting(RecordingApi):
            def patch_status(self, *args: Any, **kwargs: Any) -> None:
                raise TransientApiError("409 conflict")

        with pytest.raises(TransientApiError):
            Reconciler(Conflicting(), OperatorSettings()).reconcile(body())  # type: ignore[arg-type]
        assert REGISTRY.get_sample_value(names.ROLLOUT_PHASE, phase) is None
    finally:
        ROLLOUT_STATE.forget("ml", "churn")
