"""tests/support/built_cache.py: one build per (name, arguments, sources), shared by concurrent
processes, never seen half-made, bounded in number."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest

import built_cache


def _build_counting(folder: Path) -> None:
    marker = Path(folder).parent / "builds.log"
    with marker.open("a") as handle:
        handle.write("built\n")
    (Path(folder) / "model.bin").write_bytes(b"x" * 1000)


def _worker(cache: str) -> str:
    import os

    os.environ["MODELDEPLOY_CACHE"] = cache
    return str(built_cache.cached_build("thing", ["--rows", "10"], _build_counting))


def test_concurrent_callers_share_one_complete_build(tmp_path: Path) -> None:
    with multiprocessing.get_context("spawn").Pool(3) as pool:
        folders = pool.map(_worker, [str(tmp_path)] * 6)
    assert len(set(folders)) == 1
    assert (tmp_path / "test-builds" / "builds.log").read_text() == "built\n"
    assert (Path(folders[0]) / "model.bin").stat().st_size == 1000
    assert (Path(folders[0]) / ".complete").is_file()
    assert not [
        p for p in (tmp_path / "test-builds").iterdir() if p.name.startswith(".thing-") and p.is_dir()
    ]


def test_other_arguments_build_again_and_old_builds_are_pruned(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MODELDEPLOY_CACHE", str(tmp_path))
    folders = [built_cache.cached_build("thing", [n], _build_counting) for n in range(5)]
    assert len(set(folders)) == 5
    kept = sorted(p for p in (tmp_path / "test-builds").glob("thing-*"))
    assert len(kept) == 3  # the newest three
    assert folders[-1] in kept
    # Another name's builds are not pruned by this one's.
    other = built_cache.cached_build("thing-b", [0], _build_counting)
    assert other.is_dir()
    assert len(list((tmp_path / "test-builds").glob("thing-*"))) == 4


def test_a_failed_build_leaves_nothing_and_is_tried_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MODELDEPLOY_CACHE", str(tmp_path))

    def fails(folder: Path) -> None:
        (folder / "half").write_text("half")
        raise RuntimeError("training failed")

    with pytest.raises(RuntimeError):
        built_cache.cached_build("thing", [], fails)
    assert not [p for p in (tmp_path / "test-builds").glob("*thing-*") if p.is_dir()]  # nor a staging one
    folder = built_cache.cached_build("thing", [], _build_counting)
    assert not (folder / "half").exists()
