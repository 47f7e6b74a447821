"""The explicit recogniser result: an engine's verdict is carried out as given, "nothing
recognised" is said outright, and transcripts are still matched by the matcher."""

import numpy as np
import pytest

from ivr.core.flow import CallFlow, CallStarted, ChooseOfTwo, ConfirmOne, DecideAgain, Listen, SpeechHeard, Transfer
from ivr.core.matcher import Matcher, MatchVerdict
from ivr.core.recognition import Candidate, EngineVerdict, Recognition
from ivr.core.yes_no import yes_no
from ivr.plan_files import load_base_plan
from ivr.speech.closed_set import Choice, choices_for, decided, nothing

GOES, REIMERSWAAL, BORSELE, KAPELLE = "GM0664", "GM0703", "GM0654", "GM0678"


@pytest.fixture(scope="module")
def plan():
    return load_base_plan()


@pytest.fixture(scope="module")
def matcher(plan):
    return Matcher(plan.candidates("0113"))


def _closed(verdict, *keys, plan=None, shares=None):
    shares = shares or [0.4, 0.3, 0.2, 0.1][: len(keys)]
    names = {m.cbs_code: m.name for m in plan.candidates("0113")} if plan else {}
    return Recognition(tuple(Candidate(k, names.get(k, k), s) for k, s in zip(keys, shares)), verdict)


@pytest.mark.parametrize("verdict", [EngineVerdict.ACCEPT, EngineVerdict.CONFIRM])
def test_an_engine_verdict_is_carried_out_as_given(plan, matcher, verdict):
    result = matcher.decide(_closed(verdict, KAPELLE, GOES, BORSELE, plan=plan))
    assert result.verdict == MatchVerdict(verdict.value)
    assert [s.cbs_code for s in result.ranked] == [KAPELLE, GOES, BORSELE]
    assert result.best.heard == "Kapelle" and result.best.score == 40.0 and result.margin == 10.0


def test_choose_ranks_the_two_best_names(plan, matcher):
    result = matcher.decide(_closed(EngineVerdict.CHOOSE, GOES, KAPELLE, BORSELE, plan=plan))
    assert result.verdict is MatchVerdict.CHOOSE and [s.cbs_code for s in result.ranked] == [GOES, KAPELLE]


def test_a_confirm_stands_where_the_phrase_would_not_match(matcher):
    """The case the shaped n-best got wrong: the engine's phrase need not read like the name
    (a filler, another spelling); its CONFIRM is not re-derived from a fuzzy score."""
    recognition = Recognition((Candidate(GOES, "ehm", 0.5), Candidate(KAPELLE, "xq", 0.3)), EngineVerdict.CONFIRM)
    assert matcher.match(recognition.nbest).verdict is MatchVerdict.REJECT  # what reading the text would say
    result = matcher.decide(recognition)
    assert result.verdict is MatchVerdict.CONFIRM and result.best.cbs_code == GOES


def test_nothing_recognised_is_a_reject_with_nothing_ranked(matcher):
    for recognition in (Recognition((), EngineVerdict.NOTHING, p_right=0.03), Recognition(),
                        Recognition(transcripts=(("", 0.9),))):
        assert recognition.nothing_recognised or recognition.heard == ""
        result = matcher.decide(recognition)
        assert result.verdict is MatchVerdict.REJECT and result.ranked == ()
    assert Recognition((), EngineVerdict.NOTHING).nothing_recognised and Recognition().nothing_recognised
    assert not Recognition.of_transcripts((("goes", 0.9),)).nothing_recognised


def test_a_verdict_about_other_names_is_refused_not_followed(matcher):
    """An engine that decided about names this question does not have (a driver bug) must not
    send the caller anywhere: the caller is asked again."""
    assert matcher.decide(_closed(EngineVerdict.ACCEPT, "GM0363", "GM0344")).verdict is MatchVerdict.REJECT
    assert matcher.decide(_closed(EngineVerdict.CHOOSE, GOES, "GM0344")).verdict is MatchVerdict.REJECT


def test_transcripts_are_matched(matcher):
    result = matcher.decide(Recognition.of_transcripts((("ik wil graag de gemeente kapelle", 0.9),)))
    assert result == matcher.match((("ik wil graag de gemeente kapelle", 0.9),))
    assert result.verdict is MatchVerdict.ACCEPT and result.best.cbs_code == KAPELLE


# --- the closed-set engines' result ---------------------------------------------------------------

def test_decided_gives_a_verdict_about_names_only(plan):
    choices = choices_for([GOES, KAPELLE, BORSELE], plan, yes_no="always")  # + ja, nee
    scores = np.array([1.0, 3.0, 0.0, 2.0, -1.0])  # Goes, Kapelle, Borsele, ja, nee
    r = decided(scores, choices, "confirm", 1.0, 12.0, p_right=0.7)
    assert r.verdict is EngineVerdict.CONFIRM and r.p_right == 0.7 and r.engine_ms == 12.0
    # names first (the verdict is about them), then "ja"/"nee"; shares are the plain softmax
    assert [c.key for c in r.candidates] == [KAPELLE, GOES, BORSELE, "ja", "nee"]
    q = np.exp(scores) / np.exp(scores).sum()
    assert [c.share for c in r.candidates] == [round(float(q[i]), 4) for i in (1, 0, 2, 3, 4)]
    assert r.heard == "Kapelle"
    # "ja" ahead of every name: no verdict about names, the ranking is read as it is
    r = decided(np.array([1.0, 2.0, 0.0, 3.0, -1.0]), choices, "confirm", 1.0, 1.0)
    assert r.verdict is None and r.candidates[0].key == "ja"
    # a yes/no question: no verdict, yes_no reads the candidates
    yn = choices_for([], plan)
    r = decided(np.array([2.0, 0.0]), yn, None, 1.0, 1.0)
    assert r.verdict is None and yes_no(r.nbest) is True
    r = decided(np.array([0.1, 0.0]), yn, None, 1.0, 1.0)  # a near tie is unclear
    assert yes_no(r.nbest) is None
    assert nothing(3.0, 0.02) == Recognition((), EngineVerdict.NOTHING, engine_ms=3.0, p_right=0.02)


def test_a_single_name_gets_no_verdict():
    """With one name the engine's decision is not about a choice between names; as before,
    the ranked phrase is read (behaviour kept from the shaped n-best)."""
    r = decided(np.array([1.0]), (Choice("Goes", "Goes", ("Goes",)),), "confirm", 1.0, 1.0)
    assert r.verdict is None and r.nbest == (("Goes", 1.0),)


# --- the call flow consumes it ---------------------------------------------------------------------

def _flow(plan):
    flow = CallFlow(plan, matcher_factory=Matcher, yes_no=yes_no)
    flow.handle(CallStarted(0.0, "c1", "140113", caller="h", wall_time=1000.0))
    return flow


def _answer(flow, event):
    """Feed a spoken answer; when the flow decides it again among every municipality (the
    national second pass), the engine hears the same audio and, here, says the same."""
    actions = flow.handle(event)
    if actions and isinstance(actions[0], DecideAgain):
        assert flow.record.attempts[-1].kind == "speech"
        actions = flow.handle(event)
    return actions


def test_flow_carries_out_the_engine_verdict(plan):
    flow = _flow(plan)
    [confirm] = _answer(flow, SpeechHeard(2.0, _closed(EngineVerdict.CONFIRM, BORSELE, GOES, plan=plan), 1.8, 90.0))
    assert isinstance(confirm, ConfirmOne) and confirm.municipality == BORSELE
    attempt = next(a for a in flow.record.attempts if a.kind == "speech")
    assert (attempt.heard, attempt.verdict, attempt.chosen) == ("Borsele", "confirm", BORSELE)
    assert attempt.candidates[0] == {"cbs_code": BORSELE, "score": 40.0}
    yes = Recognition((Candidate("ja", "ja", 0.8), Candidate("nee", "nee", 0.2)))
    [transfer] = flow.handle(SpeechHeard(4.0, yes))
    assert isinstance(transfer, Transfer) and transfer.municipality == BORSELE

    flow = _flow(plan)
    [choose] = _answer(flow, SpeechHeard(2.0, _closed(EngineVerdict.CHOOSE, GOES, KAPELLE, BORSELE, plan=plan)))
    assert isinstance(choose, ChooseOfTwo) and choose.options == (GOES, KAPELLE)
    picked = Recognition((Candidate(KAPELLE, "Kapelle", 0.9), Candidate(GOES, "Goes", 0.1)), EngineVerdict.ACCEPT)
    [transfer] = flow.handle(SpeechHeard(4.0, picked))
    assert transfer.municipality == KAPELLE


def test_flow_asks_again_when_nothing_was_recognised(plan):
    flow = _flow(plan)
    [again] = _answer(flow, SpeechHeard(2.0, Recognition((), EngineVerdict.NOTHING, p_right=0.01)))
    assert isinstance(again, Listen) and again.prompts[0] == "niet_verstaan"
    attempt = next(a for a in flow.record.attempts if a.kind == "speech")
    assert (attempt.heard, attempt.verdict, attempt.candidates) == ("", "reject", [])
