"""Issue 11 item 2: same-name places asked back by name, confusable pairs held to a confirmation.

Events in, actions out (no Asterisk), with the real matcher and the shipped plan."""

import pytest

from ivr.core.actions import ChooseOfTwo, ConfirmOne, DecideAgain, Transfer, choose_place_prompts, place_prompt
from ivr.core.flow import CallFlow, CallStarted, Digit, SpeechHeard, same_name_place
from ivr.core.matcher import ConfusableRule, Matcher, MatchResult, MatchVerdict, Scored
from ivr.core.prompts import all_prompt_texts, localised, sentence, shared_places
from ivr.core.recognition import Candidate, EngineVerdict, Recognition
from ivr.core.yes_no import yes_no
from ivr.plan_files import confusable_pairs, confusable_rule, load_base_plan

TIEL, BUREN, BARNEVELD, LEUSDEN = "GM0281", "GM0214", "GM0203", "GM0327"
HAARLEM, HAARLEMMERMEER, WEERT, NEDERWEERT = "GM0392", "GM0394", "GM0988", "GM0946"


@pytest.fixture(scope="module")
def plan():
    return load_base_plan()


@pytest.fixture(scope="module")
def rule():
    return confusable_rule()


def flow_for(plan, rule, number):
    flow = CallFlow(plan, matcher_factory=lambda c: Matcher(c, confusable=rule), yes_no=yes_no)
    flow.handle(CallStarted(0.0, "c1", number, caller="h", wall_time=1000.0))
    return flow


def said(text):
    return Recognition.of_transcripts([(text, 0.9)])


def speech_attempt(flow):
    """The answer's own attempt (a national second pass adds one of its own after it)."""
    return next(a for a in flow.record.attempts if a.kind == "speech")


def hear(flow, at, recognition):
    """A spoken answer, decided again among every municipality when the flow asks (as drivers do)."""
    actions = flow.handle(SpeechHeard(at, recognition))
    if len(actions) == 1 and isinstance(actions[0], DecideAgain):
        actions = flow.handle(SpeechHeard(at, recognition))
    return actions


def test_a_place_of_two_municipalities_is_asked_back_by_name(plan, rule):
    flow = flow_for(plan, rule, "140342")  # Barneveld and Leusden both have a village Achterveld
    [action] = hear(flow, 1.0, said("ik wil Achterveld"))
    assert isinstance(action, ChooseOfTwo)
    assert set(action.options) == {BARNEVELD, LEUSDEN}
    assert action.place == "Achterveld"
    assert action.prompts == choose_place_prompts("Achterveld", *action.options)
    text = sentence(action.prompts, plan)
    assert text.startswith("Bedoelt u Achterveld in de gemeente ")
    assert " of Achterveld in de gemeente " in text
    assert speech_attempt(flow).asked == "same_name_place"
    # the caller picks the second by digit: transferred there
    [transfer] = flow.handle(Digit(2.0, "2"))
    assert isinstance(transfer, Transfer) and transfer.municipality == action.options[1]
    assert flow.record.municipality == action.options[1]


def test_two_names_that_sound_alike_keep_the_plain_question(plan, rule):
    m = [plan.municipalities[TIEL], plan.municipalities[BUREN]]
    ranked = (Scored(TIEL, "Tiel", 90.0, heard="Tiel"), Scored(BUREN, "Buren", 89.0, heard="Buren"))
    assert same_name_place(ranked, m) == ""
    ranked = (Scored(TIEL, "Tiel", 90.5, heard="Kapel-Avezaath"), Scored(BUREN, "Buren", 90.5, heard="Kapel Avezaath"))
    assert same_name_place(ranked, m) == "Kapel-Avezaath"  # one place, two spellings of the data


def test_engine_verdict_carries_the_phrase_it_matched(plan, rule):
    """A closed-set engine says which phrase matched (Candidate.said): the flow asks by that place."""
    flow = flow_for(plan, rule, "140342")
    rec = Recognition((Candidate(BARNEVELD, "Barneveld", 0.5, said="Achterveld"),
                       Candidate(LEUSDEN, "Leusden", 0.49, said="Achterveld")), EngineVerdict.CHOOSE)
    [action] = hear(flow, 1.0, rec)
    assert isinstance(action, ChooseOfTwo) and action.place == "Achterveld"
    assert action.options == (BARNEVELD, LEUSDEN)


def test_english_caller_hears_the_place_in_its_dutch_recording(plan):
    keys = choose_place_prompts("Velp", "GM0275", "GM1982")
    en = localised(keys, "en")
    assert en[1] == "plaats/velp" and en[3] == "gemeente/GM0275"
    assert en[0] == "en/bedoelt_u_plaats" and en[2] == "en/in_de_gemeente"
    texts = all_prompt_texts(plan)
    assert all(k in texts for k in en)


def test_only_shared_place_names_get_prompts(plan):
    shared = shared_places(plan)
    assert shared["plaats/velp"] == "Velp"
    assert place_prompt("Achterveld") in shared
    owners = {}
    for m in plan.municipalities.values():
        for p in m.places:
            owners.setdefault(place_prompt(p), set()).add(m.cbs_code)
    assert all(len(owners[k]) > 1 for k in shared)
    assert len(shared) < len(owners) / 10  # a few hundred of ~6000 names: install stays small


# --- confusable pairs -------------------------------------------------------------------------------

def test_the_reports_pairs_are_listed(rule):
    pairs = confusable_pairs()
    for a, b in ((WEERT, NEDERWEERT), ("GM0228", "GM0232"), (HAARLEM, HAARLEMMERMEER), ("GM0361", "GM1980")):
        assert frozenset((a, b)) in pairs
    # a woonplaats row pairs every municipality of the name
    assert frozenset(("GM1690", "GM1699")) in pairs


def result(verdict, *scores):
    ranked = tuple(Scored(code, code, s, heard=code) for code, s in scores)
    return MatchResult(verdict, ranked, ranked[0].score - (ranked[1].score if len(ranked) > 1 else 0))


def test_rule_holds_a_thin_accept_of_a_listed_pair_only():
    rule = ConfusableRule(frozenset({frozenset((HAARLEM, HAARLEMMERMEER))}), margin=30.0, transcript_margin=10.0)
    thin = result(MatchVerdict.ACCEPT, (HAARLEM, 60.0), ("GM0397", 45.0), (HAARLEMMERMEER, 40.0))
    held = rule.apply(thin, engine=True)
    assert held.verdict is MatchVerdict.CONFIRM and held.held_by == HAARLEMMERMEER and held.ranked == thin.ranked
    wide = result(MatchVerdict.ACCEPT, (HAARLEM, 90.0), (HAARLEMMERMEER, 59.0))
    assert rule.apply(wide, engine=True) == wide
    assert rule.apply(wide, engine=False) == wide  # 31 points on the transcript scale: clear
    unlisted = result(MatchVerdict.ACCEPT, (HAARLEM, 60.0), ("GM0397", 55.0))
    assert rule.apply(unlisted, engine=True) == unlisted
    confirm = result(MatchVerdict.CONFIRM, (HAARLEM, 60.0), (HAARLEMMERMEER, 55.0))
    assert rule.apply(confirm, engine=True) == confirm
    assert rule.within([HAARLEM, "GM0397"]).pairs == frozenset()


def test_engine_accept_of_a_listed_pair_on_a_thin_margin_is_confirmed(plan, rule):
    flow = flow_for(plan, rule, "140495")  # Weert and Nederweert share 0495
    rec = Recognition((Candidate(WEERT, "Weert", 0.6), Candidate(NEDERWEERT, "Nederweert", 0.38),
                       Candidate("GM1640", "Leudal", 0.02)), EngineVerdict.ACCEPT)
    [action] = hear(flow, 1.0, rec)
    assert action == ConfirmOne(("bedoelt_u", f"gemeente/{WEERT}", "ja_nee"), WEERT, 4.0)
    assert speech_attempt(flow).asked == "confusable_held"
    assert speech_attempt(flow).verdict == "confirm"


def test_engine_accept_with_a_clear_margin_is_transferred(plan, rule):
    flow = flow_for(plan, rule, "140495")
    rec = Recognition((Candidate(WEERT, "Weert", 0.97), Candidate(NEDERWEERT, "Nederweert", 0.02)),
                      EngineVerdict.ACCEPT)
    [action] = hear(flow, 1.0, rec)
    assert isinstance(action, Transfer) and action.municipality == WEERT
    assert speech_attempt(flow).asked == ""


def test_transcript_of_an_exact_name_is_still_accepted(plan, rule):
    flow = flow_for(plan, rule, "14023")
    hear(flow, 1.0, said("Haarlemmermeer"))  # decided at once (it is not connected: told so)
    assert speech_attempt(flow).verdict == "accept" and flow.record.municipality == HAARLEMMERMEER
    assert speech_attempt(flow).asked == ""


# --- counted: metrics and report ---------------------------------------------------------------

def test_asked_back_paths_are_counted_by_the_report_and_the_metrics(plan, rule):
    from ivr.adapters.metrics import MetricsObserver, metrics_snapshot, reconcile, total
    from ivr.core.flow import CallEnded, CallerHungUp, TransferAnswered
    from ivr.core.report import compute_kpis

    records = []
    same = flow_for(plan, rule, "140342")
    [choose] = hear(same, 1.0, said("Achterveld"))
    same.handle(Digit(2.0, "1"))
    same.handle(TransferAnswered(3.0, choose.options[0]))
    held = flow_for(plan, rule, "140495")
    hear(held, 1.0, Recognition((Candidate(WEERT, "Weert", 0.6), Candidate(NEDERWEERT, "Nederweert", 0.4)),
                                             EngineVerdict.ACCEPT))
    held.handle(Digit(2.0, "1"))
    held.handle(TransferAnswered(3.0, WEERT))
    plain = flow_for(plan, rule, "140342")
    hear(plain, 1.0, said("Barneveld"))
    plain.handle(TransferAnswered(2.0, BARNEVELD))
    for flow in (same, held, plain):
        flow.handle(CallerHungUp(9.0, "16"))
        flow.handle(CallEnded(9.0, wall_time=1009.0))
        records.append(flow.record)
    kpis = compute_kpis(records)
    assert kpis.overall.asked_back == {"same_name_place": 1, "confusable_held": 1}
    obs = MetricsObserver()
    for r in records:
        obs.count(r)
    snap = metrics_snapshot(obs.registry)
    assert total(snap, "ivr_asked_back_calls_total", path="same_name_place", area_code="0342") == 1
    assert total(snap, "ivr_asked_back_calls_total", path="confusable_held", area_code="0495") == 1
    assert reconcile(snap, kpis) == []


def test_nationally_a_place_of_two_municipalities_outside_the_code_is_asked_back_by_name(plan, rule):
    """"Velp" on 14 0113 (neither Velp's code): the national second pass finds the two Velps."""
    flow = flow_for(plan, rule, "140113")
    [action] = hear(flow, 1.0, said("Velp"))
    assert isinstance(action, ChooseOfTwo), action
    assert set(action.options) == {"GM0275", "GM1982"} and action.place == "Velp"
    assert sentence(action.prompts, plan).startswith("Bedoelt u Velp in de gemeente ")
    national = next(a for a in flow.record.attempts if a.kind == "national")
    assert national.asked == "same_name_place"


def test_a_national_accept_held_for_a_confusable_pair_is_still_proposed():
    from ivr.core.second_pass import outside_the_code

    rule = ConfusableRule(frozenset({frozenset((WEERT, NEDERWEERT))}), margin=45.0)
    held = rule.apply(result(MatchVerdict.ACCEPT, (NEDERWEERT, 70.0), (WEERT, 30.0)), engine=True)
    assert held.verdict is MatchVerdict.CONFIRM and held.held_by == WEERT
    assert [s.cbs_code for s in outside_the_code(held, {"GM0392"})] == [NEDERWEERT]
    plain_confirm = result(MatchVerdict.CONFIRM, (NEDERWEERT, 70.0), (WEERT, 30.0))
    assert outside_the_code(plain_confirm, {"GM0392"}) == ()
