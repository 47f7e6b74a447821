"""14+ calls through the real Asterisk and the real controller, placed by SIPp.

Each test asserts which municipality extension answered (the lab's MunicipalityAnswered
AMI event, as recorded by the controller and seen by the test's own AMI connection) and
what the call record in the real SQLite file holds.
"""

from __future__ import annotations

import json
import subprocess
import sys

import httpx
import pytest
from e2e import REPO, SALT, run_calls, start_controller, answered_since

from ivr_lab.sipp import CallScript, Dtmf, HangUp, Pause
from ivr.plan_files import load_base_plan

pytestmark = pytest.mark.asterisk

PLAN_OVERRIDES = '''
# Kapelle's line rings and rings: lets a caller hang up during the transfer
[municipalities.GM0678]
destination = "Local/noanswer@ivr14-lab"
'''


def menu_digit(area_code: str, cbs_code: str) -> str:
    return str([m.cbs_code for m in load_base_plan().candidates(area_code)].index(cbs_code) + 1)


CALLS = {
    # name: (script, expected outcome)
    "unique": CallScript("140111", caller="0610000001"),
    "plus31": CallScript("+31140111", caller="0610000002"),
    "dtmf": CallScript("140113", caller="0610000003", steps=[Pause(1200), Dtmf(menu_digit("0113", "GM0703"))]),
    "not_connected": CallScript("14023", caller="0610000004",
                                steps=[Pause(1200), Dtmf(menu_digit("023", "GM0394"))]),
    "unknown": CallScript("140999", caller="0610000005"),
    "hangup_menu": CallScript("140113", caller="0610000006", steps=[Pause(2500), HangUp()]),
    "hangup_transfer": CallScript("140113", caller="0610000007",
                                  steps=[Pause(1200), Dtmf(menu_digit("0113", "GM0678")), Pause(4000), HangUp()]),
    # 8 before 7: SIPp's stock pcaps number 7 lower than 8, which only works because the
    # lab driver renumbers every play of a call
    "go_back": CallScript("140113", caller="0610000009",
                          steps=[Pause(1200), Dtmf(menu_digit("0113", "GM0664")), Pause(1200), Dtmf("*"),
                                 Pause(1500), Dtmf(menu_digit("0113", "GM0703"))]),
    "invalid_twice": CallScript("140113", caller="0610000008",
                                steps=[Pause(1200), Dtmf("8"), Pause(1500), Dtmf("7")]),
}


@pytest.fixture(scope="module")
def calls(asterisk, ami, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("e2e-routing")
    controller = start_controller(workdir / "controller", salt=SALT, plan_overrides=PLAN_OVERRIDES)
    mark = ami.mark()
    try:
        results = run_calls(CALLS, workdir / "sipp")
        records = {name: controller.record_of(CALLS[name].caller) for name in CALLS}
        published["metrics"] = httpx.get(f"{controller.api_url}/metrics").text
        published["report"] = httpx.get(f"{controller.api_url}/v1/report").json()
        published["db"] = controller.db_path
    finally:
        controller.stop()
    answered = answered_since(ami, mark)
    return results, records, answered


published: dict = {}


def test_every_sipp_call_completed(calls):
    results, _, _ = calls
    for name, result in results.items():
        assert result.ok, f"{name}: {result.describe()}"


@pytest.mark.parametrize("name", ["unique", "plus31"])
def test_unique_code_reaches_schouwen_duiveland(calls, name):
    _, records, answered = calls
    rec = records[name]
    assert answered.get(rec.call_id) == "GM1676"
    assert (rec.outcome, rec.area_code, rec.mode, rec.municipality, rec.answered_by) == (
        "routed", "0111", "direct", "GM1676", "GM1676")
    assert rec.phase == "connected" and rec.hangup_phase is None
    assert rec.decision_ms is not None and rec.decision_ms < 1000
    assert rec.transfer_setup_ms is not None and rec.transfer_setup_ms >= 250  # the lab rings 0.3 s
    assert rec.recognition_attempts == 0


def test_shared_code_routed_by_dtmf(calls):
    _, records, answered = calls
    rec = records["dtmf"]
    assert answered.get(rec.call_id) == "GM0703"  # Reimerswaal
    assert (rec.outcome, rec.mode, rec.municipality, rec.answered_by, rec.digits) == (
        "routed", "dtmf", "GM0703", "GM0703", menu_digit("0113", "GM0703"))
    assert rec.recognition_attempts == 1
    assert rec.phase_seconds["menu"] > 0


def test_not_connected_municipality_is_told_not_transferred(calls):
    _, records, answered = calls
    rec = records["not_connected"]
    assert rec.call_id not in answered  # nobody answered: no transfer, least of all to Haarlem
    assert (rec.outcome, rec.municipality, rec.answered_by, rec.destination) == (
        "not_connected", "GM0394", None, None)


def test_unknown_area_code_is_told(calls):
    _, records, answered = calls
    rec = records["unknown"]
    assert rec.call_id not in answered
    assert (rec.outcome, rec.area_code, rec.decision) == ("unknown_area_code", None, "unknown_area_code")


def test_caller_hangs_up_during_the_menu(calls):
    _, records, _ = calls
    rec = records["hangup_menu"]
    assert (rec.outcome, rec.hangup_phase, rec.answered_by) == ("caller_hangup", "menu", None)
    assert rec.ended_at is not None


def test_caller_hangs_up_during_the_transfer(calls):
    _, records, answered = calls
    rec = records["hangup_transfer"]
    assert rec.call_id not in answered
    assert (rec.outcome, rec.hangup_phase, rec.municipality, rec.destination) == (
        "caller_hangup", "transfer", "GM0678", "Local/noanswer@ivr14-lab")


def test_invalid_digit_twice_goes_to_a_person(calls):
    _, records, answered = calls
    rec = records["invalid_twice"]
    assert answered.get(rec.call_id) == "operator"
    assert (rec.outcome, rec.decision, rec.answered_by, rec.digits) == ("operator", "operator", "operator", "87")


def test_metrics_report_and_records_agree(calls):
    """/metrics, /v1/report and `ivr report` tell the same story as the call records."""
    from ivr.adapters.metrics import parse_exposition, reconcile, total
    from ivr.core.report import compute_kpis
    from ivr.adapters.store import CallStore

    store = CallStore(published["db"])
    records = store.query()
    kpis = compute_kpis(store.iter_query())
    store.close()
    assert len(records) == len(CALLS)
    snapshot = parse_exposition(published["metrics"])
    assert reconcile(snapshot, kpis) == []
    assert published["report"]["overall"] == kpis.to_dict()["overall"]
    cli = subprocess.run([sys.executable, "-m", "ivr.cli", "report", "--db", str(published["db"]), "--format", "json"],
                         cwd=REPO, capture_output=True, text=True, check=True)
    assert json.loads(cli.stdout)["overall"] == kpis.to_dict()["overall"]
    # and the figures are the ones these calls must produce
    assert total(snapshot, "ivr_calls_total") == len(CALLS)
    assert total(snapshot, "ivr_calls_total", outcome="routed") == 4
    assert total(snapshot, "ivr_misrouted_calls_total", reason="rejected_confirmation") == 1
    assert total(snapshot, "ivr_calls_total", outcome="not_connected") == 1
    assert total(snapshot, "ivr_calls_total", outcome="unknown_area_code") == 1
    assert total(snapshot, "ivr_hangups_total", phase="menu") == 1
    assert total(snapshot, "ivr_hangups_total", phase="transfer") == 1
    assert total(snapshot, "ivr_calls_total", area_code="0111", mode="direct", outcome="routed") == 2


def test_star_during_the_announcement_goes_back_to_the_menu(calls):
    _, records, answered = calls
    rec = records["go_back"]
    assert answered.get(rec.call_id) == "GM0703"  # Goes was announced, refused with *, Reimerswaal chosen
    assert rec.digits == menu_digit("0113", "GM0664") + "*" + menu_digit("0113", "GM0703")
    assert (rec.outcome, rec.municipality, rec.rejected_confirmations) == ("routed", "GM0703", 1)
