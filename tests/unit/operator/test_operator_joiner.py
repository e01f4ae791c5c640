"""spec.effectiveness (issue 15): the label joiner's Deployment and Service, the model servers' feed
variables, the router's feedback target and the effectiveness check's default joiner. Pure builders,
table tests."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from modeldeploy_contract.joiner_settings import JoinerFeedSettings, JoinerSettings, joiner_service_name
from modeldeploy_contract.router_config import RouterConfig
from modeldeploy_contract.server_settings import ServerSettings
from modeldeploy_operator.analysis import AddressPolicy, AnalysisTarget
from modeldeploy_operator.analysis.effectiveness import JoinerReader
from modeldeploy_operator.domain.desired_state import BuildOptions, desired_state
from modeldeploy_operator.domain.joiner import (
    build_joiner_deployment,
    joiner_address,
    joiner_env,
    joiner_name,
    own_joiner,
    with_own_joiner,
)
from modeldeploy_operator.domain.observed import ObservedDeployment
from modeldeploy_operator.domain.resource import ModelDeploymentRef
from modeldeploy_operator.domain.revision import resolve_variants
from modeldeploy_operator.domain.rollout.planner import plan
from modeldeploy_operator.domain.spec import Analysis, Check, Effectiveness, JoinerSource, ModelDeploymentSpec
from modeldeploy_operator.domain.validation import InvalidSpecError, parse_spec, validate_spec

from modeldeploy_crd_cases import EFFECTIVENESS_CASES

OWNER = ModelDeploymentRef(name="churn", namespace="ml", uid="uid-1")
IMAGE = "registry.example/modeldeploy/serving:0.1.0"
OPTIONS = BuildOptions(serving_image=IMAGE, router_image=IMAGE)
NOW = dt.datetime(2026, 12, 2, 12, 0, tzinfo=dt.UTC)
MODEL = {"uri": "s3://models/churn/v1", "format": "onnx", "version": "1"}


def spec_of(**raw: Any) -> ModelDeploymentSpec:
    return parse_spec({"model": MODEL, "replicas": 1, **raw})


def manifests(spec: ModelDeploymentSpec) -> dict[tuple[str, str], dict[str, Any]]:
    (variant,) = resolve_variants("churn", spec)
    seen = [
        ObservedDeployment(
            name=f"churn-default-{variant.revision}",
            variant="default",
            revision=variant.revision,
            replicas=1,
            ready_replicas=1,
            updated_replicas=1,
            available_replicas=1,
            generation=1,
            observed_generation=1,
        )
    ]
    decided = plan("churn", spec, seen, (), NOW, None)
    state = desired_state(OWNER, spec, decided, options=OPTIONS)
    return {(m["kind"], m["metadata"]["name"]): m for m in state.manifests}


def env_of(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container["env"]}


def serving(objects: dict[tuple[str, str], dict[str, Any]]) -> dict[str, Any]:
    (deployment,) = [
        m for (kind, name), m in objects.items() if kind == "Deployment" and name.startswith("churn-default-")
    ]
    return deployment


def test_without_effectiveness_nothing_changes() -> None:
    objects = manifests(spec_of())
    assert ("Deployment", "churn-joiner") not in objects
    assert not any(
        k.startswith("MODELDEPLOY_FEED_")
        for k in env_of(serving(objects)["spec"]["template"]["spec"]["containers"][0])
    )
    table = RouterConfig.from_json(objects[("ConfigMap", "churn-router")]["data"]["router.json"])
    assert table.feedback is None


@pytest.mark.parametrize("raw", [{"enabled": False}], ids=["disabled"])
def test_a_disabled_block_builds_nothing(raw: dict[str, Any]) -> None:
    objects = manifests(spec_of(effectiveness=raw))
    assert ("Deployment", "churn-joiner") not in objects
    assert ("Service", "churn-joiner") not in objects


def test_enabled_builds_the_joiner_owned_by_the_model_deployment() -> None:
    objects = manifests(spec_of(effectiveness={}))
    deployment = objects[("Deployment", "churn-joiner")]
    service = objects[("Service", "churn-joiner")]
    for obj in (deployment, service):
        assert obj["metadata"]["ownerReferences"] == [OWNER.owner_reference()]
        assert obj["metadata"]["namespace"] == "ml"
    spec = deployment["spec"]
    assert (spec["replicas"], spec["strategy"]) == (1, {"type": "Recreate"})
    pod = spec["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == IMAGE
    assert container["command"] == ["modeldeploy", "joiner"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["automountServiceAccountToken"] is False
    assert service["spec"]["selector"] == spec["selector"]["matchLabels"]
    assert spec["selector"]["matchLabels"].items() <= spec["template"]["metadata"]["labels"].items()
    assert service["spec"]["ports"][0]["port"] == 8090
    # The joiner's pods are never mistaken for a revision's or the router's.
    labels = spec["template"]["metadata"]["labels"]
    assert labels["app.kubernetes.io/component"] == "joiner"
    assert "modeldeploy.io/revision" not in labels


STORES: list[tuple[str, dict[str, Any], dict[str, Any], dict[str, str]]] = [
    (
        "sqlite-emptydir",
        {},
        {"name": "joiner-data", "emptyDir": {"sizeLimit": "1Gi"}},
        {"MODELDEPLOY_JOINER_DATABASE": "sqlite:////var/lib/modeldeploy-joiner/joiner.db"},
    ),
    (
        "sqlite-claim",
        {"persistentVolumeClaim": "joiner-data-churn"},
        {"name": "joiner-data", "persistentVolumeClaim": {"claimName": "joiner-data-churn"}},
        {"MODELDEPLOY_JOINER_DATABASE": "sqlite:////var/lib/modeldeploy-joiner/joiner.db"},
    ),
    (
        "postgres",
        {"type": "postgres", "postgresSecret": {"name": "joiner-pg"}},
        {
            "name": "joiner-database",
            "secret": {
                "secretName": "joiner-pg",
                "items": [{"key": "dsn", "path": "dsn"}],
                "defaultMode": 0o440,
            },
        },
        {"MODELDEPLOY_JOINER_DATABASE_FILE": "/var/run/secrets/modeldeploy/joiner/dsn"},
    ),
]


@pytest.mark.parametrize(("store", "volume", "env"), [s[1:] for s in STORES], ids=[s[0] for s in STORES])
def test_the_store_decides_volume_and_database(
    store: dict[str, Any], volume: dict[str, Any], env: dict[str, str]
) -> None:
    effectiveness = Effectiveness.model_validate({"store": store})
    deployment = build_joiner_deployment(OWNER, effectiveness, image=IMAGE)
    pod = deployment["spec"]["template"]["spec"]
    assert volume in pod["volumes"]
    got = env_of(pod["containers"][0])
    assert env.items() <= got.items()
    # One of the two ways only: a DSN file never with a SQLite URL, nor the other way round.
    assert ("MODELDEPLOY_JOINER_DATABASE" in got) != ("MODELDEPLOY_JOINER_DATABASE_FILE" in got)
    mounts = {m["name"] for m in pod["containers"][0]["volumeMounts"]}
    assert volume["name"] in mounts


def test_the_joiner_env_is_what_joiner_settings_read(monkeypatch: pytest.MonkeyPatch) -> None:
    effectiveness = Effectiveness.model_validate(
        {"retention": "168h", "controlVariant": "control", "minLabelsPerArm": 2000}
    )
    for key, value in joiner_env(effectiveness).items():
        monkeypatch.setenv(key, value)
    settings = JoinerSettings()
    assert settings.retention_seconds == 7 * 86400
    assert settings.control_variant == "control"
    assert settings.ab.min_labels_per_arm == 2000
    assert settings.port == 8090


def test_servers_get_the_feed_and_keep_their_revision() -> None:
    without = manifests(spec_of())
    with_joiner = manifests(spec_of(effectiveness={}))
    before, after = serving(without), serving(with_joiner)
    # Same name (the revision) and the same pod template but for the feed variables: no rollout.
    assert before["metadata"]["name"] == after["metadata"]["name"]
    revision = after["metadata"]["labels"]["modeldeploy.io/revision"]
    env = env_of(after["spec"]["template"]["spec"]["containers"][0])
    feed = {k: v for k, v in env.items() if k.startswith("MODELDEPLOY_FEED_")}
    assert feed == {
        "MODELDEPLOY_FEED_URL": "http://churn-joiner:8090",
        "MODELDEPLOY_FEED_DEPLOYMENT": "churn",
        "MODELDEPLOY_FEED_VARIANT": "default",
        "MODELDEPLOY_FEED_REVISION": revision,
    }
    rest = {k: v for k, v in env.items() if k not in feed}
    assert rest == env_of(before["spec"]["template"]["spec"]["containers"][0])


def test_feed_variables_round_trip(monkeypatch: pytest.MonkeyPatch) -> None:
    env = env_of(serving(manifests(spec_of(effectiveness={})))["spec"]["template"]["spec"]["containers"][0])
    for key, value in env.items():
        if key.startswith("MODELDEPLOY_FEED_"):
            monkeypatch.setenv(key, value)
    settings = JoinerFeedSettings()
    assert settings.enabled
    assert settings.deployment == "churn"


STOP_HEADROOM_SECONDS = 5
"""Room left in the grace period for the rest of a stop: the data plane's and the interpreter's."""


def test_a_stopping_server_drains_and_sends_its_feed_within_the_grace_period(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Issue 15: on SIGTERM a server first drains its requests (drain_seconds), then the feed sends
    what it holds (shutdown_seconds); both must end before the kubelet's SIGKILL, or the records the
    feed would have counted lost_at_shutdown vanish uncounted."""
    pod = serving(manifests(spec_of(effectiveness={})))["spec"]["template"]["spec"]
    for key, value in env_of(pod["containers"][0]).items():
        monkeypatch.setenv(key, value)
    drain = ServerSettings().drain_seconds
    feed = JoinerFeedSettings().shutdown_seconds
    assert feed > 0
    assert drain + feed + STOP_HEADROOM_SECONDS <= pod["terminationGracePeriodSeconds"]
    assert "lifecycle" not in pod["containers"][0]  # no preStop hook takes a share of the grace period


def test_the_router_table_names_the_joiner_for_feedback() -> None:
    objects = manifests(spec_of(effectiveness={}))
    table = RouterConfig.from_json(objects[("ConfigMap", "churn-router")]["data"]["router.json"])
    assert table.feedback is not None
    assert table.feedback.address == "churn-joiner:8090"


CHECK = Check.model_validate({"name": "auc", "type": "effectiveness", "threshold": {"min": -0.005}})


def test_effectiveness_checks_default_to_the_own_joiner() -> None:
    analysis = Analysis.model_validate({"checks": [CHECK.model_dump(by_alias=True, exclude_none=True)]})
    spec = spec_of(effectiveness={})
    own = with_own_joiner(analysis, OWNER, spec)
    assert own.joiner == JoinerSource(address="http://churn-joiner.ml.svc:8090")
    assert own_joiner(OWNER, spec) == joiner_address(OWNER)
    # A joiner named in the spec wins; without effectiveness nothing is filled in.
    named = analysis.model_copy(update={"joiner": JoinerSource(address="http://elsewhere:8090")})
    assert with_own_joiner(named, OWNER, spec) is named
    assert with_own_joiner(analysis, OWNER, spec_of()).joiner is None
    assert own_joiner(OWNER, spec_of()) is None


def test_the_own_joiner_needs_no_allow_list_entry_but_others_still_do() -> None:
    reader = JoinerReader(AddressPolicy(what="joiner"), client_factory=_refuse_network)
    target = AnalysisTarget("ml", "churn", "default", "new", "old", own_joiner=joiner_address(OWNER))
    (own,) = reader.read([CHECK], JoinerSource(address=joiner_address(OWNER)), target, NOW)
    assert "disabled" not in own.detail  # it was fetched (and failed here: no network in unit tests)
    assert "connection refused" in own.detail
    (other,) = reader.read([CHECK], JoinerSource(address="http://169.254.169.254"), target, NOW)
    assert "joiner checks are disabled" in other.detail


def _refuse_network() -> Any:
    import httpx

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("no network", request=request)

    return httpx.Client(transport=httpx.MockTransport(refuse))


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"store": {"type": "postgres"}}, "spec.effectiveness.store.postgresSecret: required"),
        (
            {"store": {"type": "postgres", "postgresSecret": {"name": "pg"}, "persistentVolumeClaim": "d"}},
            "spec.effectiveness.store.persistentVolumeClaim: only for store.type sqlite",
        ),
        ({"store": {"sizeLimit": "lots"}}, "spec.effectiveness.store.sizeLimit: 'lots' is not a quantity"),
        ({"retention": "0s"}, "spec.effectiveness.retention: '0s' must be longer than 0s"),
        (
            {"controlVariant": "control"},
            "spec.effectiveness.controlVariant: 'control' is not a variant (default)",
        ),
        ({"resources": {"requests": {"cpu": "lots"}}}, "spec.effectiveness.resources.requests.cpu"),
    ],
)
def test_bad_effectiveness_specs_are_explained(raw: dict[str, Any], message: str) -> None:
    problems = validate_spec(ModelDeploymentSpec.model_validate({"model": MODEL, "effectiveness": raw}))
    assert any(p.startswith(message) for p in problems), problems


def test_the_plugin_and_the_operator_name_the_joiner_alike() -> None:
    # The plugin reads the joiner through the contract's name; the CRD caps names at 40 characters.
    for name in ("churn", "a" * 40):
        assert joiner_service_name(name) == joiner_name(name)


def test_the_joiner_takes_the_serving_pods_pull_secrets_and_placement_only() -> None:
    pods = {
        "serving": {
            "imagePullSecrets": [{"name": "registry-creds"}],
            "nodeSelector": {"pool": "models"},
            "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "models"}],
            "env": [{"name": "OMP_NUM_THREADS", "value": "1"}],
            "serviceAccountName": "churn-serving",
        }
    }
    pod = manifests(spec_of(effectiveness={}, pods=pods))[("Deployment", "churn-joiner")]["spec"]["template"][
        "spec"
    ]
    assert pod["imagePullSecrets"] == [{"name": "registry-creds"}]
    assert pod["nodeSelector"] == {"pool": "models"}
    assert pod["tolerations"][0]["key"] == "dedicated"
    assert "serviceAccountName" not in pod
    assert "OMP_NUM_THREADS" not in env_of(pod["containers"][0])


# --- spec.effectiveness.labels.kafka: labels from a topic (stream mode's connection handling) ---
def _kafka_joiner(**kafka: Any) -> dict[str, Any]:
    raw = {"bootstrapServers": "10.244.0.1:9092", "topic": "churn-labels", **kafka}
    return manifests(spec_of(effectiveness={"labels": {"kafka": raw}}))[("Deployment", "churn-joiner")]


LABEL_TOPICS: list[tuple[str, dict[str, Any], dict[str, str], list[str]]] = [
    (
        "plaintext",
        {},
        {
            "MODELDEPLOY_LABELS_BOOTSTRAP_SERVERS": "10.244.0.1:9092",
            "MODELDEPLOY_LABELS_TOPIC": "churn-labels",
            "MODELDEPLOY_LABELS_GROUP_ID": "modeldeploy-ml-churn-labels",
        },
        [],
    ),
    (
        "sasl-ssl-own-group",
        {"securityProtocol": "SASL_SSL", "saslMechanism": "SCRAM-SHA-512", "secretName": "kafka",
         "consumerGroup": "churn.labels"},
        {
            "MODELDEPLOY_LABELS_GROUP_ID": "churn.labels",
            "MODELDEPLOY_LABELS_SECURITY_PROTOCOL": "SASL_SSL",
            "MODELDEPLOY_LABELS_SASL_MECHANISM": "SCRAM-SHA-512",
            "MODELDEPLOY_LABELS_SSL_CA_FILE": "/var/run/secrets/modeldeploy/kafka/ca.crt",
            "MODELDEPLOY_LABELS_SASL_USERNAME_FILE": "/var/run/secrets/modeldeploy/kafka/username",
            "MODELDEPLOY_LABELS_SASL_PASSWORD_FILE": "/var/run/secrets/modeldeploy/kafka/password",
        },
        ["ca.crt", "username", "password"],
    ),
    (
        "mutual-tls",
        {"securityProtocol": "SSL", "secretName": "kafka", "clientCertificate": True},
        {
            "MODELDEPLOY_LABELS_SSL_CERT_FILE": "/var/run/secrets/modeldeploy/kafka/tls.crt",
            "MODELDEPLOY_LABELS_SSL_KEY_FILE": "/var/run/secrets/modeldeploy/kafka/tls.key",
        },
        ["ca.crt", "tls.crt", "tls.key"],
    ),
]  # fmt: skip


@pytest.mark.parametrize(
    ("kafka", "env", "keys"), [c[1:] for c in LABEL_TOPICS], ids=[c[0] for c in LABEL_TOPICS]
)
def test_a_label_topic_gives_the_joiner_its_kafka_settings_and_secret_files(
    kafka: dict[str, Any], env: dict[str, str], keys: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    deployment = _kafka_joiner(**kafka)
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    got = env_of(container)
    assert env.items() <= got.items()
    assert not any("PASSWORD=" in v or k.endswith("_PASSWORD") for k, v in got.items())  # files only
    volumes = [v for v in pod["volumes"] if v["name"] == "kafka-credentials"]
    if keys:
        assert [i["key"] for i in volumes[0]["secret"]["items"]] == keys
        assert volumes[0]["secret"]["secretName"] == "kafka"
        assert {
            "name": "kafka-credentials",
            "mountPath": "/var/run/secrets/modeldeploy/kafka",
            "readOnly": True,
        } in (container["volumeMounts"])
    else:
        assert volumes == []
    # what the operator writes is what the joiner reads back
    from modeldeploy_contract.stream_settings import label_topic_settings

    for key, value in got.items():
        monkeypatch.setenv(key, value)
    settings = label_topic_settings()
    assert settings is not None
    assert settings.to_env().items() <= got.items()
    assert settings.topic == "churn-labels"


def test_without_a_label_topic_the_joiner_consumes_none(monkeypatch: pytest.MonkeyPatch) -> None:
    deployment = manifests(spec_of(effectiveness={}))[("Deployment", "churn-joiner")]
    env = env_of(deployment["spec"]["template"]["spec"]["containers"][0])
    assert not any(k.startswith("MODELDEPLOY_LABELS_") for k in env)
    monkeypatch.delenv("MODELDEPLOY_LABELS_TOPIC", raising=False)
    from modeldeploy_contract.stream_settings import label_topic_settings

    assert label_topic_settings() is None


@pytest.mark.parametrize(
    "case", [c for c in EFFECTIVENESS_CASES if c.id.startswith("labels-kafka-") and c.layer == "cel"],
    ids=lambda c: c.id,
)  # fmt: skip
def test_the_operator_rejects_label_topics_cel_rejects(case: Any) -> None:
    with pytest.raises(InvalidSpecError, match=r"spec\.effectiveness\.labels\.kafka"):
        parse_spec(case.manifest()["spec"])
