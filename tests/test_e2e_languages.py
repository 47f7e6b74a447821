"""English and the access numbers (issue 11 items 4 and 6) through the real Asterisk and the
real controller, placed by SIPp: the caller presses 9 for English, or dials an access number
(as from abroad) and keys in an area code. Each test asserts who answered (the lab's
MunicipalityAnswered AMI event), what Asterisk played (its console log) and what the call
record in the real SQLite file holds."""

from __future__ import annotations

import re

import httpx
import pytest
from e2e import SALT, run_calls, start_controller, answered_since

from ivr.plan_files import load_base_plan
from ivr_lab.sipp import CallScript, Dtmf, Pause

pytestmark = pytest.mark.asterisk

PLAN_OVERRIDES = '''
languages = ["en"]

[[access_numbers]]
number = "+31 88 555 0114"

[[access_numbers]]
number = "+31 88 555 0115"
language = "en"
'''


def menu_digit(area_code: str, cbs_code: str) -> str:
    return str([m.cbs_code for m in load_base_plan().candidates(area_code)].index(cbs_code) + 1)


def keyed(digits: str, gap_ms: int = 400) -> list:
    steps: list = []
    for d in digits:
        steps += [Dtmf(d), Pause(gap_ms)]
    return steps


CALLS = {
    # 9 once the greeting has offered English (welkom ~3.2 s, "For English, press 9" ~2 s), then the English menu
    "english": CallScript("140113", caller="0630000001",
                          steps=[Pause(5800), Dtmf("9"), Pause(1500), Dtmf(menu_digit("0113", "GM0703"))]),
    # an access number in E.164 (the dialplan strips the plus), the area code of a shared code, then its menu
    "abroad_shared": CallScript("+31885550114", caller="0630000002",
                                steps=[Pause(1200), *keyed("0113"), Pause(1200), Dtmf(menu_digit("0113", "GM0664"))]),
    # the same access number as 0031…: a unique area code is announced and put through
    "abroad_unique": CallScript("0031885550114", caller="0630000003", steps=[Pause(1200), *keyed("0111")]),
    # an access number whose dialogue starts in English
    "abroad_english": CallScript("+31885550115", caller="0630000004",
                                 steps=[Pause(1200), *keyed("0113"), Pause(1200),
                                        Dtmf(menu_digit("0113", "GM0678"))]),
    # a Dutch caller who does not want English: the same call as always
    "dutch": CallScript("140113", caller="0630000005", steps=[Pause(1200), Dtmf(menu_digit("0113", "GM0703"))]),
}


@pytest.fixture(scope="module")
def calls(asterisk, ami, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("e2e-languages")
    controller = start_controller(workdir / "controller", salt=SALT, plan_overrides=PLAN_OVERRIDES)
    mark, log_mark = ami.mark(), asterisk.log_offset()
    try:
        results = run_calls(CALLS, workdir / "sipp")
        records = {name: controller.record_of(CALLS[name].caller) for name in CALLS}
        metrics = httpx.get(f"{controller.api_url}/metrics").text
        report = httpx.get(f"{controller.api_url}/v1/report").json()
    finally:
        controller.stop()
    answered = answered_since(ami, mark)
    played = _played_by_channel(asterisk.log_since(log_mark))
    return results, records, answered, played, metrics, report


def _played_by_channel(log: str) -> dict[str, list[str]]:
    """The prompt files Asterisk streamed, per caller channel (from AGI's 'Playing' lines)."""
    out: dict[str, list[str]] = {}
    for channel, path in re.findall(r"(PJSIP/sipp-[0-9a-f]+).*?Playing '(ivr14/[^'.]+)", log):
        out.setdefault(channel, []).append(path)
    return out


def _played(played: dict[str, list[str]], prompt: str) -> list[str]:
    """Channels that played ``prompt`` (file stem, e.g. ivr14/en/kies_menu)."""
    return [c for c, files in played.items() if prompt in files]


def test_every_sipp_call_completed(calls):
    results = calls[0]
    for name, result in results.items():
        assert result.ok, f"{name}: {result.describe()}"


def test_nine_at_the_greeting_switches_to_english(calls):
    _, records, answered, played, _, _ = calls
    rec = records["english"]
    assert answered.get(rec.call_id) == "GM0703"  # Reimerswaal
    assert (rec.language, rec.outcome, rec.municipality, rec.answered_by) == ("en", "routed", "GM0703", "GM0703")
    assert rec.digits == "9" + menu_digit("0113", "GM0703") and rec.access_number is None
    assert [a.verdict for a in rec.attempts] == ["language", "chosen"]
    assert rec.recognition_attempts == 1
    # Asterisk really streamed the English files rendered at install
    assert _played(played, "ivr14/en/kies_menu") and _played(played, "ivr14/en/kies_engels")


def test_an_access_number_and_a_keyed_shared_code_reach_the_municipality(calls):
    _, records, answered, _, _, _ = calls
    rec = records["abroad_shared"]
    assert answered.get(rec.call_id) == "GM0664"  # Goes
    assert (rec.access_number, rec.area_code, rec.mode, rec.outcome, rec.language) == (
        "31885550114", "0113", "dtmf", "routed", "nl")
    assert rec.digits == "0113" + menu_digit("0113", "GM0664")
    assert rec.attempts[0].heard == "0113" and rec.attempts[0].verdict == "chosen"


def test_an_access_number_reaches_a_unique_code_after_announcing_it(calls):
    _, records, answered, _, _, _ = calls
    rec = records["abroad_unique"]
    assert answered.get(rec.call_id) == "GM1676"  # Schouwen-Duiveland
    assert (rec.access_number, rec.area_code, rec.municipality, rec.outcome) == (
        "31885550114", "0111", "GM1676", "routed")


def test_an_english_access_number_holds_the_whole_dialogue_in_english(calls):
    _, records, answered, played, _, _ = calls
    rec = records["abroad_english"]
    assert answered.get(rec.call_id) == "GM0678"  # Kapelle
    assert (rec.access_number, rec.language, rec.outcome) == ("31885550115", "en", "routed")
    assert _played(played, "ivr14/en/welkom") and _played(played, "ivr14/en/doorverbinden")


def test_a_dutch_caller_is_served_as_before(calls):
    _, records, answered, _, _, _ = calls
    rec = records["dutch"]
    assert answered.get(rec.call_id) == "GM0703"
    assert (rec.language, rec.access_number, rec.recognition_attempts) == ("nl", None, 1)


def test_metrics_and_report_count_language_and_entry(calls):
    from ivr.adapters.metrics import parse_exposition, total

    _, _, _, _, metrics, report = calls
    snap = parse_exposition(metrics)
    assert total(snap, "ivr_language_calls_total", language="en") == 2
    assert total(snap, "ivr_language_calls_total", language="nl") == 3
    assert total(snap, "ivr_language_calls_total", entry="access") == 3
    assert total(snap, "ivr_language_calls_total", entry="fourteen") == 2
    overall = report["overall"]
    assert overall["languages"] == {"en": 2, "nl": 3}
    assert overall["entries"] == {"fourteen": 2, "access": 3}
    assert overall["routed_by_language"] == {"en": 2, "nl": 3}
    assert overall["routed_by_entry"] == {"fourteen": 2, "access": 3}
