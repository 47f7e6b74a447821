"""PostgreSQL as the shared records database, for real: two ``ivr serve`` processes (two nodes)
writing to one server over real FastAGI and HTTP, one report covering both; ``ivr report`` reading
PostgreSQL; and the server restarted mid-run while records are being saved, none lost."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time

import httpx
import pytest

from ivr.adapters.store import RecordWriter, open_store
from ivr.cli import main
from ivr.core.callrecord import Outcome
from ivr.core.report import compute_kpis
from e2e import stop_server
from kpi_records import EXPECTED, fixed_records, rec
from test_api import AUTH, REPO, TOKEN, fake_asterisk_call, free_port


class Node:
    """One controller (``ivr serve``) on its own FastAGI and API ports."""

    def __init__(self, tmp_path, name: str, db_url: str):
        self.name = name
        self.api_port, self.agi_port = free_port(), free_port()
        state = tmp_path / name
        state.mkdir()
        env = {k: v for k, v in os.environ.items() if not k.startswith("IVR_")}
        env.update(IVR_STATE_DIR=str(state), IVR_DB_URL=db_url, IVR_SPEECH_ENGINE="none",
                   IVR_API_HOST="127.0.0.1", IVR_API_PORT=str(self.api_port), IVR_AGI_HOST="127.0.0.1",
                   IVR_AGI_PORT=str(self.agi_port), IVR_ADMIN_TOKEN=TOKEN, IVR_CALLER_SALT="s")
        self.proc = subprocess.Popen([sys.executable, "-m", "ivr.cli", "-v", "serve"], cwd=REPO, env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.base = f"http://127.0.0.1:{self.api_port}"
        self.output = ""

    def wait_up(self, timeout_s: float = 30) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                if httpx.get(f"{self.base}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            assert self.proc.poll() is None, self.proc.stdout.read()
            assert time.monotonic() < deadline, f"node {self.name} did not come up"
            time.sleep(0.1)

    def call(self, call_id: str, extension: str) -> list[str]:
        return asyncio.run(fake_asterisk_call(self.agi_port, call_id, extension))

    def get(self, path: str, **kw):
        return httpx.get(f"{self.base}{path}", timeout=10, **kw)

    def stop(self) -> str:
        self.output = stop_server(self.proc)
        return self.output


@pytest.fixture
def nodes(tmp_path, pg_url):
    started: list[Node] = []

    def start(name: str) -> Node:
        node = Node(tmp_path, name, pg_url)
        started.append(node)
        return node
    yield start
    for node in started:
        if node.proc.poll() is None:
            node.stop()


def test_two_nodes_write_one_database_and_each_reports_both(nodes, pg_url):
    a, b = nodes("a"), nodes("b")
    a.wait_up()
    b.wait_up()
    placed = {"a": [], "b": []}
    for i in range(3):
        assert any(c.startswith("EXEC Dial Local/GM0715@ivr14-lab") for c in a.call(f"a-{i}", "140115"))
        placed["a"].append(f"a-{i}")
    for i in range(2):
        assert any(c.startswith("EXEC Dial Local/GM1676@ivr14-lab") for c in b.call(f"b-{i}", "140111"))
        placed["b"].append(f"b-{i}")
    everyone = sorted(placed["a"] + placed["b"])
    for node in (a, b):  # each node reads the calls the other handled
        page = node.get("/v1/calls", params={"limit": 100}).json()
        assert page["total"] == 5 and sorted(c["call_id"] for c in page["items"]) == everyone
        assert node.get("/v1/calls/b-1" if node is a else "/v1/calls/a-2").json()["outcome"] == "routed"
        report = node.get("/v1/report").json()
        assert report["overall"]["calls"] == 5
        assert report["by_area_code"]["0115"]["calls"] == 3 and report["by_area_code"]["0111"]["calls"] == 2
    # the API's report is the KPIs over the shared database
    store = open_store(pg_url)
    try:
        kpis = compute_kpis(store.iter_query()).to_dict()
    finally:
        store.close()
    api = a.get("/v1/report").json()
    api.pop("generated_at"), kpis.pop("generated_at")
    assert api == kpis
    # an admin change on one node is in the shared audit log; the other applies it at its reload
    r = httpx.patch(f"{a.base}/v1/municipalities/GM0715", json={"destination": "Local/operator@ivr14-lab"},
                    headers=AUTH)
    assert r.status_code == 200, r.text
    assert [e["target"] for e in b.get("/v1/audit", headers=AUTH).json()] == ["GM0715"]
    assert b.get("/v1/route", params={"number": "140115"}).json()["destination"] == "Local/GM0715@ivr14-lab"
    assert httpx.post(f"{b.base}/v1/plan/reload", headers=AUTH, timeout=10).status_code == 200
    assert b.get("/v1/route", params={"number": "140115"}).json()["destination"] == "Local/operator@ivr14-lab"
    for node in (a, b):
        node.stop()
        assert node.proc.returncode == 0, node.output
    assert "call records: PostgreSQL postgresql://ivr@127.0.0.1" in a.output


def test_ivr_report_reads_postgresql_like_sqlite(pg_url, tmp_path, capsys, monkeypatch):
    sqlite_file = tmp_path / "calls.sqlite"
    for target in (pg_url, str(sqlite_file)):
        store = open_store(target)
        store.save_many(fixed_records())
        store.close()
    outputs = {}
    for name, args in (("pg", ["--db", pg_url]), ("sqlite", ["--db", str(sqlite_file)]), ("setting", [])):
        if name == "setting":
            monkeypatch.setenv("IVR_DB_URL", pg_url)  # selected by the one setting alone
        assert main(["report", "--format", "json", *args]) == 0
        outputs[name] = json.loads(capsys.readouterr().out)
        outputs[name].pop("generated_at")
    assert outputs["pg"] == outputs["sqlite"] == outputs["setting"]
    assert outputs["pg"]["overall"]["calls"] == EXPECTED["calls"]
    assert outputs["pg"]["overall"]["headline"]["right_municipality"] == pytest.approx(
        EXPECTED["right_municipality"], abs=1e-6)
    assert main(["report", "--format", "table", "--area-code", "0115", "--db", pg_url]) == 0
    assert "0115" in capsys.readouterr().out


# --- PostgreSQL restarted mid-run ------------------------------------------------------------------------


def test_records_saved_while_postgresql_restarts_are_all_written(postgres, pg_url):
    """2,000 calls, each saved three times as it goes, at a steady pace; the server is stopped like a
    crash (pg_ctl -m immediate) a third of the way in and started again 2 s later. Every call is in the
    database afterwards, in its last state."""
    store = open_store(pg_url)
    writer = RecordWriter(store, retry_s=0.2)
    calls, steps = 2000, 3
    saved = threading.Event()

    def save_all():
        for i in range(calls):
            r = rec(f"w-{i}", float(i), outcome=None, phase="greeting", ivr=None)
            for step in range(steps):
                if step == steps - 1:
                    r.outcome, r.ivr_seconds = Outcome.ROUTED, float(step)
                writer.save(r)
            time.sleep(0.002)
        saved.set()
    saver = threading.Thread(target=save_all)
    try:
        saver.start()
        while writer._written < calls:  # a third of the saves are in before the server goes
            time.sleep(0.01)
        postgres.stop("immediate")
        down_at = writer._queued
        time.sleep(2.0)
        postgres.start()
        saver.join(120)
        assert saved.is_set()
        assert writer.flush(60), "the writer did not catch up after the restart"
        assert writer.failed_attempts > 0, "the restart never met a save: the test proved nothing"
        assert down_at < calls * steps  # saves went on arriving while the server was away
        assert store.count() == calls
        assert store.count(outcome="routed") == calls  # each call's last state, not an earlier one
        assert {r.call_id for r in store.iter_query()} == {f"w-{i}" for i in range(calls)}
    finally:
        writer.close()
        store.close()


def test_a_node_keeps_taking_calls_while_postgresql_restarts(postgres, nodes, pg_url):
    """Calls through a real ``ivr serve`` before, during and after the restart: each one has its record."""
    node = nodes("a")
    node.wait_up()
    placed = []
    for phase, count in (("before", 5), ("down", 10), ("after", 5)):
        if phase == "down":
            postgres.stop("immediate")
        for i in range(count):
            commands = node.call(f"{phase}-{i}", "140115")
            assert any(c.startswith("EXEC Dial Local/GM0715@ivr14-lab") for c in commands), commands
            placed.append(f"{phase}-{i}")
        if phase == "down":
            time.sleep(1.0)  # the writer has been retrying meanwhile
            postgres.start()
    deadline = time.monotonic() + 30
    while True:
        page = node.get("/v1/calls", params={"limit": 100}).json()
        if page["total"] == len(placed) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert sorted(c["call_id"] for c in page["items"]) == sorted(placed)
    assert all(c["outcome"] == "routed" for c in page["items"])
    node.stop()
    assert node.proc.returncode == 0, node.output
    assert "saving" in node.output and "failed; retrying" in node.output  # the outage met the writer
