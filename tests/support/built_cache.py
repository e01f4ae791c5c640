"""Models the tests train, made once per machine and inputs instead of once per test process.

The churn example's training is deterministic for a seed (`test_churn_example_script_makes_three_bundles`
checks byte-identical models), so a folder built from the same inputs is the same folder. Before this
cache every pytest-xdist worker that needed the churn bundles trained them again (the session fixtures
are per worker), and so did the demo: the suite is CPU-bound on CI's 2 cores, where each copy of the
default build (three 200-tree models on 20,000 rows, their ONNX exports and golden checks) costs tens
of seconds of CPU.

The key is the build's name and arguments plus the bytes of everything that shapes the result: the
example, the serving and contract sources (pack writes the bundle), and the lock file (library
versions). A change to any of them builds again. Builds happen under a lock, into a temporary folder
renamed into place when complete, so concurrent workers wait for one build and never see half of one.
Callers must treat the folder as read-only (copy it to change it).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from modeldeploy_testcluster.layout import cache_dir

REPO = Path(__file__).resolve().parents[2]
_INPUTS = ("examples/churn", "serving/src", "contract/src")
_KEEP = 3
"""Builds kept per name (older ones are removed when a new one is made): bounded disk use."""


def cache_root() -> Path:
    return cache_dir() / "test-builds"


def _sources() -> Iterator[Path]:
    yield REPO / "uv.lock"
    for folder in _INPUTS:
        yield from sorted(p for p in (REPO / folder).rglob("*.py") if "__pycache__" not in p.parts)


def inputs_digest(name: str, args: object) -> str:
    digest = hashlib.sha256(json.dumps([name, args], sort_keys=True, default=str).encode())
    for path in _sources():
        digest.update(str(path.relative_to(REPO)).encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()[:20]


def churn_script(args: list[str]) -> Callable[[Path], None]:
    """A build that runs examples/churn/make_models.py with `args` into its folder."""

    def build(folder: Path) -> None:
        script = REPO / "examples" / "churn" / "make_models.py"
        subprocess.run(
            [sys.executable, str(script), "--out", str(folder), *args], check=True, capture_output=True
        )

    return build


def cached_build(name: str, args: object, build: Callable[[Path], object]) -> Path:
    """The folder `build(folder)` makes for (name, args) with today's sources: made now if no complete
    one exists, else the existing one. `build` gets an empty folder to fill."""
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"{name}-{inputs_digest(name, args)}"
    done = final / ".complete"
    if done.is_file():
        return final
    with (root / f".{final.name}.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if done.is_file():  # another process built it while this one waited
                return final
            staging = root / f".{final.name}.{os.getpid()}"
            shutil.rmtree(staging, ignore_errors=True)
            shutil.rmtree(final, ignore_errors=True)  # an incomplete leftover of a killed build
            staging.mkdir()
            try:
                build(staging)
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
            (staging / ".complete").write_text(f"{time.time():.0f}\n")
            staging.rename(final)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    _prune(root, name)
    return final


def _prune(root: Path, name: str) -> None:
    builds = sorted(
        (
            p
            for p in root.glob(f"{name}-*")
            if p.name.rsplit("-", 1)[0] == name and (p / ".complete").is_file()
        ),
        key=lambda p: (p / ".complete").stat().st_mtime,
    )
    for old in builds[:-_KEEP]:
        shutil.rmtree(old, ignore_errors=True)
        (root / f".{old.name}.lock").unlink(missing_ok=True)
