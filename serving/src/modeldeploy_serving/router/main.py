"""`modeldeploy-router`: wire the sources, the state and the proxy, and run them on uvicorn."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Protocol

from modeldeploy_contract.predlog_settings import PredictionLogSettings
from modeldeploy_contract.router_config import ArmConfig, RouterSettings
from modeldeploy_serving.predlog import open_prediction_log
from modeldeploy_serving.router.kube import KubeApi, namespace_of_pod
from modeldeploy_serving.router.metrics import RouterMetrics
from modeldeploy_serving.router.proxy import RouterApp
from modeldeploy_serving.router.sources import (
    ConfigMapConfigSource,
    EndpointsFileSource,
    EndpointSliceSource,
    FileConfigSource,
    StaticOnlySource,
)
from modeldeploy_serving.router.state import RouterState
from modeldeploy_serving.router.upstream import UpstreamPool
from modeldeploy_serving.slowclients import configure

log = logging.getLogger("modeldeploy.router")


class _Source(Protocol):
    async def run(self, state: RouterState) -> None: ...


class _BackendSource(_Source, Protocol):
    def lookup(self, arm: ArmConfig) -> tuple[str, ...]: ...


def build_app(settings: RouterSettings) -> RouterApp:
    """The ASGI app with its sources; they start in the app's lifespan."""
    in_cluster = "KUBERNETES_SERVICE_HOST" in os.environ
    api = (
        KubeApi.in_cluster()
        if in_cluster and not (settings.endpoints_file and settings.config_file)
        else None
    )
    namespace = settings.namespace or (namespace_of_pod() if api is not None else "default")

    backends: _BackendSource
    if settings.endpoints_file:
        backends = EndpointsFileSource(Path(settings.endpoints_file), settings.file_poll_seconds)
    elif api is not None:
        backends = EndpointSliceSource(api, namespace)
    else:
        backends = StaticOnlySource()

    config_source: _Source
    file_config: FileConfigSource | None = None
    if settings.config_file:
        config_source = file_config = FileConfigSource(Path(settings.config_file), settings.file_poll_seconds)
    elif settings.config_map and api is not None:
        config_source = ConfigMapConfigSource(api, namespace, settings.config_map, settings.config_key)
    else:
        raise SystemExit(
            "modeldeploy-router: set a config file, or a ConfigMap name when running in a cluster"
        )

    metrics = RouterMetrics()
    # The same MODELDEPLOY_PREDLOG_* settings as the model servers' (spec.predictionLog)
    log_settings = PredictionLogSettings()
    prediction_log = open_prediction_log(
        log_settings, lambda outcome, n: metrics.prediction_log.labels(outcome).inc(n)
    )
    state = RouterState(backends.lookup, metrics)
    pool = UpstreamPool(settings.max_idle_per_backend, settings.idle_seconds)
    state.on_backends_changed = pool.forget

    async def start() -> Callable[[], Awaitable[None]]:
        if isinstance(backends, EndpointsFileSource):
            backends.load_now()
        if file_config is not None:
            file_config.load_now(state)  # ready at once when the file is valid
        tasks = [asyncio.create_task(backends.run(state)), asyncio.create_task(config_source.run(state))]

        async def stop() -> None:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if api is not None:
                await api.aclose()

        return stop

    return RouterApp(
        state,
        metrics,
        pool,
        max_body_bytes=settings.max_body_bytes,
        max_response_bytes=settings.max_response_bytes,
        max_buffered_bytes=settings.max_buffered_bytes,
        max_concurrent=settings.max_concurrent_requests,
        retry_after_seconds=settings.retry_after_seconds,
        lifespan=start,
        prediction_log=prediction_log,
        log_deployment=log_settings.deployment,
    )


def _parse(argv: Sequence[str] | None) -> RouterSettings:
    parser = argparse.ArgumentParser(
        prog="modeldeploy-router",
        description="The modeldeploy built-in router. Every option also reads MODELDEPLOY_ROUTER_<NAME>.",
    )
    parser.add_argument("--config-file", help="routing table file (router.json), re-read on change")
    parser.add_argument("--config-map", help="ConfigMap holding the routing table (in a cluster)")
    parser.add_argument("--config-key", help="key of the table in the ConfigMap (default router.json)")
    parser.add_argument("--endpoints-file", help="backends JSON file instead of EndpointSlices")
    parser.add_argument("--namespace", help="namespace of the ConfigMap and EndpointSlices")
    parser.add_argument("--host", help="address to bind (default 0.0.0.0)")
    parser.add_argument("--port", type=int, help="port to bind (default 8080)")
    parser.add_argument("--log-level", help="debug, info, warning, error")
    args = {k: v for k, v in vars(parser.parse_args(argv)).items() if v is not None}
    return RouterSettings(**args)


def main(argv: Sequence[str] | None = None) -> int:
    import uvicorn

    settings = _parse(argv)
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    app = build_app(settings)
    protocol = configure(settings.header_read_timeout_seconds, settings.body_read_timeout_seconds)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http=protocol,  # httptools with head and body read deadlines (slowclients.py)
        timeout_keep_alive=settings.keep_alive_seconds,  # type: ignore[arg-type]  # a float works
        limit_concurrency=settings.max_connections,
        lifespan="on",
        access_log=False,
        proxy_headers=False,  # forwarded headers pass through to the backend untouched
        server_header=False,  # the backend's Server and Date headers pass through unchanged
        date_header=False,
        log_level=settings.log_level,
        timeout_graceful_shutdown=int(settings.drain_seconds) or None,
        backlog=4096,
    )
    uvicorn.Server(config).run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
