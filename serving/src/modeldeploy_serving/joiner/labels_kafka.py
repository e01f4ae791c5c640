"""Labels from a Kafka topic (spec.effectiveness.labels.kafka), beside POST /v1/feedback.

Each record's value is what one feedback request's body may be: one label {"request_id": ..., "label":
..., "time": ...} or a batch {"labels": [...]}. Every label is checked and joined exactly as over HTTP
(Joiner.join_feedback): an unknown or expired request id, a duplicate, a conflict, a label of the wrong
type or class is counted (modeldeploy_joiner_labels_total{outcome}) and logged with the record's
topic/partition/offset, and never holds back the rest. An unreadable record (not JSON, not an object,
a tombstone) is one `invalid` item.

At least once: one poll's records are joined in one store transaction, and their offsets are committed
(synchronously) only after it. A crash between the store write and the commit redelivers the batch;
its labels then come back as `duplicate` (same label) or `conflict` (another label; the first one is
kept), counted, never stored twice. What can go wrong, and what happens then:

- The store cannot be reached (its database connection is lost and no new one can be made yet;
  store.py reconnects by itself): nothing is committed, the batch is consumed again after
  retry_seconds, whole, in one transaction, until the store is back; then every label of it is
  joined once and counted once. Not logged per batch: the store logs the outage's start and end.
- The store refuses the batch. Each label is then tried alone, in a transaction of its own. When
  every one is refused, the store is down: nothing is committed, the consumer seeks back to the
  batch's first offsets and consumes it again after retry_seconds. When some are stored, the refused
  ones are tried once more, and a label refused again while others of its batch were stored is a
  *poison* label (the store will never take it; before parse.py refused NUL, an id with NUL was one
  on PostgreSQL): counted as `store_refused`, logged with its record's place and skipped, so it never
  holds its partition back. A batch of nothing but poison labels counts as the store down: it is
  retried until a later record of its partition shows the store working, then skipped.
- The broker goes away: polls return nothing (librdkafka reconnects by itself) and a commit fails.
  Offsets stored but not committed are kept and committed with the next batch, or alone every
  retry_seconds, so labels stored before the outage are not consumed again once the broker is back.
- The consumer fails (a fatal client error, anything unexpected): it is closed and a new one is made
  after retry_seconds, doubling up to MAX_RESTART_SECONDS while it keeps failing, and goes on from the
  group's committed offsets; counted in modeldeploy_joiner_label_consumer_restarts_total.

Lag (modeldeploy_joiner_label_topic_lag{topic,partition}: end offset - committed offset) is exported
every lag_interval_seconds, as stream mode does (modeldeploy_serving.kafka_lag).

The client is confluent-kafka, as for stream mode (docs/stream.md says why); its calls block, so they
run in one thread of their own, never concurrently.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import socket
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from modeldeploy_contract.stream_settings import LabelTopicSettings
from modeldeploy_serving.joiner.parse import BodyError, Feedback, Invalid, TooManyItemsError, parse_feedback
from modeldeploy_serving.kafka_lag import PartitionKey, consumer_lag

if TYPE_CHECKING:
    from modeldeploy_serving.joiner.app import Joiner

log = logging.getLogger("modeldeploy.joiner.labels")
MAX_LOGGED_PER_BATCH = 20
"""Rejected labels logged one by one per batch; the rest are summed up in one line (all are counted)."""
MAX_RESTART_SECONDS = 60.0
"""Longest wait before a new consumer while it keeps failing (the first wait is retry_seconds)."""
UNREACHABLE = "unreachable"
"""What `_join` answers when the store cannot be reached: the batch is consumed again, whole."""
STORE_REFUSED = "store_refused"
"""Status of a poison label: the store refused it alone while it stored others of its batch."""


class ConsumerFailedError(Exception):
    """The Kafka client cannot go on (a fatal error): a new consumer has to be made."""


def items_of(messages: list[Any], max_items: int) -> tuple[list[Feedback | Invalid], list[str]]:
    """The label items of a poll's records, indexed across the batch, and where each came from."""
    items: list[Feedback | Invalid] = []
    where: list[str] = []
    for m in messages:
        origin = f"{m.topic()}/{m.partition()}/{m.offset()}"
        value = m.value()
        try:
            if not value:
                raise BodyError("the record has no value")
            parsed = parse_feedback(value, max_items)
        except (BodyError, TooManyItemsError) as exc:
            parsed = [Invalid(0, None, f"unreadable record: {exc}"[:300])]
        for item in parsed:
            items.append(dataclasses.replace(item, index=len(items)))
            where.append(origin)
    return items, where


class LabelTopicConsumer:
    def __init__(
        self, settings: LabelTopicSettings, joiner: Joiner, new_consumer: Callable[[], Any] | None = None
    ) -> None:
        """`new_consumer`: makes a confluent_kafka.Consumer (or a fake with its methods), once per
        (re)start; None: from the settings."""
        self.settings = settings
        self.joiner = joiner
        self._new_consumer = new_consumer or self._kafka_consumer
        self.consumer: Any = None
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="label-consumer")
        self._pending: dict[PartitionKey, int] = {}
        """Next offsets of labels stored but not committed yet (a commit failed): committed later."""
        self._next_commit_retry = 0.0
        self._next_lag = 0.0
        self._lag_series: set[PartitionKey] = set()
        self._restart_delay = settings.retry_seconds

    # -- consumer thread: every call on the consumer --------------------------------------------
    def _kafka_consumer(self) -> Any:
        from confluent_kafka import Consumer

        s = self.settings
        config = s.kafka_config()
        config.setdefault("client.id", s.client_id or f"modeldeploy-joiner-{socket.gethostname()}")
        return Consumer(
            {
                **config,
                "group.id": s.group_id,
                "enable.auto.commit": "false",
                "enable.auto.offset.store": "false",
                "auto.offset.reset": s.auto_offset_reset,
                "session.timeout.ms": str(s.session_timeout_ms),
            }
        )

    def _open(self) -> None:
        self.consumer = self._new_consumer()
        self.consumer.subscribe([self.settings.topic], on_revoke=self._on_revoke)

    async def _in_thread(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)

    def _poll(self) -> list[Any]:
        s = self.settings
        self._export_lag(due_only=True)
        good = []
        for m in self.consumer.consume(s.batch_max_records, min(1.0, s.batch_max_wait_ms / 1000.0)):
            err = m.error()
            if err is None:
                good.append(m)
            elif err.fatal():
                raise ConsumerFailedError(f"the label consumer failed: {err}")
            else:  # transient (the broker away, a partition moving): librdkafka retries by itself
                log.warning("label consumer: %s", err)
        return good

    @staticmethod
    def _offsets(messages: list[Any], *, first: bool) -> dict[PartitionKey, int]:
        out: dict[PartitionKey, int] = {}
        for m in messages:
            key = (m.topic(), m.partition())
            if first:
                out.setdefault(key, m.offset())
            else:
                out[key] = m.offset() + 1
        return out

    def _commit(self, messages: list[Any]) -> bool:
        """Commit the batch's offsets, and any kept from a failed commit before; False: kept for later
        (a commit covers every earlier offset of its partition, so the next one makes up for it)."""
        from confluent_kafka import TopicPartition

        for key, offset in self._offsets(messages, first=False).items():
            self._pending[key] = max(offset, self._pending.get(key, 0))
        if not self._pending:
            return True
        try:
            self.consumer.commit(
                offsets=[TopicPartition(t, p, o) for (t, p), o in self._pending.items()], asynchronous=False
            )
        except Exception as exc:  # the broker away, or a rebalance took a partition (dropped in _on_revoke)
            self._next_commit_retry = time.monotonic() + self.settings.retry_seconds
            log.warning("label offsets not committed yet (kept, committed with the next batch): %s", exc)
            return False
        self._pending.clear()
        self._export_lag(due_only=False)
        return True

    def _retry_commit(self) -> bool | None:
        """Commit kept offsets when due; None when there was nothing to do."""
        if not self._pending or time.monotonic() < self._next_commit_retry:
            return None
        return self._commit([])

    def _on_revoke(self, consumer: Any, partitions: list[Any]) -> None:
        """Partitions going elsewhere: commit what was stored of them while they are still ours (best
        effort: if it fails, their new owner consumes those labels again, as duplicates)."""
        from confluent_kafka import TopicPartition

        gone = {(p.topic, p.partition) for p in partitions}
        kept = [TopicPartition(t, p, o) for (t, p), o in self._pending.items() if (t, p) in gone]
        if kept:
            try:
                consumer.commit(offsets=kept, asynchronous=False)
            except Exception as exc:
                log.warning("offsets of revoked partitions not committed (consumed again): %s", exc)
        for key in gone:
            self._pending.pop(key, None)
        self._drop_lag(gone)

    def _export_lag(self, *, due_only: bool) -> None:
        if due_only and time.monotonic() < self._next_lag:
            return
        self._next_lag = time.monotonic() + self.settings.lag_interval_seconds
        try:
            lags = consumer_lag(self.consumer)
        except Exception as exc:  # the broker away: the last values stay; lag is information only
            log.debug("label topic lag not read: %s", exc)
            return
        gauge = self.joiner.metrics.label_lag
        for (topic, partition), lag in lags.items():
            gauge.labels(topic, str(partition)).set(lag)
        self._drop_lag(self._lag_series - set(lags))
        self._lag_series = set(lags)

    def _drop_lag(self, keys: set[PartitionKey]) -> None:
        for topic, partition in keys:
            with contextlib.suppress(KeyError):
                self.joiner.metrics.label_lag.remove(topic, str(partition))
        self._lag_series -= keys

    def _rewind(self, messages: list[Any]) -> None:
        from confluent_kafka import TopicPartition

        for (topic, partition), offset in self._offsets(messages, first=True).items():
            try:
                self.consumer.seek(TopicPartition(topic, partition, offset))
            except Exception as exc:  # not assigned any more: its new owner starts at the committed offset
                log.warning("cannot seek %s[%d] back to %d: %s", topic, partition, offset, exc)

    def _close(self) -> None:
        """Commit what is kept (best effort), then leave the group. A new consumer starts from the
        committed offsets, so nothing of this one's state is carried over."""
        if self.consumer is None:
            return
        try:
            if self._pending:
                with contextlib.suppress(Exception):
                    self._commit([])
            self.consumer.close()
        finally:
            self.consumer = None
            self._pending.clear()
            self._drop_lag(set(self._lag_series))

    # -- event loop -----------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        """Consume, join, commit until `stop` is set (the batch in hand is finished first); a consumer
        that fails is replaced by a new one after a growing pause (module docstring)."""
        metrics = self.joiner.metrics
        try:
            while not stop.is_set():
                try:
                    await self._in_thread(self._open)
                    log.info(
                        "consuming labels from %s in group %s", self.settings.topic, self.settings.group_id
                    )
                    await self._consume(stop)
                except asyncio.CancelledError:
                    raise
                except Exception:  # the joiner goes on serving HTTP meanwhile
                    metrics.label_consumer_restarts.inc()
                    log.exception(
                        "the label consumer failed; a new one starts in %g s from the committed offsets",
                        self._restart_delay,
                    )
                finally:
                    with contextlib.suppress(Exception):
                        await self._in_thread(self._close)
                if stop.is_set():
                    break
                await _pause(stop, self._restart_delay)
                self._restart_delay = min(MAX_RESTART_SECONDS, 2 * self._restart_delay)
        finally:
            self._thread.shutdown(wait=False)

    async def _consume(self, stop: asyncio.Event) -> None:
        metrics = self.joiner.metrics
        while not stop.is_set():
            messages = await self._in_thread(self._poll)
            if not messages:
                await self._in_thread(self._retry_commit)
                continue
            items, where = items_of(messages, self.joiner.settings.max_batch_items)
            answer = await self._join(items, where)
            if not isinstance(answer, dict):  # the store is down (None or UNREACHABLE): nothing committed
                metrics.label_batches.labels("store_failed").inc()
                (log.debug if answer == UNREACHABLE else log.warning)(
                    "%d label records not stored (the store %s); consuming them again in %g s",
                    len(messages),
                    "cannot be reached" if answer == UNREACHABLE else "refused all",
                    self.settings.retry_seconds,
                )
                await self._in_thread(self._rewind, messages)
                await _pause(stop, self.settings.retry_seconds)
                continue
            _report(answer, where)
            committed = await self._in_thread(self._commit, messages)
            metrics.label_batches.labels("committed" if committed else "commit_failed").inc()
            self._restart_delay = self.settings.retry_seconds  # working again: the next failure waits little

    async def _join(self, items: list[Feedback | Invalid], where: list[str]) -> dict[str, Any] | str | None:
        """The batch's answer; None when the store refused every label of it; UNREACHABLE when it
        cannot be reached (a lost connection is no sign of a poison label: the batch is not split)."""
        from modeldeploy_serving.joiner.app import HTTPProblemError

        try:
            return await self.joiner.join_feedback(items)
        except HTTPProblemError as exc:
            if exc.store_unreachable:
                return UNREACHABLE
            log.warning(
                "a batch of %d labels was refused (%s); trying them one by one", len(items), exc.message
            )
        results: list[dict[str, Any] | None] = [None] * len(items)
        try:
            refused = await self._join_each(items, results)
            if len(refused) == len(items):
                return None
            refused_twice = await self._join_each(refused, results)
        except _StoreUnreachableError:
            # Labels stored one by one before the store went come again as duplicates (counted so).
            return UNREACHABLE
        for item in refused_twice:  # refused twice, while others were stored
            self.joiner.metrics.labels.labels(STORE_REFUSED).inc()
            reason = "the store refused this label alone while it stored others of its batch"
            status = {"index": item.index, "request_id": item.request_id, "status": STORE_REFUSED}
            results[item.index] = {**status, "error": reason}
            log.error("poison label %s (record %s) skipped: %s", item.request_id, where[item.index], reason)
        done = [r for r in results if r is not None]
        joined = sum(r["status"] == "joined" for r in done)
        return {"joined": joined, "rejected": len(done) - joined, "results": done}

    async def _join_each(
        self, items: list[Feedback | Invalid], results: list[dict[str, Any] | None]
    ) -> list[Feedback | Invalid]:
        """Each item in a transaction of its own (answers into `results` by index); the refused ones."""
        from modeldeploy_serving.joiner.app import HTTPProblemError

        refused = []
        for item in items:
            try:
                answer = await self.joiner.join_feedback([item], quiet=True)
            except HTTPProblemError as exc:
                if exc.store_unreachable:
                    raise _StoreUnreachableError from exc
                refused.append(item)
                continue
            results[item.index] = answer["results"][0]
        return refused


class _StoreUnreachableError(Exception):
    pass


async def _pause(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


def _report(answer: dict[str, Any], where: list[str]) -> None:
    rejected = [r for r in answer["results"] if r["status"] != "joined"]
    for r in rejected[:MAX_LOGGED_PER_BATCH]:
        log.warning(
            "label %s (record %s) not joined: %s: %s",
            r.get("request_id"),
            where[r["index"]],
            r["status"],
            r.get("error", ""),
        )
    if len(rejected) > MAX_LOGGED_PER_BATCH:
        log.warning("... and %d more labels of this batch not joined", len(rejected) - MAX_LOGGED_PER_BATCH)
