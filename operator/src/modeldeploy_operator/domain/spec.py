"""The ModelDeployment spec as typed, immutable models; field for field the CRD's openAPIV3Schema.

The API server has already applied the CRD's defaults and CEL rules before the operator sees an
object; the defaults are repeated here so that unit tests and out-of-cluster tools can build specs
by hand. `extra="forbid"` because the API server prunes unknown fields: an unknown field here means
the CRD is newer than the operator, and ignoring a field the user set is worse than failing loudly.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

from modeldeploy_contract.model_store import ModelFormat, StoreURIError, is_pvc_uri, parse_pvc_uri

Protocol = Literal["v2", "v1"]
LogLevel = Literal["debug", "info", "warning", "error"]
TrafficProvider = Literal["router", "gatewayAPI"]
NoReadyBackendPolicy = Literal["Redistribute", "Reject"]
Strategy = Literal["Canary", "BlueGreen", "Immediate"]
KafkaSecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
KafkaSaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]
TOPIC_PATTERN = r"^[A-Za-z0-9._-]+$"
OPTIONAL_TOPIC_PATTERN = r"^([A-Za-z0-9._-]+)?$"
CheckType = Literal[
    "errorRate",
    "latencyP99",
    "inputDrift",
    "predictionShift",
    "prometheus",
    "shadowAgreement",
    "shadowScoreDifference",
    "inputDriftKS",
    "predictionShiftKS",
    "effectiveness",
]
EffectivenessMetric = Literal["auc", "accuracy"]

DEFAULT_VARIANT = "default"
NAME_PATTERN = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
DURATION_PATTERN = r"^([0-9]+h)?([0-9]+m)?([0-9]+s)?$"
SHA256_PATTERN = r"^[a-f0-9]{64}$"
# Used as a label value (app.kubernetes.io/version), hence the label-value grammar.
VERSION_PATTERN = r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
Quantity = str | int


class SpecModel(BaseModel):
    """Base of every spec model: camelCase on the wire, snake_case in Python, immutable."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
        protected_namespaces=(),
    )


class ModelStorage(SpecModel):
    """How the model server reaches the store that holds the bundle."""

    s3_endpoint_url: str | None = Field(default=None, alias="s3EndpointURL", max_length=2048)
    secret_name: str | None = Field(default=None, max_length=253)


class ModelRef(SpecModel):
    """One model bundle: where it is, what it is, and the digest it must have."""

    uri: str = Field(min_length=1, max_length=2048)
    format: ModelFormat = "auto"
    version: str = Field(min_length=1, max_length=63, pattern=VERSION_PATTERN)
    sha256: str | None = Field(default=None, pattern=SHA256_PATTERN)
    storage: ModelStorage | None = None

    @model_validator(mode="after")
    def _store_uri(self) -> ModelRef:
        # The CRD's CEL rule says the same to the API server; this is for specs built by hand.
        if is_pvc_uri(self.uri):
            try:
                parse_pvc_uri(self.uri)
            except StoreURIError as exc:
                raise ValueError(f"model.uri: {exc}") from exc
        return self


class Resources(SpecModel):
    """Container resources, in the shape of core/v1 ResourceRequirements (requests and limits)."""

    requests: dict[str, Quantity] = Field(default_factory=dict)
    limits: dict[str, Quantity] = Field(default_factory=dict)


class Variant(SpecModel):
    """One arm of an A/B experiment; every variant gets its own Deployments and revisions."""

    name: str = Field(min_length=1, max_length=20, pattern=NAME_PATTERN)
    weight: int = Field(default=0, ge=0, le=100)
    model: ModelRef | None = None
    replicas: int | None = Field(default=None, ge=0, le=1000)
    resources: Resources | None = None


AutoscalingProvider = Literal["HPA", "External"]


class Autoscaling(SpecModel):
    """A HorizontalPodAutoscaler per serving Deployment on CPU utilisation (HPA), or the user's own
    autoscaler (External). Either way the operator leaves replicas of traffic-taking revisions alone."""

    provider: AutoscalingProvider = "HPA"
    min_replicas: int = Field(default=1, ge=1, le=1000)
    max_replicas: int | None = Field(default=None, ge=1, le=1000)
    target_cpu_utilization_percentage: int = Field(
        default=80, ge=1, le=100, alias="targetCPUUtilizationPercentage"
    )


class Batching(SpecModel):
    """Server-side adaptive micro-batching."""

    # The server's own defaults (docs/benchmarks.md: 1.7x throughput at c=16, 2.1x at c=64, no cost at c=1).
    enabled: bool = True
    max_size: int = Field(default=64, ge=1, le=4096)
    max_wait_ms: float = Field(default=0.0, ge=0, le=1000)


class ServerSpec(SpecModel):
    """How every model server of this ModelDeployment runs."""

    protocol: Protocol = "v2"
    workers: int = Field(default=1, ge=1, le=64)
    max_body_bytes: int = Field(default=16 * 1024 * 1024, ge=1024, le=1024**3)
    max_batch_rows: int = Field(default=10_000, ge=1, le=1_000_000)
    batching: Batching = Field(default_factory=Batching)
    log_level: LogLevel = "info"


class StickyKey(SpecModel):
    """Where the router finds the key that pins a caller to an arm: a header or a body field."""

    header: str | None = Field(default=None, max_length=256)
    body_field: str | None = Field(default=None, max_length=256)


class Shadow(SpecModel):
    """Copy a share of requests to a shadow arm whose answers are compared, never returned."""

    percent: int = Field(default=0, ge=0, le=100)
    variant: str = Field(min_length=1, max_length=20)


class ParentRef(SpecModel):
    """A Gateway API parentRef (the Gateway, or one listener of it, that the HTTPRoute attaches to)."""

    group: str = Field(default="gateway.networking.k8s.io", max_length=253)
    kind: str = Field(default="Gateway", max_length=63)
    name: str = Field(min_length=1, max_length=253)
    namespace: str | None = Field(default=None, max_length=63)
    section_name: str | None = Field(default=None, max_length=253)
    port: int | None = Field(default=None, ge=1, le=65535)


class GatewayAPI(SpecModel):
    """Settings of the Gateway API provider: the operator writes an HTTPRoute."""

    parent_refs: tuple[ParentRef, ...] = Field(default=(), max_length=16)
    hostnames: tuple[str, ...] = Field(default=(), max_length=16)


class Traffic(SpecModel):
    """How requests to the stable Service reach the arms."""

    provider: TrafficProvider = "router"
    sticky_key: StickyKey | None = None
    shadow: Shadow | None = None
    gateway_api: GatewayAPI | None = Field(default=None, alias="gatewayAPI")
    no_ready_backend: NoReadyBackendPolicy = "Redistribute"
    timeout_seconds: float = Field(default=30.0, gt=0, le=3600)
    router_replicas: int = Field(default=1, ge=1, le=20)
    variant_pin_header: str | None = Field(default=None, min_length=1, max_length=256)
    """A header that pins a caller to a variant (QA); None (the default): no pinning."""


class PauseStep(SpecModel):
    """Hold the current weight for a duration, or until resumed when no duration is given."""

    duration: str | None = Field(default=None, min_length=2, max_length=32, pattern=DURATION_PATTERN)


class AnalysisStep(SpecModel):
    """Run analysis checks (all of them, or the named ones) before going on."""

    checks: tuple[str, ...] = Field(default=(), max_length=16)
    duration: str | None = Field(default=None, min_length=2, max_length=32, pattern=DURATION_PATTERN)


class ShadowStep(SpecModel):
    """Canary only, before any live weight: the canary gets `percent` of its variant's live requests
    as mirrored copies (it answers no caller) for at least `duration`, and the step completes once
    its checks pass on them (an analysis step on mirrored traffic)."""

    percent: int = Field(default=100, ge=1, le=100)
    duration: str = Field(min_length=2, max_length=32, pattern=DURATION_PATTERN)
    checks: tuple[str, ...] = Field(default=(), max_length=16)


class Step(SpecModel):
    """One rollout step; exactly one of its fields is set."""

    set_weight: int | None = Field(default=None, ge=0, le=100)
    pause: PauseStep | None = None
    analysis: AnalysisStep | None = None
    shadow: ShadowStep | None = None


class Threshold(SpecModel):
    """Bounds a measured value must stay within; a missing bound is not checked."""

    min: float | None = None
    max: float | None = None


class EffectivenessCheck(SpecModel):
    """What an `effectiveness` check compares: the new revision's quality on delayed labels (from the
    label joiner) against the stable revision's, as the worse end of a confidence interval of
    new - stable (docs/effectiveness.md)."""

    metric: EffectivenessMetric = "auc"
    window_seconds: int = Field(default=604800, ge=60, le=31_536_000)
    """The joiner window compared (the smallest of the joiner's windows at least this long)."""
    confidence: float = Field(default=0.95, gt=0.5, lt=1)


class Check(SpecModel):
    """One analysis check: a built-in measurement or a PromQL query, and its threshold."""

    name: str = Field(min_length=1, max_length=63, pattern=NAME_PATTERN)
    type: CheckType
    threshold: Threshold
    min_samples: int | None = Field(default=None, ge=0)
    query: str | None = Field(default=None, max_length=4096)
    effectiveness: EffectivenessCheck | None = None
    reference: Literal["profile", "stable"] = "profile"
    """inputDrift / inputDriftKS: compare the canary's live inputs with the bundle's training profile
    (profile), or with the stable revision's live inputs over the same interval (stable)."""


class PrometheusSource(SpecModel):
    """Where `prometheus` checks send their queries."""

    address: str = Field(min_length=1, max_length=2048)
    timeout_seconds: float = Field(default=10.0, gt=0, le=300)


class JoinerSource(SpecModel):
    """The label joiner `effectiveness` checks read (GET /v1/effectiveness)."""

    address: str = Field(min_length=1, max_length=2048)
    timeout_seconds: float = Field(default=10.0, gt=0, le=300)


class Analysis(SpecModel):
    """Automated analysis of the canary (or preview) revision against thresholds."""

    interval: str = Field(default="1m", min_length=2, max_length=32, pattern=DURATION_PATTERN)
    min_samples: int = Field(default=100, ge=0)
    failure_limit: int = Field(default=2, ge=0, le=100)
    checks: tuple[Check, ...] = Field(default=(), max_length=16)
    prometheus: PrometheusSource | None = None
    joiner: JoinerSource | None = None
    mirror_percent: int = Field(default=100, ge=0, le=100)
    """Percent of the variant's live requests copied to the new revision while it has no live weight
    (a BlueGreen preview, a canary before its first setWeight), so its checks have samples."""


class Preflight(SpecModel):
    """Replay the bundle's golden set against a new revision (and the stable) before it takes any
    traffic; a failure aborts the revision. Thresholds as modeldeploy_contract.preflight's
    PreflightThresholds; a bundle without a golden set skips it."""

    enabled: bool = True
    max_output_diff: float | None = Field(default=None, ge=0, le=1e6)
    """Largest |served - recorded| output value; None: the tolerance `modeldeploy pack` recorded."""
    max_score_psi: float = Field(default=0.25, ge=0, le=100, alias="maxScorePSI")
    max_auc_drop: float = Field(default=0.01, ge=0, le=1, alias="maxAUCDrop")
    max_accuracy_drop: float = Field(default=0.02, ge=0, le=1)
    max_log_loss_increase: float = Field(default=0.05, ge=0, le=100)
    min_auc: float | None = Field(default=None, ge=0, le=1, alias="minAUC")
    min_accuracy: float | None = Field(default=None, ge=0, le=1)
    require_labels: bool = False
    timeout_seconds: int = Field(default=60, ge=5, le=600)
    """Longest one replay (golden set fetch plus both replays) may take before it is retried."""


class RollbackWindow(SpecModel):
    """How long, and with how many pods, a revision that stopped serving stays warm, so that a rollback
    to it switches traffic at once instead of waiting for a cold start (docs/rollouts.md)."""

    seconds: int = Field(default=300, ge=0, le=86400)
    """Counted from the moment the revision left traffic; for the first scaleDownDelaySeconds of it the
    revision keeps all its pods, then `replicas` of them until the window ends, then none."""
    replicas: int = Field(default=1, ge=0, le=100)
    """Pods kept Ready during the window (never more than the revision had); 0 turns the window off."""


class Rollout(SpecModel):
    """How a new revision replaces the stable one."""

    strategy: Strategy = "Immediate"
    steps: tuple[Step, ...] = Field(default=(), max_length=32)
    analysis: Analysis | None = None
    auto_rollback: bool = True
    progress_deadline_seconds: int = Field(default=600, ge=30, le=86400)
    scale_down_delay_seconds: int = Field(default=30, ge=0, le=86400)
    rollback_window: RollbackWindow = Field(default_factory=RollbackWindow)
    preflight: Preflight | None = None
    """None (the default): no preflight; set (even to {}) to replay the golden set first."""


class Drift(SpecModel):
    """Input and prediction drift computed by the model servers against the bundle's reference."""

    enabled: bool = True
    window_rows: int = Field(default=1000, ge=10, le=10_000_000)
    window_seconds: int = Field(default=60, ge=1, le=86400)
    psi_threshold: float = Field(default=0.25, gt=0, le=10)
    """The maximum of every inputDrift check that names no threshold (filled in when the spec is read,
    `ModelDeploymentSpec._drift_checks_default_to_psi_threshold`)."""


JsonObject = dict[str, Any]
"""A Kubernetes object the CRD's schema (generated from the Kubernetes types, hack/crd_pod_schema.py)
has validated field by field; the operator copies it into the pod spec unchanged and never reads it."""


class LocalObjectReference(SpecModel):
    """A Secret (or other object) of the same namespace, by name."""

    name: str = Field(min_length=1, max_length=253)


class Toleration(SpecModel):
    """A toleration of node taints, as in a Pod spec."""

    key: str | None = Field(default=None, max_length=1024)
    operator: Literal["Exists", "Equal"] | None = None
    value: str | None = Field(default=None, max_length=1024)
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: int | None = None


class EnvVar(SpecModel):
    """An extra environment variable of the container (never MODELDEPLOY_*)."""

    name: str = Field(min_length=1, max_length=1024)
    value: str | None = Field(default=None, max_length=32768)
    value_from: JsonObject | None = None


class Volume(SpecModel):
    """An extra volume of the pod; exactly one source is set (the CRD's CEL says so)."""

    name: str = Field(min_length=1, max_length=1024)
    config_map: JsonObject | None = None
    secret: JsonObject | None = None
    empty_dir: JsonObject | None = None
    persistent_volume_claim: JsonObject | None = None
    projected: JsonObject | None = None
    csi: JsonObject | None = None
    downward_api: JsonObject | None = Field(default=None, alias="downwardAPI")


class VolumeMount(SpecModel):
    """Where an extra volume appears in the container."""

    name: str = Field(min_length=1, max_length=1024)
    mount_path: str = Field(min_length=1, max_length=1024)
    read_only: bool | None = None
    sub_path: str | None = Field(default=None, max_length=1024)
    sub_path_expr: str | None = Field(default=None, max_length=1024)
    mount_propagation: str | None = Field(default=None, max_length=1024)
    recursive_read_only: str | None = Field(default=None, max_length=1024)


class PodSettings(SpecModel):
    """What a user (or the chart's defaults) may set on the pods of one component; the operator owns
    the rest (command, ports, probes, security context, its own labels, annotations, env and volumes).

    None / empty means "not set here": `domain.pods.merge_pod_settings` then takes the default."""

    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    service_account_name: str | None = Field(default=None, max_length=253)
    image_pull_secrets: tuple[LocalObjectReference, ...] = ()
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: tuple[Toleration, ...] = ()
    affinity: JsonObject | None = None
    topology_spread_constraints: tuple[JsonObject, ...] = ()
    priority_class_name: str | None = Field(default=None, max_length=253)
    env: tuple[EnvVar, ...] = ()
    volumes: tuple[Volume, ...] = ()
    volume_mounts: tuple[VolumeMount, ...] = ()
    resources: Resources | None = None
    """Router pods only in a ModelDeployment (serving pods take spec.resources); in the chart's
    serving defaults, the resources of serving pods whose ModelDeployment sets none."""


class Pods(SpecModel):
    """spec.pods: settings of the serving pods and of the router pods."""

    serving: PodSettings = Field(default_factory=PodSettings)
    router: PodSettings = Field(default_factory=PodSettings)


class PodDisruptionBudgetSpec(SpecModel):
    """A PodDisruptionBudget per traffic-taking serving revision."""

    enabled: bool = True
    max_unavailable: int | str | None = None
    min_available: int | str | None = None


class KafkaConnection(SpecModel):
    """How pods reach a Kafka cluster: shared by spec.stream and spec.effectiveness.labels.kafka. The
    Secret's keys are mounted as files the clients read (domain/stream.py: secret_items)."""

    bootstrap_servers: str = Field(min_length=3, max_length=2048)
    security_protocol: KafkaSecurityProtocol = "PLAINTEXT"
    sasl_mechanism: KafkaSaslMechanism | None = None
    secret_name: str | None = Field(default=None, min_length=1, max_length=253)
    client_certificate: bool = False


class Stream(KafkaConnection):
    """Stream inference from Kafka (docs/stream.md): per revision, pods running `modeldeploy stream`."""

    input_topic: str = Field(min_length=1, max_length=249, pattern=TOPIC_PATTERN)
    output_topic: str = Field(min_length=1, max_length=249, pattern=TOPIC_PATTERN)
    dead_letter_topic: str = Field(default="", max_length=249, pattern=OPTIONAL_TOPIC_PATTERN)
    shadow_topic: str = Field(default="", max_length=249, pattern=OPTIONAL_TOPIC_PATTERN)
    consumer_group: str = Field(default="", max_length=200, pattern=OPTIONAL_TOPIC_PATTERN)
    replicas: int = Field(default=1, ge=1, le=256)
    partitions: int | None = Field(default=None, ge=1, le=10_000)
    batch_max_records: int = Field(default=2000, ge=1, le=100_000)
    max_in_flight_batches: int = Field(default=4, ge=1, le=64)
    session_timeout_seconds: int = Field(default=45, ge=6, le=1800)
    """Kafka's session.timeout.ms, in seconds: a killed pod's partitions wait this long before they move."""

    @property
    def dead_letter(self) -> str:
        return self.dead_letter_topic or f"{self.input_topic}.dlq"

    @property
    def shadow(self) -> str:
        return self.shadow_topic or f"{self.output_topic}.shadow"

    def group(self, namespace: str, deployment_name: str) -> str:
        """The output consumer group: whoever writes the output topic consumes in it."""
        return self.consumer_group or f"modeldeploy-{namespace}-{deployment_name}"


FIELD_PATTERN = r"^[A-Za-z0-9_.-]+$"
PiiAction = Literal["drop", "pseudonymise", "keep"]


class PredictionLogKafka(SpecModel):
    """The Kafka topic of the prediction log's kafka sink."""

    bootstrap_servers: str = Field(min_length=3, max_length=2048)
    topic: str = Field(min_length=1, max_length=249, pattern=TOPIC_PATTERN)


class PiiPolicySpec(SpecModel):
    """What happens to each input field in the prediction log."""

    drop: tuple[str, ...] = Field(default=(), max_length=64)
    pseudonymise: tuple[str, ...] = Field(default=(), max_length=64)
    keep: tuple[str, ...] = Field(default=(), max_length=64)
    default: PiiAction = "drop"


class SecretKeyRef(SpecModel):
    """One key of a Secret in the ModelDeployment's namespace."""

    name: str = Field(min_length=1, max_length=253)
    key: str = Field(default="hmac-key", min_length=1, max_length=253, pattern=r"^[-._a-zA-Z0-9]+$")


class PredictionLog(SpecModel):
    """A sampled log of REST predictions with a personal-data policy (docs/serving.md)."""

    sample_rate: float = Field(default=1.0, ge=0.0, le=1.0)
    sink: Literal["stdout", "kafka"] = "stdout"
    kafka: PredictionLogKafka | None = None
    pii: PiiPolicySpec = Field(default_factory=PiiPolicySpec)
    hmac_key_secret: SecretKeyRef
    buffer_records: int = Field(default=10_000, ge=1, le=1_000_000)


class PostgresSecretRef(SpecModel):
    """The Secret key holding the joiner's PostgreSQL DSN (postgresql://... or key=value)."""

    name: str = Field(min_length=1, max_length=253)
    key: str = Field(default="dsn", min_length=1, max_length=253, pattern=r"^[-._a-zA-Z0-9]+$")


class EffectivenessStore(SpecModel):
    """Where the label joiner keeps predictions and labels (docs/effectiveness.md#store)."""

    type: Literal["sqlite", "postgres"] = "sqlite"
    persistent_volume_claim: str | None = Field(default=None, min_length=1, max_length=253)
    """sqlite: an existing PersistentVolumeClaim (ReadWriteOnce is enough: one joiner pod) holding the
    database file; None: an emptyDir, which survives container restarts but not the pod's deletion."""
    size_limit: Quantity = "1Gi"
    """sqlite on an emptyDir: its sizeLimit (about 112 MB per million predictions, docs/benchmarks.md)."""
    postgres_secret: PostgresSecretRef | None = None
    """postgres: the Secret key with the DSN, mounted as a file (never an environment value)."""


class LabelsKafka(KafkaConnection):
    """A Kafka topic of labels the joiner consumes beside the feedback route (docs/effectiveness.md)."""

    topic: str = Field(min_length=1, max_length=249, pattern=TOPIC_PATTERN)
    consumer_group: str = Field(default="", max_length=200, pattern=OPTIONAL_TOPIC_PATTERN)

    def group(self, namespace: str, deployment_name: str) -> str:
        return self.consumer_group or f"modeldeploy-{namespace}-{deployment_name}-labels"


class EffectivenessLabels(SpecModel):
    """Where labels come from besides POST /v2/models/<name>/feedback on the router."""

    kafka: LabelsKafka | None = None


class Effectiveness(SpecModel):
    """Delayed labels joined to predictions (docs/effectiveness.md): a label joiner per ModelDeployment,
    prediction records from its model servers, and the feedback route on its router."""

    enabled: bool = True
    retention: str = Field(default="720h", min_length=2, max_length=32, pattern=DURATION_PATTERN)
    """How long predictions (and their labels) are kept; a label for an older one is "expired"."""
    control_variant: str | None = Field(default=None, min_length=1, max_length=63, pattern=NAME_PATTERN)
    """The A/B control arm; None: with exactly two variants, the first by name."""
    min_labels_per_arm: int = Field(default=200, ge=1, le=10_000_000)
    """A/B verdicts are Inconclusive while an arm has fewer labels."""
    store: EffectivenessStore = Field(default_factory=EffectivenessStore)
    labels: EffectivenessLabels = Field(default_factory=EffectivenessLabels)
    resources: Resources | None = None
    """The joiner container's requests and limits; None: 50m CPU and 128Mi memory requested."""


class ModelDeploymentSpec(SpecModel):
    """spec of a ModelDeployment."""

    model: ModelRef | None = None
    variants: tuple[Variant, ...] = Field(default=(), max_length=10)
    replicas: int | None = Field(default=None, ge=0, le=1000)
    autoscaling: Autoscaling | None = None
    resources: Resources | None = None
    pods: Pods = Field(default_factory=Pods)
    pod_disruption_budget: PodDisruptionBudgetSpec | None = None
    server: ServerSpec = Field(default_factory=ServerSpec)
    traffic: Traffic = Field(default_factory=Traffic)
    rollout: Rollout = Field(default_factory=Rollout)
    drift: Drift = Field(default_factory=Drift)
    stream: Stream | None = None
    prediction_log: PredictionLog | None = None
    effectiveness: Effectiveness | None = None
    revision_history_limit: int = Field(default=10, ge=1, le=100)
    paused: bool = False

    @model_validator(mode="before")
    @classmethod
    def _drift_checks_default_to_psi_threshold(cls, data: Any) -> Any:
        """An inputDrift check without a threshold fails above spec.drift.psiThreshold (default 0.25).
        Filled in here, where the spec is read, so that every later reader (evaluation, views, status)
        sees an ordinary threshold: the one place this default is decided."""
        if not isinstance(data, dict):
            return data
        rollout = data.get("rollout")
        if not isinstance(rollout, dict) or not isinstance(analysis := rollout.get("analysis"), dict):
            return data
        checks = analysis.get("checks")
        if not isinstance(checks, list | tuple):
            return data
        drift = data.get("drift")
        limit: Any = 0.25
        if isinstance(drift, dict):
            limit = drift.get("psiThreshold", drift.get("psi_threshold", limit))
        elif isinstance(drift, Drift):
            limit = drift.psi_threshold
        filled = [
            {**c, "threshold": {"max": limit}}
            if isinstance(c, dict) and c.get("type") == "inputDrift" and c.get("threshold") is None
            else c
            for c in checks
        ]
        if filled == list(checks):
            return data
        return {**data, "rollout": {**rollout, "analysis": {**analysis, "checks": filled}}}

    @property
    def joiner_enabled(self) -> bool:
        """spec.effectiveness is set and enabled: the operator runs a label joiner."""
        return self.effectiveness is not None and self.effectiveness.enabled

    def effective_variants(self) -> tuple[Variant, ...]:
        """The variants as declared, or the implicit `default` variant carrying spec.model at 100%."""
        if self.variants:
            return self.variants
        return (Variant(name=DEFAULT_VARIANT, weight=100, model=self.model),)
