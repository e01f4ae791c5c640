import datetime as dt

from modeldeploy_operator.domain.conditions import find_condition
from modeldeploy_operator.domain.observed import ObservedDeployment
from modeldeploy_operator.domain.revision import resolve_variants
from modeldeploy_operator.domain.status import compute_status, status_for_invalid_spec, with_error
from modeldeploy_operator.domain.status_model import ModelDeploymentStatus

from modeldeploy_builders import BASE_MODEL, NOW, make_spec, observed_for

LATER = NOW + dt.timedelta(minutes=1)


def _conditions(status: ModelDeploymentStatus) -> dict[str, tuple[str, str]]:
    return {c.type: (c.status, c.reason) for c in status.conditions}


def test_nothing_observed_is_pending_and_not_ready() -> None:
    status = compute_status("churn", make_spec(), [], now=NOW, generation=1)
    assert status.phase == "Pending"
    assert _conditions(status) == {
        "Ready": ("False", "NoReadyReplicas"),
        "Progressing": ("True", "ReplicasUpdating"),
        "Degraded": ("False", "AsExpected"),
    }
    assert status.observed_generation == 1
    assert status.ready == "0/2"
    assert [e.outcome for e in status.history] == ["Progressing"]


def test_some_ready_pods_make_it_ready_while_still_progressing() -> None:
    spec = make_spec()
    status = compute_status("churn", spec, [observed_for(spec, ready=1)], now=NOW)
    assert status.phase == "Progressing"
    assert _conditions(status)["Ready"] == ("True", "ReplicasReady")
    assert _conditions(status)["Progressing"] == ("True", "ReplicasUpdating")


def test_all_ready_is_ready_and_records_the_revision_as_promoted() -> None:
    spec = make_spec()
    variant = resolve_variants("churn", spec)[0]
    status = compute_status("churn", spec, [observed_for(spec, ready=2)], now=NOW, generation=4)
    assert status.phase == "Ready"
    assert _conditions(status) == {
        "Ready": ("True", "ReplicasReady"),
        "Progressing": ("False", "RolloutComplete"),
        "Degraded": ("False", "AsExpected"),
    }
    assert (status.ready, status.model_version, status.stable_revision) == ("2/2", "1", variant.revision)
    assert status.canary_weight == 0
    (entry,) = status.history
    assert (entry.revision, entry.hash, entry.outcome, entry.model_uri) == (
        1,
        variant.revision,
        "Promoted",
        BASE_MODEL["uri"],
    )
    (variant_status,) = status.variants
    assert (variant_status.name, variant_status.weight, variant_status.ready_replicas) == ("default", 100, 2)
    assert all(c.observed_generation == 4 for c in status.conditions)


def test_recomputing_changes_nothing() -> None:
    spec = make_spec()
    observed = [observed_for(spec, ready=2)]
    first = compute_status("churn", spec, observed, now=NOW, generation=1)
    second = compute_status("churn", spec, observed, now=LATER, generation=1, previous=first)
    assert second == first
    assert second.to_patch() == first.to_patch()


def test_losing_every_pod_after_being_ready_is_degraded() -> None:
    spec = make_spec()
    ready = compute_status("churn", spec, [observed_for(spec, ready=2)], now=NOW)
    lost = compute_status("churn", spec, [observed_for(spec, ready=0)], now=LATER, previous=ready)
    assert lost.phase == "Degraded"
    assert _conditions(lost)["Degraded"] == ("True", "ReplicasUnavailable")
    assert _conditions(lost)["Ready"] == ("False", "NoReadyReplicas")
    ready_condition = find_condition(lost.conditions, "Ready")
    assert ready_condition is not None
    assert ready_condition.last_transition_time == LATER.replace(microsecond=0)


def test_progress_deadline_exceeded_is_degraded() -> None:
    spec = make_spec()
    status = compute_status("churn", spec, [observed_for(spec, ready=0, deadline_exceeded=True)], now=NOW)
    assert status.phase == "Degraded"
    assert _conditions(status)["Progressing"] == ("False", "ProgressDeadlineExceeded")
    assert _conditions(status)["Degraded"] == ("True", "ProgressDeadlineExceeded")


def test_old_revision_keeps_serving_until_the_new_one_is_ready() -> None:
    v1 = make_spec()
    v2 = make_spec(model={**BASE_MODEL, "uri": "s3://models/churn/v2", "version": "2"})
    old, new = observed_for(v1, ready=2), observed_for(v2, ready=0)
    serving = compute_status("churn", v1, [old], now=NOW)
    status = compute_status("churn", v2, [old, new], now=LATER, previous=serving)
    assert status.phase == "Progressing"
    assert _conditions(status)["Ready"] == ("True", "ReplicasReady")
    assert _conditions(status)["Degraded"] == ("False", "AsExpected")
    assert (status.model_version, status.stable_revision) == ("1", old.revision)
    roles = {r.revision: (r.role, r.weight) for r in status.variants[0].revisions}
    assert roles == {old.revision: ("stable", 100), new.revision: ("preview", 0)}
    assert [(e.hash, e.outcome) for e in status.history] == [
        (old.revision, "Promoted"),
        (new.revision, "Progressing"),
    ]

    done = compute_status("churn", v2, [old, observed_for(v2, ready=2)], now=LATER, previous=status)
    assert (done.model_version, done.stable_revision) == ("2", new.revision)
    assert [e.outcome for e in done.history] == ["Promoted", "Promoted"]
    assert [e.revision for e in done.history] == [1, 2]


def test_unready_shadow_variant_does_not_block_ready() -> None:
    spec = make_spec(variants=[{"name": "live", "weight": 100}, {"name": "shadow", "weight": 0}])
    observed = [observed_for(spec, ready=2, variant_index=0), observed_for(spec, ready=0, variant_index=1)]
    status = compute_status("churn", spec, observed, now=NOW)
    assert _conditions(status)["Ready"] == ("True", "ReplicasReady")
    assert status.phase == "Progressing"
    assert [v.name for v in status.variants] == ["live", "shadow"]


def test_missing_live_variant_blocks_ready() -> None:
    spec = make_spec(variants=[{"name": "a", "weight": 50}, {"name": "b", "weight": 50}])
    status = compute_status("churn", spec, [observed_for(spec, ready=2, variant_index=0)], now=NOW)
    assert _conditions(status)["Ready"] == ("False", "NoReadyReplicas")
    assert "b" in (status.message or "")


def test_paused_and_ready_is_paused() -> None:
    spec = make_spec(paused=True)
    assert compute_status("churn", spec, [observed_for(spec, ready=2)], now=NOW).phase == "Paused"


def test_foreign_deployments_are_ignored() -> None:
    spec = make_spec()
    stranger = ObservedDeployment(
        name="x", variant="other", revision="ffffffffff", replicas=1, ready_replicas=1
    )
    status = compute_status("churn", spec, [observed_for(spec, ready=2), stranger], now=NOW)
    assert status.phase == "Ready"


def test_history_is_trimmed_to_the_limit() -> None:
    status = ModelDeploymentStatus()
    for version in range(1, 6):
        spec = make_spec(model={**BASE_MODEL, "version": str(version)}, revisionHistoryLimit=3)
        status = compute_status("churn", spec, [observed_for(spec, ready=2)], now=NOW, previous=status)
    assert [e.revision for e in status.history] == [3, 4, 5]
    assert [e.model_version for e in status.history] == ["3", "4", "5"]


def test_invalid_spec_fails_without_taking_running_variants_down() -> None:
    spec = make_spec()
    running = compute_status("churn", spec, [observed_for(spec, ready=2)], now=NOW)
    failed = status_for_invalid_spec(["spec.x: bad"], now=LATER, generation=2, previous=running)
    assert failed.phase == "Failed"
    assert _conditions(failed)["Degraded"] == ("True", "InvalidSpec")
    assert _conditions(failed)["Ready"] == ("True", "ReplicasReady")  # the old spec still serves
    assert failed.last_error is not None
    assert failed.last_error.message == "spec.x: bad"
    fresh = status_for_invalid_spec(["spec.x: bad"], now=LATER, generation=1)
    assert _conditions(fresh)["Ready"] == ("False", "InvalidSpec")


def test_successful_reconcile_clears_the_last_error() -> None:
    spec = make_spec()
    errored = with_error(ModelDeploymentStatus(), "ApplyRejected", "nope", now=NOW)
    assert errored.last_error is not None
    assert compute_status("churn", spec, [], now=NOW, previous=errored).last_error is None


def test_patch_is_camel_case_json() -> None:
    spec = make_spec()
    patch = compute_status("churn", spec, [observed_for(spec, ready=2)], now=NOW, generation=1).to_patch()
    assert patch["observedGeneration"] == 1
    assert patch["conditions"][0]["lastTransitionTime"] == "2026-01-02T03:04:05Z"
    assert patch["history"][0]["modelURI"] == BASE_MODEL["uri"]
    assert "canaryRevision" not in patch
