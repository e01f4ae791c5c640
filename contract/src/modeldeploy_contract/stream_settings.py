"""Settings of stream inference (`modeldeploy stream`), read from MODELDEPLOY_STREAM_* variables.

The model itself, batching, drift and the health/metrics port are ServerSettings (MODELDEPLOY_SERVER_*)
as for REST; these add the Kafka side. Secrets never sit in a variable's value when a file will do:
the operator mounts a Secret and points *_file settings at it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

STREAM_ENV_PREFIX = "MODELDEPLOY_STREAM_"

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]


class KafkaClientSettings(BaseSettings):
    """How a Kafka client connects, shared by the stream consumer and the joiner's label consumer:
    bootstrap servers, TLS and SASL (secrets read from mounted files), extra librdkafka properties.
    Subclasses set their env_prefix."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True, use_attribute_docstrings=True)

    bootstrap_servers: str = Field(min_length=1)
    """Kafka bootstrap servers, comma-separated host:port."""

    security_protocol: SecurityProtocol = "PLAINTEXT"
    """Kafka security.protocol."""

    ssl_ca_file: str | None = None
    """PEM file of the CA that signed the brokers' certificates (SSL, SASL_SSL)."""

    ssl_cert_file: str | None = None
    """PEM client certificate for mutual TLS."""

    ssl_key_file: str | None = None
    """PEM private key of the client certificate."""

    ssl_key_password_file: str | None = None
    """File holding the private key's password."""

    sasl_mechanism: SaslMechanism | None = None
    """SASL mechanism (SASL_PLAINTEXT, SASL_SSL)."""

    sasl_username: str | None = None
    """SASL user name."""

    sasl_username_file: str | None = None
    """File holding the SASL user name (a mounted Secret); wins over sasl_username."""

    sasl_password: SecretStr | None = None
    """SASL password from the variable (prefer sasl_password_file)."""

    sasl_password_file: str | None = None
    """File holding the SASL password (a mounted Secret); wins over sasl_password."""

    client_config: str = ""
    """Extra librdkafka properties as a JSON object of strings, for both the consumer and the
    producer (for example {"socket.keepalive.enable": "true"}); the settings above win."""

    lag_interval_seconds: float = Field(default=2.0, gt=0)
    """How often the consumer's lag (end offset - the group's committed offset, per assigned
    partition) is exported: modeldeploy_stream_consumer_lag, modeldeploy_joiner_label_topic_lag."""

    @model_validator(mode="after")
    def _check_connection(self) -> KafkaClientSettings:
        if self.security_protocol.startswith("SASL") and self.sasl_mechanism is None:
            raise ValueError(f"security_protocol {self.security_protocol} needs sasl_mechanism")
        if self.client_config:
            extra = json.loads(self.client_config)
            if not isinstance(extra, dict) or not all(isinstance(v, str) for v in extra.values()):
                raise ValueError("client_config must be a JSON object of string values")
        return self

    def to_env(self) -> dict[str, str]:
        """The variables that reproduce these settings in another process (non-default fields only).
        A SecretStr field is left out: the operator passes secrets as mounted files (*_file)."""
        prefix = str(self.model_config.get("env_prefix", ""))
        env: dict[str, str] = {}
        for name, value in self.model_dump(exclude_defaults=True).items():
            if value is None or isinstance(value, SecretStr):
                continue
            text = ("true" if value else "false") if isinstance(value, bool) else str(value)
            env[prefix + name.upper()] = text
        return env

    def kafka_config(self) -> dict[str, str]:
        """The librdkafka properties shared by the consumer and the producer (secrets read from files)."""
        config: dict[str, str] = dict(json.loads(self.client_config)) if self.client_config else {}
        config["bootstrap.servers"] = self.bootstrap_servers
        config["security.protocol"] = self.security_protocol.lower()
        if self.ssl_ca_file:
            config["ssl.ca.location"] = self.ssl_ca_file
        if self.ssl_cert_file:
            config["ssl.certificate.location"] = self.ssl_cert_file
        if self.ssl_key_file:
            config["ssl.key.location"] = self.ssl_key_file
        if self.ssl_key_password_file:
            config["ssl.key.password"] = _read(self.ssl_key_password_file)
        if self.sasl_mechanism:
            config["sasl.mechanism"] = self.sasl_mechanism
            username = _read(self.sasl_username_file) if self.sasl_username_file else self.sasl_username
            if username:
                config["sasl.username"] = username
            if self.sasl_password_file:
                config["sasl.password"] = _read(self.sasl_password_file)
            elif self.sasl_password is not None:
                config["sasl.password"] = self.sasl_password.get_secret_value()
        return config


class StreamSettings(KafkaClientSettings):
    """Everything the stream consumer can be told; every field is one MODELDEPLOY_STREAM_<NAME> variable."""

    model_config = SettingsConfigDict(
        env_prefix=STREAM_ENV_PREFIX, extra="ignore", frozen=True, use_attribute_docstrings=True
    )

    input_topic: str = Field(min_length=1)
    """Topic of the records to score."""

    output_topic: str = Field(min_length=1)
    """Topic the scored records are written to (keyed like their input record)."""

    dead_letter_topic: str = ""
    """Topic for records that cannot be scored, with the reason in headers; default <input_topic>.dlq."""

    group_id: str = Field(min_length=1)
    """Consumer group; pods of one revision share it (scale = replicas up to the partition count)."""

    group_instance_id: str = ""
    """Static group membership (group.instance.id), for example the pod's name: a restarted pod of
    the same name takes its partitions back at once instead of after the session timeout."""

    session_timeout_ms: int = Field(default=45_000, ge=1000)
    """Kafka session.timeout.ms: how long the group waits for a silent member (a killed pod)
    before giving its partitions to the others."""

    revision: str = ""
    """The ModelDeployment revision this consumer serves, written into every output record."""

    client_id: str = ""
    """Kafka client id (default: modeldeploy-stream-<hostname>)."""

    batch_max_records: int = Field(default=2000, ge=1, le=100_000)
    """Most records consumed and scored as one batch (one model call)."""

    batch_max_wait_ms: float = Field(default=20.0, ge=0)
    """Longest one poll of the consumer waits to fill a batch; a batch is scored with what came by then."""

    max_in_flight_batches: int = Field(default=4, ge=1, le=64)
    """Batches consumed but not yet committed (scoring or waiting for the broker's acknowledgement);
    when this many are in flight, consuming pauses (backpressure)."""

    max_record_bytes: int = Field(default=1024 * 1024, ge=64)
    """Largest input record value accepted; larger ones go to the dead-letter topic."""

    max_record_rows: int = Field(default=1000, ge=1)
    """Most rows in one V2-style record; more go to the dead-letter topic."""

    request_id_header: str = "request-id"
    """Input header holding the request id; without it, a V2 record's "id", else
    <topic>-<partition>-<offset> (stable across redeliveries, so duplicates are identifiable)."""

    auto_offset_reset: Literal["earliest", "latest"] = "earliest"
    """Where a new consumer group starts."""

    @model_validator(mode="after")
    def _check_topics(self) -> StreamSettings:
        topics = {self.input_topic, self.output_topic, self.dead_letter}
        if len(topics) != 3:
            raise ValueError("input, output and dead-letter topics must be three different topics")
        return self

    @property
    def dead_letter(self) -> str:
        return self.dead_letter_topic or f"{self.input_topic}.dlq"


def _read(path: str) -> str:
    return Path(path).read_text().strip()


LABELS_ENV_PREFIX = "MODELDEPLOY_LABELS_"


class LabelTopicSettings(KafkaClientSettings):
    """The label joiner's Kafka label source (spec.effectiveness.labels.kafka), read from
    MODELDEPLOY_LABELS_* variables: label records consumed from a topic, each checked like one item
    of POST /v1/feedback; offsets committed only after the store write (at least once)."""

    model_config = SettingsConfigDict(
        env_prefix=LABELS_ENV_PREFIX, extra="ignore", frozen=True, use_attribute_docstrings=True
    )

    topic: str = Field(min_length=1)
    """Topic of the label records: {"request_id": ..., "label": ...} or {"labels": [...]} each."""

    group_id: str = Field(min_length=1)
    """Consumer group of the joiner (one pod); its committed offsets mark the labels stored."""

    client_id: str = ""
    """Kafka client id (default: modeldeploy-joiner-<hostname>)."""

    batch_max_records: int = Field(default=1000, ge=1, le=10_000)
    """Most records consumed and written to the store as one transaction."""

    batch_max_wait_ms: float = Field(default=200.0, ge=0)
    """Longest one poll waits to fill a batch."""

    auto_offset_reset: Literal["earliest", "latest"] = "earliest"
    """Where a new consumer group starts."""

    session_timeout_ms: int = Field(default=45_000, ge=1000)
    """Kafka session.timeout.ms."""

    retry_seconds: float = Field(default=2.0, gt=0, le=300)
    """After a failed store write nothing is committed; the batch is consumed again this much later."""


def label_topic_settings() -> LabelTopicSettings | None:
    """The label source from the environment, or None when MODELDEPLOY_LABELS_TOPIC is not set."""
    if not os.environ.get(LABELS_ENV_PREFIX + "TOPIC"):
        return None
    return LabelTopicSettings()  # type: ignore[call-arg]  # the required fields come from the environment
