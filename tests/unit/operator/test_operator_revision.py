import pytest

from modeldeploy_operator.domain.revision import MODEL_CACHE_DIR, resolve_variants, revision_hash

from modeldeploy_builders import BASE_MODEL, make_spec


def _revision(**overrides: object) -> str:
    return resolve_variants("churn", make_spec(**overrides))[0].revision


def test_hash_is_short_stable_and_hex() -> None:
    first = _revision()
    assert first == _revision()
    assert len(first) == 10
    assert int(first, 16) >= 0


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("model", {**BASE_MODEL, "uri": "s3://models/churn/v2"}),
        ("model", {**BASE_MODEL, "version": "2"}),
        ("model", {**BASE_MODEL, "sha256": "c" * 64}),
        ("model", {**BASE_MODEL, "format": "xgboost"}),
        ("server", {"batching": {"enabled": False}}),
        ("server", {"maxBodyBytes": 2048}),
        ("server", {"workers": 2}),
        ("drift", {"windowRows": 500}),
    ],
)
def test_model_and_serving_changes_make_a_new_revision(field: str, value: object) -> None:
    assert _revision(**{field: value}) != _revision()


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("replicas", 7),
        ("resources", {"requests": {"cpu": "2"}}),
        ("rollout", {"strategy": "Canary", "steps": [{"setWeight": 10}]}),
        ("revisionHistoryLimit", 3),
        ("paused", True),
        ("server", {"workers": 1}),  # the default, spelled out
    ],
)
def test_scaling_and_rollout_changes_keep_the_revision(field: str, value: object) -> None:
    assert _revision(**{field: value}) == _revision()


def test_operator_environment_does_not_leak_into_server_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    clean = resolve_variants("churn", make_spec())[0]
    monkeypatch.setenv("MODELDEPLOY_SERVER_WORKERS", "7")
    monkeypatch.setenv("MODELDEPLOY_SERVER_LOG_LEVEL", "debug")
    leaked = resolve_variants("churn", make_spec())[0]
    assert leaked.settings == clean.settings
    assert leaked.revision == clean.revision


def test_settings_carry_the_spec() -> None:
    spec = make_spec(
        server={
            "workers": 3,
            "maxBodyBytes": 4096,
            "batching": {"enabled": True, "maxSize": 32, "maxWaitMs": 2},
        },
        drift={"windowRows": 200, "windowSeconds": 30, "enabled": False},
        model={**BASE_MODEL, "storage": {"s3EndpointURL": "http://minio:9000"}},
    )
    settings = resolve_variants("md", spec)[0].settings
    assert settings.model_name == "md"  # every arm serves under the ModelDeployment's name
    assert (settings.workers, settings.max_body_bytes) == (3, 4096)
    assert (settings.batching_enabled, settings.batch_max_size, settings.batch_max_wait_ms) == (True, 32, 2.0)
    assert (settings.drift_enabled, settings.drift_window_rows, settings.drift_window_seconds) == (
        False,
        200,
        30.0,
    )
    assert settings.model_cache_dir == MODEL_CACHE_DIR
    assert settings.s3_endpoint_url == "http://minio:9000"
    assert settings.model_sha256 == "b" * 64


def test_variants_inherit_spec_defaults_and_override_them() -> None:
    spec = make_spec(
        variants=[
            {"name": "a", "weight": 60},
            {"name": "b", "weight": 40, "replicas": 5, "model": {**BASE_MODEL, "version": "2"}},
        ],
        resources={"requests": {"cpu": "1"}},
    )
    a, b = resolve_variants("churn", spec)
    assert (a.replicas, a.model.version, a.resources.requests) == (2, "1", {"cpu": "1"})
    assert (b.replicas, b.model.version) == (5, "2")
    assert a.revision != b.revision


def test_implicit_default_variant_takes_all_traffic() -> None:
    (only,) = resolve_variants("churn", make_spec())
    assert (only.name, only.weight) == ("default", 100)


def test_autoscaling_leaves_replicas_to_the_hpa() -> None:
    spec = make_spec(replicas=None, autoscaling={"minReplicas": 2, "maxReplicas": 4})
    assert resolve_variants("churn", spec)[0].replicas is None


def test_hash_ignores_fields_at_their_default() -> None:
    variant = resolve_variants("churn", make_spec())[0]
    explicit = variant.settings.model_copy(update={"workers": 1})
    assert revision_hash(variant.model, explicit) == variant.revision
