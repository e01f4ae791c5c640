"""The entry point: flags over environment, and refusing to start without a table source."""

from __future__ import annotations

from pathlib import Path

import pytest

from modeldeploy_serving.router.main import _parse, build_app


def test_flags_override_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELDEPLOY_ROUTER_PORT", "9000")
    monkeypatch.setenv("MODELDEPLOY_ROUTER_CONFIG_MAP", "churn-router")
    settings = _parse(["--port", "9100", "--namespace", "shop"])
    assert (settings.port, settings.namespace, settings.config_map) == (9100, "shop", "churn-router")


def test_no_table_source_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(SystemExit, match="config file"):
        build_app(_parse(["--config-map", "churn-router"]))  # a ConfigMap needs a cluster


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"MODELDEPLOY_PREDLOG_ENABLED": "true"}, "hmac_key_file"),
        ({"MODELDEPLOY_PREDLOG_ENABLED": "true", "MODELDEPLOY_PREDLOG_HMAC_KEY_FILE": "{key}",
          "MODELDEPLOY_PREDLOG_SINK": "kafka"}, "kafka_bootstrap_servers"),
        ({"MODELDEPLOY_PREDLOG_ENABLED": "true", "MODELDEPLOY_PREDLOG_HMAC_KEY_FILE": "{key}",
          "MODELDEPLOY_PREDLOG_SAMPLE_RATE": "1.5"}, "sample_rate"),
        ({"MODELDEPLOY_PREDLOG_ENABLED": "true", "MODELDEPLOY_PREDLOG_HMAC_KEY_FILE": "{short}"}, "16 bytes"),
        ({"MODELDEPLOY_PREDLOG_ENABLED": "true", "MODELDEPLOY_PREDLOG_HMAC_KEY_FILE": "{key}",
          "MODELDEPLOY_PREDLOG_KEEP": "email", "MODELDEPLOY_PREDLOG_DROP": "email"}, "two actions"),
    ],
)  # fmt: skip
def test_a_bad_prediction_log_setting_stops_the_router_at_start(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, env: dict[str, str], message: str
) -> None:
    """The router reads the model servers' MODELDEPLOY_PREDLOG_* settings: a bad one is refused at
    start-up with its name, never a router that silently logs nothing (or everything)."""
    from pydantic import ValidationError

    from modeldeploy_serving.predlog import PolicyError

    key, short = tmp_path / "key", tmp_path / "short"
    key.write_text("a-key-from-a-Secret-0123456789")
    short.write_text("short")
    config = tmp_path / "router.json"
    config.write_text("{}")
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value.format(key=key, short=short))
    with pytest.raises((ValidationError, PolicyError), match=message):
        build_app(_parse(["--config-file", str(config)]))
