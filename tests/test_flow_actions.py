"""Typed actions say what they ask; the flow alone writes the record, enums end to end."""

from datetime import datetime, timedelta, timezone

import pytest

from ivr.core.callrecord import AttemptKind, AttemptVerdict, CallRecord, ErrorKind, InputKind, Outcome, Phase
from ivr.core.flow import (
    AskName,
    CallEnded,
    CallerHungUp,
    CallFlow,
    CallStarted,
    ChooseOfTwo,
    ConfirmOne,
    Digit,
    Dialling,
    DriverLost,
    MenuPage,
    NoInput,
    SpeechHeard,
    Transfer,
    TransferAnswered,
    TransferFailed,
)
from ivr.core.matcher import Matcher
from ivr.core.recognition import Recognition
from ivr.core.yes_no import yes_no
from ivr.core.plan import Calamity, RoutingMode
from ivr.plan_files import load_base_plan
from ivr.core.report import compute_kpis, error_kind, immediate_misroute
from ivr.core.routing import Verdict


@pytest.fixture(scope="module")
def plan():
    return load_base_plan()


def start(flow, number, **kw):
    return flow.handle(CallStarted(0.0, "c1", number, caller="h", wall_time=1000.0, **kw))


def test_menu_page_names_its_entries(plan):
    flow = CallFlow(plan, speech_available=False)
    [menu] = start(flow, "140113")
    assert isinstance(menu, MenuPage) and not menu.again and not menu.more
    candidates = [m.cbs_code for m in plan.candidates("0113")]
    assert [e.municipality for e in menu.entries] == candidates
    assert [e.digit for e in menu.entries] == [str(i + 1) for i in range(len(candidates))]
    assert menu.digits == "".join(e.digit for e in menu.entries) + "0"
    for e in menu.entries:  # the entry's announcement ends with its digit
        assert menu.prompts[e.heard_after - 3:e.heard_after] == (f"gemeente/{e.municipality}", "toets",
                                                                 f"cijfer/{e.digit}")
    [again] = flow.handle(Digit(1.0, "8"))
    assert isinstance(again, MenuPage) and again.again


def test_long_menu_pages_say_there_is_more(plan):
    flow = CallFlow(plan, speech_available=False)
    [menu] = start(flow, "14071")
    assert menu.more and menu.digits.endswith("90")
    [page2] = flow.handle(Digit(1.0, "9"))
    assert isinstance(page2, MenuPage) and not page2.again and not page2.more


def test_questions_say_what_they_ask(plan):
    flow = CallFlow(plan, matcher_factory=Matcher, yes_no=yes_no)
    [ask] = start(flow, "140113")
    assert isinstance(ask, AskName) and not ask.again
    assert ask.candidates == tuple(m.cbs_code for m in plan.candidates("0113"))
    flow._ask_confirm(1.0, (plan.municipalities["GM0664"],))
    [again] = flow.handle(SpeechHeard(2.0, Recognition.of_transcripts((("nee", 0.9),))))
    assert isinstance(again, AskName) and again.again
    [confirm] = flow._ask_confirm(3.0, (plan.municipalities["GM0664"],))
    assert confirm == ConfirmOne(("bedoelt_u", "gemeente/GM0664", "ja_nee"), "GM0664", 4.0)
    assert confirm.vocabulary_of == ()
    [choose] = flow._ask_confirm(4.0, (plan.municipalities["GM0664"], plan.municipalities["GM0678"]))
    assert isinstance(choose, ChooseOfTwo) and choose.options == ("GM0664", "GM0678") == choose.vocabulary_of
    [transfer] = flow.handle(Digit(5.0, "2"))
    assert transfer.municipality == "GM0678"
    a = flow.record.attempts[-1]
    assert (a.kind, a.input, a.verdict) == (AttemptKind.CONFIRM, InputKind.DTMF, AttemptVerdict.CHOSEN)


def test_record_holds_enums(plan):
    flow = CallFlow(plan, speech_available=False)
    start(flow, "140113")
    flow.handle(Digit(1.0, "1"))
    flow.handle(TransferAnswered(2.0, "GM0664"))
    flow.handle(CallerHungUp(5.0))
    rec = flow.record
    assert rec.outcome is Outcome.ROUTED and rec.phase is Phase.CONNECTED
    assert rec.mode is RoutingMode.DTMF and rec.decision is Verdict.TRANSFER
    assert all(isinstance(k, Phase) for k in rec.phase_seconds)
    back = CallRecord.from_dict(rec.to_dict())
    assert back == rec and back.outcome is Outcome.ROUTED and back.attempts[0].verdict is AttemptVerdict.CHOSEN


def test_driver_timings_arrive_as_events(plan):
    flow = CallFlow(plan, speech_available=False)
    [transfer] = flow.handle(CallStarted(10.0, "c1", "140111", wall_time=1000.0, expected="GM1676"))
    assert isinstance(transfer, Transfer) and flow.record.decision_ms == 0.0
    flow.handle(Dialling(10.004))
    assert flow.record.decision_ms == pytest.approx(4.0)
    flow.handle(TransferAnswered(10.5, "GM1676"))
    flow.handle(CallerHungUp(20.0))
    flow.handle(CallEnded(20.1, 1010.1))
    rec = flow.record
    assert rec.ended_at == 1010.1 and rec.expected_municipality == "GM1676"


def test_dialling_after_a_question_keeps_no_arrival_latency(plan):
    flow = CallFlow(plan, speech_available=False)
    start(flow, "140113")
    flow.handle(Digit(1.0, "1"))
    flow.handle(Dialling(3.0))
    assert flow.record.decision_ms is None


def test_error_kinds_come_from_events_not_words(plan):
    flow = CallFlow(plan, speech_available=False)
    start(flow, "140111")
    flow.handle(TransferFailed(30.0, "BUSY"))
    assert flow.record.error_kind is ErrorKind.TRANSFER_FAILED and error_kind(flow.record) is ErrorKind.TRANSFER_FAILED
    flow = CallFlow(plan, speech_available=False)
    start(flow, "140113")
    flow.handle(DriverLost(1.0, "whatever the words", ErrorKind.SHUTDOWN))
    assert error_kind(flow.record) is ErrorKind.SHUTDOWN and flow.record.outcome is Outcome.FAILED


def test_calamity_route_is_a_flag_not_a_word(plan):
    now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    plan2 = plan.with_changes(calamities=(Calamity("GM0664", "Local/elsewhere@x", "", now + timedelta(days=1)),))
    flow = CallFlow(plan2, speech_available=False, now=lambda: now)
    start(flow, "140113")
    [transfer] = flow.handle(Digit(1.0, "1"))  # Goes, under a calamity override
    assert transfer.destination == "Local/elsewhere@x" and flow.record.calamity
    flow.handle(TransferAnswered(2.0, "GM0678"))  # someone else answers: expected under a calamity
    flow.handle(CallerHungUp(5.0))
    assert immediate_misroute(flow.record) is None
    flow.record.calamity = False
    assert immediate_misroute(flow.record) == "answered_by_mismatch"
    assert compute_kpis([flow.record]).overall.calls == 1


def test_no_input_attempts_carry_the_phase_kind(plan):
    flow = CallFlow(plan, matcher_factory=Matcher, yes_no=yes_no)
    start(flow, "140113")
    flow.handle(NoInput(5.0))
    a = flow.record.attempts[-1]
    assert (a.kind, a.input, a.verdict) == (AttemptKind.SPEECH, InputKind.NO_INPUT, AttemptVerdict.NONE)


def test_store_migrates_records_written_before_the_enums(tmp_path, plan):
    import sqlite3

    from ivr.adapters.store import CallStore

    path = tmp_path / "old.sqlite"
    store = CallStore(path)
    store.save(CallRecord("a", "140111", error="transfer failed: BUSY", error_kind=ErrorKind.TRANSFER_FAILED,
                          reason="menu digit 1: calamity override for Goes", calamity=True))
    store.save(CallRecord("b", "140113", error="asterisk lost: EOF", error_kind=ErrorKind.ASTERISK_LOST))
    store.close()
    con = sqlite3.connect(path)
    con.execute("ALTER TABLE calls DROP COLUMN error_kind")
    con.execute("ALTER TABLE calls DROP COLUMN calamity")
    con.execute("DROP TABLE schema_version")  # files that old had no versions (ivr.adapters.store_schema)
    con.commit()
    con.close()
    store = CallStore(path)
    a, b = store.get("a"), store.get("b")
    assert a.error_kind is ErrorKind.TRANSFER_FAILED and a.calamity
    assert b.error_kind is ErrorKind.ASTERISK_LOST and not b.calamity
    store.close()
