"""Call records written per second by the RecordWriter, SQLite against PostgreSQL, side by side.

    .venv/bin/python loadtest/bench_store.py [--calls 20000] [--steps 4] [--pg-url postgresql://…]

Without ``--pg-url`` it starts a throwaway PostgreSQL cluster (``scripts/postgres-start.sh``,
Debian's package, on 127.0.0.1) and removes it at the end; SQLite is a temporary file (WAL,
synchronous=NORMAL, as the service opens it). For each database, two ways of writing:

- ``writer``: as the controller does, ``RecordWriter.save`` for every step of every call (a call's
  record is saved ``--steps`` times as it goes), then ``flush``: the background thread keeps the
  newest snapshot per call and writes batches of up to 500 rows in one transaction;
- ``batch``: the writer thread's own work alone, ``save_rows`` of ready rows, 500 per transaction;
- ``one by one``: ``store.save`` of each finished record, one transaction each (what a writer
  without batching would cost: the database's commit latency).

Printed: records (distinct calls) per second and snapshots accepted per second, and the
commit-per-record rate.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ivr.adapters.store import RecordWriter, open_store  # noqa: E402
from ivr.adapters.store_schema import to_row  # noqa: E402
from ivr.core.callrecord import Attempt, CallRecord, Outcome, Phase  # noqa: E402


def record(i: int, step: int, steps: int) -> CallRecord:
    r = CallRecord(call_id=f"bench-{i}", dialled="140113", caller=f"{i:016x}", started_at=1.7e9 + i,
                   area_code="0113", mode="speech", decision="ask", plan_version="bench", phase=Phase.SPEECH)
    r.attempts = [Attempt.from_dict({"kind": "speech", "input": "speech", "heard": "goes", "candidates": [],
                                     "verdict": "accept", "chosen": "GM0664", "recogniser_ms": 300.0,
                                     "decision_ms": 500.0})] * min(step, 2)
    if step == steps - 1:
        r.outcome, r.municipality, r.phase, r.ivr_seconds = Outcome.ROUTED, "GM0664", Phase.CONNECTED, 8.5
        r.ended_at = r.started_at + 60
    return r


def bench_writer(target: str, calls: int, steps: int) -> dict[str, float]:
    store = open_store(target)
    writer = RecordWriter(store)
    t0 = time.perf_counter()
    for i in range(calls):
        for step in range(steps):
            writer.save(record(i, step, steps))
    accepted = time.perf_counter() - t0
    assert writer.flush(600)
    elapsed = time.perf_counter() - t0
    writer.close()
    assert store.count() == calls and store.count(outcome="routed") == calls
    store.close()
    return {"records_per_s": calls / elapsed, "snapshots_per_s": calls * steps / elapsed,
            "save_us": accepted / (calls * steps) * 1e6, "seconds": elapsed}


def bench_batches(target: str, calls: int, batch: int = 500) -> float:
    """Rows/s of the writer thread's own work: ``save_rows`` of ready rows, ``batch`` per transaction."""
    store = open_store(target)
    rows = [to_row(record(i, 3, 4)) for i in range(calls)]
    t0 = time.perf_counter()
    for k in range(0, calls, batch):
        store.save_rows(rows[k:k + batch])
    elapsed = time.perf_counter() - t0
    assert store.count() == calls
    store.close()
    return calls / elapsed


def bench_one_by_one(target: str, calls: int) -> dict[str, float]:
    store = open_store(target)
    records = [record(i, 0, 1) for i in range(calls)]
    t0 = time.perf_counter()
    for r in records:
        store.save(r)
    elapsed = time.perf_counter() - t0
    store.close()
    return {"records_per_s": calls / elapsed, "commit_ms": elapsed / calls * 1e3}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=20000)
    ap.add_argument("--steps", type=int, default=4, help="saves per call (the record as the call goes)")
    ap.add_argument("--one-by-one", type=int, default=2000, help="records for the one-transaction-each run")
    ap.add_argument("--pg-url", help="an existing (empty) PostgreSQL database; default: a throwaway cluster")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="ivr-bench-store-"))
    pg_dir = Path(f"/tmp/ivr14-pg-bench-{os.getpid()}")
    pg_url = args.pg_url
    try:
        if pg_url is None:
            pg_url = subprocess.run(["bash", str(REPO / "scripts/postgres-start.sh"), str(pg_dir), "55433"],
                                    check=True, capture_output=True, text=True).stdout.strip()
        targets = {"SQLite": [str(tmp / f"{k}.sqlite") for k in "wbo"],
                   "PostgreSQL": [f"{pg_url}?options=-csearch_path%3Dbench_{k}" for k in "wbo"]}
        import psycopg
        with psycopg.connect(pg_url, autocommit=True) as db:
            for schema in ("bench_w", "bench_b", "bench_o"):
                db.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
                db.execute(f"CREATE SCHEMA {schema}")
        print(f"{args.calls} calls x {args.steps} saves through RecordWriter; {args.one_by_one} records one by one")
        print(f"{'database':<11} {'writer rec/s':>13} {'snapshots/s':>12} {'save() µs':>10} "
              f"{'batch rows/s':>13} {'one-by-one rec/s':>17} {'ms/commit':>10}")
        for name, (writer_target, batch_target, single_target) in targets.items():
            w = bench_writer(writer_target, args.calls, args.steps)
            b = bench_batches(batch_target, args.calls)
            o = bench_one_by_one(single_target, args.one_by_one)
            print(f"{name:<11} {w['records_per_s']:>13,.0f} {w['snapshots_per_s']:>12,.0f} {w['save_us']:>10.1f} "
                  f"{b:>13,.0f} {o['records_per_s']:>17,.0f} {o['commit_ms']:>10.2f}")
    finally:
        if args.pg_url is None:
            subprocess.run(["bash", str(REPO / "scripts/postgres-stop.sh"), str(pg_dir)], capture_output=True)
        subprocess.run(["rm", "-rf", str(tmp)])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
