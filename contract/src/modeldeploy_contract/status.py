"""The ModelDeployment status as typed models; field for field the CRD's status schema.

All rollout state lives here (not in the operator's memory), so a restarted operator resumes where
the last one stopped. `to_patch()` gives the JSON a status patch sends. Shared: the operator writes
it, the kubectl plugin (modeldeploy-kubectl) reads and renders it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

Phase = Literal["Pending", "Progressing", "Paused", "Ready", "Degraded", "Failed"]
ConditionStatus = Literal["True", "False", "Unknown"]
RevisionRole = Literal["stable", "canary", "preview", "shadow", "previous", "pinned"]
RevisionOutcome = Literal["Progressing", "Promoted", "Aborted", "RolledBack", "Superseded"]
CheckResult = Literal["Pass", "Fail", "Inconclusive"]
PauseReason = Literal["Step", "Manual", "Spec", "Failure"]
CommandAction = Literal["promote", "abort", "pause", "resume", "rollback"]
CommandResult = Literal["Applied", "Ignored", "Rejected"]
PreflightResult = Literal["Pending", "Passed", "Failed", "Skipped"]

READY = "Ready"
PROGRESSING = "Progressing"
DEGRADED = "Degraded"
SPEC_DIVERGED = "SpecDiverged"
MAX_HISTORY = 100
MAX_MEASUREMENTS = 10
MAX_PREFLIGHT_CHECKS = 16
MAX_LOADED_DIGESTS = 4


class StatusModel(BaseModel):
    """Base of every status model: camelCase on the wire, immutable."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="ignore", frozen=True, protected_namespaces=()
    )


class Condition(StatusModel):
    """A metav1.Condition."""

    type: str = Field(min_length=1, max_length=316)
    status: ConditionStatus
    observed_generation: int | None = Field(default=None, ge=0)
    last_transition_time: datetime
    reason: str = Field(min_length=1, max_length=1024)
    message: str = Field(default="", max_length=32768)


class RevisionStatus(StatusModel):
    """One running revision of a variant."""

    revision: str
    role: RevisionRole
    weight: int = 0
    replicas: int = 0
    ready_replicas: int = 0
    number: int | None = None
    """The revision's number in status.history (what `rollback --to N` takes), when it has one."""
    model_version: str | None = None
    scale_down_at: datetime | None = None
    """When a revision that left traffic is scaled to zero (spec.rollout.scaleDownDelaySeconds), or
    down to its rollback window's pods (warmUntil)."""
    warm_until: datetime | None = None
    """End of the rollback window of a revision that stopped serving (spec.rollout.rollbackWindow):
    until then it keeps rollbackWindow.replicas Ready pods, so a rollback to it switches at once."""


class VariantStatus(StatusModel):
    """What one variant serves now."""

    name: str
    weight: int = 0
    revision: str | None = None
    """The variant's stable revision: the one that takes its traffic outside a rollout."""
    model_version: str | None = None
    replicas: int = 0
    ready_replicas: int = 0
    revisions: tuple[RevisionStatus, ...] = ()


class HistoryEntry(StatusModel):
    """One revision that was ever rolled out."""

    revision: int = Field(ge=1)
    hash: str
    variant: str
    model_version: str
    model_uri: str = Field(alias="modelURI")
    sha256: str | None = None
    """The spec's expected digest (model.sha256), if it named one."""
    loaded_sha256: tuple[str, ...] | None = Field(default=None, max_length=MAX_LOADED_DIGESTS)
    """The digests (sha256 of the bundle's manifest) the revision's servers reported loading, sorted;
    more than one means the model URI's content changed between pod starts (pin model.sha256)."""
    created_at: datetime
    finished_at: datetime | None = None
    outcome: RevisionOutcome
    message: str | None = None


class Measurement(StatusModel):
    """One evaluation of one analysis check."""

    time: datetime
    value: float | None = None
    """The measured value; absent when there was no data (never NaN, which JSON cannot carry)."""
    samples: int = 0
    result: CheckResult
    message: str | None = None


class CheckStatus(StatusModel):
    """The latest measurements of one analysis check."""

    name: str
    result: CheckResult | None = None
    failures: int = 0
    inconclusive: int = 0
    measurements: tuple[Measurement, ...] = Field(default=(), max_length=MAX_MEASUREMENTS)


class AnalysisStatus(StatusModel):
    """Analysis of the current rollout."""

    revision: str | None = None
    started_at: datetime | None = None
    last_run_at: datetime | None = None
    checks: tuple[CheckStatus, ...] = ()


class PauseStatus(StatusModel):
    """Why and since when the rollout is paused."""

    reason: PauseReason
    since: datetime
    until: datetime | None = None
    """When a timed pause step ends; absent when waiting to be resumed."""
    message: str | None = None
    """Why, for a Failure pause (analysis failed or deadline passed with autoRollback false)."""


class LastError(StatusModel):
    """The last error the operator met, kept until a reconcile succeeds."""

    reason: str
    message: str
    time: datetime


class CommandStatus(StatusModel):
    """The last manual command (the modeldeploy.io/command annotation) the operator handled."""

    id: str = Field(min_length=1, max_length=64)
    action: str = Field(max_length=64)
    revision: int | None = None
    result: CommandResult
    message: str = ""
    time: datetime


class PreflightCheckStatus(StatusModel):
    """One comparison of a preflight (modeldeploy_contract.preflight.Check)."""

    name: str = Field(max_length=63)
    passed: bool | None = None
    """None: skipped (no labels, no stable, not applicable)."""
    value: float | None = None
    threshold: float | None = None
    detail: str = Field(default="", max_length=1024)


class PreflightQuality(StatusModel):
    """Quality of one side's answers on the golden labels."""

    auc: float | None = None
    accuracy: float | None = None
    log_loss: float | None = None


class PreflightStatus(StatusModel):
    """The golden-set replay of one new revision before it takes traffic (issue 15)."""

    variant: str
    revision: str
    stable_revision: str | None = None
    """The revision replayed beside it (absent: compared with the recorded outputs only)."""
    result: PreflightResult
    """Pending (not run yet, or running), Passed, Failed (the revision gets no traffic) or Skipped
    (the bundle has no golden set)."""
    message: str = Field(default="", max_length=4096)
    attempts: int = Field(default=0, ge=0)
    """Replays that could not complete (a pod unreachable, an error answer); retried while Pending."""
    rows: int | None = None
    labelled_rows: int | None = None
    max_abs_diff: float | None = None
    """Largest |served - recorded| over the golden outputs."""
    tolerance: float | None = None
    score_psi: float | None = None
    new: PreflightQuality | None = None
    stable: PreflightQuality | None = None
    checks: tuple[PreflightCheckStatus, ...] = Field(default=(), max_length=MAX_PREFLIGHT_CHECKS)
    finished_at: datetime | None = None

    @property
    def final(self) -> bool:
        """Decided once and for all (cached per revision: never replayed again)."""
        return self.result != "Pending"


class ModelDeploymentStatus(StatusModel):
    """status of a ModelDeployment."""

    observed_generation: int | None = None
    phase: Phase = "Pending"
    message: str | None = None
    model_version: str | None = None
    ready: str | None = None
    """`ready/desired` replicas over all variants, for `kubectl get`."""
    url: str | None = Field(default=None, max_length=2048)
    """Where to call the model (V2 protocol): the stable Service's in-cluster URL, or the Gateway
    API hostname's URL with that provider."""
    replicas: int = 0
    ready_replicas: int = 0
    conditions: tuple[Condition, ...] = ()
    stable_revision: str | None = None
    canary_revision: str | None = None
    rollout_variant: str | None = None
    current_step_index: int | None = None
    canary_weight: int = 0
    step_started_at: datetime | None = None
    rollout_started_at: datetime | None = None
    aborted: bool = False
    pinned_revision: int | None = None
    """A revision number pinned by a manual rollback; it serves until the spec changes."""
    pinned_spec_revision: str | None = None
    """The revision hash the spec named when the pin was made; a spec naming another one ends the pin."""
    pause: PauseStatus | None = None
    variants: tuple[VariantStatus, ...] = ()
    history: tuple[HistoryEntry, ...] = ()
    analysis: AnalysisStatus | None = None
    preflight: tuple[PreflightStatus, ...] = ()
    """The golden-set replay of each variant's new revision (one entry per variant at most)."""
    last_error: LastError | None = None
    last_command: CommandStatus | None = None

    def to_patch(self) -> dict[str, Any]:
        """The status as JSON for a status patch (absent fields omitted)."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")

    @classmethod
    def from_object(cls, body: Mapping[str, Any]) -> ModelDeploymentStatus:
        """The status of a ModelDeployment object as the API server returns it (kopf's field dropped)."""
        return cls.model_validate({k: v for k, v in (body.get("status") or {}).items() if k != "kopf"})


def previous_promoted(
    history: Sequence[HistoryEntry], variant: str, serving: str | None
) -> HistoryEntry | None:
    """The newest promoted entry of a variant other than the serving revision: `rollback`'s default."""
    candidates = [
        e for e in history if e.variant == variant and e.hash != serving and e.outcome == "Promoted"
    ]
    return max(candidates, key=lambda e: e.revision) if candidates else None
