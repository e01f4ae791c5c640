"""What the operator tells the built-in router: the traffic split of one ModelDeployment.

Two halves:

- `RouterConfig`: the routing table (arms and weights, stickiness, shadow, timeouts, retries). The
  operator renders it with `to_json()` into the ConfigMap `<modeldeployment>-router`, key
  `router.json`; the router watches that ConfigMap and swaps the table atomically on every change.
- `RouterSettings`: the router process's own settings (where to find that ConfigMap, port, ...),
  read from MODELDEPLOY_ROUTER_* variables.

Light imports only: both the operator and the serving image import this module.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from .slots import SLOT_COUNT, decode_indices, decode_runs, initial_layout
from .weights import BASIS_POINTS_TOTAL

ENV_PREFIX = "MODELDEPLOY_ROUTER_"
CONFIG_KEY = "router.json"
"""The ConfigMap data key that holds `RouterConfig.to_json()`."""
SCHEMA_VERSION: Literal["modeldeploy.io/router/v2"] = "modeldeploy.io/router/v2"
"""v2: integer weights in basis points (`weight_bp`) and the slot table (`slots`); v1 had float percents."""


def config_map_name(model_deployment: str) -> str:
    """Name of the ConfigMap that carries the router table of a ModelDeployment."""
    return f"{model_deployment}-router"


def arm_id(variant: str, revision: str) -> str:
    """The stable identifier of an arm, "<variant>/<revision>" (how slot tables name arms)."""
    return f"{variant}/{revision}"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ModelDeploymentRef(_Frozen):
    """Which ModelDeployment this table routes for (used in errors, logs and the hash salt)."""

    namespace: str = Field(min_length=1)
    """Namespace of the ModelDeployment; EndpointSlices are looked up in it."""

    name: str = Field(min_length=1)
    """Name of the ModelDeployment."""

    uid: str | None = None
    """metadata.uid of the ModelDeployment, when known (diagnostics only)."""


class ArmConfig(_Frozen):
    """One (variant, revision) that can receive traffic, and where its pods are."""

    variant: str = Field(min_length=1, max_length=63)
    """A/B variant name (e.g. "a", "b", or "default" when there is no experiment)."""

    revision: str = Field(min_length=1, max_length=63)
    """Revision of the variant (the operator's revision hash or number)."""

    weight_bp: int = Field(ge=0, le=BASIS_POINTS_TOTAL, strict=True)
    """Share of primary traffic in basis points (0..10000; 2500 = 25 %). The weights of all arms sum
    to 10000 (see `modeldeploy_contract.weights`). A weight of 0 keeps the arm known (e.g. as a shadow
    target) without primary traffic."""

    service: str | None = Field(default=None, min_length=1)
    """Service whose EndpointSlices (label kubernetes.io/service-name) list this arm's pods."""

    port_name: str | None = None
    """Port of the EndpointSlice to use, by name; None takes the slice's only (or first) port."""

    endpoints: tuple[str, ...] = ()
    """Static "host:port" backends, all considered ready: for standalone use and tests. When
    non-empty, EndpointSlices are not consulted for this arm."""

    model_name: str = Field(min_length=1)
    """Model name served by this arm (informational; requests are passed through unchanged)."""

    model_version: str | None = None
    """Model version served by this arm (informational)."""

    @property
    def arm_id(self) -> str:
        """A stable identifier of the arm: "<variant>/<revision>"."""
        return arm_id(self.variant, self.revision)

    @model_validator(mode="after")
    def _has_backends(self) -> ArmConfig:
        if self.service is None and not self.endpoints:
            raise ValueError(f"arm {self.arm_id}: give a service (EndpointSlices) or static endpoints")
        for address in self.endpoints:
            _host, sep, port = address.rpartition(":")
            if not sep or not port.isdigit() or not _host:
                raise ValueError(f"arm {self.arm_id}: endpoint {address!r} is not host:port")
        return self


class StickyConfig(_Frozen):
    """Where the sticky key is read from. The header wins; the body is parsed only when the header
    is absent and a body field is configured."""

    header: str | None = "X-User-Id"
    """Request header holding the key (case-insensitive), e.g. X-User-Id."""

    body_field: str | None = None
    """Body field holding the key when the header is absent: in a V1 body the field of the first
    `instances` object; in a V2 body `parameters[<field>]`, else the first value of the input
    named <field>."""

    protocol: Literal["v2", "v1"] | None = None
    """Which body shape `body_field` is read from (spec.server.protocol): v1 reads only `instances`,
    v2 only `parameters` and `inputs`, so a body of the other protocol that happens to carry the field
    never picks a key; None (hand-written tables, older operators): either shape."""

    salt: str = ""
    """Mixed into the hash. Changing it reassigns every key; the operator sets it once (e.g. to the
    ModelDeployment's name) so that different deployments split the same users independently."""


class ShadowConfig(_Frozen):
    """Copy a percent of primary requests to one arm; its answers are compared, never returned."""

    variant: str
    """Variant of the shadow arm (must be one of `arms`; usually with weight 0)."""

    revision: str
    """Revision of the shadow arm."""

    percent: float = Field(ge=0.0, le=100.0)
    """Percent of primary requests that are copied."""

    timeout_seconds: float = Field(default=2.0, gt=0)
    """A shadow request taking longer is abandoned (and counted as a timeout)."""

    max_in_flight: int = Field(default=64, ge=1)
    """Most shadow requests at once; beyond that, copies are dropped (and counted), never queued."""

    score_output: str | None = None
    """V2 output holding the score to compare; None: "probabilities" when present, else the first
    output. V1 compares the first element of `predictions`."""

    label_output: str | None = None
    """V2 output holding the predicted label; None: "label" or "predictions" when present, else
    the arg-max of the score output."""

    from_variant: str | None = Field(default=None, min_length=1, max_length=63)
    """Copy only requests answered by an arm of this variant (a rollout mirror compares the new
    revision with its own variant's stable); None: requests of every variant."""


class TimeoutConfig(_Frozen):
    """Bounds on one upstream call."""

    connect_seconds: float = Field(default=1.0, gt=0)
    """Opening a TCP connection to a backend."""

    request_seconds: float = Field(default=30.0, gt=0)
    """Whole upstream exchange (send request, receive full response); exceeded: HTTP 504."""


class RetryConfig(_Frozen):
    """Retries happen only when the request surely never reached a model (always safe)."""

    on_connect_error: bool = True
    """Connection refused or reset while connecting (a pod that just went away): try once more on
    another ready backend of the same arm."""


class FeedbackConfig(_Frozen):
    """Where the router's feedback route (POST /v2/models/{name}/feedback) sends labels: the
    ModelDeployment's label joiner (spec.effectiveness), as `host:port` of its Service."""

    address: str = Field(min_length=3, max_length=300, pattern=r"^[A-Za-z0-9.\[\]:-]+:[0-9]{1,5}$")
    """The joiner's Service, e.g. `churn-joiner:8090` (resolved in the router's namespace)."""

    timeout_seconds: float = Field(default=10.0, gt=0, le=300)
    """Longest wait for the joiner's answer (a batch of 10,000 labels is one transaction)."""

    max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1024, le=64 * 1024 * 1024)
    """Largest feedback body the router accepts (the joiner's own limit is 4 MiB); larger get 413."""


class RouterConfig(_Frozen):
    """The routing table of one ModelDeployment, as the operator writes it."""

    schema_version: Literal["modeldeploy.io/router/v2"] = SCHEMA_VERSION
    """Format of this document."""

    deployment: ModelDeploymentRef
    """The ModelDeployment these arms belong to."""

    generation: int = Field(default=0, ge=0)
    """The ModelDeployment's metadata.generation this table was computed from (exported as a
    metric so the operator can tell when the router has caught up)."""

    arms: tuple[ArmConfig, ...] = Field(min_length=1)
    """The arms; `slots` refers to them by their index in this list."""

    slots: str | None = None
    """The sticky assignment: the owner of each of the 10,000 slots of the key hash, as run lengths
    over arm indices, "<arm index>:<length>,..." in slot order ("1:2500,0:7500": slots 0..2499 to
    arms[1], the rest to arms[0]). Each arm owns exactly `weight_bp` slots. The operator edits it
    minimally on every weight change (`modeldeploy_contract.slots.rebalance`). None: the first
    table's layout, contiguous runs in arm order (`initial_layout`), e.g. for hand-written tables."""

    sticky: StickyConfig | None = None
    """Sticky assignment by key; None: every request is weighted-random."""

    pin_header: str | None = None
    """A request carrying this header naming a variant goes to that variant (weights of its
    revisions still apply); None (the default) disables pinning: otherwise any caller could pick the
    variant that serves it (the operator sets it from spec.traffic.variantPinHeader)."""

    shadow: ShadowConfig | None = None
    """Shadow traffic (spec.traffic.shadow); None: off."""

    mirror: ShadowConfig | None = None
    """The rollout mirror: copies of live requests for a revision under analysis that has no live
    weight (a BlueGreen preview, a canary in a shadow step), so its checks have samples. The same
    mechanics as `shadow` (fire-and-forget, bounded, compared, marked `x-modeldeploy-traffic:
    mirror`); the planner decides it, the operator writes it; None: off."""

    timeouts: TimeoutConfig = TimeoutConfig()
    """Upstream timeouts."""

    retry: RetryConfig = RetryConfig()
    """Upstream retry policy."""

    feedback: FeedbackConfig | None = None
    """The feedback route's joiner (spec.effectiveness); None: the route answers 404."""

    when_arm_unavailable: Literal["redistribute", "reject"] = "redistribute"
    """An arm with no ready backend: "redistribute" sends its requests to ready arms (same variant
    first); "reject" answers them with HTTP 503 and a JSON error."""

    @model_validator(mode="after")
    def _consistent(self) -> RouterConfig:
        ids = [arm.arm_id for arm in self.arms]
        if len(set(ids)) != len(ids):
            raise ValueError(f"duplicate arms (variant/revision): {ids}")
        total = sum(arm.weight_bp for arm in self.arms)
        if total != BASIS_POINTS_TOTAL:
            raise ValueError(f"arm weights sum to {total} bp, not {BASIS_POINTS_TOTAL}")
        if self.slots is not None:
            held = [0] * len(self.arms)
            for index, count in decode_runs(self.slots, len(self.arms), SLOT_COUNT):
                held[index] += count
            wrong = [
                f"{a.arm_id} owns {n} slots, weight {a.weight_bp}"
                for a, n in zip(self.arms, held, strict=True)
                if n != a.weight_bp
            ]
            if wrong:
                raise ValueError(f"slots disagree with the weights: {'; '.join(wrong)}")
        if self.shadow is not None and arm_id(self.shadow.variant, self.shadow.revision) not in ids:
            raise ValueError(f"shadow arm {self.shadow.variant}/{self.shadow.revision} is not in arms")
        if self.mirror is not None:
            mirror_id = arm_id(self.mirror.variant, self.mirror.revision)
            if mirror_id not in ids:
                raise ValueError(f"mirror arm {mirror_id} is not in arms")
            if self.arms[ids.index(mirror_id)].weight_bp != 0:
                raise ValueError(f"mirror arm {mirror_id} has live weight: a mirror answers no caller")
            if self.shadow is not None and arm_id(self.shadow.variant, self.shadow.revision) == mirror_id:
                raise ValueError(f"arm {mirror_id} is both the shadow and the mirror")
        return self

    def slot_arms(self) -> tuple[int, ...]:
        """The arm index of every slot (10,000 entries): decoded `slots`, or the initial layout."""
        if self.slots is not None:
            return decode_indices(self.slots, len(self.arms), SLOT_COUNT)
        layout = initial_layout([(str(i), arm.weight_bp) for i, arm in enumerate(self.arms)])
        return tuple(int(owner) for owner in layout.owners)

    def to_json(self) -> str:
        """The ConfigMap value (key `router.json`)."""
        return self.model_dump_json(exclude_none=False, indent=2)

    @classmethod
    def from_json(cls, text: str | bytes) -> RouterConfig:
        """Parse and validate a `router.json` value; raises pydantic.ValidationError."""
        return cls.model_validate_json(text)


class RouterSettings(BaseSettings):
    """The router process; every field is one MODELDEPLOY_ROUTER_<NAME> variable."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    config_file: str | None = None
    """Read the table from this file (re-read when it changes) instead of a ConfigMap."""

    config_map: str | None = None
    """Name of the ConfigMap holding the table (key `config_key`), watched through the API."""

    config_key: str = CONFIG_KEY
    """Key of the table in the ConfigMap."""

    endpoints_file: str | None = None
    """Read backends from this JSON file ({"<service>": [{"address": "host:port", "ready": true}]},
    re-read when it changes) instead of EndpointSlices: for running without a cluster."""

    namespace: str | None = None
    """Namespace of the ConfigMap and EndpointSlices; default: the pod's own namespace (from the
    ServiceAccount mount)."""

    host: str = "0.0.0.0"
    """Address to bind."""

    port: int = Field(default=8080, ge=1, le=65535)
    """Port for proxied traffic, /healthz, /readyz and /metrics."""

    file_poll_seconds: float = Field(default=1.0, gt=0)
    """How often `config_file` is checked for changes."""

    max_body_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)
    """Largest request body accepted (HTTP 413 beyond)."""

    max_response_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)
    """Largest backend response the router buffers; a larger one is answered 502
    (code response_too_large) and its connection closed."""

    max_buffered_bytes: int = Field(default=96 * 1024 * 1024, ge=64 * 1024)
    """Request and response bytes the router holds at once, shadow copies included. New work may
    use it up to a headroom of max_response_bytes (at most half of it) kept for the answers of
    admitted requests: a request beyond is refused at once with 503 + Retry-After (code
    over_budget), a shadow copy is dropped; an answer that does not fit waits for room (see
    docs/router.md, Memory and overload). With the defaults (96 MiB, plus ~70 MiB for the
    interpreter and its libraries) the router fits the 256 MiB memory limit the operator gives it."""

    max_concurrent_requests: int = Field(default=1024, ge=1)
    """Requests proxied at once; more are refused at once with 503 + Retry-After (code
    overloaded), counted in modeldeploy_router_refused_total."""

    retry_after_seconds: int = Field(default=1, ge=0, le=3600)
    """Retry-After of the router's own overload refusals."""

    header_read_timeout_seconds: float = Field(default=10.0, gt=0)
    """A connection must send a complete request head this soon after opening (or after the first
    byte of a request that did not arrive whole), or it is closed."""

    body_read_timeout_seconds: float = Field(default=30.0, gt=0)
    """A request body must arrive whole this soon after its head, or the client gets 408."""

    keep_alive_seconds: float = Field(default=5.0, gt=0)
    """Idle client connections are closed after this long."""

    max_connections: int = Field(default=8192, ge=1)
    """Open client connections (uvicorn's limit_concurrency: beyond it, 503 at once)."""

    max_idle_per_backend: int = Field(default=128, ge=1)
    """Idle keep-alive connections kept per backend address."""

    idle_seconds: float = Field(default=4.0, gt=0)
    """Idle connections older than this are not reused (below uvicorn's 5 s keep-alive, so the
    router does not race the backend closing them)."""

    drain_seconds: float = Field(default=5.0, ge=0)
    """On shutdown, how long in-flight requests may take to finish."""

    log_level: str = "info"
    """debug, info, warning or error."""
