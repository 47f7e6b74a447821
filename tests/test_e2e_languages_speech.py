"""Spoken answers of issue 11 items 4 and 6 through the real Asterisk: SIPp plays espeak-ng
audio as RTP and the controller listens over AudioSocket with the configured engine. A
caller says "English" at the greeting, and a caller on an access number says a
municipality's name, which is decided among all 342."""

from __future__ import annotations


import pytest
from e2e import spoken_calls
from test_e2e_languages import PLAN_OVERRIDES
from test_e2e_speech import speak

from ivr_lab.pcap import wav_to_pcap
from ivr_lab.sipp import Audio, CallScript, Dtmf, Pause

pytestmark = [pytest.mark.asterisk, pytest.mark.speech]


@pytest.fixture(scope="module")
def calls(asterisk, ami, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("e2e-languages-speech")
    pcaps = {}
    for name, text, voice in (("english", "English", "en-gb"), ("goes", "Goes", "nl"), ("utrecht", "Utrecht", "nl")):
        wav = workdir / f"{name}.wav"
        speak(text, wav, voice)
        wav_to_pcap(wav, workdir / f"{name}.pcap")
        pcaps[name] = workdir / f"{name}.pcap"
    scripts = {
        # "English" over the Dutch greeting, then the name over the English question
        "say_english": CallScript("140113", caller="0640000001",
                                  steps=[Pause(1500), Audio(pcaps["english"]), Pause(5000), Audio(pcaps["goes"]),
                                         Pause(4000), Dtmf("1")]),
        # from abroad, a municipality of another part of the country by name (all 342 are candidates)
        "abroad_name": CallScript("+31885550114", caller="0640000002",
                                  steps=[Pause(1500), Audio(pcaps["utrecht"]), Pause(30000), Dtmf("1")]),
    }
    return spoken_calls(scripts, workdir, ami, plan_overrides=PLAN_OVERRIDES)


def test_saying_english_switches_the_dialogue(calls):
    results, records, answered = calls
    assert results["say_english"].ok, results["say_english"].describe()
    rec = records["say_english"]
    assert rec.attempts[0].verdict == "language" and rec.attempts[0].heard == "English", rec.attempts
    assert rec.language == "en"
    assert answered.get(rec.call_id) == "GM0664", rec.attempts  # Goes, asked in English
    assert (rec.outcome, rec.municipality) == ("routed", "GM0664")


def test_from_abroad_a_spoken_name_is_decided_among_every_municipality(calls):
    results, records, answered = calls
    assert results["abroad_name"].ok, results["abroad_name"].describe()
    rec = records["abroad_name"]
    assert answered.get(rec.call_id) == "GM0344", rec.attempts  # Utrecht: not reachable by a 14-number's menu here
    assert (rec.access_number, rec.area_code, rec.mode, rec.outcome) == ("31885550114", "030", "speech", "routed")
    assert rec.attempts[0].recogniser_ms is not None
