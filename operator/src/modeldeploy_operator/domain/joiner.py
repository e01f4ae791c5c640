"""spec.effectiveness: the label joiner of one ModelDeployment and what points at it. Pure builders.

- the joiner: one Deployment (`modeldeploy joiner` from the serving image, one pod: SQLite has one
  writer, and one process keeps the summary cache coherent) and its ClusterIP Service `<name>-joiner`;
- the model servers get MODELDEPLOY_FEED_* variables (`JoinerFeedSettings`): they POST a record of
  every live answer (request id -> variant, revision, model version, score) to the joiner. Like the
  prediction log's, these settings are not part of the revision: turning effectiveness on changes the
  running revision's pods, it starts no rollout;
- the router's table gets `feedback` (`FeedbackConfig`): its POST /v2/models/{name}/feedback forwards
  labels to the joiner;
- `effectiveness` analysis checks without spec.rollout.analysis.joiner read this joiner (its
  address needs no allow-list entry: the operator made it, in the ModelDeployment's own namespace).

Store: SQLite on an existing PersistentVolumeClaim (store.persistentVolumeClaim) or on an emptyDir
(default; kept across container restarts and crashes, lost when the pod is deleted or rescheduled),
or PostgreSQL through a DSN in a Secret, mounted as a file.
"""

from __future__ import annotations

from typing import Any

from modeldeploy_contract.joiner_settings import JOINER_PORT, JoinerFeedSettings
from modeldeploy_contract.router_config import FeedbackConfig
from modeldeploy_contract.stream_settings import LabelTopicSettings

from . import labels as lbl
from .durations import parse_duration
from .manifests import (
    RUN_AS_USER,
    TMP_VOLUME,
    _metadata,
    _resources,
    _restricted_container_security,
    kafka_secret_volume,
)
from .names import fit_name
from .pods import render_pod_settings
from .resource import ModelDeploymentRef
from .spec import (
    Analysis,
    Effectiveness,
    JoinerSource,
    LabelsKafka,
    ModelDeploymentSpec,
    PodSettings,
    Resources,
)
from .stream import connection_values, settings_defaults

JOINER_COMPONENT = "joiner"
JOINER_COMMAND = ("modeldeploy", "joiner")
CONTAINER_NAME = "joiner"
PORT_NAME = "http"
DATA_VOLUME = "joiner-data"
DATA_DIR = "/var/lib/modeldeploy-joiner"
SQLITE_URL = f"sqlite:///{DATA_DIR}/joiner.db"
DSN_VOLUME = "joiner-database"
DSN_MOUNT = "/var/run/secrets/modeldeploy/joiner"
DSN_FILE = "dsn"
ENV_PREFIX = "MODELDEPLOY_JOINER_"
DEFAULT_RESOURCES = Resources(requests={"cpu": "50m", "memory": "128Mi"})


def joiner_name(deployment_name: str) -> str:
    """Name of the joiner's Deployment and Service."""
    return fit_name(deployment_name, "joiner")


def joiner_selector(deployment_name: str) -> dict[str, str]:
    return {lbl.DEPLOYMENT_LABEL: deployment_name, "app.kubernetes.io/component": JOINER_COMPONENT}


def joiner_address(owner: ModelDeploymentRef) -> str:
    """The joiner's base URL for the operator (analysis): the Service's name in its namespace."""
    return f"http://{joiner_name(owner.name)}.{owner.namespace}.svc:{JOINER_PORT}"


def own_joiner(owner: ModelDeploymentRef, spec: ModelDeploymentSpec) -> str | None:
    """The address of the joiner the operator runs for this ModelDeployment, or None."""
    return joiner_address(owner) if spec.joiner_enabled else None


def with_own_joiner(analysis: Analysis, owner: ModelDeploymentRef, spec: ModelDeploymentSpec) -> Analysis:
    """`analysis` reading the ModelDeployment's own joiner when it names none."""
    own = own_joiner(owner, spec)
    if analysis.joiner is not None or own is None:
        return analysis
    return analysis.model_copy(update={"joiner": JoinerSource(address=own)})


def feed_settings_for(deployment_name: str, variant: str, revision: str) -> JoinerFeedSettings:
    # Every field that matters explicitly: BaseSettings would fill the rest from the operator's own
    # environment (none of its variables start with MODELDEPLOY_FEED_, but a test's might).
    return JoinerFeedSettings(
        url=f"http://{joiner_name(deployment_name)}:{JOINER_PORT}",
        deployment=deployment_name,
        variant=variant,
        revision=revision,
    )


def feed_env(deployment_name: str, variant: str, revision: str) -> list[dict[str, str]]:
    """The MODELDEPLOY_FEED_* variables of one revision's model servers."""
    settings = feed_settings_for(deployment_name, variant, revision)
    return [{"name": k, "value": v} for k, v in sorted(settings.to_env().items())]


def feedback_config(spec: ModelDeploymentSpec, deployment_name: str) -> FeedbackConfig | None:
    """The router's feedback route target, or None when the ModelDeployment has no joiner."""
    if not spec.joiner_enabled:
        return None
    return FeedbackConfig(address=f"{joiner_name(deployment_name)}:{JOINER_PORT}")


def joiner_env(effectiveness: Effectiveness) -> dict[str, str]:
    """MODELDEPLOY_JOINER_* of the joiner (JoinerSettings; a unit test parses them back)."""
    env = {
        "PORT": str(JOINER_PORT),
        "RETENTION_SECONDS": f"{parse_duration(effectiveness.retention):g}",
        "AB__MIN_LABELS_PER_ARM": str(effectiveness.min_labels_per_arm),
    }
    if effectiveness.store.type == "postgres":
        env["DATABASE_FILE"] = f"{DSN_MOUNT}/{DSN_FILE}"
    else:
        env["DATABASE"] = SQLITE_URL
    if effectiveness.control_variant is not None:
        env["CONTROL_VARIANT"] = effectiveness.control_variant
    return {ENV_PREFIX + k: v for k, v in env.items()}


def label_topic_settings_for(kafka: LabelsKafka, namespace: str, deployment_name: str) -> LabelTopicSettings:
    """The joiner's MODELDEPLOY_LABELS_* settings (spec.effectiveness.labels.kafka): stream mode's
    connection handling, the Secret's keys as files under the same mount path."""
    values = {
        "topic": kafka.topic,
        "group_id": kafka.group(namespace, deployment_name),
        **connection_values(kafka),
    }
    # Every field explicitly: BaseSettings would fill the rest from the operator's own environment.
    return LabelTopicSettings(**(settings_defaults(LabelTopicSettings) | values))


def _probe(path: str, *, period: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": PORT_NAME},
        "periodSeconds": period,
        "timeoutSeconds": 2,
        "failureThreshold": failures,
    }


def _volumes(effectiveness: Effectiveness) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(volumes, mounts) of the joiner's pod."""
    store = effectiveness.store
    volumes: list[dict[str, Any]] = [{"name": TMP_VOLUME, "emptyDir": {"sizeLimit": "64Mi"}}]
    mounts: list[dict[str, Any]] = [{"name": TMP_VOLUME, "mountPath": "/tmp"}]  # noqa: S108 - an emptyDir
    if store.type == "postgres":
        secret = store.postgres_secret
        assert secret is not None  # the CRD and validate_spec require it
        volumes.append(
            {
                "name": DSN_VOLUME,
                "secret": {
                    "secretName": secret.name,
                    "items": [{"key": secret.key, "path": DSN_FILE}],
                    "defaultMode": 0o440,
                },
            }
        )
        mounts.append({"name": DSN_VOLUME, "mountPath": DSN_MOUNT, "readOnly": True})
        return volumes, mounts
    if store.persistent_volume_claim is not None:
        volumes.append(
            {"name": DATA_VOLUME, "persistentVolumeClaim": {"claimName": store.persistent_volume_claim}}
        )
    else:
        volumes.append({"name": DATA_VOLUME, "emptyDir": {"sizeLimit": str(store.size_limit)}})
    mounts.append({"name": DATA_VOLUME, "mountPath": DATA_DIR})
    return volumes, mounts


def build_joiner_deployment(
    owner: ModelDeploymentRef,
    effectiveness: Effectiveness,
    *,
    image: str,
    image_pull_policy: str = "IfNotPresent",
    pod: PodSettings | None = None,
) -> dict[str, Any]:
    """The joiner's Deployment: one replica, replaced by Recreate (never two writers on one SQLite
    file, and a ReadWriteOnce claim cannot be mounted by a second pod on another node anyway).

    `pod`: the serving pods' settings; the joiner runs the same image, so it takes their pull secrets
    and placement (node selector, tolerations, affinity, priority), not their env, volumes or account."""
    name = joiner_name(owner.name)
    labels = lbl.common_labels(owner.name, JOINER_COMPONENT)
    volumes, mounts = _volumes(effectiveness)
    env_values = joiner_env(effectiveness)
    kafka = effectiveness.labels.kafka
    if kafka is not None:
        env_values |= label_topic_settings_for(kafka, owner.namespace, owner.name).to_env()
        secret_volume = kafka_secret_volume(kafka)
        if secret_volume is not None:
            volumes.append(secret_volume[0])
            mounts.append(secret_volume[1])
    env = [{"name": k, "value": v} for k, v in sorted(env_values.items())]
    container = {
        "name": CONTAINER_NAME,
        "image": image,
        "imagePullPolicy": image_pull_policy,
        "command": list(JOINER_COMMAND),
        "ports": [{"name": PORT_NAME, "containerPort": JOINER_PORT, "protocol": "TCP"}],
        "env": env,
        "resources": _resources(effectiveness.resources or DEFAULT_RESOURCES),
        "startupProbe": _probe("/healthz", period=1, failures=120),
        "livenessProbe": _probe("/healthz", period=10, failures=3),
        "readinessProbe": _probe("/readyz", period=2, failures=3),
        "securityContext": _restricted_container_security(),
        "volumeMounts": mounts,
    }
    template = {
        "metadata": {
            "labels": labels,
            "annotations": {
                "prometheus.io/scrape": "true",
                "prometheus.io/port": str(JOINER_PORT),
                "prometheus.io/path": "/metrics",
            },
        },
        "spec": {
            "automountServiceAccountToken": False,  # the joiner never calls the API
            "enableServiceLinks": False,  # no MODELDEPLOY_JOINER_PORT=tcp://... from a Service's links
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": RUN_AS_USER,
                "runAsGroup": RUN_AS_USER,
                "fsGroup": RUN_AS_USER,  # the data volume writable by the joiner's user
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "terminationGracePeriodSeconds": 30,
            "containers": [container],
            "volumes": volumes,
        },
    }
    if pod is not None:
        placement = PodSettings(
            image_pull_secrets=pod.image_pull_secrets,
            node_selector=pod.node_selector,
            tolerations=pod.tolerations,
            affinity=pod.affinity,
            priority_class_name=pod.priority_class_name,
        )
        template = render_pod_settings(
            template, placement, container=CONTAINER_NAME, spread_selector=joiner_selector(owner.name)
        )
    spec = {
        "replicas": 1,
        "selector": {"matchLabels": joiner_selector(owner.name)},
        "revisionHistoryLimit": 1,
        "strategy": {"type": "Recreate"},
        "template": template,
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(owner, name, labels),
        "spec": spec,
    }


def build_joiner_service(owner: ModelDeploymentRef) -> dict[str, Any]:
    labels = lbl.common_labels(owner.name, JOINER_COMPONENT)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(owner, joiner_name(owner.name), labels),
        "spec": {
            "type": "ClusterIP",
            "selector": joiner_selector(owner.name),
            "ports": [{"name": PORT_NAME, "port": JOINER_PORT, "targetPort": PORT_NAME, "protocol": "TCP"}],
        },
    }


def build_joiner_objects(
    owner: ModelDeploymentRef, spec: ModelDeploymentSpec, *, image: str, image_pull_policy: str
) -> list[dict[str, Any]]:
    """The joiner's Deployment and Service, or nothing without an enabled spec.effectiveness."""
    if spec.effectiveness is None or not spec.effectiveness.enabled:
        return []
    deployment = build_joiner_deployment(
        owner, spec.effectiveness, image=image, image_pull_policy=image_pull_policy, pod=spec.pods.serving
    )
    return [deployment, build_joiner_service(owner)]
