"""The suggestion answered by voice through the real Asterisk: SIPp plays espeak-ng audio, the
controller listens over AudioSocket with the configured engine. A caller who reached Kapelle
calls again and says "ja"; another who reached Noord-Beveland calls again and says "Goes"
instead (a name is decided as the first answer to the name question)."""

from __future__ import annotations

import pytest
from e2e import SALT, run_calls, start_controller, wait_until_speech_ready, answered_since
from test_e2e_speech import speak

from ivr.config import load_settings
from ivr_lab.pcap import wav_to_pcap
from ivr_lab.sipp import Audio, CallScript, Dtmf, Pause

pytestmark = [pytest.mark.asterisk, pytest.mark.speech]

KAPELLE, NOORD_BEVELAND, GOES = "GM0678", "GM1695", "GM0664"
# name: (caller, first utterance, second utterance)
CALLERS = {"yes": ("0620002101", "Kapelle", "ja"), "named": ("0620002102", "Noord-Beveland", "Goes")}


@pytest.fixture(scope="module")
def calls(asterisk, ami, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("e2e-suggestion-speech")
    controller = start_controller(workdir / "controller", salt=SALT, speech_engine=load_settings().speech_engine)
    try:
        wait_until_speech_ready(controller)

        def script(name, caller, text):
            wav, pcap = workdir / f"{name}.wav", workdir / f"{name}.pcap"
            speak(text, wav)
            wav_to_pcap(wav, pcap)
            # a doubtful name is confirmed with 1; after an accept the key falls on deaf ears
            return CallScript("140113", caller=caller, steps=[Pause(1500), Audio(pcap), Pause(3500), Dtmf("1")])

        mark = ami.mark()
        # one caller at a time, as in test_e2e_speech: each utterance is heard the same way every run
        first = run_calls({n: script(f"{n}-1", c, t) for n, (c, t, _) in CALLERS.items()}, workdir / "sipp-1",
                          at_once=1)
        first_records = {n: controller.record_of(c) for n, (c, _, _) in CALLERS.items()}
        again = run_calls({n: script(f"{n}-2", c, t) for n, (c, _, t) in CALLERS.items()}, workdir / "sipp-2",
                          at_once=1)
        again_records = {n: controller.record_of(c) for n, (c, _, _) in CALLERS.items()}
    finally:
        controller.stop()
    answered = answered_since(ami, mark)
    return first, first_records, again, again_records, answered


def test_the_first_calls_are_routed_by_the_spoken_name(calls):
    first, first_records, *_ = calls
    for name, cbs in (("yes", KAPELLE), ("named", NOORD_BEVELAND)):
        assert first[name].ok, first[name].describe()
        rec = first_records[name]
        assert (rec.suggested, rec.outcome, rec.municipality) == (None, "routed", cbs), rec.attempts


def test_ja_to_the_suggestion_reaches_the_same_municipality(calls):
    _, first_records, again, again_records, answered = calls
    assert again["yes"].ok, again["yes"].describe()
    rec = again_records["yes"]
    assert rec.call_id != first_records["yes"].call_id
    assert (rec.suggested, rec.suggestion_source, rec.suggestion) == (KAPELLE, "history", "accepted"), rec.attempts
    assert rec.attempts[0].kind == "suggest" and rec.attempts[0].input == "speech" and rec.attempts[0].heard == "ja"
    assert (rec.outcome, answered.get(rec.call_id), rec.recognition_attempts) == ("routed", KAPELLE, 1)


def test_a_name_instead_of_ja_is_decided_as_the_name(calls):
    _, _, again, again_records, answered = calls
    assert again["named"].ok, again["named"].describe()
    rec = again_records["named"]
    assert (rec.suggested, rec.suggestion) == (NOORD_BEVELAND, "named"), rec.attempts
    assert rec.attempts[0].kind == "speech" and rec.attempts[0].chosen == GOES
    assert (rec.outcome, rec.municipality, answered.get(rec.call_id)) == ("routed", GOES, GOES)
