"""The RouterConfig contract: parsing, validation, JSON round trip, process settings."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from modeldeploy_contract.router_config import (
    CONFIG_KEY,
    RouterConfig,
    RouterSettings,
    config_map_name,
)

EXAMPLE = {
    "deployment": {"namespace": "shop", "name": "churn"},
    "generation": 7,
    "arms": [
        {
            "variant": "default",
            "revision": "r2",
            "weight_bp": 1000,
            "service": "churn-r2",
            "model_name": "churn",
        },
        {
            "variant": "default",
            "revision": "r1",
            "weight_bp": 9000,
            "service": "churn-r1",
            "model_name": "churn",
        },
        {
            "variant": "default",
            "revision": "r3",
            "weight_bp": 0,
            "service": "churn-r3",
            "model_name": "churn",
        },
    ],
    "sticky": {"header": "X-User-Id", "body_field": "customer_id"},
    "shadow": {"variant": "default", "revision": "r3", "percent": 5},
}


def test_example_parses_with_defaults() -> None:
    config = RouterConfig.model_validate(EXAMPLE)
    assert config.schema_version == "modeldeploy.io/router/v2"
    assert [a.arm_id for a in config.arms] == ["default/r2", "default/r1", "default/r3"]
    assert config.when_arm_unavailable == "redistribute"
    assert config.timeouts.request_seconds == 30.0
    assert config.retry.on_connect_error is True
    assert config.shadow is not None
    assert config.shadow.max_in_flight == 64


def test_json_round_trip() -> None:
    config = RouterConfig.model_validate(EXAMPLE)
    assert RouterConfig.from_json(config.to_json()) == config
    assert RouterConfig.from_json(config.to_json().encode()) == config


def test_config_map_convention() -> None:
    assert config_map_name("churn") == "churn-router"
    assert CONFIG_KEY == "router.json"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"arms": [{**EXAMPLE["arms"][0], "weight_bp": 5000}, EXAMPLE["arms"][1]]}, "sum to 14000 bp"),  # type: ignore[index]
        ({"arms": [EXAMPLE["arms"][1], EXAMPLE["arms"][1]]}, "duplicate arms"),  # type: ignore[index]
        ({"shadow": {"variant": "default", "revision": "nope", "percent": 5}}, "not in arms"),
        ({"arms": [{"variant": "v", "revision": "r", "weight_bp": 10000, "model_name": "m"}]}, "service"),
        (
            {
                "arms": [
                    {
                        "variant": "v",
                        "revision": "r",
                        "weight_bp": 10000,
                        "model_name": "m",
                        "endpoints": ["x"],
                    }
                ]
            },
            "host:port",
        ),
        ({"arms": []}, "at least 1"),
        ({"when_arm_unavailable": "drop"}, "redistribute"),
        ({"surprise": 1}, "Extra inputs"),
        # v1 tables (float percents) are refused, not misread as basis points
        ({"schema_version": "modeldeploy.io/router/v1"}, "schema_version"),
        ({"arms": [{**EXAMPLE["arms"][1], "weight_bp": 9000.5}, EXAMPLE["arms"][0]]}, "weight_bp"),  # type: ignore[index]
        ({"slots": "1:1000,0:9000"}, "default/r2 owns 9000 slots, weight 1000"),
        ({"slots": "0:1000,1:8999"}, "cover 9999 slots"),
        ({"slots": "0:1000,3:9000"}, "out of range"),
        ({"slots": "0:1000;1:9000"}, "is not <arm index>:<length>"),
        ({"slots": "0:1000,1:9000,2:1"}, "more than 10000"),
        ({"slots": "0:0,0:1000,1:9000"}, "empty run"),
    ],
)
def test_invalid_tables_are_refused(change: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        RouterConfig.model_validate({**EXAMPLE, **change})


def test_weights_in_basis_points_down_to_one() -> None:
    arms = [
        {"variant": v, "revision": "r1", "weight_bp": w, "endpoints": ["127.0.0.1:1"], "model_name": "m"}
        for v, w in (("a", 3333), ("b", 3333), ("c", 3333), ("d", 1))
    ]
    config = RouterConfig.model_validate({**EXAMPLE, "arms": arms, "shadow": None})
    assert [a.weight_bp for a in config.arms] == [3333, 3333, 3333, 1]


def test_slots_are_the_table_or_the_initial_layout() -> None:
    without = RouterConfig.model_validate(EXAMPLE)
    assert without.slots is None
    slots = without.slot_arms()
    assert len(slots) == 10_000
    assert slots == (0,) * 1000 + (1,) * 9000  # contiguous, in arm order
    given = RouterConfig.model_validate({**EXAMPLE, "slots": "1:4500,0:1000,1:4500"})
    assert given.slot_arms() == (1,) * 4500 + (0,) * 1000 + (1,) * 4500
    assert RouterConfig.from_json(given.to_json()) == given


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELDEPLOY_ROUTER_CONFIG_MAP", "churn-router")
    monkeypatch.setenv("MODELDEPLOY_ROUTER_PORT", "9090")
    settings = RouterSettings()
    assert (settings.config_map, settings.config_key, settings.port) == ("churn-router", "router.json", 9090)
