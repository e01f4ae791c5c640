"""What the operator sees of its serving Deployments, reduced to the facts status needs."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

from .labels import REVISION_LABEL, VARIANT_LABEL, VERSION_LABEL


@dataclass(frozen=True)
class BundleRefusal:
    """Why the servers of a revision refuse their bundle: a reason (a condition's) and a message."""

    reason: str
    message: str


@dataclass(frozen=True)
class ObservedDeployment:
    """One serving Deployment as last read from the API server."""

    name: str
    variant: str
    revision: str
    replicas: int
    """spec.replicas: what is wanted (the HPA's current choice when autoscaling)."""
    model_version: str | None = None
    ready_replicas: int = 0
    updated_replicas: int = 0
    available_replicas: int = 0
    generation: int = 0
    observed_generation: int = 0
    progress_deadline_exceeded: bool = False
    crash_looping: bool = False
    """Some pod of it is in CrashLoopBackOff (or keeps restarting): the reconciler fills it from pod
    statuses, which the Deployment object does not carry. A crash-looping canary is aborted at once."""
    externally_scaled: bool = False
    """An HPA the operator did not make targets it (`externally_scaled`): `replicas` is that
    autoscaler's choice, which the planner follows (the reconciler fills it, like crash_looping)."""
    loaded_digests: frozenset[str] = frozenset()
    """The bundle digests (manifest sha256) its ready servers reported loading (`with_server_reports`)."""
    bundle_refused: BundleRefusal | None = None
    """Set when a server of it refused its bundle because the manifest names another version than the
    spec (ModelVersionMismatch), or another format than the spec's xgboost/onnx (ModelFormatMismatch):
    the reason and what to tell the user. The reconciler fills it from the servers' /v2/health/ready
    answers; the planner aborts a rollout of it and reports Degraded with that reason."""

    @property
    def rolled_out(self) -> bool:
        """The Deployment controller has seen the latest spec and every wanted pod is updated and ready."""
        return (
            self.observed_generation >= self.generation
            and self.updated_replicas >= self.replicas
            and self.ready_replicas >= self.replicas
        )

    @classmethod
    def from_object(cls, body: Mapping[str, Any]) -> ObservedDeployment | None:
        """Read a Deployment object; None when it lacks the variant and revision labels (not ours)."""
        metadata = body.get("metadata", {})
        labels = metadata.get("labels") or {}
        if VARIANT_LABEL not in labels or REVISION_LABEL not in labels:
            return None
        spec, status = body.get("spec", {}), body.get("status") or {}
        deadline = any(
            c.get("type") == "Progressing" and c.get("reason") == "ProgressDeadlineExceeded"
            for c in status.get("conditions") or ()
        )
        return cls(
            name=metadata["name"],
            variant=labels[VARIANT_LABEL],
            revision=labels[REVISION_LABEL],
            replicas=int(spec.get("replicas", 1)),
            model_version=labels.get(VERSION_LABEL),
            ready_replicas=int(status.get("readyReplicas", 0)),
            updated_replicas=int(status.get("updatedReplicas", 0)),
            available_replicas=int(status.get("availableReplicas", 0)),
            generation=int(metadata.get("generation", 0)),
            observed_generation=int(status.get("observedGeneration", 0)),
            progress_deadline_exceeded=deadline,
        )


def controller_uid(obj: Mapping[str, Any]) -> str | None:
    """uid of the object's controlling owner, if any."""
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or ():
        if ref.get("controller"):
            uid = ref.get("uid")
            return str(uid) if uid else None
    return None


def pods_owned_by(
    pods: Sequence[dict[str, Any]],
    replica_sets: Sequence[Mapping[str, Any]],
    deployments: Sequence[Mapping[str, Any]],
) -> list[dict[str, Any]]:
    """The pods controlled by a ReplicaSet controlled by one of `deployments`: what analysis scrapes
    and readiness counts. Labels alone would let any pod of the namespace that carries them (a copy, a
    debugging pod, a tenant's) feed a canary's metrics; the owner chain (by uid) is set only by the
    Deployment and ReplicaSet controllers."""
    deployment_uids = {d["metadata"]["uid"] for d in deployments if d.get("metadata", {}).get("uid")}
    replica_set_uids = {
        rs["metadata"]["uid"]
        for rs in replica_sets
        if controller_uid(rs) in deployment_uids and rs["metadata"].get("uid")
    }
    return [pod for pod in pods if controller_uid(pod) in replica_set_uids]


def externally_scaled(
    hpas: Sequence[Mapping[str, Any]], deployment_names: Sequence[str], owner_uid: str
) -> frozenset[str]:
    """Names among `deployment_names` that an HPA not controlled by `owner_uid` targets: replicas there
    are the autoscaler's (a user's HPA, KEDA's `keda-hpa-*`), and the operator must not write them."""
    ours = set(deployment_names)
    targeted = set()
    for hpa in hpas:
        if controller_uid(hpa) == owner_uid:
            continue
        target = (hpa.get("spec") or {}).get("scaleTargetRef") or {}
        deployment = target.get("kind") == "Deployment" and target.get("apiVersion", "apps/v1") == "apps/v1"
        if deployment and target.get("name") in ours:
            targeted.add(str(target["name"]))
    return frozenset(targeted)


_DIGEST = re.compile(r"^[0-9a-f]{64}$")
_VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_FORMAT = re.compile(r"^(xgboost|onnx)$")
ServerState = Literal["loading", "ready", "failed"]
VERSION_MISMATCH = "ModelVersionMismatch"
FORMAT_MISMATCH = "ModelFormatMismatch"
REFUSALS = (VERSION_MISMATCH, FORMAT_MISMATCH)
"""The reasons of a server that refused a sound bundle for not being the one the spec names."""


@dataclass(frozen=True)
class ServerReport:
    """What one model server said of its bundle on /v2/health/ready (the reconciler asks each pod once
    its answer is final: ready, or failed)."""

    revision: str
    state: ServerState
    version: str | None = None
    """The manifest's version: of the bundle loaded, or of the one refused for its version."""
    sha256: str | None = None
    """The manifest's sha256 (the bundle's digest), loaded or refused."""
    reason: str | None = None
    """Why loading failed: ModelVersionMismatch, ModelFormatMismatch, ModelLoadFailed (KServe's
    FailureInfo reasons)."""
    expected_version: str | None = None
    """The version the server was told (the spec's), with ModelVersionMismatch."""
    format: str | None = None
    """The manifest's format (xgboost or onnx) of the bundle refused for its format."""
    expected_format: str | None = None
    """The format the server was told (the spec's), with ModelFormatMismatch."""

    @property
    def final(self) -> bool:
        """A server loads once per process: ready and failed do not change until the container restarts."""
        return self.state != "loading"


def _text(value: object, pattern: re.Pattern[str]) -> str | None:
    # fullmatch: `$` in a pattern also matches before a trailing newline.
    return value if isinstance(value, str) and pattern.fullmatch(value) else None


def parse_server_report(revision: str, status: int, body: object) -> ServerReport | None:
    """The report in a /v2/health/ready answer (200 or 503), or None when it is not one. A pod is not
    trusted more than its bytes: every field must have the shape the server writes (a version of the
    label-value grammar, a 64-hex digest), else it is left out; nothing else is copied from the pod.

    >>> parse_server_report("r1", 200, {"ready": True, "state": "ready",
    ...     "model": {"name": "churn", "version": "2", "sha256": "ab" * 32}}).version
    '2'
    >>> parse_server_report("r1", 503, {"state": "failed", "reason": "ModelVersionMismatch",
    ...     "refused": {"version": "3", "sha256": "ab" * 32, "expectedVersion": "2"}}).expected_version
    '2'
    >>> parse_server_report("r1", 500, {"state": "ready"}) is None
    True
    """
    if status not in (200, 503) or not isinstance(body, dict):
        return None
    said = body.get("state")
    state: ServerState
    if said == "failed":
        state = "failed"
    elif said == "ready":
        # 503 with "ready": this worker loaded, another has not yet: not final, ask again.
        state = "ready" if status == 200 else "loading"
    elif said == "loading":
        state = "loading"
    else:
        return None
    reason = body.get("reason") if body.get("reason") in (*REFUSALS, "ModelLoadFailed") else None
    source = body.get("model") if state != "failed" else body.get("refused")
    facts = source if isinstance(source, dict) else {}
    return ServerReport(
        revision=revision,
        state=state,
        version=_text(facts.get("version"), _VERSION),
        sha256=_text(facts.get("sha256"), _DIGEST),
        reason=str(reason) if reason is not None and state == "failed" else None,
        expected_version=_text(facts.get("expectedVersion"), _VERSION),
        format=_text(facts.get("format"), _FORMAT),
        expected_format=_text(facts.get("expectedFormat"), _FORMAT),
    )


def mismatch_message(report: ServerReport) -> str:
    """What to tell the user of a server that refused its bundle for its version or its format."""
    digest = f" (manifest sha256 {report.sha256[:12]})" if report.sha256 else ""
    if report.reason == FORMAT_MISMATCH:
        found = report.format or "of another format"
        wanted = report.expected_format or "another format"
        export = " (an xgboost bundle serves as onnx only with an ONNX export)" if found == "xgboost" else ""
        return (
            f"the servers of revision {report.revision} refuse their bundle: bundle is {found}, "
            f"spec.model.format says {wanted}{export}{digest}; set model.format to auto or to the "
            f"bundle's format, or point model.uri at a bundle that is {wanted}"
        )
    found = repr(report.version) if report.version else "another version"
    wanted = repr(report.expected_version) if report.expected_version else "the spec's"
    return (
        f"the servers of revision {report.revision} refuse their bundle: its manifest says version "
        f"{found}{digest} but spec.model.version is {wanted}; pack the bundle with the spec's version, "
        f"or make model.version say the bundle's"
    )


def with_server_reports(
    deployments: Sequence[ObservedDeployment], reports: Sequence[ServerReport]
) -> list[ObservedDeployment]:
    """Each Deployment with what its servers reported: the digests the ready ones loaded, and the
    first refusal of a bundle (by reason, then digest, so that the message is the same on every
    reconcile)."""
    out = []
    for deployment in deployments:
        mine = [r for r in reports if r.revision == deployment.revision]
        digests = frozenset(r.sha256 for r in mine if r.state == "ready" and r.sha256)
        refused = sorted(
            (r for r in mine if r.state == "failed" and r.reason in REFUSALS),
            key=lambda r: (r.reason or "", r.sha256 or "", r.version or "", r.format or ""),
        )
        first = refused[0] if refused else None
        out.append(
            replace(
                deployment,
                loaded_digests=digests,
                bundle_refused=(
                    BundleRefusal(str(first.reason), mismatch_message(first)) if first is not None else None
                ),
            )
        )
    return out
