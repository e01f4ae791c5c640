"""Semantic checks of a spec beyond what the CRD's schema and CEL rules can express.

The API server already rejects what the schema can (see docs/crd.md). What remains here needs real
parsing (resource quantities, durations) or crosses fields in ways CEL cannot price within the API
server's cost budget. The invariants the planner relies on (weights sum to 100, a model for every
variant, increasing step weights) are checked again here, because a cluster may run an older CRD.
Messages name the field, say what is wrong and what would be right.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator, Mapping
from decimal import Decimal
from typing import Any

from pydantic import ValidationError

from modeldeploy_contract.model_store import is_azure_blob, parse_azure_blob

from .durations import parse_duration
from .pods import PodDefaults, owned_name_errors, with_pod_defaults
from .quantity import parse_quantity
from .spec import FIELD_PATTERN, KafkaConnection, ModelDeploymentSpec, Resources

MAX_NAME_LENGTH = 40
_DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


class InvalidSpecError(ValueError):
    """A spec the operator cannot act on; `messages` says why, one problem per message."""

    def __init__(self, messages: list[str]) -> None:
        super().__init__("; ".join(messages))
        self.messages = messages


def parse_spec(raw: Mapping[str, Any], defaults: PodDefaults | None = None) -> ModelDeploymentSpec:
    """The typed spec of a ModelDeployment's `spec` with the chart's pod `defaults` merged in
    (`pods.with_pod_defaults`), checked as merged; raises InvalidSpecError."""
    try:
        spec = ModelDeploymentSpec.model_validate(raw)
    except ValidationError as error:
        raise InvalidSpecError([_pydantic_message(e) for e in error.errors()]) from error
    spec = with_pod_defaults(spec, defaults or PodDefaults())
    messages = validate_spec(spec)
    if messages:
        raise InvalidSpecError(messages)
    return spec


def _pydantic_message(error: Any) -> str:
    location = ".".join(str(part) for part in error["loc"])
    return f"spec.{location}: {error['msg']}"


def validate_name(name: str) -> list[str]:
    """Problems with a ModelDeployment's name: it names the stable Service, a DNS-1035 label."""
    if len(name) > MAX_NAME_LENGTH or not _DNS_1035.match(name):
        return [
            f"metadata.name {name!r}: must be a DNS-1035 label (lower-case letters, digits and '-', "
            f"starting with a letter) of at most {MAX_NAME_LENGTH} characters"
        ]
    return []


def validate_spec(spec: ModelDeploymentSpec) -> list[str]:
    """Every semantic problem of the spec, as clear messages; empty when the spec is usable."""
    return [
        *_check_variants(spec),
        *_check_resources(spec),
        *_check_pods(spec),
        *_check_server(spec),
        *_check_traffic(spec),
        *_check_rollout(spec),
        *_check_stream(spec),
        *_check_prediction_log(spec),
        *_check_effectiveness(spec),
    ]


def _check_variants(spec: ModelDeploymentSpec) -> Iterator[str]:
    names = [v.name for v in spec.variants]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        yield f"spec.variants: names must be unique, repeated: {', '.join(duplicates)}"
    if spec.variants and sum(v.weight for v in spec.variants) != 100:
        yield f"spec.variants: weights must sum to 100, they sum to {sum(v.weight for v in spec.variants)}"
    for variant in spec.effective_variants():
        if variant.model is None and spec.model is None:
            yield f"spec.variants[{variant.name}]: has no model and spec.model is not set"
        model = variant.model or spec.model
        if model and model.storage and model.storage.s3_endpoint_url and not model.uri.startswith("s3://"):
            yield f"spec.variants[{variant.name}].model.storage.s3EndpointURL: only applies to s3:// URIs"
        if model and is_azure_blob(model.uri):
            # Repeats the CRD's CEL rule (model_store.AZURE_BLOB_RULE): a cluster may run an older CRD.
            try:
                parse_azure_blob(model.uri)
            except ValueError as exc:
                yield f"spec.variants[{variant.name}].model.uri: {exc}"


def _check_pods(spec: ModelDeploymentSpec) -> Iterator[str]:
    for component, pod in (("serving", spec.pods.serving), ("router", spec.pods.router)):
        # Repeats the CRD's CEL rules: a cluster may run an older CRD.
        yield from owned_name_errors(pod, f"spec.pods.{component}")
        volumes = {v.name for v in pod.volumes}
        for mount in pod.volume_mounts:
            if mount.name not in volumes:
                yield (
                    f"spec.pods.{component}.volumeMounts[{mount.mount_path}]: volume {mount.name!r} is not "
                    f"in spec.pods.{component}.volumes (nor in the chart's defaults)"
                )
    if spec.pods.router.resources is not None:
        yield from _check_quantities("spec.pods.router.resources", spec.pods.router.resources)


def _check_resources(spec: ModelDeploymentSpec) -> Iterator[str]:
    for variant in spec.effective_variants():
        where = "spec.resources" if variant.resources is None else f"spec.variants[{variant.name}].resources"
        resources = variant.resources or spec.resources or Resources()
        yield from _check_quantities(where, resources)
        if (
            spec.autoscaling is not None
            and spec.autoscaling.provider == "HPA"
            and "cpu" not in resources.requests
        ):
            yield (
                f"{where}.requests.cpu: required with spec.autoscaling, because CPU utilisation is "
                "measured against the request"
            )


def _check_quantities(where: str, resources: Resources) -> Iterator[str]:
    parsed: dict[str, dict[str, Decimal]] = {"requests": {}, "limits": {}}
    for kind, values in (("requests", resources.requests), ("limits", resources.limits)):
        for key, value in values.items():
            try:
                parsed[kind][key] = parse_quantity(value)
            except ValueError:
                yield f"{where}.{kind}.{key}: {value!r} is not a resource quantity (e.g. 500m, 2, 1Gi)"
    for key, request in parsed["requests"].items():
        limit = parsed["limits"].get(key)
        if limit is not None and request > limit:
            yield (
                f"{where}.requests.{key}: {resources.requests[key]} exceeds the limit {resources.limits[key]}"
            )


def _check_server(spec: ModelDeploymentSpec) -> Iterator[str]:
    server = spec.server
    if server.batching.enabled and server.batching.max_size > server.max_batch_rows:
        yield (
            f"spec.server.batching.maxSize: {server.batching.max_size} exceeds "
            f"spec.server.maxBatchRows ({server.max_batch_rows})"
        )


def _check_traffic(spec: ModelDeploymentSpec) -> Iterator[str]:
    traffic = spec.traffic
    if traffic.provider == "gatewayAPI" and not (traffic.gateway_api and traffic.gateway_api.parent_refs):
        yield "spec.traffic.gatewayAPI.parentRefs: required when spec.traffic.provider is gatewayAPI"
    shadow = traffic.shadow
    if shadow is not None:
        target = next((v for v in spec.variants if v.name == shadow.variant), None)
        if target is None:
            yield f"spec.traffic.shadow.variant: {shadow.variant!r} is not in spec.variants"
        elif target.weight != 0:
            yield (f"spec.traffic.shadow.variant: {shadow.variant!r} must have weight 0 (no live traffic)")


def _check_rollout(spec: ModelDeploymentSpec) -> Iterator[str]:
    rollout = spec.rollout
    weights = [s.set_weight for s in rollout.steps if s.set_weight is not None]
    if any(b <= a for a, b in itertools.pairwise(weights)):
        yield f"spec.rollout.steps: setWeight values must strictly increase, got {weights}"
    yield from _check_shadow_steps(spec)
    if rollout.analysis is None:
        return
    for index, check in enumerate(rollout.analysis.checks):
        if check.reference == "stable" and check.type not in ("inputDrift", "inputDriftKS"):
            yield (
                f"spec.rollout.analysis.checks[{index}].reference: stable is for the inputDrift and "
                "inputDriftKS checks"
            )
        if check.type == "prometheus" and (check.min_samples or 0) > 1:
            yield (
                f"spec.rollout.analysis.checks[{index}].minSamples: minSamples above 1 cannot be met by a "
                "prometheus check (a query's value counts as 1 sample: the check would stay Inconclusive "
                "for ever); put the low-traffic guard into the query"
            )
    interval = parse_duration(rollout.analysis.interval)
    deadline = rollout.progress_deadline_seconds
    if interval >= deadline:
        yield (
            f"spec.rollout.analysis.interval: {rollout.analysis.interval} must be shorter than "
            f"spec.rollout.progressDeadlineSeconds ({deadline}s), or no measurement fits a step"
        )
    for index, step in enumerate(rollout.steps):
        duration = step.analysis.duration if step.analysis else None
        if duration and parse_duration(duration) < interval:
            yield (
                f"spec.rollout.steps[{index}].analysis.duration: {duration} is shorter than "
                f"spec.rollout.analysis.interval ({rollout.analysis.interval}): no measurement fits"
            )


def _check_shadow_steps(spec: ModelDeploymentSpec) -> Iterator[str]:
    """Shadow steps (the CRD's CEL rules say the same): Canary only, before any live weight, and
    with checks to pass (a shadow step that no check can end would only time out)."""
    rollout = spec.rollout
    live = next((i for i, s in enumerate(rollout.steps) if s.set_weight), None)
    defined = {c.name for c in rollout.analysis.checks} if rollout.analysis else set()
    for index, step in enumerate(rollout.steps):
        if step.shadow is None:
            continue
        where = f"spec.rollout.steps[{index}].shadow"
        if rollout.strategy != "Canary":
            yield f"{where}: shadow steps are for the Canary strategy (a BlueGreen preview is mirrored)"
        if live is not None and index > live:
            yield f"{where}: a shadow step must come before the first setWeight above 0 (step {live})"
        if not defined:
            yield f"{where}: a shadow step needs spec.rollout.analysis.checks"
        unknown = [c for c in step.shadow.checks if c not in defined]
        if unknown and defined:
            yield f"{where}.checks: {unknown} are not in spec.rollout.analysis.checks"


def _check_stream(spec: ModelDeploymentSpec) -> Iterator[str]:
    stream = spec.stream
    if stream is None:
        return
    # The CEL rule compares the topics as written; the derived defaults (<input>.dlq, <output>.shadow)
    # can collide too, and two roles writing one topic would mix predictions with dead letters.
    topics = {
        "inputTopic": stream.input_topic,
        "outputTopic": stream.output_topic,
        "deadLetterTopic": stream.dead_letter,
        "shadowTopic": stream.shadow,
    }
    seen: dict[str, str] = {}
    for field_name, topic in topics.items():
        if topic in seen:
            yield f"spec.stream.{field_name}: {topic!r} is also spec.stream.{seen[topic]} (defaults included)"
        seen.setdefault(topic, field_name)
    yield from _check_kafka_connection("spec.stream", stream)
    if stream.partitions is not None and stream.replicas > stream.partitions:
        yield f"spec.stream.replicas: {stream.replicas} exceeds spec.stream.partitions ({stream.partitions})"


def _check_kafka_connection(where: str, conn: KafkaConnection) -> Iterator[str]:
    """The CEL rules of a Kafka connection (spec.stream, spec.effectiveness.labels.kafka)."""
    if conn.security_protocol.startswith("SASL") and conn.sasl_mechanism is None:
        yield f"{where}.saslMechanism: required with securityProtocol {conn.security_protocol}"
    if conn.security_protocol.startswith("SASL") and conn.secret_name is None:
        yield f"{where}.secretName: required with a SASL securityProtocol (keys username and password)"
    tls = conn.security_protocol.endswith("SSL")
    if conn.client_certificate and not (tls and conn.secret_name is not None):
        yield f"{where}.clientCertificate: needs an SSL or SASL_SSL securityProtocol and a secretName"


def _check_prediction_log(spec: ModelDeploymentSpec) -> Iterator[str]:
    plog = spec.prediction_log
    if plog is None:
        return
    if plog.sink == "kafka" and plog.kafka is None:
        yield "spec.predictionLog.kafka: required when spec.predictionLog.sink is kafka"
    pii = plog.pii
    lists = {"drop": set(pii.drop), "pseudonymise": set(pii.pseudonymise), "keep": set(pii.keep)}
    twice = (lists["drop"] & (lists["pseudonymise"] | lists["keep"])) | (
        lists["pseudonymise"] & lists["keep"]
    )
    if twice:
        names = ", ".join(sorted(twice))
        yield f"spec.predictionLog.pii: fields in two of drop, pseudonymise and keep: {names}"
    for name, fields in (("drop", pii.drop), ("pseudonymise", pii.pseudonymise), ("keep", pii.keep)):
        for field_name in fields:
            if not re.match(FIELD_PATTERN, field_name) or len(field_name) > 128:
                yield f"spec.predictionLog.pii.{name}: {field_name!r} is not a field name ({FIELD_PATTERN})"


def _check_effectiveness(spec: ModelDeploymentSpec) -> Iterator[str]:
    eff = spec.effectiveness
    if eff is None:
        return
    store = eff.store
    if store.type == "postgres" and store.postgres_secret is None:
        yield "spec.effectiveness.store.postgresSecret: required when store.type is postgres (the DSN)"
    if store.type == "postgres" and store.persistent_volume_claim is not None:
        yield "spec.effectiveness.store.persistentVolumeClaim: only for store.type sqlite"
    try:
        parse_quantity(store.size_limit)
    except ValueError:
        yield f"spec.effectiveness.store.sizeLimit: {store.size_limit!r} is not a quantity (e.g. 1Gi)"
    if parse_duration(eff.retention) <= 0:
        yield f"spec.effectiveness.retention: {eff.retention!r} must be longer than 0s"
    if eff.resources is not None:
        yield from _check_quantities("spec.effectiveness.resources", eff.resources)
    if eff.labels.kafka is not None:
        yield from _check_kafka_connection("spec.effectiveness.labels.kafka", eff.labels.kafka)
    names = {v.name for v in spec.effective_variants()}
    if eff.control_variant is not None and eff.control_variant not in names:
        known = ", ".join(sorted(names))
        yield f"spec.effectiveness.controlVariant: {eff.control_variant!r} is not a variant ({known})"
