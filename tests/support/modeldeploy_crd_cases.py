"""Invalid ModelDeployments and the message the API server rejects each with.

A table shared by the offline schema test here and by the cluster tests (which send every case to a
real kube-apiserver). `layer` says which part of the CRD rejects it: "schema" (OpenAPI types,
enums, ranges, patterns; checked offline with jsonschema) or "cel" (x-kubernetes-validations,
and list-map uniqueness, which only the API server evaluates).

Messages are those of a create (POST), as checked against kube-apiserver v1.34. Server-side apply
reports duplicate list-map keys earlier, as `duplicate entries for key [name="..."]`, and kubectl
drops empty objects (`threshold: {}`) before sending them.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

SHA = "a" * 64


def valid_manifest(name: str = "churn") -> dict[str, Any]:
    """A valid ModelDeployment exercising most of the spec; each case breaks one thing in it."""
    return {
        "apiVersion": "modeldeploy.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name},
        "spec": {
            "model": {"uri": "s3://models/churn/v1", "format": "onnx", "version": "1", "sha256": SHA},
            "variants": [
                {"name": "control", "weight": 80},
                {"name": "treatment", "weight": 20},
                {"name": "shadow", "weight": 0},
            ],
            "replicas": 2,
            "pods": {
                "serving": {
                    "serviceAccountName": "churn-serving",
                    "imagePullSecrets": [{"name": "registry-creds"}],
                    "nodeSelector": {"pool": "models"},
                    "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "models"}],
                    "labels": {"team": "risk"},
                    "annotations": {"example.com/owner": "risk"},
                    "env": [{"name": "OMP_NUM_THREADS", "value": "1"}],
                    "volumes": [{"name": "extra", "configMap": {"name": "churn-extra"}}],
                    "volumeMounts": [{"name": "extra", "mountPath": "/etc/extra", "readOnly": True}],
                },
                "router": {"priorityClassName": "high", "resources": {"requests": {"cpu": "100m"}}},
            },
            "podDisruptionBudget": {"maxUnavailable": "25%"},
            "traffic": {
                "provider": "router",
                "stickyKey": {"header": "X-User-Id"},
                "shadow": {"variant": "shadow", "percent": 10},
            },
            "rollout": {
                "strategy": "Canary",
                "steps": [{"setWeight": 10}, {"analysis": {"checks": ["errors"]}}, {"setWeight": 50}],
                "analysis": {
                    "interval": "30s",
                    "checks": [{"name": "errors", "type": "errorRate", "threshold": {"max": 0.01}}],
                },
            },
        },
    }


Layer = Literal["schema", "cel"]


@dataclass(frozen=True)
class InvalidCase:
    """One way to break the valid manifest, and the message that must explain it."""

    id: str
    mutate: Callable[[dict[str, Any]], None]
    message: str
    layer: Layer

    def manifest(self, name: str = "churn") -> dict[str, Any]:
        """The broken manifest."""
        body = copy.deepcopy(valid_manifest(name))
        self.mutate(body)
        return body


def _spec(body: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = body["spec"]
    return spec


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(body: dict[str, Any]) -> None:
        *parents, leaf = path.split(".")
        node: dict[str, Any] | list[Any] = body
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
        if isinstance(node, list):
            node[int(leaf)] = value
        else:
            node[leaf] = value

    return mutate


def _delete(path: str) -> Callable[[dict[str, Any]], None]:
    def mutate(body: dict[str, Any]) -> None:
        *parents, leaf = path.split(".")
        node: Any = body
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        del node[leaf]

    return mutate


def _both(*mutations: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, Any]], None]:
    def mutate(body: dict[str, Any]) -> None:
        for mutation in mutations:
            mutation(body)

    return mutate


def _stream(**fields: Any) -> Callable[[dict[str, Any]], None]:
    """A spec.stream that is valid but for `fields` (None deletes one)."""
    stream: dict[str, Any] = {
        "bootstrapServers": "kafka.data:9092",
        "inputTopic": "accounts",
        "outputTopic": "churn-scores",
    }
    for key, value in fields.items():
        if value is None:
            del stream[key]
        else:
            stream[key] = value
    return _set("spec.stream", stream)


STREAM_CASES: tuple[InvalidCase, ...] = (
    # --- spec.stream (issue 14) ---
    InvalidCase(
        "stream-sasl-without-mechanism",
        _stream(securityProtocol="SASL_SSL", secretName="kafka"),
        "spec.stream.saslMechanism is required with a SASL securityProtocol",
        "cel",
    ),
    InvalidCase(
        "stream-sasl-without-secret",
        _stream(securityProtocol="SASL_PLAINTEXT", saslMechanism="PLAIN"),
        "spec.stream.secretName (keys username and password) is required with a SASL securityProtocol",
        "cel",
    ),
    InvalidCase(
        "stream-client-certificate-without-tls",
        _stream(clientCertificate=True, secretName="kafka"),
        "spec.stream.clientCertificate needs an SSL or SASL_SSL securityProtocol",
        "cel",
    ),
    InvalidCase(
        "stream-replicas-over-partitions",
        _stream(replicas=4, partitions=2),
        "spec.stream.replicas must not exceed spec.stream.partitions",
        "cel",
    ),
    InvalidCase(
        "stream-output-is-input",
        _stream(outputTopic="accounts"),
        "spec.stream input, output, dead-letter and shadow topics must be four different topics",
        "cel",
    ),
    InvalidCase(
        "stream-shadow-is-output",
        _stream(shadowTopic="churn-scores"),
        "spec.stream input, output, dead-letter and shadow topics must be four different topics",
        "cel",
    ),
    InvalidCase("stream-no-input-topic", _stream(inputTopic=None), "spec.stream.inputTopic", "schema"),
    InvalidCase("stream-bad-topic-name", _stream(inputTopic="a/b"), "spec.stream.inputTopic", "schema"),
    InvalidCase(
        "stream-bootstrap-without-port",
        _stream(bootstrapServers="kafka.data"),
        "spec.stream.bootstrapServers",
        "schema",
    ),
    InvalidCase(
        "stream-bootstrap-injection",
        _stream(bootstrapServers="kafka:9092\nsasl.password=x"),
        "spec.stream.bootstrapServers",
        "schema",
    ),
    InvalidCase("stream-zero-replicas", _stream(replicas=0), "spec.stream.replicas", "schema"),
    InvalidCase(
        "stream-session-timeout-below-broker-minimum",
        _stream(sessionTimeoutSeconds=5),
        "spec.stream.sessionTimeoutSeconds",
        "schema",
    ),
    InvalidCase(
        "stream-bad-protocol", _stream(securityProtocol="TLS"), "spec.stream.securityProtocol", "schema"
    ),
    InvalidCase(
        "stream-bad-mechanism",
        _stream(securityProtocol="SASL_SSL", saslMechanism="GSSAPI", secretName="kafka"),
        "spec.stream.saslMechanism",
        "schema",
    ),
    InvalidCase(
        "stream-bad-secret-name", _stream(secretName="Kafka_Creds"), "spec.stream.secretName", "schema"
    ),
    InvalidCase("stream-long-group", _stream(consumerGroup="g" * 201), "spec.stream.consumerGroup", "schema"),
)


def _plog(**fields: Any) -> Callable[[dict[str, Any]], None]:
    """A spec.predictionLog that is valid but for `fields`."""
    return _set("spec.predictionLog", {"hmacKeySecret": {"name": "predlog-key"}, **fields})


PREDICTION_LOG_CASES: tuple[InvalidCase, ...] = (
    InvalidCase(
        "predlog-kafka-without-topic",
        _plog(sink="kafka"),
        "spec.predictionLog.kafka is required when spec.predictionLog.sink is kafka",
        "cel",
    ),
    InvalidCase(
        "predlog-field-in-two-lists",
        _plog(pii={"drop": ["email"], "pseudonymise": ["email"]}),
        "spec.predictionLog.pii names a field in two of drop, pseudonymise and keep",
        "cel",
    ),
    InvalidCase(
        "predlog-no-key",
        _set("spec.predictionLog", {"sampleRate": 0.5}),
        "spec.predictionLog.hmacKeySecret",
        "schema",
    ),
    InvalidCase("predlog-rate-over-1", _plog(sampleRate=1.5), "spec.predictionLog.sampleRate", "schema"),
    InvalidCase("predlog-bad-sink", _plog(sink="s3"), "spec.predictionLog.sink", "schema"),
    InvalidCase(
        "predlog-field-with-comma", _plog(pii={"keep": ["a,b"]}), "spec.predictionLog.pii.keep[0]", "schema"
    ),
    InvalidCase(
        "predlog-bad-default", _plog(pii={"default": "hash"}), "spec.predictionLog.pii.default", "schema"
    ),
    InvalidCase(
        "predlog-kafka-bad-topic",
        _plog(sink="kafka", kafka={"bootstrapServers": "k:9092", "topic": "a b"}),
        "spec.predictionLog.kafka.topic",
        "schema",
    ),
)


def _eff(**fields: Any) -> Callable[[dict[str, Any]], None]:
    """A spec.effectiveness that is valid but for `fields`."""
    return _set("spec.effectiveness", {"retention": "168h", **fields})


def _labels_kafka(**fields: Any) -> Callable[[dict[str, Any]], None]:
    """A spec.effectiveness with a labels.kafka that is valid but for `fields` (None deletes one)."""
    kafka: dict[str, Any] = {"bootstrapServers": "kafka.data:9092", "topic": "churn-labels"}
    for key, value in fields.items():
        if value is None:
            del kafka[key]
        else:
            kafka[key] = value
    return _eff(labels={"kafka": kafka})


EFFECTIVENESS_CASES: tuple[InvalidCase, ...] = (
    InvalidCase(
        "effectiveness-postgres-without-secret",
        _eff(store={"type": "postgres"}),
        "spec.effectiveness.store.postgresSecret is required when spec.effectiveness.store.type is postgres",
        "cel",
    ),
    InvalidCase(
        "effectiveness-postgres-with-claim",
        _eff(store={"type": "postgres", "postgresSecret": {"name": "pg"}, "persistentVolumeClaim": "data"}),
        "spec.effectiveness.store.persistentVolumeClaim is only for store type sqlite",
        "cel",
    ),
    InvalidCase(
        "effectiveness-bad-store", _eff(store={"type": "mysql"}), "spec.effectiveness.store.type", "schema"
    ),
    InvalidCase(
        "effectiveness-bad-retention", _eff(retention="30d"), "spec.effectiveness.retention", "schema"
    ),
    InvalidCase(
        "effectiveness-bad-claim", _eff(store={"persistentVolumeClaim": "Data_1"}),
        "spec.effectiveness.store.persistentVolumeClaim", "schema",
    ),
    InvalidCase(
        "effectiveness-zero-labels", _eff(minLabelsPerArm=0), "spec.effectiveness.minLabelsPerArm", "schema"
    ),
    InvalidCase(
        "effectiveness-bad-size",
        _eff(store={"sizeLimit": "lots"}),
        "spec.effectiveness.store.sizeLimit",
        "schema",
    ),
    InvalidCase(
        "effectiveness-secret-without-name",
        _eff(store={"type": "postgres", "postgresSecret": {"key": "dsn"}}),
        "spec.effectiveness.store.postgresSecret.name",
        "schema",
    ),
    # --- spec.effectiveness.labels.kafka: labels from a topic, stream mode's connection fields ---
    InvalidCase(
        "labels-kafka-sasl-without-mechanism",
        _labels_kafka(securityProtocol="SASL_SSL", secretName="kafka"),
        "spec.effectiveness.labels.kafka.saslMechanism is required with a SASL securityProtocol",
        "cel",
    ),
    InvalidCase(
        "labels-kafka-sasl-without-secret",
        _labels_kafka(securityProtocol="SASL_PLAINTEXT", saslMechanism="PLAIN"),
        "spec.effectiveness.labels.kafka.secretName (keys username and password) is required with a SASL "
        "securityProtocol",
        "cel",
    ),
    InvalidCase(
        "labels-kafka-client-certificate-without-tls",
        _labels_kafka(clientCertificate=True, secretName="kafka"),
        "spec.effectiveness.labels.kafka.clientCertificate needs an SSL or SASL_SSL securityProtocol",
        "cel",
    ),
    InvalidCase(
        "labels-kafka-no-topic", _labels_kafka(topic=None), "spec.effectiveness.labels.kafka.topic", "schema"
    ),
    InvalidCase(
        "labels-kafka-bad-topic", _labels_kafka(topic="a b"), "spec.effectiveness.labels.kafka.topic",
        "schema",
    ),
    InvalidCase(
        "labels-kafka-no-bootstrap",
        _labels_kafka(bootstrapServers=None),
        "spec.effectiveness.labels.kafka.bootstrapServers",
        "schema",
    ),
    InvalidCase(
        "labels-kafka-bootstrap-injection",
        _labels_kafka(bootstrapServers="kafka:9092\nsasl.password=x"),
        "spec.effectiveness.labels.kafka.bootstrapServers",
        "schema",
    ),
    InvalidCase(
        "labels-kafka-bad-protocol",
        _labels_kafka(securityProtocol="TLS"),
        "spec.effectiveness.labels.kafka.securityProtocol",
        "schema",
    ),
    InvalidCase(
        "labels-kafka-bad-group",
        _labels_kafka(consumerGroup="labels/1"),
        "spec.effectiveness.labels.kafka.consumerGroup",
        "schema",
    ),
    InvalidCase(
        "labels-kafka-bad-secret-name",
        _labels_kafka(secretName="Kafka_Creds"),
        "spec.effectiveness.labels.kafka.secretName",
        "schema",
    ),
)  # fmt: skip


INVALID_CASES: tuple[InvalidCase, ...] = (
    # --- CEL rules ---
    InvalidCase(
        "shadow-step-after-live-weight",
        _set("spec.rollout.steps", [{"setWeight": 10}, {"shadow": {"duration": "1m"}}]),
        "shadow steps must come before the first setWeight above 0",
        "cel",
    ),
    InvalidCase(
        "shadow-step-in-blue-green",
        _both(
            _set("spec.rollout.strategy", "BlueGreen"),
            _set("spec.rollout.steps", [{"shadow": {"duration": "1m"}}]),
        ),
        "shadow steps are for the Canary strategy",
        "cel",
    ),
    InvalidCase(
        "shadow-step-unknown-check",
        _set("spec.rollout.steps", [{"shadow": {"duration": "1m", "checks": ["nope"]}}, {"setWeight": 10}]),
        "a shadow step names a check that rollout.analysis.checks does not define",
        "cel",
    ),
    InvalidCase(
        "stable-reference-on-error-rate",
        _set("spec.rollout.analysis.checks.0.reference", "stable"),
        "reference: stable is for the inputDrift and inputDriftKS checks",
        "cel",
    ),
    InvalidCase(
        "shadow-step-and-pause",
        _set("spec.rollout.steps.0", {"shadow": {"duration": "1m"}, "pause": {}}),
        "each rollout step sets exactly one of setWeight, pause or analysis",
        "cel",
    ),
    InvalidCase(
        "weights-not-100", _set("spec.variants.1.weight", 30), "variant weights must sum to 100", "cel"
    ),
    InvalidCase(
        "duplicate-variant-names",
        _set("spec.variants.1.name", "control"),
        'Duplicate value: {"name":"control"}',
        "cel",
    ),
    InvalidCase(
        "set-weight-not-increasing",
        _set("spec.rollout.steps", [{"setWeight": 50}, {"setWeight": 20}]),
        "setWeight steps must strictly increase",
        "cel",
    ),
    InvalidCase(
        "set-weight-repeated",
        _set("spec.rollout.steps", [{"setWeight": 20}, {"pause": {}}, {"setWeight": 20}]),
        "setWeight steps must strictly increase",
        "cel",
    ),
    InvalidCase(
        "step-with-two-actions",
        _set("spec.rollout.steps.0", {"setWeight": 10, "pause": {"duration": "1m"}}),
        "each rollout step sets exactly one of setWeight, pause or analysis",
        "cel",
    ),
    InvalidCase(
        "empty-step",
        _set("spec.rollout.steps.0", {}),
        "each rollout step sets exactly one of setWeight, pause or analysis",
        "cel",
    ),
    InvalidCase(
        "hpa-min-above-max",
        _both(_delete("spec.replicas"), _set("spec.autoscaling", {"minReplicas": 5, "maxReplicas": 2})),
        "autoscaling.minReplicas must not exceed autoscaling.maxReplicas",
        "cel",
    ),
    InvalidCase(
        "replicas-and-autoscaling",
        _set("spec.autoscaling", {"maxReplicas": 4}),
        "set either spec.replicas or spec.autoscaling, not both",
        "cel",
    ),
    InvalidCase(
        "variant-replicas-with-autoscaling",
        _both(
            _delete("spec.replicas"),
            _set("spec.autoscaling", {"maxReplicas": 4}),
            _set("spec.variants.0.replicas", 3),
        ),
        "variants cannot set replicas when spec.autoscaling is set",
        "cel",
    ),
    InvalidCase(
        "gateway-without-parent-refs",
        _both(
            _set("spec.traffic", {"provider": "gatewayAPI"}),
        ),
        "traffic.gatewayAPI.parentRefs is required when traffic.provider is gatewayAPI",
        "cel",
    ),
    InvalidCase(
        "sticky-key-with-gateway",
        _set(
            "spec.traffic",
            {
                "provider": "gatewayAPI",
                "gatewayAPI": {"parentRefs": [{"name": "gw"}]},
                "stickyKey": {"header": "X-User-Id"},
            },
        ),
        "traffic.stickyKey needs the router provider",
        "cel",
    ),
    InvalidCase(
        "gateway-settings-with-router",
        _set("spec.traffic.gatewayAPI", {"parentRefs": [{"name": "gw"}]}),
        "traffic.gatewayAPI is only used when traffic.provider is gatewayAPI",
        "cel",
    ),
    InvalidCase(
        "sticky-key-header-and-body",
        _set("spec.traffic.stickyKey", {"header": "X-User-Id", "bodyField": "user"}),
        "traffic.stickyKey needs exactly one of header or bodyField",
        "cel",
    ),
    InvalidCase(
        "shadow-variant-unknown",
        _set("spec.traffic.shadow.variant", "nosuch"),
        "traffic.shadow.variant must name a variant of spec.variants whose weight is 0",
        "cel",
    ),
    InvalidCase(
        "shadow-variant-live",
        _set("spec.traffic.shadow.variant", "treatment"),
        "traffic.shadow.variant must name a variant of spec.variants whose weight is 0",
        "cel",
    ),
    InvalidCase(
        "canary-without-set-weight",
        _set("spec.rollout.steps", [{"pause": {}}]),
        "the Canary strategy needs at least one setWeight step",
        "cel",
    ),
    InvalidCase(
        "immediate-with-steps",
        _set("spec.rollout.strategy", "Immediate"),
        "the Immediate strategy takes no steps",
        "cel",
    ),
    InvalidCase(
        "blue-green-with-set-weight",
        _set("spec.rollout.strategy", "BlueGreen"),
        "the BlueGreen strategy switches all traffic at once",
        "cel",
    ),
    InvalidCase(
        "analysis-step-without-checks",
        _delete("spec.rollout.analysis"),
        "an analysis step needs rollout.analysis.checks",
        "cel",
    ),
    InvalidCase(
        "analysis-step-unknown-check",
        _set("spec.rollout.steps.1", {"analysis": {"checks": ["latency"]}}),
        "an analysis step names a check that rollout.analysis.checks does not define",
        "cel",
    ),
    InvalidCase(
        "prometheus-check-without-query",
        _set("spec.rollout.analysis.checks.0.type", "prometheus"),
        "query is required for prometheus checks and not allowed for built-in ones",
        "cel",
    ),
    InvalidCase(
        "prometheus-check-without-address",
        _set(
            "spec.rollout.analysis.checks.0",
            {"name": "errors", "type": "prometheus", "query": "vector(0)", "threshold": {"max": 1}},
        ),
        "prometheus checks need rollout.analysis.prometheus.address",
        "cel",
    ),
    InvalidCase(
        "prometheus-check-with-min-samples",
        _both(
            _set("spec.rollout.analysis.prometheus", {"address": "http://prometheus.monitoring:9090"}),
            _set(
                "spec.rollout.analysis.checks.0",
                {
                    "name": "errors",
                    "type": "prometheus",
                    "query": "vector(0)",
                    "threshold": {"max": 1},
                    "minSamples": 10,
                },
            ),
        ),
        "minSamples above 1 cannot be met by a prometheus check",
        "cel",
    ),
    InvalidCase(
        "threshold-missing-on-error-rate",
        _delete("spec.rollout.analysis.checks.0.threshold"),
        "threshold is required (only an inputDrift check may leave it out",
        "cel",
    ),
    InvalidCase(
        "threshold-empty",
        _set("spec.rollout.analysis.checks.0.threshold", {}),
        "a threshold needs min, max or both",
        "cel",
    ),
    InvalidCase(
        "threshold-min-above-max",
        _set("spec.rollout.analysis.checks.0.threshold", {"min": 2, "max": 1}),
        "threshold.min must not exceed threshold.max",
        "cel",
    ),
    InvalidCase(
        "duplicate-check-names",
        _set(
            "spec.rollout.analysis.checks",
            [
                {"name": "errors", "type": "errorRate", "threshold": {"max": 0.01}},
                {"name": "errors", "type": "latencyP99", "threshold": {"max": 0.1}},
            ],
        ),
        'Duplicate value: {"name":"errors"}',
        "cel",
    ),
    InvalidCase(
        "no-model-anywhere",
        _delete("spec.model"),
        "spec.model is required unless every variant sets its own model",
        "cel",
    ),
    InvalidCase(
        "s3-endpoint-for-http-uri",
        _set(
            "spec.model",
            {
                "uri": "https://x/m",
                "format": "onnx",
                "version": "1",
                "storage": {"s3EndpointURL": "http://s3:9000"},
            },
        ),
        "model.storage.s3EndpointURL only applies to s3:// URIs",
        "cel",
    ),
    # --- pvc:// model stores (issue 13): modeldeploy_contract.model_store's grammar, as a CEL rule ---
    *(
        InvalidCase(
            f"pvc-{name}",
            _set(where, {"uri": uri, "version": "1"}),
            f'{where.replace(".0.", "[0].")}.uri: Invalid value: "object": a pvc:// URI is pvc://<claimName>',
            "cel",
        )
        for name, where, uri in [
            ("claim-upper-case", "spec.model", "pvc://Models/churn"),
            ("claim-with-port", "spec.model", "pvc://models:80/churn"),
            ("dot-dot", "spec.model", "pvc://models/../etc"),
            ("dot-dot-at-the-end", "spec.model", "pvc://models/churn/.."),
            ("empty-segment", "spec.model", "pvc://models//churn"),
            ("trailing-slash", "spec.model", "pvc://models/churn/"),
            ("space", "spec.model", "pvc://models/chu rn"),
            ("query", "spec.model", "pvc://models/churn?v=1"),
            ("variant-dot-dot", "spec.variants.0.model", "pvc://models/../x"),
        ]
    ),
    InvalidCase(
        "pvc-claim-too-long",
        _set("spec.model.uri", "pvc://" + "a" * 254 + "/churn"),
        "the claim name of a pvc:// URI has at most 253 characters",
        "cel",
    ),
    InvalidCase(
        # RE2's `$` (the API server's) does not match before a trailing newline, Python's does: the
        # schema's pattern refuses it there, where jsonschema offline would let it through ("cel":
        # only the API server is asked).
        "pvc-trailing-newline",
        _set("spec.model.uri", "pvc://models/churn\n"),
        "spec.model.uri in body should match '^((s3|gs|https?|file|pvc)://.+|/.+)$'",
        "cel",
    ),
    InvalidCase(
        "name-not-dns-1035",
        _set("metadata.name", "9churn"),
        "metadata.name must be a DNS-1035 label",
        "cel",
    ),
    InvalidCase(
        "name-too-long",
        _set("metadata.name", "c" * 41),
        "metadata.name must be a DNS-1035 label",
        "cel",
    ),
    # --- pod settings: what the operator owns stays the operator's ---
    InvalidCase(
        "pod-label-operator-selector",
        _set("spec.pods.serving.labels", {"modeldeploy.io/revision": "abc"}),
        "pod labels may not set modeldeploy.io/* or the app.kubernetes.io/* labels the operator sets",
        "cel",
    ),
    InvalidCase(
        "pod-label-recommended",
        _set("spec.pods.router.labels", {"app.kubernetes.io/component": "mine"}),
        "pod labels may not set modeldeploy.io/* or the app.kubernetes.io/* labels the operator sets",
        "cel",
    ),
    InvalidCase(
        "pod-annotation-scrape",
        _set("spec.pods.serving.annotations", {"prometheus.io/port": "9999"}),
        "pod annotations may not set modeldeploy.io/* or prometheus.io/*",
        "cel",
    ),
    InvalidCase(
        "env-overrides-operator-setting",
        _set("spec.pods.serving.env", [{"name": "MODELDEPLOY_SERVER_MODEL_URI", "value": "s3://evil/m"}]),
        "env may not set MODELDEPLOY_* variables",
        "cel",
    ),
    InvalidCase(
        "router-env-overrides-operator-setting",
        _set("spec.pods.router.env", [{"name": "MODELDEPLOY_ROUTER_PORT", "value": "1"}]),
        "env may not set MODELDEPLOY_* variables",
        "cel",
    ),
    InvalidCase(
        "env-value-and-value-from",
        _set(
            "spec.pods.serving.env",
            [{"name": "X", "value": "1", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}],
        ),
        "set value or valueFrom, not both",
        "cel",
    ),
    InvalidCase(
        "duplicate-env-names",
        _set("spec.pods.serving.env", [{"name": "X", "value": "1"}, {"name": "X", "value": "2"}]),
        'Duplicate value: {"name":"X"}',
        "cel",
    ),
    InvalidCase(
        "volume-named-like-the-model-cache",
        _set("spec.pods.serving.volumes", [{"name": "model-cache", "emptyDir": {}}]),
        "volumes may not be named model-cache, model-store or tmp",
        "cel",
    ),
    InvalidCase(
        "volume-with-two-sources",
        _set("spec.pods.serving.volumes", [{"name": "x", "emptyDir": {}, "secret": {"secretName": "s"}}]),
        "each volume sets exactly one source",
        "cel",
    ),
    InvalidCase(
        # hostPath is not in the schema: the API server prunes it, and the volume has no source left.
        "volume-host-path",
        _set("spec.pods.serving.volumes", [{"name": "node", "hostPath": {"path": "/"}}]),
        "each volume sets exactly one source",
        "cel",
    ),
    InvalidCase(
        "mount-over-tmp",
        _set("spec.pods.serving.volumeMounts", [{"name": "extra", "mountPath": "/tmp/x"}]),
        "volumeMounts may not use /tmp, /var/cache/modeldeploy or /mnt/models",
        "cel",
    ),
    InvalidCase(
        "mount-over-model-cache",
        _set("spec.pods.serving.volumeMounts", [{"name": "extra", "mountPath": "/var/cache/modeldeploy"}]),
        "volumeMounts may not use /tmp, /var/cache/modeldeploy or /mnt/models",
        "cel",
    ),
    InvalidCase(
        "mount-over-the-model-store",
        _set("spec.pods.serving.volumeMounts", [{"name": "extra", "mountPath": "/mnt/models/models"}]),
        "volumeMounts may not use /tmp, /var/cache/modeldeploy or /mnt/models",
        "cel",
    ),
    InvalidCase(
        "volume-named-like-the-model-store",
        _set("spec.pods.serving.volumes", [{"name": "model-store", "emptyDir": {}}]),
        "volumes may not be named model-cache, model-store or tmp",
        "cel",
    ),
    InvalidCase(
        "mount-relative-path",
        _set("spec.pods.serving.volumeMounts", [{"name": "extra", "mountPath": "etc/extra"}]),
        "mountPath must be absolute",
        "cel",
    ),
    InvalidCase(
        "toleration-exists-with-value",
        _set("spec.pods.serving.tolerations", [{"key": "k", "operator": "Exists", "value": "v"}]),
        "a toleration with operator Exists takes no value",
        "cel",
    ),
    InvalidCase(
        "serving-resources-in-pods",
        _set("spec.pods.serving.resources", {"requests": {"cpu": "1"}}),
        "set the model server's resources with spec.resources",
        "cel",
    ),
    InvalidCase(
        "pdb-max-unavailable-and-min-available",
        _set("spec.podDisruptionBudget", {"maxUnavailable": 1, "minAvailable": 1}),
        "podDisruptionBudget takes maxUnavailable or minAvailable, not both",
        "cel",
    ),
    InvalidCase(
        "hpa-without-max-replicas",
        _both(_delete("spec.replicas"), _set("spec.autoscaling", {"minReplicas": 2})),
        "autoscaling.maxReplicas is required unless autoscaling.provider is External",
        "cel",
    ),
    # --- schema: types, enums, ranges, patterns ---
    InvalidCase(
        "shadow-step-without-duration",
        _set("spec.rollout.steps.0", {"shadow": {"percent": 10}}),
        "spec.rollout.steps[0].shadow.duration",
        "schema",
    ),
    InvalidCase(
        "shadow-step-percent-zero",
        _set("spec.rollout.steps.0", {"shadow": {"percent": 0, "duration": "1m"}}),
        "spec.rollout.steps[0].shadow.percent",
        "schema",
    ),
    InvalidCase(
        "mirror-percent-over-100",
        _set("spec.rollout.analysis.mirrorPercent", 101),
        "spec.rollout.analysis.mirrorPercent",
        "schema",
    ),
    InvalidCase(
        "unknown-drift-reference",
        _set("spec.rollout.analysis.checks.0.reference", "training"),
        "spec.rollout.analysis.checks[0].reference",
        "schema",
    ),
    InvalidCase(
        "unknown-check-type",
        _set("spec.rollout.analysis.checks.0.type", "shadowAgreements"),
        "spec.rollout.analysis.checks[0].type",
        "schema",
    ),
    InvalidCase(
        "service-account-not-a-name",
        _set("spec.pods.serving.serviceAccountName", "Not_A_Name"),
        "spec.pods.serving.serviceAccountName",
        "schema",
    ),
    InvalidCase(
        "pull-secret-without-name",
        _set("spec.pods.router.imagePullSecrets", [{}]),
        "spec.pods.router.imagePullSecrets[0].name",
        "schema",
    ),
    InvalidCase(
        "toleration-bad-effect",
        _set("spec.pods.serving.tolerations", [{"key": "k", "effect": "Sometimes"}]),
        "spec.pods.serving.tolerations[0].effect",
        "schema",
    ),
    InvalidCase(
        "topology-spread-without-key",
        _set(
            "spec.pods.serving.topologySpreadConstraints",
            [{"maxSkew": 1, "whenUnsatisfiable": "DoNotSchedule"}],
        ),
        "spec.pods.serving.topologySpreadConstraints[0].topologyKey",
        "schema",
    ),
    InvalidCase(
        "too-many-env-vars",
        _set("spec.pods.serving.env", [{"name": f"V{i}", "value": "1"} for i in range(65)]),
        "spec.pods.serving.env",
        "schema",
    ),
    InvalidCase(
        "pdb-bad-max-unavailable",
        _set("spec.podDisruptionBudget", {"maxUnavailable": "half"}),
        "spec.podDisruptionBudget.maxUnavailable",
        "schema",
    ),
    InvalidCase(
        "bad-autoscaling-provider",
        _both(_delete("spec.replicas"), _set("spec.autoscaling", {"provider": "KEDA", "maxReplicas": 3})),
        "spec.autoscaling.provider",
        "schema",
    ),
    # --- schema: types, enums, ranges, patterns (continued) ---
    InvalidCase("bad-sha256", _set("spec.model.sha256", "ABC123"), "spec.model.sha256", "schema"),
    InvalidCase("bad-format", _set("spec.model.format", "pickle"), "spec.model.format", "schema"),
    InvalidCase("bad-uri-scheme", _set("spec.model.uri", "ftp://x/m"), "spec.model.uri", "schema"),
    InvalidCase(
        "format-auto-spelled-otherwise", _set("spec.model.format", "Auto"), "spec.model.format", "schema"
    ),
    InvalidCase("pvc-without-claim", _set("spec.model.uri", "pvc://"), "spec.model.uri", "schema"),
    # Azure Blob URLs: https, a valid account and container, no SAS in the URI (model_store.AZURE_BLOB_RULE)
    InvalidCase(
        "azure-blob-uri-over-http",
        _set("spec.model.uri", "http://acct01.blob.core.windows.net/models/churn"),
        "an Azure Blob model.uri must be https://<account>.blob.core.windows.net/<container>[/<path>]",
        "cel",
    ),
    InvalidCase(
        "azure-blob-uri-with-sas",
        _set("spec.model.uri", "https://acct01.blob.core.windows.net/models/churn?sv=2021-08-06&sig=abc"),
        "a SAS token goes in the storage Secret as AZURE_STORAGE_SAS_TOKEN",
        "cel",
    ),
    InvalidCase(
        "azure-blob-uri-bad-container-on-a-variant",
        _set(
            "spec.variants.1.model",
            {"uri": "https://acct01.blob.core.windows.net/Models/churn", "format": "onnx", "version": "2"},
        ),
        "an Azure Blob model.uri must be",
        "cel",
    ),
    InvalidCase("version-not-label-safe", _set("spec.model.version", "v 1"), "spec.model.version", "schema"),
    InvalidCase(
        "shadow-percent-over-100",
        _set("spec.traffic.shadow.percent", 150),
        "spec.traffic.shadow.percent",
        "schema",
    ),
    InvalidCase(
        "shadow-without-variant",
        _delete("spec.traffic.shadow.variant"),
        "spec.traffic.shadow.variant",
        "schema",
    ),
    InvalidCase("set-weight-over-100", _set("spec.rollout.steps.0.setWeight", 110), "setWeight", "schema"),
    InvalidCase(
        "variant-name-uppercase", _set("spec.variants.0.name", "Control"), "spec.variants[0].name", "schema"
    ),
    InvalidCase("bad-provider", _set("spec.traffic.provider", "istio"), "spec.traffic.provider", "schema"),
    InvalidCase(
        "no-router-replicas", _set("spec.traffic.routerReplicas", 0), "spec.traffic.routerReplicas", "schema"
    ),
    InvalidCase("bad-strategy", _set("spec.rollout.strategy", "Rolling"), "spec.rollout.strategy", "schema"),
    InvalidCase(
        "bad-duration",
        _set("spec.rollout.analysis.interval", "1 minute"),
        "spec.rollout.analysis.interval",
        "schema",
    ),
    InvalidCase(
        "bad-quantity",
        _set("spec.resources", {"requests": {"cpu": "lots"}}),
        "spec.resources.requests.cpu",
        "schema",
    ),
    InvalidCase("negative-replicas", _set("spec.replicas", -1), "spec.replicas", "schema"),
    # --- effectiveness checks (issue 15) ---
    InvalidCase(
        "effectiveness-check-without-joiner",
        _set("spec.rollout.analysis.checks.0.type", "effectiveness"),
        "effectiveness checks need rollout.analysis.joiner.address",
        "cel",
    ),
    InvalidCase(
        "effectiveness-settings-on-another-check",
        _set("spec.rollout.analysis.checks.0.effectiveness", {"metric": "auc"}),
        "effectiveness settings are only allowed on effectiveness checks",
        "cel",
    ),
    InvalidCase(
        "effectiveness-bad-metric",
        _both(
            _set("spec.rollout.analysis.joiner", {"address": "http://joiner:8090"}),
            _set("spec.rollout.analysis.checks.0.type", "effectiveness"),
            _set("spec.rollout.analysis.checks.0.effectiveness", {"metric": "f1"}),
        ),
        "spec.rollout.analysis.checks[0].effectiveness.metric",
        "schema",
    ),
    InvalidCase(
        "effectiveness-confidence-1",
        _both(
            _set("spec.rollout.analysis.joiner", {"address": "http://joiner:8090"}),
            _set("spec.rollout.analysis.checks.0.type", "effectiveness"),
            _set("spec.rollout.analysis.checks.0.effectiveness", {"confidence": 1}),
        ),
        "spec.rollout.analysis.checks[0].effectiveness.confidence",
        "schema",
    ),
    InvalidCase(
        "joiner-address-not-http",
        _set("spec.rollout.analysis.joiner", {"address": "file:///etc/passwd"}),
        "spec.rollout.analysis.joiner.address",
        "schema",
    ),
    # --- rollout.preflight (issue 15) ---
    InvalidCase(
        "preflight-negative-output-diff",
        _set("spec.rollout.preflight", {"maxOutputDiff": -0.1}),
        "spec.rollout.preflight.maxOutputDiff",
        "schema",
    ),
    InvalidCase(
        "preflight-auc-drop-over-1",
        _set("spec.rollout.preflight", {"maxAUCDrop": 1.5}),
        "spec.rollout.preflight.maxAUCDrop",
        "schema",
    ),
    InvalidCase(
        "preflight-min-auc-over-1",
        _set("spec.rollout.preflight", {"minAUC": 2}),
        "spec.rollout.preflight.minAUC",
        "schema",
    ),
    InvalidCase(
        "preflight-psi-not-a-number",
        _set("spec.rollout.preflight", {"maxScorePSI": "high"}),
        "spec.rollout.preflight.maxScorePSI",
        "schema",
    ),
    InvalidCase(
        "preflight-enabled-not-bool",
        _set("spec.rollout.preflight", {"enabled": "yes"}),
        "spec.rollout.preflight.enabled",
        "schema",
    ),
    InvalidCase(
        "preflight-timeout-too-short",
        _set("spec.rollout.preflight", {"timeoutSeconds": 1}),
        "spec.rollout.preflight.timeoutSeconds",
        "schema",
    ),
    InvalidCase(
        "preflight-negative-log-loss-increase",
        _set("spec.rollout.preflight", {"maxLogLossIncrease": -1}),
        "spec.rollout.preflight.maxLogLossIncrease",
        "schema",
    ),
    # --- rollout.rollbackWindow (issue 12) ---
    InvalidCase(
        "rollback-window-negative-seconds",
        _set("spec.rollout.rollbackWindow", {"seconds": -1}),
        "spec.rollout.rollbackWindow.seconds",
        "schema",
    ),
    InvalidCase(
        "rollback-window-over-a-day",
        _set("spec.rollout.rollbackWindow", {"seconds": 86401}),
        "spec.rollout.rollbackWindow.seconds",
        "schema",
    ),
    InvalidCase(
        "rollback-window-seconds-as-duration",
        _set("spec.rollout.rollbackWindow", {"seconds": "5m"}),
        "spec.rollout.rollbackWindow.seconds",
        "schema",
    ),
    InvalidCase(
        "rollback-window-negative-replicas",
        _set("spec.rollout.rollbackWindow", {"replicas": -1}),
        "spec.rollout.rollbackWindow.replicas",
        "schema",
    ),
    InvalidCase(
        "rollback-window-too-many-replicas",
        _set("spec.rollout.rollbackWindow", {"replicas": 101}),
        "spec.rollout.rollbackWindow.replicas",
        "schema",
    ),
    InvalidCase(
        "rollback-window-not-an-object",
        _set("spec.rollout.rollbackWindow", 300),
        "spec.rollout.rollbackWindow",
        "schema",
    ),
    InvalidCase(
        "too-many-variants",
        _set("spec.variants", [{"name": f"v{i}", "weight": 5} for i in range(20)]),
        "spec.variants",
        "schema",
    ),
    *STREAM_CASES,
    *PREDICTION_LOG_CASES,
    *EFFECTIVENESS_CASES,
)
