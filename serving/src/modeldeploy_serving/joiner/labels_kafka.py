"""Labels from a Kafka topic (spec.effectiveness.labels.kafka), beside POST /v1/feedback.

Each record's value is what one feedback request's body may be: one label {"request_id": ..., "label":
..., "time": ...} or a batch {"labels": [...]}. Every label is checked and joined exactly as over HTTP
(Joiner.join_feedback): an unknown or expired request id, a duplicate, a conflict, a label of the wrong
type or class is counted (modeldeploy_joiner_labels_total{outcome}) and logged with the record's
topic/partition/offset, and never holds back the rest. An unreadable record (not JSON, not an object,
a tombstone) is one `invalid` item.

At least once: one poll's records are joined in one store transaction, and their offsets are committed
(synchronously) only after it. A store failure stores nothing and commits nothing: the consumer seeks
back to the batch's first offsets and consumes it again after retry_seconds. A crash between the store
write and the commit redelivers the batch; its labels then come back as `duplicate` (same label) or
`conflict` (another label; the first one is kept), counted, never stored twice.

The client is confluent-kafka, as for stream mode (docs/stream.md says why); its calls block, so they
run in one thread of their own, never concurrently.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import socket
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from modeldeploy_contract.stream_settings import LabelTopicSettings
from modeldeploy_serving.joiner.parse import BodyError, Feedback, Invalid, TooManyItemsError, parse_feedback

if TYPE_CHECKING:
    from modeldeploy_serving.joiner.app import Joiner

log = logging.getLogger("modeldeploy.joiner.labels")
MAX_LOGGED_PER_BATCH = 20
"""Rejected labels logged one by one per batch; the rest are summed up in one line (all are counted)."""


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
    def __init__(self, settings: LabelTopicSettings, joiner: Joiner, consumer: Any = None) -> None:
        """`consumer`: a confluent_kafka.Consumer (or a fake with its methods); None: made from settings."""
        self.settings = settings
        self.joiner = joiner
        self.consumer = consumer
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="label-consumer")

    def _open(self) -> None:
        if self.consumer is None:
            from confluent_kafka import Consumer

            s = self.settings
            config = s.kafka_config()
            config.setdefault("client.id", s.client_id or f"modeldeploy-joiner-{socket.gethostname()}")
            self.consumer = Consumer(
                {
                    **config,
                    "group.id": s.group_id,
                    "enable.auto.commit": "false",
                    "enable.auto.offset.store": "false",
                    "auto.offset.reset": s.auto_offset_reset,
                    "session.timeout.ms": str(s.session_timeout_ms),
                }
            )
        self.consumer.subscribe([self.settings.topic])

    async def _in_thread(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)

    def _poll(self) -> list[Any]:
        s = self.settings
        good = []
        for m in self.consumer.consume(s.batch_max_records, min(1.0, s.batch_max_wait_ms / 1000.0)):
            err = m.error()
            if err is None:
                good.append(m)
            else:
                log.warning("label consumer: %s", err)
        return good

    @staticmethod
    def _offsets(messages: list[Any], *, first: bool) -> dict[tuple[str, int], int]:
        out: dict[tuple[str, int], int] = {}
        for m in messages:
            key = (m.topic(), m.partition())
            if first:
                out.setdefault(key, m.offset())
            else:
                out[key] = m.offset() + 1
        return out

    def _commit(self, messages: list[Any]) -> bool:
        from confluent_kafka import TopicPartition

        offsets = self._offsets(messages, first=False)
        try:
            self.consumer.commit(
                offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()], asynchronous=False
            )
        except Exception as exc:  # a rebalance took a partition: its labels come again, as duplicates
            log.warning("label offsets not committed (they will be joined again, as duplicates): %s", exc)
            return False
        return True

    def _rewind(self, messages: list[Any]) -> None:
        from confluent_kafka import TopicPartition

        for (topic, partition), offset in self._offsets(messages, first=True).items():
            try:
                self.consumer.seek(TopicPartition(topic, partition, offset))
            except Exception as exc:  # not assigned any more: its new owner starts at the committed offset
                log.warning("cannot seek %s[%d] back to %d: %s", topic, partition, offset, exc)

    def _close(self) -> None:
        if self.consumer is not None:
            self.consumer.close()

    async def run(self, stop: asyncio.Event) -> None:
        """Consume, join, commit until `stop` is set (the batch in hand is finished first)."""
        from modeldeploy_serving.joiner.app import HTTPProblemError

        metrics = self.joiner.metrics
        try:
            await self._in_thread(self._open)
            log.info("consuming labels from %s in group %s", self.settings.topic, self.settings.group_id)
            while not stop.is_set():
                messages = await self._in_thread(self._poll)
                if not messages:
                    continue
                items, where = items_of(messages, self.joiner.settings.max_batch_items)
                try:
                    answer = await self.joiner.join_feedback(items)
                except HTTPProblemError as exc:
                    metrics.label_batches.labels("store_failed").inc()
                    log.warning(
                        "%d label records not stored (%s); consuming them again in %g s",
                        len(messages),
                        exc.message,
                        self.settings.retry_seconds,
                    )
                    await self._in_thread(self._rewind, messages)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), self.settings.retry_seconds)
                    continue
                _report(answer, where)
                committed = await self._in_thread(self._commit, messages)
                metrics.label_batches.labels("committed" if committed else "commit_failed").inc()
        except asyncio.CancelledError:
            raise
        except Exception:  # the consumer failed: the joiner goes on serving HTTP; restart to consume again
            log.exception("the label consumer stopped")
        finally:
            with contextlib.suppress(Exception):
                await self._in_thread(self._close)
            self._thread.shutdown(wait=False)


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
