"""Status told by the rollout planner outside a rollout (Immediate strategy, first deploys, steady state),
plus the invalid-spec and lastError helpers of domain/status.py."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from hypothesis import given, settings
from hypothesis import strategies as st

from modeldeploy_operator.domain.conditions import find_condition
from modeldeploy_operator.domain.observed import ObservedDeployment
from modeldeploy_operator.domain.revision import resolve_variants
from modeldeploy_operator.domain.rollout import plan
from modeldeploy_operator.domain.spec import ModelDeploymentSpec
from modeldeploy_operator.domain.status import status_for_invalid_spec, with_error
from modeldeploy_operator.domain.status_model import ModelDeploymentStatus

from modeldeploy_builders import BASE_MODEL, NOW, make_spec, observed_for

LATER = NOW + dt.timedelta(minutes=1)
V2_MODEL = {**BASE_MODEL, "uri": "s3://models/churn/v2", "version": "2"}


def _status(
    spec: ModelDeploymentSpec,
    observed: Sequence[ObservedDeployment],
    *,
    now: dt.datetime = NOW,
    previous: ModelDeploymentStatus | None = None,
    generation: int | None = None,
) -> ModelDeploymentStatus:
    """The planner's status, with the previous status read back as the API server would hand it."""
    if previous is not None:
        previous = ModelDeploymentStatus.model_validate(previous.to_patch())
    return plan("churn", spec, observed, [], now, previous, generation=generation).status


def _conditions(status: ModelDeploymentStatus) -> dict[str, tuple[str, str]]:
    return {c.type: (c.status, c.reason) for c in status.conditions}


def _roles(status: ModelDeploymentStatus, variant: int = 0) -> dict[str, tuple[str, int]]:
    return {r.revision: (r.role, r.weight) for r in status.variants[variant].revisions}


def test_nothing_observed_is_pending_and_not_ready() -> None:
    spec = make_spec()
    status = _status(spec, [], generation=1)
    assert status.phase == "Pending"
    assert _conditions(status) == {
        "Ready": ("False", "NoReadyReplicas"),
        "Progressing": ("True", "ReplicasUpdating"),
        "Degraded": ("False", "AsExpected"),
        "SpecDiverged": ("False", "AsSpecified"),  # the planner's fourth condition
    }
    assert status.observed_generation == 1
    assert status.ready == "0/2"
    assert [e.outcome for e in status.history] == ["Progressing"]
    # Planner: a first deploy has nothing to keep serving, so its revision is the stable one at once.
    assert _roles(status) == {resolve_variants("churn", spec)[0].revision: ("stable", 100)}


def test_some_ready_pods_make_it_ready_while_still_progressing() -> None:
    spec = make_spec()
    status = _status(spec, [observed_for(spec, ready=1)])
    assert status.phase == "Progressing"
    assert _conditions(status)["Ready"] == ("True", "ReplicasReady")
    assert _conditions(status)["Progressing"] == ("True", "ReplicasUpdating")
    assert (status.ready, status.ready_replicas) == ("1/2", 1)
    assert [e.outcome for e in status.history] == ["Progressing"]


def test_all_ready_is_ready_and_records_the_revision_as_promoted() -> None:
    spec = make_spec()
    variant = resolve_variants("churn", spec)[0]
    status = _status(spec, [observed_for(spec, ready=2)], generation=4)
    assert status.phase == "Ready"
    assert _conditions(status) == {
        "Ready": ("True", "ReplicasReady"),
        "Progressing": ("False", "RolloutComplete"),
        "Degraded": ("False", "AsExpected"),
        "SpecDiverged": ("False", "AsSpecified"),  # the planner's fourth condition
    }
    assert (status.ready, status.model_version, status.stable_revision) == ("2/2", "1", variant.revision)
    assert (status.replicas, status.ready_replicas) == (2, 2)
    assert status.canary_weight == 0
    assert status.canary_revision is None
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
    first = _status(spec, observed, generation=1)
    second = _status(spec, observed, now=LATER, generation=1, previous=first)
    assert second == first
    assert second.to_patch() == first.to_patch()


def test_losing_every_pod_after_being_ready_is_degraded() -> None:
    spec = make_spec()
    ready = _status(spec, [observed_for(spec, ready=2)])
    lost = _status(spec, [observed_for(spec, ready=0)], now=LATER, previous=ready)
    assert lost.phase == "Degraded"
    assert _conditions(lost)["Degraded"] == ("True", "ReplicasUnavailable")
    assert _conditions(lost)["Ready"] == ("False", "NoReadyReplicas")
    assert lost.ready == "0/2"
    assert [e.outcome for e in lost.history] == [
        "Promoted"
    ]  # it was promoted; losing pods changes nothing there
    ready_condition = find_condition(lost.conditions, "Ready")
    assert ready_condition is not None
    assert ready_condition.last_transition_time == LATER.replace(microsecond=0)


def test_losing_every_pod_stays_degraded_until_a_pod_is_ready_again() -> None:
    """Degraded ReplicasUnavailable lasted one pass: the next one read Ready False (written by the
    first) and set Degraded False with nothing changed, an extra status write (issue 16's idle cost)."""
    spec = make_spec()
    ready = _status(spec, [observed_for(spec, ready=2)])
    lost = _status(spec, [observed_for(spec, ready=0)], now=LATER, previous=ready)
    again = _status(spec, [observed_for(spec, ready=0)], now=LATER + dt.timedelta(seconds=30), previous=lost)
    assert again.to_patch() == lost.to_patch()
    assert _conditions(again)["Degraded"] == ("True", "ReplicasUnavailable")
    back = _status(spec, [observed_for(spec, ready=1)], now=LATER + dt.timedelta(minutes=1), previous=again)
    assert _conditions(back)["Degraded"] == ("False", "AsExpected")
    assert _conditions(back)["Ready"] == ("True", "ReplicasReady")
    never = _status(spec, [observed_for(spec, ready=0)], now=LATER, previous=_status(spec, []))
    assert _conditions(never)["Degraded"] == ("False", "AsExpected")  # it never served: not degraded


@settings(max_examples=50, deadline=None)
@given(
    before=st.sampled_from([None, 0, 1, 2]),
    after=st.sampled_from([0, 1, 2]),
    deadline=st.booleans(),
    front_door=st.sampled_from([None, True, False]),
    front_door_before=st.sampled_from([None, True, False]),
    new_model=st.booleans(),
)
def test_a_status_recomputed_with_nothing_changed_is_written_once(
    before: int | None,
    after: int,
    deadline: bool,
    front_door: bool | None,
    front_door_before: bool | None,
    new_model: bool,
) -> None:
    """Idle passes make no status write: whatever the status went through, once the observations stop
    changing, the next passes (seconds later) give the status the first one wrote, field for field."""
    v1 = make_spec()
    spec = make_spec(model=V2_MODEL) if new_model else v1

    def status(
        the_spec: ModelDeploymentSpec,
        observed: list[ObservedDeployment],
        now: dt.datetime,
        previous: ModelDeploymentStatus | None,
        door: bool | None,
    ) -> ModelDeploymentStatus:
        if previous is not None:
            previous = ModelDeploymentStatus.model_validate(previous.to_patch())
        return plan(
            "churn", the_spec, observed, [], now, previous, generation=1, front_door_ready=door
        ).status

    previous = None
    if before is not None:
        for seconds in (0, 1):
            previous = status(
                v1,
                [observed_for(v1, ready=before)],
                NOW + dt.timedelta(seconds=seconds),
                previous,
                front_door_before,
            )
    observed = [observed_for(spec, ready=after, deadline_exceeded=deadline)]
    if new_model:
        observed.insert(0, observed_for(v1, ready=before or 0))
    first = status(spec, observed, LATER, previous, front_door)
    second = status(spec, observed, LATER + dt.timedelta(seconds=1), first, front_door)
    third = status(spec, observed, LATER + dt.timedelta(seconds=2), second, front_door)
    assert second.to_patch() == first.to_patch()
    assert third.to_patch() == first.to_patch()


def test_progress_deadline_exceeded_is_degraded() -> None:
    spec = make_spec()
    status = _status(spec, [observed_for(spec, ready=0, deadline_exceeded=True)])
    assert status.phase == "Degraded"
    assert _conditions(status)["Progressing"] == ("False", "ProgressDeadlineExceeded")
    assert _conditions(status)["Degraded"] == ("True", "ProgressDeadlineExceeded")
    assert [e.outcome for e in status.history] == ["Progressing"]


def test_a_replacement_past_its_deadline_is_degraded_while_the_old_revision_serves() -> None:
    v1, v2 = make_spec(), make_spec(model=V2_MODEL)
    old = observed_for(v1, ready=2)
    serving = _status(v1, [old])
    stuck = observed_for(v2, ready=0, deadline_exceeded=True)
    status = _status(v2, [old, stuck], now=LATER, previous=serving)
    assert status.phase == "Degraded"
    assert _conditions(status)["Ready"] == ("True", "ReplicasReady")
    assert _conditions(status)["Progressing"] == ("False", "ProgressDeadlineExceeded")
    assert _conditions(status)["Degraded"] == ("True", "ProgressDeadlineExceeded")
    assert (status.model_version, status.stable_revision) == ("1", old.revision)


def test_old_revision_keeps_serving_until_the_new_one_is_ready() -> None:
    v1, v2 = make_spec(), make_spec(model=V2_MODEL)
    old, new = observed_for(v1, ready=2), observed_for(v2, ready=0)
    serving = _status(v1, [old])
    status = _status(v2, [old, new], now=LATER, previous=serving)
    assert status.phase == "Progressing"
    assert _conditions(status)["Ready"] == ("True", "ReplicasReady")
    assert _conditions(status)["Progressing"] == ("True", "ReplicasUpdating")
    assert _conditions(status)["Degraded"] == ("False", "AsExpected")
    assert (status.model_version, status.stable_revision) == ("1", old.revision)
    assert _roles(status) == {old.revision: ("stable", 100), new.revision: ("preview", 0)}
    assert [(e.hash, e.outcome) for e in status.history] == [
        (old.revision, "Promoted"),
        (new.revision, "Progressing"),
    ]

    done = _status(v2, [old, observed_for(v2, ready=2)], now=LATER, previous=status)
    assert done.phase == "Ready"
    assert (done.model_version, done.stable_revision) == ("2", new.revision)
    assert _roles(done) == {new.revision: ("stable", 100), old.revision: ("previous", 0)}
    assert [e.outcome for e in done.history] == ["Promoted", "Promoted"]
    assert [e.revision for e in done.history] == [1, 2]


def test_unready_shadow_variant_does_not_block_ready() -> None:
    spec = make_spec(variants=[{"name": "live", "weight": 100}, {"name": "shadow", "weight": 0}])
    observed = [observed_for(spec, ready=2, variant_index=0), observed_for(spec, ready=0, variant_index=1)]
    status = _status(spec, observed)
    assert _conditions(status)["Ready"] == ("True", "ReplicasReady")
    assert _conditions(status)["Degraded"] == ("False", "AsExpected")
    assert status.phase == "Progressing"
    assert [v.name for v in status.variants] == ["live", "shadow"]
    assert [(v.weight, v.ready_replicas) for v in status.variants] == [(100, 2), (0, 0)]


def test_missing_live_variant_blocks_ready() -> None:
    spec = make_spec(variants=[{"name": "a", "weight": 50}, {"name": "b", "weight": 50}])
    status = _status(spec, [observed_for(spec, ready=2, variant_index=0)])
    assert _conditions(status)["Ready"] == ("False", "NoReadyReplicas")
    assert status.phase == "Progressing"
    assert "b" in (status.message or "")


def test_paused_and_ready_is_paused() -> None:
    spec = make_spec(paused=True)
    status = _status(spec, [observed_for(spec, ready=2)])
    assert status.phase == "Paused"
    assert _conditions(status)["Ready"] == ("True", "ReplicasReady")


def test_foreign_deployments_are_ignored() -> None:
    spec = make_spec()
    stranger = ObservedDeployment(
        name="x", variant="other", revision="ffffffffff", replicas=1, ready_replicas=1
    )
    status = _status(spec, [observed_for(spec, ready=2), stranger])
    assert status.phase == "Ready"
    assert status.ready == "2/2"
    assert [v.name for v in status.variants] == ["default"]


def test_history_is_trimmed_to_the_limit() -> None:
    status = ModelDeploymentStatus()
    for version in range(1, 6):
        spec = make_spec(model={**BASE_MODEL, "version": str(version)}, revisionHistoryLimit=3)
        status = _status(spec, [observed_for(spec, ready=2)], previous=status)
    assert [e.revision for e in status.history] == [3, 4, 5]
    assert [e.model_version for e in status.history] == ["3", "4", "5"]


def test_invalid_spec_fails_without_taking_running_variants_down() -> None:
    spec = make_spec()
    running = _status(spec, [observed_for(spec, ready=2)])
    failed = status_for_invalid_spec(["spec.x: bad"], now=LATER, generation=2, previous=running)
    assert failed.phase == "Failed"
    assert _conditions(failed)["Degraded"] == ("True", "InvalidSpec")
    assert _conditions(failed)["Ready"] == ("True", "ReplicasReady")  # the old spec still serves
    assert failed.variants == running.variants
    assert failed.last_error is not None
    assert failed.last_error.message == "spec.x: bad"
    fresh = status_for_invalid_spec(["spec.x: bad"], now=LATER, generation=1)
    assert _conditions(fresh)["Ready"] == ("False", "InvalidSpec")


def test_successful_reconcile_clears_the_last_error() -> None:
    spec = make_spec()
    errored = with_error(ModelDeploymentStatus(), "ApplyRejected", "nope", now=NOW)
    assert errored.last_error is not None
    assert errored.last_error.time == NOW.replace(microsecond=0)
    assert _status(spec, [], previous=errored).last_error is None


def test_patch_is_camel_case_json() -> None:
    spec = make_spec()
    patch = _status(spec, [observed_for(spec, ready=2)], generation=1).to_patch()
    assert patch["observedGeneration"] == 1
    assert patch["readyReplicas"] == 2
    assert patch["conditions"][0]["lastTransitionTime"] == "2026-01-02T03:04:05Z"
    assert patch["history"][0]["modelURI"] == BASE_MODEL["uri"]
    assert patch["variants"][0]["revisions"][0]["readyReplicas"] == 2
    assert "canaryRevision" not in patch


def test_ready_waits_for_the_router_when_callers_go_through_it() -> None:
    """Ready is decided once, by the planner, from what the reconciler observed of the router."""
    from modeldeploy_operator.domain.rollout import plan

    from rollout_sim import NAME, Sim, rollout_spec

    sim = Sim(rollout_spec("1"))
    sim.step()
    sim.step(1)
    assert sim.status is not None
    assert sim.status.phase == "Ready"

    def decide(front_door_ready: bool | None) -> ModelDeploymentStatus:
        return plan(
            NAME, sim.spec, sim.observed(), (), sim.now, sim.status, front_door_ready=front_door_ready
        ).status

    gated = decide(False)
    assert gated.phase == "Progressing"
    ready = next(c for c in gated.conditions if c.type == "Ready")
    assert (ready.status, ready.reason) == ("False", "RouterNotReady")
    assert gated.message == "the router has no ready pod yet"
    assert decide(True) == decide(None) == sim.status  # a ready router, or none to wait for
