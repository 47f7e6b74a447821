"""The call flow as lists of events and the actions expected back (no Asterisk)."""

import pytest

from ivr.core.flow import (
    DecideAgain,
    CallerHungUp,
    CallFlow,
    CallStarted,
    CollectDigit,
    Digit,
    DriverLost,
    FlowError,
    FlowSettings,
    Goodbye,
    Listen,
    NoInput,
    Play,
    SpeechHeard,
    Transfer,
    TransferAnswered,
    TransferFailed,
)
from ivr.core.matcher import Matcher
from ivr.core.recognition import Recognition
from ivr.core.yes_no import yes_no
from ivr.plan_files import load_base_plan


@pytest.fixture(scope="module")
def plan():
    return load_base_plan()


def dtmf_flow(plan):
    return CallFlow(plan, speech_available=False)


def speech_flow(plan):
    return CallFlow(plan, matcher_factory=Matcher, yes_no=yes_no)


def start(flow, number):
    return flow.handle(CallStarted(0.0, "c1", number, caller="h", wall_time=1000.0))


def test_unique_code_transfers_at_once(plan):
    flow = dtmf_flow(plan)
    [action] = start(flow, "140111")
    assert action == Transfer("Local/GM1676@ivr14-lab", (), "GM1676")  # no announcement, no way back
    assert flow.handle(TransferAnswered(0.4, "GM1676")) == []
    assert flow.record.phase == "connected"
    assert flow.handle(CallerHungUp(5.0, "16")) == []
    rec = flow.record
    assert (rec.outcome, rec.answered_by, rec.municipality, rec.hangup_phase) == ("routed", "GM1676", "GM1676", None)
    assert rec.transfer_setup_ms == pytest.approx(400)
    assert rec.recognition_attempts == 0


def test_dtmf_menu_lists_only_the_area_codes_municipalities(plan):
    flow = dtmf_flow(plan)
    [menu] = start(flow, "140113")
    assert isinstance(menu, CollectDigit)
    assert menu.digits == "123450"
    listed = [p for p in menu.prompts if p.startswith("gemeente/")]
    assert listed == [f"gemeente/{m.cbs_code}" for m in plan.candidates("0113")]
    [transfer] = flow.handle(Digit(2.0, "2"))
    assert transfer.destination == "Local/GM0703@ivr14-lab"  # Reimerswaal
    assert transfer.prompts == ("doorverbinden", "gemeente/GM0703", "terug_keuze")
    flow.handle(TransferAnswered(3.0, "GM0703"))
    flow.handle(CallerHungUp(9.0))
    rec = flow.record
    assert rec.outcome == "routed" and rec.digits == "2" and rec.recognition_attempts == 1
    assert rec.phase_seconds["menu"] == pytest.approx(2.0)


def test_invalid_digit_repeats_once_then_operator(plan):
    flow = dtmf_flow(plan)
    start(flow, "140113")
    [again] = flow.handle(Digit(1.0, "7"))
    assert isinstance(again, CollectDigit) and again.prompts[0] == "ongeldige_keuze"
    [operator] = flow.handle(NoInput(7.0))
    assert operator == Transfer(plan.operator_destination, ("medewerker",), None)
    flow.handle(TransferAnswered(8.0, "operator"))
    flow.handle(CallerHungUp(20.0))
    assert flow.record.outcome == "operator"


def test_zero_asks_for_a_person(plan):
    flow = dtmf_flow(plan)
    start(flow, "140113")
    [transfer] = flow.handle(Digit(1.0, "0"))
    assert transfer.destination == plan.operator_destination


def test_paged_menu(plan):
    flow = dtmf_flow(plan)
    [page1] = start(flow, "14071")
    assert page1.digits == "1234567890" and "meer_keuzes" in page1.prompts
    [page2] = flow.handle(Digit(1.0, "9"))
    assert page2.digits == "1230"
    [transfer] = flow.handle(Digit(2.0, "2"))
    assert transfer.municipality == plan.candidates("071")[9].cbs_code
    assert flow.record.recognition_attempts == 1  # paging is one question


def test_not_connected_municipality_is_told_never_transferred(plan):
    flow = dtmf_flow(plan)
    [menu] = start(flow, "14023")
    digit = str([p for p in menu.prompts if p.startswith("gemeente/")].index("gemeente/GM0394") + 1)
    actions = flow.handle(Digit(1.0, digit))
    assert not any(isinstance(a, Transfer) for a in actions)
    [play] = actions  # said, then hung up
    assert isinstance(play, Goodbye)
    assert play.prompts[:3] == ("de_gemeente", "gemeente/GM0394", "niet_aangesloten")
    assert "cijfer/0" in play.prompts  # the alternative number is read out
    assert flow.record.outcome == "not_connected" and flow.ended


def test_unknown_area_code_is_told(plan):
    flow = dtmf_flow(plan)
    [goodbye] = start(flow, "140999")
    assert goodbye == Goodbye(("onbekend_nummer", "tot_ziens"))
    assert flow.record.outcome == "unknown_area_code"


def test_caller_hangs_up_in_the_menu(plan):
    flow = dtmf_flow(plan)
    start(flow, "140113")
    flow.handle(CallerHungUp(3.5, "16"))
    rec = flow.record
    assert (rec.outcome, rec.hangup_phase, rec.hangup_cause) == ("caller_hangup", "menu", "16")
    assert flow.handle(Digit(4.0, "1")) == []  # events after the end are ignored


def test_caller_hangs_up_during_the_transfer(plan):
    flow = dtmf_flow(plan)
    start(flow, "140113")
    flow.handle(Digit(1.0, "1"))
    flow.handle(CallerHungUp(2.0))
    assert (flow.record.outcome, flow.record.hangup_phase) == ("caller_hangup", "transfer")


def test_transfer_failure_is_said_and_recorded(plan):
    # without the callback offer (tests/test_flow_overflow.py has it): the goodbye of old
    flow = CallFlow(plan, speech_available=False, settings=FlowSettings(offer_callback=False))
    start(flow, "140111")
    [goodbye] = flow.handle(TransferFailed(30.0, "NOANSWER"))
    assert isinstance(goodbye, Goodbye) and goodbye.prompts[0] == "niet_bereikbaar"
    assert flow.record.outcome == "failed" and "NOANSWER" in flow.record.error


def test_driver_lost_marks_the_record(plan):
    flow = dtmf_flow(plan)
    start(flow, "140113")
    flow.handle(DriverLost(1.0, "asterisk lost"))
    assert flow.record.outcome == "failed" and flow.record.error == "asterisk lost"


def test_events_before_start_are_a_driver_bug(plan):
    with pytest.raises(FlowError):
        dtmf_flow(plan).handle(Digit(0.0, "1"))


# -- speech -------------------------------------------------------------------------


def test_speech_accept_announces_and_transfers(plan):
    flow = speech_flow(plan)
    [listen] = start(flow, "140113")
    assert isinstance(listen, Listen) and set(listen.vocabulary_of) == {m.cbs_code for m in plan.candidates("0113")}
    [transfer] = flow.handle(SpeechHeard(3.0, Recognition.of_transcripts((("ik wil graag de gemeente kapelle", 0.9),)), 2.8, 120.0))
    assert transfer.municipality == "GM0678"
    assert transfer.prompts == ("doorverbinden", "gemeente/GM0678", "terug_keuze")
    rec = flow.record
    assert rec.recognition_attempts == 1
    assert rec.attempts[0].decision_ms == pytest.approx(200) and rec.attempts[0].recogniser_ms == 120.0


def test_village_name_routes_to_its_municipality(plan):
    flow = speech_flow(plan)
    start(flow, "140113")
    [transfer] = flow.handle(SpeechHeard(3.0, Recognition.of_transcripts((("yerseke", 0.9),))))
    assert transfer.municipality == "GM0703"  # Reimerswaal


def test_speech_reject_reprompts_then_menu_then_operator(plan):
    flow = speech_flow(plan)
    start(flow, "140113")
    heard = SpeechHeard(3.0, Recognition.of_transcripts((("zwembad openingstijden", 0.9),)))
    [national] = flow.handle(heard)
    assert isinstance(national, DecideAgain)  # nothing among 0113's names: decided again among all
    [again] = flow.handle(heard)  # nothing nationally either
    assert isinstance(again, Listen) and again.prompts[0] == "niet_verstaan"
    [menu] = flow.handle(NoInput(8.0))
    assert isinstance(menu, CollectDigit)
    flow.handle(Digit(9.0, "8"))
    [operator] = flow.handle(NoInput(15.0))
    assert operator.destination == plan.operator_destination
    assert flow.record.recognition_attempts == 4  # speech, speech, menu, menu again


def test_digit_while_listening_switches_to_the_menu(plan):
    flow = speech_flow(plan)
    start(flow, "140113")
    [menu] = flow.handle(Digit(1.0, "3"))
    assert isinstance(menu, CollectDigit)
    [transfer] = flow.handle(Digit(2.0, "3"))
    assert transfer.municipality == "GM0654"  # Borsele, third on the menu
    assert flow.record.recognition_attempts == 1


def test_haarlemmermeer_is_never_sent_to_haarlem(plan):
    flow = speech_flow(plan)
    start(flow, "14023")
    actions = flow.handle(SpeechHeard(3.0, Recognition.of_transcripts((("haarlemmermeer", 0.9),))))
    assert not any(isinstance(a, Transfer) and a.municipality == "GM0392" for a in actions)
    if isinstance(actions[0], Listen):  # a confirmation is fine, a transfer to Haarlem is not
        actions = flow.handle(Digit(4.0, "1"))
    assert flow.record.outcome == "not_connected" and flow.record.municipality == "GM0394"


def test_confirmation_no_counts_as_a_rejected_municipality(plan):
    flow = speech_flow(plan)
    start(flow, "140113")
    flow._ask_confirm(1.0, (plan.municipalities["GM0664"],))
    [again] = flow.handle(SpeechHeard(2.0, Recognition.of_transcripts((("nee", 0.9),))))
    assert isinstance(again, Listen) and again.prompts[0] == "niet_verstaan"
    assert flow.record.rejected_confirmations == 1


def test_star_during_the_announcement_goes_back_and_counts_as_a_misroute(plan):
    flow = speech_flow(plan)
    start(flow, "140113")
    [transfer] = flow.handle(SpeechHeard(3.0, Recognition.of_transcripts((("goes", 0.9),))))
    assert transfer.municipality == "GM0664" and transfer.back_digit == "*"
    [again] = flow.handle(Digit(4.0, "*"))
    assert isinstance(again, Listen)
    rec = flow.record
    assert rec.rejected_confirmations == 1 and rec.municipality is None and rec.phase == "speech"
    [transfer] = flow.handle(SpeechHeard(6.0, Recognition.of_transcripts((("kapelle", 0.9),))))
    assert transfer.municipality == "GM0678"
    flow.handle(TransferAnswered(7.0, "GM0678"))
    flow.handle(CallerHungUp(9.0))
    assert (flow.record.outcome, flow.record.municipality, flow.record.recognition_attempts) == ("routed", "GM0678", 2)


def test_star_after_a_menu_choice_repeats_the_menu(plan):
    flow = dtmf_flow(plan)
    start(flow, "140113")
    flow.handle(Digit(1.0, "1"))
    [menu] = flow.handle(Digit(2.0, "*"))
    assert isinstance(menu, CollectDigit)
    assert flow.record.rejected_confirmations == 1
