import pytest

from modeldeploy_operator.config import OperatorSettings


def test_defaults_point_at_the_versioned_images() -> None:
    settings = OperatorSettings()
    assert settings.serving_image == "ghcr.io/modeldeploy/serving:0.1.0"
    assert settings.cluster_wide
    assert settings.field_manager == "modeldeploy-operator"
    assert (settings.health_port, settings.metrics_port) == (8081, 9090)


def test_environment_configures_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELDEPLOY_OPERATOR_NAMESPACES", "ml, ml2,")
    monkeypatch.setenv("MODELDEPLOY_OPERATOR_SERVING_IMAGE", "kind.local/serving:dev")
    monkeypatch.setenv("MODELDEPLOY_OPERATOR_LEADER_ELECTION", "false")
    settings = OperatorSettings()
    assert settings.namespaces == ("ml", "ml2")
    assert not settings.cluster_wide
    assert settings.serving_image == "kind.local/serving:dev"
    assert settings.leader_election is False


def test_empty_namespaces_means_cluster_wide(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELDEPLOY_OPERATOR_NAMESPACES", "")
    assert OperatorSettings().cluster_wide
