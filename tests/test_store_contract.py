"""One contract, two databases: every test here runs against a real SQLite file and against the
real PostgreSQL server (the session's throwaway cluster, a schema per test); plus the migrations,
old SQLite files, and PostgreSQL going away under an open store."""

from __future__ import annotations

import sqlite3
import threading

import psycopg
import pytest

from ivr.adapters.store import CallStore, open_store, sqlite_path
from ivr.adapters.store_schema import COLUMNS, MIGRATIONS, SCHEMA_VERSION, V1_CALL_COLUMNS
from old_store import later_columns
from ivr.core.callback import CallbackRequest
from ivr.core.callrecord import Attempt, CallRecord, ErrorKind, Outcome
from kpi_records import T0, fixed_records, rec


@pytest.fixture(params=["sqlite", "postgresql"])
def target(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite://{tmp_path / 'calls.sqlite'}"
    return request.getfixturevalue("pg_url")


@pytest.fixture
def store(target):
    s = open_store(target)
    yield s
    s.close()


def full_record() -> CallRecord:
    """A record with every kind of value set: enums, JSON parts, booleans, floats, text with quotes."""
    r = rec("full-1", 12.5, caller="abc123", reason="it's \"quoted\" ? and %s", calamity=True,
            alt_number_given=True, error="transfer failed: busy", error_kind=ErrorKind.TRANSFER_FAILED,
            digits="0123", decision_ms=1.25, transfer_setup_ms=2500.0, language="en", access_number="0031",
            overflow_to="GM0654", expected_municipality="GM0664", rejected_confirmations=2, attempts=3)
    r.attempts = [Attempt.from_dict({"kind": "speech", "input": "speech", "heard": "goes", "candidates": [],
                                     "verdict": "accept", "chosen": "GM0664", "recogniser_ms": 300.0,
                                     "decision_ms": 500.0})]
    return r


def test_a_record_comes_back_as_it_was_saved(store):
    original = full_record()
    store.save(original)
    back = store.get("full-1")
    assert back.to_dict() == original.to_dict()
    assert back.error_kind is ErrorKind.TRANSFER_FAILED and back.calamity is True and back.digits == "0123"
    assert store.get("nope") is None


def test_saving_again_replaces_the_row(store):
    r = rec("again", 1.0, outcome=None, phase="greeting", ivr=None)
    store.save(r)
    r.outcome, r.ivr_seconds = Outcome.ROUTED, 4.5
    store.save_many([r, rec("other", 2.0)])
    assert store.count() == 2
    back = store.get("again")
    assert back.outcome is Outcome.ROUTED and back.ivr_seconds == 4.5


def test_query_count_and_iter_query_filter_and_order_alike(store):
    records = fixed_records()
    store.save_many(reversed(records))
    expected = sorted(records, key=lambda r: (r.started_at, r.call_id))
    assert [r.call_id for r in store.query()] == [r.call_id for r in expected]
    assert [r.call_id for r in store.iter_query()] == [r.call_id for r in expected]
    assert [r.call_id for r in store.query(limit=4, offset=3)] == [r.call_id for r in expected[3:7]]
    for filters in ({"area_code": "0115"}, {"outcome": "caller_hangup"}, {"outcome": Outcome.ROUTED},
                    {"municipality": "GM0654"}, {"since": T0 + 1400}, {"until": T0 + 200},
                    {"since": T0 + 100, "until": T0 + 1500, "area_code": "0113"}):
        want = [r.call_id for r in expected if _matches(r, **filters)]
        assert want, filters  # each filter selects something, so an ignored filter would fail
        assert [r.call_id for r in store.query(**filters)] == want, filters
        assert [r.call_id for r in store.iter_query(**filters)] == want, filters
        assert store.count(**filters) == len(want), filters
    assert store.count() == len(records)


def _matches(r: CallRecord, since=None, until=None, area_code=None, municipality=None, outcome=None) -> bool:
    return ((since is None or r.started_at >= since) and (until is None or r.started_at < until)
            and (area_code is None or r.area_code == area_code)
            and (municipality is None or r.municipality == municipality)
            and (outcome is None or r.outcome == outcome))


def test_last_routed_municipality_of_a_caller(store):
    store.save_many([rec("c1", 10.0, caller="h1", municipality="GM0664"),
                     rec("c2", 20.0, caller="h1", municipality="GM0654"),
                     rec("c3", 30.0, caller="h1", municipality="GM0664", outcome="caller_hangup"),
                     rec("c4", 40.0, caller="h2", municipality="GM0677")])
    assert store.last_routed_municipality("h1", ["GM0664", "GM0654"], T0) == "GM0654"
    assert store.last_routed_municipality("h1", ["GM0664"], T0) == "GM0664"
    assert store.last_routed_municipality("h1", ["GM0664", "GM0654"], T0 + 25) is None  # c3 was not routed
    assert store.last_routed_municipality("h2", ["GM0664"], T0) is None
    assert store.last_routed_municipality("", ["GM0664"], T0) is None


def test_audit_log_keeps_order_who_and_both_states(store):
    ids = [store.audit(f"user{i}", "area_code", "0113", {"mode": "speech", "n": i}, {"mode": "dtmf"})
           for i in range(3)]
    assert ids == sorted(ids) and len(set(ids)) == 3
    entries = store.audit_entries()
    assert [e["who"] for e in entries] == ["user0", "user1", "user2"]
    assert entries[1]["before"] == {"mode": "speech", "n": 1} and entries[1]["after"] == {"mode": "dtmf"}
    assert [e["id"] for e in store.audit_log(2)] == ids[:0:-1]


def test_callback_requests_are_listed_cleared_and_purged_after_retention(store):
    a = store.add_callback(CallbackRequest("c1", "GM0664", "0612345678", T0, T0 + 100))
    b = store.add_callback(CallbackRequest("c2", "GM0654", "0118123456", T0 + 10, T0 + 200))
    c = store.add_callback(CallbackRequest("c3", "GM0664", "0201234567", T0 + 20, T0 + 300))
    assert [r["id"] for r in store.callbacks(now=T0 + 50)] == [a, b, c]
    assert [r["call_id"] for r in store.callbacks(municipality="GM0664", now=T0 + 50)] == ["c1", "c3"]
    assert store.callbacks(now=T0 + 50)[0]["number"] == "0612345678"
    assert store.delete_callback(b) is True and store.delete_callback(b) is False
    assert [r["id"] for r in store.callbacks(now=T0 + 150)] == [c]  # c1 expired: listed no more, and gone
    assert store.purge_callbacks(now=T0 + 150) == 0
    assert store.purge_callbacks(now=T0 + 300) == 1
    # adding purges what expired before it
    d = store.add_callback(CallbackRequest("c4", "GM0664", "0612", T0 + 10, T0 + 400))
    assert store.add_callback(CallbackRequest("c5", "GM0664", "0613", T0 + 500, T0 + 900)) > d
    assert [r["call_id"] for r in store.callbacks(now=T0 + 500)] == ["c5"]


def test_migrations_are_recorded_once_and_cover_every_record_field(target):
    first = open_store(target)
    assert first.schema_version == SCHEMA_VERSION == MIGRATIONS[-1][0]
    first.save(rec("m1", 1.0))
    first.close()
    again = open_store(target)  # nothing left to apply; the rows stay
    try:
        rows = _versions(again)
        assert [r[0] for r in rows] == [m[0] for m in MIGRATIONS]
        assert again.count() == 1
    finally:
        again.close()


def _versions(store) -> list[tuple]:
    return store._run(lambda db: [(r["version"], r["description"]) for r in
                                  db.execute("SELECT version, description FROM schema_version ORDER BY version")])


def test_a_version_1_database_is_brought_to_the_newest(target):
    store = open_store(target)
    later = later_columns()  # added by migrations 3+
    store._run(lambda db: (db.execute("DELETE FROM schema_version WHERE version > 1"),
                           db.execute("DROP INDEX calls_caller"),
                           *(db.execute(f"ALTER TABLE calls DROP COLUMN {c}") for c in later)))
    store.close()
    store = open_store(target)
    try:
        assert store.schema_version == SCHEMA_VERSION > 1
        assert [v for v, _ in _versions(store)] == [m[0] for m in MIGRATIONS]
        index = ("SELECT name FROM sqlite_master WHERE name = 'calls_caller'" if store.dialect.name == "sqlite"
                 else "SELECT indexname AS name FROM pg_indexes WHERE indexname = 'calls_caller'"
                      " AND schemaname = current_schema()")
        assert store._run(lambda db: db.execute(index).fetchall())
    finally:
        store.close()


def test_a_database_without_a_column_for_a_record_field_is_refused(target):
    store = open_store(target)
    store._run(lambda db: db.execute("ALTER TABLE calls DROP COLUMN overflow_to"))
    store.close()
    with pytest.raises(RuntimeError, match="overflow_to.*add a migration"):
        open_store(target)


def test_an_sqlite_file_from_before_versioning_opens_and_keeps_its_rows(tmp_path):
    """The schema as files had it before error_kind, calamity and language: still opens, enums derived."""
    path = tmp_path / "old.sqlite"
    old_columns = [c for c, _ in V1_CALL_COLUMNS if c not in ("error_kind", "calamity", "language", "access_number",
                                                                "overflow_to", "alt_number_given", "callback")]
    db = sqlite3.connect(path)
    db.executescript(f"""
        CREATE TABLE calls (call_id TEXT PRIMARY KEY, {", ".join(c for c in old_columns if c != "call_id")},
                            updated_at REAL NOT NULL);
        CREATE TABLE audit (id INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL, who TEXT NOT NULL,
                            action TEXT NOT NULL, target TEXT NOT NULL, before TEXT, after TEXT);
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT);
        INSERT INTO meta VALUES ('schema_version', '1');
        INSERT INTO audit (at, who, action, target, before, after) VALUES (1.0, 'old', 'area_code', '0113',
                                                                             '{{}}', '{{"mode": "dtmf"}}');
    """)
    values = {"call_id": "old-1", "dialled": "140113", "started_at": T0, "error": "transfer failed: busy",
              "reason": "calamity override", "attempts": "[]", "phase_seconds": "{}", "phase": "transfer",
              "recognition_attempts": 1, "rejected_confirmations": 0, "digits": ""}
    db.execute(f"INSERT INTO calls ({', '.join(values)}, updated_at) VALUES ({', '.join('?' * len(values))}, 0)",
               list(values.values()))
    db.commit()
    db.close()
    store = CallStore(path)
    try:
        assert store.schema_version == SCHEMA_VERSION
        old = store.get("old-1")
        assert old.error_kind is ErrorKind.TRANSFER_FAILED and old.calamity is True and old.language == "nl"
        assert store.audit_entries()[0]["who"] == "old"
        store.add_callback(CallbackRequest("c", "GM0664", "0612", T0, T0 + 1))  # the table it lacked
        store.save(full_record())
        assert store.count() == 2
    finally:
        store.close()


def test_store_targets():
    assert sqlite_path("/var/lib/ivr14/calls.sqlite").name == "calls.sqlite"
    assert str(sqlite_path("sqlite:///var/lib/x.sqlite")) == "/var/lib/x.sqlite"
    assert sqlite_path("postgresql://ivr@db/ivr") is None and sqlite_path("postgres://db/ivr") is None
    with pytest.raises(ValueError, match="unknown records database 'mysql'"):
        open_store("mysql://db/ivr")


def test_one_setting_selects_the_database(tmp_path, monkeypatch):
    from pydantic import ValidationError

    from ivr.config import Settings

    monkeypatch.delenv("IVR_DB_URL", raising=False)
    assert Settings(db_path=tmp_path / "x.sqlite").records_db == str(tmp_path / "x.sqlite")
    monkeypatch.setenv("IVR_DB_URL", "postgresql://ivr@db:5432/ivr")
    assert Settings(db_path=tmp_path / "x.sqlite").records_db == "postgresql://ivr@db:5432/ivr"
    with pytest.raises(ValidationError):
        Settings(db_url="mysql://db/ivr")


# --- PostgreSQL only -----------------------------------------------------------------------------------


def test_two_controllers_opening_one_new_database_at_once_migrate_it_once(pg_url):
    stores, errors = [], []

    def open_one():
        try:
            stores.append(open_store(pg_url))
        except Exception as exc:  # pragma: no cover - the failure this test is for
            errors.append(exc)
    threads = [threading.Thread(target=open_one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    try:
        assert errors == [] and len(stores) == 4
        assert [v for v, _ in _versions(stores[0])] == [m[0] for m in MIGRATIONS]
    finally:
        for s in stores:
            s.close()


def test_an_open_store_outlives_a_postgresql_restart(postgres, pg_url):
    store = open_store(pg_url)
    try:
        store.save(rec("before", 1.0))
        postgres.stop("immediate")
        with pytest.raises(psycopg.OperationalError):
            store.get("before")  # the server is away: said, not hidden
        postgres.start()
        assert store.get("before").call_id == "before"  # the dead connection is replaced without a word
        store.save(rec("after", 2.0))
        assert store.count() == 2
    finally:
        store.close()


def _learned_row(code: str, caller: str, at: float, **kw) -> dict:
    return {"call_id": f"c-{caller}-{at}", "cbs_code": code, "phrase": "Haarlem", "area_code": "023", "caller": caller,
            "how": "confirmed", "collected_at": at, "expires_at": at + 100, "status": "candidate", "p_right": 0.5,
            "margin": 1.25, "space": "fusion-x", "features": "AAAA", **kw}


def test_learned_utterances_are_capped_listed_decided_and_purged(store):
    import time as _time
    now = _time.time()
    add = lambda code, caller, at=now: store.add_learned(_learned_row(code, caller, at), per_municipality=3,
                                                         per_caller=2)
    first = add("GM0392", "a")
    assert first is not None and add("GM0392", "a") is not None
    assert add("GM0394", "a") is None  # the caller's cap (2), whatever the municipality
    assert add("GM0392", "b") is not None and add("GM0392", "c") is None  # the municipality's cap (3)
    assert add("GM0394", "") is not None and add("GM0394", "") is not None and add("GM0394", "") is not None
    rows = store.learned(cbs_code="GM0392")
    assert [r["caller"] for r in rows] == ["a", "a", "b"] and "features" not in rows[0]
    assert store.learned(features=True)[0]["features"] == "AAAA"
    assert store.set_learned_status(first, "active", "op") and store.learned(status="active")[0]["id"] == first
    assert store.learned_item(first)["decided_by"] == "op"
    assert store.purge_learned(caller="a") == 2 and store.learned(caller="a") == []
    assert store.purge_learned(now=now + 101) == 4 and store.learned() == []  # past retention
