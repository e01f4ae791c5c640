"""The operator's own settings, read from MODELDEPLOY_OPERATOR_* variables (the Helm chart sets them).

Everything the operator needs to know that is not in a ModelDeployment: which images to run, how it
identifies itself to the API server, what it watches, and how hard it retries.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Annotated, Any

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from modeldeploy_operator.analysis.allowlist import AddressPolicy
from modeldeploy_operator.domain.labels import INSTANCE_LABEL
from modeldeploy_operator.domain.network_policy import NetworkPolicyOptions
from modeldeploy_operator.domain.pods import owned_name_errors
from modeldeploy_operator.domain.spec import PodDisruptionBudgetSpec, PodSettings

ENV_PREFIX = "MODELDEPLOY_OPERATOR_"
IMAGE_REPOSITORY = "ghcr.io/modeldeploy"


def _package_version() -> str:
    try:
        return version("modeldeploy-operator")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "0.1.0"


__version__ = _package_version()


class OperatorSettings(BaseSettings):
    """Settings of the operator process; every field is one MODELDEPLOY_OPERATOR_<NAME> variable."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    serving_image: str = f"{IMAGE_REPOSITORY}/serving:{__version__}"
    """Image of the model server that every serving Deployment runs (`modeldeploy serve`)."""

    router_image: str = f"{IMAGE_REPOSITORY}/serving:{__version__}"
    """Image of the built-in router; the router lives in the serving distribution, so the same image."""

    router_service_account: str = "modeldeploy-router"
    """ServiceAccount the router pods run as; the operator creates it in each namespace it serves."""

    manage_router_rbac: bool = True
    """Create a ServiceAccount, a Role for its ConfigMap and two RoleBindings for each router. The chart
    turns this off with router.manageRBAC=false, where it creates router_service_account (shared by the
    routers of a namespace, reading every ConfigMap of it) and the operator creates no RBAC objects."""

    router_cluster_role: str = "modeldeploy-router"
    """Role (shipped by the chart: read EndpointSlices) the operator binds each router's ServiceAccount to;
    the chart lets the operator `bind` this one role by name. Each router also gets a Role of its own
    for its ConfigMap (resourceNames), which the operator may grant because it holds that right."""

    router_role_kind: str = Field(default="ClusterRole", pattern="^(ClusterRole|Role)$")
    """Kind of router_cluster_role: ClusterRole (cluster-wide install) or Role (one per watched namespace)."""

    image_pull_policy: str = Field(default="IfNotPresent", pattern="^(Always|IfNotPresent|Never)$")
    """imagePullPolicy of the containers the operator creates."""

    cluster_domain: str = Field(default="cluster.local", min_length=1, max_length=253)
    """The cluster's DNS domain, for status.url (http://<name>.<namespace>.svc.<domain>:8080/...)."""

    field_manager: str = Field(default="modeldeploy-operator", min_length=1, max_length=128)
    """Field manager name for server-side apply; changing it orphans the fields the old name owned."""

    namespaces: Annotated[tuple[str, ...], NoDecode] = ()
    """Namespaces to watch, comma-separated; empty means every namespace (cluster-wide install)."""

    instance_id: str = Field(
        default="", max_length=63, pattern=r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$"
    )
    """Which ModelDeployments this operator manages: those labelled `modeldeploy.io/controller-instance`
    with this value; empty (the default): those without the label. Two operators on one cluster (a
    new version tried beside the old one, a team's own) then never both act on one object
    (`managed_by`). A label value: at most 63 characters."""

    leader_election: bool = True
    """Run reconciles only in the replica holding the Lease, so that two replicas never fight.

    kopf's own peering is disabled: with equal priorities it freezes every replica instead of
    electing one, and it needs extra CRDs."""

    lease_name: str = "modeldeploy-operator"
    """Name of the coordination.k8s.io Lease used for leader election."""

    lease_namespace: str = ""
    """Namespace of the Lease; empty means the operator's own namespace (POD_NAMESPACE)."""

    lease_duration_seconds: float = Field(default=15.0, gt=0)
    """How long a Lease is valid without renewal before another replica may take it."""

    lease_renew_seconds: float = Field(default=5.0, gt=0)
    """How often the leader renews the Lease (after a failed renewal: every second)."""

    lease_renew_deadline_seconds: float = Field(default=10.0, gt=0)
    """The leader writes nothing once this long has passed since its last successful renewal began, and
    stops leading. Between renew and duration: the gap to lease_duration_seconds is the margin by which
    an old leader has stopped writing before a new one can start (k8s/leader.py)."""

    retry_limit: int = Field(default=8, ge=0, le=100)
    """Retries of one handler run for transient errors (API conflicts, 5xx) before giving up."""

    retry_backoff_seconds: float = Field(default=2.0, gt=0)
    """First delay between retries; it doubles on each retry up to retry_backoff_max_seconds."""

    retry_backoff_max_seconds: float = Field(default=60.0, gt=0)
    """Upper bound of the delay between retries."""

    resync_seconds: float = Field(default=600.0, gt=0)
    """Period of the safety resync: every ModelDeployment is reconciled again, repairing anything a watch
    event did not tell. Reconciles are watch-driven and timed by their plans, so this is only a safety
    net; it costs no API request (reads are cached, unchanged objects are not written)."""

    reconcile_workers: int = Field(default=4, ge=1, le=64)
    """Reconciles that run at once (across ModelDeployments; one object is never reconciled twice at
    once). Passes are CPU work on cached state plus the writes that differ."""

    health_port: int = Field(default=8081, ge=1, le=65535)
    """Port of the liveness endpoint (GET /healthz)."""

    metrics_port: int = Field(default=9090, ge=1, le=65535)
    """Port of the operator's Prometheus metrics (GET /metrics)."""

    prometheus_allowed_addresses: Annotated[tuple[str, ...], NoDecode] = ()
    """Prometheus base URLs ModelDeployments may name (comma-separated; same origin and a path prefix,
    see analysis/allowlist.py). Empty: prometheus checks are refused (Inconclusive, with a message)."""

    joiner_allowed_addresses: Annotated[tuple[str, ...], NoDecode] = ()
    """Label-joiner base URLs `effectiveness` checks may name (comma-separated; the same rules as
    prometheus_allowed_addresses). Empty: effectiveness checks are refused (Inconclusive)."""

    analysis_workers: int = Field(default=4, ge=1, le=64)
    """Measurements (scrapes, Prometheus queries) running at once, off the reconcile threads."""

    analysis_deadline_seconds: float = Field(default=30.0, gt=0, le=600)
    """Wall-clock limit of one measurement; past it the readings are Inconclusive."""

    analysis_max_response_bytes: int = Field(default=4 * 1024 * 1024, ge=1024, le=256 * 1024 * 1024)
    """Largest /metrics or Prometheus answer read; a longer one is a failed read."""

    network_policies: bool = False
    """Make NetworkPolicies for each ModelDeployment (domain/network_policy.py): only its router (and the
    operator, and the metrics namespaces) may reach its model servers. The chart turns this on by default
    (networkPolicies.enabled) and grants the rights; off, the operator removes the ones it made."""

    operator_namespace: str = ""
    """Namespace of the operator's pods, which the NetworkPolicies let scrape model servers."""

    operator_pod_labels: Annotated[tuple[tuple[str, str], ...], NoDecode] = ()
    """Labels that select the operator's pods, `key=value` comma-separated (the chart's selector labels)."""

    metrics_namespaces: Annotated[tuple[str, ...], NoDecode] = ()
    """Namespaces (comma-separated) whose pods may scrape model servers through the NetworkPolicies."""

    log_level: str = Field(default="info", pattern="^(debug|info|warning|error)$")
    """Log level of the operator."""

    serving_pod_defaults: PodSettings = Field(default_factory=PodSettings)
    """Pod settings of every serving pod whose ModelDeployment does not set them (JSON, the shape of
    spec.pods.serving plus `resources`; the chart's defaults.serving.pod). Merge rules: domain/pods.py."""

    router_pod_defaults: PodSettings = Field(default_factory=PodSettings)
    """Pod settings of every router pod whose ModelDeployment does not set them (the chart's
    defaults.router.pod)."""

    pod_disruption_budget_default: PodDisruptionBudgetSpec = Field(default_factory=PodDisruptionBudgetSpec)
    """spec.podDisruptionBudget of ModelDeployments that set none (the chart's
    defaults.serving.podDisruptionBudget)."""

    @field_validator(
        "namespaces",
        "prometheus_allowed_addresses",
        "joiner_allowed_addresses",
        "metrics_namespaces",
        mode="before",
    )
    @classmethod
    def _split_namespaces(cls, value: object) -> object:
        # A comma-separated list reads better in a Deployment's env than JSON.
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("operator_pod_labels", mode="before")
    @classmethod
    def _split_labels(cls, value: object) -> object:
        if isinstance(value, str):
            pairs = []
            for part in filter(None, (p.strip() for p in value.split(","))):
                key, sep, label = part.partition("=")
                if not sep or not key.strip():
                    raise ValueError(f"operator_pod_labels: {part!r} is not key=value")
                pairs.append((key.strip(), label.strip()))
            return tuple(pairs)
        return value

    @model_validator(mode="after")
    def _check_lease_timing(self) -> OperatorSettings:
        if not self.lease_renew_seconds < self.lease_renew_deadline_seconds < self.lease_duration_seconds:
            raise ValueError(
                "need lease_renew_seconds < lease_renew_deadline_seconds < lease_duration_seconds"
            )
        return self

    @model_validator(mode="after")
    def _check_network_policy_peers(self) -> OperatorSettings:
        # Without them the policies could not let the operator in: preflight and analysis would fail.
        if self.network_policies and not (self.operator_namespace and self.operator_pod_labels):
            raise ValueError("network_policies needs operator_namespace and operator_pod_labels")
        return self

    def network_policy_options(self) -> NetworkPolicyOptions | None:
        """What the NetworkPolicies let in besides the router; None when the operator makes none."""
        if not self.network_policies:
            return None
        return NetworkPolicyOptions(
            operator_namespace=self.operator_namespace,
            operator_pod_labels=self.operator_pod_labels,
            metrics_namespaces=self.metrics_namespaces,
        )

    @field_validator("prometheus_allowed_addresses", "joiner_allowed_addresses")
    @classmethod
    def _check_addresses(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        AddressPolicy(value)  # raises ValueError (a settings error at start-up) on a malformed entry
        return value

    @field_validator("serving_pod_defaults", "router_pod_defaults")
    @classmethod
    def _check_pod_defaults(cls, value: PodSettings) -> PodSettings:
        # The CRD's CEL rules never see the chart's defaults: the same rules, here, at start-up.
        errors = owned_name_errors(value, "pod defaults")
        if errors:
            raise ValueError("; ".join(errors))
        return value

    @property
    def cluster_wide(self) -> bool:
        """True when the operator watches every namespace."""
        return not self.namespaces


def managed_by(settings: OperatorSettings, body: dict[str, Any]) -> bool:
    """Whether the operator with these settings manages this ModelDeployment: the one place that says
    so (the controller asks it for every watch event; an object relabelled to another instance is
    forgotten like a deleted one)."""
    labels = (body.get("metadata") or {}).get("labels") or {}
    return bool(labels.get(INSTANCE_LABEL, "") == settings.instance_id)
