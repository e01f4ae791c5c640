"""Desired Kubernetes objects for one (variant, revision): plain dicts ready for server-side apply.

Pure functions of their arguments. Each returns a complete object (apiVersion, kind, metadata with
namespace, owner reference and labels), containing only the fields the operator means to own: with
server-side apply, any field set here is claimed by the operator's field manager.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from modeldeploy_contract.model_store import PVC_VOLUME, PvcLocation, is_pvc_uri, parse_pvc_uri
from modeldeploy_contract.redact import redact_uri

from . import labels as lbl
from .names import revision_name, stream_name
from .pods import render_pod_settings
from .predlog import add_prediction_log
from .resource import ModelDeploymentRef
from .revision import MODEL_CACHE_DIR, SERVER_PORT, ResolvedVariant
from .spec import KafkaConnection, PodDisruptionBudgetSpec, PodSettings, PredictionLog, Resources, Stream
from .stream import SECRET_MOUNT, StreamRevision, secret_items, stream_settings_for

CONTAINER_NAME = "server"
PORT_NAME = "http"
SERVER_COMMAND = ("modeldeploy", "serve")
LIVE_PATH = "/v2/health/live"
READY_PATH = "/v2/health/ready"
METRICS_PATH = "/metrics"
RUN_AS_USER = 10001  # the non-root user of the serving image (see serving's Dockerfile)
CACHE_VOLUME = "model-cache"
TMP_VOLUME = "tmp"
CACHE_MOUNT = MODEL_CACHE_DIR.rsplit("/", 1)[0]


def _metadata(owner: ModelDeploymentRef, name: str, labels: dict[str, str]) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": owner.namespace,
        "labels": labels,
        "ownerReferences": [owner.owner_reference()],
    }


def _resources(resources: Resources) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if resources.requests:
        out["requests"] = {key: str(value) for key, value in resources.requests.items()}
    if resources.limits:
        out["limits"] = {key: str(value) for key, value in resources.limits.items()}
    return out


def _probe(path: str, *, period: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": PORT_NAME},
        "periodSeconds": period,
        "timeoutSeconds": 2,
        "failureThreshold": failures,
    }


def _restricted_container_security() -> dict[str, Any]:
    # The Pod Security Standards' "restricted" profile, so the pods run in namespaces enforcing it.
    return {
        "runAsNonRoot": True,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _server_container(variant: ResolvedVariant, image: str, pull_policy: str) -> dict[str, Any]:
    env = [{"name": key, "value": value} for key, value in sorted(variant.settings.to_env().items())]
    container: dict[str, Any] = {
        "name": CONTAINER_NAME,
        "image": image,
        "imagePullPolicy": pull_policy,
        "command": list(SERVER_COMMAND),
        "ports": [{"name": PORT_NAME, "containerPort": SERVER_PORT, "protocol": "TCP"}],
        "env": env,
        "resources": _resources(variant.resources),
        # Downloading a large model may take minutes: the startup probe holds liveness off meanwhile
        # (10 minutes). It and readiness run often because the kubelet starts readiness only after
        # startup passes and then on its own period: with 5 s periods the churn server, loaded 1-2 s
        # after its container started, was Ready 5.9 s after scheduling (p50 of 5 on the real node,
        # bench/cluster/pod_start.py); each probe is one local GET of a cached answer.
        "startupProbe": _probe(LIVE_PATH, period=1, failures=600),
        "livenessProbe": _probe(LIVE_PATH, period=10, failures=3),
        "readinessProbe": _probe(READY_PATH, period=2, failures=3),
        "securityContext": _restricted_container_security(),
        "volumeMounts": [
            {"name": CACHE_VOLUME, "mountPath": CACHE_MOUNT},
            {"name": TMP_VOLUME, "mountPath": "/tmp"},  # noqa: S108 - an emptyDir, private to the pod
        ],
    }
    if variant.model.storage and variant.model.storage.secret_name:
        # Store credentials (e.g. AWS_ACCESS_KEY_ID) come from the user's Secret, never from the spec.
        container["envFrom"] = [{"secretRef": {"name": variant.model.storage.secret_name}}]
    store = model_store_claim(variant)
    if store is not None:
        mount = {"name": PVC_VOLUME, "mountPath": store.mount_path, "readOnly": True}
        container["volumeMounts"].append(mount)
    return container


def model_store_claim(variant: ResolvedVariant) -> PvcLocation | None:
    """The PersistentVolumeClaim holding the bundle (a pvc:// URI), mounted read-only where the
    server looks for it (modeldeploy_contract.model_store): the server never writes to a model store."""
    uri = variant.model.uri
    return parse_pvc_uri(uri) if is_pvc_uri(uri) else None


CACHE_HEADROOM_MIB = 64


def cache_size_limit(variant: ResolvedVariant) -> str:
    """sizeLimit of the model-cache emptyDir: every worker may be downloading a full bundle at once
    (each into its own temporary folder, renamed in place: no second copy), plus headroom. Past it the
    kubelet evicts the pod, so a hostile or broken store cannot fill the node's disk."""
    settings = variant.settings
    mib = -(-settings.max_artifact_bytes * max(1, settings.workers) // (1024 * 1024)) + CACHE_HEADROOM_MIB
    return f"{mib}Mi"


def _pod_template(
    owner: ModelDeploymentRef,
    variant: ResolvedVariant,
    image: str,
    pull_policy: str,
    pod: PodSettings,
) -> dict[str, Any]:
    template = _own_pod_template(owner, variant, image, pull_policy)
    selector = lbl.revision_selector(owner.name, variant.name, variant.revision)
    return render_pod_settings(template, pod, container=CONTAINER_NAME, spread_selector=selector)


def _own_pod_template(
    owner: ModelDeploymentRef, variant: ResolvedVariant, image: str, pull_policy: str
) -> dict[str, Any]:
    labels = lbl.serving_labels(owner.name, variant.name, variant.revision, variant.model.version)
    annotations = {
        lbl.REVISION_ANNOTATION: variant.revision,
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(SERVER_PORT),
        "prometheus.io/path": METRICS_PATH,
    }
    return {
        "metadata": {"labels": labels, "annotations": annotations},
        "spec": {
            # The server never calls the API; no token in the pod.
            "automountServiceAccountToken": False,
            # Service links would inject variables such as MODELDEPLOY_SERVER_PORT=tcp://... for a
            # Service named modeldeploy-server, which the server's settings would try to parse.
            "enableServiceLinks": False,
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": RUN_AS_USER,
                "runAsGroup": RUN_AS_USER,
                "fsGroup": RUN_AS_USER,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "terminationGracePeriodSeconds": 30,
            "containers": [_server_container(variant, image, pull_policy)],
            "volumes": [
                {"name": CACHE_VOLUME, "emptyDir": {"sizeLimit": cache_size_limit(variant)}},
                {"name": TMP_VOLUME, "emptyDir": {"sizeLimit": "256Mi"}},
                *_store_volume(variant),
            ],
        },
    }


def _store_volume(variant: ResolvedVariant) -> list[dict[str, Any]]:
    store = model_store_claim(variant)
    if store is None:
        return []
    return [{"name": PVC_VOLUME, "persistentVolumeClaim": {"claimName": store.claim, "readOnly": True}}]


def build_serving_deployment(
    owner: ModelDeploymentRef,
    variant: ResolvedVariant,
    *,
    image: str,
    replicas: int | None,
    progress_deadline_seconds: int = 600,
    image_pull_policy: str = "IfNotPresent",
    pod: PodSettings | None = None,
    prediction_log: PredictionLog | None = None,
    extra_env: Sequence[dict[str, str]] = (),
) -> dict[str, Any]:
    """The Deployment running one (variant, revision); `pod`: the spec's serving pod settings, merged
    over the chart's defaults (`pods.with_pod_defaults`).

    With `prediction_log` (spec.predictionLog) the servers get MODELDEPLOY_PREDLOG_* variables and
    the HMAC key's Secret mounted as a file. `extra_env`: more variables of the server container that
    are not part of the revision (spec.effectiveness: the joiner feed's, domain/joiner.py).

    `replicas` is None when an autoscaler owns the count (our HPA, the user's, or an External one):
    the field is then left out, so that server-side apply does not take it back on every reconcile.
    The rollout planner passes the count it wants for canary and scaled-down revisions.
    """
    name = revision_name(owner.name, variant.name, variant.revision)
    labels = lbl.serving_labels(owner.name, variant.name, variant.revision, variant.model.version)
    metadata = _metadata(owner, name, labels)
    metadata["annotations"] = {
        lbl.REVISION_ANNOTATION: variant.revision,
        lbl.MODEL_URI_ANNOTATION: redact_uri(variant.model.uri),  # shown, not used: no credentials
        lbl.MODEL_SHA256_ANNOTATION: variant.model.sha256 or "",
    }
    spec: dict[str, Any] = {
        "selector": {"matchLabels": lbl.revision_selector(owner.name, variant.name, variant.revision)},
        # A revision never changes its pod template except for resources; no ReplicaSet history needed.
        "revisionHistoryLimit": 1,
        "progressDeadlineSeconds": progress_deadline_seconds,
        # In-place updates (resources) keep full capacity: surge first, never go below the count.
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": "25%"}},
        "template": _pod_template(owner, variant, image, image_pull_policy, pod or PodSettings()),
    }
    if prediction_log is not None:
        add_prediction_log(
            spec["template"]["spec"], prediction_log, owner.name, variant.name, variant.revision
        )
    if extra_env:
        container = spec["template"]["spec"]["containers"][0]
        container["env"] = container["env"] + list(extra_env)
    if replicas is not None:
        spec["replicas"] = replicas
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": metadata, "spec": spec}


def build_serving_service(owner: ModelDeploymentRef, variant: ResolvedVariant) -> dict[str, Any]:
    """The ClusterIP Service of one (variant, revision): what the router and HTTPRoutes point at."""
    name = revision_name(owner.name, variant.name, variant.revision)
    labels = lbl.serving_labels(owner.name, variant.name, variant.revision, variant.model.version)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(owner, name, labels),
        "spec": {
            "type": "ClusterIP",
            "selector": lbl.revision_selector(owner.name, variant.name, variant.revision),
            "ports": [{"name": PORT_NAME, "port": SERVER_PORT, "targetPort": PORT_NAME, "protocol": "TCP"}],
        },
    }


def build_stable_service(owner: ModelDeploymentRef, selector: dict[str, str]) -> dict[str, Any]:
    """The Service users call, named after the ModelDeployment.

    Its selector is the router's pods (`labels.router_selector`) with the router provider, or a
    revision's pods (`labels.revision_selector`) while no router exists.
    """
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(owner, owner.name, lbl.common_labels(owner.name, lbl.SERVER_COMPONENT)),
        "spec": {
            "type": "ClusterIP",
            "selector": dict(selector),
            "ports": [{"name": PORT_NAME, "port": SERVER_PORT, "targetPort": PORT_NAME, "protocol": "TCP"}],
        },
    }


def build_hpa(owner: ModelDeploymentRef, variant: ResolvedVariant) -> dict[str, Any] | None:
    """The HorizontalPodAutoscaler of one (variant, revision), or None without spec.autoscaling."""
    scaling = variant.autoscaling
    if scaling is None or scaling.provider != "HPA" or scaling.max_replicas is None:
        return None
    name = revision_name(owner.name, variant.name, variant.revision)
    labels = lbl.serving_labels(owner.name, variant.name, variant.revision, variant.model.version)
    cpu_target = {"type": "Utilization", "averageUtilization": scaling.target_cpu_utilization_percentage}
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": _metadata(owner, name, labels),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "minReplicas": scaling.min_replicas,
            "maxReplicas": scaling.max_replicas,
            "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": cpu_target}}],
        },
    }


def build_serving_pdb(
    owner: ModelDeploymentRef, variant: ResolvedVariant, budget: PodDisruptionBudgetSpec
) -> dict[str, Any] | None:
    """The PodDisruptionBudget of one (variant, revision), or None when budgets are off.

    One per revision rather than one per ModelDeployment: each revision is an arm with its own share
    of the traffic, and a budget over all of them would let a drain take every pod of a small canary
    while the stable revision's pods kept the count up. A pod may match only one budget (the eviction
    API refuses pods with several), so the router's budget selects the router's pods only."""
    if not budget.enabled:
        return None
    name = revision_name(owner.name, variant.name, variant.revision)
    labels = lbl.serving_labels(owner.name, variant.name, variant.revision, variant.model.version)
    spec: dict[str, Any] = {
        "selector": {"matchLabels": lbl.revision_selector(owner.name, variant.name, variant.revision)}
    }
    if budget.min_available is not None:
        spec["minAvailable"] = budget.min_available
    else:
        # maxUnavailable (not minAvailable) by default: it never blocks a drain of a 1-replica revision
        # forever, and it scales with the replica count an autoscaler picks.
        spec["maxUnavailable"] = budget.max_unavailable if budget.max_unavailable is not None else 1
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _metadata(owner, name, labels),
        "spec": spec,
    }


HANDOVER_SUFFIX = "-replicas-handover"


def _owns_replicas(live: dict[str, Any], field_manager: str) -> bool:
    for entry in live.get("metadata", {}).get("managedFields") or ():
        spec_fields = (entry.get("fieldsV1") or {}).get("f:spec") or {}
        if (
            entry.get("manager") == field_manager
            and entry.get("operation") == "Apply"
            and "f:replicas" in spec_fields
        ):
            return True
    return False


def build_replicas_handover(
    desired: dict[str, Any], live: dict[str, Any] | None, field_manager: str
) -> tuple[str, dict[str, Any]] | None:
    """(field manager, manifest) of the apply that hands a Deployment's replicas over to an autoscaler.

    When the operator's apply stops setting spec.replicas (an HPA appeared), server-side apply removes
    a field only its manager owned: the Deployment would be reset to 1 replica until the HPA scaled it
    back. Kubernetes' documented way out ("Transferring ownership" in the server-side apply docs) is to
    apply the current value first under a second manager, which keeps the field alive once the main
    manager lets go; the HPA's next scale takes it from that manager. None when there is nothing to
    hand over (replicas still desired, no live object, or the operator does not own the field)."""
    if live is None or "replicas" in desired.get("spec", {}) or not _owns_replicas(live, field_manager):
        return None
    meta = desired["metadata"]
    manifest = {
        "apiVersion": desired["apiVersion"],
        "kind": desired["kind"],
        "metadata": {"name": meta["name"], "namespace": meta["namespace"]},
        "spec": {"replicas": int(live.get("spec", {}).get("replicas", 1))},
    }
    return field_manager + HANDOVER_SUFFIX, manifest


STREAM_COMMAND = ("modeldeploy", "stream")
KAFKA_SECRET_VOLUME = "kafka-credentials"  # noqa: S105 - a volume name, not a secret
STREAM_GRACE_SECONDS = 60
"""A stopping stream pod drains for at most 30 s (runner._drain) and then commits and closes: 60 s
leaves it room, so that a handover starts from offsets the old writer committed itself. The joiner
feed's stop (MODELDEPLOY_FEED_SHUTDOWN_SECONDS, 15 s) comes after the drain and the health server's
stop (at most 10 s, stream/main.py): 30 + 10 + 15 = 55 s fits too."""


def kafka_secret_volume(conn: KafkaConnection) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """(volume, mount) of a Kafka connection's Secret: only the keys its protocol needs, read-only
    files under SECRET_MOUNT that the client settings point at; None without a Secret."""
    items = secret_items(conn) if conn.secret_name is not None else []
    if not items:
        return None
    volume = {
        "name": KAFKA_SECRET_VOLUME,
        "secret": {"secretName": conn.secret_name, "items": items, "defaultMode": 0o440},
    }
    return volume, {"name": KAFKA_SECRET_VOLUME, "mountPath": SECRET_MOUNT, "readOnly": True}


def build_stream_deployment(
    owner: ModelDeploymentRef,
    variant: ResolvedVariant,
    stream: Stream,
    revision: StreamRevision,
    *,
    image: str,
    image_pull_policy: str = "IfNotPresent",
    pod: PodSettings | None = None,
    prediction_log: PredictionLog | None = None,
    feed_env: Sequence[dict[str, str]] = (),
) -> dict[str, Any]:
    """The Deployment running `modeldeploy stream` for one (variant, revision) in one role; `pod`: the
    serving pod settings (merged over the chart's defaults), as for the REST pods. With
    `prediction_log`, the output role logs its predictions as the REST pods do; a shadow does not
    (its outputs answer no one, like the router's mirror copies). `feed_env`: the label joiner's
    MODELDEPLOY_FEED_* variables (spec.effectiveness), given to the output role only, for the same
    reason: a shadow's records would carry the output writer's request ids (duplicates to the joiner).

    The same image, bundle loading (ServerSettings), probes, metrics port and restricted security as the
    REST pods; the Kafka side comes from the contract's StreamSettings as MODELDEPLOY_STREAM_* variables.
    The credentials Secret is mounted as files the settings point at: its values appear nowhere in the
    pod spec, the environment or the logs.
    """
    name = stream_name(owner.name, variant.name, revision.revision, revision.role)
    labels = lbl.stream_labels(
        owner.name, variant.name, revision.revision, revision.role, variant.model.version
    )
    settings = stream_settings_for(stream, owner.namespace, owner.name, revision)
    template = _pod_template(owner, variant, image, image_pull_policy, pod or PodSettings())
    # Only the stream labels: a REST revision label would put stream pods behind the REST Service.
    template["metadata"]["labels"] = labels
    pod_spec = template["spec"]
    pod_spec["terminationGracePeriodSeconds"] = STREAM_GRACE_SECONDS
    container = pod_spec["containers"][0]
    container["command"] = list(STREAM_COMMAND)
    stream_env = [{"name": k, "value": v} for k, v in sorted(settings.to_env().items())]
    container["env"] = container["env"] + stream_env
    secret_volume = kafka_secret_volume(stream)
    if secret_volume is not None:
        pod_spec["volumes"].append(secret_volume[0])
        container["volumeMounts"].append(secret_volume[1])
    if prediction_log is not None and revision.role == "output":
        add_prediction_log(pod_spec, prediction_log, owner.name, variant.name, revision.revision)
    if feed_env and revision.role == "output":
        container["env"] = container["env"] + list(feed_env)
    metadata = _metadata(owner, name, labels)
    metadata["annotations"] = {
        lbl.REVISION_ANNOTATION: revision.revision,
        lbl.MODEL_URI_ANNOTATION: redact_uri(variant.model.uri),
    }
    spec: dict[str, Any] = {
        "replicas": revision.replicas,
        "selector": {
            "matchLabels": lbl.stream_selector(owner.name, variant.name, revision.revision, revision.role)
        },
        "revisionHistoryLimit": 1,
        # Never old and new pods of one consumer group at once: see domain/stream.py (handover).
        "strategy": {"type": "Recreate"},
        "template": template,
    }
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": metadata, "spec": spec}
