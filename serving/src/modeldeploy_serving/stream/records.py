"""Stream records: parsing input record values into model rows, encoding output records. No Kafka here.

An input record's value is JSON in one of two shapes:
- features by name, one row: {"number_of_projects": 2, "mobile_usage": null, ...}. Every feature of
  the bundle's profile must be present (null means missing); other keys are ignored (an event often
  carries ids and timestamps beside the features);
- V2-style tensors, any number of rows: {"id": ..., "inputs": [...], "outputs": [...]} exactly as the
  body of a V2 REST request (the same decoder), without the binary extension.

An output record's value is JSON:
    {"request_id": ..., "model": ..., "version": ..., "revision": ..., "outputs": ...}
with outputs {"name": row value, ...} for a feature record and V2 output tensors
[{"name", "datatype", "shape", "data"}, ...] for a V2 record.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Any, overload

import numpy as np
import numpy.typing as npt
import orjson

from modeldeploy_serving.errors import BadRequestError
from modeldeploy_serving.protocol import v2
from modeldeploy_serving.protocol.tensors import WIRE_TYPE, parse_json

FLOAT32_MAX = float(np.finfo(np.float32).max)
PLAIN = frozenset({int, float, type(None)})

# Dead-letter reasons (a bounded set: they are metric labels); the header has the detail.
EMPTY = "empty"
TOO_LARGE = "too_large"
MALFORMED_JSON = "malformed_json"
INVALID = "invalid_record"
PREDICTION_FAILED = "prediction_failed"
REASONS = (EMPTY, TOO_LARGE, MALFORMED_JSON, INVALID, PREDICTION_FAILED)


class RecordError(Exception):
    """A record that cannot be scored: `kind` is one of REASONS, `message` says why."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind = kind
        self.message = message


@dataclass(slots=True)
class Parsed:
    """One parsed record: a feature row (row) or a V2 request (request), never both."""

    row: list[int | float | None] | None
    request: v2.InferRequest | None

    @property
    def rows(self) -> int:
        return 1 if self.request is None else self.request.x.shape[0]

    @property
    def v2_id(self) -> Any:
        return None if self.request is None else self.request.id


class FeatureRows(Sequence[Parsed]):
    """The Parsed records of a batch of feature records only, made when read: the runner reads
    them only for the prediction log and the joiner's feed, so a batch without those makes none
    (0.3 µs a record less: bench/stream/cpu_bench.py)."""

    __slots__ = ("_rows",)

    def __init__(self, rows: list[tuple[Any, ...]]) -> None:
        self._rows = rows

    def __len__(self) -> int:
        return len(self._rows)

    @overload
    def __getitem__(self, i: int) -> Parsed: ...
    @overload
    def __getitem__(self, i: slice) -> list[Parsed]: ...
    def __getitem__(self, i: int | slice) -> Parsed | list[Parsed]:
        if isinstance(i, slice):
            return [Parsed(list(row), None) for row in self._rows[i]]
        return Parsed(list(self._rows[i]), None)

    def __iter__(self) -> Iterator[Parsed]:
        return (Parsed(list(row), None) for row in self._rows)


class RecordParser:
    def __init__(self, feature_names: list[str], output_names: list[str], max_bytes: int, max_rows: int):
        self.feature_names = feature_names
        self.feature_index = {n: i for i, n in enumerate(feature_names)}
        self.output_names = output_names
        self.max_bytes = max_bytes
        self.max_rows = max_rows
        self._feature_set = frozenset(feature_names)
        self._getter: Callable[[dict[str, Any]], tuple[Any, ...]] = _getter(feature_names)

    def parse(self, value: bytes | None) -> Parsed:
        """The record's rows, or RecordError naming what is wrong with it."""
        result = self.parse_many([value])[0]
        if isinstance(result, RecordError):
            raise result
        return result

    def parse_many(self, values: list[bytes | None]) -> list[Parsed | RecordError]:
        """Each record parsed, or the RecordError naming what is wrong with it."""
        return list(self.parse_batch(values)[0])

    def parse_batch(
        self, values: list[bytes | None]
    ) -> tuple[Sequence[Parsed | RecordError], npt.NDArray[np.float32] | None]:
        """Each record parsed (or its RecordError), and the float32 matrix of the parsed records' rows
        in order (what assemble() would make of them) when every parsed record went the batch path
        below, else None. When every record went the batch path, the records are a FeatureRows.

        The batch path does per record only orjson.loads (in one comprehension), the itemgetter and
        list(); everything else is one C-level pass over the batch: the value lengths, the object
        type, no "inputs" key, every feature present (KeyError), the value types (one set of the
        types of all values), the float32 range (numpy on the batch's matrix, which assemble() then
        reuses). A record that any of these checks refuses goes the per-record path below
        (_parse_each), the whole of which is the reference: each record's result depends on that
        record alone, and a record the batch path accepts is one the per-record path accepts with
        the same row (tests/unit/serving/test_stream_batch_decode.py checks both on hostile bytes).
        bench/stream/cpu_bench.py measures it (docs/benchmarks.md#stream-inference)."""
        n = len(values)
        loads = orjson.loads
        try:
            # TypeError: a record without a value (None); orjson refuses an empty one
            if max(map(len, values), default=0) > self.max_bytes:  # type: ignore[arg-type]
                raise ValueError
            objs: list[Any] = [loads(v) for v in values]  # type: ignore[arg-type]
        except (TypeError, ValueError):  # orjson.JSONDecodeError is a ValueError
            objs = [self._load_plain(v) for v in values]
        if set(map(type, objs)) == {dict} and not any(map(_HAS_INPUTS, objs)):
            index: list[int] | range = range(n)
        else:  # V2 records, non-objects, records orjson refused: the per-record path
            index = [i for i, o in enumerate(objs) if type(o) is dict and "inputs" not in o]
            objs = [objs[i] for i in index]
        getter = self._getter
        try:
            rows = list(map(getter, objs))
        except KeyError:  # a missing feature: the per-record path explains it
            features = self._feature_set
            keep = [j for j, o in enumerate(objs) if o.keys() >= features]
            index = [index[j] for j in keep]
            rows = [getter(objs[j]) for j in keep]
        if not set(map(type, chain.from_iterable(rows))) <= PLAIN:  # a bool, string, list, object
            keep = [j for j, row in enumerate(rows) if set(map(type, row)) <= PLAIN]
            index = [index[j] for j in keep]
            rows = [rows[j] for j in keep]
        with np.errstate(over="ignore"):
            x = np.array(rows, dtype=np.float32).reshape(len(rows), len(self.feature_names))
        # infinities: beyond float32's range; exactly its maximum: maybe rounded down from beyond
        edge = np.flatnonzero((np.isinf(x) | (np.abs(x) == np.float32(FLOAT32_MAX))).any(axis=1)).tolist()
        if len(index) == n and not edge:
            return FeatureRows(rows), x
        return self._merge(values, index, rows, x, edge)

    def _merge(
        self,
        values: list[bytes | None],
        index: Sequence[int],
        rows: list[tuple[Any, ...]],
        x: npt.NDArray[np.float32],
        edge: list[int],
    ) -> tuple[list[Parsed | RecordError], npt.NDArray[np.float32] | None]:
        """parse_batch's results when some records take the per-record path: the batch path's
        rows at `index` (rows[j] is values[index[j]]'s), the per-record path's results elsewhere and
        for the rows at the edge of float32's range (`edge`: positions in rows)."""
        out: list[Parsed | RecordError | None] = [None] * len(values)
        for i, row in zip(index, rows, strict=True):
            out[i] = Parsed(list(row), None)
        if edge:
            for j in edge:
                out[index[j]] = self._parse_each([values[index[j]]])[0]
            refused = [j for j in edge if isinstance(out[index[j]], RecordError)]
            x = np.delete(x, refused, axis=0)
        if len(index) < len(values):
            slow = [i for i, r in enumerate(out) if r is None]
            slow_results = self._parse_each([values[i] for i in slow])
            for i, result in zip(slow, slow_results, strict=True):
                out[i] = result
            if not all(isinstance(r, RecordError) for r in slow_results):
                return out, None  # type: ignore[return-value]
        return out, x  # type: ignore[return-value]

    def _load_plain(self, value: bytes | None) -> Any:
        """orjson's object for a value the batch path may take, else _ABSENT (per-record path)."""
        if not value or len(value) > self.max_bytes:
            return _ABSENT
        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError:
            return _ABSENT

    def _parse_each(self, values: list[bytes | None]) -> list[Parsed | RecordError]:
        """Each record parsed, or the RecordError naming what is wrong with it, one record at a time:
        the reference for parse_batch and its path for the records it refuses.

        Feature records take a fast path (per record: one orjson call, one itemgetter, one type set);
        their float32 range is checked for all of them at once afterwards (a value beyond it becomes
        an infinity in float32, which is refused with the record's own explanation)."""
        out: list[Parsed | RecordError] = []
        getter = self._getter
        fast: list[int] = []
        for value in values:
            try:
                obj = self._load(value)
                if not isinstance(obj, dict):
                    raise RecordError(INVALID, f"the value must be a JSON object, got {_json_type(obj)}")
                if "inputs" in obj:
                    out.append(Parsed(None, self._v2(obj)))
                    continue
                try:
                    row = getter(obj)
                except KeyError:
                    row = None
                if row is not None and type(obj) is dict and set(map(type, row)) <= PLAIN:
                    fast.append(len(out))
                    out.append(Parsed(list(row), None))
                    continue
                out.append(
                    Parsed(self._explain(obj, [obj.get(n, _ABSENT) for n in self.feature_names]), None)
                )
            except RecordError as error:
                out.append(error)
        if fast:
            with np.errstate(over="ignore"):
                x = np.array([out[i].row for i in fast], dtype=np.float32)  # type: ignore[union-attr]
            # infinities: beyond float32's range; exactly its maximum: maybe rounded down from beyond
            edge = np.isinf(x) | (np.abs(x) == np.float32(FLOAT32_MAX))
            for j in np.flatnonzero(edge.any(axis=1)).tolist():
                i = fast[j]
                try:
                    self._explain({}, out[i].row)  # type: ignore[union-attr,arg-type]
                except RecordError as error:
                    out[i] = error
        return out

    def _load(self, value: bytes | None) -> Any:
        if not value:
            raise RecordError(EMPTY, "the record has no value")
        if len(value) > self.max_bytes:
            raise RecordError(TOO_LARGE, f"{len(value)} bytes is over the {self.max_bytes}-byte limit")
        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError:
            pass
        try:
            # NaN / Infinity literals of Python's json module, integers beyond 64 bits: the slow path
            # below checks every value of such a record (the fast path is for orjson's output only).
            obj = parse_json(value)
        except BadRequestError as exc:
            raise RecordError(MALFORMED_JSON, exc.message) from None
        if type(obj) is dict and "inputs" not in obj:
            return _Checked(obj)
        return obj

    def _explain(self, obj: dict[str, Any], row: list[Any]) -> list[int | float | None]:
        """The fast path refused the row (or a value is NaN): name the problem, or accept NaN."""
        missing = [n for n, v in zip(self.feature_names, row, strict=True) if v is _ABSENT]
        if missing:
            if not set(obj) & set(self.feature_names):
                raise RecordError(
                    INVALID,
                    "neither V2 'inputs' nor any feature of this model (expected keys like "
                    f"{', '.join(self.feature_names[:3])}, ...)",
                )
            raise RecordError(INVALID, f"missing features: {', '.join(missing)} (null means missing)")
        for name, value in zip(self.feature_names, row, strict=True):
            if type(value) not in PLAIN:
                raise RecordError(
                    INVALID, f"feature {name!r}: {_json_type(value)} value is not a number or null"
                )
            if value is not None and not math.isnan(value) and abs(value) > FLOAT32_MAX:
                raise RecordError(INVALID, f"feature {name!r}: {value!r} is out of float32 range")
        return row  # NaN values (from the NaN literal): missing, as null

    def _v2(self, obj: dict[str, Any]) -> v2.InferRequest:
        try:
            request = v2.decode_general(obj, None, self.feature_index, self.output_names, self.max_rows)
        except BadRequestError as exc:
            raise RecordError(INVALID, exc.message) from None
        return request


_ABSENT: Any = object()
_HAS_INPUTS = operator.methodcaller("__contains__", "inputs")


class _Checked(dict):  # type: ignore[type-arg]
    """A record the stdlib parser read: it skips the fast path (type(value) is not dict)."""


def _getter(names: list[str]) -> Callable[[dict[str, Any]], tuple[Any, ...]]:
    """A function giving a record's values of these keys as a tuple (KeyError for a missing one)."""
    if len(names) == 1:
        name = names[0]
        return lambda obj: (obj[name],)
    getter: Callable[[dict[str, Any]], tuple[Any, ...]] = operator.itemgetter(*names)
    return getter


def _json_type(value: Any) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}
    return names.get(type(value), "number")


def assemble(parsed: Sequence[Parsed]) -> npt.NDArray[np.float32]:
    """The rows of every record, in order, as one float32 matrix (None and NaN mean missing)."""
    if all(p.request is None for p in parsed):
        return np.array([p.row for p in parsed], dtype=np.float32)
    parts: list[npt.NDArray[np.float32]] = []
    pending: list[list[int | float | None]] = []
    for p in parsed:
        if p.request is None:
            assert p.row is not None
            pending.append(p.row)
            continue
        if pending:
            parts.append(np.array(pending, dtype=np.float32))
            pending = []
        parts.append(p.request.x)
    if pending:
        parts.append(np.array(pending, dtype=np.float32))
    return np.concatenate(parts)


class OutputEncoder:
    """Output record values for one model; the per-row JSON of a batch's outputs is made with one
    orjson call per output, not one per record."""

    def __init__(self, model: str, version: str, revision: str) -> None:
        self._head = b'{"request_id":%%s,"model":%s,"version":%s,"revision":%s,"outputs":' % (
            orjson.dumps(model).replace(b"%", b"%%"),
            orjson.dumps(version).replace(b"%", b"%%"),
            orjson.dumps(revision).replace(b"%", b"%%"),
        )

    def encode(
        self, parsed: Sequence[Parsed], ids: list[str], outputs: dict[str, npt.NDArray[np.generic]]
    ) -> list[bytes]:
        """One output value per record, in order; outputs hold the rows of every record."""
        names = list(outputs)
        texts = [_row_texts(outputs[n]) for n in names]
        dumps = orjson.dumps
        # head % (request id, each output's row text): one bytes format per record
        row_format = (
            self._head + b"{" + b",".join(dumps(n).replace(b"%", b"%%") + b":%s" for n in names) + b"}}"
        )
        if isinstance(parsed, FeatureRows) or all(p.request is None for p in parsed):
            return [
                row_format % (dumps(rid), *row)
                for rid, row in zip(ids, zip(*texts, strict=True), strict=True)
            ]
        values = []
        start = 0
        for p, request_id in zip(parsed, ids, strict=True):
            if p.request is None:
                values.append(row_format % (dumps(request_id), *(t[start] for t in texts)))
                start += 1
            else:
                stop = start + p.rows
                body = _v2_outputs(p.request, {n: a[start:stop] for n, a in outputs.items()})
                values.append(self._head % dumps(request_id) + body + b"}")
                start = stop
        return values


def _row_texts(arr: npt.NDArray[np.generic]) -> list[bytes]:
    """The JSON text of each row of an [N] or [N, K] output (NaN as null)."""
    arr = np.ascontiguousarray(arr)
    if arr.ndim == 1:
        text = orjson.dumps(arr, option=orjson.OPT_SERIALIZE_NUMPY)
        return text[1:-1].split(b",") if arr.shape[0] else []
    return (
        [orjson.dumps(r, option=orjson.OPT_SERIALIZE_NUMPY) for r in arr]
        if arr.ndim != 2
        else [
            b"[" + t + b"]" for t in orjson.dumps(arr, option=orjson.OPT_SERIALIZE_NUMPY)[2:-2].split(b"],[")
        ]
    )


def _v2_outputs(request: v2.InferRequest, outputs: dict[str, npt.NDArray[np.generic]]) -> bytes:
    wanted = [name for name, _ in request.outputs] if request.outputs is not None else list(outputs)
    tensors = []
    for name in wanted:
        arr = np.ascontiguousarray(outputs[name])
        tensors.append(
            {
                "name": name,
                "datatype": WIRE_TYPE[arr.dtype],
                "shape": list(arr.shape),
                "data": arr.reshape(-1),
            }
        )
    return orjson.dumps(tensors, option=orjson.OPT_SERIALIZE_NUMPY)
