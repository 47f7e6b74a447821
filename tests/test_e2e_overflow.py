"""Overflow instead of goodbye (issue 11, item 5) through the real Asterisk and the real controller,
placed by SIPp: a busy municipality overflows to another one that answers; an unanswered one
(after its own ring timeout) tells the alternative number and takes a consented callback request
keyed in by the caller, which the admin API lists; a caller who does not consent is not kept.
"""

from __future__ import annotations

import httpx
import pytest
from e2e import SALT, run_calls, start_controller, answered_since

from ivr.adapters.metrics import parse_exposition, total
from ivr_lab.sipp import CallScript, Dtmf, Pause

pytestmark = pytest.mark.asterisk

TOKEN = "e2e-overflow-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}

PLAN_OVERRIDES = '''
# Terneuzen (0115) is busy: its calls overflow to Goes's lab line
[municipalities.GM0715]
destination = "Local/busy@ivr14-lab"
overflow = "GM0664"

# Sluis (0117) rings 5 s and nobody answers; there is an alternative number, no overflow
[municipalities.GM1714]
destination = "Local/noanswer@ivr14-lab"
ring_timeout_s = 5
alt_number = "0117 123 456"

# Tholen (0166) is busy, no overflow
[municipalities.GM0716]
destination = "Local/busy@ivr14-lab"
'''

CALLS = {
    "overflow": CallScript("140115", caller="0610001101"),
    # consent, then a number that is too short (asked again), then a good one; each barges in
    "callback": CallScript("140117", caller="0610001102",
                           steps=[Pause(1500), Dtmf("1"), Pause(2000), Dtmf("0612345#"), Pause(2500),
                                  Dtmf("0612345678#")]),
    "declined": CallScript("140166", caller="0610001103", steps=[Pause(1500), Dtmf("2")]),
}


@pytest.fixture(scope="module")
def calls(asterisk, ami, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("e2e-overflow")
    controller = start_controller(workdir / "controller", salt=SALT, plan_overrides=PLAN_OVERRIDES,
                                  extra_env={"IVR_ADMIN_TOKEN": TOKEN})
    mark = ami.mark()
    try:
        results = run_calls(CALLS, workdir / "sipp")
        records = {name: controller.record_of(CALLS[name].caller) for name in CALLS}
        callbacks = httpx.get(f"{controller.api_url}/v1/callbacks", headers=AUTH).json()
        unauthorised = httpx.get(f"{controller.api_url}/v1/callbacks").status_code
        metrics = parse_exposition(httpx.get(f"{controller.api_url}/metrics").text)
        report = httpx.get(f"{controller.api_url}/v1/report").json()
    finally:
        controller.stop()
    answered = answered_since(ami, mark)
    return results, records, answered, callbacks, unauthorised, metrics, report


def test_every_sipp_call_completed(calls):
    results = calls[0]
    for name, result in results.items():
        assert result.ok, f"{name}: {result.describe()}"


def test_busy_municipality_overflows_and_the_overflow_answers(calls):
    _, records, answered, *_ = calls
    rec = records["overflow"]
    assert answered.get(rec.call_id) == "GM0664"  # Goes's lab line answered the overflow
    assert (rec.outcome, rec.municipality, rec.overflow_to, rec.answered_by) == ("routed", "GM0715", "GM0664",
                                                                                 "GM0664")
    assert rec.destination == "Local/GM0664@ivr14-lab" and rec.error_kind is None and rec.callback is None


def test_unanswered_municipality_gives_the_number_and_takes_a_callback_request(calls):
    _, records, answered, callbacks, unauthorised, *_ = calls
    rec = records["callback"]
    assert rec.call_id not in answered
    assert (rec.outcome, rec.hangup_cause, rec.alt_number_given, rec.callback) == ("failed", "NOANSWER", True,
                                                                                   "requested")
    assert rec.digits == "1"  # the consent; the number is never in the call record
    assert rec.phase_seconds["transfer"] >= 4.5  # rang its own 5 s, not the default 30 s
    assert unauthorised == 401
    assert [(c["call_id"], c["municipality"], c["number"]) for c in callbacks] == [
        (rec.call_id, "GM1714", "+31612345678")]


def test_no_consent_no_request(calls):
    _, records, *_ = calls
    rec = records["declined"]
    assert (rec.outcome, rec.hangup_cause, rec.alt_number_given, rec.callback) == ("failed", "BUSY", False,
                                                                                   "declined")


def test_metrics_and_report_count_each_path(calls):
    *_, metrics, report = calls
    expected = {"overflow_taken": 1, "overflow_answered": 1, "alternative_number": 1, "callback_offered": 2,
                "callback_requested": 1, "callback_declined": 1, "callback_invalid_number": 0}
    assert report["overall"]["failover"] == expected
    for path, n in expected.items():
        assert total(metrics, "ivr_failover_calls_total", path=path) == n, path
    assert total(metrics, "ivr_failover_calls_total", area_code="0115", path="overflow_answered") == 1
