"""The stream consumer: Kafka records in, the data plane's predictions out, at least once.

One consumer thread talks to the consumer (poll, commit, lag; never concurrently), the event loop
parses, scores through the DataPlane (the same batching, drift windows and metrics as REST) and
produces, and one thread serves the producer's delivery reports. A batch is one poll's records:

    consumed -> parsed -> predicted -> produced (outputs + dead letters) -> acknowledged -> committed

- At least once: a batch's offsets are committed only when the broker acknowledged every record it
  produced (outputs and dead letters: acks=all, idempotent producer), and batches are committed in
  the order they were consumed, so a commit never covers a record whose output is not stored. A
  process killed at any point leaves the records after the last commit to be scored again (their
  outputs are then duplicates, with the same request id).
- Backpressure: at most max_in_flight_batches batches between consumed and committed; polling
  waits for the oldest one meanwhile (and the producer's queue is bounded too).
- Order: batches are produced in the order they were consumed (scoring may overlap).
- Bad records go to the dead-letter topic with the reason in headers; they count as done for the
  commit, so a bad record never holds its partition back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import numpy.typing as npt

from modeldeploy_contract.stream_settings import StreamSettings
from modeldeploy_serving import metrics
from modeldeploy_serving.dataplane import DataPlane
from modeldeploy_serving.joiner.feed import JoinerFeed
from modeldeploy_serving.kafka_lag import consumer_lag
from modeldeploy_serving.model import LoadedModel
from modeldeploy_serving.predlog import PiiPolicy, PredictionLog, RecordEncoder, sampled
from modeldeploy_serving.rows import ListRows
from modeldeploy_serving.stream.records import (
    PREDICTION_FAILED,
    FeatureRows,
    OutputEncoder,
    Parsed,
    RecordError,
    RecordParser,
    assemble,
)

log = logging.getLogger(__name__)

TopicPartitionKey = tuple[str, int]
Bad = tuple[Any, RecordError, str]  # message, why, request id


class StreamError(Exception):
    """The stream cannot go on (a delivery failed for good, the consumer failed): exit non-zero;
    nothing after the last commit is lost, a restart scores it again."""


class Batch:
    """The records of one poll, from consumed to committed."""

    __slots__ = ("acked", "error", "messages", "offsets", "produced", "remaining", "started")

    def __init__(self, messages: list[Any], loop: asyncio.AbstractEventLoop) -> None:
        self.messages = messages
        self.started = time.perf_counter()
        self.offsets: dict[TopicPartitionKey, int] = {}  # next offset per partition (filled when parsed)
        self.remaining = -1  # set before the first produce; only the delivery thread lowers it after
        self.error: str | None = None
        self.acked = threading.Event()
        self.produced = loop.create_future()  # the next batch produces after this one (order)


class StreamRunner:
    def __init__(
        self,
        settings: StreamSettings,
        dataplane: DataPlane,
        prediction_log: PredictionLog | None = None,
        log_labels: tuple[str, str] = ("", ""),
        feed: JoinerFeed | None = None,
    ) -> None:
        """`prediction_log`: one record per input record, REST's shape (docs/serving.md); `log_labels`:
        the (ModelDeployment, variant) written into them. `feed`: the label joiner's prediction
        records (spec.effectiveness), one per scored input record under its output record's request
        id, as the REST servers send them."""
        self.settings = settings
        self.dataplane = dataplane
        self.plog = prediction_log
        self.feed = feed
        self.log_labels = log_labels
        self.state = "starting"
        self._loop: asyncio.AbstractEventLoop | None = None
        self._consumer_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kafka-consumer")
        self._inflight: deque[Batch] = deque()
        self._lock = threading.Lock()
        self._to_commit: dict[TopicPartitionKey, int] = {}
        self._committed: dict[TopicPartitionKey, int] = {}
        self._scored_up_to: dict[TopicPartitionKey, int] = {}
        self._next_lag = 0.0
        self._closing = threading.Event()
        self._wakeup: asyncio.Event | None = None
        self._fatal: str | None = None
        self.consumer: Any = None
        self.producer: Any = None

    # -- setup ------------------------------------------------------------------------------------
    def _clients(self) -> None:
        from confluent_kafka import Consumer, Producer

        s = self.settings
        common = s.kafka_config()
        common.setdefault("client.id", s.client_id or f"modeldeploy-stream-{socket.gethostname()}")
        self.producer = Producer(
            {
                "linger.ms": "5",
                "queue.buffering.max.messages": str(max(100_000, 4 * s.batch_max_records)),
                **common,
                "enable.idempotence": "true",
                "acks": "all",
            }
        )
        self.consumer = Consumer(
            {
                "fetch.wait.max.ms": "100",
                **common,
                "group.id": s.group_id,
                "enable.auto.commit": "false",
                "enable.auto.offset.store": "false",
                "auto.offset.reset": s.auto_offset_reset,
                "session.timeout.ms": str(s.session_timeout_ms),
                **({"group.instance.id": s.group_instance_id} if s.group_instance_id else {}),
            }
        )

    async def _wait_for_model(self, stop: asyncio.Event) -> LoadedModel | None:
        while self.dataplane.state == "loading" and not stop.is_set():
            await asyncio.sleep(0.05)
        if self.dataplane.state == "failed":
            raise StreamError(f"the model failed to load: {self.dataplane.error}")
        return self.dataplane.model

    # -- the loop ---------------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        """Consume until `stop` is set, then finish the batches in flight, commit and close."""
        self._loop = asyncio.get_running_loop()
        self._wakeup = asyncio.Event()
        model = await self._wait_for_model(stop)
        if model is None:
            return
        s = self.settings
        parser = RecordParser(model.feature_names, model.output_names, s.max_record_bytes, s.max_record_rows)
        encoder = OutputEncoder(model.name, model.version, s.revision)
        self._clients()
        delivery = threading.Thread(target=self._serve_deliveries, name="kafka-delivery", daemon=True)
        delivery.start()
        await self._in_consumer_thread(self._subscribe)
        self.state = "running"
        log.info(
            "streaming %s -> %s (dead letters: %s) in group %s with model %s %s",
            s.input_topic,
            s.output_topic,
            s.dead_letter,
            s.group_id,
            model.name,
            model.version,
        )
        tasks: set[asyncio.Task[None]] = set()
        previous: asyncio.Future[None] | None = None
        try:
            while not stop.is_set():
                if self._fatal:
                    raise StreamError(self._fatal)
                if len(self._inflight) >= s.max_in_flight_batches:
                    self._wakeup.clear()
                    if len(self._inflight) >= s.max_in_flight_batches and not self._fatal:
                        await self._wait(self._wakeup, stop)
                    continue
                messages = await self._in_consumer_thread(self._poll)
                if not messages:
                    continue
                batch = Batch(messages, self._loop)
                self._inflight.append(batch)
                metrics.STREAM_IN_FLIGHT.set(len(self._inflight))
                task = asyncio.create_task(self._process(batch, previous, model, parser, encoder))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                previous = batch.produced
        finally:
            self.state = "draining"
            await self._drain(tasks)

    async def _wait(self, event: asyncio.Event, stop: asyncio.Event) -> None:
        waiters = [asyncio.ensure_future(event.wait()), asyncio.ensure_future(stop.wait())]
        try:
            await asyncio.wait(waiters, timeout=1.0, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()

    async def _in_consumer_thread(self, fn: Any) -> Any:
        assert self._loop is not None
        return await self._loop.run_in_executor(self._consumer_thread, fn)

    async def _drain(self, tasks: set[asyncio.Task[None]]) -> None:
        """Finish what was consumed: score, produce, wait for acknowledgements, commit, close."""
        if self.consumer is None:
            self._consumer_thread.shutdown(wait=False)
            return
        deadline = time.monotonic() + 30
        if tasks:
            await asyncio.wait(tasks, timeout=30)
        while self._inflight and not self._fatal and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        await self._in_consumer_thread(self._close)
        self._closing.set()
        self._consumer_thread.shutdown(wait=True)
        self.state = "stopped"

    # -- consumer thread --------------------------------------------------------------------------
    def _subscribe(self) -> None:
        self.consumer.subscribe(
            [self.settings.input_topic], on_assign=self._on_assign, on_revoke=self._on_revoke
        )

    def _poll(self) -> list[Any]:
        """Commit what was acknowledged, export lag when due, then poll one batch (consumer thread)."""
        self._commit(asynchronous=True)
        if time.monotonic() >= self._next_lag:
            self._next_lag = time.monotonic() + self.settings.lag_interval_seconds
            self._export_lag()
        s = self.settings
        messages: list[Any] = self.consumer.consume(s.batch_max_records, s.batch_max_wait_ms / 1000.0)
        good = []
        for m in messages:
            err = m.error()
            if err is None:
                good.append(m)
            elif err.fatal():
                self._fatal = f"consumer failed: {err}"
            else:
                log.warning("consumer: %s", err)
        return good

    def _commit(self, *, asynchronous: bool) -> None:
        from confluent_kafka import KafkaException, TopicPartition

        with self._lock:
            offsets, self._to_commit = self._to_commit, {}
        if not offsets:
            return
        tps = [TopicPartition(t, p, o) for (t, p), o in offsets.items()]
        try:
            self.consumer.commit(offsets=tps, asynchronous=asynchronous)
        except KafkaException as exc:  # a rebalance took the partition: its new owner scores it again
            metrics.STREAM_COMMITS.labels("failed").inc()
            log.warning("offset commit failed: %s", exc)
            return
        metrics.STREAM_COMMITS.labels("ok").inc()
        self._committed.update(offsets)

    def _export_lag(self) -> None:
        try:
            for (topic, partition), lag in consumer_lag(self.consumer).items():
                metrics.STREAM_LAG.labels(topic, str(partition)).set(lag)
        except Exception as exc:  # lag is information, never a reason to stop
            log.debug("lag export failed: %s", exc)

    def _on_assign(self, consumer: Any, partitions: list[Any]) -> None:
        log.info("assigned %s", ", ".join(f"{p.topic}[{p.partition}]" for p in partitions))
        self._next_lag = 0.0

    def _on_revoke(self, consumer: Any, partitions: list[Any]) -> None:
        """Before giving partitions away: wait (bounded) for the batches in flight to be acknowledged
        and commit them, so the next owner starts after them instead of scoring them again."""
        deadline = time.monotonic() + 10
        while self._inflight and not self._fatal and time.monotonic() < deadline:
            time.sleep(0.005)
        self._commit(asynchronous=False)
        for p in partitions:
            with contextlib.suppress(KeyError):
                metrics.STREAM_LAG.remove(p.topic, str(p.partition))
        log.info("revoked %s", ", ".join(f"{p.topic}[{p.partition}]" for p in partitions))

    def _close(self) -> None:
        self._commit(asynchronous=False)
        self.consumer.close()

    # -- producer ---------------------------------------------------------------------------------
    def _serve_deliveries(self) -> None:
        while not self._closing.is_set():
            self.producer.poll(0.05)
        self.producer.flush(10)

    def _delivered(self, batch: Batch) -> Any:
        def report(err: Any, _msg: Any) -> None:  # delivery thread
            if err is not None:
                batch.error = str(err)
                self._fatal = f"delivery failed: {err}"
            batch.remaining -= 1
            if batch.remaining == 0:
                batch.acked.set()
                assert self._loop is not None
                self._loop.call_soon_threadsafe(self._on_acked)

        return report

    def _on_acked(self) -> None:
        """Retire acknowledged batches from the head, in consumption order (event loop)."""
        retired = False
        while self._inflight and self._inflight[0].acked.is_set():
            batch = self._inflight[0]
            if batch.error is not None:
                return  # never commit past a record whose output may be missing
            self._inflight.popleft()
            with self._lock:
                self._to_commit.update(batch.offsets)
            metrics.STREAM_BATCH_SECONDS.labels(
                self.dataplane.metrics.model, self.dataplane.metrics.version
            ).observe(time.perf_counter() - batch.started)
            retired = True
        if retired:
            metrics.STREAM_IN_FLIGHT.set(len(self._inflight))
            assert self._wakeup is not None
            self._wakeup.set()

    def _produce_outputs(self, good: list[Any], values: list[bytes], ids: list[str], report: Any) -> None:
        """Each output record, keyed as its input, with its request id header; the producer's own
        method called in the loop (the retry on a full queue only when it is full)."""
        topic = self.settings.output_topic
        produce = self.producer.produce
        for m, value, rid in zip(good, values, ids, strict=True):
            key, headers = m.key(), [("request-id", rid.encode())]
            try:
                # positional (keyword parsing is about 0.25 µs of the call: bench/stream/cpu_bench.py),
                # in confluent-kafka's C order: topic, value, key, partition (-1: the partitioner's,
                # the default), callback (on_delivery's other name), on_delivery, timestamp (0: now,
                # the default), headers. test_stream_produce_args checks it against the keyword call.
                produce(topic, value, key, -1, report, None, 0, headers)
            except BufferError:
                self._produce(topic, value, key, headers, report)

    def _produce(self, topic: str, value: bytes, key: bytes | None, headers: Any, report: Any) -> None:
        while True:
            try:
                self.producer.produce(topic, value, key, headers=headers, on_delivery=report)
                return
            except BufferError:  # the producer's queue is full: wait for deliveries (backpressure)
                time.sleep(0.001)

    # -- prediction log ---------------------------------------------------------------------------
    def _log(
        self,
        plog: PredictionLog,
        batch: Batch,
        model: LoadedModel,
        parsed: Sequence[Parsed],
        ids: list[str],
        outputs: dict[str, Any],
        bad: list[Bad],
    ) -> None:
        """One record per input record, REST's shape: status 200 when scored; a dead letter logs its
        status (400 a bad record, 500 the model refused it) and no inputs (its value may be anything).
        The record's rows are its slice of the batch's outputs; latency is the batch's so far."""
        try:
            encode = _LogEncoder(self, model, outputs, batch.started)
            rate = plog.sample_rate
            start = 0
            for p, rid in zip(parsed, ids, strict=True):
                stop = start + p.rows
                if sampled(rid, rate):
                    rows = (
                        p.request.x
                        if p.request is not None
                        else ListRows(p.row or [], 1, len(model.feature_names))
                    )
                    plog.defer((encode, rid, rows, start, stop, "200"))
                start = stop
            for _m, error, rid in bad:
                if sampled(rid, rate):
                    plog.defer((encode, rid, None, 0, 0, "500" if error.kind == PREDICTION_FAILED else "400"))
        except Exception:  # the log must never stop the stream
            log.exception("prediction log records failed")

    # -- one batch --------------------------------------------------------------------------------
    async def _process(
        self,
        batch: Batch,
        previous: asyncio.Future[None] | None,
        model: LoadedModel,
        parser: RecordParser,
        encoder: OutputEncoder,
    ) -> None:
        try:
            await self._score_and_produce(batch, previous, model, parser, encoder)
        except Exception as exc:  # a bug: stop without committing this batch
            log.exception("stream batch failed")
            self._fatal = f"batch failed: {type(exc).__name__}: {exc}"
            if not batch.produced.done():
                batch.produced.set_result(None)

    def _parse(
        self, batch: Batch, parser: RecordParser
    ) -> tuple[list[Any], Sequence[Parsed], list[str], list[Bad], npt.NDArray[np.float32] | None]:
        """Split a batch into records to score (with their request ids) and dead letters; the last
        item is the rows to score as one matrix when the parser made it (else assemble(parsed)).

        The message accessors are mapped over the batch (Message.offset etc. are C methods: no
        Python frame per record); a batch of feature records only, none with headers (the common
        case) needs no per-record Python beyond that: bench/stream/cpu_bench.py."""
        messages = batch.messages
        if not messages:
            return [], [], [], [], None
        m_type = type(messages[0])
        results, matrix = parser.parse_batch(list(map(m_type.value, messages)))
        topics = list(map(m_type.topic, messages))
        partitions = list(map(m_type.partition, messages))
        positions = list(map(m_type.offset, messages))
        self._count_offsets(batch, list(zip(topics, partitions, strict=True)), positions)
        # the default request id: "<topic>-<partition>-<offset>" (a V2 record's own id, a header's first)
        default_ids = [f"{t}-{p}-{o}" for t, p, o in zip(topics, partitions, positions, strict=True)]
        if matrix is not None and len(matrix) == len(messages) and not any(map(m_type.headers, messages)):
            return list(messages), results, default_ids, [], matrix  # type: ignore[return-value]  # FeatureRows
        header_name = self.settings.request_id_header
        good: list[Any] = []
        parsed: list[Parsed] = []
        ids: list[str] = []
        bad: list[Bad] = []
        for m, p, default_id in zip(messages, results, default_ids, strict=True):
            headers = m.headers()
            request_id = _header(headers, header_name) if headers else None
            if isinstance(p, RecordError):
                bad.append((m, p, request_id or default_id))
                continue
            if request_id is None:
                v2_id = p.v2_id
                request_id = str(v2_id) if v2_id is not None else default_id
            good.append(m)
            parsed.append(p)
            ids.append(request_id)
        return good, parsed, ids, bad, matrix

    def _count_offsets(self, batch: Batch, keys: list[TopicPartitionKey], positions: list[int]) -> None:
        """The batch's next offset per partition, and the records consumed again (below an offset
        this process already scored: a rebalance or a failed commit), counted."""
        scored = self._scored_up_to
        offsets = batch.offsets
        offsets.update(zip(keys, [o + 1 for o in positions], strict=True))  # in order per partition: the last
        # consumed in order per partition: its first record has its lowest offset
        first = dict(zip(reversed(keys), reversed(positions), strict=True))
        if any(o < scored.get(k, -1) for k, o in first.items()):
            replayed = sum(o < scored.get(k, -1) for k, o in zip(keys, positions, strict=True))
            metrics.STREAM_REPLAYED.labels(self.dataplane.metrics.model, self.dataplane.metrics.version).inc(
                replayed
            )
        for tp, next_offset in offsets.items():
            scored[tp] = max(next_offset, scored.get(tp, -1))

    async def _score_and_produce(
        self,
        batch: Batch,
        previous: asyncio.Future[None] | None,
        model: LoadedModel,
        parser: RecordParser,
        encoder: OutputEncoder,
    ) -> None:
        s = self.settings
        good, parsed, ids, bad, matrix = self._parse(batch, parser)
        values: list[bytes] = []
        outputs: dict[str, Any] = {}
        prediction: Any = None
        if parsed:
            try:
                prediction = await self.dataplane.infer(matrix if matrix is not None else assemble(parsed))
                outputs = prediction.outputs
                values = encoder.encode(parsed, ids, outputs)
            except Exception as exc:  # the model refused the batch: its records become dead letters
                log.warning("prediction failed for a batch of %d records: %s", len(parsed), exc)
                failure = RecordError(PREDICTION_FAILED, f"{type(exc).__name__}: {exc}")
                bad.extend((m, failure, rid) for m, rid in zip(good, ids, strict=True))
                good, values = [], []
        if previous is not None:
            await previous  # produce in consumption order
        batch.remaining = len(values) + len(bad)
        report = self._delivered(batch)
        self._produce_outputs(good, values, ids, report)
        labels = (self.dataplane.metrics.model, self.dataplane.metrics.version)
        for m, error, rid in bad:
            headers = list(m.headers() or [])
            headers += [
                ("modeldeploy-error-kind", error.kind.encode()),
                ("modeldeploy-error", error.message.encode()[:4096]),
                ("modeldeploy-input", f"{m.topic()}/{m.partition()}/{m.offset()}".encode()),
                ("request-id", rid.encode()),
            ]
            self._produce(s.dead_letter, m.value() or b"", m.key(), headers, report)
            metrics.STREAM_DEAD_LETTERS.labels(*labels, error.kind).inc()
        batch.produced.set_result(None)
        if self.plog is not None:
            self._log(self.plog, batch, model, parsed if values else [], ids, outputs, bad)
        if self.feed is not None and values:
            # never blocks: a full buffer drops and counts (modeldeploy_joiner_feed_records_total)
            rows = [1] * len(parsed) if isinstance(parsed, FeatureRows) else [p.rows for p in parsed]
            self.feed.add_many(ids, rows, model.version, prediction)
        if good:
            metrics.STREAM_RECORDS.labels(*labels, "scored").inc(len(good))
        if bad:
            metrics.STREAM_RECORDS.labels(*labels, "dead_letter").inc(len(bad))


class _LogEncoder(RecordEncoder):
    """Prediction-log records of one batch, encoded a log batch at a time (PredictionLog.defer): the
    consumer's loop queues references, and the call that fills a log batch encodes it."""

    __slots__ = ("arrays", "at", "deployment", "latency_ms", "model", "outputs", "revision", "variant")

    def __init__(self, runner: StreamRunner, model: LoadedModel, outputs: dict[str, Any], started: float):
        self.deployment, self.variant = runner.log_labels
        self.revision = runner.settings.revision
        self.model = model
        self.outputs = outputs
        self.arrays: dict[str, Any] | None = None  # the outputs, C-contiguous: once per batch
        self.at = time.time()
        self.latency_ms = (time.perf_counter() - started) * 1000.0

    def body(self, item: tuple[Any, ...], policy: PiiPolicy) -> dict[str, Any]:
        _, request_id, rows, start, stop, status = item
        model = self.model
        arrays = self.arrays
        if arrays is None:  # written by orjson as the output records write them (float32 shortest)
            arrays = self.arrays = {k: np.ascontiguousarray(v) for k, v in self.outputs.items()}
        return {
            "request_id": request_id,
            "time": self.at,
            "deployment": self.deployment or model.name,
            "variant": self.variant,
            "revision": self.revision,
            "model_version": model.version,
            "inputs": {} if rows is None else policy.apply_rows(rows, model.feature_index),
            "outputs": None if rows is None else {k: v[start:stop] for k, v in arrays.items()},
            "latency_ms": self.latency_ms,
            "status": status,
        }


def _header(headers: list[tuple[str, bytes | None]] | None, name: str) -> str | None:
    if headers:
        for key, value in headers:
            if key == name and value:
                return value.decode(errors="replace")
    return None
