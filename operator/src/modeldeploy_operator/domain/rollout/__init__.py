"""Progressive rollout, decided by a pure function (issue 6).

`plan()` maps (spec, observed Deployments, analysis readings, now, previous status, manual command)
to a `Plan`: the revisions each variant should run with their replicas and traffic weights, the
Events to record, the new status, and when to reconcile again. See docs/rollouts.md.
"""

from modeldeploy_operator.domain.rollout.commands import (
    COMMAND_ANNOTATION,
    Command,
    InvalidCommand,
    command_patch,
    parse_command,
)
from modeldeploy_operator.domain.rollout.model import (
    AnalysisRequest,
    DesiredRevision,
    Plan,
    PlanEvent,
    Role,
    VariantPlan,
)
from modeldeploy_operator.domain.rollout.planner import analysis_request, plan

__all__ = [
    "COMMAND_ANNOTATION",
    "AnalysisRequest",
    "Command",
    "DesiredRevision",
    "InvalidCommand",
    "Plan",
    "PlanEvent",
    "Role",
    "VariantPlan",
    "analysis_request",
    "command_patch",
    "parse_command",
    "plan",
]
