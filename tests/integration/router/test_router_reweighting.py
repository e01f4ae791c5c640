"""Three variants re-weighted through real router processes: the tables are the operator's (its pure
`build_router_config`, each edited from the previous one), two router replicas read them, and one is
restarted. Measures the share of keys that changed arm against the total variation distance."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest

from modeldeploy_contract.router_config import RouterConfig
from modeldeploy_contract.slots import total_variation
from modeldeploy_operator.domain.names import revision_name
from modeldeploy_operator.domain.resource import ModelDeploymentRef
from modeldeploy_operator.domain.router import build_router_config
from modeldeploy_operator.domain.traffic import Arm
from modeldeploy_operator.domain.validation import parse_spec

from router_harness import Router, fake_backend

pytestmark = pytest.mark.slow

OWNER = ModelDeploymentRef(name="churn", namespace="test", uid="u")
SPEC = parse_spec(
    {
        "model": {"uri": "s3://models/churn/v1", "format": "onnx", "version": "1"},
        "variants": [{"name": "a", "weight": 50}, {"name": "b", "weight": 30}, {"name": "c", "weight": 20}],
        "traffic": {"stickyKey": {"header": "X-User-Id"}},
    }
)
KEYS = [f"customer-{i}" for i in range(2_400)]
INFER = "/v2/models/churn/infer"
BODY = b'{"inputs":[{"name":"input","datatype":"FP32","shape":[1,3],"data":[1,2,3]}]}'


def operator_table(percents: dict[str, int], previous: str | None) -> str:
    """The router.json the operator writes for variants at these percents (one revision each)."""
    arms = [Arm(variant, "r1", percent * 100) for variant, percent in percents.items()]
    return build_router_config(OWNER, SPEC, arms, {}, 1, previous).to_json()


class Replicas:
    """Two router processes fed the same table and endpoints, as two pods of one router Deployment."""

    def __init__(self, workdir: Path, backend: str) -> None:
        self.routers = []
        for i in (1, 2):
            (workdir / f"router-{i}").mkdir()
            self.routers.append(Router(workdir / f"router-{i}"))
        self.backend = backend

    def write(self, table: str) -> None:
        config = json.loads(table)
        services = {revision_name("churn", a["variant"], a["revision"]) for a in config["arms"]}
        for router in self.routers:
            router.write_endpoints({service: [{"address": self.backend}] for service in services})
            router.write_config(config)


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replicas]:
    workdir = tmp_path_factory.mktemp("reweighting")
    with ExitStack() as stack:
        backend = stack.enter_context(fake_backend("any", 0.5, workdir))
        rig = Replicas(workdir, backend)
        rig.write(operator_table({"a": 50, "b": 30, "c": 20}, None))
        stack.enter_context(rig.routers[0].running())  # the second replica is started by the test
        rig.routers[0].wait_generation()
        yield rig


def variants_of(router: Router) -> dict[str, str]:
    """Each key's variant, as this router answers it."""
    found = {}
    with httpx.Client(base_url=router.url, timeout=10) as client:
        for key in KEYS:
            response = client.post(INFER, content=BODY, headers={"X-User-Id": key})
            assert response.status_code == 200, response.text
            found[key] = response.headers["x-modeldeploy-variant"]
    return found


def test_three_variants_reweighted_move_only_the_minimum(replicas: Replicas) -> None:
    first_table = operator_table({"a": 50, "b": 30, "c": 20}, None)
    second_table = operator_table({"a": 60, "b": 30, "c": 10}, first_table)
    one, two = replicas.routers
    before = variants_of(one)
    with two.running():
        two.wait_generation()
        assert variants_of(two) == before  # both replicas put every key on the same arm

        # A/B/C 50/30/20 -> 60/30/10: the case (cumulative buckets moved 21 % of users, B's too)
        replicas.write(second_table)
        for router in (one, two):
            router.wait_generation()
        after = variants_of(one)
        assert variants_of(two) == after  # the second replica agrees after the hot reload

    moves = Counter((before[k], after[k]) for k in KEYS if before[k] != after[k])
    moved = sum(moves.values()) / len(KEYS)
    old = {a.arm_id: a.weight_bp for a in RouterConfig.from_json(first_table).arms}
    new = {a.arm_id: a.weight_bp for a in RouterConfig.from_json(second_table).arms}
    tv = total_variation(old, new) / 10_000
    print(f"\nthrough the router: {moved:.2%} of {len(KEYS)} keys moved, TV distance {tv:.2%}, {dict(moves)}")
    assert set(moves) == {("c", "a")}  # no key of B moved, nothing moved into C or out of A
    assert moved == pytest.approx(tv, abs=0.025)  # 2,400 keys: sigma 0.6 points
    assert Counter(after.values())["b"] == Counter(before.values())["b"]

    # The second replica restarted (a new process reading the same table) answers every key alike
    with two.running():
        two.wait_generation()
        assert variants_of(two) == after
