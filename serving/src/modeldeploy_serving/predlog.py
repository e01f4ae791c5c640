"""The prediction log's core: a personal-data policy, the record shape, a bounded buffer, and sinks.

Pure of any transport: REST (server, router) and stream mode build records with `LogRecord` and hand
them to one `PredictionLog`; the Kafka sink takes any object with confluent-kafka's Producer methods.

- Policy, per input field: `drop`, `pseudonymise` (HMAC-SHA256 with a key from a Secret, so a
  value maps to the same token everywhere and can be joined on, but cannot be reversed by hashing a
  dictionary of candidate values without the key) or `keep`; fields not named get `default`, which
  is `drop` unless said otherwise (a new field in the events is not logged in the clear by surprise).
  The sticky key (router) is always pseudonymised.
- Logging never blocks or fails a prediction: `log()` appends to a bounded buffer or, when it is
  full (the sink is slower than the traffic), drops the record and counts it. One background thread
  drains the buffer into the sink in batches; a sink error drops that batch and counts it.
"""

from __future__ import annotations

import hashlib
import io
import logging
import sys
import threading
import zlib
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import orjson

from modeldeploy_contract.predlog_settings import PredictionLogSettings

log = logging.getLogger(__name__)

Action = Literal["drop", "pseudonymise", "keep"]
TOKEN_PREFIX = "hmac:"  # noqa: S105 (the prefix of pseudonyms, not a secret)


class PolicyError(ValueError):
    pass


@dataclass(frozen=True)
class PiiPolicy:
    """What happens to each input field in the log."""

    key: bytes = field(repr=False)
    drop: frozenset[str] = frozenset()
    pseudonymise: frozenset[str] = frozenset()
    keep: frozenset[str] = frozenset()
    default: Action = "drop"
    _pads: tuple[Any, Any] = field(init=False, repr=False, compare=False)
    _logged: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        named = [self.drop, self.pseudonymise, self.keep]
        for i, a in enumerate(named):
            for b in named[i + 1 :]:
                both = a & b
                if both:
                    raise PolicyError(f"fields with two actions: {', '.join(sorted(both))}")
        if len(self.key) < 16:
            raise PolicyError("the HMAC key must be at least 16 bytes")
        # HMAC-SHA256 (RFC 2104) with its two padded-key states computed once: each token then costs
        # two hash copies, 0.57 us against hmac.digest's 1.46 us (measured), with the same value.
        block = hashlib.sha256(self.key).digest() if len(self.key) > 64 else self.key
        block = block.ljust(64, b"\0")
        inner = hashlib.sha256(bytes(b ^ 0x36 for b in block))
        outer = hashlib.sha256(bytes(b ^ 0x5C for b in block))
        object.__setattr__(self, "_pads", (inner, outer))
        object.__setattr__(self, "_logged", tuple(sorted(self.keep | self.pseudonymise)))

    @classmethod
    def from_lists(
        cls,
        key: bytes,
        drop: list[str] | None = None,
        pseudonymise: list[str] | None = None,
        keep: list[str] | None = None,
        default: Action = "drop",
    ) -> PiiPolicy:
        return cls(key, frozenset(drop or ()), frozenset(pseudonymise or ()), frozenset(keep or ()), default)

    def action(self, name: str) -> Action:
        if name in self.keep:
            return "keep"
        if name in self.pseudonymise:
            return "pseudonymise"
        if name in self.drop:
            return "drop"
        return self.default

    def token(self, value: Any) -> str:
        """The keyed pseudonym of a value: equal values (of equal JSON type) give equal tokens."""
        canonical = orjson.dumps(value, option=orjson.OPT_SORT_KEYS | orjson.OPT_SERIALIZE_NUMPY)
        inner_pad, outer_pad = self._pads
        inner = inner_pad.copy()
        inner.update(canonical)
        outer = outer_pad.copy()
        outer.update(inner.digest())
        digest: str = outer.hexdigest()
        return TOKEN_PREFIX + digest[:32]

    def apply(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        """The inputs as they may be logged. A dropped field's value is never even read (RowColumns
        builds a column only when asked: measured 9.4 us a record reading all 14 churn features,
        see docs/benchmarks.md#prediction-log)."""
        out: dict[str, Any] = {}
        # With the default drop (the usual policy) only the listed fields are looked at: a record of
        # the churn model's 14 features logging 4 costs 4 lookups, not 14.
        names = (n for n in self._logged if n in inputs) if self.default == "drop" else iter(inputs)
        for name in names:
            action = self.action(name)
            if action == "keep":
                out[name] = inputs[name]
            elif action == "pseudonymise":
                value = inputs[name]
                # A column (the rows of one REST request, RowColumns) gets one token per row, so each
                # row's value joins like the same value in a one-record stream log.
                out[name] = [self.token(v) for v in value] if isinstance(value, list) else self.token(value)
        return out


def sampled(request_id: str, rate: float) -> bool:
    """Whether a request is logged: a pure function of its id, so the router and the server (and a
    retry) decide alike."""
    if rate >= 1.0:
        return True
    if rate <= 0.0:
        return False
    return zlib.crc32(request_id.encode()) < rate * 2**32


@dataclass(slots=True)
class LogRecord:
    request_id: str
    time: float
    deployment: str
    variant: str
    revision: str
    model_version: str
    inputs: Mapping[str, Any]
    outputs: Any
    latency_ms: float
    status: str
    sticky_key: str | None = None

    def encode(self, policy: PiiPolicy) -> bytes:
        """One JSON document, the policy applied (inputs and sticky key); outputs are kept."""
        body: dict[str, Any] = {
            "request_id": self.request_id,
            "time": self.time,
            "deployment": self.deployment,
            "variant": self.variant,
            "revision": self.revision,
            "model_version": self.model_version,
            "inputs": policy.apply(self.inputs),
            "outputs": self.outputs,
            "latency_ms": self.latency_ms,
            "status": self.status,
        }
        if self.sticky_key is not None:
            body["sticky_key"] = policy.token(self.sticky_key)
        return orjson.dumps(body, default=_to_log, option=orjson.OPT_SERIALIZE_NUMPY)


def _to_log(value: Any) -> Any:
    """orjson's hook for lazy values (LazyOutputs): converted in the drain thread, not the request."""
    to_log = getattr(value, "to_log", None)
    if to_log is None:
        raise TypeError(f"{type(value).__name__} is not loggable")
    return to_log()


class Sink(Protocol):
    def write(self, records: list[bytes]) -> None: ...

    def close(self) -> None: ...


class JsonLinesSink:
    """One JSON document per line on a text stream (stdout by default, for log collectors)."""

    def __init__(self, stream: io.TextIOBase | Any = None) -> None:
        self._stream = stream if stream is not None else sys.stdout

    def write(self, records: list[bytes]) -> None:
        self._stream.write("".join(r.decode() + "\n" for r in records))
        self._stream.flush()

    def close(self) -> None:
        self._stream.flush()


class KafkaSink:
    """Records to a Kafka topic through a confluent-kafka Producer (or anything with its methods).
    A full producer queue drops the record (counted) instead of waiting."""

    def __init__(self, producer: Any, topic: str) -> None:
        self._producer = producer
        self._topic = topic
        self.dropped = 0
        self.failed = 0
        self.delivered = 0

    def _report(self, err: Any, _msg: Any) -> None:
        if err is None:
            self.delivered += 1
        else:
            self.failed += 1

    def write(self, records: list[bytes]) -> None:
        for r in records:
            try:
                self._producer.produce(self._topic, r, on_delivery=self._report)
            except BufferError:
                self.dropped += 1
        self._producer.poll(0)

    def close(self) -> None:
        self._producer.flush(10)


class PredictionLog:
    """A bounded buffer in front of a sink, drained by one background thread."""

    def __init__(
        self,
        sink: Sink,
        policy: PiiPolicy,
        sample_rate: float = 1.0,
        capacity: int = 10_000,
        batch: int = 500,
        count: Callable[[str, int], None] | None = None,
    ) -> None:
        """`count(outcome, n)`: told of records `written`, `dropped` (buffer full) and `failed` (the
        sink refused them), e.g. to export them as metrics; called from the drain thread except for
        drops."""
        self.sink = sink
        self.policy = policy
        self.sample_rate = sample_rate
        self.capacity = capacity
        self._batch = batch
        self._buffer: deque[LogRecord] = deque()
        self._wake = threading.Event()
        self._stop = False
        self.logged = 0
        self.dropped = 0  # buffer full: the sink is slower than the traffic
        self.failed = 0  # records of batches the sink refused
        self.written = 0
        self._count = count or (lambda _outcome, _n: None)
        self._thread = threading.Thread(target=self._drain, name="prediction-log", daemon=True)
        self._thread.start()

    def log(self, record: LogRecord) -> bool:
        """Queue a record if it is sampled and there is room; never blocks, never raises."""
        if not sampled(record.request_id, self.sample_rate):
            return False
        if len(self._buffer) >= self.capacity:
            self.dropped += 1
            self._count("dropped", 1)
            return False
        self._buffer.append(record)
        self.logged += 1
        if len(self._buffer) == self._batch:  # once per batch, not a lock per record past it
            self._wake.set()
        return True

    def _drain(self) -> None:
        while True:
            self._wake.wait(0.1)
            self._wake.clear()
            while self._buffer:
                taken: list[LogRecord] = []
                while self._buffer and len(taken) < self._batch:
                    taken.append(self._buffer.popleft())
                try:
                    self.sink.write([r.encode(self.policy) for r in taken])
                    self.written += len(taken)
                    self._count("written", len(taken))
                except Exception:  # the log must never take serving down
                    self.failed += len(taken)
                    self._count("failed", len(taken))
                    log.exception("prediction log sink failed; %d records dropped", len(taken))
            if self._stop:
                return

    def close(self, timeout: float = 10.0) -> None:
        """Write what is buffered (bounded in time), then close the sink."""
        self._stop = True
        self._wake.set()
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("prediction log did not drain in %.0fs", timeout)
        self.sink.close()


class RowColumns(Mapping[str, Any]):
    """A request's rows as {feature: column of values}, built only when the record is encoded (in
    the drain thread) and only for the fields the policy logs: the request path pays one small
    object, not a conversion."""

    __slots__ = ("_index", "_matrix", "_rows")

    def __init__(self, rows: Any, index: Mapping[str, int]) -> None:
        self._rows = rows  # a float32 matrix or rows.ListRows
        self._index = index  # feature name -> column (LoadedModel.feature_index)
        self._matrix: Any = None

    def __getitem__(self, name: str) -> Any:
        i = self._index[name]
        rows = self._rows
        values = getattr(rows, "values", None)
        if isinstance(values, list):  # ListRows: the JSON body's own numbers, row-major; None = missing
            return values[i :: rows.features]
        return rows[:, i].tolist()

    def __iter__(self) -> Iterator[str]:
        return iter(self._index)

    def __contains__(self, name: object) -> bool:
        return name in self._index  # without building the column (Mapping's default would)

    def __len__(self) -> int:
        return len(self._index)


class LazyOutputs:
    """A prediction's outputs for the log, converted to lists only when encoded."""

    __slots__ = ("_prediction",)

    def __init__(self, prediction: Any) -> None:
        self._prediction = prediction

    def to_log(self) -> dict[str, Any]:
        return {k: v.tolist() for k, v in self._prediction.outputs.items()}


def open_prediction_log(
    settings: PredictionLogSettings, count: Callable[[str, int], None] | None = None
) -> PredictionLog | None:
    """The PredictionLog of a PredictionLogSettings (None when disabled): the policy with its key
    read from the mounted file, and the sink."""
    if not settings.enabled or settings.hmac_key_file is None:  # the settings refuse enabled without a key
        return None
    with open(settings.hmac_key_file, "rb") as handle:
        key = handle.read().strip()
    policy = PiiPolicy.from_lists(
        key,
        drop=settings.fields("drop"),
        pseudonymise=settings.fields("pseudonymise"),
        keep=settings.fields("keep"),
        default=settings.default_action,
    )
    sink: Sink
    if settings.sink == "kafka":
        from confluent_kafka import Producer

        producer = Producer(
            {
                "bootstrap.servers": settings.kafka_bootstrap_servers,
                "linger.ms": "20",
                "queue.buffering.max.messages": str(settings.capacity),
            }
        )
        sink = KafkaSink(producer, settings.kafka_topic)
    else:
        sink = JsonLinesSink()
    return PredictionLog(sink, policy, settings.sample_rate, settings.capacity, count=count)
