"""Stream mode (spec.stream): which revision's stream pods run in which role, and their settings.

Pure functions of (spec, plan, observation). The rollout planner decides the revisions and their roles
(stable, canary, ...); this module maps them onto stream roles:

- the stable revision is the **output** writer: its pods consume the input topic in the output consumer
  group and write the output topic;
- a canary or preview revision is a **shadow**: its pods consume the same input in their own group
  (`<group>.shadow.<revision>`, starting at the input's end) and write the shadow topic, so analysis
  compares both revisions' drift and prediction histograms over the same records;
- any other revision (previous, pinned, scaled to 0) has no stream pods (their Deployments are pruned,
  so an abort deletes the canary's stream pods).

The handover protocol (promotion, or any change of the output writer): the output consumer group's
committed offsets are the boundary. The runner commits only what the broker acknowledged, and a pod
stopped with SIGTERM finishes its in-flight batches and commits them before closing
(stream/runner.py). So the new writer's Deployment is rendered with 0 replicas while any pod of
another revision in the output role still exists (running or terminating, observed by label); when
the last one is gone, the group's committed offsets are exactly where the old writer stopped, and the
new writer's pods start from them: no record skipped, none scored twice by the switch. (A pod killed
without draining, e.g. past its grace period, leaves its uncommitted records to be scored again: the
at-least-once duplicates of any crash, identifiable by request id.) The output Deployments use the
Recreate strategy for the same reason: a changed pod template never runs old and new pods at once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic_settings import BaseSettings

from modeldeploy_contract.stream_settings import StreamSettings

from .rollout.model import Plan
from .spec import KafkaConnection, ModelDeploymentSpec, Stream

StreamRole = Literal["output", "shadow"]
SECRET_MOUNT = "/var/run/secrets/modeldeploy/kafka"  # noqa: S105 - a path, not a secret
"""Where spec.stream.secretName is mounted (read-only) in stream pods."""
HANDOVER_POLL_SECONDS = 2.0
"""How soon a reconcile waiting for the old output writer's pods to be gone looks again (pod deletions
do not trigger a reconcile of the ModelDeployment)."""


@dataclass(frozen=True)
class StreamRevision:
    """One revision's stream pods: role and replicas."""

    variant: str
    revision: str
    role: StreamRole
    replicas: int
    from_spec: bool = True
    """False for an output writer the spec no longer describes (the old stable during a rollout, a
    pinned revision): its Deployment, made when it was the spec's, is kept as it is."""


@dataclass(frozen=True)
class StreamPlan:
    revisions: tuple[StreamRevision, ...]
    handover_pending: bool
    """The output writer changed and the old writer's pods are not gone yet: the new one waits at 0."""


def stream_variant(spec: ModelDeploymentSpec) -> str:
    """The variant whose revisions run the stream: the one with the largest weight (the first on ties).
    A/B variants split REST traffic; a stream has one output writer."""
    variants = spec.effective_variants()
    return max(variants, key=lambda v: v.weight).name if variants else ""


def plan_stream(spec: ModelDeploymentSpec, plan: Plan, output_pods: Mapping[str, int]) -> StreamPlan:
    """`output_pods`: revision -> pods in the output role that exist now (terminating ones included)."""
    stream = spec.stream
    if stream is None:
        return StreamPlan((), False)
    name = stream_variant(spec)
    variant = next((v for v in plan.variants if v.name == name), None)
    if variant is None:
        return StreamPlan((), False)
    # An aborted canary keeps its REST pods until scaleDownDelaySeconds (the planner's add_leaving);
    # its stream pods go at once: they would only keep writing the shadow topic. The planner's verdict
    # is read from the history it wrote (its last entry per revision), not decided again here.
    outcome = {e.hash: e.outcome for e in plan.status.history if e.variant == name}
    revisions: list[StreamRevision] = []
    pending = False
    for revision in variant.revisions:
        if revision.role in ("stable", "pinned") and not revision.from_spec:
            revisions.append(StreamRevision(name, revision.revision, "output", stream.replicas, False))
        elif revision.role == "stable":
            # The handover: wait at 0 until no other revision's output pod exists.
            pending = any(n > 0 for r, n in output_pods.items() if r != revision.revision)
            replicas = 0 if pending else stream.replicas
            revisions.append(StreamRevision(name, revision.revision, "output", replicas))
        elif (
            revision.role in ("canary", "preview")
            and revision.replicas > 0
            and revision.from_spec
            and outcome.get(revision.revision) != "Aborted"
        ):
            revisions.append(StreamRevision(name, revision.revision, "shadow", stream.replicas))
    return StreamPlan(tuple(revisions), pending)


def stream_settings_for(
    stream: Stream, namespace: str, deployment_name: str, revision: StreamRevision
) -> StreamSettings:
    """The typed settings of one revision's stream pods; secrets as mounted files, never values."""
    group = stream.group(namespace, deployment_name)
    output = revision.role == "output"
    values: dict[str, Any] = {
        "bootstrap_servers": stream.bootstrap_servers,
        "input_topic": stream.input_topic,
        "output_topic": stream.output_topic if output else stream.shadow,
        "dead_letter_topic": stream.dead_letter if output else f"{stream.shadow}.dlq",
        "group_id": group if output else f"{group}.shadow.{revision.revision}",
        # A shadow scores what arrives from now on, beside the stable; the output group starts at the
        # beginning only the first time it exists (afterwards its committed offsets decide).
        "auto_offset_reset": "earliest" if output else "latest",
        "revision": revision.revision,
        "batch_max_records": stream.batch_max_records,
        "max_in_flight_batches": stream.max_in_flight_batches,
        "session_timeout_ms": stream.session_timeout_seconds * 1000,
        **connection_values(stream),
    }
    # Every field explicitly: BaseSettings would fill the rest from the operator's own environment.
    return StreamSettings(**(settings_defaults(StreamSettings) | values))


def settings_defaults(settings: type[BaseSettings]) -> dict[str, Any]:
    """Every optional field of a settings class at its default (so none is read from the environment)."""
    return {
        n: f.get_default(call_default_factory=True)
        for n, f in settings.model_fields.items()
        if not f.is_required()
    }


def connection_values(conn: KafkaConnection) -> dict[str, Any]:
    """The KafkaClientSettings fields of a connection: secrets as files under SECRET_MOUNT, never values."""
    protocol = conn.security_protocol
    secret = conn.secret_name is not None
    return {
        "bootstrap_servers": conn.bootstrap_servers,
        "security_protocol": protocol,
        "sasl_mechanism": conn.sasl_mechanism,
        "ssl_ca_file": f"{SECRET_MOUNT}/ca.crt" if secret and protocol.endswith("SSL") else None,
        "ssl_cert_file": f"{SECRET_MOUNT}/tls.crt" if conn.client_certificate else None,
        "ssl_key_file": f"{SECRET_MOUNT}/tls.key" if conn.client_certificate else None,
        "sasl_username_file": f"{SECRET_MOUNT}/username" if protocol.startswith("SASL") else None,
        "sasl_password_file": f"{SECRET_MOUNT}/password" if protocol.startswith("SASL") else None,
    }


def secret_items(conn: KafkaConnection) -> list[dict[str, str]]:
    """The keys of a Kafka connection's secretName the pods need, by protocol (a missing key fails the
    mount, which the pod's Events name: clearer than a client failing later)."""
    protocol = conn.security_protocol
    keys: list[str] = []
    if protocol.endswith("SSL"):
        keys.append("ca.crt")
    if conn.client_certificate:
        keys += ["tls.crt", "tls.key"]
    if protocol.startswith("SASL"):
        keys += ["username", "password"]
    return [{"key": key, "path": key} for key in keys]
