"""Call records, the admin audit log and callback requests: one interface, two databases.

One row per call, written when the call starts and updated as it goes, so a record
exists even when the caller hangs up mid-prompt or the controller loses Asterisk.
Nested parts (attempts, phase timings) are JSON text columns; the columns that reports
filter on are plain columns.

:func:`open_store` picks the database from one setting (``IVR_DB_URL``): absent, a path or
``sqlite:///path`` gives :class:`CallStore` (SQLite, WAL: the embedded default);
``postgresql://…`` gives :class:`ivr.adapters.store_postgres.PostgresCallStore`, which
several controllers share. Both run the same SQL (:class:`SqlCallStore`); the schema, its
migrations and every dialect difference are in :mod:`ivr.adapters.store_schema`.
"""

from __future__ import annotations

import json
import logging
import queue
import sqlite3
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Protocol, Sequence, TypeVar

from ivr.adapters.store_schema import (COLUMNS, SCHEMA_VERSION, SQLITE, UPSERT_CALL, Dialect, filters, from_row,
                                       migrate, to_row)
from ivr.core.callback import CallbackRequest
from ivr.core.callrecord import CallRecord

log = logging.getLogger(__name__)

__all__ = ["CallStore", "RecordStore", "RecordWriter", "SqlCallStore", "open_store", "sqlite_path", "SCHEMA_VERSION", "COLUMNS"]

T = TypeVar("T")


class RecordStore(Protocol):
    """What the service, the API, the plan admin and the reports use of a records database."""

    def describe(self) -> str: ...
    def close(self) -> None: ...
    def save(self, record: CallRecord) -> None: ...
    def save_many(self, records: Iterable[CallRecord]) -> None: ...
    def save_rows(self, rows: Iterable[tuple]) -> None: ...
    def get(self, call_id: str) -> CallRecord | None: ...
    def query(self, *, since: float | None = None, until: float | None = None, area_code: str | None = None,
              municipality: str | None = None, outcome: str | None = None, limit: int | None = None,
              offset: int = 0) -> list[CallRecord]: ...
    def iter_query(self, *, since=None, until=None, area_code=None, municipality=None, outcome=None,
                   limit=None, offset=0) -> Iterator[CallRecord]: ...
    def count(self, *, since=None, until=None, area_code=None, municipality=None, outcome=None) -> int: ...
    def last_routed_municipality(self, caller: str, candidates: Sequence[str], since: float) -> str | None: ...
    def audit(self, who: str, action: str, target: str, before: Any, after: Any) -> int: ...
    def audit_entries(self) -> list[dict[str, Any]]: ...
    def audit_log(self, limit: int = 100) -> list[dict[str, Any]]: ...
    def add_callback(self, request: CallbackRequest) -> int: ...
    def callbacks(self, *, municipality: str | None = None, now: float | None = None) -> list[dict[str, Any]]: ...
    def delete_callback(self, callback_id: int) -> bool: ...
    def purge_callbacks(self, now: float | None = None) -> int: ...
    def add_learned(self, row: dict[str, Any], *, per_municipality: int, per_caller: int) -> int | None: ...
    def learned(self, *, status: str | None = None, cbs_code: str | None = None, caller: str | None = None,
                features: bool = False) -> list[dict[str, Any]]: ...
    def learned_item(self, item_id: int) -> dict[str, Any] | None: ...
    def set_learned_status(self, item_id: int, status: str, who: str) -> bool: ...
    def purge_learned(self, *, caller: str | None = None, now: float | None = None) -> int: ...


def open_store(target: str | Path) -> RecordStore:
    """The store ``target`` names: a ``postgresql://`` URL, a ``sqlite:///path`` URL or a plain path."""
    path = sqlite_path(target)
    if path is not None:
        return CallStore(path)
    from ivr.adapters.store_postgres import PostgresCallStore  # psycopg is loaded only when configured
    return PostgresCallStore(str(target))


def sqlite_path(target: str | Path) -> Path | None:
    """The SQLite file ``target`` names (``None`` for PostgreSQL); refuses any other scheme."""
    text = str(target)
    if text.startswith(("postgresql://", "postgres://")):
        return None
    if text.startswith("sqlite://"):
        return Path(text[len("sqlite://"):])
    if "://" in text:
        raise ValueError(f"unknown records database {text.split('://')[0]!r}: use postgresql://… or sqlite:///path")
    return Path(text)


@contextmanager
def _transaction(db) -> Iterator[None]:
    """BEGIN … COMMIT on a connection in autocommit mode (sqlite3's isolation_level=None, psycopg's
    autocommit): the same statements in both."""
    db.execute("BEGIN")
    try:
        yield
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


class SqlCallStore:
    """The store's operations, in SQL both databases run. A subclass supplies the connection:
    ``_run(fn, retry)`` calls ``fn(connection)`` serialised, and ``_stream`` reads a long
    result in chunks; rows are read by column name."""

    dialect: Dialect

    def _run(self, fn: Callable[[Any], T], *, retry: bool = True) -> T:  # pragma: no cover - abstract
        raise NotImplementedError

    def _stream(self, sql: str, args: list[Any]) -> Iterator[Any]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _sql(self, text: str) -> str:
        return self.dialect.sql(text)

    # -- calls --------------------------------------------------------------------

    def save(self, record: CallRecord) -> None:
        self.save_many([record])

    def save_many(self, records: Iterable[CallRecord]) -> None:
        self.save_rows([to_row(r) for r in records])

    def save_rows(self, rows: Iterable[tuple]) -> None:
        """Insert or replace whole rows (an upsert: writing the same rows twice is harmless, so it is retried)."""
        now = time.time()
        params = [(*row, now) for row in rows]
        if not params:
            return
        sql = self._sql(UPSERT_CALL)

        def write(db) -> None:
            with _transaction(db):
                db.cursor().executemany(sql, params)
        self._run(write)

    def get(self, call_id: str) -> CallRecord | None:
        row = self._run(lambda db: db.execute(self._sql("SELECT * FROM calls WHERE call_id = ?"),
                                              (call_id,)).fetchone())
        return from_row(row) if row else None

    def query(self, *, since: float | None = None, until: float | None = None, area_code: str | None = None,
              municipality: str | None = None, outcome: str | None = None, limit: int | None = None,
              offset: int = 0) -> list[CallRecord]:
        sql, args = self._select(since, until, area_code, municipality, outcome, limit, offset)
        rows = self._run(lambda db: db.execute(sql, args).fetchall())
        return [from_row(r) for r in rows]

    def iter_query(self, *, since=None, until=None, area_code=None, municipality=None, outcome=None,
                   limit=None, offset=0) -> Iterator[CallRecord]:
        """Rows in start order, read in chunks on a connection of their own, so a report over
        millions of calls neither holds the writers' lock nor all rows at once."""
        sql, args = self._select(since, until, area_code, municipality, outcome, limit, offset)
        return (from_row(r) for r in self._stream(sql, args))

    def _select(self, since, until, area_code, municipality, outcome, limit, offset) -> tuple[str, list[Any]]:
        where, args = filters(since, until, area_code, municipality, outcome)
        sql = f"SELECT * FROM calls {where} ORDER BY started_at, call_id"
        if limit is not None:
            sql += " LIMIT ? OFFSET ?"
            args += [int(limit), int(offset)]
        return self._sql(sql), args

    def count(self, *, since=None, until=None, area_code=None, municipality=None, outcome=None) -> int:
        where, args = filters(since, until, area_code, municipality, outcome)
        sql = self._sql(f"SELECT COUNT(*) AS n FROM calls {where}")
        return int(self._run(lambda db: db.execute(sql, args).fetchone()["n"]))

    def last_routed_municipality(self, caller: str, candidates: Sequence[str], since: float) -> str | None:
        """The municipality among ``candidates`` this caller (salted hash) was last routed to
        since ``since`` (epoch seconds); None when there is none or the caller is unknown."""
        if not caller or not candidates:
            return None
        marks = ", ".join("?" for _ in candidates)
        sql = self._sql(f"SELECT municipality FROM calls WHERE caller = ? AND started_at >= ? AND outcome = 'routed'"
                        f" AND municipality IN ({marks}) ORDER BY started_at DESC LIMIT 1")
        row = self._run(lambda db: db.execute(sql, (caller, since, *candidates)).fetchone())
        return row["municipality"] if row else None

    # -- audit --------------------------------------------------------------------

    def audit(self, who: str, action: str, target: str, before: Any, after: Any) -> int:
        sql = self._sql("INSERT INTO audit (at, who, action, target, before, after) VALUES (?, ?, ?, ?, ?, ?)"
                        " RETURNING id")
        args = (time.time(), who, action, target, json.dumps(before, default=str), json.dumps(after, default=str))
        # not retried: a lost connection may have lost the answer, not the row
        return int(self._run(lambda db: db.execute(sql, args).fetchone()["id"], retry=False))

    def audit_entries(self) -> list[dict[str, Any]]:
        """Every audit row, oldest first."""
        return self._audit_rows("SELECT * FROM audit ORDER BY id", ())

    def audit_log(self, limit: int = 100) -> list[dict[str, Any]]:
        return self._audit_rows("SELECT * FROM audit ORDER BY id DESC LIMIT ?", (int(limit),))

    def _audit_rows(self, sql: str, args: tuple) -> list[dict[str, Any]]:
        rows = self._run(lambda db: db.execute(self._sql(sql), args).fetchall())
        return [{**dict(r), "before": json.loads(r["before"]), "after": json.loads(r["after"])} for r in rows]

    # -- callback requests (personal data: kept until they expire or are cleared) ----

    def add_callback(self, request: CallbackRequest) -> int:
        sql = self._sql("INSERT INTO callbacks (call_id, municipality, number, requested_at, expires_at)"
                        " VALUES (?, ?, ?, ?, ?) RETURNING id")
        args = (request.call_id, request.municipality, request.number, request.requested_at, request.expires_at)

        def add(db) -> int:
            with _transaction(db):
                self._purge(db, request.requested_at)
                return int(db.execute(sql, args).fetchone()["id"])
        return self._run(add, retry=False)

    def callbacks(self, *, municipality: str | None = None, now: float | None = None) -> list[dict[str, Any]]:
        """Requests not yet expired (expired ones are purged first), oldest first."""
        sql, args = "SELECT * FROM callbacks", []
        if municipality:
            sql, args = sql + " WHERE municipality = ?", [municipality]
        sql = self._sql(sql + " ORDER BY id")

        def read(db) -> list[dict[str, Any]]:
            self._purge(db, time.time() if now is None else now)
            return [dict(r) for r in db.execute(sql, args).fetchall()]
        return self._run(read)

    def delete_callback(self, callback_id: int) -> bool:
        sql = self._sql("DELETE FROM callbacks WHERE id = ?")
        return self._run(lambda db: db.execute(sql, (int(callback_id),)).rowcount > 0, retry=False)

    def purge_callbacks(self, now: float | None = None) -> int:
        """Delete every request past its retention; how many went."""
        return self._run(lambda db: self._purge(db, time.time() if now is None else now))

    def _purge(self, db, now: float) -> int:
        return db.execute(self._sql("DELETE FROM callbacks WHERE expires_at <= ?"), (now,)).rowcount

    # -- learned utterances (personal data: kept until they expire or are purged) ----

    _LEARNED_FIELDS = ("call_id", "cbs_code", "phrase", "area_code", "caller", "how", "collected_at", "expires_at",
                       "status", "p_right", "margin", "space", "features")

    def add_learned(self, row: dict[str, Any], *, per_municipality: int, per_caller: int) -> int | None:
        """Keep one labelled utterance as a candidate; None (nothing kept) when its municipality
        already has ``per_municipality`` rows, or its caller (a non-empty hash) ``per_caller``,
        counting every row not yet expired whatever its status: a rejected one still used a place."""
        names = self._LEARNED_FIELDS
        insert = self._sql(f"INSERT INTO learned ({', '.join(names)}) VALUES ({', '.join('?' for _ in names)})"
                           " RETURNING id")
        by_code = self._sql("SELECT COUNT(*) AS n FROM learned WHERE cbs_code = ?")
        by_caller = self._sql("SELECT COUNT(*) AS n FROM learned WHERE caller = ?")

        def add(db) -> int | None:
            with _transaction(db):
                self._purge_learned(db, row["collected_at"], None)
                if db.execute(by_code, (row["cbs_code"],)).fetchone()["n"] >= per_municipality:
                    return None
                if row["caller"] and db.execute(by_caller, (row["caller"],)).fetchone()["n"] >= per_caller:
                    return None
                return int(db.execute(insert, tuple(row[n] for n in names)).fetchone()["id"])
        return self._run(add, retry=False)

    def learned(self, *, status: str | None = None, cbs_code: str | None = None, caller: str | None = None,
                features: bool = False) -> list[dict[str, Any]]:
        """Rows not yet expired, oldest first (``features``: with the stored features)."""
        cols = "*" if features else ("id, decided_at, decided_by, " + ", ".join(
            n for n in self._LEARNED_FIELDS if n != "features"))
        clauses, args = [], []
        for clause, value in (("status = ?", status), ("cbs_code = ?", cbs_code), ("caller = ?", caller)):
            if value is not None:
                clauses.append(clause)
                args.append(value)
        where = ("WHERE " + " AND ".join(clauses)) if clauses else ""
        sql = self._sql(f"SELECT {cols} FROM learned {where} ORDER BY id")

        def read(db) -> list[dict[str, Any]]:
            self._purge_learned(db, time.time(), None)
            return [dict(r) for r in db.execute(sql, args).fetchall()]
        return self._run(read)

    def learned_item(self, item_id: int) -> dict[str, Any] | None:
        row = self._run(lambda db: db.execute(self._sql("SELECT * FROM learned WHERE id = ?"),
                                              (int(item_id),)).fetchone())
        return dict(row) if row else None

    def set_learned_status(self, item_id: int, status: str, who: str) -> bool:
        sql = self._sql("UPDATE learned SET status = ?, decided_at = ?, decided_by = ? WHERE id = ?")
        return self._run(lambda db: db.execute(sql, (status, time.time(), who, int(item_id))).rowcount > 0,
                         retry=False)

    def purge_learned(self, *, caller: str | None = None, now: float | None = None) -> int:
        """Delete the expired rows, or (``caller``) every row of that caller hash; how many went."""
        return self._run(lambda db: self._purge_learned(db, time.time() if now is None else now, caller))

    def _purge_learned(self, db, now: float, caller: str | None) -> int:
        if caller is not None:
            return db.execute(self._sql("DELETE FROM learned WHERE caller = ?"), (caller,)).rowcount
        return db.execute(self._sql("DELETE FROM learned WHERE expires_at <= ?"), (now,)).rowcount


class CallStore(SqlCallStore):
    """SQLite (WAL). Thread-safe: one connection, serialised by a lock (SQLite writes serialise anyway)."""

    dialect = SQLITE

    def __init__(self, path: Path | str):
        self.path = Path(path)
        if str(path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA busy_timeout=5000")
            self.schema_version = migrate(lambda sql, params=(): self._db.execute(sql, params or ()), SQLITE,
                                          begin="BEGIN IMMEDIATE")

    def describe(self) -> str:
        return f"SQLite {self.path}"

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _run(self, fn, *, retry=True):
        with self._lock:
            return fn(self._db)

    def _stream(self, sql, args):
        if str(self.path) == ":memory:":
            yield from self._run(lambda db: db.execute(sql, args).fetchall())
            return
        reader = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)
        reader.row_factory = sqlite3.Row
        try:
            cursor = reader.execute(sql, args)
            while chunk := cursor.fetchmany(2000):
                yield from chunk
        finally:
            reader.close()


class RecordWriter:
    """Saves call records from a background thread, in batches.

    A call's record is saved at every step; doing that on the event loop would put the
    database's latency between a caller and their transfer. ``save`` snapshots the record
    (as the row it will become) and returns at once; the thread keeps only the newest
    snapshot of each call and writes a batch in one transaction. A failed batch is
    retried, so a passing storage fault (a locked file, PostgreSQL restarting) loses no
    record: what arrives meanwhile waits in the queue; ``close`` writes what is queued.
    """

    def __init__(self, store: RecordStore, *, max_batch: int = 500, retry_s: float = 0.5):
        self.store = store
        self.max_batch = max_batch
        self.retry_s = retry_s
        self._queue: "queue.SimpleQueue[tuple[str, tuple] | None]" = queue.SimpleQueue()
        self._done = threading.Condition()
        self._queued = 0
        self._written = 0
        self.failed_attempts = 0  # batches that failed and were tried again (a database away, a locked file)
        self._thread = threading.Thread(target=self._run, name="record-writer", daemon=True)
        self._thread.start()

    def save(self, record: CallRecord) -> None:
        row = to_row(record)
        with self._done:
            self._queued += 1
        self._queue.put((record.call_id, row))

    @property
    def pending(self) -> int:
        """Saves not yet in the database (snapshots of one call count once each)."""
        with self._done:
            return self._queued - self._written

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Wait until everything saved so far is in the database."""
        with self._done:
            target = self._queued
            return self._done.wait_for(lambda: self._written >= target, timeout_s)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(30)

    def _run(self) -> None:
        stop = False
        while not stop:
            pending: dict[str, tuple] = {}
            taken = 0
            item = self._queue.get()
            while True:
                if item is None:
                    stop = True
                else:
                    pending[item[0]] = item[1]
                    taken += 1
                if taken >= self.max_batch:
                    break
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            for attempt in range(1, 1_000_000):
                try:
                    self.store.save_rows(list(pending.values()))
                    break
                except Exception as exc:
                    self.failed_attempts += 1
                    # the whole trace once; then a line now and then while the database stays away
                    if attempt == 1:
                        log.exception("saving %d call record(s) failed; retrying every %.1f s", len(pending),
                                      self.retry_s)
                    elif attempt % 20 == 0:
                        log.warning("saving %d call record(s) still failing (attempt %d): %s", len(pending),
                                    attempt, exc)
                    if stop and attempt >= 10:
                        log.error("giving up on %d call record(s) at shutdown", len(pending))
                        break
                    time.sleep(self.retry_s)
            if attempt > 1 and self.failed_attempts:
                log.info("saved %d call record(s) after %d attempts", len(pending), attempt)
            with self._done:
                self._written += taken
                self._done.notify_all()
