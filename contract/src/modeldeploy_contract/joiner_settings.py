"""Settings of the label joiner (`modeldeploy joiner`), read from MODELDEPLOY_JOINER_* variables.

The operator renders these into the joiner's pod (one joiner per ModelDeployment); nested A/B settings
are MODELDEPLOY_JOINER_AB__<FIELD> (for example MODELDEPLOY_JOINER_AB__MIN_LABELS_PER_ARM=2000).
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from modeldeploy_contract.effectiveness import ABSettings

ENV_PREFIX = "MODELDEPLOY_JOINER_"
DAY = 86_400.0


class JoinerSettings(BaseSettings):
    """Everything the label joiner can be told; every field is one MODELDEPLOY_JOINER_<NAME> variable."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="ignore",
        frozen=True,
        use_attribute_docstrings=True,
    )

    host: str = "0.0.0.0"
    """Address to bind."""

    port: int = Field(default=8090, ge=1, le=65535)
    """TCP port of the feedback, prediction intake, summary and /metrics routes."""

    database: str = "sqlite:////var/lib/modeldeploy-joiner/joiner.db"
    """sqlite:///<absolute path> (a file on a volume; one writer, WAL journal) or a PostgreSQL DSN
    (postgresql://...). Ignored when database_file is set."""

    database_file: str | None = None
    """File holding the database URL or DSN (a mounted Secret), read at start; beats `database`."""

    retention_seconds: float = Field(default=30 * DAY, gt=0)
    """Predictions (and their labels) older than this are purged; a label for one is "expired"."""

    purge_interval_seconds: float = Field(default=300.0, gt=0)
    """How often the purge runs."""

    windows_seconds: list[float] = Field(default_factory=lambda: [DAY, 7 * DAY, 30 * DAY], min_length=1)
    """Sliding windows of the statistics, by prediction time: "the predictions of the last W seconds
    that have a label by now"."""

    summary_refresh_seconds: float = Field(default=15.0, ge=0)
    """The statistics are recomputed at most this often (for /metrics and the summary route)."""

    control_variant: str | None = None
    """The A/B control arm; None: with exactly two variants, the first by name."""

    ab: ABSettings = Field(default_factory=ABSettings)
    """How A/B verdicts are decided (metric, confidence, labels needed per arm, effect, power)."""

    max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    """Largest accepted request body; larger get HTTP 413."""

    max_batch_items: int = Field(default=10_000, ge=1)
    """Most labels or prediction records in one request; more get HTTP 413."""

    header_read_timeout_seconds: float = Field(default=10.0, gt=0)
    """A connection that has not sent a complete request head (line and headers) this long after
    it opened, or after its previous response, is closed (slow-header clients), as the model server's."""

    body_read_timeout_seconds: float = Field(default=30.0, gt=0)
    """A request whose body has not fully arrived this long after its head is answered 408 and its
    connection closed (slow-body clients), as the model server's."""

    keep_alive_seconds: float = Field(default=5.0, gt=0)
    """Idle keep-alive connections are closed after this long (uvicorn's timeout_keep_alive)."""

    readiness_check_seconds: float = Field(default=5.0, ge=0, le=3600)
    """/readyz asks the database (SELECT 1, or a new connection when it was lost and one is due) only
    when nothing did for this long; probes in between get the last answer, so they never load it."""

    log_level: str = "info"


FEED_ENV_PREFIX = "MODELDEPLOY_FEED_"
JOINER_PORT = 8090
FEED_PATH = "/v1/predictions"
FEEDBACK_PATH = "/v1/feedback"
SUMMARY_PATH = "/v1/effectiveness"


def joiner_service_name(deployment: str) -> str:
    """The joiner Service of a ModelDeployment (spec.effectiveness). The CRD limits names to 40
    characters, so this is never shortened (the operator's names.fit_name agrees; a test checks it)."""
    return f"{deployment}-joiner"


class JoinerFeedSettings(BaseSettings):
    """The model server's prediction records to the label joiner (spec.effectiveness), read from
    MODELDEPLOY_FEED_* variables. Like the prediction log's settings, not part of the revision:
    turning effectiveness on changes what a server writes, not what it answers."""

    model_config = SettingsConfigDict(
        env_prefix=FEED_ENV_PREFIX, extra="ignore", frozen=True, use_attribute_docstrings=True
    )

    url: str = ""
    """Base URL of the joiner (http://<deployment>-joiner:8090); empty: no records are sent."""

    deployment: str = ""
    """The ModelDeployment, written into every record."""

    variant: str = ""
    """The variant, written into every record."""

    revision: str = ""
    """The revision, written into every record."""

    capacity: int = Field(default=10_000, ge=1, le=1_000_000)
    """Records buffered for the joiner; past it records are dropped and counted (never blocking)."""

    batch: int = Field(default=500, ge=1, le=10_000)
    """Records per POST (the joiner takes at most 10,000 per request)."""

    timeout_seconds: float = Field(default=5.0, gt=0, le=300)
    """Longest wait for the joiner's answer to one batch."""

    retry_seconds: float = Field(default=120.0, ge=0, le=3600)
    """How long a batch the joiner could not take (unreachable, timed out, or 429/502/503/504: down,
    restarting, its store lost) is sent again, with backoff, before it is dropped and counted
    `failed`; 0: never sent again. Records the joiner had stored already come back as duplicates,
    which it counts and ignores. New records meanwhile wait in the buffer (up to `capacity`)."""

    shutdown_seconds: float = Field(default=15.0, ge=0, le=300)
    """When the server stops, how long it goes on sending what it holds (trying a joiner that cannot
    take it every second); what is unsent then is counted `lost_at_shutdown` and logged. With the
    server's drain_seconds (5) it must fit in the pod's terminationGracePeriodSeconds (30, set by the
    operator): 5 + 15 leaves 10 s for the rest of the stop."""

    @property
    def enabled(self) -> bool:
        return bool(self.url)

    def to_env(self) -> dict[str, str]:
        """The variables that reproduce these settings in another process (non-default fields only)."""
        return {
            FEED_ENV_PREFIX + name.upper(): str(value)
            for name, value in self.model_dump(exclude_defaults=True).items()
        }
