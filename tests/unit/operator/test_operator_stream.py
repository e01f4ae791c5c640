"""spec.stream: the stream plan (roles, the handover), the stream Deployment, validation (issue 14)."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest

from modeldeploy_contract.stream_settings import StreamSettings
from modeldeploy_operator.domain import labels as lbl
from modeldeploy_operator.domain.desired_state import BuildOptions, desired_state, stale_objects
from modeldeploy_operator.domain.manifests import build_stream_deployment
from modeldeploy_operator.domain.resource import ModelDeploymentRef
from modeldeploy_operator.domain.revision import resolve_variants
from modeldeploy_operator.domain.rollout.model import DesiredRevision, Plan, Role, VariantPlan
from modeldeploy_operator.domain.spec import ModelDeploymentSpec
from modeldeploy_operator.domain.status_model import HistoryEntry, ModelDeploymentStatus
from modeldeploy_operator.domain.stream import (
    SECRET_MOUNT,
    StreamRevision,
    plan_stream,
    stream_settings_for,
    stream_variant,
)
from modeldeploy_operator.domain.validation import InvalidSpecError, parse_spec

from modeldeploy_builders import make_spec
from modeldeploy_crd_cases import STREAM_CASES

IMAGE = "registry.local/modeldeploy/serving:dev"
OPTIONS = BuildOptions(serving_image=IMAGE, router_image="registry.local/modeldeploy/router:dev")
STREAM: dict[str, Any] = {
    "bootstrapServers": "10.244.0.1:9092",
    "inputTopic": "accounts",
    "outputTopic": "scores",
    "replicas": 3,
}


def _spec(**stream: Any) -> ModelDeploymentSpec:
    return make_spec(stream={**STREAM, **stream})


def _plan(spec: ModelDeploymentSpec, *revisions: tuple[str, Role, int, bool]) -> Plan:
    """A plan of the spec's one variant: (revision, role, replicas, from_spec) per revision."""
    desired = tuple(
        DesiredRevision(rev, role, replicas, 100 if role == "stable" else 0, from_spec)
        for rev, role, replicas, from_spec in revisions
    )
    name = spec.effective_variants()[0].name
    return Plan((VariantPlan(name, 100, desired),), (), ModelDeploymentStatus(), None)


def _rev(spec: ModelDeploymentSpec) -> str:
    return resolve_variants("churn", spec)[0].revision


# --- the stream plan: a table of (revisions in the rollout plan, output pods seen) -> stream pods ---
S = "spec-rev"  # stands for the spec's revision in the table; replaced below
PLAN_TABLE: list[
    tuple[str, list[tuple[str, Role, int, bool]], dict[str, int], list[StreamRevision], bool]
] = [
    (
        "first stable writes the output",
        [(S, "stable", 2, True)],
        {},
        [StreamRevision("default", S, "output", 3)],
        False,
    ),
    (
        "its own pods do not hold it back",
        [(S, "stable", 2, True)],
        {S: 3},
        [StreamRevision("default", S, "output", 3)],
        False,
    ),
    (
        "a canary shadows beside the old stable, which is kept as it is",
        [("old", "stable", 2, False), (S, "canary", 1, True)],
        {"old": 3},
        [StreamRevision("default", "old", "output", 3, False), StreamRevision("default", S, "shadow", 3)],
        False,
    ),
    (
        "a preview (BlueGreen) shadows too",
        [("old", "stable", 2, False), (S, "preview", 2, True)],
        {"old": 3},
        [StreamRevision("default", "old", "output", 3, False), StreamRevision("default", S, "shadow", 3)],
        False,
    ),
    (
        "promoted: the new writer waits at 0 while the old writer's pods drain",
        [("old", "previous", 2, False), (S, "stable", 2, True)],
        {"old": 2},
        [StreamRevision("default", S, "output", 0)],
        True,
    ),
    (
        "promoted: the old writer's pods are gone, the new writer starts from the committed offsets",
        [("old", "previous", 2, False), (S, "stable", 2, True)],
        {},
        [StreamRevision("default", S, "output", 3)],
        False,
    ),
    (
        "aborted: the canary (scaled to 0) has no stream pods",
        [("old", "stable", 2, False), (S, "canary", 0, True)],
        {"old": 3},
        [StreamRevision("default", "old", "output", 3, False)],
        False,
    ),
    (
        "a previous revision has no stream pods",
        [(S, "stable", 2, True), ("old", "previous", 0, False)],
        {},
        [StreamRevision("default", S, "output", 3)],
        False,
    ),
]


@pytest.mark.parametrize(
    ("revisions", "pods", "expected", "pending"),
    [row[1:] for row in PLAN_TABLE],
    ids=[r[0] for r in PLAN_TABLE],
)
def test_stream_plan(
    revisions: list[tuple[str, Role, int, bool]],
    pods: dict[str, int],
    expected: list[StreamRevision],
    pending: bool,
) -> None:
    spec = _spec()
    result = plan_stream(spec, _plan(spec, *revisions), pods)
    assert list(result.revisions) == expected
    assert result.handover_pending is pending


def test_an_aborted_canary_loses_its_stream_pods_before_its_rest_pods() -> None:
    spec = _spec()
    plan = _plan(spec, ("old", "stable", 2, False), (S, "canary", 1, True))
    entry = HistoryEntry.model_validate(
        {
            "revision": 2,
            "hash": S,
            "variant": "default",
            "modelVersion": "2",
            "modelURI": "s3://models/churn/v2",
            "createdAt": "2026-01-01T00:00:00Z",
            "outcome": "Aborted",
        }
    )
    aborted = replace(plan, status=ModelDeploymentStatus(history=(entry,)))
    # The REST canary is still scaling down (replicas 1), the stream shadow is gone.
    assert [r.role for r in plan_stream(spec, aborted, {"old": 3}).revisions] == ["output"]
    assert [r.role for r in plan_stream(spec, plan, {"old": 3}).revisions] == ["output", "shadow"]


def test_no_stream_no_stream_pods() -> None:
    spec = make_spec()
    assert plan_stream(spec, _plan(spec, ("r", "stable", 2, True)), {}).revisions == ()


def test_the_stream_runs_on_the_heaviest_variant() -> None:
    spec = make_spec(
        variants=[{"name": "a", "weight": 30}, {"name": "b", "weight": 70}, {"name": "c", "weight": 0}],
        stream=STREAM,
    )
    assert stream_variant(spec) == "b"


# --- settings ---
def test_output_and_shadow_settings() -> None:
    spec = _spec(consumerGroup="churn-scoring")
    assert spec.stream is not None
    output = stream_settings_for(spec.stream, "ml", "churn", StreamRevision("default", "r1", "output", 3))
    shadow = stream_settings_for(spec.stream, "ml", "churn", StreamRevision("default", "r2", "shadow", 3))
    assert (output.group_id, output.output_topic, output.dead_letter, output.auto_offset_reset) == (
        "churn-scoring",
        "scores",
        "accounts.dlq",
        "earliest",
    )
    # The shadow never shares the output group (its commits would move the writer's boundary) nor
    # writes the output or the output's dead-letter topic.
    assert (shadow.group_id, shadow.output_topic, shadow.dead_letter, shadow.auto_offset_reset) == (
        "churn-scoring.shadow.r2",
        "scores.shadow",
        "scores.shadow.dlq",
        "latest",
    )
    assert output.revision == "r1"


def test_session_timeout_reaches_the_consumer() -> None:
    """spec.stream.sessionTimeoutSeconds is Kafka's session.timeout.ms of every stream pod, output and
    shadow alike; 45 s (Kafka's own default) when left out."""
    for spec, expected in ((_spec(), 45_000), (_spec(sessionTimeoutSeconds=10), 10_000)):
        assert spec.stream is not None
        for role in ("output", "shadow"):
            revision = StreamRevision("default", "r", role, 1)
            assert stream_settings_for(spec.stream, "ml", "churn", revision).session_timeout_ms == expected
    raw = {**_spec().model_dump(by_alias=True), "stream": {**STREAM, "sessionTimeoutSeconds": 5}}
    below_minimum = r"spec\.stream\.sessionTimeoutSeconds: .* greater than or equal to 6"
    with pytest.raises(InvalidSpecError, match=below_minimum):
        parse_spec(raw)


def test_default_group_names_the_namespace_and_deployment() -> None:
    spec = _spec()
    assert spec.stream is not None
    settings = stream_settings_for(spec.stream, "ml", "churn", StreamRevision("default", "r", "output", 1))
    assert settings.group_id == "modeldeploy-ml-churn"


def test_settings_survive_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = _spec(securityProtocol="SASL_SSL", saslMechanism="SCRAM-SHA-512", secretName="kafka")
    assert spec.stream is not None
    settings = stream_settings_for(spec.stream, "ml", "churn", StreamRevision("default", "r", "output", 1))
    for key, value in settings.to_env().items():
        monkeypatch.setenv(key, value)
    assert StreamSettings() == settings  # type: ignore[call-arg]  # read from the environment


# --- the Deployment ---
def _deployment(owner: ModelDeploymentRef, role: str = "output", **stream: Any) -> dict[str, Any]:
    spec = _spec(**stream)
    assert spec.stream is not None
    variant = resolve_variants("churn", spec)[0]
    revision = StreamRevision("default", variant.revision, role, 3)  # type: ignore[arg-type]
    return build_stream_deployment(owner, variant, spec.stream, revision, image=IMAGE)


def _env(deployment: dict[str, Any]) -> dict[str, str]:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e["value"] for e in container["env"]}


def test_stream_deployment_runs_modeldeploy_stream(owner: ModelDeploymentRef) -> None:
    deployment = _deployment(owner)
    rev = _rev(_spec())
    assert deployment["metadata"]["name"] == f"churn-default-{rev}-output"
    spec = deployment["spec"]
    assert spec["replicas"] == 3
    assert spec["strategy"] == {"type": "Recreate"}
    pod = spec["template"]["spec"]
    (container,) = pod["containers"]
    assert container["command"] == ["modeldeploy", "stream"]
    assert container["image"] == IMAGE
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert pod["terminationGracePeriodSeconds"] == 60
    assert pod["automountServiceAccountToken"] is False
    env = _env(deployment)
    # The same bundle loading as REST, and the Kafka side from StreamSettings.
    assert env["MODELDEPLOY_SERVER_MODEL_URI"] == "s3://models/churn/v1"
    assert env["MODELDEPLOY_STREAM_BOOTSTRAP_SERVERS"] == "10.244.0.1:9092"
    assert env["MODELDEPLOY_STREAM_INPUT_TOPIC"] == "accounts"
    assert env["MODELDEPLOY_STREAM_OUTPUT_TOPIC"] == "scores"
    assert env["MODELDEPLOY_STREAM_REVISION"] == rev
    assert env["MODELDEPLOY_STREAM_GROUP_ID"] == "modeldeploy-ml-churn"


def test_stream_pods_stay_out_of_the_revision_service(owner: ModelDeploymentRef) -> None:
    deployment = _deployment(owner)
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    # No REVISION_LABEL: the REST Service's selector (revision_selector) must not match stream pods,
    # and the planner must not read a stream Deployment as the revision's serving Deployment.
    assert lbl.REVISION_LABEL not in labels
    assert labels[lbl.STREAM_REVISION_LABEL] == _rev(_spec())
    assert labels[lbl.STREAM_ROLE_LABEL] == "output"
    assert labels["app.kubernetes.io/component"] == "stream"
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_shadow_deployment_is_another_deployment(owner: ModelDeploymentRef) -> None:
    shadow = _deployment(owner, role="shadow")
    assert shadow["metadata"]["name"].endswith("-shadow")
    assert _env(shadow)["MODELDEPLOY_STREAM_OUTPUT_TOPIC"] == "scores.shadow"


@pytest.mark.parametrize(
    ("stream", "keys"),
    [
        ({}, None),
        ({"securityProtocol": "SSL", "secretName": "kafka"}, ["ca.crt"]),
        (
            {"securityProtocol": "SSL", "secretName": "kafka", "clientCertificate": True},
            ["ca.crt", "tls.crt", "tls.key"],
        ),
        (
            {"securityProtocol": "SASL_PLAINTEXT", "saslMechanism": "PLAIN", "secretName": "kafka"},
            ["username", "password"],
        ),
        (
            {"securityProtocol": "SASL_SSL", "saslMechanism": "SCRAM-SHA-256", "secretName": "kafka"},
            ["ca.crt", "username", "password"],
        ),
    ],
)
def test_secret_is_mounted_never_inlined(
    owner: ModelDeploymentRef, stream: dict[str, Any], keys: list[str] | None
) -> None:
    deployment = _deployment(owner, **stream)
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    if keys is None:
        assert "kafka-credentials" not in volumes
        return
    secret = volumes["kafka-credentials"]["secret"]
    assert secret["secretName"] == "kafka"
    assert [i["key"] for i in secret["items"]] == keys
    mount = next(m for m in container["volumeMounts"] if m["name"] == "kafka-credentials")
    assert mount == {"name": "kafka-credentials", "mountPath": SECRET_MOUNT, "readOnly": True}
    env = _env(deployment)
    file_settings = {k: v for k, v in env.items() if k.endswith("_FILE")}
    assert all(v.startswith(SECRET_MOUNT + "/") for v in file_settings.values())
    assert "MODELDEPLOY_STREAM_SASL_PASSWORD" not in env
    assert "secretKeyRef" not in json.dumps(deployment)  # no Secret value reaches the environment


# --- desired state ---
def test_desired_state_renders_and_prunes_stream_deployments(owner: ModelDeploymentRef) -> None:
    spec = _spec()
    rev = _rev(spec)
    canary = desired_state(
        owner, spec, _plan(spec, ("old", "stable", 2, False), (rev, "canary", 1, True)), options=OPTIONS
    )
    names = {m["metadata"]["name"] for m in canary.manifests if m["kind"] == "Deployment"}
    assert f"churn-default-{rev}-shadow" in names
    assert ("Deployment", "churn-default-old-output") in canary.keep  # kept as it is, not re-rendered
    assert "churn-default-old-output" not in names

    owned = [
        {"kind": "Deployment", "metadata": {"name": n}}
        for n in ("churn-default-old-output", f"churn-default-{rev}-shadow")
    ]
    aborted = desired_state(
        owner, spec, _plan(spec, ("old", "stable", 2, False), (rev, "canary", 0, True)), options=OPTIONS
    )
    assert [o["metadata"]["name"] for o in stale_objects(aborted, owned)] == [f"churn-default-{rev}-shadow"]

    promoted = desired_state(
        owner,
        spec,
        _plan(spec, ("old", "previous", 2, False), (rev, "stable", 2, True)),
        options=OPTIONS,
        stream_output_pods={"old": 3},
    )
    assert promoted.stream_handover_pending
    writer = next(m for m in promoted.manifests if m["metadata"]["name"] == f"churn-default-{rev}-output")
    assert writer["spec"]["replicas"] == 0
    assert {o["metadata"]["name"] for o in stale_objects(promoted, owned)} == {
        "churn-default-old-output",
        f"churn-default-{rev}-shadow",
    }


def test_stream_settings_do_not_change_the_revision() -> None:
    # Topics and Kafka settings change what the stream pods do, not what the model answers.
    assert _rev(_spec()) == _rev(make_spec()) == _rev(_spec(inputTopic="other", replicas=1))


# --- validation: the operator repeats the CEL rules (and checks the derived topic names) ---
@pytest.mark.parametrize("case", [c for c in STREAM_CASES if c.layer == "cel"], ids=lambda c: c.id)
def test_operator_rejects_what_cel_rejects(case: Any) -> None:
    with pytest.raises(InvalidSpecError):
        parse_spec(case.manifest()["spec"])


def test_derived_topic_names_may_not_collide() -> None:
    with pytest.raises(InvalidSpecError, match="deadLetterTopic"):
        parse_spec({**_spec().model_dump(by_alias=True), "stream": {**STREAM, "outputTopic": "accounts.dlq"}})


# --- spec.predictionLog on the REST pods ---
PLOG: dict[str, Any] = {
    "sampleRate": 0.25,
    "sink": "kafka",
    "kafka": {"bootstrapServers": "10.244.0.1:9092", "topic": "predictions"},
    "pii": {"drop": ["name"], "pseudonymise": ["email", "account_id"], "keep": ["plan"]},
    "hmacKeySecret": {"name": "predlog-key"},
}


def test_prediction_log_settings_and_key_on_the_rest_pods(owner: ModelDeploymentRef) -> None:
    from modeldeploy_contract.predlog_settings import PredictionLogSettings
    from modeldeploy_operator.domain.manifests import build_serving_deployment

    spec = make_spec(predictionLog=PLOG)
    variant = resolve_variants("churn", spec)[0]
    deployment = build_serving_deployment(
        owner, variant, image=IMAGE, replicas=2, prediction_log=spec.prediction_log
    )
    env = _env(deployment)
    assert env["MODELDEPLOY_PREDLOG_ENABLED"] == "true"
    assert env["MODELDEPLOY_PREDLOG_SAMPLE_RATE"] == "0.25"
    assert env["MODELDEPLOY_PREDLOG_PSEUDONYMISE"] == "email,account_id"
    assert env["MODELDEPLOY_PREDLOG_REVISION"] == variant.revision
    pod = deployment["spec"]["template"]["spec"]
    volume = next(v for v in pod["volumes"] if v["name"] == "prediction-log-key")
    assert volume["secret"]["items"] == [{"key": "hmac-key", "path": "hmac-key"}]
    assert env["MODELDEPLOY_PREDLOG_HMAC_KEY_FILE"] == "/var/run/secrets/modeldeploy/predlog/hmac-key"
    assert "secretKeyRef" not in json.dumps(deployment)
    # What the server reads back from its environment is what the operator meant.
    names = {k: v for k, v in env.items() if k.startswith("MODELDEPLOY_PREDLOG_")}
    import os

    saved = dict(os.environ)
    try:
        os.environ.update(names)
        read = PredictionLogSettings()
    finally:
        os.environ.clear()
        os.environ.update(saved)
    assert read.fields("pseudonymise") == ["email", "account_id"]
    assert (read.sink, read.kafka_topic, read.sample_rate) == ("kafka", "predictions", 0.25)


def test_the_prediction_log_is_not_part_of_the_revision() -> None:
    assert _rev(make_spec(predictionLog=PLOG)) == _rev(make_spec())


@pytest.mark.parametrize(
    ("plog", "message"),
    [
        ({**PLOG, "kafka": None}, "spec.predictionLog.kafka"),
        ({**PLOG, "pii": {"drop": ["email"], "keep": ["email"]}}, "two of drop"),
        ({**PLOG, "pii": {"keep": ["a,b"]}}, "not a field name"),
    ],
)
def test_operator_rejects_bad_prediction_logs(plog: dict[str, Any], message: str) -> None:
    raw = {k: v for k, v in plog.items() if v is not None}
    with pytest.raises(InvalidSpecError, match=message):
        parse_spec({"model": {"uri": "s3://m/v1", "format": "onnx", "version": "1"}, "predictionLog": raw})


def test_prediction_log_on_the_output_stream_pods_and_the_router_not_on_a_shadow(
    owner: ModelDeploymentRef,
) -> None:
    spec = make_spec(stream=STREAM, predictionLog=PLOG, traffic={"provider": "router"})
    stream = spec.stream
    assert stream is not None
    variant = resolve_variants("churn", spec)[0]

    def stream_pod(role: str) -> dict[str, Any]:
        revision = StreamRevision("default", variant.revision, role, 1)  # type: ignore[arg-type]
        return build_stream_deployment(
            owner, variant, stream, revision, image=IMAGE, prediction_log=spec.prediction_log
        )

    output = _env(stream_pod("output"))
    assert output["MODELDEPLOY_PREDLOG_ENABLED"] == "true"
    assert (output["MODELDEPLOY_PREDLOG_DEPLOYMENT"], output["MODELDEPLOY_PREDLOG_REVISION"]) == (
        "churn",
        variant.revision,
    )
    assert any(
        v["name"] == "prediction-log-key" for v in stream_pod("output")["spec"]["template"]["spec"]["volumes"]
    )
    shadow = stream_pod("shadow")
    assert not any(k.startswith("MODELDEPLOY_PREDLOG_") for k in _env(shadow))  # its outputs answer no one
    assert "prediction-log-key" not in json.dumps(shadow)

    manifests = desired_state(
        owner, spec, _plan(spec, (variant.revision, "stable", 2, True)), options=OPTIONS
    ).manifests
    router = next(
        m for m in manifests if m["kind"] == "Deployment" and m["metadata"]["name"] == "churn-router"
    )
    env = _env(router)
    assert env["MODELDEPLOY_PREDLOG_ENABLED"] == "true"
    assert env["MODELDEPLOY_PREDLOG_DEPLOYMENT"] == "churn"
    assert "MODELDEPLOY_PREDLOG_VARIANT" not in env  # per request: the arm the router chose
    assert env["MODELDEPLOY_PREDLOG_HMAC_KEY_FILE"] == "/var/run/secrets/modeldeploy/predlog/hmac-key"
    assert "secretKeyRef" not in json.dumps(router)


def _reads_key(pod: dict[str, Any]) -> bool:
    """Whether the pod's container user can read the HMAC key file, as the kubelet mounts a Secret:
    files owned by root, group the pod's fsGroup (when it has one), mode defaultMode; the process
    runs as runAsUser with runAsGroup, fsGroup and supplementalGroups."""
    (volume,) = [v for v in pod["volumes"] if v["name"] == "prediction-log-key"]
    mode = volume["secret"]["defaultMode"]
    security = pod["securityContext"]
    container = {**security, **pod["containers"][0].get("securityContext", {})}
    if container.get("runAsUser") == 0:
        return bool(mode & 0o400)
    group = security.get("fsGroup", 0)  # root's group without one
    groups = {container.get("runAsGroup"), security.get("fsGroup"), *security.get("supplementalGroups", [])}
    return bool(mode & 0o004) or (group in groups and bool(mode & 0o040))


def test_every_pod_that_logs_predictions_can_read_the_hmac_key(owner: ModelDeploymentRef) -> None:
    """The key is mounted 0440 (owner root, group the pod's fsGroup) and the pods run as a non-root
    user: a pod without an fsGroup cannot open it. The router's pods had none and crashed at start
    (PermissionError, CrashLoopBackOff) on the local cluster's real node, found by
    tests/e2e/test_prediction_log_pii_e2e.py; the processes of the integration tests ran as root."""
    from modeldeploy_operator.domain.manifests import build_serving_deployment

    spec = make_spec(stream=STREAM, predictionLog=PLOG, traffic={"provider": "router"})
    stream = spec.stream
    assert stream is not None
    variant = resolve_variants("churn", spec)[0]
    rest = build_serving_deployment(
        owner, variant, image=IMAGE, replicas=1, prediction_log=spec.prediction_log
    )
    output = build_stream_deployment(
        owner,
        variant,
        stream,
        StreamRevision("default", variant.revision, "output", 1),
        image=IMAGE,
        prediction_log=spec.prediction_log,
    )
    manifests = desired_state(
        owner, spec, _plan(spec, (variant.revision, "stable", 1, True)), options=OPTIONS
    ).manifests
    router = next(
        m for m in manifests if m["kind"] == "Deployment" and m["metadata"]["name"] == "churn-router"
    )
    for name, deployment in {"model server": rest, "output stream pod": output, "router": router}.items():
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert _reads_key(pod), name
    # Without the log the router's pods are as before: an operator upgrade restarts no router.
    plain = make_spec(traffic={"provider": "router"})
    plain_router = next(
        m
        for m in desired_state(
            owner,
            plain,
            _plan(plain, (resolve_variants("churn", plain)[0].revision, "stable", 1, True)),
            options=OPTIONS,
        ).manifests
        if m["kind"] == "Deployment" and m["metadata"]["name"] == "churn-router"
    )
    assert "fsGroup" not in plain_router["spec"]["template"]["spec"]["securityContext"]


def test_output_stream_pods_feed_the_joiner_a_shadow_does_not(owner: ModelDeploymentRef) -> None:
    spec = make_spec(stream=STREAM, effectiveness={"retention": "168h"})
    rev = _rev(spec)
    manifests = desired_state(
        owner, spec, _plan(spec, ("old", "stable", 2, False), (rev, "canary", 1, True)), options=OPTIONS
    ).manifests
    shadow = next(m for m in manifests if m["metadata"]["name"] == f"churn-default-{rev}-shadow")
    assert not any(k.startswith("MODELDEPLOY_FEED_") for k in _env(shadow))  # duplicates of the writer's ids

    promoted = desired_state(owner, spec, _plan(spec, (rev, "stable", 2, True)), options=OPTIONS).manifests
    output = _env(next(m for m in promoted if m["metadata"]["name"] == f"churn-default-{rev}-output"))
    feed = {k: v for k, v in output.items() if k.startswith("MODELDEPLOY_FEED_")}
    assert feed == {
        "MODELDEPLOY_FEED_URL": "http://churn-joiner:8090",
        "MODELDEPLOY_FEED_DEPLOYMENT": "churn",
        "MODELDEPLOY_FEED_VARIANT": "default",
        "MODELDEPLOY_FEED_REVISION": rev,
    }
    # the REST pods of the same revision get the same records' settings
    rest = _env(next(m for m in promoted if m["metadata"]["name"] == f"churn-default-{rev}"))
    assert {k: v for k, v in rest.items() if k.startswith("MODELDEPLOY_FEED_")} == feed

    without = desired_state(
        owner, _spec(), _plan(_spec(), (rev, "stable", 2, True)), options=OPTIONS
    ).manifests
    plain = next(m for m in without if m["metadata"]["name"] == f"churn-default-{rev}-output")
    assert not any(k.startswith("MODELDEPLOY_FEED_") for k in _env(plain))
