"""Fixtures for the router's integration tests: three fake backends, a slow shadow backend and one
router process (module scope: the processes start once; each test writes the table it needs)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from router_harness import Cluster, Router, fake_backend, one_arm_table


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    workdir: Path = tmp_path_factory.mktemp("router")
    with ExitStack() as stack:
        stable = stack.enter_context(fake_backend("stable-1", 0.2, workdir))
        stable2 = stack.enter_context(fake_backend("stable-2", 0.2, workdir))
        canary = stack.enter_context(fake_backend("canary", 0.7, workdir))
        shadow = stack.enter_context(fake_backend("shadow", 0.4, workdir, sleep=1.0))
        router = Router(workdir)
        router.write_endpoints({})
        router.write_config(one_arm_table())
        stack.enter_context(router.running())
        yield Cluster(router, stable, stable2, canary, shadow)
