"""``ivr learn`` on a real SQLite file: list, reject, purge by caller hash; approve with the real
fusion engine (the held-back check reads its references)."""

from __future__ import annotations

import json
import shutil

import pytest

from ivr.adapters.learning import Learning
from ivr.adapters.store import CallStore
from ivr.cli import main
from ivr.config import Settings


@pytest.fixture
def db(tmp_path, monkeypatch):
    path = tmp_path / "calls.sqlite"
    monkeypatch.setenv("IVR_DB_PATH", str(path))
    monkeypatch.delenv("IVR_DB_URL", raising=False)
    monkeypatch.delenv("IVR_PLAN_FILE", raising=False)
    return path


def kept(db, engine, callers=("c1", "c2")) -> list[int]:
    from test_learning import collect, confirmed_call
    settings = Settings(db_path=db, learn_agreement=0)
    lr = Learning(CallStore(db), settings, engine=engine)
    try:
        return [i for c in callers for i in collect(lr, confirmed_call(c), c.encode() * 4)]
    finally:
        lr.store.close()


def test_list_reject_and_purge(db, capsys):
    from test_learning import FixedFeatures
    first, second = kept(db, FixedFeatures())
    assert main(["learn", "list"]) == 0
    out = capsys.readouterr().out
    assert "2 kept" in out and "GM0394" in out and "c1" in out
    assert main(["learn", "reject", str(second)]) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "rejected"
    assert main(["learn", "purge", "--caller", "c1"]) == 0 and "deleted 1" in capsys.readouterr().out
    assert main(["learn", "list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["id"], r["status"]) for r in rows] == [(second, "rejected")]
    store = CallStore(db)
    assert [e["action"] for e in store.audit_entries()] == ["learn_reject", "learn_purge"]
    store.close()


@pytest.mark.speech
def test_approve_with_the_real_engine(db, capsys):
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng missing")
    from ivr.plan_files import load_base_plan
    from ivr.speech.fusion_engine import FusionEngine
    from test_learning import spoken
    from test_learning import confirmed_call, labels

    engine = FusionEngine(load_base_plan())
    settings = Settings(db_path=db, learn_agreement=0)
    lr = Learning(CallStore(db), settings, engine=engine)
    record = confirmed_call("c9", "GM0664")
    record.area_code = "0113"
    item, = lr.collect(record, [(label, spoken("Goes", "en-us")) for label in labels(record)])
    lr.store.close()
    assert main(["learn", "approve", str(item)]) == 0
    done = json.loads(capsys.readouterr().out)
    assert done["ok"] and done["status"] == "active" and done["check"]["n"] == 0  # nothing else kept yet
