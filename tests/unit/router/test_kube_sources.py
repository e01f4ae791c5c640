"""EndpointSlice and ConfigMap sources against a fake API server (list + watch over httpx)."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import orjson
import pytest

from modeldeploy_contract.router_config import ArmConfig, RouterConfig
from modeldeploy_serving.router.kube import KubeApi
from modeldeploy_serving.router.metrics import RouterMetrics
from modeldeploy_serving.router.sources import ConfigMapConfigSource, EndpointSliceSource, ready_endpoints
from modeldeploy_serving.router.state import RouterState

ARM = ArmConfig(variant="default", revision="r1", weight_bp=10_000, service="churn-r1", model_name="churn")


def endpoint_slice(
    name: str, service: str, endpoints: list[tuple[str, bool | None]], rv: str
) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "resourceVersion": rv, "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": [
            {"addresses": [ip], **({} if ready is None else {"conditions": {"ready": ready}})}
            for ip, ready in endpoints
        ],
    }


def test_ready_endpoints_keeps_ready_pods_of_the_arms_service_only() -> None:
    slices = {
        "a": endpoint_slice(
            "a", "churn-r1", [("10.0.0.1", True), ("10.0.0.2", False), ("10.0.0.3", None)], "1"
        ),
        "b": endpoint_slice("b", "churn-r1", [("10.0.0.4", True)], "1"),
        "c": endpoint_slice("c", "churn-r2", [("10.0.0.9", True)], "1"),
    }
    assert ready_endpoints(slices, ARM) == ("10.0.0.1:8080", "10.0.0.3:8080", "10.0.0.4:8080")
    named = ARM.model_copy(update={"port_name": "grpc"})
    assert ready_endpoints(slices, named) == ()


class FakeApi:
    """Serves one list, then one watch stream of events, then watches that block forever."""

    def __init__(self, items: list[dict[str, Any]], events: list[dict[str, Any]]) -> None:
        self.items, self.events = items, events
        self.requests: list[httpx.Request] = []
        self.watches = 0

    async def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.url.params.get("watch") != "true":
            return httpx.Response(200, json={"metadata": {"resourceVersion": "10"}, "items": self.items})
        self.watches += 1
        if self.watches == 1:
            return httpx.Response(200, content=b"\n".join(orjson.dumps(e) for e in self.events) + b"\n")
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    def api(self) -> KubeApi:
        return KubeApi(httpx.AsyncClient(transport=httpx.MockTransport(self.handle), base_url="https://k8s"))


async def run_until(condition: Any, coroutine: Any) -> None:
    task = asyncio.create_task(coroutine)
    try:
        for _ in range(200):
            if condition():
                return
            await asyncio.sleep(0.01)
        raise AssertionError("condition not reached")
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


def config(service: str = "churn-r1") -> RouterConfig:
    return RouterConfig.model_validate(
        {
            "deployment": {"namespace": "shop", "name": "churn"},
            "arms": [ARM.model_copy(update={"service": service})],
        }
    )


async def test_endpointslice_watch_follows_readiness_and_deletion() -> None:
    first = endpoint_slice("s1", "churn-r1", [("10.0.0.1", True), ("10.0.0.2", True)], "10")
    fake = FakeApi(
        [first],
        [
            {
                "type": "MODIFIED",
                "object": endpoint_slice("s1", "churn-r1", [("10.0.0.1", True), ("10.0.0.2", False)], "11"),
            },
            {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "12"}}},
            {"type": "ADDED", "object": endpoint_slice("s2", "churn-r1", [("10.0.0.7", True)], "13")},
            {
                "type": "DELETED",
                "object": {**first, "metadata": {**first["metadata"], "resourceVersion": "14"}},
            },
        ],
    )
    source = EndpointSliceSource(fake.api(), "shop")
    state = RouterState(source.lookup, RouterMetrics())
    seen: list[tuple[str, ...]] = []
    state.on_backends_changed = lambda _: seen.append(
        state.snapshot.arms[0].backends.backends if state.snapshot else ()
    )
    state.set_config(config())
    await run_until(lambda: fake.watches >= 2, source.run(state))
    assert seen[0] == ()  # no slices known yet
    assert ("10.0.0.1:8080", "10.0.0.2:8080") in seen  # the list
    assert seen[-1] == ("10.0.0.7:8080",)  # s1 deleted, s2 added
    assert ("10.0.0.1:8080",) in seen  # 10.0.0.2 became unready: dropped at once
    list_request, watch_request = fake.requests[0], fake.requests[1]
    assert list_request.url.path == "/apis/discovery.k8s.io/v1/namespaces/shop/endpointslices"
    assert list_request.url.params["labelSelector"] == "kubernetes.io/service-name"
    assert watch_request.url.params["resourceVersion"] == "10"
    assert fake.requests[2].url.params["resourceVersion"] == "14"  # resumes after the last event


async def test_watch_expiry_lists_again() -> None:
    fake = FakeApi(
        [endpoint_slice("s1", "churn-r1", [("10.0.0.1", True)], "10")],
        [{"type": "ERROR", "object": {"kind": "Status", "code": 410, "message": "too old"}}],
    )
    source = EndpointSliceSource(fake.api(), "shop")
    state = RouterState(source.lookup, RouterMetrics())
    state.set_config(config())
    await run_until(lambda: fake.watches >= 2, source.run(state))
    lists = [r for r in fake.requests if r.url.params.get("watch") != "true"]
    assert len(lists) == 2


def config_map(text: str, rv: str) -> dict[str, Any]:
    return {"metadata": {"name": "churn-router", "resourceVersion": rv}, "data": {"router.json": text}}


async def test_configmap_source_applies_valid_tables_and_keeps_the_last_good_one() -> None:
    v1 = config().model_copy(update={"generation": 1}).to_json()
    v2 = config().model_copy(update={"generation": 2}).to_json()
    fake = FakeApi(
        [config_map(v1, "10")],
        [
            {"type": "MODIFIED", "object": config_map("{broken", "11")},
            {"type": "MODIFIED", "object": config_map(v2, "12")},
            {"type": "MODIFIED", "object": config_map("{broken again", "13")},
        ],
    )
    metrics = RouterMetrics()
    state = RouterState(lambda arm: ("10.0.0.1:8080",), metrics)
    source = ConfigMapConfigSource(fake.api(), "shop", "churn-router", "router.json")
    await run_until(lambda: fake.watches >= 2, source.run(state))
    assert state.snapshot is not None
    assert state.snapshot.config.generation == 2
    assert state.snapshot.ready
    assert fake.requests[0].url.params["fieldSelector"] == "metadata.name=churn-router"
    assert metrics.config_reloads.labels("applied")._value.get() == 2
    assert metrics.config_reloads.labels("invalid")._value.get() == 2
