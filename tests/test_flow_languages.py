"""Issue 11 items 4 and 6 through the call flow, as events in and actions out (no Asterisk):
English ("For English, press 9", or the caller says "English") and the access numbers that
callers abroad dial (any municipality, by name or by keying in its area code); and the
override file that configures both, refused with file, line and reason when it is wrong."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from ivr.adapters.api import create_app
from ivr.adapters.overrides import load_plan
from ivr.core.callrecord import AttemptVerdict
from ivr.core.flow import (
    DecideAgain,
    AskName,
    CallFlow,
    CallStarted,
    Digit,
    Goodbye,
    MenuPage,
    NoInput,
    SpeechHeard,
    Transfer,
    TransferAnswered,
)
from ivr.core.matcher import Matcher
from ivr.core.yes_no import yes_no
from ivr.core.plan import PlanError, access_number_key
from ivr.plan_files import load_base_plan
from ivr.core.prompts import all_prompt_texts, localised, voice_of
from ivr.core.recognition import Recognition

ACCESS = '''
languages = ["en"]

[[access_numbers]]
number = "+31 88 123 4567"

[[access_numbers]]
number = "088 123 4568"
language = "en"
'''
OFFER = "en/kies_engels"


@pytest.fixture(scope="module")
def plan(tmp_path_factory):
    path = tmp_path_factory.mktemp("plan") / "plan.toml"
    path.write_text(ACCESS)
    return load_plan(path)


def speech_flow(plan):
    return CallFlow(plan, matcher_factory=Matcher, yes_no=yes_no)


def dtmf_flow(plan):
    return CallFlow(plan, speech_available=False)


def start(flow, number):
    return flow.handle(CallStarted(0.0, "c1", number, caller="h", wall_time=1000.0))


def heard(at, text, conf=0.95):
    return SpeechHeard(at, Recognition.of_transcripts(((text, conf),)), speech_ended_at=at - 0.3, recogniser_ms=50.0)


# --- item 4: English -------------------------------------------------------------------------


def test_the_greeting_offers_english_and_9_switches_the_whole_dialogue(plan):
    flow = speech_flow(plan)
    [ask] = start(flow, "140113")
    assert isinstance(ask, AskName) and ask.prompts == ("welkom", OFFER, "zeg_gemeente")
    assert ask.phrases == ("English",)  # the recogniser also listens for the language's name
    [again] = flow.handle(Digit(1.0, "9"))
    assert isinstance(again, AskName)
    assert again.prompts == ("en/welkom", "en/zeg_gemeente") and again.candidates == ask.candidates
    assert not again.again and again.phrases == ()  # asked anew in English, not "not understood"
    unsure = SpeechHeard(3.0, Recognition.of_transcripts((("Reimerswaal", 0.5), ("Kapelle", 0.3))), 2.7, 50.0)
    [national] = flow.handle(unsure)
    assert isinstance(national, DecideAgain)  # not sure among 0113's names: decided again among all
    [confirm] = flow.handle(unsure)  # Reimerswaal is 0113's: the code's own question
    assert confirm.prompts == ("en/bedoelt_u", "gemeente/GM0703", "en/ja_nee")  # names keep their Dutch recording
    [transfer] = flow.handle(heard(5.0, "yes"))
    assert isinstance(transfer, Transfer) and transfer.municipality == "GM0703"
    assert transfer.prompts == ("en/doorverbinden", "gemeente/GM0703", "en/terug_keuze")
    flow.handle(TransferAnswered(6.0, "GM0703"))
    rec = flow.record
    assert (rec.language, rec.outcome, rec.municipality, rec.digits) == ("en", "routed", "GM0703", "9")
    assert [a.verdict for a in rec.attempts] == [AttemptVerdict.LANGUAGE, AttemptVerdict.CONFIRM,
                                                 AttemptVerdict.CONFIRM, AttemptVerdict.YES]  # code, nation, yes
    assert rec.recognition_attempts == 2  # the language choice is not a question about the municipality


def test_saying_english_switches_too(plan):
    flow = speech_flow(plan)
    start(flow, "140113")
    [again] = flow.handle(heard(2.0, "English"))
    assert again.prompts == ("en/welkom", "en/zeg_gemeente")
    assert flow.record.language == "en" and flow.record.attempts[0].heard == "English"
    [transfer] = flow.handle(heard(4.0, "Goes"))
    assert transfer.municipality == "GM0664" and transfer.prompts[0] == "en/doorverbinden"


def test_an_unsure_english_is_no_language_switch(plan):
    from ivr.core.recognition import Candidate, EngineVerdict

    flow = speech_flow(plan)
    start(flow, "140113")
    # a closed-set engine heard "Utrecht" as "English", unsure: the Dutch dialogue goes on
    unsure = Recognition((Candidate("English", "English", 0.5), Candidate("GM0664", "Goes", 0.3)),
                         EngineVerdict.CONFIRM, p_right=0.46)
    [next_action] = flow.handle(SpeechHeard(3.0, unsure, 2.7, 50.0))
    assert flow.record.language == "nl" and AttemptVerdict.LANGUAGE not in [a.verdict for a in flow.record.attempts]
    assert not any(p.startswith("en/") for p in getattr(next_action, "prompts", ()))
    sure = Recognition((Candidate("English", "English", 0.99),), EngineVerdict.ACCEPT, p_right=1.0)
    flow = speech_flow(plan)
    start(flow, "140113")
    flow.handle(SpeechHeard(3.0, sure, 2.7, 50.0))
    assert flow.record.language == "en"


def test_the_dtmf_menu_offers_english_where_9_is_free(plan):
    flow = dtmf_flow(plan)
    [menu] = start(flow, "140113")
    assert menu.prompts[:3] == ("welkom", OFFER, "kies_menu")
    assert "9" not in menu.digits  # a simulated caller's wrong key is never 9: the offer is extra
    [english] = flow.handle(Digit(1.0, "9"))
    assert isinstance(english, MenuPage)
    assert [(e.digit, e.municipality) for e in english.entries] == [(e.digit, e.municipality) for e in menu.entries]
    assert english.prompts[:2] == ("en/welkom", "en/kies_menu") and "en/cijfer/1" in english.prompts
    assert "gemeente/GM0664" in english.prompts
    [transfer] = flow.handle(Digit(2.0, menu.entries[0].digit))
    assert transfer.municipality == menu.entries[0].municipality and flow.record.language == "en"
    assert flow.record.recognition_attempts == 1


def test_where_9_names_a_page_there_is_no_offer_and_9_pages_on(plan):
    flow = dtmf_flow(plan)
    [menu] = start(flow, "14035")  # ten municipalities: 9 = more
    assert OFFER not in menu.prompts and menu.more
    [page2] = flow.handle(Digit(1.0, "9"))
    assert flow.record.language == "nl" and page2.entries[0].digit == "1" and page2.prompts[0] == "voor"


def test_without_languages_in_the_plan_the_greeting_is_as_before(plan):
    flow = speech_flow(plan.with_changes(languages=()))
    [ask] = start(flow, "140113")
    assert ask.prompts == ("welkom", "zeg_gemeente") and ask.phrases == ()
    [menu] = flow.handle(Digit(1.0, "9"))  # a key while listening: the menu, as it always was
    assert isinstance(menu, MenuPage) and flow.record.language == "nl"


def test_english_prompts_are_rendered_in_their_own_folder_with_the_english_voice():
    texts = all_prompt_texts(load_base_plan())
    assert texts["en/welkom"].startswith("Welcome") and texts["en/cijfer/9"] == "nine"
    assert texts[OFFER] == "For English, press 9."
    assert voice_of("en/welkom") == "en-gb" and voice_of("welkom") == voice_of("gemeente/GM0664") == "nl"
    assert localised(("welkom", "gemeente/GM0664", "cijfer/2", OFFER), "en") == (
        "en/welkom", "gemeente/GM0664", "en/cijfer/2", OFFER)
    # every key the flow says in Dutch exists in English too
    assert {k for k in texts if "/" not in k} - {k[3:] for k in texts if k.startswith("en/")} == set()


# --- item 6: from abroad ----------------------------------------------------------------------


def test_an_access_number_asks_for_any_municipality_by_name(plan):
    flow = speech_flow(plan)
    [ask] = start(flow, "+31881234567")
    assert ask.prompts == ("welkom", OFFER, "welke_gemeente")
    assert len(ask.candidates) == len(plan.municipalities) == 342
    [transfer] = flow.handle(heard(3.0, "Utrecht"))
    assert isinstance(transfer, Transfer) and transfer.municipality == "GM0344"
    flow.handle(TransferAnswered(4.0, "GM0344"))
    rec = flow.record
    assert (rec.access_number, rec.area_code, rec.mode, rec.outcome) == ("31881234567", "030", "speech", "routed")


def test_from_abroad_star_after_a_wrong_name_asks_again_among_every_municipality(plan):
    flow = speech_flow(plan)
    start(flow, "+31881234567")
    flow.handle(heard(3.0, "Utrecht"))
    [again] = flow.handle(Digit(4.0, "*"))  # "U wordt doorverbonden met de gemeente Utrecht" - not that one
    assert again.prompts == ("niet_verstaan", "welke_gemeente") and len(again.candidates) == 342
    [transfer] = flow.handle(heard(6.0, "Maastricht"))
    assert transfer.municipality == "GM0935"
    assert (flow.record.area_code, flow.record.rejected_confirmations) == ("043", 1)


def test_from_abroad_a_keyed_area_code_enters_the_same_flow(plan):
    flow = speech_flow(plan)
    start(flow, "0031881234567")
    [wait] = flow.handle(Digit(1.0, "0"))  # the first digit stops the question
    assert isinstance(wait, MenuPage) and wait.area_code and wait.prompts == () and wait.entries == ()
    assert flow.handle(Digit(1.3, "1"))[0].area_code
    flow.handle(Digit(1.6, "1"))
    [ask] = flow.handle(Digit(1.9, "3"))  # 0113: shared, asked as a call to 14 0113 is
    assert isinstance(ask, AskName) and ask.prompts == ("zeg_gemeente",)
    assert ask.candidates == tuple(m.cbs_code for m in plan.candidates("0113"))
    [transfer] = flow.handle(heard(4.0, "Goes"))
    assert transfer.municipality == "GM0664"
    rec = flow.record
    assert (rec.area_code, rec.digits, rec.access_number) == ("0113", "0113", "31881234567")


def test_from_abroad_without_speech_the_area_code_is_keyed_and_a_unique_code_is_announced(plan):
    flow = dtmf_flow(plan)
    [ask] = start(flow, "31881234567")
    assert isinstance(ask, MenuPage) and ask.area_code
    assert ask.prompts == ("welkom", OFFER, "toets_netnummer")
    for i, d in enumerate("011"):
        flow.handle(Digit(1.0 + i, d))
    [transfer] = flow.handle(Digit(4.0, "1"))  # 0111: Schouwen-Duiveland alone
    assert transfer.municipality == "GM1676" and transfer.back_digit == "*"
    assert transfer.prompts == ("doorverbinden", "gemeente/GM1676", "terug_keuze")


def test_an_unknown_area_code_twice_goes_to_a_person(plan):
    flow = dtmf_flow(plan)
    start(flow, "+31881234567")
    flow.handle(Digit(1.0, "0"))
    [again] = flow.handle(Digit(2.0, "6"))  # no area code starts 06 (mobile numbers do)
    assert again.prompts == ("onbekend_netnummer", "toets_netnummer") and again.again
    [operator] = flow.handle(NoInput(9.0))  # the second failure: a person takes over
    assert isinstance(operator, Transfer) and operator.destination == plan.operator_destination
    rec = flow.record
    assert (rec.decision, rec.digits) == ("operator", "06")
    assert [a.verdict for a in rec.attempts] == [AttemptVerdict.INVALID, AttemptVerdict.NONE]


def test_an_english_access_number_starts_in_english(plan):
    flow = dtmf_flow(plan)
    [ask] = start(flow, "+31881234568")
    assert ask.prompts == ("en/welkom", "en/toets_netnummer") and flow.record.language == "en"


def test_english_chosen_from_abroad_while_keying(plan):
    flow = dtmf_flow(plan)
    start(flow, "+31881234567")
    [ask] = flow.handle(Digit(1.0, "9"))
    assert ask.prompts == ("en/welkom", "en/toets_netnummer") and ask.area_code
    assert flow.record.language == "en"


def test_a_14_number_is_unchanged_by_access_numbers(plan):
    flow = dtmf_flow(plan)
    [transfer] = start(flow, "140111")
    assert transfer == Transfer("Local/GM1676@ivr14-lab", (), "GM1676")
    assert flow.record.access_number is None and flow.record.language == "nl"
    [bye] = start(dtmf_flow(plan), "+31881239999")  # an ordinary number that is no access number
    assert isinstance(bye, Goodbye) and bye.prompts == ("onbekend_nummer", "tot_ziens")


@pytest.mark.parametrize("text, key", [("+31 88 123 4567", "31881234567"), ("0031 88 123 4567", "31881234567"),
                                       ("088-123 4567", "31881234567"), ("31881234567", "31881234567"),
                                       ("+44 20 7946 0000", "442079460000"), ("12", None), ("+31 88 abc", None)])
def test_access_number_forms(text, key):
    assert access_number_key(text) == key


# --- bad input: the override file -----------------------------------------------------------


@pytest.mark.parametrize("text, line, reason", [
    ('[[access_numbers]]\nnumber = "+31 88 123 4567"\n\n[[access_numbers]]\nnumber = "+31 14 0113"\n', 5,
     "collides with the 14-numbers"),
    ('[[access_numbers]]\nnumber = "140113000"\n', 2, "collides with the 14-numbers"),
    ('[[access_numbers]]\nnumber = "+31 88 123 4567"\nlanguage = "fy"\n', 3, "unknown language 'fy'"),
    ('languages = ["en", "xx"]\n', 1, "unknown language 'xx'"),
    ('[[access_numbers]]\nnumber = "none"\n', 2, "not a phone number"),
])
def test_a_bad_override_file_is_refused_with_file_line_and_reason(tmp_path, text, line, reason):
    path = tmp_path / "plan.toml"
    path.write_text(text)
    with pytest.raises(PlanError) as err:
        load_plan(path)
    assert str(err.value).startswith(f"{path}:{line}:") and reason in str(err.value)


def test_a_reload_with_a_bad_access_number_is_refused_and_the_good_plan_stays(tmp_path):
    from test_plan_admin import AUTH, make_service

    plan_file = tmp_path / "plan.toml"
    plan_file.write_text(ACCESS)
    service = make_service(tmp_path, plan_file)
    try:
        with TestClient(create_app(service)) as client:
            good = service.plan
            assert good.access_number("+31881234567") is not None
            plan_file.write_text(ACCESS.replace("088 123 4568", "14 0113"))
            r = client.post("/v1/plan/reload", headers=AUTH)
            assert r.status_code == 422 and "plan.toml:" in r.json()["detail"]
            assert "collides with the 14-numbers" in r.json()["detail"]
            assert service.plan is good
    finally:
        service.store.close()


# --- the simulator and `ivr report` count the new paths ------------------------------------------


def test_the_simulator_counts_english_and_abroad_callers_only_when_asked_to(tmp_path):
    import subprocess
    import sys

    from ivr.simulator import SimConfig, simulate
    from ivr.simulator.model import CallerProfile

    def run(**shares):
        db = tmp_path / f"sim-{len(shares)}.sqlite"
        return simulate(SimConfig(calls=4000, seed=3, workers=1, progress=False, records="all", db=db,
                                  caller_profile=CallerProfile(**shares))), db

    base, _ = run()
    assert base["kpis"]["languages"] == {"nl": 4000} and base["kpis"]["entries"]["access"] == 0
    mixed, db = run(english_share=0.2, abroad_share=0.1)
    k = mixed["kpis"]
    assert 0.15 * 4000 < k["languages"]["en"] < 0.25 * 4000
    assert 0.07 * 4000 < k["entries"]["access"] < 0.13 * 4000
    # from abroad nearly every caller reaches a municipality (by name or keyed area code)
    assert k["routed_by_entry"]["access"] / k["entries"]["access"] > 0.8
    assert k["routed_by_language"]["en"] / k["languages"]["en"] > 0.8
    table = subprocess.run([sys.executable, "-m", "ivr.cli", "report", "--db", str(db)],
                           capture_output=True, text=True, check=True).stdout
    assert f"en {k['languages']['en']} (routed {k['routed_by_language']['en']})" in table
    assert f"access {k['entries']['access']} (routed {k['routed_by_entry']['access']})" in table


def test_the_store_upgrades_files_written_before_languages(tmp_path):
    import sqlite3

    from ivr.adapters.store import CallStore
    from ivr.core.callrecord import CallRecord

    path = tmp_path / "old.sqlite"
    store = CallStore(path)
    store.save(CallRecord("old", "140113", outcome="routed"))
    store.close()
    con = sqlite3.connect(path)
    con.execute("ALTER TABLE calls DROP COLUMN language")
    con.execute("ALTER TABLE calls DROP COLUMN access_number")
    con.execute("DROP TABLE schema_version")  # files that old had no versions (ivr.adapters.store_schema)
    from old_store import later_columns

    for column in later_columns():  # added by migrations after files had versions
        con.execute(f"ALTER TABLE calls DROP COLUMN {column}")
    con.commit()
    con.close()
    store = CallStore(path)
    old = store.get("old")
    assert (old.language, old.access_number) == ("nl", None)  # every call before was held in Dutch
    store.save(CallRecord("new", "+31881234567", language="en", access_number="31881234567"))
    assert (store.get("new").language, store.get("new").access_number) == ("en", "31881234567")
    store.close()


def test_prompts_are_rendered_with_their_languages_voice(tmp_path):
    import json
    import wave

    from ivr_lab.prompts_build import FORMAT_VERSION, MANIFEST, _sha, build_prompts

    texts = {"tot_ziens": "Tot ziens.", "en/tot_ziens": "Goodbye."}
    built = build_prompts(texts, tmp_path / "out")
    manifest = json.loads((tmp_path / "out" / MANIFEST).read_text())
    assert manifest["en/tot_ziens"] == _sha(FORMAT_VERSION, "tts", "en-gb", "Goodbye.")
    assert manifest["tot_ziens"] == _sha(FORMAT_VERSION, "tts", "nl", "Tot ziens.")
    with wave.open(str(built["en/tot_ziens"])) as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (8000, 1, 2) and w.getnframes() > 2000
    # an operator's recording in <overrides>/en/ replaces the English rendering
    rec = tmp_path / "rec" / "en"
    rec.mkdir(parents=True)
    with wave.open(str(rec / "tot_ziens.wav"), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(16000)
        w.writeframes(b"\0\1" * 16000)
    build_prompts(texts, tmp_path / "out", overrides_dir=tmp_path / "rec")
    with wave.open(str(built["en/tot_ziens"])) as w:
        assert (w.getframerate(), w.getnframes()) == (8000, 8000)  # the recording, converted
