"""The joiner's store: one SQL schema, SQLite (a file on a volume) or PostgreSQL.

Both run the same statements through `SqlStore`; a `Dialect` only supplies the DDL, the placeholder
style and how to measure the database's size. Every call runs on the joiner's single database
thread, so there is exactly one writer (what SQLite wants; for PostgreSQL one connection is plenty
for one ModelDeployment, see docs/benchmarks.md).

Schema: `arms` names each (deployment, variant, revision, model version) once; `predictions` holds one
row per request id with the arm, score, predicted label and time, and the label once it arrives.
A label is a column of its prediction's row, so "join" is an UPDATE and a purge one DELETE.

A lost connection (PostgreSQL restarted, the backend killed, the network gone) is made again: every
operation is one transaction (`SqlStore._transaction`); when its connection breaks, what was sent is
gone with it (the server aborts an open transaction of a closed connection), a new connection is made
at once and the operation runs again, once. When no new connection can be made, the operation raises
`StoreUnavailableError` with the seconds until the next attempt (link.py decides when). A connection
lost during COMMIT leaves the outcome open: the new connection asks the server (`txid_status`) whether
the transaction committed, so that a request is never answered "stored" when it was not, nor run twice
when it was. SQLite is a local file: it has no connection to lose, and its errors are raised as before.
"""

from __future__ import annotations

import contextlib
import logging
import random
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar

from modeldeploy_serving.joiner.link import Link, ReconnectPolicy
from modeldeploy_serving.joiner.parse import Feedback, PredictionRecord, label_error

log = logging.getLogger("modeldeploy.joiner.store")
T = TypeVar("T")
CONNECT_TIMEOUT_SECONDS = 5
"""A connection attempt blocks the joiner's one database thread (and the requests queued on it) for at
most this long when the server does not answer at all (a blackholed address); a refused connection
fails at once. libpq's minimum is 2 s."""
IN_PROGRESS_WAIT_SECONDS = 2.0
"""How long the outcome of a transaction whose COMMIT lost its connection may stay 'in progress' before
it counts as unknown (PostgresDialect.committed)."""
TCP_DEFAULTS: dict[str, Any] = {
    "connect_timeout": CONNECT_TIMEOUT_SECONDS,
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
    "tcp_user_timeout": 30_000,
}
"""libpq settings unless the DSN has its own: a connection whose peer vanished (a node gone, a network
cut: no reset ever arrives) is found broken within about a minute (keepalives for an idle one,
tcp_user_timeout, ms, for unacknowledged data) instead of the kernel's default of over two hours,
during which every request would wait on the one database thread."""

IN_CHUNK = 500
_SELECT_EXISTING = "SELECT request_id, classes, predicted_at, label FROM predictions WHERE request_id IN"
LabelStatus = Literal["joined", "unknown_request", "expired", "duplicate", "conflict", "invalid_label"]


class StoreError(Exception):
    pass


class StoreUnavailableError(StoreError):
    """The database cannot be reached now. Nothing of the operation was stored, unless
    `outcome_unknown` (the connection broke during COMMIT and the server could not be asked since)."""

    def __init__(self, message: str, retry_after: int, *, outcome_unknown: bool = False) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.outcome_unknown = outcome_unknown


StoreEvent = Literal["lost", "reconnected", "reconnect_failed"]


@dataclass(frozen=True, slots=True)
class ArmKey:
    deployment: str
    variant: str
    revision: str
    model_version: str


@dataclass(frozen=True, slots=True)
class LabelledRow:
    arm_id: int
    predicted_at: float
    score: float
    predicted: int
    label: int
    classes: int


class Connection(Protocol):
    def cursor(self) -> Any: ...
    def commit(self) -> None: ...
    def rollback(self) -> None: ...
    def close(self) -> None: ...


class Dialect(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def ddl(self) -> Sequence[str]: ...

    def sql(self, statement: str) -> str:
        """The statement with `?` placeholders in this database's style."""
        ...

    def size_bytes(self, conn: Connection) -> int: ...

    def connection_lost(self, conn: Connection, exc: BaseException) -> bool:
        """Whether `exc` means the connection is gone (a new one is needed), not a refused statement."""
        ...

    def written_transaction(self, conn: Connection) -> int | None:
        """Id of the open transaction if it wrote anything and its outcome can be asked later
        (`committed`); None: nothing written, or a database without connections to lose."""
        ...

    def committed(self, conn: Connection, transaction: int) -> bool | None:
        """Whether that transaction committed (on a new connection); None: the server cannot tell."""
        ...


class SqliteDialect:
    name = "sqlite"
    ddl = (
        """CREATE TABLE IF NOT EXISTS arms (
            id INTEGER PRIMARY KEY,
            deployment TEXT NOT NULL, variant TEXT NOT NULL, revision TEXT NOT NULL,
            model_version TEXT NOT NULL,
            UNIQUE (deployment, variant, revision, model_version))""",
        """CREATE TABLE IF NOT EXISTS predictions (
            request_id TEXT PRIMARY KEY,
            arm_id INTEGER NOT NULL REFERENCES arms (id),
            score REAL NOT NULL, predicted INTEGER NOT NULL, classes INTEGER NOT NULL,
            predicted_at REAL NOT NULL,
            label INTEGER, labelled_at REAL) WITHOUT ROWID""",
        "CREATE INDEX IF NOT EXISTS predictions_time ON predictions (predicted_at)",
    )

    def sql(self, statement: str) -> str:
        return statement

    def size_bytes(self, conn: Connection) -> int:
        cur = conn.cursor()
        pages = cur.execute("PRAGMA page_count").fetchone()[0]
        size = cur.execute("PRAGMA page_size").fetchone()[0]
        return int(pages) * int(size)

    def connection_lost(self, conn: Connection, exc: BaseException) -> bool:
        return False  # a file: its errors are the statement's

    def written_transaction(self, conn: Connection) -> int | None:
        return None

    def committed(self, conn: Connection, transaction: int) -> bool | None:  # pragma: no cover - unused
        return None


class PostgresDialect:
    name = "postgresql"
    ddl = (
        """CREATE TABLE IF NOT EXISTS arms (
            id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            deployment TEXT NOT NULL, variant TEXT NOT NULL, revision TEXT NOT NULL,
            model_version TEXT NOT NULL,
            UNIQUE (deployment, variant, revision, model_version))""",
        """CREATE TABLE IF NOT EXISTS predictions (
            request_id TEXT PRIMARY KEY,
            arm_id BIGINT NOT NULL REFERENCES arms (id),
            score REAL NOT NULL, predicted SMALLINT NOT NULL, classes SMALLINT NOT NULL,
            predicted_at DOUBLE PRECISION NOT NULL,
            label SMALLINT, labelled_at DOUBLE PRECISION)""",
        "CREATE INDEX IF NOT EXISTS predictions_time ON predictions (predicted_at)",
    )

    def sql(self, statement: str) -> str:
        return statement.replace("?", "%s")

    def size_bytes(self, conn: Connection) -> int:
        cur = conn.cursor()
        cur.execute("SELECT pg_total_relation_size('predictions') + pg_total_relation_size('arms')")
        return int(cur.fetchone()[0])

    def connection_lost(self, conn: Connection, exc: BaseException) -> bool:
        """psycopg marks a connection whose socket died `broken` (and `closed`): a killed backend
        (AdminShutdown, 57P01), a server shut down or restarted, a reset. The SQLSTATE classes cover
        the server saying so before the socket goes (08: connection exception; 57P01-03: shutdown,
        crash, starting up). Other errors (a statement refused, a query cancelled, a full disk) leave
        the connection usable: rolled back and raised as before."""
        import psycopg

        if not isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError)):
            return False
        if bool(getattr(conn, "broken", False)) or bool(getattr(conn, "closed", False)):
            return True
        state = getattr(exc, "sqlstate", None) or ""
        return state.startswith("08") or state in ("57P01", "57P02", "57P03")

    def written_transaction(self, conn: Connection) -> int | None:
        cur = conn.cursor()
        cur.execute("SELECT txid_current_if_assigned()")  # NULL when the transaction wrote nothing
        row = cur.fetchone()
        return None if row is None or row[0] is None else int(row[0])

    def committed(self, conn: Connection, transaction: int) -> bool | None:
        """txid_status (PostgreSQL 10+) exists for exactly this: a connection lost during COMMIT.
        'in progress' is asked again for up to IN_PROGRESS_WAIT_SECONDS: a killed backend sends its
        client the error before it records the abort, so the client may ask in between. Still in
        progress (the old backend alive behind a cut network) or NULL (too old to know): unknown."""
        deadline = time.monotonic() + IN_PROGRESS_WAIT_SECONDS
        pause = 0.01
        while True:
            cur = conn.cursor()
            cur.execute("SELECT txid_status(%s)", (transaction,))
            row = cur.fetchone()
            conn.rollback()
            status = None if row is None else row[0]
            if status != "in progress" or time.monotonic() >= deadline:
                return {"committed": True, "aborted": False}.get(str(status))
            time.sleep(pause)
            pause = min(0.2, 2 * pause)


def _chunks(values: Sequence[str]) -> Iterable[Sequence[str]]:
    for start in range(0, len(values), IN_CHUNK):
        yield values[start : start + IN_CHUNK]


class SqlStore:
    """Predictions and labels in SQL. Not thread-safe: call from one thread only (`up` and
    `retry_after` may be read from any)."""

    def __init__(
        self,
        connect: Callable[[], Connection],
        dialect: Dialect,
        *,
        policy: ReconnectPolicy | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        jitter: Callable[[], float] = random.random,
        on_event: Callable[[StoreEvent], None] | None = None,
    ) -> None:
        """`connect` makes a connection: once here (a failure is raised: a joiner that cannot reach
        its database at start is misconfigured, and says so by failing), again after one is lost.
        `on_event`: told of every lost connection and reconnect attempt (the joiner's metrics)."""
        self.dialect = dialect
        self._connect = connect
        self._policy = policy or ReconnectPolicy()
        self._monotonic = monotonic
        self._jitter = jitter
        self._on_event = on_event or (lambda _event: None)
        self._arm_ids: dict[ArmKey, int] = {}
        conn = connect()
        cur = conn.cursor()
        for statement in dialect.ddl:
            cur.execute(statement)
        conn.commit()
        self.conn: Connection | None = conn
        self._link = Link(last_contact=monotonic())

    # -- the connection ---------------------------------------------------------------------------
    @property
    def up(self) -> bool:
        return self._link.up

    def retry_after(self) -> int:
        return self._link.retry_after(self._monotonic())

    def needs_check(self, interval: float) -> bool:
        return self._link.needs_check(self._monotonic(), interval)

    def _connection(self) -> Connection:
        """The open connection, or a new one when it was lost and an attempt is due."""
        if self.conn is not None:
            return self.conn
        now = self._monotonic()
        if not self._link.may_attempt(now):
            raise self._unavailable("the database cannot be reached; the next attempt is due later")
        try:
            conn = self._connect()
        except Exception as exc:
            self._link = self._link.attempt_failed(self._monotonic(), self._policy, self._jitter())
            self._on_event("reconnect_failed")
            log.debug("reconnect attempt %d failed: %s", self._link.failures, exc)
            raise self._unavailable(f"the database cannot be reached: {_one_line(exc)}") from exc
        now = self._monotonic()
        down_since = self._link.down_since
        failures = self._link.failures
        self.conn = conn
        self._link = self._link.reconnected(now)
        self._on_event("reconnected")
        log.info(
            "store connection back after %.1f s (%d failed attempt%s)",
            now - (now if down_since is None else down_since),
            failures,
            "" if failures == 1 else "s",
        )
        return conn

    def _unavailable(self, message: str, *, outcome_unknown: bool = False) -> StoreUnavailableError:
        return StoreUnavailableError(message, self.retry_after(), outcome_unknown=outcome_unknown)

    def _lose(self, exc: BaseException) -> None:
        """The connection is gone: drop it (the server aborts what it had open); logged once per outage."""
        conn, self.conn = self.conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception as close_exc:  # closing a dead socket may fail too; it is dropped anyway
                log.debug("closing the lost connection: %s", close_exc)
        self._arm_ids.clear()  # ids of an uncommitted transaction may be in it
        if self._link.up:
            log.warning("store connection lost (%s); reconnecting", _one_line(exc))
            self._on_event("lost")
        self._link = self._link.lost(self._monotonic())

    def _rollback(self) -> None:
        self._arm_ids.clear()  # ids inserted in the rolled-back transaction are gone
        if self.conn is None:
            return
        try:
            self.conn.rollback()
        except Exception as exc:  # the connection died with the statement: the next operation sees it
            if self.dialect.connection_lost(self.conn, exc):
                self._lose(exc)
            else:
                raise

    def _transaction(self, body: Callable[[Connection], T]) -> T:
        """`body`'s statements in one transaction, committed; rolled back on any failure.

        A lost connection: the operation runs again on a new one, once (at most two tries: a second
        loss is an outage, not a blip). Safe because nothing of it was applied: the server aborts the
        open transaction of a dead connection; and when the connection died during COMMIT the new one
        asks whether that transaction committed (then `body`'s answer stands, it is not run again)."""
        for attempt in (1, 2):
            conn = self._connection()
            result: T
            transaction: int | None = None
            committing = False
            try:
                result = body(conn)
                transaction = self.dialect.written_transaction(conn)
                committing = True
                conn.commit()
            except Exception as exc:
                if not self.dialect.connection_lost(conn, exc):
                    self._rollback()
                    raise
                self._lose(exc)
                if committing:
                    if transaction is None:  # it wrote nothing: its answer holds, committed or not
                        return result
                    if self._committed(transaction):
                        return result
                if attempt == 2:
                    raise self._unavailable(
                        f"the database connection was lost twice in one operation: {_one_line(exc)}"
                    ) from exc
                continue
            self._link = self._link.contact(self._monotonic())
            return result
        raise AssertionError("unreachable")  # pragma: no cover

    def _committed(self, transaction: int) -> bool:
        """After a connection lost during COMMIT: whether it committed, asked on a new connection (made
        at once). Unknown (no connection, or the server cannot tell): StoreUnavailableError saying so."""
        unknown = (
            "the database connection was lost while committing and the outcome cannot be read yet: "
            "the request may have been stored; sending it again is safe (what was stored is answered "
            "duplicate)"
        )
        try:
            conn = self._connection()
            answer = self.dialect.committed(conn, transaction)
        except StoreUnavailableError as exc:
            raise self._unavailable(unknown, outcome_unknown=True) from exc
        except Exception as exc:
            if self.conn is not None and self.dialect.connection_lost(self.conn, exc):
                self._lose(exc)
            else:  # the question refused: the connection stays, out of its failed transaction
                with contextlib.suppress(Exception):
                    self._rollback()
            raise self._unavailable(unknown, outcome_unknown=True) from exc
        if answer is None:
            raise self._unavailable(unknown, outcome_unknown=True)
        log.info(
            "transaction %d %s before the connection was lost",
            transaction,
            "committed" if answer else "aborted",
        )
        return answer

    def check(self) -> bool:
        """Readiness: the database answers (a new connection when it was lost and an attempt is due)."""
        try:
            self._transaction(lambda conn: conn.cursor().execute("SELECT 1"))
        except StoreUnavailableError:
            return False
        return True

    # -- statements -------------------------------------------------------------------------------
    def _execute(self, conn: Connection, statement: str, params: Sequence[Any] = ()) -> Any:
        cur = conn.cursor()
        cur.execute(self.dialect.sql(statement), params)
        return cur

    def _arm_id(self, conn: Connection, key: ArmKey) -> int:
        found = self._arm_ids.get(key)
        if found is not None:
            return found
        params = (key.deployment, key.variant, key.revision, key.model_version)
        self._execute(
            conn,
            "INSERT INTO arms (deployment, variant, revision, model_version) VALUES (?, ?, ?, ?) "
            "ON CONFLICT DO NOTHING",
            params,
        )
        row = self._execute(
            conn,
            "SELECT id FROM arms WHERE deployment = ? AND variant = ? AND revision = ? AND model_version = ?",
            params,
        ).fetchone()
        self._arm_ids[key] = int(row[0])
        return int(row[0])

    def arms(self) -> dict[int, ArmKey]:
        def body(conn: Connection) -> dict[int, ArmKey]:
            query = "SELECT id, deployment, variant, revision, model_version FROM arms"
            rows = self._execute(conn, query).fetchall()
            return {int(r[0]): ArmKey(r[1], r[2], r[3], r[4]) for r in rows}

        return self._transaction(body)

    def _existing(
        self, conn: Connection, request_ids: Sequence[str]
    ) -> dict[str, tuple[int, float, int | None]]:
        """request id -> (classes, predicted_at, label) of the stored predictions among these ids."""
        found: dict[str, tuple[int, float, int | None]] = {}
        for chunk in _chunks(request_ids):
            marks = ", ".join("?" * len(chunk))  # placeholders only: the ids are parameters
            query = f"{_SELECT_EXISTING} ({marks})"
            rows = self._execute(conn, query, chunk).fetchall()
            for rid, classes, at, label in rows:
                found[rid] = (int(classes), float(at), None if label is None else int(label))
        return found

    def add_predictions(self, records: Sequence[PredictionRecord], now: float) -> list[bool]:
        """Store new records; per record True if stored, False if its request id was already known."""

        def body(conn: Connection) -> list[bool]:
            existing = self._existing(conn, list(dict.fromkeys(r.request_id for r in records)))
            seen: set[str] = set(existing)
            stored = []
            rows = []
            for r in records:
                if r.request_id in seen:
                    stored.append(False)
                    continue
                seen.add(r.request_id)
                arm = self._arm_id(conn, ArmKey(r.deployment, r.variant, r.revision, r.model_version))
                rows.append(
                    (r.request_id, arm, r.score, r.predicted, r.classes, now if r.time is None else r.time)
                )
                stored.append(True)
            if rows:
                conn.cursor().executemany(
                    self.dialect.sql(
                        "INSERT INTO predictions "
                        "(request_id, arm_id, score, predicted, classes, predicted_at) "
                        "VALUES (?, ?, ?, ?, ?, ?)"
                    ),
                    rows,
                )
            return stored

        return self._transaction(body)

    def join_labels(
        self, items: Sequence[Feedback], now: float, retention_seconds: float
    ) -> list[tuple[LabelStatus, str | None]]:
        """Join each label to its prediction; per item a status and, when not joined, why."""

        def body(conn: Connection) -> list[tuple[LabelStatus, str | None]]:
            existing = self._existing(conn, list(dict.fromkeys(f.request_id for f in items)))
            horizon = now - retention_seconds
            results: list[tuple[LabelStatus, str | None]] = []
            updates = []
            for f in items:
                row = existing.get(f.request_id)
                if row is None:
                    results.append(
                        ("unknown_request", "no prediction with this request id (unknown or purged)")
                    )
                    continue
                classes, predicted_at, label = row
                if predicted_at < horizon:
                    results.append(
                        ("expired", f"the prediction is older than the {retention_seconds:g} s retention")
                    )
                    continue
                why = label_error(f.label, classes)
                if why is not None:
                    results.append(("invalid_label", why))
                    continue
                if label is not None:
                    if label == f.label:
                        results.append(("duplicate", "this request id already has this label"))
                    else:
                        results.append(("conflict", f"this request id already has label {label}; kept"))
                    continue
                existing[f.request_id] = (classes, predicted_at, f.label)
                updates.append((f.label, now if f.time is None else f.time, f.request_id))
                results.append(("joined", None))
            if updates:
                conn.cursor().executemany(
                    self.dialect.sql(
                        "UPDATE predictions SET label = ?, labelled_at = ? "
                        "WHERE request_id = ? AND label IS NULL"
                    ),
                    updates,
                )
            return results

        return self._transaction(body)

    def purge(self, before: float) -> int:
        """Delete predictions (and their labels) made before `before`; the number deleted."""

        def body(conn: Connection) -> int:
            cur = self._execute(conn, "DELETE FROM predictions WHERE predicted_at < ?", (before,))
            return int(cur.rowcount)

        return self._transaction(body)

    def prediction_counts(self, since: float) -> dict[int, int]:
        def body(conn: Connection) -> dict[int, int]:
            rows = self._execute(
                conn,
                "SELECT arm_id, COUNT(*) FROM predictions WHERE predicted_at >= ? GROUP BY arm_id",
                (since,),
            ).fetchall()
            return {int(a): int(n) for a, n in rows}

        # committed: ends the read transaction (PostgreSQL keeps one open otherwise)
        return self._transaction(body)

    def labelled(self, since: float) -> list[LabelledRow]:
        """The labelled predictions made since `since`."""

        def body(conn: Connection) -> list[LabelledRow]:
            rows = self._execute(
                conn,
                "SELECT arm_id, predicted_at, score, predicted, label, classes FROM predictions "
                "WHERE predicted_at >= ? AND label IS NOT NULL",
                (since,),
            ).fetchall()
            return [
                LabelledRow(int(a), float(t), float(s), int(p), int(y), int(c)) for a, t, s, p, y, c in rows
            ]

        return self._transaction(body)

    def size_bytes(self) -> int:
        return self._transaction(self.dialect.size_bytes)

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:300]


def open_store(url: str, on_event: Callable[[StoreEvent], None] | None = None) -> SqlStore:
    """sqlite:///<path> (SQLAlchemy's form: four slashes before an absolute path) or a PostgreSQL DSN
    (postgresql://..., postgres://... or key=value)."""
    if url.startswith("sqlite:"):
        if not url.startswith("sqlite:///") or len(url) == len("sqlite:///"):
            raise StoreError(
                f"a SQLite URL is sqlite:///<path> (sqlite:////abs/path for /abs/path), got {url}"
            )
        return open_sqlite(Path(url[len("sqlite:///") :]))
    try:
        import psycopg
    except ImportError as exc:  # pragma: no cover - psycopg is a dependency of the serving image
        raise StoreError("PostgreSQL needs psycopg (pip install 'psycopg[binary]')") from exc

    from psycopg.conninfo import conninfo_to_dict

    try:
        params = {**TCP_DEFAULTS, **conninfo_to_dict(url)}  # the DSN's own settings win
    except psycopg.Error as exc:
        raise StoreError(f"not a PostgreSQL DSN: {exc}") from exc

    def connect() -> Connection:
        conn: Connection = psycopg.connect(**params, autocommit=False)
        return conn

    try:
        return SqlStore(connect, PostgresDialect(), on_event=on_event)
    except psycopg.Error as exc:
        raise StoreError(f"cannot connect to PostgreSQL: {exc}") from exc


def open_sqlite(path: Path) -> SqlStore:
    """SQLite in WAL mode: readers never block the one writer, and a commit is one append to the log.
    synchronous=NORMAL: a committed transaction survives the process (a pod restart); only a power
    loss of the node may take the last commits back (docs/effectiveness.md)."""
    path.parent.mkdir(parents=True, exist_ok=True)

    def connect() -> Connection:
        conn = sqlite3.connect(path, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=ON")
        return conn

    return SqlStore(connect, SqliteDialect())
