"""The rollout mirror in the router (issue 12): copies of answered requests to a revision without
live weight. In-process ASGI calls against a fake upstream pool: no network, no sleeps.

- the caller's answer never waits for a copy, however slow its target;
- copies in flight are bounded per target arm; more are dropped and counted, never queued;
- copies carry `x-modeldeploy-traffic: mirror`, and a caller cannot send that header through;
- only requests of the mirror's own variant are copied;
- every row of both answers is compared (labels, score difference);
- tables with a bad mirror are refused.
"""

from __future__ import annotations

import asyncio
from collections.abc import MutableMapping
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from modeldeploy_contract.router_config import RouterConfig, ShadowConfig
from modeldeploy_serving.router.metrics import RouterMetrics
from modeldeploy_serving.router.proxy import RouterApp
from modeldeploy_serving.router.shadow import Answer, compare, mark_copy, parse_rows
from modeldeploy_serving.router.state import RouterState
from modeldeploy_serving.router.upstream import Response, UpstreamPool, request_head

PRIMARY = "10.0.0.1:8080"
MIRROR = "10.0.0.2:8080"
V2_ANSWER = orjson.dumps(
    {
        "outputs": [
            {"name": "label", "datatype": "INT64", "shape": [3], "data": [1, 0, 1]},
            {
                "name": "probabilities",
                "datatype": "FP32",
                "shape": [3, 2],
                "data": [0.3, 0.7, 0.8, 0.2, 0.4, 0.6],
            },
        ]
    }
)
MIRROR_ANSWER = orjson.dumps(
    {
        "outputs": [
            {"name": "label", "datatype": "INT64", "shape": [3], "data": [1, 1, 1]},
            {
                "name": "probabilities",
                "datatype": "FP32",
                "shape": [3, 2],
                "data": [0.2, 0.8, 0.4, 0.6, 0.4, 0.6],
            },
        ]
    }
)


def table(mirror: dict[str, Any] | None = None, **extra: Any) -> RouterConfig:
    return RouterConfig.model_validate(
        {
            "deployment": {"namespace": "ns", "name": "churn"},
            "arms": [
                {
                    "variant": "a",
                    "revision": "r1",
                    "weight_bp": 10_000,
                    "endpoints": [PRIMARY],
                    "model_name": "m",
                },
                {"variant": "a", "revision": "r2", "weight_bp": 0, "endpoints": [MIRROR], "model_name": "m"},
            ],
            "mirror": mirror,
            **extra,
        }
    )


class FakePool(UpstreamPool):
    """Answers the primary at once; holds every copy until `release` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()
        self.heads: dict[str, list[bytes]] = {PRIMARY: [], MIRROR: []}

    async def send(self, address: str, method: str, head: bytes, body: bytes, **_: Any) -> Response:
        self.heads[address].append(head)
        if address == MIRROR:
            await self.release.wait()
            return Response(200, [], MIRROR_ANSWER)
        return Response(200, [], V2_ANSWER)


class Recorder:
    def __init__(self) -> None:
        self.messages: list[MutableMapping[str, Any]] = []

    async def __call__(self, message: MutableMapping[str, Any]) -> None:
        self.messages.append(message)


def make_app(config: RouterConfig) -> tuple[RouterApp, FakePool]:
    metrics = RouterMetrics()
    pool = FakePool()
    state = RouterState(lambda _arm: (), metrics)
    state.set_config(config)
    return RouterApp(state, metrics, pool), pool


async def call(app: RouterApp, headers: list[tuple[bytes, bytes]] | None = None) -> int:
    pending = [{"type": "http.request", "body": b'{"inputs": []}', "more_body": False}]
    never = asyncio.Event()

    async def receive() -> dict[str, Any]:
        if pending:
            return pending.pop(0)
        await never.wait()  # the client stays connected
        return {"type": "http.disconnect"}

    scope = {"type": "http", "method": "POST", "path": "/v2/models/m/infer", "headers": headers or []}
    sent = Recorder()
    await app(scope, receive, sent)
    return int(next(m["status"] for m in sent.messages if m["type"] == "http.response.start"))


def sample(app: RouterApp, name: str, **labels: str) -> float:
    return app.metrics.registry.get_sample_value(name, labels) or 0.0


MIRROR_100 = {"variant": "a", "revision": "r2", "percent": 100, "max_in_flight": 3, "from_variant": "a"}


def test_the_caller_never_waits_for_a_copy_and_copies_are_bounded_in_flight() -> None:
    async def scenario() -> None:
        app, pool = make_app(table(MIRROR_100))
        # Ten callers answered while no copy has finished (the copy target never answers until released).
        for _ in range(10):
            assert await asyncio.wait_for(call(app), timeout=5) == 200
        assert app.shadow.in_flight == 3  # max_in_flight: the rest were dropped, not queued
        assert len(pool.heads[MIRROR]) == 3
        dropped = sample(
            app, "modeldeploy_router_shadow_requests_total", variant="a", revision="r2", outcome="dropped"
        )
        assert dropped == 7
        pool.release.set()
        await app.shadow.drain(timeout=5)
        assert app.shadow.in_flight == 0
        ok = sample(app, "modeldeploy_router_shadow_requests_total", variant="a", revision="r2", outcome="ok")
        assert ok == 3
        # All three rows of each of the three compared requests: rows 0 and 2 agree, row 1 does not.
        agreement = "modeldeploy_router_shadow_label_agreement_total"
        assert sample(app, agreement, variant="a", revision="r2", result="agree") == 6
        assert sample(app, agreement, variant="a", revision="r2", result="disagree") == 3
        rows = sample(app, "modeldeploy_router_shadow_score_difference_count", variant="a", revision="r2")
        assert rows == 9
        assert app.buffered == 0  # every copy's bytes were given back

    asyncio.run(scenario())


def test_copies_are_marked_and_callers_cannot_pose_as_copies() -> None:
    async def scenario() -> None:
        app, pool = make_app(table(MIRROR_100))
        pool.release.set()
        assert await call(app, [(b"x-modeldeploy-traffic", b"mirror"), (b"x-user-id", b"u1")]) == 200
        await app.shadow.drain(timeout=5)
        (primary,) = pool.heads[PRIMARY]
        (copy,) = pool.heads[MIRROR]
        assert b"x-modeldeploy-traffic" not in primary  # the caller's forged header is dropped
        assert copy.count(b"x-modeldeploy-traffic: mirror\r\n") == 1
        assert copy.endswith(b"\r\n\r\n")
        assert b"x-user-id: u1\r\n" in copy

    asyncio.run(scenario())


def test_only_requests_of_the_mirrors_variant_are_copied() -> None:
    async def scenario() -> None:
        app, pool = make_app(table({**MIRROR_100, "from_variant": "b"}))
        pool.release.set()
        assert await call(app) == 200
        await app.shadow.drain(timeout=5)
        assert pool.heads[MIRROR] == []

    asyncio.run(scenario())


def test_mark_copy_adds_the_header_before_the_blank_line() -> None:
    head = request_head("POST", b"/x", [(b"x-modeldeploy-traffic", b"live"), (b"a", b"b")], 3)
    assert b"x-modeldeploy-traffic" not in head
    marked = mark_copy(head)
    assert marked == head[:-2] + b"x-modeldeploy-traffic: mirror\r\n\r\n"


@pytest.mark.parametrize(
    ("mirror", "message"),
    [
        ({"variant": "a", "revision": "nope", "percent": 10}, "is not in arms"),
        ({"variant": "a", "revision": "r1", "percent": 10}, "has live weight"),
        ({"variant": "a", "revision": "r2", "percent": 101}, "less than or equal to 100"),
        ({"variant": "a", "revision": "r2", "percent": 10, "max_in_flight": 0}, "greater than or equal to 1"),
        ({"variant": "a", "revision": "r2", "percent": 10, "from_variant": ""}, "at least 1 character"),
        ({"variant": "a", "revision": "r2", "percent": 10, "surprise": 1}, "Extra inputs"),
    ],
)
def test_bad_mirrors_are_refused(mirror: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        table(mirror)


def test_one_arm_cannot_be_both_shadow_and_mirror() -> None:
    with pytest.raises(ValidationError, match="both the shadow and the mirror"):
        table(MIRROR_100, shadow={"variant": "a", "revision": "r2", "percent": 5})


def test_a_mirror_round_trips_through_json() -> None:
    config = table(MIRROR_100)
    assert RouterConfig.from_json(config.to_json()) == config


CONFIG = ShadowConfig(
    variant="v", revision="r", percent=100, score_output="probabilities", label_output="label"
)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (V2_ANSWER, [Answer(0.7, 1), Answer(0.2, 0), Answer(0.6, 1)]),
        ({"predictions": [[0.1, 0.9], [0.6, 0.4]]}, [Answer(0.9, 1), Answer(0.4, 0)]),
        ({"predictions": [0.2, 0.7]}, [Answer(0.2, 0.2), Answer(0.7, 0.7)]),
        (
            {"outputs": [{"name": "probabilities", "shape": [2, 2], "data": [[0.3, 0.7], [0.9, 0.1]]}]},
            [Answer(0.7, 1), Answer(0.1, 0)],
        ),
        (
            {"outputs": [{"name": "probabilities", "shape": [2, 0], "data": [1, 2]}]},
            [Answer(1.0, None), Answer(2.0, None)],
        ),
        ({"outputs": []}, None),
        ([1, 2], None),
    ],
)
def test_parse_rows_reads_every_row(body: object, expected: list[Answer] | None) -> None:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    assert parse_rows(raw, CONFIG) == expected


def test_parse_rows_is_bounded() -> None:
    body = orjson.dumps({"predictions": [0.5] * 50})
    rows = parse_rows(body, CONFIG, limit=7)
    assert rows is not None
    assert len(rows) == 7


def test_parse_rows_tolerates_garbage() -> None:
    assert parse_rows(b"\xff not json", CONFIG) is None


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.floats(0, 1), st.integers(0, 2)), max_size=20),
    st.lists(st.tuples(st.floats(0, 1), st.integers(0, 2)), max_size=20),
)
def test_compare_counts_every_row_once(
    primary: list[tuple[float, int]], copy: list[tuple[float, int]]
) -> None:
    a = [Answer(s, label) for s, label in primary]
    b = [Answer(s, label) for s, label in copy]
    result = compare(a, b)
    assert result.agree + result.disagree == max(len(a), len(b))
    assert len(result.score_differences) == min(len(a), len(b))
    assert all(0 <= d <= 1 for d in result.score_differences)
    assert result.agree == sum(x.label == y.label for x, y in zip(a, b, strict=False))
