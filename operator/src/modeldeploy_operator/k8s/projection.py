"""What the operator keeps of each object it caches: only the fields some reader reads (issue 16, RSS).

The informer caches (k8s/cache.py) and the controller's ModelDeployment bodies held whole objects as
Python dicts, and their memory grew with them: about 0.5 MiB per ModelDeployment (the caches hold about
fifteen objects for each), 545 MiB of RSS at N = 1,000 against a goal of 300 MB. `project` is applied to
every object as it enters the cache (each page of a list, each watch event, each write's answer) and
to every ModelDeployment body the controller keeps; it never changes its input (what it keeps is a new
dict, or the input itself when there is nothing to leave out).

The one list of what is read. Add to it whatever a new reader of a cached object reads:

- every kind (cache.py, controller.py): apiVersion, kind, metadata.name, namespace, resourceVersion,
  labels (the owner index; the controller queues the owner named there);
- objects the operator applies (the owned kinds: Deployment, Service, HorizontalPodAutoscaler,
  HTTPRoute, ConfigMap, PodDisruptionBudget, ServiceAccount, Role, RoleBinding, NetworkPolicy):
  everything but `status`, since `k8s/diff.py` compares every field of the manifest we would apply
  with the live object (`covers`) to skip an apply that would change nothing, and which fields the
  manifest sets is decided later, by the plan. The metadata they keep: uid and ownerReferences (whose
  object it is, reconciler `_controlled_by`, the prune), annotations (the applied hash), generation,
  deletionTimestamp (`unchanged`), and of managedFields only which Apply manager owns spec.replicas
  (the replicas handover, domain/manifests.py `build_replicas_handover`); a Deployment's status only
  what `ObservedDeployment.from_object` reads (the replica counts, observedGeneration, the Progressing
  condition's reason); an HPA's spec.scaleTargetRef (`externally_scaled`) is in its spec;
- Pods (read only, reconciler `_observe`, `_server_pod`, domain/observed.py `pods_owned_by`): uid,
  the controller ownerReference's uid, deletionTimestamp, status.phase, podIP, the Ready condition and
  of each container status its name, restartCount and the name of its state (with a waiting state's
  reason: CrashLoopBackOff);
- ReplicaSets (read only, `pods_owned_by`): uid and the controller ownerReference's uid;
- ModelDeployments (the controller's bodies, the reconciler): everything but metadata.managedFields,
  which nothing reads (and which our own status writes make longer).

Nothing writes a cached object back: the operator applies manifests it builds from the spec
(server-side apply), patches `spec.replicas` and status by merge patch, and deletes by name and uid;
no read-modify-write starts from a cached copy, so a field left out here is never lost on the server.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

Object = dict[str, Any]

READ_ONLY_KINDS = ("Pod", "ReplicaSet")
"""Kinds the operator reads but never applies: only the fields named above are kept."""
MODELDEPLOYMENT_KIND = "ModelDeployment"

_APPLIED_METADATA = (
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "labels",
    "annotations",
    "ownerReferences",
    "deletionTimestamp",
)
"""Metadata kept of an applied object: what a manifest sets (name, namespace, labels, annotations,
ownerReferences: `covers` compares them) and what readers ask (uid, generation, deletionTimestamp)."""
_READ_ONLY_METADATA = ("name", "namespace", "uid", "resourceVersion", "labels", "deletionTimestamp")
_DEPLOYMENT_STATUS = ("readyReplicas", "updatedReplicas", "availableReplicas", "observedGeneration")


def _dict(value: Any) -> Object:
    return value if isinstance(value, dict) else {}


def _items(value: Any) -> list[Object]:
    """The dicts of a list field (anything else in it, or a field that is no list, is not read)."""
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def _intern(value: Any) -> Any:
    """Label keys and values repeat across objects (every pod of a revision has the same ones): one
    string each instead of one per object."""
    return sys.intern(value) if isinstance(value, str) else value


def _labels(labels: Any) -> Any:
    if not isinstance(labels, dict):
        return labels
    return {_intern(k): _intern(v) for k, v in labels.items()}


def replicas_owners(managed_fields: Any) -> list[Object]:
    """Of metadata.managedFields, the Apply entries that own spec.replicas, reduced to that (what the
    replicas handover asks: whether our field manager applies the replicas)."""
    return [
        {"manager": entry.get("manager"), "operation": "Apply", "fieldsV1": {"f:spec": {"f:replicas": {}}}}
        for entry in _items(managed_fields)
        if entry.get("operation") == "Apply"
        and "f:replicas" in _dict(_dict(entry.get("fieldsV1")).get("f:spec"))
    ]


def _metadata(meta: Object, keep: tuple[str, ...]) -> Object:
    out = {key: meta[key] for key in keep if key in meta}
    if "labels" in out:
        out["labels"] = _labels(out["labels"])
    return out


def _controller_refs(refs: Any) -> list[Object]:
    """The controlling ownerReference's uid (`controller_uid`, `pods_owned_by`): the rest is not read."""
    return [{"uid": ref.get("uid"), "controller": True} for ref in _items(refs) if ref.get("controller")]


def _type(obj: Object) -> Object:
    return {key: obj[key] for key in ("apiVersion", "kind") if key in obj}


def _read_only_metadata(obj: Object) -> Object:
    meta = _dict(obj.get("metadata"))
    out = _metadata(meta, _READ_ONLY_METADATA)
    refs = _controller_refs(meta.get("ownerReferences"))
    if refs:
        out["ownerReferences"] = refs
    return out


def project_pod(obj: Object) -> Object:
    status = _dict(obj.get("status"))
    kept: Object = {}
    for key in ("phase", "podIP"):
        if key in status:
            kept[key] = _intern(status[key])
    ready = [
        {"type": "Ready", "status": _intern(c.get("status"))}
        for c in _items(status.get("conditions"))
        if c.get("type") == "Ready"
    ]
    if ready:
        kept["conditions"] = ready
    containers = []
    for container in _items(status.get("containerStatuses")):
        state: Object = {}
        for name, detail in _dict(container.get("state")).items():
            reason = detail.get("reason") if isinstance(detail, dict) else None
            state[_intern(name)] = {"reason": _intern(reason)} if reason is not None else {}
        containers.append(
            {
                "name": _intern(container.get("name")),
                "restartCount": container.get("restartCount", 0),
                "state": state,
            }
        )
    if containers:
        kept["containerStatuses"] = containers
    return {**_type(obj), "metadata": _read_only_metadata(obj), "status": kept}


def project_replica_set(obj: Object) -> Object:
    return {**_type(obj), "metadata": _read_only_metadata(obj)}


def _deployment_status(status: Any) -> Object:
    status = _dict(status)
    kept = {key: status[key] for key in _DEPLOYMENT_STATUS if key in status}
    deadline = [
        {"type": "Progressing", "reason": _intern(c.get("reason"))}
        for c in _items(status.get("conditions"))
        if c.get("type") == "Progressing"
    ]
    if deadline:
        kept["conditions"] = deadline
    return kept


def project_applied(obj: Object) -> Object:
    """An object the operator applies: all of it but status (a Deployment's: what is read of it)."""
    meta = _dict(obj.get("metadata"))
    out: Object = {key: value for key, value in obj.items() if key not in ("metadata", "status")}
    kept = _metadata(meta, _APPLIED_METADATA)
    owners = replicas_owners(meta.get("managedFields"))
    if owners:
        kept["managedFields"] = owners
    out["metadata"] = kept
    if obj.get("kind") == "Deployment" and "status" in obj:
        out["status"] = _deployment_status(obj["status"])
    return out


def project_modeldeployment(obj: Object) -> Object:
    meta = obj.get("metadata")
    if not isinstance(meta, dict) or "managedFields" not in meta:
        return obj
    return {**obj, "metadata": {k: v for k, v in meta.items() if k != "managedFields"}}


PROJECTIONS: dict[str, Callable[[Object], Object]] = {
    "Pod": project_pod,
    "ReplicaSet": project_replica_set,
    MODELDEPLOYMENT_KIND: project_modeldeployment,
}
"""By kind; any other kind is one the operator applies (`project_applied`)."""


def projection(kind: str) -> Callable[[Object], Object]:
    """The projection of a kind (an informer's: it knows its kind, whatever its objects say)."""
    chosen = PROJECTIONS.get(kind, project_applied)

    def keep(obj: Object) -> Object:
        if not isinstance(obj.get("metadata"), dict):
            return obj  # nothing to key it by: the cache does not keep it either
        return chosen(obj)

    return keep


def project(obj: Object) -> Object:
    """What is kept of `obj`, by its own `kind`."""
    return projection(str(obj.get("kind")))(obj)
