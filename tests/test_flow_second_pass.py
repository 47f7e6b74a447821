"""The national second pass (issue 11 item 1) as events in and actions out, and its pure rule."""

from functools import lru_cache

import pytest

from ivr.core.callrecord import AttemptKind, AttemptVerdict, Outcome, SecondPass
from ivr.core.drive import drive, run_sync
from ivr.core.flow import (
    CallFlow,
    CallStarted,
    ChooseOfTwo,
    ConfirmOne,
    DecideAgain,
    FlowSettings,
    Goodbye,
    Listen,
    NoInput,
    SpeechHeard,
    Transfer,
)
from ivr.core.matcher import Matcher, MatchResult, MatchVerdict, Scored
from ivr.core.recognition import Candidate, EngineVerdict, Recognition
from ivr.core.second_pass import SURE_P, outside_the_code, worth_a_second_pass
from ivr.core.signals import second_pass_paths
from ivr.core.yes_no import yes_no
from ivr.plan_files import load_base_plan

UTRECHT, HAARLEMMERMEER, RHEDEN, LAND_VAN_CUIJK, REIMERSWAAL = "GM0344", "GM0394", "GM0275", "GM1982", "GM0703"


@pytest.fixture(scope="module")
def plan():
    return load_base_plan()


@lru_cache(maxsize=None)
def _matcher(candidates):
    return Matcher(candidates)


def speech_flow(plan, **settings):
    return CallFlow(plan, matcher_factory=lambda c: _matcher(tuple(c)), yes_no=yes_no,
                    settings=FlowSettings(**settings))


def heard(at, text, conf=0.95):
    return SpeechHeard(at, Recognition.of_transcripts(((text, conf),)), at - 0.3, 40.0)


def call(flow, number="140113"):
    return flow.handle(CallStarted(0.0, "c1", number, caller="h", wall_time=1000.0))


# --- the pure rule -------------------------------------------------------------------

def result(verdict, *codes, heard=None):
    return MatchResult(verdict, tuple(Scored(c, c, 90.0 - i, heard or c) for i, c in enumerate(codes)), 5.0)


def test_only_an_unsure_first_decision_is_decided_again():
    assert not worth_a_second_pass(result(MatchVerdict.ACCEPT, "A"))
    assert all(worth_a_second_pass(result(v, "A", "B"))
               for v in (MatchVerdict.CONFIRM, MatchVerdict.CHOOSE, MatchVerdict.REJECT))


@pytest.mark.parametrize("national, proposed", [
    (result(MatchVerdict.ACCEPT, "X", "A"), ("X",)),  # sure, outside: proposed
    (result(MatchVerdict.CONFIRM, "X", "A"), ()),  # unsure nationally: the code's decision stands
    (result(MatchVerdict.ACCEPT, "A", "X"), ()),  # a name of the code is the best nationally too
    (result(MatchVerdict.REJECT), ()),
    (result(MatchVerdict.CHOOSE, "X", "Y", heard="Velp"), ("X", "Y")),  # a place both have: "X of Y?"
    (result(MatchVerdict.CHOOSE, "X", "Y"), ()),  # two names that merely sound alike: not sure enough
    (result(MatchVerdict.CHOOSE, "X", "A", heard="Velp"), ()),  # one of them is the code's: the code asks
])
def test_what_the_national_decision_proposes(national, proposed):
    assert tuple(s.cbs_code for s in outside_the_code(national, {"A", "B"})) == proposed


def test_a_shared_place_is_proposed_only_when_the_engine_is_sure_of_it():
    velp = result(MatchVerdict.CHOOSE, "X", "Y", heard="Velp")
    assert [s.cbs_code for s in outside_the_code(velp, {"A"}, p_right=0.9997)] == ["X", "Y"]
    # an American "Goes" on 14 0113 heard nationally as the hamlet "Schouw" (two municipalities) at p 0.97
    assert outside_the_code(result(MatchVerdict.CHOOSE, "X", "Y", heard="Schouw"), {"A"}, p_right=0.97) == ()
    assert [s.cbs_code for s in outside_the_code(result(MatchVerdict.ACCEPT, "X"), {"A"}, p_right=0.98)] == ["X"]


def test_sure_means_what_the_fusion_engine_accepts():
    from ivr.speech.fusion_engine import FusionSettings
    assert SURE_P == FusionSettings().accept_p


# --- the flow --------------------------------------------------------------------------

def test_a_name_outside_the_code_is_proposed_by_a_question_and_routed_after_yes(plan):
    flow = speech_flow(plan)
    call(flow)  # 14 0113: Zeeland
    said = heard(3.0, "Utrecht")
    [again] = flow.handle(said)
    assert isinstance(again, DecideAgain) and UTRECHT in again.candidates
    assert len(again.candidates) == len(plan.municipalities)
    [question] = flow.handle(said)
    assert isinstance(question, ConfirmOne) and question.municipality == UTRECHT
    # "Utrecht valt niet onder veertien 0 1 1 3. Ik verbind u door met de gemeente Utrecht, klopt dat?"
    assert question.prompts == ("gemeente/GM0344", "valt_niet_onder", "cijfer/0", "cijfer/1", "cijfer/1", "cijfer/3",
                                "verbinden_met", "gemeente/GM0344", "klopt_dat")
    [transfer] = flow.handle(heard(6.0, "ja"))
    assert isinstance(transfer, Transfer) and transfer.municipality == UTRECHT
    rec = flow.record
    assert (rec.area_code, rec.municipality, rec.second_pass) == ("0113", UTRECHT, SecondPass.OUTSIDE)
    assert [a.kind for a in rec.attempts] == [AttemptKind.SPEECH, AttemptKind.NATIONAL, AttemptKind.CONFIRM]
    assert rec.attempts[1].chosen == UTRECHT and rec.attempts[0].verdict is not AttemptVerdict.ACCEPT
    assert rec.recognition_attempts == 2  # the name and the question; deciding again asks the caller nothing
    assert second_pass_paths(rec) == ["run", "outside_proposed", "outside_accepted"]


def test_no_to_the_proposal_asks_the_name_again(plan):
    flow = speech_flow(plan)
    call(flow)
    flow.handle(heard(3.0, "Utrecht"))
    flow.handle(heard(3.0, "Utrecht"))
    [ask] = flow.handle(heard(6.0, "nee"))
    assert isinstance(ask, Listen) and ask.prompts[0] == "niet_verstaan"
    assert flow.record.rejected_confirmations == 1
    assert second_pass_paths(flow.record) == ["run", "outside_proposed", "outside_refused"]


def test_a_municipality_not_connected_is_told_never_transferred(plan):
    assert not plan.municipalities[HAARLEMMERMEER].status.connected
    flow = speech_flow(plan)
    call(flow)
    flow.handle(heard(3.0, "Haarlemmermeer"))
    [question] = flow.handle(heard(3.0, "Haarlemmermeer"))
    # no "Ik verbind u door" for a municipality we cannot put the caller through to
    assert isinstance(question, ConfirmOne) and question.prompts[-3:] == ("bedoelt_u", "gemeente/GM0394", "ja_nee")
    [goodbye] = flow.handle(heard(6.0, "ja"))
    assert isinstance(goodbye, Goodbye) and "niet_aangesloten" in goodbye.prompts
    assert flow.record.outcome is Outcome.NOT_CONNECTED and flow.record.destination is None


def test_a_place_of_two_municipalities_outside_the_code_is_asked_back(plan):
    flow = speech_flow(plan)
    call(flow)
    flow.handle(heard(3.0, "Velp"))
    [question] = flow.handle(heard(3.0, "Velp"))
    assert isinstance(question, ChooseOfTwo) and set(question.options) == {RHEDEN, LAND_VAN_CUIJK}


def test_a_name_of_the_code_is_decided_by_the_code_as_before(plan):
    flow = speech_flow(plan)
    call(flow)
    [transfer] = flow.handle(heard(3.0, "Reimerswaal"))  # sure among 0113's names: no second pass
    assert isinstance(transfer, Transfer) and transfer.municipality == REIMERSWAAL
    assert flow.record.second_pass is None and second_pass_paths(flow.record) == []


def test_an_unsure_name_of_the_code_keeps_the_codes_question(plan):
    flow = speech_flow(plan)
    call(flow)
    unsure = SpeechHeard(3.0, Recognition.of_transcripts((("Reimerswaal", 0.5), ("Kapelle", 0.3))))
    assert isinstance(flow.handle(unsure)[0], DecideAgain)
    [question] = flow.handle(unsure)
    assert isinstance(question, ConfirmOne) and question.prompts[0] == "bedoelt_u"
    assert question.municipality == REIMERSWAAL and flow.record.second_pass is SecondPass.IN_CODE


def test_when_the_driver_cannot_decide_again_the_codes_decision_stands(plan):
    flow = speech_flow(plan)
    call(flow)
    flow.handle(heard(3.0, "zwembad openingstijden"))
    [ask] = flow.handle(NoInput(3.5))
    assert isinstance(ask, Listen) and ask.prompts[0] == "niet_verstaan"
    assert flow.record.recognition_attempts == 2 and flow.record.second_pass is None


def test_an_engine_verdict_outside_the_code_is_carried_out_as_given(plan):
    flow = speech_flow(plan)
    call(flow)
    flow.handle(SpeechHeard(3.0, Recognition((), EngineVerdict.NOTHING)))
    sure = Recognition((Candidate(UTRECHT, "Utrecht", 0.97), Candidate(REIMERSWAAL, "Reimerswaal", 0.01)),
                       EngineVerdict.ACCEPT, p_right=0.99)
    [question] = flow.handle(SpeechHeard(3.8, sure))
    assert isinstance(question, ConfirmOne) and question.municipality == UTRECHT


def test_switched_off_only_the_codes_names_are_heard(plan):
    flow = speech_flow(plan, national_second_pass=False)
    call(flow)
    [question] = flow.handle(heard(3.0, "Utrecht"))
    assert not isinstance(question, DecideAgain) and getattr(question, "municipality", None) != UTRECHT


def test_a_call_from_abroad_is_national_already(plan):
    from ivr.core.plan import AccessNumber

    abroad = plan.with_changes(access_numbers=(AccessNumber("+31 88 123 4567", "31881234567"),))
    flow = speech_flow(abroad)
    call(flow, "+31881234567")
    [question] = flow.handle(heard(3.0, "Utrecht", 0.6))
    assert not isinstance(question, DecideAgain)


class _Port:
    """A port that keeps the last answer and decides it again (what the AGI port does with audio)."""

    def __init__(self, answers):
        self.answers, self.again = list(answers), []

    def now(self):
        return 0.0

    async def play(self, prompts, stop_digits=""):
        return None

    async def listen(self, question):
        self.last = self.answers.pop(0)
        return self.last

    async def decide_again(self, again):
        self.again.append(again)
        return self.last

    async def dial(self, transfer, started_at):
        from ivr.core.flow import CallerHungUp, TransferAnswered
        return [TransferAnswered(9.0, transfer.municipality), CallerHungUp(20.0)]

    async def hang_up(self):
        return None


def test_the_drive_loop_asks_the_port_to_decide_again(plan):
    flow = speech_flow(plan)
    port = _Port([heard(3.0, "Utrecht"), heard(6.0, "ja")])
    run_sync(drive(flow, port, call(flow)))
    assert len(port.again) == 1 and flow.record.municipality == UTRECHT
    assert flow.record.outcome is Outcome.ROUTED
