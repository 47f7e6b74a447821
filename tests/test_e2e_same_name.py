"""Issue 11 item 2 through the real Asterisk: a caller on 14 0342 says "Achterveld", a village
that both Barneveld and Leusden have. SIPp plays the espeak-ng audio as RTP, the controller
listens over AudioSocket with the configured engine and asks "Bedoelt u Achterveld in de gemeente
Barneveld, of Achterveld in de gemeente Leusden?"; the caller presses 2 and is put through to the
second one named."""

from __future__ import annotations


import pytest
from e2e import SALT, run_calls, start_controller, wait_until_speech_ready, answered_since
from test_e2e_speech import speak

from ivr.config import load_settings
from ivr_lab.pcap import wav_to_pcap
from ivr_lab.sipp import Audio, CallScript, Dtmf, Pause

pytestmark = [pytest.mark.asterisk, pytest.mark.speech]

BARNEVELD, LEUSDEN = "GM0203", "GM0327"


@pytest.fixture(scope="module")
def call(asterisk, ami, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("e2e-same-name")
    wav, pcap = workdir / "achterveld.wav", workdir / "achterveld.pcap"
    speak("Achterveld", wav)
    wav_to_pcap(wav, pcap)
    # the digit lands while the question is said (barge-in), as a caller who heard "toets 2" would
    script = CallScript("140342", caller="0650000011", steps=[Pause(1500), Audio(pcap), Pause(6000), Dtmf("2")])
    controller = start_controller(workdir / "controller", salt=SALT, speech_engine=load_settings().speech_engine)
    try:
        wait_until_speech_ready(controller)
        mark = ami.mark()
        results = run_calls({"achterveld": script}, workdir / "sipp", at_once=1)
        record = controller.record_of(script.caller)
    finally:
        controller.stop()
    answered = answered_since(ami, mark)
    return results["achterveld"], record, answered


def test_a_shared_village_is_asked_back_and_the_digit_picks_the_municipality(call):
    result, rec, answered = call
    assert result.ok, result.describe()
    # a "choose" is decided again nationally first (an attempt of kind "national"): both are in the code
    asked = next(a for a in rec.attempts if a.kind == "speech")
    picked = next(a for a in rec.attempts if a.kind == "confirm")
    assert (asked.kind, asked.verdict, asked.asked) == ("speech", "choose", "same_name_place"), rec.attempts
    first = asked.chosen  # the first one named in the question
    assert first in (BARNEVELD, LEUSDEN)
    second = LEUSDEN if first == BARNEVELD else BARNEVELD
    assert (picked.kind, picked.input, picked.heard, picked.chosen) == ("confirm", "dtmf", "2", second), rec.attempts
    assert answered.get(rec.call_id) == second
    assert (rec.outcome, rec.municipality, rec.answered_by) == ("routed", second, second)
