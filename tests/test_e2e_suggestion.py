"""A suggestion of the municipality (issue 11, item 3) through the real Asterisk and the real
controller, placed by SIPp: a caller routed to a municipality by the DTMF menu calls again and
is asked "Belt u weer voor de gemeente X?" first, keys 1 and reaches it; another keys 2 and
chooses another from the menu; a landline in an area code of one municipality is asked for it
on a shared code. The area codes use the DTMF menu here (no recogniser loaded), so the
suggestion is answered by key; the spoken answers are the flow's unit tests.
"""

from __future__ import annotations

import httpx
import pytest
from e2e import SALT, run_calls, start_controller, answered_since

from ivr.adapters.metrics import parse_exposition, total
from ivr.plan_files import load_base_plan
from ivr_lab.sipp import CallScript, Dtmf, Pause

pytestmark = pytest.mark.asterisk

GOES, REIMERSWAAL, BORSELE, SCHOUWEN = "GM0664", "GM0703", "GM0654", "GM1676"


def menu_digit(area_code: str, cbs_code: str) -> str:
    return str([m.cbs_code for m in load_base_plan().candidates(area_code)].index(cbs_code) + 1)


FIRST = {  # mobile callers without history: the menu, as ever
    "yes": CallScript("140113", caller="0610002001", steps=[Pause(1200), Dtmf(menu_digit("0113", GOES))]),
    "no": CallScript("140113", caller="0610002002", steps=[Pause(1200), Dtmf(menu_digit("0113", REIMERSWAAL))]),
    # a landline in 0111 (Schouwen-Duiveland's alone) dials 14 0118, shared by four
    "landline": CallScript("140118", caller="0111234567", steps=[Pause(1500), Dtmf("1")]),
}
AGAIN = {
    "yes": CallScript("140113", caller="0610002001", steps=[Pause(1500), Dtmf("1")]),
    "no": CallScript("140113", caller="0610002002",
                     steps=[Pause(1500), Dtmf("2"), Pause(1200), Dtmf(menu_digit("0113", BORSELE))]),
}


@pytest.fixture(scope="module")
def calls(asterisk, ami, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("e2e-suggestion")
    controller = start_controller(workdir / "controller", salt=SALT)
    mark = ami.mark()
    try:
        first = run_calls(FIRST, workdir / "sipp-first")
        first_records = {name: controller.record_of(FIRST[name].caller) for name in FIRST}
        again = run_calls(AGAIN, workdir / "sipp-again")
        again_records = {name: controller.record_of(AGAIN[name].caller) for name in AGAIN}
        metrics = parse_exposition(httpx.get(f"{controller.api_url}/metrics").text)
        report = httpx.get(f"{controller.api_url}/v1/report").json()
    finally:
        controller.stop()
    answered = answered_since(ami, mark)
    return first, first_records, again, again_records, answered, metrics, report


def test_every_sipp_call_completed(calls):
    first, _, again, *_ = calls
    for name, result in [*first.items(), *again.items()]:
        assert result.ok, f"{name}: {result.describe()}"


def test_a_first_call_from_a_mobile_gets_the_menu(calls):
    _, first_records, _, _, answered, *_ = calls
    for name, cbs in (("yes", GOES), ("no", REIMERSWAAL)):
        rec = first_records[name]
        assert rec.suggested is None and rec.mode == "dtmf"
        assert (rec.outcome, rec.municipality, answered.get(rec.call_id)) == ("routed", cbs, cbs)


def test_calling_again_and_keying_1_reaches_the_same_municipality(calls):
    _, first_records, _, again_records, answered, *_ = calls
    rec = again_records["yes"]
    assert rec.call_id != first_records["yes"].call_id and rec.caller == first_records["yes"].caller
    assert (rec.suggested, rec.suggestion_source, rec.suggestion) == (GOES, "history", "accepted")
    assert (rec.outcome, rec.municipality, rec.answered_by, answered.get(rec.call_id)) == ("routed", GOES, GOES, GOES)
    assert rec.recognition_attempts == 1 and rec.digits == "1"
    assert [(a.kind, a.verdict) for a in rec.attempts] == [("suggest", "yes")]


def test_calling_again_and_keying_2_gets_the_menu_and_another_municipality(calls):
    _, _, _, again_records, answered, *_ = calls
    rec = again_records["no"]
    assert (rec.suggested, rec.suggestion) == (REIMERSWAAL, "refused")
    assert (rec.outcome, rec.municipality, answered.get(rec.call_id)) == ("routed", BORSELE, BORSELE)
    assert rec.recognition_attempts == 2 and rec.rejected_confirmations == 0  # a refusal is no misroute
    assert [(a.kind, a.verdict) for a in rec.attempts] == [("suggest", "no"), ("menu", "chosen")]


def test_a_landline_of_a_one_municipality_area_code_is_asked_for_it(calls):
    _, first_records, _, _, answered, *_ = calls
    rec = first_records["landline"]
    assert (rec.area_code, rec.suggested, rec.suggestion_source, rec.suggestion) == (
        "0118", SCHOUWEN, "landline", "accepted")
    assert (rec.outcome, answered.get(rec.call_id)) == ("routed", SCHOUWEN)


def test_metrics_and_report_count_the_suggestions(calls):
    *_, metrics, report = calls
    expected = {"made": 3, "accepted": 2, "refused": 1, "named": 0, "no_answer": 0}
    assert report["overall"]["suggestions"] == expected
    for path, n in expected.items():
        assert total(metrics, "ivr_suggestion_calls_total", path=path) == n, path
    assert total(metrics, "ivr_suggestion_calls_total", source="landline", path="accepted") == 1
    assert total(metrics, "ivr_suggestion_calls_total", area_code="0113", source="history", path="made") == 2
