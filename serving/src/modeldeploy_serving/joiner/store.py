"""The joiner's store: one SQL schema, SQLite (a file on a volume) or PostgreSQL.

Both run the same statements through `SqlStore`; a `Dialect` only supplies the DDL, the placeholder
style and how to measure the database's size. Every call runs on the joiner's single database
thread, so there is exactly one writer (what SQLite wants; for PostgreSQL one connection is plenty
for one ModelDeployment, see docs/benchmarks.md).

Schema: `arms` names each (deployment, variant, revision, model version) once; `predictions` holds one
row per request id with the arm, score, predicted label and time, and the label once it arrives.
A label is a column of its prediction's row, so "join" is an UPDATE and a purge one DELETE.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from modeldeploy_serving.joiner.parse import Feedback, PredictionRecord, label_error

IN_CHUNK = 500
_SELECT_EXISTING = "SELECT request_id, classes, predicted_at, label FROM predictions WHERE request_id IN"
LabelStatus = Literal["joined", "unknown_request", "expired", "duplicate", "conflict", "invalid_label"]


class StoreError(Exception):
    pass


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


def _chunks(values: Sequence[str]) -> Iterable[Sequence[str]]:
    for start in range(0, len(values), IN_CHUNK):
        yield values[start : start + IN_CHUNK]


class SqlStore:
    """Predictions and labels in SQL. Not thread-safe: call from one thread only."""

    def __init__(self, conn: Connection, dialect: Dialect) -> None:
        self.conn = conn
        self.dialect = dialect
        self._arm_ids: dict[ArmKey, int] = {}
        cur = conn.cursor()
        for statement in dialect.ddl:
            cur.execute(statement)
        conn.commit()

    def _execute(self, statement: str, params: Sequence[Any] = ()) -> Any:
        cur = self.conn.cursor()
        cur.execute(self.dialect.sql(statement), params)
        return cur

    def _arm_id(self, key: ArmKey) -> int:
        found = self._arm_ids.get(key)
        if found is not None:
            return found
        params = (key.deployment, key.variant, key.revision, key.model_version)
        self._execute(
            "INSERT INTO arms (deployment, variant, revision, model_version) VALUES (?, ?, ?, ?) "
            "ON CONFLICT DO NOTHING",
            params,
        )
        row = self._execute(
            "SELECT id FROM arms WHERE deployment = ? AND variant = ? AND revision = ? AND model_version = ?",
            params,
        ).fetchone()
        self._arm_ids[key] = int(row[0])
        return int(row[0])

    def arms(self) -> dict[int, ArmKey]:
        rows = self._execute("SELECT id, deployment, variant, revision, model_version FROM arms").fetchall()
        return {int(r[0]): ArmKey(r[1], r[2], r[3], r[4]) for r in rows}

    def _existing(self, request_ids: Sequence[str]) -> dict[str, tuple[int, float, int | None]]:
        """request id -> (classes, predicted_at, label) of the stored predictions among these ids."""
        found: dict[str, tuple[int, float, int | None]] = {}
        for chunk in _chunks(request_ids):
            marks = ", ".join("?" * len(chunk))  # placeholders only: the ids are parameters
            query = f"{_SELECT_EXISTING} ({marks})"
            rows = self._execute(query, chunk).fetchall()
            for rid, classes, at, label in rows:
                found[rid] = (int(classes), float(at), None if label is None else int(label))
        return found

    def add_predictions(self, records: Sequence[PredictionRecord], now: float) -> list[bool]:
        """Store new records; per record True if stored, False if its request id was already known."""
        try:
            existing = self._existing(list(dict.fromkeys(r.request_id for r in records)))
            seen: set[str] = set(existing)
            stored = []
            rows = []
            for r in records:
                if r.request_id in seen:
                    stored.append(False)
                    continue
                seen.add(r.request_id)
                arm = self._arm_id(ArmKey(r.deployment, r.variant, r.revision, r.model_version))
                rows.append(
                    (r.request_id, arm, r.score, r.predicted, r.classes, now if r.time is None else r.time)
                )
                stored.append(True)
            if rows:
                self.conn.cursor().executemany(
                    self.dialect.sql(
                        "INSERT INTO predictions "
                        "(request_id, arm_id, score, predicted, classes, predicted_at) "
                        "VALUES (?, ?, ?, ?, ?, ?)"
                    ),
                    rows,
                )
            self.conn.commit()
        except Exception:
            self.conn.rollback()
            self._arm_ids.clear()  # ids inserted in the rolled-back transaction are gone
            raise
        return stored

    def join_labels(
        self, items: Sequence[Feedback], now: float, retention_seconds: float
    ) -> list[tuple[LabelStatus, str | None]]:
        """Join each label to its prediction; per item a status and, when not joined, why."""
        try:
            existing = self._existing(list(dict.fromkeys(f.request_id for f in items)))
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
                self.conn.cursor().executemany(
                    self.dialect.sql(
                        "UPDATE predictions SET label = ?, labelled_at = ? "
                        "WHERE request_id = ? AND label IS NULL"
                    ),
                    updates,
                )
            self.conn.commit()
        except Exception:
            self.conn.rollback()
            raise
        return results

    def purge(self, before: float) -> int:
        """Delete predictions (and their labels) made before `before`; the number deleted."""
        try:
            cur = self._execute("DELETE FROM predictions WHERE predicted_at < ?", (before,))
            count = int(cur.rowcount)
            self.conn.commit()
        except Exception:
            self.conn.rollback()
            raise
        return count

    def prediction_counts(self, since: float) -> dict[int, int]:
        rows = self._execute(
            "SELECT arm_id, COUNT(*) FROM predictions WHERE predicted_at >= ? GROUP BY arm_id", (since,)
        ).fetchall()
        self.conn.commit()  # end the read transaction (PostgreSQL keeps one open otherwise)
        return {int(a): int(n) for a, n in rows}

    def labelled(self, since: float) -> list[LabelledRow]:
        """The labelled predictions made since `since`."""
        rows = self._execute(
            "SELECT arm_id, predicted_at, score, predicted, label, classes FROM predictions "
            "WHERE predicted_at >= ? AND label IS NOT NULL",
            (since,),
        ).fetchall()
        self.conn.commit()
        return [LabelledRow(int(a), float(t), float(s), int(p), int(y), int(c)) for a, t, s, p, y, c in rows]

    def size_bytes(self) -> int:
        size = self.dialect.size_bytes(self.conn)
        self.conn.commit()
        return size

    def close(self) -> None:
        self.conn.close()


def open_store(url: str) -> SqlStore:
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
    try:
        conn = psycopg.connect(url, autocommit=False, connect_timeout=10)
    except psycopg.Error as exc:
        raise StoreError(f"cannot connect to PostgreSQL: {exc}") from exc
    return SqlStore(conn, PostgresDialect())


def open_sqlite(path: Path) -> SqlStore:
    """SQLite in WAL mode: readers never block the one writer, and a commit is one append to the log.
    synchronous=NORMAL: a committed transaction survives the process (a pod restart); only a power
    loss of the node may take the last commits back (docs/effectiveness.md)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA foreign_keys=ON")
    return SqlStore(conn, SqliteDialect())
