"""`modeldeploy stream`: the stream consumer beside a small HTTP server (health, metadata, /metrics).

The data plane (model loading, readiness, batching, drift windows, metrics) is the one REST uses;
the HTTP app is REST's without the inference routes' data plane ownership: this module starts the
data plane, then the stream, and on SIGTERM or SIGINT stops the stream first (finishing and
committing what it consumed), then the HTTP server, then the data plane.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Iterator

import uvicorn

from modeldeploy_contract.joiner_settings import JoinerFeedSettings
from modeldeploy_contract.predlog_settings import PredictionLogSettings
from modeldeploy_contract.server_settings import ServerSettings
from modeldeploy_contract.stream_settings import StreamSettings
from modeldeploy_serving import metrics
from modeldeploy_serving.app import build_api
from modeldeploy_serving.dataplane import DataPlane
from modeldeploy_serving.joiner.feed import open_feed
from modeldeploy_serving.predlog import open_prediction_log
from modeldeploy_serving.stream.runner import StreamError, StreamRunner

log = logging.getLogger(__name__)


class _HttpServer(uvicorn.Server):
    """uvicorn without its own signal handling: the stream decides when to stop."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def serve_stream(server: ServerSettings, stream: StreamSettings) -> int:
    dataplane = DataPlane(server)
    log_settings = PredictionLogSettings()  # spec.predictionLog, as on the REST pods
    prediction_log = open_prediction_log(log_settings, metrics.prediction_log_count)
    # spec.effectiveness: the output role's pods record their predictions to the joiner, as REST pods do
    feed = open_feed(JoinerFeedSettings(), metrics.joiner_feed_count)
    runner = StreamRunner(
        stream, dataplane, prediction_log, (log_settings.deployment, log_settings.variant), feed
    )
    api = build_api(server, dataplane, owns_dataplane=False)
    http = _HttpServer(
        uvicorn.Config(
            api,
            host=server.host,
            port=server.port,
            log_level=server.log_level.lower(),
            access_log=False,
            server_header=False,
        )
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await dataplane.start()
    http_task = asyncio.create_task(http.serve())
    code = 0
    try:
        await runner.run(stop)
    except StreamError as exc:
        log.error("stream stopped: %s", exc)
        code = 1
    finally:
        http.should_exit = True
        await asyncio.wait([http_task], timeout=10)
        await dataplane.stop()
        # Both send what they hold, bounded in time (the feed: shutdown_seconds, then what is unsent
        # is counted lost_at_shutdown), side by side so that the stop fits STREAM_GRACE_SECONDS.
        closing = [c.close for c in (prediction_log, feed) if c is not None]
        await asyncio.gather(*(asyncio.to_thread(close) for close in closing))
        metrics.worker_exited()
    return code


def main(server: ServerSettings, stream: StreamSettings) -> int:
    logging.basicConfig(
        level=server.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    return asyncio.run(serve_stream(server, stream))
