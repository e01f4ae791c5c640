"""Settings of the prediction log (issue 14), read from MODELDEPLOY_PREDLOG_* variables.

Separate from ServerSettings on purpose: turning the log on, or changing its policy, changes what a
model server writes, not what it answers, so it must not make a new revision (and a rollout). The
operator renders these from spec.predictionLog onto the REST pods; the HMAC key comes from a mounted
Secret file, never from a variable's value.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PREDLOG_ENV_PREFIX = "MODELDEPLOY_PREDLOG_"
PiiAction = Literal["drop", "pseudonymise", "keep"]


class PredictionLogSettings(BaseSettings):
    """Every field is one MODELDEPLOY_PREDLOG_<NAME> variable."""

    model_config = SettingsConfigDict(
        env_prefix=PREDLOG_ENV_PREFIX, extra="ignore", frozen=True, use_attribute_docstrings=True
    )

    enabled: bool = False
    """Log predictions at all."""

    sample_rate: float = Field(default=1.0, ge=0.0, le=1.0)
    """Share of requests logged, decided from the request id (the same decision everywhere)."""

    sink: Literal["stdout", "kafka"] = "stdout"
    """JSON lines on stdout (for a log collector) or a Kafka topic."""

    kafka_bootstrap_servers: str = ""
    """Kafka bootstrap servers of the kafka sink."""

    kafka_topic: str = ""
    """Topic of the kafka sink."""

    drop: str = ""
    """Comma-separated input fields never logged."""

    pseudonymise: str = ""
    """Comma-separated input fields logged as a keyed hash (HMAC-SHA256)."""

    keep: str = ""
    """Comma-separated input fields logged as they are."""

    default_action: PiiAction = "drop"
    """What happens to a field no list names."""

    hmac_key_file: str | None = None
    """File holding the HMAC key (at least 16 bytes; a mounted Secret)."""

    capacity: int = Field(default=10_000, ge=1, le=1_000_000)
    """Records buffered for the sink; past it records are dropped and counted (never blocking)."""

    deployment: str = ""
    """The ModelDeployment, written into every record."""

    variant: str = ""
    """The variant, written into every record."""

    revision: str = ""
    """The revision, written into every record."""

    @model_validator(mode="after")
    def _check(self) -> PredictionLogSettings:
        if not self.enabled:
            return self
        if self.hmac_key_file is None:
            raise ValueError("the prediction log needs hmac_key_file (pseudonyms, the sticky key)")
        if self.sink == "kafka" and not (self.kafka_bootstrap_servers and self.kafka_topic):
            raise ValueError("the kafka sink needs kafka_bootstrap_servers and kafka_topic")
        return self

    def fields(self, name: Literal["drop", "pseudonymise", "keep"]) -> list[str]:
        return [f.strip() for f in getattr(self, name).split(",") if f.strip()]

    def to_env(self) -> dict[str, str]:
        """The variables that reproduce these settings in another process (non-default fields only)."""
        env: dict[str, str] = {}
        for name, value in self.model_dump(exclude_defaults=True).items():
            if value is None:
                continue
            text = ("true" if value else "false") if isinstance(value, bool) else str(value)
            env[PREDLOG_ENV_PREFIX + name.upper()] = text
        return env
