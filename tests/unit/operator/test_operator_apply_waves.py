"""A pass's writes in waves (issue 16, apply -> created): what pods need, then the Deployments, then the
rest; the writes of a wave go out together, and no wave starts before the one before has returned."""

from __future__ import annotations

import doctest
import threading
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_operator_controller import FakeCluster, body

from modeldeploy_operator.config import OperatorSettings
from modeldeploy_operator.domain import desired_state
from modeldeploy_operator.domain.desired_state import (
    BEFORE_PODS_KINDS,
    READ_LIVE_KINDS,
    ROUTE_KINDS,
    WORKLOAD_KINDS,
    apply_waves,
)
from modeldeploy_operator.k8s.api import RejectedError
from modeldeploy_operator.reconciler import Reconciler

KINDS = sorted(
    BEFORE_PODS_KINDS
    | WORKLOAD_KINDS
    | {"Service", "PodDisruptionBudget", "HorizontalPodAutoscaler", "HTTPRoute", "Unknown"}
)


def manifest(kind: str, name: str) -> dict[str, Any]:
    return {"kind": kind, "metadata": {"name": name}}


def test_what_pods_need_comes_first_then_the_deployments_then_the_rest() -> None:
    manifests = [
        manifest("Deployment", "server"),
        manifest("Service", "server"),
        manifest("PodDisruptionBudget", "server"),
        manifest("ServiceAccount", "router"),
        manifest("Role", "router"),
        manifest("RoleBinding", "router"),
        manifest("ConfigMap", "router"),
        manifest("Deployment", "router"),
        manifest("HTTPRoute", "stable"),
        manifest("Service", "stable"),
        manifest("NetworkPolicy", "server"),
    ]
    waves = [[(m["kind"], m["metadata"]["name"]) for m in wave] for wave in apply_waves(manifests)]
    assert waves == [
        [
            ("ServiceAccount", "router"),
            ("Role", "router"),
            ("ConfigMap", "router"),
            ("NetworkPolicy", "server"),
        ],
        [("RoleBinding", "router")],  # after the Role, each alone (apply_waves: the API server judges it)
        [("Deployment", "server"), ("Deployment", "router")],
        [("Service", "server"), ("PodDisruptionBudget", "server"), ("Service", "stable")],
        [("HTTPRoute", "stable")],  # last: it names the Services
    ]


def test_the_worked_example_in_apply_waves_holds() -> None:
    # The docstring's example is the reading of the wave order; run it so that it cannot go stale.
    failures, tried = doctest.testmod(desired_state, verbose=False)
    assert tried > 0
    assert failures == 0


def test_no_empty_wave() -> None:
    assert apply_waves([]) == ()
    assert apply_waves([manifest("Service", "s")]) == ((manifest("Service", "s"),),)


@given(st.lists(st.sampled_from(KINDS), max_size=30))
def test_waves_keep_every_manifest_once_in_its_order(kinds: list[str]) -> None:
    manifests = [manifest(kind, f"o{i}") for i, kind in enumerate(kinds)]
    waves = apply_waves(manifests)
    flat = [m for wave in waves for m in wave]
    assert sorted(m["metadata"]["name"] for m in flat) == sorted(m["metadata"]["name"] for m in manifests)
    for wave in waves:
        assert wave  # no empty wave
        assert list(wave) == [m for m in manifests if m in wave]  # the manifests' own order
    rank = [
        0 if k in BEFORE_PODS_KINDS else 1 if k in WORKLOAD_KINDS else 3 if k in ROUTE_KINDS else 2
        for k in (m["kind"] for m in flat)
    ]
    assert rank == sorted(rank)


class GatedCluster(FakeCluster):
    """Holds each apply until as many applies as `together` are in flight at once (a barrier), then
    records when each started and ended relative to the others."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[tuple[str, str]] = []
        self.gates: dict[str, threading.Barrier] = {}

    def apply(self, manifest: dict[str, Any], field_manager: str | None = None) -> dict[str, Any]:
        name = f"{manifest['kind']}/{manifest['metadata']['name']}"
        with self.lock:
            self.events.append(("start", name))
        gate = self.gates.get(manifest["kind"])
        if gate is not None:
            gate.wait(timeout=30)  # raises BrokenBarrierError if the others never come
        result = super().apply(manifest, field_manager)
        with self.lock:
            self.events.append(("end", name))
        return result


def test_a_new_modeldeployment_writes_what_pods_need_at_once_and_the_deployments_after() -> None:
    cluster = GatedCluster()
    # The router's ServiceAccount, Role and ConfigMap: only all three in flight together get through, so
    # the pass completing proves they were sent at once (its two RoleBindings follow, one at a time);
    # both Deployments likewise.
    first_wave = threading.Barrier(3)
    for kind in ("ServiceAccount", "Role", "ConfigMap"):
        cluster.gates[kind] = first_wave
    cluster.gates["Deployment"] = threading.Barrier(2)
    outcome = Reconciler(cluster, OperatorSettings()).reconcile(body())  # type: ignore[arg-type]
    assert outcome.status_written
    order = cluster.events
    ended = {name: i for i, (what, name) in enumerate(order) if what == "end"}
    started = {name: i for i, (what, name) in enumerate(order) if what == "start"}
    before_pods = [n for n in ended if n.split("/")[0] in BEFORE_PODS_KINDS]
    deployments = [n for n in started if n.startswith("Deployment/")]
    rest = [n for n in started if n.split("/")[0] not in BEFORE_PODS_KINDS | WORKLOAD_KINDS]
    assert len(before_pods) == 5
    bindings = [n for n in started if n.startswith("RoleBinding/")]
    assert len(bindings) == 2
    # Each RoleBinding after the Role has returned, and after the binding before it.
    role = next(n for n in ended if n.startswith("Role/"))
    assert min(started[b] for b in bindings) > ended[role]
    assert started[bindings[1]] > ended[bindings[0]]
    assert len(deployments) == 2
    assert rest
    # No Deployment is sent before everything its pods need has been written...
    assert min(started[d] for d in deployments) > max(ended[n] for n in before_pods)
    # ...and the Services and PDB only once both Deployments are written.
    assert min(started[n] for n in rest) > max(ended[d] for d in deployments)
    assert cluster.writes[-1] == "status"  # the one status write, last


def test_a_refused_write_stops_the_pass_after_its_wave_with_the_first_refusal_in_order() -> None:
    class Refusing(FakeCluster):
        def apply(self, manifest: dict[str, Any], field_manager: str | None = None) -> dict[str, Any]:
            if manifest["kind"] in ("Role", "ConfigMap"):
                super().apply(manifest, field_manager)  # (counted as sent)
                raise RejectedError(403, f"forbidden: {manifest['kind']}")
            return super().apply(manifest, field_manager)

    cluster = Refusing()
    with pytest.raises(RejectedError, match="forbidden: Role"):  # the Role comes before the ConfigMap
        Reconciler(cluster, OperatorSettings()).reconcile(body())  # type: ignore[arg-type]
    written = {w.split()[1].split("/")[0] for w in cluster.writes if w.startswith("apply")}
    assert written == {"ServiceAccount", "Role", "ConfigMap"}  # the whole first wave, and nothing after


def test_a_model_change_sends_the_changed_router_table_with_the_new_deployment() -> None:
    """The router reads its table live: a change to the existing ConfigMap goes out with the new
    revision's Deployment, not a write ahead of it (a new ModelDeployment's table still goes first,
    above)."""
    cluster = GatedCluster()
    reconciler = Reconciler(cluster, OperatorSettings())  # type: ignore[arg-type]
    reconciler.reconcile(body())
    status = cluster.last_status
    for _ in range(3):  # the status settles (the objects now exist)
        reconciler.reconcile(body(status=status))
        status = cluster.last_status
    cluster.events.clear()
    cluster.writes.clear()
    # Only the table and the Deployment in flight together get through: the pass completing proves
    # they were sent at once.
    together = threading.Barrier(2)
    cluster.gates["ConfigMap"] = cluster.gates["Deployment"] = together
    outcome = reconciler.reconcile(body("2", status=status))
    assert outcome.status_written
    applied = [w.split()[1].split("/")[0] for w in cluster.writes if w.startswith("apply")]
    assert applied.count("ConfigMap") == 1
    assert applied.count("Deployment") == 1
    started = {name: i for i, (what, name) in enumerate(cluster.events) if what == "start"}
    ended = {name: i for i, (what, name) in enumerate(cluster.events) if what == "end"}
    deployment = next(n for n in started if n.startswith("Deployment/"))
    rest = [n for n in started if n.split("/")[0] not in ("ConfigMap", "Deployment")]
    assert rest  # the new revision's Service and PDB: still after the Deployment
    assert min(started[n] for n in rest) > ended[deployment]


def kinds_of(waves: tuple[tuple[dict[str, Any], ...], ...]) -> list[list[str]]:
    return [[m["kind"] for m in wave] for wave in waves]


@pytest.mark.parametrize(
    ("existing", "expected"),
    [
        # Nothing exists (a new ModelDeployment): what pods need first, the table with it.
        (set(), [["ServiceAccount", "ConfigMap"], ["RoleBinding"], ["Deployment"], ["Service"]]),
        # Everything exists but the Deployment (a model change): the table's change with the Deployment.
        (
            {("ServiceAccount", "t"), ("ConfigMap", "t"), ("RoleBinding", "t"), ("Service", "t")},
            [["ServiceAccount"], ["RoleBinding"], ["Deployment", "ConfigMap"], ["Service"]],
        ),
        # The table exists, the ServiceAccount does not (deleted by someone): it still goes first.
        (
            {("ConfigMap", "t")},
            [["ServiceAccount"], ["RoleBinding"], ["Deployment", "ConfigMap"], ["Service"]],
        ),
        # The table is missing, the rest exists: the table before the pods that read it.
        (
            {("ServiceAccount", "t"), ("RoleBinding", "t"), ("Deployment", "t")},
            [["ServiceAccount", "ConfigMap"], ["RoleBinding"], ["Deployment"], ["Service"]],
        ),
        # Only kinds read live move (a ServiceAccount is read at a pod's start): (same as above).
        (
            {("ServiceAccount", "t")},
            [["ServiceAccount", "ConfigMap"], ["RoleBinding"], ["Deployment"], ["Service"]],
        ),
    ],
)
def test_a_change_to_an_existing_live_read_object_goes_with_the_deployments(
    existing: set[tuple[str, str]], expected: list[list[str]]
) -> None:
    manifests = [
        manifest(k, "t") for k in ("ServiceAccount", "ConfigMap", "RoleBinding", "Deployment", "Service")
    ]
    assert kinds_of(apply_waves(manifests, existing)) == expected


def test_without_a_deployment_an_existing_table_keeps_its_place() -> None:
    manifests = [manifest("ConfigMap", "t"), manifest("Service", "t")]
    assert apply_waves(manifests, {("ConfigMap", "t")}) == apply_waves(manifests)


@given(
    st.lists(st.tuples(st.sampled_from(KINDS), st.booleans()), max_size=30),
)
def test_with_live_objects_every_missing_need_of_pods_still_comes_before_the_deployments(
    objects: list[tuple[str, bool]],
) -> None:
    manifests = [manifest(kind, f"o{i}") for i, (kind, _) in enumerate(objects)]
    existing = {(kind, f"o{i}") for i, (kind, live) in enumerate(objects) if live}
    waves = apply_waves(manifests, existing)
    flat = [m for wave in waves for m in wave]
    assert sorted(m["metadata"]["name"] for m in flat) == sorted(m["metadata"]["name"] for m in manifests)
    for wave in waves:
        assert wave
        own = [m for m in wave if m["kind"] not in READ_LIVE_KINDS]  # (a moved table: after them)
        assert own == [m for m in manifests if m in own]
    at = {m["metadata"]["name"]: i for i, wave in enumerate(waves) for m in wave}
    deployments = [at[m["metadata"]["name"]] for m in flat if m["kind"] in WORKLOAD_KINDS]
    for m in flat:
        key = (m["kind"], m["metadata"]["name"])
        if not deployments or m["kind"] not in BEFORE_PODS_KINDS:
            continue
        if m["kind"] in READ_LIVE_KINDS and key in existing:  # a change to what is read live: with them
            assert at[key[1]] == min(deployments)
        else:  # what pods need from their start: before them
            assert at[key[1]] < min(deployments)
