"""The national second pass (issue 11 item 1) through the real Asterisk: SIPp plays espeak-ng
audio as RTP on 14 0113 (Zeeland) and the controller, listening over AudioSocket with the
configured engine, hears a name from elsewhere in the country. It decides the same audio
again among every municipality and asks: "Utrecht valt niet onder veertien 0113. Ik verbind
u door met de gemeente Utrecht, klopt dat?" The caller keys 1 and reaches Utrecht. A
municipality that is not connected (Haarlemmermeer) is told so after the same question,
never called."""

from __future__ import annotations


import pytest
from e2e import spoken_calls
from test_e2e_speech import speak

from ivr_lab.pcap import wav_to_pcap
from ivr_lab.sipp import Audio, CallScript, Dtmf, Pause

pytestmark = [pytest.mark.asterisk, pytest.mark.speech]

UTRECHT, HAARLEMMERMEER = "GM0344", "GM0394"
# the name, then 1 ("ja") once the question is being read out: the decision among all
# municipalities takes up to ~8 s on a busy 2-core machine, the question ~9 s and its timeout 4 s
AFTER_NAME_MS = 9000


@pytest.fixture(scope="module")
def calls(asterisk, ami, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("e2e-second-pass")
    pcaps = {}
    for name, text in (("utrecht", "Utrecht"), ("haarlemmermeer", "Haarlemmermeer")):
        wav = workdir / f"{name}.wav"
        speak(text, wav, "nl")
        wav_to_pcap(wav, workdir / f"{name}.pcap")
        pcaps[name] = workdir / f"{name}.pcap"
    scripts = {
        name: CallScript("140113", caller=f"06400001{k:02d}",
                         steps=[Pause(1500), Audio(pcaps[name]), Pause(AFTER_NAME_MS), Dtmf("1"), Pause(8000)])
        for k, name in enumerate(pcaps)
    }
    return spoken_calls(scripts, workdir, ami)


def test_a_name_outside_the_dialled_code_is_asked_about_and_reached(calls):
    results, records, answered = calls
    assert results["utrecht"].ok, results["utrecht"].describe()
    rec = records["utrecht"]
    kinds = [a.kind for a in rec.attempts]
    assert kinds[:3] == ["speech", "national", "confirm"], rec.attempts
    assert rec.attempts[0].verdict != "accept"  # 0113's own names never sent the caller anywhere
    assert rec.attempts[1].chosen == UTRECHT and rec.second_pass == "outside"
    assert rec.attempts[2].input == "dtmf" and rec.attempts[2].verdict == "yes"
    assert (rec.area_code, rec.municipality, rec.outcome) == ("0113", UTRECHT, "routed")
    assert answered.get(rec.call_id) == UTRECHT  # the far end that answered is Utrecht's


def test_a_municipality_not_connected_is_told_and_never_called(calls):
    results, records, answered = calls
    assert results["haarlemmermeer"].ok, results["haarlemmermeer"].describe()
    rec = records["haarlemmermeer"]
    assert [a.kind for a in rec.attempts][:3] == ["speech", "national", "confirm"], rec.attempts
    assert rec.attempts[1].chosen == HAARLEMMERMEER
    assert (rec.municipality, rec.outcome, rec.destination) == (HAARLEMMERMEER, "not_connected", None)
    assert rec.call_id not in answered  # no transfer was placed
