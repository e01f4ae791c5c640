"""The order of the cluster tests that restart it: after every other cluster test, and the ones that wipe
it after the ones that keep its data (a CI run, 2026-12-03, ran the etcd-restart test after a teardown
and found its CRD gone)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from modeldeploy_testcluster.pytest_plugin import awaited, restart_level


@dataclass
class Item:
    nodeid: str
    markers: dict[str, pytest.Mark] = field(default_factory=dict)
    fixturenames: tuple[str, ...] = ("local_cluster",)

    def get_closest_marker(self, name: str) -> pytest.Mark | None:
        return self.markers.get(name)


def restarting(nodeid: str, **kwargs: Any) -> Item:
    return Item(nodeid, {"restarts_cluster": pytest.mark.restarts_cluster(**kwargs).mark})


PLAIN = Item("plain")
NOT_CLUSTER = Item("unit", fixturenames=())
KEEPS = restarting("etcd")
WIPES = restarting("down", wipes=True)
ITEMS: list[Any] = [PLAIN, NOT_CLUSTER, KEEPS, WIPES]


@pytest.mark.parametrize(
    ("test", "level"), [(PLAIN, 0), (KEEPS, 1), (restarting("explicit", wipes=False), 1), (WIPES, 2)]
)
def test_restart_level(test: Any, level: int) -> None:
    assert restart_level(test) == level


def test_a_restart_that_keeps_the_data_runs_after_the_plain_cluster_tests_only() -> None:
    assert awaited(ITEMS, restart_level(KEEPS)) == {"plain"}  # type: ignore[arg-type]


def test_a_teardown_runs_after_the_restarts_that_keep_the_data_too() -> None:
    assert awaited(ITEMS, restart_level(WIPES)) == {"plain", "etcd"}  # type: ignore[arg-type]
