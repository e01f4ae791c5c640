"""What the caches keep of each object (k8s/projection.py, issue 16: the operator's RSS at N = 1,000).

The objects here are built the way the API server returns them: the operator's own applied manifests
with the server's defaults, status and managedFields added; pods and ReplicaSets as the Deployment
controller, the scheduler and the kubelet (kwok) leave them. Every reader of cached objects must decide
the same from what is kept as from the whole object; what is dropped is most of each pod and
ReplicaSet. (Every whole-reconcile test of this directory also reads projected objects: conftest.py.)
The figures on the bench's real objects: bench/operator/cache_memory.py, docs/benchmarks.md."""

from __future__ import annotations

import copy
import json
import tracemalloc
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from test_operator_controller import FakeCluster, body

from modeldeploy_operator.config import OperatorSettings
from modeldeploy_operator.domain.desired_state import DesiredState, stale_objects
from modeldeploy_operator.domain.manifests import build_replicas_handover
from modeldeploy_operator.domain.observed import ObservedDeployment, externally_scaled, pods_owned_by
from modeldeploy_operator.domain.resource import ModelDeploymentRef
from modeldeploy_operator.k8s.diff import unchanged
from modeldeploy_operator.k8s.projection import PROJECTIONS, project, projection
from modeldeploy_operator.reconciler import (
    Reconciler,
    _controlled_by,
    _pod_crash_looping,
    _pod_ready,
    _server_pod,
)

FIELD_MANAGER = "modeldeploy-operator"
OWNER = ModelDeploymentRef(name="churn", namespace="ml", uid="uid-1")
TIME = "2026-12-04T16:00:00Z"


def fields_v1(node: Any) -> Any:
    """managedFields' fieldsV1 of a value, as the API server writes it (list items by name)."""
    if isinstance(node, dict):
        return {f"f:{k}": fields_v1(v) for k, v in node.items()}
    if isinstance(node, list) and all(isinstance(i, dict) and "name" in i for i in node):
        return {f'k:{{"name":"{i["name"]}"}}': {".": {}, **fields_v1(i)} for i in node}
    return {}


def entry(manager: str, operation: str, part: Any, subresource: str | None = None) -> dict[str, Any]:
    found = {
        "manager": manager,
        "operation": operation,
        "apiVersion": "v1",
        "time": TIME,
        "fieldsType": "FieldsV1",
        "fieldsV1": fields_v1(part),
    }
    return {**found, "subresource": subresource} if subresource else found


def applied_manifests() -> list[dict[str, Any]]:
    """What one reconcile of a ModelDeployment applies (its serving and router Deployments, Services,
    ConfigMap, PodDisruptionBudget, ServiceAccount, Role and RoleBindings)."""
    cluster = FakeCluster()
    Reconciler(cluster, OperatorSettings()).reconcile(body())  # type: ignore[arg-type]
    manifests = [copy.deepcopy(o) for o in cluster.objects.values()]
    for manifest in manifests:  # (what the fake server added)
        for key in ("uid", "resourceVersion"):
            manifest["metadata"].pop(key)
    return manifests


def served(manifest: dict[str, Any], n: int) -> dict[str, Any]:
    """An applied manifest as the API server keeps it: identity, defaults, status, managedFields."""
    live = copy.deepcopy(manifest)
    meta = live["metadata"]
    meta.update(uid=f"uid-{manifest['kind']}-{n}", resourceVersion=str(1000 + n), generation=1)
    meta["creationTimestamp"] = TIME
    ours = entry(
        FIELD_MANAGER, "Apply", {k: v for k, v in manifest.items() if k not in ("apiVersion", "kind")}
    )
    meta["managedFields"] = [ours]
    if manifest["kind"] == "Deployment":
        spec = live["spec"]
        spec.setdefault("progressDeadlineSeconds", 600)
        spec.setdefault("revisionHistoryLimit", 10)
        spec.setdefault("strategy", {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%"}})
        pod = spec["template"]["spec"]
        for key, value in (("dnsPolicy", "ClusterFirst"), ("schedulerName", "default-scheduler")):
            pod.setdefault(key, value)
        for container in pod["containers"]:
            container.setdefault("terminationMessagePath", "/dev/termination-log")
            container.setdefault("terminationMessagePolicy", "File")
        live["status"] = {
            "observedGeneration": 1,
            "replicas": spec.get("replicas", 1),
            "readyReplicas": spec.get("replicas", 1),
            "updatedReplicas": spec.get("replicas", 1),
            "availableReplicas": spec.get("replicas", 1),
            "conditions": [
                {
                    "type": kind,
                    "status": "True",
                    "lastUpdateTime": TIME,
                    "lastTransitionTime": TIME,
                    "reason": reason,
                    "message": f'ReplicaSet "{meta["name"]}-7d9f8b6c4d" has successfully progressed.',
                }
                for kind, reason in (
                    ("Available", "MinimumReplicasAvailable"),
                    ("Progressing", "NewRSAvailable"),
                )
            ],
        }
        meta["annotations"]["deployment.kubernetes.io/revision"] = "1"
        meta["managedFields"].append(
            entry("kube-controller-manager", "Update", {"status": live["status"]}, "status")
        )
    return live


def replica_set(deployment: dict[str, Any]) -> dict[str, Any]:
    meta, template = deployment["metadata"], copy.deepcopy(deployment["spec"]["template"])
    name = f"{meta['name']}-7d9f8b6c4d"
    labels = {**template["metadata"]["labels"], "pod-template-hash": "7d9f8b6c4d"}
    spec = {"replicas": deployment["spec"].get("replicas", 1), "selector": {"matchLabels": labels}}
    spec["template"] = {**template, "metadata": {**template["metadata"], "labels": labels}}
    rs: dict[str, Any] = {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {
            "name": name,
            "namespace": meta["namespace"],
            "uid": f"uid-rs-{meta['name']}",
            "resourceVersion": "2001",
            "generation": 1,
            "creationTimestamp": TIME,
            "labels": labels,
            "annotations": {
                "deployment.kubernetes.io/desired-replicas": "1",
                "deployment.kubernetes.io/revision": "1",
            },
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "kind": "Deployment",
                    "name": meta["name"],
                    "uid": meta["uid"],
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": spec,
        "status": {"replicas": 1, "readyReplicas": 1, "availableReplicas": 1, "observedGeneration": 1},
    }
    rs["metadata"]["managedFields"] = [
        entry("kube-controller-manager", "Update", {"metadata": rs["metadata"], "spec": spec}),
        entry("kube-controller-manager", "Update", {"status": rs["status"]}, "status"),
    ]
    return rs


def pod(
    rs: dict[str, Any],
    i: int,
    *,
    ready: bool = True,
    waiting: str | None = None,
    restarts: int = 0,
    phase: str = "Running",
    deleting: bool = False,
) -> dict[str, Any]:
    template = rs["spec"]["template"]
    spec = copy.deepcopy(template["spec"])
    spec.update(nodeName="kwok-node-0", enableServiceLinks=True, preemptionPolicy="PreemptLowerPriority")
    spec["volumes"] = [
        *spec.get("volumes", []),
        {
            "name": f"kube-api-access-{i:05d}",
            "projected": {"sources": [{"serviceAccountToken": {"path": "token"}}]},
        },
    ]
    state: dict[str, Any] = (
        {"waiting": {"reason": waiting, "message": "back-off 5m0s restarting failed container"}}
        if waiting
        else {"running": {"startedAt": TIME}}
    )
    status = {
        "phase": phase,
        "hostIP": "10.250.0.1",
        "podIP": f"10.250.1.{i}",
        "podIPs": [{"ip": f"10.250.1.{i}"}],
        "startTime": TIME,
        "qosClass": "Burstable",
        "conditions": [
            {
                "type": kind,
                "status": "True" if (ready or kind != "Ready") else "False",
                "lastTransitionTime": TIME,
            }
            for kind in (
                "PodReadyToStartContainers",
                "Initialized",
                "Ready",
                "ContainersReady",
                "PodScheduled",
            )
        ],
        "containerStatuses": [
            {
                "name": c["name"],
                "image": c.get("image", ""),
                "imageID": "",
                "containerID": f"kwok://{c['name']}-{i}",
                "ready": ready,
                "started": True,
                "restartCount": restarts,
                "state": state,
                "lastState": {},
            }
            for c in spec["containers"]
        ],
    }
    meta = {
        "name": f"{rs['metadata']['name']}-{i:05d}",
        "generateName": f"{rs['metadata']['name']}-",
        "namespace": rs["metadata"]["namespace"],
        "uid": f"uid-pod-{rs['metadata']['name']}-{i}",
        "resourceVersion": str(3000 + i),
        "creationTimestamp": TIME,
        "labels": template["metadata"]["labels"],
        "annotations": template["metadata"].get("annotations", {}),
        "ownerReferences": [
            {
                "apiVersion": "apps/v1",
                "kind": "ReplicaSet",
                "name": rs["metadata"]["name"],
                "uid": rs["metadata"]["uid"],
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ],
    }
    if deleting:
        meta.update(deletionTimestamp=TIME, deletionGracePeriodSeconds=30)
    meta["managedFields"] = [
        entry("kube-controller-manager", "Update", {"metadata": meta, "spec": spec}),
        entry("kwok", "Update", {"status": status}, "status"),
    ]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec, "status": status}


def cluster_objects() -> tuple[
    list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]
]:
    """(manifests, applied objects as served, ReplicaSets, pods of every kind a reader tells apart)."""
    manifests = applied_manifests()
    live = [served(m, n) for n, m in enumerate(manifests)]
    deployments = [o for o in live if o["kind"] == "Deployment"]
    sets = [replica_set(d) for d in deployments]
    pods = []
    for n, rs in enumerate(sets):
        pods += [
            pod(rs, 10 * n),
            pod(rs, 10 * n + 1, ready=False),
            pod(rs, 10 * n + 2, ready=False, waiting="CrashLoopBackOff", restarts=1),
            pod(rs, 10 * n + 3, waiting="ContainerCreating"),
            pod(rs, 10 * n + 4, restarts=5),
            pod(rs, 10 * n + 5, phase="Succeeded", ready=False),
            pod(rs, 10 * n + 6, deleting=True),
        ]
    return manifests, live, sets, pods


def kept(objs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [project(o) for o in objs]


def test_every_reader_decides_the_same_from_what_the_cache_keeps() -> None:
    manifests, live, sets, pods = cluster_objects()
    assert {o["kind"] for o in live} >= {"Deployment", "Service", "ConfigMap", "PodDisruptionBudget"}
    deployments = [o for o in live if o["kind"] == "Deployment"]
    for reader in (_pod_ready, _pod_crash_looping, _server_pod):
        assert [reader(p) for p in kept(pods)] == [reader(p) for p in pods], reader.__name__
    assert any(_pod_crash_looping(p) for p in pods)
    assert any(_server_pod(p) for p in pods)
    assert any(_pod_ready(p) for p in pods)
    assert not all(_pod_ready(p) for p in pods)
    mine = pods_owned_by(pods, sets, deployments)
    assert len(mine) == len(pods)
    assert [p["metadata"]["name"] for p in pods_owned_by(kept(pods), kept(sets), kept(deployments))] == [
        p["metadata"]["name"] for p in mine
    ]
    for d in deployments:
        assert ObservedDeployment.from_object(project(d)) == ObservedDeployment.from_object(d)
    by_name = {(m["kind"], m["metadata"]["name"]): m for m in manifests}
    for obj in live:
        manifest = by_name[(obj["kind"], obj["metadata"]["name"])]
        assert unchanged(manifest, obj), obj["kind"]
        assert unchanged(manifest, project(obj)), obj["kind"]
        assert _controlled_by(project(obj), OWNER) == _controlled_by(obj, OWNER)
        if obj["kind"] == "Deployment":
            without = {**manifest, "spec": {k: v for k, v in manifest["spec"].items() if k != "replicas"}}
            handover = build_replicas_handover(without, obj, FIELD_MANAGER)
            assert handover is not None
            assert build_replicas_handover(without, project(obj), FIELD_MANAGER) == handover
    # Someone else's edit of a field we set is seen in what is kept too.
    edited = copy.deepcopy(deployments[0])
    edited["spec"]["template"]["spec"]["containers"][0]["image"] = "evil:latest"
    manifest = by_name[("Deployment", edited["metadata"]["name"])]
    assert not unchanged(manifest, project(edited))
    keep = frozenset({(live[0]["kind"], live[0]["metadata"]["name"])})
    state = DesiredState(manifests=(), replica_patches=(), keep=keep, arms=())
    assert [o["metadata"]["name"] for o in stale_objects(state, kept(live))] == [
        o["metadata"]["name"] for o in stale_objects(state, live)
    ]
    user_hpa = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {
            "name": "users",
            "namespace": "ml",
            "managedFields": [entry("kubectl", "Apply", {"x": 1})],
        },
        "spec": {
            "scaleTargetRef": {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": deployments[0]["metadata"]["name"],
            }
        },
        "status": {"currentReplicas": 3},
    }
    names = [d["metadata"]["name"] for d in deployments]
    assert externally_scaled([project(user_hpa)], names, OWNER.uid) == externally_scaled(
        [user_hpa], names, OWNER.uid
    )
    assert externally_scaled([user_hpa], names, OWNER.uid)


def deep_size(obj: Any) -> int:
    """Bytes a fresh copy of `obj` takes in Python (tracemalloc: dicts, lists and strings alike)."""
    text = json.dumps(obj)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        copy_of = json.loads(text)
        size = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    del copy_of
    return size


def test_what_nobody_reads_is_dropped() -> None:
    _, live, sets, pods = cluster_objects()
    one_pod, one_rs = project(pods[0]), project(sets[0])
    assert set(one_pod) == {"apiVersion", "kind", "metadata", "status"}  # no spec: containers, volumes
    assert set(one_pod["metadata"]) == {
        "name",
        "namespace",
        "uid",
        "resourceVersion",
        "labels",
        "ownerReferences",
    }
    assert one_pod["metadata"]["ownerReferences"] == [{"uid": sets[0]["metadata"]["uid"], "controller": True}]
    assert [c["type"] for c in one_pod["status"]["conditions"]] == ["Ready"]
    assert {k for c in one_pod["status"]["containerStatuses"] for k in c} == {"name", "restartCount", "state"}
    assert set(one_rs) == {"apiVersion", "kind", "metadata"}
    assert "annotations" not in one_rs["metadata"]
    assert "managedFields" not in one_rs["metadata"]
    for obj in live:
        projected = project(obj)
        body_fields = {k: v for k, v in obj.items() if k not in ("metadata", "status")}  # spec, data, rules
        assert {k: v for k, v in projected.items() if k not in ("metadata", "status")} == body_fields
        assert "creationTimestamp" not in projected["metadata"]
        owners = projected["metadata"].get("managedFields", [])
        assert owners == (
            [{"manager": FIELD_MANAGER, "operation": "Apply", "fieldsV1": {"f:spec": {"f:replicas": {}}}}]
            if "replicas" in obj.get("spec", {})
            else []
        )
        if obj["kind"] == "Deployment":
            assert projected["status"]["conditions"] == [{"type": "Progressing", "reason": "NewRSAvailable"}]
    # In Python (bench/operator/cache_memory.py measures the bench's own objects):
    assert deep_size(one_pod) * 5 < deep_size(pods[0])
    assert deep_size(one_rs) * 5 < deep_size(sets[0])
    deployment = next(o for o in live if o["kind"] == "Deployment")
    assert deep_size(project(deployment)) * 1.5 < deep_size(deployment)


def test_the_input_is_left_as_it_is_and_a_second_projection_changes_nothing() -> None:
    _, live, sets, pods = cluster_objects()
    for obj in [*live, *sets, *pods, body()]:
        before = copy.deepcopy(obj)
        once = project(obj)
        assert obj == before
        assert project(once) == once


def test_an_informer_keeps_its_own_kinds_projection_whatever_an_object_says() -> None:
    _, _, _, pods = cluster_objects()
    unnamed = {k: v for k, v in pods[0].items() if k not in ("kind", "apiVersion")}
    assert projection("Pod")(unnamed)["status"] == project(pods[0])["status"]
    assert "spec" not in projection("Pod")(unnamed)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
FIELDS = st.sampled_from(
    [
        "status",
        "spec",
        "conditions",
        "containerStatuses",
        "state",
        "ownerReferences",
        "managedFields",
        "fieldsV1",
        "f:spec",
        "f:replicas",
        "labels",
        "type",
        "reason",
        "controller",
        "operation",
    ]
)
SHAPED = st.recursive(
    JSON,
    lambda children: st.dictionaries(FIELDS, children, max_size=5) | st.lists(children, max_size=3),
    max_leaves=30,
)


@settings(max_examples=150, deadline=None)
@given(
    kind=st.sampled_from([*PROJECTIONS, "Deployment", "Service", "Unknown"]),
    meta=st.dictionaries(FIELDS | st.sampled_from(["name", "namespace", "uid"]), SHAPED, max_size=5),
    rest=st.dictionaries(FIELDS, SHAPED, max_size=4),
)
def test_any_shape_of_object_is_projected_without_an_error(
    kind: str, meta: dict[str, Any], rest: dict[str, Any]
) -> None:
    obj = {**rest, "kind": kind, "metadata": meta}
    once = projection(kind)(obj)
    assert projection(kind)(once) == once
