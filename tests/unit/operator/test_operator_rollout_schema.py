"""Every status the planner writes fits the CRD's status schema (a pruned field would lose state)."""

from __future__ import annotations

import copy

from test_operator_crd import VALIDATOR

from modeldeploy_crd_cases import valid_manifest
from rollout_sim import Sim, good, rollout_spec


def test_planner_statuses_fit_the_schema() -> None:
    sim = Sim(rollout_spec("1"))
    statuses = [sim.step().status, sim.step(1).status]
    sim.spec = rollout_spec("2")
    for seconds in (0, 1, 61, 60, 60, 1):
        statuses.append(sim.step(seconds, good()).status)
    from modeldeploy_operator.domain.rollout import command_patch, parse_command

    for action in ("pause", "abort", "rollback"):
        _, patch = command_patch(action, revision=1 if action == "rollback" else None)
        statuses.append(sim.step(1, command=parse_command(patch["metadata"]["annotations"])).status)
    for status in statuses:
        body = copy.deepcopy(valid_manifest()) | {"status": status.to_patch()}
        VALIDATOR.validate(body)
