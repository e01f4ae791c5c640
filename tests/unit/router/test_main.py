"""The entry point: flags over environment, and refusing to start without a table source."""

from __future__ import annotations

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
