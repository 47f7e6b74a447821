"""A suggestion of the municipality (issue 11, item 3): the flow as events in, actions out for
every answer; which callers get one (history, unique landline area code; never mobile, withheld
or foreign); the history query on a real SQLite file and the service's lookup."""

from __future__ import annotations

import asyncio
import sqlite3
import time

import pytest

from ivr.adapters.store import CallStore
from ivr.adapters.store_schema import MIGRATIONS
from ivr.config import Settings
from ivr.core.callrecord import CallRecord, Outcome, SuggestionResult, SuggestionSource
from ivr.core.flow import (
    AskName,
    DecideAgain,
    CallerHungUp,
    CallFlow,
    CallStarted,
    Digit,
    MenuPage,
    NoInput,
    SpeechHeard,
    SuggestOne,
    Transfer,
)
from ivr.core.matcher import Matcher
from ivr.core.prompts import PHRASES, PHRASES_EN
from ivr.core.recognition import Recognition
from ivr.core.suggestion import landline_area_code, national_number, suggestion_for
from ivr.core.yes_no import yes_no
from ivr.plan_files import load_base_plan
from ivr.service import Service

PLAN = load_base_plan()
GOES, KAPELLE, SCHOUWEN, HAARLEMMERMEER = "GM0664", "GM0678", "GM1676", "GM0394"
OFFER = "en/kies_engels"


def speech_flow():
    return CallFlow(PLAN, matcher_factory=Matcher, yes_no=yes_no)


def dtmf_flow():
    return CallFlow(PLAN, speech_available=False)


def start(flow, number="140113", known=None, area=None):
    return flow.handle(CallStarted(0.0, "c1", number, caller="h", wall_time=1000.0, known_municipality=known,
                                   caller_area_code=area))


def heard(at, *nbest):
    return SpeechHeard(at, Recognition.of_transcripts(nbest), speech_ended_at=at - 0.3, recogniser_ms=40.0)


# --- who gets a suggestion -------------------------------------------------------------------


@pytest.mark.parametrize("number,code", [
    ("0111234567", "0111"), ("+31111234567", "0111"), ("0031111234567", "0111"), ("31111234567", "0111"),
    ("0113 123456", "0113"), ("020-1234567", "020"),
    ("0612345678", None), ("+31612345678", None),  # mobile
    ("", None), ("anonymous", None), ("Unknown", None),  # withheld
    ("+4930123456", None), ("004930123456", None),  # foreign
    ("0800123456", None), ("0900123456", None), ("0881234567", None),  # not landlines
    ("011123456", None), ("01112345678", None),  # one digit short, one too many
])
def test_the_landline_area_code_of_a_caller(number, code):
    assert landline_area_code(PLAN, number) == code


def test_national_number_forms():
    assert national_number("+31 (0)113") is None  # no Dutch number
    assert national_number("+31 113 123 456") == "0113123456"


def test_history_wins_over_the_landline_and_both_must_be_candidates():
    candidates = PLAN.candidates("0118")  # Middelburg, Vlissingen, Veere, Schouwen-Duiveland
    assert suggestion_for(PLAN, candidates, known="GM0687", caller_area_code="0111") == (
        PLAN.municipalities["GM0687"], SuggestionSource.HISTORY)
    # Goes is not a candidate of 0118: the landline (0111 is Schouwen-Duiveland's alone) counts
    assert suggestion_for(PLAN, candidates, known=GOES, caller_area_code="0111") == (
        PLAN.municipalities[SCHOUWEN], SuggestionSource.LANDLINE)
    assert suggestion_for(PLAN, candidates, known=None, caller_area_code="0118") is None  # shared: who knows
    assert suggestion_for(PLAN, candidates, known=None, caller_area_code="0117") is None  # Sluis: not in 0118
    assert suggestion_for(PLAN, candidates, known=None, caller_area_code=None) is None


def test_a_municipality_14_plus_cannot_reach_is_never_suggested():
    assert suggestion_for(PLAN, PLAN.candidates("023"), known=HAARLEMMERMEER, caller_area_code=None) is None


def test_no_suggestion_without_knowledge_or_for_a_unique_code():
    [ask] = start(speech_flow())
    assert isinstance(ask, AskName) and ask.prompts == ("welkom", OFFER, "zeg_gemeente")
    flow = speech_flow()
    [transfer] = start(flow, "140111", known=SCHOUWEN, area="0111")  # straight through, as ever
    assert isinstance(transfer, Transfer) and flow.record.suggested is None


# --- the question and every answer -----------------------------------------------------------


def test_the_suggestion_is_a_question_that_hears_yes_no_and_the_names():
    flow = speech_flow()
    [ask] = start(flow, known=GOES)
    assert isinstance(ask, SuggestOne) and ask.by_voice
    assert ask.prompts == ("welkom", "suggestie_weer", "gemeente/" + GOES, "suggestie_antwoord")
    assert ask.municipality == GOES and set(ask.vocabulary_of) == set(PLAN.area_codes["0113"].municipalities)
    assert set(ask.phrases) >= {"ja", "nee"}
    rec = flow.record
    assert (rec.suggested, rec.suggestion_source, rec.suggestion, rec.phase) == (GOES, "history", None, "suggest")


def test_a_landline_suggestion_does_not_say_again():
    [ask] = start(speech_flow(), "140118", area="0111")
    assert ask.prompts[1:3] == ("suggestie_vast", "gemeente/" + SCHOUWEN)


@pytest.mark.parametrize("answer", [heard(3.0, ("ja", 0.9)), heard(3.0, ("ja hoor", 0.8), ("nee", 0.2)),
                                    Digit(3.0, "1")])
def test_yes_is_an_announced_transfer_in_one_question(answer):
    flow = speech_flow()
    start(flow, known=GOES)
    [transfer] = flow.handle(answer)
    assert isinstance(transfer, Transfer) and transfer.municipality == GOES
    assert transfer.prompts == ("doorverbinden", "gemeente/" + GOES, "terug_keuze") and transfer.back_digit == "*"
    rec = flow.record
    assert (rec.suggestion, rec.recognition_attempts, rec.municipality) == ("accepted", 1, GOES)
    assert (rec.attempts[0].kind, rec.attempts[0].verdict, rec.attempts[0].chosen) == ("suggest", "yes", GOES)
    assert rec.ivr_seconds == 3.0


@pytest.mark.parametrize("answer", [heard(3.0, ("nee", 0.9)), Digit(3.0, "2")])
def test_no_asks_the_normal_question_and_is_no_misroute(answer):
    flow = speech_flow()
    start(flow, known=GOES)
    [ask] = flow.handle(answer)
    assert isinstance(ask, AskName) and ask.prompts == (OFFER, "zeg_gemeente") and not ask.again
    assert "English" in ask.phrases  # the offer the suggestion did not make stands
    rec = flow.record
    assert (rec.suggestion, rec.rejected_confirmations, rec.recognition_attempts) == ("refused", 0, 2)
    [transfer] = flow.handle(heard(7.0, ("kapelle", 0.9)))
    assert transfer.municipality == KAPELLE and rec.municipality == KAPELLE


def test_a_name_instead_is_decided_as_the_first_answer():
    flow = speech_flow()
    start(flow, known=GOES)
    [transfer] = flow.handle(heard(3.0, ("kapelle", 0.9), ("nee", 0.3)))  # a "nee" ranked lower is no refusal
    assert isinstance(transfer, Transfer) and transfer.municipality == KAPELLE
    rec = flow.record
    assert (rec.suggestion, rec.recognition_attempts) == ("named", 1)
    assert (rec.attempts[0].kind, rec.attempts[0].verdict, rec.attempts[0].chosen) == ("speech", "accept", KAPELLE)


def test_a_name_not_understood_counts_as_the_first_name_attempt():
    flow = speech_flow()
    start(flow, known=GOES)
    [national] = flow.handle(heard(3.0, ("zwembad openingstijden", 0.9)))
    assert isinstance(national, DecideAgain)  # nothing among the code's names: decided again among all
    [again] = flow.handle(heard(3.5, ("zwembad openingstijden", 0.9)))
    assert isinstance(again, AskName) and again.prompts[0] == "niet_verstaan"
    [menu] = flow.handle(NoInput(9.0))  # the second and last spoken attempt: then the menu, as without
    assert isinstance(menu, MenuPage)
    assert flow.record.suggestion == "named"


def test_no_answer_asks_the_normal_question():
    flow = speech_flow()
    start(flow, known=GOES)
    [ask] = flow.handle(NoInput(6.0))
    assert isinstance(ask, AskName) and ask.prompts == (OFFER, "zeg_gemeente")
    assert flow.record.suggestion == "no_answer"
    assert flow.record.attempts[0].input == "no_input"


def test_zero_is_a_person_and_another_key_the_normal_question():
    flow = speech_flow()
    start(flow, known=GOES)
    [operator] = flow.handle(Digit(2.0, "0"))
    assert operator.destination == PLAN.operator_destination and flow.record.suggestion == "refused"
    flow = speech_flow()
    start(flow, known=GOES)
    [ask] = flow.handle(Digit(2.0, "7"))
    assert isinstance(ask, AskName) and flow.record.attempts[0].verdict == "invalid"


def test_star_after_an_accepted_suggestion_goes_back():
    flow = speech_flow()
    start(flow, known=GOES)
    flow.handle(Digit(3.0, "1"))
    [ask] = flow.handle(Digit(4.0, "*"))
    assert isinstance(ask, AskName)
    assert (flow.record.municipality, flow.record.rejected_confirmations) == (None, 1)


def test_hanging_up_during_the_suggestion_is_recorded_in_its_phase():
    flow = speech_flow()
    start(flow, known=GOES)
    flow.handle(CallerHungUp(2.0, "16"))
    rec = flow.record
    assert (rec.outcome, rec.hangup_phase, rec.suggested, rec.suggestion) == ("caller_hangup", "suggest", GOES, None)
    assert rec.phase_seconds["suggest"] == 2.0


def test_in_a_dtmf_area_code_the_suggestion_is_answered_by_key():
    flow = dtmf_flow()
    [ask] = start(flow, known=GOES)
    assert isinstance(ask, SuggestOne) and not ask.by_voice and ask.vocabulary_of == ()
    assert ask.prompts == ("welkom", "suggestie_weer", "gemeente/" + GOES, "suggestie_toets")
    [transfer] = flow.handle(Digit(3.0, "1"))
    assert transfer.municipality == GOES and flow.record.suggestion == "accepted"
    flow = dtmf_flow()
    start(flow, known=GOES)
    [menu] = flow.handle(Digit(3.0, "2"))
    assert isinstance(menu, MenuPage) and menu.prompts[0] == "kies_menu"
    [transfer] = flow.handle(Digit(6.0, "4"))  # Kapelle, fourth on the page
    assert transfer.municipality == KAPELLE and flow.record.recognition_attempts == 2


def test_from_abroad_there_is_no_suggestion(tmp_path):
    from ivr.adapters.overrides import load_plan

    path = tmp_path / "plan.toml"
    path.write_text('[[access_numbers]]\nnumber = "+31 88 123 4567"\n')
    flow = CallFlow(load_plan(path), matcher_factory=Matcher, yes_no=yes_no)
    [ask] = flow.handle(CallStarted(0.0, "c1", "+31881234567", known_municipality=GOES))
    assert isinstance(ask, AskName) and flow.record.suggested is None


def test_every_suggestion_prompt_has_an_english_copy():
    keys = [k for k in PHRASES if k.startswith("suggestie_")]
    assert len(keys) == 4 and all(PHRASES_EN.get(k) for k in keys)


# --- the history: a real SQLite file, and the service's lookup -------------------------------


def routed(call_id, caller, cbs, started_at, outcome=Outcome.ROUTED):
    return CallRecord(call_id, "140113", caller=caller, started_at=started_at, area_code="0113",
                      municipality=cbs, outcome=outcome)


def test_the_store_finds_the_last_municipality_a_caller_was_routed_to(tmp_path):
    store = CallStore(tmp_path / "calls.sqlite")
    now = time.time()
    store.save_many([
        routed("a", "h1", "GM0654", now - 20 * 86400),
        routed("b", "h1", GOES, now - 2 * 86400),
        routed("c", "h1", KAPELLE, now - 3600, outcome=Outcome.CALLER_HANGUP),  # never reached
        routed("d", "h1", "GM0363", now - 60),  # Amsterdam: not a candidate of 0113
        routed("e", "h2", "GM0703", now - 40 * 86400),  # too long ago
    ])
    codes = PLAN.area_codes["0113"].municipalities
    assert store.last_routed_municipality("h1", codes, now - 30 * 86400) == GOES
    assert store.last_routed_municipality("h1", codes, now - 86400) is None
    assert store.last_routed_municipality("h2", codes, now - 30 * 86400) is None
    assert store.last_routed_municipality("", codes, 0) is None  # withheld: no hash
    plan = sqlite3.connect(tmp_path / "calls.sqlite").execute(
        "EXPLAIN QUERY PLAN SELECT municipality FROM calls WHERE caller = ? AND started_at >= ?", ("h1", 0)).fetchall()
    assert "calls_caller" in str(plan)  # one index seek per call, not a scan of every record
    store.close()


def test_a_version_3_file_gains_the_suggestion_columns(tmp_path):
    path = tmp_path / "old.sqlite"
    store = CallStore(path)
    store.save(CallRecord("old", "140113", outcome="routed"))
    store.close()
    con = sqlite3.connect(path)  # as version 3 left it
    for column in ("suggested", "suggestion_source", "suggestion"):
        con.execute(f"ALTER TABLE calls DROP COLUMN {column}")
    con.execute("DELETE FROM schema_version WHERE version >= 4")
    con.execute("DROP TABLE IF EXISTS learned")  # migration 5's (self-learning), after the suggestion's
    con.commit()
    con.close()
    store = CallStore(path)
    assert store.get("old").suggestion is None
    store.save(CallRecord("new", "140113", suggested=GOES, suggestion_source=SuggestionSource.HISTORY,
                          suggestion=SuggestionResult.ACCEPTED))
    new = store.get("new")
    assert (new.suggested, new.suggestion_source, new.suggestion) == (GOES, "history", "accepted")
    store.close()
    versions = [v for (v,) in sqlite3.connect(path).execute("SELECT version FROM schema_version ORDER BY version")]
    assert versions[:4] == [1, 2, 3, 4] and versions == [m[0] for m in MIGRATIONS]


def test_the_service_looks_up_history_and_landline_only_for_calls_that_are_asked(tmp_path):
    def context(service, number, caller, dialled):
        return asyncio.run(service.caller_context(number, caller, dialled))

    service = Service(Settings(db_path=tmp_path / "calls.sqlite", speech_engine="none"), plan=PLAN)
    try:
        service.store.save(routed("a", "h1", GOES, time.time() - 86400))
        got = context(service, "0111234567", "h1", "140113")
        assert (got.known_municipality, got.caller_area_code) == (GOES, "0111")
        assert context(service, "0612345678", "h1", "140111").known_municipality is None  # straight through
        assert context(service, "", "", "140113").known_municipality is None
        service.settings.suggest_days, service.settings.suggest_landline = 0, False
        got = context(service, "0111234567", "h1", "140113")
        assert (got.known_municipality, got.caller_area_code) == (None, None)
    finally:
        asyncio.run(service.stop())


# --- the simulator and `ivr report` ------------------------------------------------------------


def test_the_simulator_pairs_the_same_calls_with_and_without_the_suggestion(tmp_path):
    import subprocess
    import sys

    from ivr.simulator import SimConfig, simulate
    from ivr.simulator.model import CallerProfile
    from ivr.simulator.run import suggestion_savings

    def run(name, **profile):
        db = tmp_path / f"{name}.sqlite"
        out = simulate(SimConfig(calls=3000, seed=5, workers=1, progress=False, records="all", db=db, metrics=True,
                                 caller_profile=CallerProfile(**profile)))
        return out, db

    base, _ = run("base")
    assert base["kpis"]["suggestions"]["made"] == 0  # the 2020 world has none
    with_, with_db = run("with", repeat_share=0.5, landline_share=0.5)
    without, without_db = run("without", repeat_share=0.5, landline_share=0.5, suggest=False)
    s = with_["kpis"]["suggestions"]
    assert s["made"] > 0.3 * 3000 and s["accepted"] > s["refused"] > 0
    answered = s["accepted"] + s["refused"] + s["named"] + s["no_answer"]
    assert 0.97 * s["made"] < answered <= s["made"]  # the rest hung up during the question
    assert without["kpis"]["suggestions"]["made"] == 0
    assert with_["metrics_vs_kpis"] == "agree"
    # the same callers both ways: every call wanted the same municipality
    a, b = CallStore(with_db), CallStore(without_db)
    try:
        wanted_a = {r.call_id: r.expected_municipality for r in a.iter_query()}
        wanted_b = {r.call_id: r.expected_municipality for r in b.iter_query()}
    finally:
        a.close()
        b.close()
    assert wanted_a == wanted_b
    groups = suggestion_savings(with_db, without_db)
    accepted = groups["accepted"]
    assert accepted["questions_with"] == accepted["calls"]  # an accepted suggestion is the only question
    assert accepted["ivr_s_with"] < accepted["ivr_s_without"]
    assert groups["refused"]["questions_with"] > groups["refused"]["questions_without"]  # its cost
    table = subprocess.run([sys.executable, "-m", "ivr.cli", "report", "--db", str(with_db)],
                           capture_output=True, text=True, check=True).stdout
    assert f"suggestion asked first: made {s['made']}, accepted {s['accepted']}, refused {s['refused']}" in table
