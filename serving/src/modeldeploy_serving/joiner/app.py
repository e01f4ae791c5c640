"""The joiner's HTTP surface and its transport-neutral core.

    POST /v1/predictions   prediction records (one, or {"predictions": [...]}): the intake
    POST /v1/feedback      labels (one, or {"labels": [...]}), keyed by the request id the caller got
    (Kafka)                the same label records from a topic, when MODELDEPLOY_LABELS_TOPIC is set
    GET  /v1/effectiveness the statistics summary (JSON; ?fresh=1 recomputes now)
    GET  /metrics          Prometheus metrics
    GET  /healthz /readyz

A batch is answered item by item: every item gets a status, good items are stored even when others
are not, and the answer is 200 whenever the body could be read. Only an unreadable body (400), a body
or batch over the limits (413) or a store failure (503; then nothing of the request was stored) refuse
the whole request.

While the database cannot be reached (store.py reconnects, link.py decides when), every route that
needs it answers 503 with Retry-After and a JSON body at once, /readyz answers 503 (so the Service
stops sending to this pod), and /healthz stays 200: the process is fine, a restart would not bring the
database back, and a database outage must not restart every joiner.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from modeldeploy_contract.effectiveness import EffectivenessSummary
from modeldeploy_contract.joiner_settings import JoinerSettings
from modeldeploy_contract.stream_settings import LabelTopicSettings, label_topic_settings
from modeldeploy_serving.joiner.metrics import JoinerMetrics
from modeldeploy_serving.joiner.parse import (
    BodyError,
    Feedback,
    Invalid,
    PredictionRecord,
    TooManyItemsError,
    parse_feedback,
    parse_predictions,
)
from modeldeploy_serving.joiner.stats import summarize
from modeldeploy_serving.joiner.store import (
    SqlStore,
    StoreError,
    StoreEvent,
    StoreUnavailableError,
    open_store,
)

log = logging.getLogger("modeldeploy.joiner")
Clock = Callable[[], float]
T = TypeVar("T")
READINESS_CHECK_TIMEOUT_SECONDS = 1.0
"""/readyz waits this long for its database check (queued on the one database thread behind writes);
then it answers with what the store last knew. The operator's probe times out after 2 s."""


class HTTPProblemError(Exception):
    def __init__(self, status: int, message: str, retry_after: int | None = None) -> None:
        """`retry_after`: the store cannot be reached; seconds until it is tried again."""
        super().__init__(message)
        self.status = status
        self.message = message
        self.retry_after = retry_after

    @property
    def store_unreachable(self) -> bool:
        return self.retry_after is not None


def unavailable(exc: StoreUnavailableError) -> HTTPProblemError:
    if exc.outcome_unknown:
        return HTTPProblemError(503, str(exc), exc.retry_after)
    message = f"the store cannot be reached; nothing of this request was stored: {exc}"
    return HTTPProblemError(503, message, exc.retry_after)


def database_url(settings: JoinerSettings) -> str:
    if settings.database_file:
        try:
            return Path(settings.database_file).read_text().strip()
        except OSError as exc:
            raise StoreError(f"cannot read database_file {settings.database_file}: {exc}") from exc
    return settings.database


class Joiner:
    """Predictions and labels in, statistics out; the store is used from one thread only."""

    def __init__(
        self, settings: JoinerSettings, clock: Clock = time.time, labels: LabelTopicSettings | None = None
    ) -> None:
        """`labels`: a Kafka topic of labels consumed beside POST /v1/feedback (labels_kafka.py)."""
        self.settings = settings
        self.labels = labels
        self.clock = clock
        self.metrics = JoinerMetrics()
        self.store: SqlStore | None = None
        self._db = ThreadPoolExecutor(max_workers=1, thread_name_prefix="joiner-db")
        self._tasks: list[asyncio.Task[None]] = []
        self._summary: EffectivenessSummary | None = None
        self._summary_lock = asyncio.Lock()
        self._stopping = asyncio.Event()
        self._label_task: asyncio.Task[None] | None = None
        self._readiness_check: asyncio.Future[bool] | None = None

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._db, fn, *args)

    async def _read(self, fn: Callable[..., T], *args: Any) -> T:
        try:
            return await self._run(fn, *args)
        except StoreUnavailableError as exc:
            raise unavailable(exc) from exc

    def _store_event(self, event: StoreEvent) -> None:
        """From the database thread (prometheus_client is thread-safe)."""
        m = self.metrics
        if event == "lost":
            m.store_connection_losses.inc()
            m.store_up.set(0)
        elif event == "reconnected":
            m.store_reconnects.labels("ok").inc()
            m.store_up.set(1)
        else:
            m.store_reconnects.labels("failed").inc()

    def _store(self) -> SqlStore:
        if self.store is None:
            raise HTTPProblemError(503, "the store is not open")
        return self.store

    async def start(self, background: bool = True) -> None:
        url = database_url(self.settings)
        self.store = await self._run(open_store, url, self._store_event)
        self.metrics.store_up.set(1)
        log.info("joiner store open (%s)", self.store.dialect.name)
        if background:
            self._tasks.append(asyncio.create_task(self._purge_forever()))
            if self.labels is not None:
                from modeldeploy_serving.joiner.labels_kafka import LabelTopicConsumer

                consumer = LabelTopicConsumer(self.labels, self)
                self._label_task = asyncio.create_task(consumer.run(self._stopping))
                self._tasks.append(self._label_task)

    async def stop(self) -> None:
        self._stopping.set()  # the label consumer finishes its batch (stored and committed, or neither)
        if self._label_task is not None:
            await asyncio.wait([self._label_task], timeout=30)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        if self.store is not None:
            await self._run(self.store.close)
            self.store = None
        self._db.shutdown(wait=True)

    # -- intake and feedback --------------------------------------------------------------------
    async def add_predictions(self, body: bytes) -> dict[str, Any]:
        items = self._parse(parse_predictions, body)
        records = [i for i in items if isinstance(i, PredictionRecord)]
        store = self._store()
        stored = await self._write(store.add_predictions, records, self.clock())
        by_index = {r.index: ok for r, ok in zip(records, stored, strict=True)}
        results = []
        for item in items:
            if isinstance(item, Invalid):
                results.append(_result(item.index, item.request_id, "invalid", item.reason))
            elif by_index[item.index]:
                results.append(_result(item.index, item.request_id, "stored", None))
            else:
                results.append(
                    _result(item.index, item.request_id, "duplicate", "request id already recorded")
                )
        return self._answer(results, "stored", self.metrics.predictions)

    async def add_feedback(self, body: bytes) -> dict[str, Any]:
        return await self.join_feedback(self._parse(parse_feedback, body))

    async def join_feedback(self, items: list[Feedback | Invalid], quiet: bool = False) -> dict[str, Any]:
        """Labels of one request (or of one batch of a label topic; indices unique) joined in one
        transaction, answered item by item; HTTPProblemError(503) when the store failed (then none
        was stored). `quiet`: a failure is not logged (the caller tells what it means)."""
        labels = [i for i in items if isinstance(i, Feedback)]
        store = self._store()
        statuses = await self._write(
            store.join_labels, labels, self.clock(), self.settings.retention_seconds, quiet=quiet
        )
        by_index = dict(zip((f.index for f in labels), statuses, strict=True))
        results = []
        for item in items:
            if isinstance(item, Invalid):
                results.append(_result(item.index, item.request_id, "invalid", item.reason))
            else:
                status, error = by_index[item.index]
                results.append(_result(item.index, item.request_id, status, error))
        return self._answer(results, "joined", self.metrics.labels)

    def _parse(self, parser: Callable[[bytes, int], list[T]], body: bytes) -> list[T]:
        try:
            return parser(body, self.settings.max_batch_items)
        except BodyError as exc:
            raise HTTPProblemError(400, str(exc)) from exc
        except TooManyItemsError as exc:
            raise HTTPProblemError(413, str(exc)) from exc

    async def _write(self, fn: Callable[..., T], *args: Any, quiet: bool = False) -> T:
        try:
            return await self._run(fn, *args)
        except StoreUnavailableError as exc:  # the outage is logged by the store, once, not per request
            raise unavailable(exc) from exc
        except Exception as exc:  # a database error: the transaction was rolled back, nothing stored
            if not quiet:
                log.exception("store write failed")
            message = f"the store failed; nothing of this request was stored: {exc}"
            raise HTTPProblemError(503, message) from exc

    @staticmethod
    def _answer(results: list[dict[str, Any]], good: str, counter: Any) -> dict[str, Any]:
        tally: dict[str, int] = {}
        for r in results:
            tally[r["status"]] = tally.get(r["status"], 0) + 1
        for status, n in tally.items():
            counter.labels(status).inc(n)
        ok = tally.get(good, 0)
        return {good: ok, "rejected": len(results) - ok, "counts": tally, "results": results}

    # -- retention and statistics ---------------------------------------------------------------
    async def purge(self) -> int:
        before = self.clock() - self.settings.retention_seconds
        count = await self._read(self._store().purge, before)
        if count:
            self.metrics.purged.inc(count)
            log.info("purged %d predictions older than the retention window", count)
        return count

    async def _purge_forever(self) -> None:
        while True:
            try:
                await self.purge()
            except HTTPProblemError as exc:  # the store cannot be reached (logged by it): purge later
                log.debug("purge skipped: %s", exc.message)
            except Exception:  # keep purging later; the store may come back
                log.exception("purge failed")
            await asyncio.sleep(self.settings.purge_interval_seconds)

    async def summary(self, fresh: bool = False) -> EffectivenessSummary:
        async with self._summary_lock:
            now = self.clock()
            cached = self._summary
            if (
                cached is not None
                and not fresh
                and now - cached.generated_at < self.settings.summary_refresh_seconds
            ):
                return cached
            store = self._store()
            windows = sorted(set(self.settings.windows_seconds))

            def read() -> tuple[Any, Any, Any]:
                counts = {w: store.prediction_counts(now - w) for w in windows}
                return store.arms(), counts, store.labelled(now - windows[-1])

            arms, counts, rows = await self._read(read)
            summary = await asyncio.to_thread(
                lambda: summarize(
                    now=now,
                    arms=arms,
                    counts=counts,
                    rows=rows,
                    windows=windows,
                    retention_seconds=self.settings.retention_seconds,
                    control_variant=self.settings.control_variant,
                    ab=self.settings.ab,
                )
            )
            self._summary = summary
            self.metrics.summary.summary = summary
            return summary

    async def size_bytes(self) -> int:
        return await self._read(self._store().size_bytes)

    async def ready(self) -> bool:
        """Whether the store answers; asks it at most every readiness_check_seconds (Link.needs_check),
        one check at a time however many probes come, waited for at most
        READINESS_CHECK_TIMEOUT_SECONDS (then the last known state answers)."""
        store = self.store
        if store is None:
            return False
        if self._readiness_check is None and store.needs_check(self.settings.readiness_check_seconds):
            self._readiness_check = asyncio.ensure_future(self._run(store.check))
            self._readiness_check.add_done_callback(self._readiness_done)
        check = self._readiness_check
        if check is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(check), READINESS_CHECK_TIMEOUT_SECONDS)
            if check.done() and not check.cancelled() and check.exception() is not None:
                return False  # the database answered SELECT 1 with an error
        return store.up

    def _readiness_done(self, check: asyncio.Future[bool]) -> None:
        self._readiness_check = None
        if not check.cancelled() and check.exception() is not None:
            log.warning("readiness check failed: %s", check.exception())


def _result(index: int, request_id: str | None, status: str, error: str | None) -> dict[str, Any]:
    out: dict[str, Any] = {"index": index, "request_id": request_id, "status": status}
    if error is not None:
        out["error"] = error
    return out


def _json(status: int, payload: Any) -> Response:
    return Response(orjson.dumps(payload), status_code=status, media_type="application/json")


async def read_limited(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise HTTPProblemError(413, f"request body of {declared} bytes is over the {limit}-byte limit")
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPProblemError(413, f"request body is over the {limit}-byte limit")
        chunks.append(chunk)
    return b"".join(chunks)


def create_app(
    settings: JoinerSettings | None = None,
    clock: Clock = time.time,
    labels: LabelTopicSettings | None = None,
) -> FastAPI:
    settings = settings or JoinerSettings()
    joiner = Joiner(settings, clock, labels)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await joiner.start()
        yield
        await joiner.stop()

    api = FastAPI(title="modeldeploy label joiner", lifespan=lifespan)
    api.state.joiner = joiner

    @api.exception_handler(HTTPProblemError)
    async def problem(_: Request, exc: HTTPProblemError) -> Response:
        joiner.metrics.rejected_requests.labels(str(exc.status)).inc()
        if exc.retry_after is None:
            return _json(exc.status, {"error": exc.message})
        answer = _json(exc.status, {"error": exc.message, "retry_after_seconds": exc.retry_after})
        answer.headers["retry-after"] = str(exc.retry_after)
        return answer

    @api.post("/v1/predictions")
    async def predictions(request: Request) -> Response:
        body = await read_limited(request, settings.max_body_bytes)
        return _json(200, await joiner.add_predictions(body))

    @api.post("/v1/feedback")
    async def feedback(request: Request) -> Response:
        body = await read_limited(request, settings.max_body_bytes)
        return _json(200, await joiner.add_feedback(body))

    @api.get("/v1/effectiveness")
    async def effectiveness(fresh: bool = False) -> Response:
        summary = await joiner.summary(fresh)
        return Response(summary.model_dump_json(), media_type="application/json")

    @api.get("/metrics")
    async def metrics() -> Response:
        if joiner.store is not None:
            try:
                await joiner.summary()
            except HTTPProblemError:  # the store cannot be reached (logged by it): the last statistics
                pass
            except Exception:  # stale statistics beat no metrics at all
                log.exception("statistics refresh failed")
        return Response(generate_latest(joiner.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @api.get("/healthz")
    async def healthz() -> Response:
        return _json(200, {"status": "alive"})

    @api.get("/readyz")
    async def readyz() -> Response:
        store = joiner.store
        if store is None:
            return _json(503, {"ready": False})
        if not await joiner.ready():
            answer = _json(503, {"ready": False, "store": store.dialect.name, "reason": "store unreachable"})
            answer.headers["retry-after"] = str(store.retry_after())
            return answer
        return _json(200, {"ready": True, "store": store.dialect.name})

    return api


def main(settings: JoinerSettings | None = None) -> int:
    import uvicorn

    settings = settings or JoinerSettings()
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    from modeldeploy_serving.slowclients import configure

    uvicorn.run(
        create_app(settings, labels=label_topic_settings()),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        access_log=False,
        server_header=False,
        # The model server's and the router's HTTP protocol: head and body read deadlines, and a refused
        # body (413 by its Content-Length) read and dropped before the close, so that its answer is not
        # destroyed by a reset (slowclients.py). Plain uvicorn had neither here.
        http=configure(settings.header_read_timeout_seconds, settings.body_read_timeout_seconds),
        timeout_keep_alive=settings.keep_alive_seconds,  # type: ignore[arg-type]  # a float works
    )
    return 0
