"""The prediction log's core: a personal-data policy, the record shape, a bounded buffer, and sinks.

Pure of any transport: REST (server, router) and stream mode build records with `LogRecord` and hand
them to one `PredictionLog`; the Kafka sink takes any object with confluent-kafka's Producer methods.

- Policy, per input field: `drop`, `pseudonymise` (HMAC-SHA256 with a key from a Secret, so a
  value maps to the same token everywhere and can be joined on, but cannot be reversed by hashing a
  dictionary of candidate values without the key) or `keep`; fields not named get `default`, which
  is `drop` unless said otherwise (a new field in the events is not logged in the clear by surprise).
  The sticky key (router) is always pseudonymised.
- Logging never blocks or fails a prediction: `log()` appends to a bounded buffer or, when it is
  full (the sink is slower than the traffic), drops the record and counts it. Each full batch of
  records (WAKE_EVERY) is encoded by the caller that completed it, where the records' objects were
  made; one background thread writes the encoded batches to the sink every 0.1 s (and encodes what
  a quiet spell leaves behind); a sink error drops that batch and counts it.
"""

from __future__ import annotations

import functools
import hashlib
import io
import itertools
import logging
import operator
import sys
import threading
import zlib
from collections import deque
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy
import orjson

from modeldeploy_contract.predlog_settings import PredictionLogSettings

log = logging.getLogger(__name__)

Action = Literal["drop", "pseudonymise", "keep"]
TOKEN_PREFIX = "hmac:"  # noqa: S105 (the prefix of pseudonyms, not a secret)
# Pseudonyms remembered per policy (a C-level LRU, functools.lru_cache): feature values repeat (counts,
# codes, a user's id on every request), so most tokens are a dict hit, ~0.1 us, instead of two SHA-256
# copies, ~0.6 us. Bounded, so a field of unique values (an e-mail address) costs memory only up to it.
TOKEN_CACHE = 65_536


class PolicyError(ValueError):
    pass


Plan = tuple[tuple[str, int, bool], ...]


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
    _plan: tuple[tuple[str, bool], ...] = field(init=False, repr=False, compare=False)
    _cached: Callable[[Any], str] = field(init=False, repr=False, compare=False)
    _plans: dict[int, tuple[Mapping[str, int], Plan]] = field(init=False, repr=False, compare=False)
    _last_plan: tuple[Mapping[str, int] | None, Plan] = field(init=False, repr=False, compare=False)

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
        # (field, pseudonymise?) in the log's key order, for the usual default-drop policy
        object.__setattr__(self, "_plan", tuple((n, n in self.pseudonymise) for n in self._logged))
        # typed: 1, 1.0 and True are different JSON values with different tokens
        object.__setattr__(self, "_cached", functools.lru_cache(maxsize=TOKEN_CACHE, typed=True)(self.token))
        object.__setattr__(self, "_plans", {})
        object.__setattr__(self, "_last_plan", (None, ()))

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
        if type(value) is float and value == 0.0:
            # -0.0 equals 0.0, so the token LRU (keyed by value and type) answers for both with the
            # one it saw first: one token for both, whatever the order (a join across the router,
            # the server and stream mode must not depend on it).
            value = 0.0
        canonical = orjson.dumps(value, option=orjson.OPT_SORT_KEYS | orjson.OPT_SERIALIZE_NUMPY)
        inner_pad, outer_pad = self._pads
        inner = inner_pad.copy()
        inner.update(canonical)
        outer = outer_pad.copy()
        outer.update(inner.digest())
        digest: str = outer.hexdigest()
        return TOKEN_PREFIX + digest[:32]

    def cached_token(self, value: Any) -> str:
        """`token(value)`, remembered (TOKEN_CACHE) for hashable values."""
        try:
            return self._cached(value)
        except TypeError:  # a list or an object: not hashable, computed every time
            return self.token(value)

    @property
    def lru_token(self) -> Callable[[Any], str]:
        """`token` through the LRU, for hashable values only (TypeError otherwise): what a C caller
        (_predlog_lines) calls per value, no Python frame on a hit."""
        return self._cached

    def reads(self, names: Collection[str]) -> list[str]:
        """Which of a record's input fields the policy logs (so only those are ever built or read)."""
        if self.default == "drop":
            return [n for n in self._logged if n in names]
        return [n for n in names if self.action(n) != "drop"]

    def plan(self, index: Mapping[str, int]) -> Plan:
        """(field, column, pseudonymise?) of what a model's rows log, in the record's key order
        (apply's): computed once per model's feature index."""
        last = self._last_plan
        if last[0] is index:  # the same model as the previous record: nearly always
            return last[1]
        hit = self._plans.get(id(index))
        if hit is not None and hit[0] is index:
            object.__setattr__(self, "_last_plan", hit)
            return hit[1]
        plan = tuple((n, index[n], self.action(n) == "pseudonymise") for n in self.reads(index))
        if len(self._plans) > 64:  # models come and go (reloads): a handful at a time
            self._plans.clear()
        self._plans[id(index)] = (index, plan)
        object.__setattr__(self, "_last_plan", (index, plan))
        return plan

    def apply_rows(self, rows: Any, index: Mapping[str, int]) -> dict[str, Any]:
        """`apply(columns)` of a request's rows (a float32 matrix or rows.ListRows) in one pass, for
        the REST path and stream mode: only the logged columns are read, no intermediate objects.
        Part of the drain's 11.5 -> 7 us a record (docs/benchmarks.md#prediction-log)."""
        out: dict[str, Any] = {}
        values = getattr(rows, "values", None)
        if isinstance(values, list):  # ListRows: the JSON body's own numbers, row-major; None = missing
            step = rows.features
            for name, i, pseudonymise in self.plan(index):
                column = values[i::step]
                out[name] = self._tokens(column) if pseudonymise else column
            return out
        for name, i, pseudonymise in self.plan(index):
            column = rows[:, i].tolist()
            out[name] = self._tokens(column) if pseudonymise else column
        return out

    def _tokens(self, column: list[Any]) -> list[str]:
        cached = self._cached
        try:
            return [cached(v) for v in column]  # the LRU directly: no Python frame per value
        except TypeError:  # an unhashable value (a list in a BYTES tensor, say)
            return [self.cached_token(v) for v in column]

    def apply(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        """The inputs as they may be logged; a dropped field's value is never read. A column (the rows
        of one REST request) gets one token per row, so each row's value joins like the same value in
        a one-record stream log."""
        out: dict[str, Any] = {}
        token = self.cached_token
        if self.default == "drop":
            # The usual policy: only the listed fields are looked at (4 lookups for the churn model's
            # 14 features logging 4, not 14).
            for name, pseudonymise in self._plan:
                if name in inputs:
                    value = inputs[name]
                    if not pseudonymise:
                        out[name] = value
                    elif isinstance(value, list):
                        out[name] = [token(v) for v in value]
                    else:
                        out[name] = token(value)
            return out
        for name in inputs:
            action = self.action(name)
            if action == "keep":
                out[name] = inputs[name]
            elif action == "pseudonymise":
                value = inputs[name]
                out[name] = [token(v) for v in value] if isinstance(value, list) else token(value)
        return out


def _json_key(name: str) -> bytes:
    """A key's JSON text."""
    return orjson.dumps(name)


@functools.lru_cache(maxsize=64)
def line_pieces(
    deployment: str,
    variant: str,
    revision: str,
    model_version: str,
    inputs: tuple[str, ...],
    outputs: tuple[tuple[str, int], ...],
) -> tuple[bytes, ...]:
    """A one-row REST record's JSON line (`dumps` of RestRecords.body) as its fixed bytes around
    the slots _predlog_lines.one_row_lines fills, in order: the request id, the time, each logged
    input (`"name":[v]`, the policy's plan order), each output (`"name":[v]` for a 1-D one, `[[..]]`
    for a 2-D one, as output_arrays and the answer write a row), the latency and the status; the
    other fields are written here. len(pieces) = slots + 1."""
    parts: list[bytes | None] = [b'{"request_id":', None, b',"time":', None]
    fixed = (deployment, variant, revision, model_version)
    parts.append(
        b',"deployment":%b,"variant":%b,"revision":%b,"model_version":%b,"inputs":{'
        % tuple(map(_json_key, fixed))
    )
    for j, name in enumerate(inputs):
        parts += [(b"," if j else b"") + _json_key(name) + b":[", None, b"]"]
    parts.append(b'},"outputs":{')
    for j, (name, ndim) in enumerate(outputs):
        brackets = (b"[", b"]") if ndim == 1 else (b"[[", b"]]")
        parts += [(b"," if j else b"") + _json_key(name) + b":" + brackets[0], None, brackets[1]]
    parts += [b'},"latency_ms":', None, b',"status":', None, b"}\n"]
    pieces = [b""]
    for part in parts:
        if part is None:
            pieces.append(b"")
        else:
            pieces[-1] += part
    return tuple(pieces)


def output_arrays(prediction: Any) -> dict[str, Any]:
    """A record's outputs for `dumps`: its rows of each output as a C-contiguous array, so orjson
    writes each number as the answers do (a float32 by its shortest text, not .tolist()'s float64
    digits): the reference the C encoder's outputs (the answers' row texts, _predlog_lines) are
    checked against."""
    return {k: numpy.ascontiguousarray(v) for k, v in prediction.outputs.items()}


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
        return dumps(self.body(policy))

    def body(self, policy: PiiPolicy) -> dict[str, Any]:
        """The record's document before encoding (encode's), the policy applied."""
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
            body["sticky_key"] = policy.cached_token(self.sticky_key)
        return body


def dumps(body: dict[str, Any]) -> bytes:
    """A record's JSON. The REST server and stream mode pass outputs as C-contiguous numpy arrays
    (output_arrays), which orjson writes as the answers do; any other array (not contiguous, or of
    a type orjson does not write) goes through .tolist()."""
    return orjson.dumps(body, default=_to_list, option=orjson.OPT_SERIALIZE_NUMPY)


class RecordEncoder:
    """Turns queued items (PredictionLog.defer) into records. `body(item, policy)` is one record's
    document and `one` its JSON; the drain calls `lines(items, policy)` once per run of items of the
    same encoder, for their JSON lines. A subclass may override `lines` to make them with less work
    a record (the REST server's does, by column); `one` is the reference it must equal, and the
    drain's fallback when a run fails, so that a record that cannot be encoded costs only itself.
    (One orjson call over a run's dicts, newline fragments between them, measured slower than a call
    a record: 1.3 against 0.8 us a record, 2026-12-05.)"""

    def body(self, item: tuple[Any, ...], policy: PiiPolicy) -> dict[str, Any]:
        raise NotImplementedError

    def one(self, item: tuple[Any, ...], policy: PiiPolicy) -> bytes:
        return dumps(self.body(item, policy))

    def lines(self, items: list[tuple[Any, ...]], policy: PiiPolicy) -> bytes:
        body = self.body
        return b"".join([dumps(body(item, policy)) + b"\n" for item in items])


class _LogRecords(RecordEncoder):
    """Items of PredictionLog.log: (this, LogRecord)."""

    def body(self, item: tuple[Any, ...], policy: PiiPolicy) -> dict[str, Any]:
        record: LogRecord = item[1]
        return record.body(policy)


_LOG_RECORDS = _LogRecords()


def _to_list(value: Any) -> Any:
    to_list = getattr(value, "tolist", None)
    if to_list is None:
        raise TypeError(f"{type(value).__name__} is not loggable")
    return to_list()


class Sink(Protocol):
    def write(self, lines: bytes, count: int) -> None:
        """`count` records, each a JSON document followed by a newline."""

    def close(self) -> None: ...


class JsonLinesSink:
    """One JSON document per line on a text stream (stdout by default, for log collectors)."""

    def __init__(self, stream: io.TextIOBase | Any = None) -> None:
        self._stream = stream if stream is not None else sys.stdout

    def write(self, lines: bytes, count: int) -> None:
        self._stream.write(lines.decode())
        self._stream.flush()

    def close(self) -> None:
        self._stream.flush()


MESSAGE_BYTES = 256 * 1024
"""The most bytes of records in one Kafka message (a record longer than that goes alone): well under
the broker's and librdkafka's 1 MB default message limit."""
KAFKA_HEADERS = [("content-type", b"application/jsonl")]


class KafkaSink:
    """Records to a Kafka topic through a confluent-kafka Producer (or anything with its methods):
    each message holds a batch of records as JSON lines (each a JSON document followed by a newline,
    header `content-type: application/jsonl`, `modeldeploy-records`: how many), at most
    MESSAGE_BYTES unless one record is longer. One produce() per batch instead of one per record
    (each with its delivery report and librdkafka's per-message work): see
    docs/benchmarks.md#prediction-log. A consumer splits a message's value at newlines. A full
    producer queue drops the message's records (counted) instead of waiting."""

    def __init__(self, producer: Any, topic: str) -> None:
        self._producer = producer
        self._topic = topic
        self.dropped = 0
        self.failed = 0
        self.delivered = 0

    def write(self, lines: bytes, count: int) -> None:
        for value, n in _messages(lines, count):
            try:
                self._producer.produce(
                    self._topic,
                    value,
                    headers=[*KAFKA_HEADERS, ("modeldeploy-records", b"%d" % n)],
                    on_delivery=functools.partial(self._report, n),
                )
            except BufferError:
                self.dropped += n
        self._producer.poll(0)

    def _report(self, n: int, err: Any, _msg: Any) -> None:
        if err is None:
            self.delivered += n
        else:
            self.failed += n

    def close(self) -> None:
        self._producer.flush(10)


def _messages(lines: bytes, count: int) -> list[tuple[bytes, int]]:
    """JSON lines cut into messages of at most MESSAGE_BYTES (whole records), with their counts."""
    if len(lines) <= MESSAGE_BYTES:
        return [(lines, count)]
    out: list[tuple[bytes, int]] = []
    start = n = 0
    end = -1
    while True:
        nxt = lines.find(b"\n", end + 1)
        if nxt < 0 or (nxt + 1 - start > MESSAGE_BYTES and n):
            if n:
                out.append((lines[start : end + 1], n))
            if nxt < 0:
                return out
            start, n = end + 1, 0
        end = nxt
        n += 1


Item = tuple[Any, ...]
"""A queued record: (its RecordEncoder, what the encoder needs...)."""
WAKE_EVERY = 64
"""Records queued before they are encoded (by the caller that queues the last of them); the drain
thread writes encoded batches when its 0.1 s wait ends (PredictionLog.defer). Each queued request
keeps about 8 containers alive (its tuple, headers, rows, prediction view) until encoded: 500 of
them crossed the collector's young-generation threshold (700) every ~90 requests, 1.1-1.75 us of
garbage collection a request in process; encoded every 64, 0.04-0.33 us (2026-12-05,
docs/benchmarks.md)."""


class PredictionLog:
    """A bounded buffer in front of a sink: full batches encoded by the caller (`encode_in_caller`),
    written (and the rest encoded) by one background thread."""

    def __init__(
        self,
        sink: Sink,
        policy: PiiPolicy,
        sample_rate: float = 1.0,
        capacity: int = 10_000,
        batch: int = 500,
        count: Callable[[str, int], None] | None = None,
        wake: int = WAKE_EVERY,
        encode_in_caller: bool = True,
    ) -> None:
        """`count(outcome, n)`: told of records `written`, `dropped` (buffer full) and `failed` (the
        sink refused them, or they could not be encoded), e.g. to export them as metrics; called from
        the drain thread except for drops and records the caller could not encode. `batch`: the most
        records handed to the sink at once. `encode_in_caller`: the call of `defer` that fills a batch
        encodes it (the default), else the drain thread encodes every record."""
        self.sink = sink
        self.policy = policy
        self.sample_rate = sample_rate
        self.capacity = capacity
        self._batch = batch
        self._wake_at = min(wake, batch)
        self._buffer: deque[Item] = deque()
        self._encode_in_caller = encode_in_caller
        self._encoded: deque[tuple[bytes, int]] = deque()
        """Batches encoded by the caller (defer), each (its JSON lines, how many records), for the
        drain thread to hand to the sink."""
        self._encoded_records = 0
        """Records in _encoded: they count against `capacity` like the buffered ones (a slow sink must
        make the log drop records, not hold encoded batches without bound)."""
        self._counting = threading.Lock()
        self._wake = threading.Event()
        self._stop = False
        self.logged = 0
        self.dropped = 0  # buffer full: the sink is slower than the traffic
        self.failed = 0  # records of batches the sink refused, or records that could not be encoded
        self.written = 0
        self._count = count or (lambda _outcome, _n: None)
        self._thread = threading.Thread(target=self._drain, name="prediction-log", daemon=True)
        self._thread.start()

    def log(self, record: LogRecord) -> bool:
        """Queue a record if it is sampled and there is room; never blocks, never raises."""
        if not sampled(record.request_id, self.sample_rate):
            return False
        return self.defer((_LOG_RECORDS, record))

    def defer(self, item: Item) -> bool:
        """Queue a record encoded later by `item[0]` (a RecordEncoder) from the rest of the item: the
        request path pays one tuple of references, no conversion (REST: rows, prediction, headers),
        and the call that fills a batch encodes it (_encode_here). The caller has decided sampling
        (it knows the request id, or the rate is 1). Never blocks, never raises: with the buffer
        full the record is dropped and counted."""
        buffer = self._buffer
        if len(buffer) + self._encoded_records >= self.capacity:
            self.dropped += 1
            self._count("dropped", 1)
            return False
        buffer.append(item)
        self.logged += 1
        if len(buffer) == self._wake_at:  # once per batch, not a lock per record past it
            if not self._encode_in_caller:
                self._wake.set()
                return True
            try:
                self._encode_here()
            except Exception:  # never raises: what is left is encoded by the drain thread
                log.exception("prediction log: encoding in the caller failed")
            # The drain thread is not woken for each encoded batch: it writes what is encoded when its
            # 0.1 s wait ends. Woken every 64 requests, it took the GIL from the event loop (a
            # hand-over both ways) each time. Measured 2026-12-06: in process
            # (bench/serving/predlog_overhead.py --fresh-scope, 3 interleaved rounds) the log's cost
            # over `off` 7.0-8.3 -> 6.5-7.8 us a request (median 7.9 -> 6.6); over HTTP to Kafka
            # (predlog_bench.py, 7 rounds, same run) -11.8% -> -9.6% requests/s paired against `off`,
            # the drain thread's CPU 1.8-3.3 -> 0.7-1.1 us a request. Woken early when encoded
            # records fill half the buffer (a small `capacity` at a high rate), so records are not
            # dropped for want of a write.
            if self._encoded_records * 2 >= self.capacity:
                self._wake.set()
        return True

    def _encode_here(self) -> None:
        """Encode the buffered records in the caller's thread (the event loop), where their objects
        were made, and queue the bytes for the drain thread: it then only writes. Encoded in the
        drain thread, the work still held the GIL the event loop needs (never in parallel with it),
        cost more there (7-10 us of CPU a record over HTTP, 5-8 on one thread) and added GIL
        hand-overs: the same run gave -16.8% requests/s to Kafka with the drain thread encoding and
        -12.3% encoding here (docs/benchmarks.md#prediction-log, 2026-12-06)."""
        taken = self._take()
        if taken:
            lines, n = self._encode(taken)
            if n:
                with self._counting:
                    self._encoded_records += n
                self._encoded.append((lines, n))

    def _take(self) -> list[Item]:
        """Up to a batch of buffered records, oldest first (the caller's thread and the drain thread
        both take; each record goes to one of them)."""
        buffer = self._buffer
        taken: list[Item] = []
        try:
            while len(taken) < self._batch:
                taken.append(buffer.popleft())
        except IndexError:
            pass
        return taken

    def _drain(self) -> None:
        while True:
            self._wake.wait(0.1)
            self._wake.clear()
            self._write_encoded()
            while self._buffer:  # a batch not yet full after 0.1 s (or every record, encode_in_caller off)
                taken = self._take()
                if taken:
                    self._write(taken)
                self._write_encoded()
            if self._stop:
                self._write_encoded()
                return

    def _write_encoded(self) -> None:
        """Hand the encoded batches to the sink, consecutive ones joined up to MESSAGE_BYTES: at 10,000
        requests/s a 0.1 s wait ends with ~16 batches of 64, each its own write (a Kafka produce,
        delivery report, poll and counter update, all holding the GIL the event loop needs)
        otherwise. Only this thread takes from `_encoded` (its head is looked at safely)."""
        encoded = self._encoded
        while encoded:
            lines, n = encoded.popleft()
            size = len(lines)
            joined = [lines]
            while encoded and size + len(encoded[0][0]) <= MESSAGE_BYTES:
                more, m = encoded.popleft()
                joined.append(more)
                size += len(more)
                n += m
            self._write_lines(b"".join(joined) if len(joined) > 1 else lines, n)
            with self._counting:
                self._encoded_records -= n

    def _write(self, taken: list[Item]) -> None:
        lines, n = self._encode(taken)
        self._write_lines(lines, n)

    def _encode(self, taken: list[Item]) -> tuple[bytes, int]:
        """The records' JSON lines and how many: a record that cannot be encoded is dropped alone
        and counted `failed`."""
        policy = self.policy
        chunks: list[bytes] = []
        bad = 0
        for encoder, run in itertools.groupby(taken, operator.itemgetter(0)):
            items = list(run)
            try:
                chunks.append(encoder.lines(items, policy))
            except Exception:  # one record that cannot be encoded must not cost its whole run
                for item in items:
                    try:
                        chunks.append(encoder.one(item, policy) + b"\n")
                    except Exception:
                        bad += 1
                        if bad == 1:
                            log.exception("prediction log record could not be encoded; dropped")
        if bad:
            with self._counting:  # encoded in two threads
                self.failed += bad
            self._count("failed", bad)
        return b"".join(chunks), len(taken) - bad

    def _write_lines(self, lines: bytes, n: int) -> None:
        if not n:
            return
        try:
            self.sink.write(lines, n)
            self.written += n
            self._count("written", n)
        except Exception:  # the log must never take serving down
            with self._counting:
                self.failed += n
            self._count("failed", n)
            log.exception("prediction log sink failed; %d records dropped", n)

    def close(self, timeout: float = 10.0) -> None:
        """Write what is buffered (bounded in time), then close the sink."""
        self._stop = True
        self._wake.set()
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("prediction log did not drain in %.0fs", timeout)
        self.sink.close()


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
