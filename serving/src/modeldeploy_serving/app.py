"""The HTTP surface: a lean ASGI path for inference in front of FastAPI for everything else.

Inference requests (POST .../infer and ...:predict) never enter FastAPI: routing, pydantic request
models and dependency injection cost 200+ microseconds per request, about ten times the model call.
They are matched by path prefix here, decoded by the transport-neutral codecs and answered with raw
ASGI messages. Health, metadata and /metrics go to FastAPI, where the cost does not matter.
"""

from __future__ import annotations

import asyncio
import atexit
import itertools
import logging
import os
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping, Sequence
from contextlib import asynccontextmanager
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from modeldeploy_contract.joiner_settings import JoinerFeedSettings
from modeldeploy_contract.metric_names import LIVE_TRAFFIC, MIRROR_TRAFFIC, TRAFFIC_HEADER
from modeldeploy_contract.predlog_settings import PredictionLogSettings
from modeldeploy_contract.preflight import GOLDEN_PATH, REPLAY_HEADER
from modeldeploy_contract.redact import scrub_logs
from modeldeploy_contract.server_settings import ServerSettings
from modeldeploy_serving import metrics, slowclients
from modeldeploy_serving._predlog_lines import one_row_lines
from modeldeploy_serving.dataplane import DataPlane
from modeldeploy_serving.errors import NotFoundError, OverloadedError, PayloadTooLargeError, ServingError
from modeldeploy_serving.joiner.feed import JoinerFeed, open_feed
from modeldeploy_serving.model import LoadedModel
from modeldeploy_serving.openapi import describe_inference_routes, name_the_served_model
from modeldeploy_serving.predlog import (
    PiiPolicy,
    PredictionLog,
    RecordEncoder,
    line_pieces,
    open_prediction_log,
    output_arrays,
    sampled,
)
from modeldeploy_serving.protocol import v1, v2
from modeldeploy_serving.protocol.tensors import parse_length
from modeldeploy_serving.rows import ListRows

log = logging.getLogger(__name__)
Logged = tuple[Any, Any, Any]
"""What the prediction log keeps of a request: its rows, its Prediction, the body's id (or None)."""
REQUEST_ID_HEADERS = (b"x-request-id", b"request-id")


def _request_id(headers: list[tuple[bytes, bytes]] | None) -> str | None:
    """The caller's (or the router's) request id header, if any."""
    for name, value in headers or ():
        if name in REQUEST_ID_HEADERS and value:
            text: str = value.decode("latin-1")
            return text[:256]
    return None


Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

V2_PREFIX, V2_SUFFIX = "/v2/models/", "/infer"
V1_PREFIX, V1_SUFFIX = "/v1/models/", ":predict"
JSON_HEADERS = [(b"content-type", b"application/json")]
REPLAY_HEADER_BYTES = REPLAY_HEADER.encode()


def server_version() -> str:
    try:
        return version("modeldeploy-serving")
    except PackageNotFoundError:  # running from a source tree without metadata
        return "0.0.0"


class ClientGoneError(Exception):
    """The client disconnected before sending its whole body."""


_TRAFFIC_HEADER = TRAFFIC_HEADER.encode()
_MIRROR = MIRROR_TRAFFIC.encode()


def traffic_of(headers: list[tuple[bytes, bytes]]) -> str:
    """traffic label of a request: "mirror" for the router's copies, else "live" (two values only:
    the header's content never becomes a label value)."""
    for key, value in headers:
        if key == _TRAFFIC_HEADER:
            return MIRROR_TRAFFIC if value == _MIRROR else LIVE_TRAFFIC
    return LIVE_TRAFFIC


def json_response(status: int, payload: Any) -> Response:
    return Response(orjson.dumps(payload), status_code=status, media_type="application/json")


def body_headers(headers: Any) -> tuple[bytes | None, bytes | None, bool]:
    """The raw Content-Length, the raw Inference-Header-Content-Length value if any, and whether the
    request is a replay (REPLAY_HEADER set to anything but "0"): read before anything can refuse the
    request, so that a refused replay stays out of the live accounting too."""
    declared = None
    header_length = None
    replay = False
    for key, value in headers:
        if key == b"content-length":
            declared = value
        elif key == b"inference-header-content-length":
            header_length = value
        elif key == REPLAY_HEADER_BYTES:
            replay = value != b"0"
    return declared, header_length, replay


async def read_body(declared: bytes | None, receive: Receive, limit: int) -> bytes:
    """The whole request body; refused by its declared length before a byte is read."""
    if declared is not None and declared.isdigit() and (len(declared) > 19 or int(declared) > limit):
        raise PayloadTooLargeError(
            f"request body of {declared[:40].decode()} bytes is over the {limit}-byte limit"
        )
    message = await receive()
    if message["type"] == "http.request" and not message.get("more_body", False):  # the usual case
        body: bytes = message.get("body", b"")
        if len(body) > limit:
            raise PayloadTooLargeError(f"request body is over the {limit}-byte limit")
        return body
    return await _read_chunks(message, receive, limit)


async def _read_chunks(message: Message, receive: Receive, limit: int) -> bytes:
    chunks = []
    size = 0
    while True:
        if message["type"] == "http.disconnect":
            raise ClientGoneError
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLargeError(f"request body is over the {limit}-byte limit")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)
        message = await receive()


def split_v2_path(path: str) -> tuple[str, str | None]:
    parts = path[len(V2_PREFIX) : -len(V2_SUFFIX)].split("/")
    if len(parts) == 1 and parts[0]:
        return parts[0], None
    if len(parts) == 3 and parts[1] == "versions" and parts[0] and parts[2]:
        return parts[0], parts[2]
    raise NotFoundError(f"no such endpoint: {path}")


class InferenceApp:
    """The ASGI application uvicorn runs."""

    def __init__(
        self,
        settings: ServerSettings,
        dataplane: DataPlane,
        api: FastAPI,
        prediction_log: PredictionLog | None = None,
        log_settings: PredictionLogSettings | None = None,
        feed: JoinerFeed | None = None,
    ) -> None:
        self.settings = settings
        self.dataplane = dataplane
        self.api = api
        self._resolved: dict[str, LoadedModel] = {}
        self.plog = prediction_log
        self.log_settings = log_settings or PredictionLogSettings()
        self.feed = feed
        """Prediction records to the label joiner (spec.effectiveness); None: off."""
        self._keep = prediction_log is not None or feed is not None
        self._ids = itertools.count()
        self._id_prefix = f"{socket.gethostname()}-{os.getpid()}"
        self._records = RestRecords(self)

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        """Route to the inference path or FastAPI. A plain method returning the handler's coroutine
        (not an async one awaiting it) saves a coroutine per request; uvicorn is told the app is
        ASGI 3 (cli.py) since it cannot infer that from a plain method."""
        if scope["type"] == "http" and scope["method"] == "POST":
            path: str = scope["path"]
            if path.startswith(V2_PREFIX) and path.endswith(V2_SUFFIX):
                return self._infer(scope, receive, send, "v2")
            if path.startswith(V1_PREFIX) and path.endswith(V1_SUFFIX):
                return self._infer(scope, receive, send, "v1")
        return self.api(scope, receive, send)

    def _resolve(self, path: str, protocol: str) -> LoadedModel:
        """The model a path names; successful lookups are remembered per loaded model (only paths
        that name the served model get there, so the memo stays a handful of entries)."""
        model = self.dataplane.model
        hit = self._resolved.get(path)
        if hit is not None and hit is model:
            return hit
        if protocol == "v2":
            name, version_ = split_v2_path(path)
        else:
            name, version_ = path[len(V1_PREFIX) : -len(V1_SUFFIX)], None
        resolved = self.dataplane.resolve(name, version_)
        self._resolved[path] = resolved
        return resolved

    async def _infer(self, scope: Scope, receive: Receive, send: Send, protocol: str) -> None:
        start = time.perf_counter()
        dataplane = self.dataplane
        settings = self.settings
        if dataplane.in_flight >= settings.max_concurrent_requests:  # one compare on the hot path
            await self._refuse(send, protocol, "concurrency", "too many requests in progress", start)
            return
        dataplane.in_flight += 1
        model: LoadedModel | None = None
        status = 200
        declared, raw_header_length, replay = body_headers(scope["headers"])
        logged: Logged | None = None
        try:
            model = self._resolve(scope["path"], protocol)
            body = await read_body(declared, receive, settings.max_body_bytes)
            if len(body) < settings.offload_body_bytes:
                payload, header_length, logged = await self._predict(
                    model, protocol, body, raw_header_length, offload=False, replay=replay
                )
            else:
                payload, header_length, logged = await _unless_gone(
                    self._predict(model, protocol, body, raw_header_length, offload=True, replay=replay),
                    receive,
                )
            headers = _answer_headers(len(payload), header_length)
            if self.feed is not None and logged is not None and not replay:
                logged = self._feed(scope, model, logged, headers)
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": payload})
        except OverloadedError as exc:
            status = exc.status
            metrics.REFUSED.labels(exc.reason).inc()
            await _send_error(send, status, exc.message, self._retry_after)
        except ServingError as exc:
            status = exc.status
            await _send_error(send, status, exc.message)
        except ClientGoneError:
            status = 499  # nginx's code for "client closed request": nothing is sent
            metrics.REFUSED.labels("client_gone").inc()
        except Exception:  # a bug must not take the worker down; the next request still works
            log.exception("inference failed")
            status = 500
            await _send_error(send, status, "internal error while predicting; see the server log")
        finally:
            dataplane.in_flight -= 1
            if not replay:  # a golden-set replay is not live traffic: no request, latency or error count
                elapsed = time.perf_counter() - start
                traffic = traffic_of(scope["headers"])
                dataplane.metrics_for(model).request(protocol, status, elapsed, traffic)
                # Mirrored copies answered no caller: they are not predictions anyone received.
                if self.plog is not None and traffic == LIVE_TRAFFIC:
                    self._log(scope, model, logged, status, elapsed)

    def _feed(
        self, scope: Scope, model: LoadedModel, logged: Logged, headers: list[tuple[bytes, bytes]]
    ) -> Logged:
        """Record the answer for the label joiner under the request id the caller gets back (the
        caller's x-request-id, the V2 body's id, or one made here, returned as x-request-id); the
        prediction log then uses the same id."""
        request_id = _request_id(scope["headers"]) or (str(logged[2]) if logged[2] is not None else None)
        if request_id is None:
            request_id = self._made_id()
        if request_id.isascii() and request_id.isprintable():  # else the body's id echoes it already
            headers.append((b"x-request-id", request_id.encode("ascii")))
        if traffic_of(scope["headers"]) == LIVE_TRAFFIC:  # a mirrored copy answered no caller
            assert self.feed is not None
            self.feed.add(request_id, model.version, logged[1])
        return (logged[0], logged[1], request_id)

    def _log(
        self, scope: Scope, model: LoadedModel | None, logged: Logged | None, status: int, elapsed: float
    ) -> None:
        """Queue one prediction-log record; never raises, never blocks. The request path keeps only
        references (the headers, rows and prediction), the record is built later, a batch at a
        time (RestRecords, PredictionLog.defer): 0.2-0.35 us a request against 0.8-1.5 us building
        a LogRecord here (measured, docs/benchmarks.md#prediction-log)."""
        try:
            plog = self.plog
            assert plog is not None
            request_id = None
            if plog.sample_rate < 1.0:  # sampling needs the id now; at 1.0 it is found in the drain
                request_id = self._request_id_of(scope["headers"], logged)
                if not sampled(request_id, plog.sample_rate):
                    return
            plog.defer(
                (self._records, request_id, scope["headers"], model, logged, status, elapsed, time.time())
            )
        except Exception:  # the log must never fail a prediction
            log.exception("prediction log record failed")

    def _request_id_of(self, headers: list[tuple[bytes, bytes]], logged: Logged | None) -> str:
        request_id = _request_id(headers) or (logged[2] if logged is not None else None)
        if request_id is None:
            return self._made_id()
        return str(request_id)

    def _made_id(self) -> str:
        """A request id made here, for a request that brought none: this process's prefix and a counter."""
        return f"{self._id_prefix}-{next(self._ids)}"

    @property
    def _retry_after(self) -> list[tuple[bytes, bytes]]:
        return [(b"retry-after", b"%d" % self.settings.retry_after_seconds)]

    async def _refuse(self, send: Send, protocol: str, reason: str, message: str, start: float) -> None:
        """A fast 503: no body read, no decoding (the connection stays usable)."""
        metrics.REFUSED.labels(reason).inc()
        await _send_error(send, 503, f"overloaded: {message}; retry later", self._retry_after)
        self.dataplane.metrics_for(None).request(protocol, 503, time.perf_counter() - start)

    async def _predict(
        self,
        model: LoadedModel,
        protocol: str,
        body: bytes,
        raw_header_length: bytes | None,
        *,
        offload: bool,
        replay: bool,
    ) -> tuple[bytes, int | None, Logged | None]:
        """Decode, predict, encode; with offload the decoding runs in a thread (large bodies); a replay
        is predicted outside the live accounting (dataplane.replay). With the prediction log on, also
        what it needs (rows, prediction, the body's id); otherwise None (nothing kept)."""
        dataplane = self.dataplane
        infer = dataplane.replay if replay else dataplane.infer
        max_rows = self.settings.max_batch_rows
        if protocol == "v2":
            header_length = None if raw_header_length is None else _header_length(raw_header_length)
            args = (body, header_length, model.feature_index, model.output_names, max_rows)
            request = (
                await dataplane.off_loop(v2.decode_request, *args) if offload else v2.decode_request(*args)
            )
            prediction = await infer(request.rows)
            payload, length = v2.encode_response(model.name, model.version, request, prediction)
            logged = (request.rows, prediction, request.id) if self._keep else None
            return payload, length, logged
        if offload:
            x = await dataplane.off_loop(v1.decode_request, body, model.feature_index, max_rows)
        else:
            x = v1.decode_request(body, model.feature_index, max_rows)
        prediction = await infer(x)
        return v1.encode_response(prediction), None, (x, prediction, None) if self._keep else None


class RestRecords(RecordEncoder):
    """The model server's prediction-log records, built a batch at a time (PredictionLog.defer)
    from what InferenceApp._log queued: (this, request id or None, headers, model, (rows,
    prediction, body id) or None, status, seconds, time). LogRecord.encode's shape (the same as
    stream mode's and the router's; the keys are checked by the integration tests). A failed
    request logs no inputs: its body may be anything, personal data included."""

    def __init__(self, app: InferenceApp) -> None:
        self._app = app

    def body(self, item: tuple[Any, ...], policy: PiiPolicy) -> dict[str, Any]:
        """One record: the reference `lines` is checked against (test_predlog_batch.py)."""
        _, request_id, headers, model, logged, status, elapsed, at = item
        app = self._app
        if request_id is None:
            request_id = app._request_id_of(headers, logged)
        inputs: dict[str, Any] = {}
        outputs = None
        if logged is not None and model is not None:
            inputs = policy.apply_rows(logged[0], model.feature_index)
            outputs = output_arrays(logged[1])
        ls = app.log_settings
        return {
            "request_id": request_id,
            "time": at,
            "deployment": ls.deployment or (model.name if model else ""),
            "variant": ls.variant,
            "revision": ls.revision,
            "model_version": model.version if model else "",
            "inputs": inputs,
            "outputs": outputs,
            "latency_ms": elapsed * 1000.0,
            "status": str(status),
        }

    def lines(self, items: list[tuple[Any, ...]], policy: PiiPolicy) -> bytes:
        """The records of `body`, as JSON lines: in one C call (_predlog_lines.one_row_lines) when
        every item is a one-row JSON request of one model, else one dict a record."""
        try:
            text = self._one_row_lines(items, policy)
        except Exception:  # not expected; the reference path below is the one that counts
            log.debug("prediction log: the C encoder failed, record by record", exc_info=True)
            text = None
        if text is not None:
            return text
        return super().lines(items, policy)

    def _one_row_lines(self, items: list[tuple[Any, ...]], policy: PiiPolicy) -> bytes | None:
        """`body`'s records as JSON lines, byte for byte `dumps` of each (test_predlog_batch.py checks
        it over hostile values), written by _predlog_lines.one_row_lines when every item is the usual
        live REST request: one JSON row (rows.ListRows) predicted by one model, every model call with
        the outputs of the first item's (names, order, dimensions); else None, before any request id
        is made. Python here is per run, not per record: the records cost 22,900 instructions each
        made by mapping C functions over columns from Python, 7,450 in C (callgrind, 2026-12-06,
        docs/benchmarks.md#prediction-log)."""
        first = items[0]
        model, logged = first[3], first[4]
        if model is None or logged is None:
            return None
        outputs = getattr(logged[1], "batch_outputs", None)
        if type(outputs) is not dict:
            return None
        shape = tuple((name, getattr(array, "ndim", 0)) for name, array in outputs.items())
        plan = policy.plan(model.feature_index)
        app, ls = self._app, self._app.log_settings
        pieces = line_pieces(
            ls.deployment or model.name,
            ls.variant,
            ls.revision,
            model.version,
            tuple(name for name, _, _ in plan),
            shape,
        )
        spec = (
            model,
            ListRows,
            tuple(column for _, column, _ in plan),
            tuple(pseudonymise for _, _, pseudonymise in plan),
            policy.lru_token,
            tuple(name for name, _ in shape),
            tuple(ndim for _, ndim in shape),
            v2.row_texts,
            REQUEST_ID_HEADERS,
            app._id_prefix + "-",
            app._ids,
            orjson.dumps,
            pieces,
        )
        return one_row_lines(items, spec)


def _answer_headers(size: int, header_length: int | None) -> list[tuple[bytes, bytes]]:
    length = (b"content-length", b"%d" % size)
    if header_length is None:
        return [length, *JSON_HEADERS]
    return [
        length,
        (b"content-type", b"application/octet-stream"),
        (b"inference-header-content-length", str(header_length).encode()),
    ]


async def _unless_gone(
    work: Awaitable[tuple[bytes, int | None, Logged | None]], receive: Receive
) -> tuple[bytes, int | None, Logged | None]:
    """The work's result, or ClientGoneError as soon as the client disconnects (the work is cancelled:
    a queued micro-batch entry is skipped, nothing more is decoded or predicted for it)."""
    task = asyncio.ensure_future(work)
    gone = asyncio.ensure_future(_disconnected(receive))
    try:
        await asyncio.wait((task, gone), return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
    if not task.done():
        task.cancel()
        raise ClientGoneError
    return task.result()


async def _disconnected(receive: Receive) -> None:
    """Returns when the client has gone (after the whole body, receive() only ever says that)."""
    while (await receive())["type"] != "http.disconnect":
        pass


def _header_length(raw: bytes) -> int:
    return parse_length(raw, "Inference-Header-Content-Length")


async def _send_error(
    send: Send, status: int, message: str, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    try:
        body = orjson.dumps({"error": message})
    except orjson.JSONEncodeError:  # a lone surrogate echoed from the request
        body = orjson.dumps({"error": message.encode("utf-8", "backslashreplace").decode("utf-8")})
    headers = [(b"content-length", str(len(body)).encode()), *JSON_HEADERS]
    if extra:
        headers += extra
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def build_api(
    settings: ServerSettings,
    dataplane: DataPlane,
    *,
    owns_dataplane: bool = True,
    on_stop: Sequence[Callable[[], object]] = (),
) -> FastAPI:
    """Health, metadata and /metrics. With owns_dataplane the app starts and stops the data plane
    (REST); `modeldeploy stream` starts and stops it itself and serves this app beside the stream.

    `on_stop`: blocking calls run side by side (each in a thread) when the app stops, after uvicorn
    has drained the requests in flight: the joiner feed and the prediction log send what they hold,
    each bounded in time. Here and not in atexit: on SIGTERM uvicorn re-raises the signal once its
    own shutdown is done, and the default action ends the process without running atexit (seen:
    exit status 143, an atexit handler never ran; uvicorn 0.54)."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if not owns_dataplane:
            yield
            return
        await dataplane.start()
        yield
        await dataplane.stop()
        await asyncio.gather(*(asyncio.to_thread(stop) for stop in on_stop))
        metrics.worker_exited()

    api = FastAPI(title="modeldeploy model server", version=server_version(), lifespan=lifespan)

    @api.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> Response:
        return json_response(exc.status_code, {"error": str(exc.detail)})

    @api.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> Response:
        return json_response(422, {"error": str(exc.errors())})

    @api.exception_handler(ServingError)
    async def serving_error(_: Request, exc: ServingError) -> Response:
        return json_response(exc.status, {"error": exc.message})

    @api.get("/v2/health/live")
    async def live() -> Response:
        return json_response(200, {"live": True})

    @api.get("/v2/health/ready")
    async def ready() -> Response:
        body = dataplane.health()
        return json_response(200 if body["ready"] else 503, body)

    @api.get("/v2")
    async def server_metadata() -> Response:
        return json_response(
            200, {"name": "modeldeploy", "version": server_version(), "extensions": ["binary_tensor_data"]}
        )

    def model_metadata(name: str, version_: str | None) -> Response:
        m = dataplane.resolve(name, version_)
        return json_response(
            200,
            {
                "name": m.name,
                "versions": [m.version],
                "platform": m.manifest.format,
                "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, m.n_features]}],
                "outputs": [o.model_dump() for o in m.manifest.outputs],
                "parameters": {
                    "feature_names": m.feature_names,
                    "feature_datatypes": [f.datatype for f in m.manifest.inputs],
                    "sha256": m.digest,
                    "runtime": m.runtime.name,
                    "task": m.manifest.task,
                    "classes": m.manifest.classes,
                },
            },
        )

    def model_ready(name: str, version_: str | None) -> Response:
        try:
            m = dataplane.resolve(name, version_)
        except NotFoundError:
            raise
        except ServingError:
            return json_response(503, {"name": name, "ready": False, "state": dataplane.state})
        if not dataplane.ready:
            return json_response(503, {"name": name, "ready": False, "state": "other workers loading"})
        return json_response(200, {"name": m.name, "ready": True})

    @api.get("/v2/models/{name}")
    async def metadata(name: str) -> Response:
        return model_metadata(name, None)

    @api.get("/v2/models/{name}/versions/{version_}")
    async def metadata_version(name: str, version_: str) -> Response:
        return model_metadata(name, version_)

    @api.get("/v2/models/{name}/ready")
    async def ready_model(name: str) -> Response:
        return model_ready(name, None)

    @api.get("/v2/models/{name}/versions/{version_}/ready")
    async def ready_model_version(name: str, version_: str) -> Response:
        return model_ready(name, version_)

    @api.get("/v1/models/{name}")
    async def v1_status(name: str) -> Response:
        return model_ready(name, None)

    describe_inference_routes(api)
    name_the_served_model(
        api, lambda: None if dataplane.model is None else (dataplane.model.name, dataplane.model.version)
    )

    @api.get(GOLDEN_PATH)
    async def golden() -> Response:
        """The bundle's golden set, for the operator's preflight (the router never forwards it)."""
        model = dataplane.model
        if model is None:
            return json_response(503, {"error": f"no model loaded yet ({dataplane.state})"})
        if model.golden is None:
            return json_response(404, {"error": f"bundle {model.name} {model.version} has no golden set"})
        return Response(model.golden, media_type="application/json", headers={"x-model-sha256": model.digest})

    @api.get("/metrics")
    async def metrics_endpoint() -> Response:
        dataplane.flush_metrics()
        body, content_type = metrics.render()
        return Response(body, media_type=content_type)

    return api


def create_app(settings: ServerSettings | None = None) -> InferenceApp:
    """Factory uvicorn calls in each worker (settings come from MODELDEPLOY_SERVER_* variables)."""
    settings = settings or ServerSettings()
    slowclients.configure(settings.header_read_timeout_seconds, settings.body_read_timeout_seconds)
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    scrub_logs()  # no model-URI credential in any log line, whichever library writes it
    dataplane = DataPlane(settings)
    log_settings = PredictionLogSettings()
    prediction_log = open_prediction_log(log_settings, metrics.prediction_log_count)
    feed = open_feed(JoinerFeedSettings(), metrics.joiner_feed_count)
    # Both send what they hold when the app stops (build_api's on_stop), bounded in time; atexit too,
    # for an exit that skips the lifespan's shutdown (a second Ctrl-C). A second close is a no-op wait.
    on_stop: list[Callable[[], object]] = []
    for closing in (prediction_log, feed):
        if closing is not None:
            on_stop.append(closing.close)
            atexit.register(closing.close)
    api = build_api(settings, dataplane, on_stop=on_stop)
    return InferenceApp(settings, dataplane, api, prediction_log, log_settings, feed)
