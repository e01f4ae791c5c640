"""What the operator sees of its serving Deployments, reduced to the facts status needs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .labels import REVISION_LABEL, VARIANT_LABEL, VERSION_LABEL


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
