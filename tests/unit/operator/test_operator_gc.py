"""The garbage collector at N = 1,000 (issue 16, the reaction tail): each collection's generation and
pause, from gc.callbacks' start and stop (a fake clock), and what survives a full collection frozen
(main.py `FreezeAfterFullCollection`), handed back by `unfreeze`."""

from __future__ import annotations

import gc

from modeldeploy_operator.main import FreezeAfterFullCollection
from modeldeploy_operator.metrics import GcPauses


class Ticks:
    def __init__(self, *values: float) -> None:
        self.values = list(values)

    def __call__(self) -> float:
        return self.values.pop(0)


def test_each_collection_is_observed_with_its_generation_and_duration() -> None:
    seen: list[tuple[int, float]] = []
    pauses = GcPauses(
        lambda generation, seconds: seen.append((generation, seconds)), Ticks(1.0, 1.25, 5.0, 5.5)
    )
    pauses("start", {"generation": 2})
    pauses("stop", {"generation": 2, "collected": 10, "uncollectable": 0})
    pauses("start", {"generation": 0})
    pauses("stop", {"generation": 0, "collected": 0, "uncollectable": 0})
    assert seen == [(2, 0.25), (0, 0.5)]


def test_a_stop_without_its_start_is_not_observed() -> None:
    seen: list[tuple[int, float]] = []
    pauses = GcPauses(lambda generation, seconds: seen.append((generation, seconds)), Ticks(1.0))
    pauses("stop", {"generation": 1})  # installed during a collection
    assert seen == []


def test_installed_once_and_called_by_a_real_collection() -> None:
    seen: list[tuple[int, float]] = []
    pauses = GcPauses(lambda generation, seconds: seen.append((generation, seconds)))
    try:
        pauses.install()
        pauses.install()
        assert gc.callbacks.count(pauses) == 1
        gc.collect(1)
    finally:
        gc.callbacks.remove(pauses)
    assert [generation for generation, _ in seen] == [1]
    assert seen[0][1] >= 0


def test_only_a_full_collection_freezes_and_unfreeze_hands_back() -> None:
    calls: list[str] = []
    freezer = FreezeAfterFullCollection(lambda: calls.append("freeze"), lambda: calls.append("unfreeze"))
    for generation in (0, 1):
        freezer("start", {"generation": generation})
        freezer("stop", {"generation": generation, "collected": 0, "uncollectable": 0})
    assert calls == []
    freezer("start", {"generation": 2})
    assert calls == []  # not before the collection is done
    freezer("stop", {"generation": 2, "collected": 0, "uncollectable": 0})
    assert calls == ["freeze"]
    freezer.unfreeze()
    assert calls == ["freeze", "unfreeze"]


def test_what_survives_a_real_full_collection_is_frozen_and_still_freed_by_reference_counting() -> None:
    freezer = FreezeAfterFullCollection()
    kept = [{"metadata": {"name": f"m{i}"}} for i in range(1000)]
    try:
        freezer.install()
        freezer.install()
        assert gc.callbacks.count(freezer) == 1
        gc.collect()
        frozen = gc.get_freeze_count()
        assert frozen > len(kept)
        assert gc.is_tracked(kept[0])
        kept.clear()  # dropped after the freeze: reference counting frees them, frozen or not
        assert gc.get_freeze_count() <= frozen - 1000
    finally:
        gc.callbacks.remove(freezer)
        gc.unfreeze()
    assert gc.get_freeze_count() == 0
