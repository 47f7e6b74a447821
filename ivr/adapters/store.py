"""Call records and the admin audit log in SQLite (WAL).

One row per call, written when the call starts and updated as it goes, so a record
exists even when the caller hangs up mid-prompt or the controller loses Asterisk.
Nested parts (attempts, phase timings) are JSON columns; the columns that reports
filter on are plain columns.
"""

from __future__ import annotations

import json
import logging
import queue
import sqlite3
import threading
import time
from dataclasses import fields
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

from ivr.core.callback import CallbackRequest
from ivr.core.callrecord import CallRecord

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1

_JSON_FIELDS = {"attempts", "phase_seconds"}
_COLUMNS = [f.name for f in fields(CallRecord)]

# One-off migration of files written before error_kind / calamity were fields: their
# records said it only in words, so derive the enum once from those words, here, and
# nowhere else (no logic reads a reason or an error sentence).
_LEGACY_FILL = {
    "error_kind": """UPDATE calls SET error_kind = CASE
        WHEN error IS NULL OR error = '' THEN NULL
        WHEN error LIKE 'transfer failed%' THEN 'transfer_failed'
        WHEN error LIKE 'asterisk lost%' THEN 'asterisk_lost'
        WHEN error LIKE '%shutting down%' THEN 'shutdown'
        ELSE 'other' END""",
    "calamity": "UPDATE calls SET calamity = (reason LIKE '%calamity%')",
    # every call before languages were offered was held in Dutch
    "language": "UPDATE calls SET language = 'nl'",
}

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS calls (
    call_id TEXT PRIMARY KEY,
    {", ".join(f"{c} {'TEXT' if c in _JSON_FIELDS else ''}".strip() for c in _COLUMNS if c != "call_id")},
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS calls_started ON calls(started_at);
CREATE INDEX IF NOT EXISTS calls_area ON calls(area_code, started_at);
CREATE INDEX IF NOT EXISTS calls_caller ON calls(caller, started_at);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    who TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    before TEXT,
    after TEXT
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS callbacks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    call_id TEXT NOT NULL,
    municipality TEXT NOT NULL,
    number TEXT NOT NULL,
    requested_at REAL NOT NULL,
    expires_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS callbacks_expiry ON callbacks(expires_at);
"""


class CallStore:
    """Thread-safe: one connection, serialised by a lock (SQLite writes serialise anyway)."""

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
            self._db.executescript(_SCHEMA)
            self._add_missing_columns()
            self._db.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))

    def _add_missing_columns(self) -> None:
        """Files written by an older version lack newer CallRecord fields: add them (as NULL)."""
        have = {row[1] for row in self._db.execute("PRAGMA table_info(calls)")}
        for column in _COLUMNS:
            if column not in have:
                self._db.execute(f"ALTER TABLE calls ADD COLUMN {column} {'TEXT' if column in _JSON_FIELDS else ''}")
                if column in _LEGACY_FILL:
                    self._db.execute(_LEGACY_FILL[column])

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- calls --------------------------------------------------------------------

    def save(self, record: CallRecord) -> None:
        self.save_many([record])

    def save_many(self, records: Iterable[CallRecord]) -> None:
        self.save_rows([_to_row(r) for r in records])

    def save_rows(self, rows: Iterable[tuple]) -> None:
        rows = list(rows)
        if not rows:
            return
        placeholders = ", ".join("?" for _ in _COLUMNS)
        sql = f"INSERT OR REPLACE INTO calls ({', '.join(_COLUMNS)}, updated_at) VALUES ({placeholders}, ?)"
        now = time.time()
        with self._lock:
            self._db.execute("BEGIN")
            try:
                self._db.executemany(sql, [(*row, now) for row in rows])
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def get(self, call_id: str) -> CallRecord | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM calls WHERE call_id = ?", (call_id,)).fetchone()
        return _from_row(row) if row else None

    def query(self, *, since: float | None = None, until: float | None = None, area_code: str | None = None,
              municipality: str | None = None, outcome: str | None = None, limit: int | None = None,
              offset: int = 0) -> list[CallRecord]:
        return list(self.iter_query(since=since, until=until, area_code=area_code, municipality=municipality,
                                    outcome=outcome, limit=limit, offset=offset))

    def iter_query(self, *, since=None, until=None, area_code=None, municipality=None, outcome=None,
                   limit=None, offset=0) -> Iterator[CallRecord]:
        """Rows in start order, read in chunks (on its own connection for a file, so a
        report over millions of calls neither holds the writers' lock nor all rows at once)."""
        where, args = _filters(since, until, area_code, municipality, outcome)
        sql = f"SELECT * FROM calls {where} ORDER BY started_at, call_id"
        if limit is not None:
            sql += " LIMIT ? OFFSET ?"
            args += [int(limit), int(offset)]
        if str(self.path) == ":memory:":
            with self._lock:
                rows = self._db.execute(sql, args).fetchall()
            yield from (_from_row(r) for r in rows)
            return
        reader = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)
        reader.row_factory = sqlite3.Row
        try:
            cursor = reader.execute(sql, args)
            while chunk := cursor.fetchmany(2000):
                yield from (_from_row(r) for r in chunk)
        finally:
            reader.close()

    def count(self, *, since=None, until=None, area_code=None, municipality=None, outcome=None) -> int:
        where, args = _filters(since, until, area_code, municipality, outcome)
        with self._lock:
            return self._db.execute(f"SELECT COUNT(*) FROM calls {where}", args).fetchone()[0]

    def last_routed_municipality(self, caller: str, candidates: Sequence[str], since: float) -> str | None:
        """The municipality among ``candidates`` this caller (salted hash) was last routed to
        since ``since`` (epoch seconds); None when there is none or the caller is unknown."""
        if not caller or not candidates:
            return None
        marks = ", ".join("?" for _ in candidates)
        sql = (f"SELECT municipality FROM calls WHERE caller = ? AND started_at >= ? AND outcome = 'routed'"
               f" AND municipality IN ({marks}) ORDER BY started_at DESC LIMIT 1")
        with self._lock:
            row = self._db.execute(sql, (caller, since, *candidates)).fetchone()
        return row[0] if row else None

    # -- audit --------------------------------------------------------------------

    def audit(self, who: str, action: str, target: str, before: Any, after: Any) -> int:
        with self._lock:
            cur = self._db.execute(
                "INSERT INTO audit (at, who, action, target, before, after) VALUES (?, ?, ?, ?, ?, ?)",
                (time.time(), who, action, target, json.dumps(before, default=str), json.dumps(after, default=str)),
            )
            return cur.lastrowid

    def audit_entries(self) -> list[dict[str, Any]]:
        """Every audit row, oldest first."""
        with self._lock:
            rows = self._db.execute("SELECT * FROM audit ORDER BY id").fetchall()
        return [{**dict(r), "before": json.loads(r["before"]), "after": json.loads(r["after"])} for r in rows]

    def audit_log(self, limit: int = 100) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute("SELECT * FROM audit ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
        return [{**dict(r), "before": json.loads(r["before"]), "after": json.loads(r["after"])} for r in rows]


    # -- callback requests (personal data: kept until they expire or are cleared) ----

    def add_callback(self, request: CallbackRequest) -> int:
        with self._lock:
            self._purge_callbacks(request.requested_at)
            cur = self._db.execute(
                "INSERT INTO callbacks (call_id, municipality, number, requested_at, expires_at)"
                " VALUES (?, ?, ?, ?, ?)",
                (request.call_id, request.municipality, request.number, request.requested_at, request.expires_at))
            return cur.lastrowid

    def callbacks(self, *, municipality: str | None = None, now: float | None = None) -> list[dict[str, Any]]:
        """Requests not yet expired (expired ones are purged first), oldest first."""
        with self._lock:
            self._purge_callbacks(time.time() if now is None else now)
            sql, args = "SELECT * FROM callbacks", []
            if municipality:
                sql, args = sql + " WHERE municipality = ?", [municipality]
            return [dict(r) for r in self._db.execute(sql + " ORDER BY id", args).fetchall()]

    def delete_callback(self, callback_id: int) -> bool:
        with self._lock:
            return self._db.execute("DELETE FROM callbacks WHERE id = ?", (callback_id,)).rowcount > 0

    def purge_callbacks(self, now: float | None = None) -> int:
        """Delete every request past its retention; how many went."""
        with self._lock:
            return self._purge_callbacks(time.time() if now is None else now)

    def _purge_callbacks(self, now: float) -> int:
        return self._db.execute("DELETE FROM callbacks WHERE expires_at <= ?", (now,)).rowcount


def _filters(since, until, area_code, municipality, outcome) -> tuple[str, list[Any]]:
    clauses, args = [], []
    for clause, value in (("started_at >= ?", since), ("started_at < ?", until), ("area_code = ?", area_code),
                          ("municipality = ?", municipality), ("outcome = ?", outcome)):
        if value is not None:
            clauses.append(clause)
            args.append(value)
    return ("WHERE " + " AND ".join(clauses)) if clauses else "", args


def _to_row(record: CallRecord) -> tuple[Any, ...]:
    data = record.to_dict()
    return tuple(json.dumps(data[c]) if c in _JSON_FIELDS else data[c] for c in _COLUMNS)


def _from_row(row: sqlite3.Row) -> CallRecord:
    data = {c: row[c] for c in _COLUMNS}
    data["attempts"] = json.loads(data["attempts"] or "[]")
    data["phase_seconds"] = json.loads(data["phase_seconds"] or "{}")
    for key in ("recognition_attempts", "rejected_confirmations"):
        data[key] = int(data[key] or 0)
    data["digits"] = data["digits"] or ""
    return CallRecord.from_dict(data)


class RecordWriter:
    """Saves call records from a background thread, in batches.

    A call's record is saved at every step; doing that on the event loop would put
    SQLite's latency between a caller and their transfer. ``save`` snapshots the record
    (as the row it will become) and returns at once; the thread keeps only the newest
    snapshot of each call and writes a batch in one transaction. A failed batch is
    retried, so a passing storage fault loses no record; ``close`` writes what is queued.
    """

    def __init__(self, store: CallStore, *, max_batch: int = 500, retry_s: float = 0.5):
        self.store = store
        self.max_batch = max_batch
        self.retry_s = retry_s
        self._queue: "queue.SimpleQueue[tuple[str, tuple] | None]" = queue.SimpleQueue()
        self._done = threading.Condition()
        self._queued = 0
        self._written = 0
        self._thread = threading.Thread(target=self._run, name="record-writer", daemon=True)
        self._thread.start()

    def save(self, record: CallRecord) -> None:
        row = _to_row(record)
        with self._done:
            self._queued += 1
        self._queue.put((record.call_id, row))

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
                    self.store.save_rows(pending.values())
                    break
                except Exception:
                    log.exception("saving %d call record(s) failed (attempt %d)", len(pending), attempt)
                    if stop and attempt >= 10:
                        log.error("giving up on %d call record(s) at shutdown", len(pending))
                        break
                    time.sleep(self.retry_s)
            with self._done:
                self._written += taken
                self._done.notify_all()
