"""Self-learning (issue 12): the labelling rule (pure), promotion and poisoning on a real SQLite
file, and the learned reference in the real fusion engine (Whisper base, espeak-ng)."""

from __future__ import annotations

import shutil
from types import SimpleNamespace

import numpy as np
import pytest

from ivr.adapters.learning import ACTIVE, CANDIDATE, REJECTED, Learning, decode_features, encode_features
from ivr.adapters.store import CallStore
from ivr.config import Settings
from ivr.core.callrecord import Attempt, CallRecord, Outcome
from ivr.core.learning import Label, labels

HAARLEM, HAARLEMMERMEER = "GM0392", "GM0394"


def attempt(kind, input, verdict="", chosen="", heard=""):
    return Attempt.from_dict({"kind": kind, "input": input, "verdict": verdict, "chosen": chosen, "heard": heard})


def call(*attempts, municipality=HAARLEM, outcome=Outcome.ROUTED, rejected=0, caller="c1", **kw) -> CallRecord:
    return CallRecord("call", "14023", caller=caller, area_code="023", municipality=municipality, outcome=outcome,
                      rejected_confirmations=rejected, attempts=list(attempts), **kw)


# --- the labelling rule ------------------------------------------------------------------------

def test_a_confirmed_answer_is_labelled():
    r = call(attempt("speech", "speech", "confirm", HAARLEM, "Haarlem"), attempt("confirm", "dtmf", "yes", HAARLEM))
    assert labels(r) == [Label(0, HAARLEM, "Haarlem", "confirmed")]


def test_a_choice_of_two_labels_the_chosen_one_and_not_the_phrase_of_the_other():
    r = call(attempt("speech", "speech", "choose", HAARLEMMERMEER, "Haarlemmermeer"),
             attempt("confirm", "dtmf", "chosen", HAARLEM))
    assert labels(r) == [Label(0, HAARLEM, "", "chosen")]


def test_a_menu_pick_right_after_a_failed_recognition_labels_that_answer_only():
    r = call(attempt("speech", "speech", "reject"), attempt("speech", "speech", "reject"),
             attempt("menu", "dtmf", "more"), attempt("menu", "dtmf", "chosen", HAARLEM))
    assert labels(r) == [Label(1, HAARLEM, "", "menu")]


def test_accepted_rejected_and_misrouted_calls_teach_nothing():
    confirmed = (attempt("speech", "speech", "confirm", HAARLEM, "Haarlem"),
                 attempt("confirm", "speech", "yes", HAARLEM))
    assert labels(call(attempt("speech", "speech", "accept", HAARLEM, "Haarlem"))) == []  # nobody confirmed it
    # a "nee" earlier in the call: the caller's answers are not trusted
    assert labels(call(attempt("speech", "speech", "confirm", HAARLEMMERMEER), attempt("confirm", "dtmf", "no"),
                       *confirmed, rejected=1)) == []
    # * while hearing where the call goes, after the confirmation
    assert labels(call(*confirmed, attempt("transfer", "dtmf", "back", HAARLEM), attempt("speech", "speech"))) == []
    assert labels(call(*confirmed, outcome=Outcome.CALLER_HANGUP)) == []
    assert labels(call(*confirmed, answered_by=HAARLEMMERMEER)) == []  # the far end says otherwise
    assert labels(call(*confirmed, expected_municipality=HAARLEMMERMEER)) == []
    assert labels(call(*confirmed)) == [Label(0, HAARLEM, "Haarlem", "confirmed")]


def test_a_spoken_confirmation_counts_among_the_spoken_answers():
    r = call(attempt("speech", "speech", "confirm", HAARLEMMERMEER), attempt("confirm", "speech", "unclear"),
             attempt("speech", "speech", "confirm", HAARLEM, "Haarlem"), attempt("confirm", "speech", "yes", HAARLEM))
    assert labels(r) == [Label(2, HAARLEM, "Haarlem", "confirmed")]  # answers: name, "eh", name, "ja"


def test_a_spoken_answer_to_the_suggestion_counts_among_the_spoken_answers():
    # "Belt u weer voor Heemstede?" "nee" (kept by the speech path as answer 0), then the name and "ja"
    r = call(attempt("suggest", "speech", "no"), attempt("speech", "speech", "confirm", HAARLEM, "Haarlem"),
             attempt("confirm", "speech", "yes", HAARLEM))
    assert labels(r) == [Label(1, HAARLEM, "Haarlem", "confirmed")]


def test_the_national_second_pass_between_answer_and_confirmation_keeps_the_label():
    r = call(attempt("speech", "speech", "confirm", "GM0453"), attempt("national", "speech", "accept", "GM0344"),
             attempt("confirm", "dtmf", "yes", "GM0344"), municipality="GM0344")
    assert labels(r) == [Label(0, "GM0344", "", "confirmed")]


# --- promotion, caps, poisoning (real SQLite file; an engine stand-in whose features are given) ---

class FixedFeatures:
    """Only what Learning reads of the engine: utterance bytes -> the features given for them."""

    feature_space = "test"
    settings = SimpleNamespace(dtw_weight=50.0, template_weight=30.0)

    def __init__(self):
        self.learned = []

    def learned_features(self, utterance: bytes):
        # the first 3 bytes say what was said, the rest how: a little noise of its own
        said = np.random.default_rng(int.from_bytes(utterance[:3].ljust(3, b"\0"), "little"))
        how = np.random.default_rng(int.from_bytes(utterance.ljust(8, b"\0")[:8], "little"))
        base = (said.normal(size=(12, 128)) + 0.3 * how.normal(size=(12, 128))).astype(np.float32)
        return base.astype(np.float16), base[:, :40].copy()

    def set_learned(self, refs):
        self.learned = list(refs)
        return len(self.learned)


def learning(tmp_path, **overrides) -> Learning:
    settings = Settings(db_path=tmp_path / "calls.sqlite", **overrides)
    return Learning(CallStore(settings.db_path), settings, engine=FixedFeatures())


def confirmed_call(caller: str, code: str = HAARLEMMERMEER) -> CallRecord:
    return call(attempt("speech", "speech", "confirm", code, "x"), attempt("confirm", "dtmf", "yes", code),
                municipality=code, caller=caller)


def collect(lr: Learning, record: CallRecord, utterance: bytes) -> list[int]:
    return lr.collect(record, [(label, utterance) for label in labels(record)])


def test_features_survive_the_text_column():
    states, mel = np.ones((3, 128), np.float16), np.full((4, 40), 0.5, np.float32)
    s2, m2 = decode_features(encode_features(states, mel))
    assert s2.dtype == np.float16 and np.array_equal(s2, states) and np.allclose(m2, mel)


def test_one_caller_a_hundred_times_changes_nothing(tmp_path):
    """The poisoning test: "Haarlem", confirmed as Haarlemmermeer, a hundred times by one caller."""
    lr = learning(tmp_path, learn_agreement=3, learn_cap_caller=3)
    kept = [i for _ in range(100) for i in collect(lr, confirmed_call("poisoner"), b"haarlem")]
    assert len(kept) == 3  # the per-caller cap
    assert lr.store.learned(status=ACTIVE) == [] and lr.engine.learned == []  # one hash never agrees
    assert {r["status"] for r in lr.store.learned()} == {CANDIDATE}


def test_agreement_of_distinct_callers_promotes_and_feeds_the_engine(tmp_path):
    lr = learning(tmp_path, learn_agreement=3)
    collect(lr, confirmed_call("a"), b"\x01abc")
    collect(lr, confirmed_call("b"), b"\x02abc")
    collect(lr, confirmed_call(""), b"\x03abc")  # a withheld number is nobody: no agreement
    assert lr.store.learned(status=ACTIVE) == []
    collect(lr, confirmed_call("c"), b"\x04abc")
    active = lr.store.learned(status=ACTIVE)
    assert sorted(r["caller"] for r in active) == ["a", "b", "c"]
    assert len(lr.engine.learned) == 3 and {ref[0] for ref in lr.engine.learned} == {HAARLEMMERMEER}
    assert [e["action"] for e in lr.store.audit_entries()] == ["learn_agreement"] * 3


def test_approval_is_audited_and_a_worse_held_back_check_refuses(tmp_path):
    lr = learning(tmp_path, learn_agreement=0)
    # two callers said the same thing and confirmed Haarlem; a third's same-sounding answer is labelled Haarlemmermeer
    good = [collect(lr, confirmed_call(c, HAARLEM), b"\x07sa-" + c.encode())[0] for c in ("a", "b")]
    bad = collect(lr, confirmed_call("p", HAARLEMMERMEER), b"\x07sa-b")[0]  # exactly what b said
    assert lr.approve(good[0], "op")["ok"]
    refused = lr.approve(bad, "op")
    assert not refused["ok"] and refused["check"]["after"] < refused["check"]["before"]
    assert lr.store.learned_item(bad)["status"] == REJECTED
    assert [e["action"] for e in lr.store.audit_entries()] == ["learn_approve", "learn_refused"]
    assert lr.reject(good[1], "op")["ok"] and lr.store.learned_item(good[1])["status"] == REJECTED
    assert lr.purge("a", "op") == 1 and lr.engine.learned == []  # the active one went with its caller


# --- the learned reference in the real engine --------------------------------------------------

@pytest.fixture(scope="module")
def engine():
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng missing")
    pytest.importorskip("faster_whisper")
    from ivr.plan_files import load_base_plan
    from ivr.speech.fusion_engine import FusionEngine
    return FusionEngine(load_base_plan())


def spoken(text: str, voice: str, speed: int = 140) -> bytes:
    import subprocess
    wav = subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "--stdout", text], check=True,
                         capture_output=True).stdout
    out = subprocess.run(["sox", "-t", "wav", "-", "-t", "raw", "-r", "8000", "-e", "signed", "-b", "16", "-c", "1",
                          "-"], input=wav, check=True, capture_output=True).stdout
    return out


@pytest.mark.speech
def test_a_learned_utterance_widens_the_margin_of_its_municipality(engine):
    from ivr.speech.listening import hear_again
    codes = ("GM0664", "GM0703", "GM0654", "GM0678", "GM1695")  # area code 0113
    heard = spoken("Kapelle", "nl+f2")  # a voice no reference uses
    engine.set_learned([])
    before = hear_again(engine, codes, heard)
    states, mel = engine.learned_features(spoken("Kapelle", "nl+f2", 170))  # a similar utterance, not this one
    assert engine.set_learned([("GM0678", "Kapelle", states, mel)]) == 1
    after = hear_again(engine, codes, heard)
    engine.set_learned([])
    assert before.candidates[0].key == after.candidates[0].key == "GM0678"
    assert after.margin > before.margin and after.p_right >= before.p_right
    # the others' utterance of another name does not move to Kapelle
    engine.set_learned([("GM0678", "Kapelle", states, mel)])
    assert hear_again(engine, codes, spoken("Goes", "nl+f2")).candidates[0].key == "GM0664"
    engine.set_learned([])
