"""Pure parts of the cluster harness: variable expansion, image names, pod IP handout."""

from __future__ import annotations

import pytest

from modeldeploy_testcluster.images import repository_of
from modeldeploy_testcluster.processnode.agent import PodIPs
from modeldeploy_testcluster.processnode.envvars import expand


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("--bind=$(POD_IP)", "--bind=10.0.0.1"),
        ("$(MISSING)", "$(MISSING)"),
        ("$$(POD_IP)", "$(POD_IP)"),
        ("a$(A)b$(A)", "a1b1"),
    ],
)
def test_expand_follows_kubernetes_rules(text: str, expected: str) -> None:
    assert expand(text, {"POD_IP": "10.0.0.1", "A": "1"}) == expected


@pytest.mark.parametrize(
    ("image", "repository"),
    [
        ("ghcr.io/modeldeploy/serving:0.1.0", "ghcr.io/modeldeploy/serving"),
        ("ghcr.io/modeldeploy/serving@sha256:abc", "ghcr.io/modeldeploy/serving"),
        ("localhost:5000/serving", "localhost:5000/serving"),
        ("localhost:5000/serving:1", "localhost:5000/serving"),
    ],
)
def test_repository_ignores_tag_and_digest(image: str, repository: str) -> None:
    assert repository_of(image) == repository


def test_pod_ips_are_unique_and_reused_after_release() -> None:
    ips = PodIPs("10.244.1.0/30")
    first, second = ips.take(), ips.take()
    assert {first, second} == {"10.244.1.1", "10.244.1.2"}
    with pytest.raises(RuntimeError, match="ran out"):
        ips.take()
    ips.give_back(first)
    assert ips.take() == first
