"""A tiny simulated cluster for the rollout planner's tests: Deployments do what the last plan said."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from modeldeploy_operator.domain.observed import ObservedDeployment, ServerReport, with_server_reports
from modeldeploy_operator.domain.readings import CheckReading
from modeldeploy_operator.domain.revision import resolve_variants
from modeldeploy_operator.domain.rollout import Command, InvalidCommand, Plan, plan
from modeldeploy_operator.domain.spec import ModelDeploymentSpec
from modeldeploy_operator.domain.status_model import ModelDeploymentStatus, PreflightStatus

from modeldeploy_builders import BASE_MODEL, NOW

NAME = "churn"
CHECKS: list[dict[str, Any]] = [
    {"name": "errors", "type": "errorRate", "threshold": {"max": 0.05}},
    {"name": "shift", "type": "predictionShift", "threshold": {"max": 0.2}},
]
CANARY_STEPS = [
    {"setWeight": 20},
    {"pause": {"duration": "1m"}},
    {"analysis": {"duration": "2m"}},
    {"setWeight": 50},
    {"pause": {}},
]


def model(version: str) -> dict[str, Any]:
    return dict(BASE_MODEL) | {"version": version, "uri": f"s3://models/churn/v{version}"}


def rollout_spec(version: str = "1", **rollout: Any) -> ModelDeploymentSpec:
    raw_rollout: dict[str, Any] = {
        "strategy": "Canary",
        "steps": CANARY_STEPS,
        "analysis": {"interval": "30s", "minSamples": 100, "failureLimit": 1, "checks": CHECKS},
        "progressDeadlineSeconds": 600,
        "scaleDownDelaySeconds": 30,
    } | rollout
    return ModelDeploymentSpec.model_validate(
        {"model": model(version), "replicas": 4, "rollout": raw_rollout}
    )


def revision_of(spec: ModelDeploymentSpec, variant: int = 0) -> str:
    return resolve_variants(NAME, spec)[variant].revision


def good(value: float = 0.01, samples: int = 500) -> list[CheckReading]:
    return [CheckReading(c["name"], value, samples, NOW) for c in CHECKS]


@dataclass
class Sim:
    """Status and Deployments carried from one plan() to the next; `unready` revisions never get ready."""

    spec: ModelDeploymentSpec
    now: dt.datetime = NOW
    status: ModelDeploymentStatus | None = None
    deployments: dict[tuple[str, str], ObservedDeployment] = field(default_factory=dict)
    unready: set[str] = field(default_factory=set)
    crash_looping: set[str] = field(default_factory=set)
    server_reports: list[ServerReport] = field(default_factory=list)
    """What the servers said of their bundles (the reconciler's observation, issue 12)."""
    last: Plan | None = None

    def observed(self) -> list[ObservedDeployment]:
        return with_server_reports(list(self.deployments.values()), self.server_reports)

    def step(
        self,
        seconds: float = 0,
        readings: Sequence[CheckReading] = (),
        command: Command | InvalidCommand | None = None,
        *,
        roundtrip: bool = True,
        analysis_pending: bool = False,
        preflight: Sequence[PreflightStatus] = (),
    ) -> Plan:
        """Advance the clock, plan, and let the Deployments follow the plan (ready at once)."""
        self.now += dt.timedelta(seconds=seconds)
        previous = self.status
        if roundtrip and previous is not None:  # what the API server would hand back
            previous = ModelDeploymentStatus.model_validate(previous.to_patch())
        result = plan(
            NAME,
            self.spec,
            self.observed(),
            readings,
            self.now,
            previous,
            command,
            analysis_pending=analysis_pending,
            preflight=preflight,
        )
        self.status, self.last = result.status, result
        self._follow(result)
        return result

    def _follow(self, result: Plan) -> None:
        listed = set()
        for variant in result.variants:
            for rev in variant.revisions:
                key = (variant.name, rev.revision)
                listed.add(key)
                healthy = rev.revision not in self.unready
                self.deployments[key] = ObservedDeployment(
                    name=f"{NAME}-{variant.name}-{rev.revision}",
                    variant=variant.name,
                    revision=rev.revision,
                    replicas=rev.replicas,
                    model_version=rev.model_version,
                    ready_replicas=rev.replicas if healthy else 0,
                    updated_replicas=rev.replicas,
                    available_replicas=rev.replicas if healthy else 0,
                    generation=1,
                    observed_generation=1,
                    crash_looping=rev.revision in self.crash_looping,
                )
        for key in list(self.deployments):
            if key not in listed:
                del self.deployments[key]

    def current(self) -> ModelDeploymentStatus:
        """The status the last step wrote. A call, unlike `sim.status`: mypy keeps what an assert narrowed
        `sim.status.x` to across later steps, which change it (an assert after a step then reads as
        unreachable)."""
        assert self.status is not None, "no step yet"
        return self.status

    def weights(self, variant: str = "default") -> dict[str, tuple[str, int, int]]:
        """revision -> (role, weight, replicas) of the last plan."""
        assert self.last is not None
        return {r.revision: (r.role, r.weight, r.replicas) for r in self.last.variant(variant).revisions}

    def reasons(self) -> list[str]:
        assert self.last is not None
        return [e.reason for e in self.last.events]

    def condition(self, type_: str) -> tuple[str, str]:
        assert self.status is not None
        c = next(c for c in self.status.conditions if c.type == type_)
        return c.status, c.reason
