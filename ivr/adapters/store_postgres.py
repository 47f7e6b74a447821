"""Call records in PostgreSQL (psycopg 3): the store several controllers share.

Selected by ``IVR_DB_URL=postgresql://user[:password]@host[:port]/database`` (libpq's URL;
``?options=-csearch_path%3Dname`` puts the tables in a schema of their own). The SQL is
:class:`~ivr.adapters.store.SqlCallStore`'s, the same as SQLite's; what differs between
the two is in :mod:`ivr.adapters.store_schema`.

One connection serves the writer and the small reads, serialised by a lock; it is opened
again when the server went away (a restart, a failover), and an idempotent operation that
met the dead connection is tried once more on the new one. A report streams its rows
through a server-side cursor on a connection of its own.
"""

from __future__ import annotations

import itertools
import threading
from typing import Any, Iterator
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg.rows import dict_row

from ivr.adapters.store import SqlCallStore
from ivr.adapters.store_schema import POSTGRES, migrate

CONNECT_TIMEOUT_S = 5  # a server that is away is noticed in seconds, not at the TCP timeout
_cursor_names = itertools.count(1)


def redact(url: str) -> str:
    """The URL without its password (for logs and messages)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{netloc}"))


class PostgresCallStore(SqlCallStore):
    dialect = POSTGRES

    def __init__(self, url: str):
        self.url = url
        self._lock = threading.Lock()
        self._db: psycopg.Connection | None = None
        with self._lock:
            db = self._connection()
            self.schema_version = migrate(lambda sql, params=None: db.execute(sql, params), POSTGRES)

    def describe(self) -> str:
        return f"PostgreSQL {redact(self.url)}"

    def _connect(self, **kwargs) -> psycopg.Connection:
        return psycopg.connect(self.url, row_factory=dict_row, connect_timeout=CONNECT_TIMEOUT_S,
                               application_name="ivr14", **kwargs)

    def _connection(self) -> psycopg.Connection:
        if self._db is None or self._db.closed or self._db.broken:
            if self._db is not None:
                self._db.close()
            self._db = self._connect(autocommit=True)
        return self._db

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def _run(self, fn, *, retry=True):
        with self._lock:
            for attempt in (1, 2):
                db = self._connection()
                try:
                    return fn(db)
                except psycopg.OperationalError:
                    if not (db.closed or db.broken):
                        raise  # the statement failed, not the connection
                    self._db = None
                    db.close()
                    if not retry or attempt == 2:
                        raise

    def _stream(self, sql: str, args: list[Any]) -> Iterator[Any]:
        with self._connect() as reader:  # a transaction of its own: the named cursor lives in it
            with reader.cursor(name=f"ivr_calls_{next(_cursor_names)}") as cursor:
                cursor.itersize = 2000
                cursor.execute(sql, args)
                while chunk := cursor.fetchmany(2000):
                    yield from chunk
