"""Overflow instead of goodbye (issue 11, item 5): the flow as events in, actions out; the plan's
checks on overflow, ring timeout and alternative number; the callback requests in SQLite and
behind the admin API; the new paths in the record, the report and the metrics."""

from __future__ import annotations

import time
from dataclasses import replace

import pytest
from fastapi.testclient import TestClient

from ivr.adapters.api import create_app
from ivr.adapters.metrics import MetricsObserver, metrics_snapshot, reconcile, total
from ivr.adapters.overrides import load_plan
from ivr.adapters.store import CallStore
from ivr.config import Settings
from ivr.core.callback import CallbackRequest, callback_number, is_public_number
from ivr.core.flow import (
    AskDigits,
    CallerHungUp,
    CallFlow,
    CallStarted,
    Digit,
    DigitsEntered,
    Goodbye,
    NoInput,
    RequestCallback,
    Transfer,
    TransferAnswered,
    TransferFailed,
)
from ivr.core.plan import PlanError
from ivr.plan_files import load_base_plan
from ivr.core.report import compute_kpis
from ivr.core.signals import failover_paths, immediate_misroute
from ivr.service import Service

BASE = load_base_plan()
SCHOUWEN, GOES, REIMERSWAAL = "GM1676", "GM0664", "GM0703"  # 0111 is Schouwen-Duiveland's alone


def plan_with(**changes: dict):
    municipalities = dict(BASE.municipalities)
    for cbs, fields in changes.items():
        municipalities[cbs] = replace(municipalities[cbs], **fields)
    return BASE.with_changes(municipalities=municipalities)


def start(plan, number="140111"):
    flow = CallFlow(plan, speech_available=False)
    actions = flow.handle(CallStarted(0.0, "c1", number, caller="h", wall_time=1000.0))
    return flow, actions


# --- the flow ----------------------------------------------------------------------------------


def test_busy_municipality_overflows_to_another_and_the_answer_is_no_misroute():
    plan = plan_with(GM1676={"overflow": GOES, "ring_timeout_s": 12})
    flow, [first] = start(plan)
    assert first.timeout_s == 12  # the municipality's ring timeout goes with the Dial
    [overflow] = flow.handle(TransferFailed(12.5, "NOANSWER"))
    assert overflow == Transfer(plan.municipalities[GOES].destination, ("overloop",), GOES, timeout_s=None)
    flow.handle(TransferAnswered(13.0, GOES))
    flow.handle(CallerHungUp(60.0))
    rec = flow.record
    assert (rec.outcome, rec.municipality, rec.overflow_to, rec.answered_by) == ("routed", SCHOUWEN, GOES, GOES)
    assert rec.error_kind is None and rec.callback is None
    assert immediate_misroute(rec) is None  # answered by the overflow on purpose
    assert failover_paths(rec) == ["overflow_taken", "overflow_answered"]
    assert rec.decision_ms == 0.0  # the overflow's dial does not re-time the first decision


def test_overflow_chain_is_followed_once_then_the_callback_is_offered():
    plan = plan_with(GM1676={"overflow": GOES, "alt_number": "0111 452 000"},
                     GM0664={"overflow": "PJSIP/+31113249249@trunk", "ring_timeout_s": 20})
    flow, _ = start(plan)
    [to_goes] = flow.handle(TransferFailed(30.0, "BUSY"))
    [to_trunk] = flow.handle(TransferFailed(31.0, "BUSY"))
    assert (to_goes.destination, to_trunk.destination) == (plan.municipalities[GOES].destination,
                                                          "PJSIP/+31113249249@trunk")
    assert to_trunk.timeout_s == 20  # a dial string rings as long as the municipality that leads to it
    [offer] = flow.handle(TransferFailed(51.0, "CHANUNAVAIL"))
    assert isinstance(offer, AskDigits) and offer.max_digits == 1
    assert offer.prompts[:2] == ("niet_bereikbaar_nu", "belt_u")
    assert "".join(k[-1] for k in offer.prompts if k.startswith("cijfer/")) == "0111452000"
    assert offer.prompts[-1] == "terugbellen_vraag"
    rec = flow.record
    assert rec.overflow_to == "PJSIP/+31113249249@trunk" and rec.phase == "callback"
    assert rec.error_kind == "transfer_failed" and rec.hangup_cause == "CHANUNAVAIL"


def test_consent_then_a_bad_number_then_a_good_one_requests_the_callback():
    flow, _ = start(BASE)
    [offer] = flow.handle(TransferFailed(30.0, "BUSY"))
    assert "belt_u" not in offer.prompts  # Schouwen-Duiveland has no alternative number in the shipped plan
    [ask] = flow.handle(DigitsEntered(33.0, "1"))
    assert ask.prompts == ("terugbellen_nummer",) and ask.end_digit == "#"
    [again] = flow.handle(DigitsEntered(40.0, "12345"))
    assert again.prompts[0] == "ongeldig_nummer"
    request, goodbye = flow.handle(DigitsEntered(50.0, "0612345678"))
    assert request == RequestCallback(SCHOUWEN, "+31612345678")
    assert isinstance(goodbye, Goodbye) and goodbye.prompts[0] == "terugbellen_bevestigd"
    rec = flow.record
    assert flow.ended and (rec.outcome, rec.callback) == ("failed", "requested")
    assert rec.digits == "1"  # the consent, never the number: the record keeps no caller number
    assert failover_paths(rec) == ["callback_offered", "callback_requested"]


@pytest.mark.parametrize("answer, result", [
    (DigitsEntered(33.0, "2"), "declined"),
    (NoInput(36.0), "declined"),
    (Digit(33.0, "9"), "declined"),  # a driver reporting single keys
])
def test_no_consent_ends_the_call_without_a_request(answer, result):
    flow, _ = start(BASE)
    flow.handle(TransferFailed(30.0, "BUSY"))
    [goodbye] = flow.handle(answer)
    assert goodbye.prompts == ("later_opnieuw", "tot_ziens")
    assert (flow.record.outcome, flow.record.callback) == ("failed", result)


def test_two_numbers_that_are_not_dutch_or_e164_end_without_a_request():
    flow, _ = start(BASE)
    flow.handle(TransferFailed(30.0, "BUSY"))
    flow.handle(DigitsEntered(33.0, "1"))
    flow.handle(DigitsEntered(40.0, "0800123456"))  # a service number cannot be called back
    [goodbye] = flow.handle(NoInput(55.0))
    assert not any(isinstance(a, RequestCallback) for a in [goodbye])
    assert goodbye.prompts[0] == "ongeldig_nummer" and flow.record.callback == "invalid_number"


def test_caller_hanging_up_at_the_offer_stays_a_failed_transfer():
    flow, _ = start(BASE)
    flow.handle(TransferFailed(30.0, "BUSY"))
    assert flow.handle(CallerHungUp(32.0, "16")) == []
    rec = flow.record
    assert (rec.outcome, rec.callback, rec.error_kind) == ("failed", None, "transfer_failed")
    assert failover_paths(rec) == ["callback_offered"]


def test_operator_and_calamity_transfers_fail_as_before():
    flow, _ = start(BASE, "140113")
    flow.handle(Digit(1.0, "0"))  # a person
    [goodbye] = flow.handle(TransferFailed(30.0, "BUSY"))
    assert goodbye == Goodbye(("niet_bereikbaar", "tot_ziens"))


def test_not_connected_overflow_target_is_skipped():
    plan = plan_with(GM1676={"overflow": "GM0394"})  # Haarlemmermeer is not connected
    flow, _ = start(plan)
    [offer] = flow.handle(TransferFailed(30.0, "BUSY"))
    assert isinstance(offer, AskDigits) and flow.record.overflow_to is None


# --- numbers -----------------------------------------------------------------------------------


@pytest.mark.parametrize("keyed, e164", [
    ("0612345678", "+31612345678"), ("0201234567", "+31201234567"), ("0031612345678", "+31612345678"),
    ("004930123456", "+4930123456"), ("0612345", None), ("06123456789", None), ("0800123456", None),
    ("0900123456", None), ("000123456789", None), ("0031800123456", None), ("00123", None), ("", None),
    ("06*2345678", None), ("1234567890", None), ("00" + "1" * 16, None),
])
def test_callback_numbers_are_dutch_or_e164(keyed, e164):
    assert callback_number(keyed) == e164


@pytest.mark.parametrize("number, ok", [
    ("0900 1852", True), ("0113 249 249", True), ("+31 113 249 249", True), ("0800-1234", True),
    ("12345", False), ("+0123456789", False), ("0113 24", False), ("00311132492", False), ("call us", False),
])
def test_alternative_numbers_are_dutch_or_e164(number, ok):
    assert is_public_number(number) is ok


# --- bad input: refused with file, line and reason; the last good plan stays -------------------------


@pytest.mark.parametrize("body, line, reason", [
    ('[municipalities.GM1676]\noverflow = "GM0664"\n\n[municipalities.GM0664]\noverflow = "GM1676"\n',
     5, "overflow loop GM0664 -> GM1676 -> GM0664"),
    ('[municipalities.GM1676]\nstatus = "active"\noverflow = "GM1676"\n', 3, "overflows to itself"),
    ('[municipalities.GM1676]\noverflow = "GM9999"\n', 2, "unknown municipality GM9999"),
    ('[municipalities.GM1676]\noverflow = "not a destination"\n', 2, "overflow"),
    ('[municipalities.GM1676]\nring_timeout_s = 600\n', 2, "less than or equal to 120"),
    ('[municipalities.GM1676]\nring_timeout_s = 2\n', 2, "greater than or equal to 5"),
    ('[municipalities.GM1676]\n\nalt_number = "12345"\n', 3, "not a Dutch"),
])
def test_bad_overflow_settings_are_refused_with_file_and_line(tmp_path, body, line, reason):
    path = tmp_path / "plan.toml"
    path.write_text(body)
    with pytest.raises(PlanError) as err:
        load_plan(path)
    assert str(err.value).startswith(f"{path}:{line}:"), str(err.value)
    assert reason in str(err.value)


def test_a_good_overflow_file_loads(tmp_path):
    path = tmp_path / "plan.toml"
    path.write_text('[municipalities.GM1676]\noverflow = "GM0664"\nring_timeout_s = 15\n\n'
                    '[municipalities.GM0664]\noverflow = "Local/operator@ivr14-lab"\n')
    plan = load_plan(path)
    assert (plan.municipalities[SCHOUWEN].overflow, plan.municipalities[SCHOUWEN].ring_timeout_s) == (GOES, 15)


# --- the admin API and the store --------------------------------------------------------------------

TOKEN = "overflow-test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def service(tmp_path):
    settings = Settings(state_dir=tmp_path, db_path=tmp_path / "calls.sqlite", speech_engine="none",
                        admin_token=TOKEN, plan_file=None, ami_secret=None, callback_retention_days=3)
    svc = Service(settings, plan=BASE, observer=MetricsObserver())
    yield svc
    svc.store.close()


def test_overflow_through_the_admin_api_and_a_loop_is_a_422(service):
    with TestClient(create_app(service)) as client:
        r = client.patch(f"/v1/municipalities/{SCHOUWEN}", headers=AUTH, json={"overflow": GOES, "ring_timeout_s": 15})
        assert r.status_code == 200, r.text
        assert r.json()["after"]["overflow"] == GOES
        version = service.plan.version
        r = client.patch(f"/v1/municipalities/{GOES}", headers=AUTH, json={"overflow": SCHOUWEN})
        assert r.status_code == 422 and "overflow loop" in r.json()["detail"]
        assert service.plan.version == version  # the last good plan stays
        assert client.patch(f"/v1/municipalities/{GOES}", headers=AUTH, json={"ring_timeout_s": 1}).status_code == 422
        got = client.get(f"/v1/municipalities/{SCHOUWEN}").json()
        assert (got["overflow"], got["ring_timeout_s"]) == (GOES, 15)
    # the change survives a restart: replayed from the audit log
    assert service.plans.load().municipalities[SCHOUWEN].overflow == GOES


def test_callbacks_listed_and_cleared_with_the_token_only(service):
    flow, _ = start(BASE)
    flow.handle(TransferFailed(30.0, "BUSY"))
    flow.handle(DigitsEntered(33.0, "1"))
    request, _ = flow.handle(DigitsEntered(40.0, "0612345678"))
    callback_id = service.add_callback("c1", request)
    with TestClient(create_app(service)) as client:
        assert client.get("/v1/callbacks").status_code == 401
        assert client.get("/v1/callbacks", headers={"Authorization": "Bearer wrong"}).status_code == 403
        [row] = client.get("/v1/callbacks", headers=AUTH).json()
        assert (row["id"], row["municipality"], row["number"], row["call_id"]) == (callback_id, SCHOUWEN,
                                                                                   "+31612345678", "c1")
        assert row["expires_at"] - row["requested_at"] == pytest.approx(3 * 86400)
        assert client.get("/v1/callbacks", headers=AUTH, params={"municipality": GOES}).json() == []
        assert client.delete(f"/v1/callbacks/{callback_id}").status_code == 401
        assert client.delete(f"/v1/callbacks/{callback_id}", headers=AUTH).status_code == 204
        assert client.delete(f"/v1/callbacks/{callback_id}", headers=AUTH).status_code == 404
        assert client.get("/v1/callbacks", headers=AUTH).json() == []


def test_callback_requests_are_purged_after_their_retention(tmp_path):
    store = CallStore(tmp_path / "calls.sqlite")
    now = time.time()
    store.add_callback(CallbackRequest("old", SCHOUWEN, "+31612345678", now - 10 * 86400, now - 1))
    store.add_callback(CallbackRequest("new", SCHOUWEN, "+31612345679", now, now + 86400))
    assert [r["call_id"] for r in store.callbacks()] == ["new"]  # listing purges first
    assert store.purge_callbacks(now + 2 * 86400) == 1
    assert store.callbacks(now=now + 2 * 86400) == []
    store.close()


# --- counted alike in the record, the report and the metrics -------------------------------------


def test_new_paths_are_counted_alike_in_report_and_metrics(tmp_path):
    plan = plan_with(GM1676={"overflow": GOES, "alt_number": "0111 452 000"})
    records = []
    for i, script in enumerate([
        [TransferAnswered(1.0, SCHOUWEN)],  # answered at once: no failover
        [TransferFailed(30.0, "BUSY"), TransferAnswered(31.0, GOES)],  # overflow answered
        [TransferFailed(30.0, "BUSY"), TransferFailed(60.0, "BUSY"), DigitsEntered(62.0, "1"),
         DigitsEntered(70.0, "0612345678")],  # overflow, alternative number, callback
        [TransferFailed(30.0, "BUSY"), TransferFailed(60.0, "NOANSWER"), NoInput(66.0)],  # declined
    ]):
        flow = CallFlow(plan, speech_available=False)
        flow.handle(CallStarted(0.0, f"c{i}", "140111", caller=f"h{i}", wall_time=1000.0 + 100 * i))
        for event in script:
            flow.handle(event)
        if not flow.ended:
            flow.handle(CallerHungUp(90.0))
        records.append(flow.record)
    store = CallStore(tmp_path / "calls.sqlite")
    store.save_many(records)
    stored = store.query()
    store.close()
    assert [r.callback for r in stored] == [None, None, "requested", "declined"]
    assert [r.alt_number_given for r in stored] == [False, False, True, True]
    kpis = compute_kpis(stored)
    assert kpis.overall.failover == {"overflow_taken": 3, "overflow_answered": 1, "alternative_number": 2,
                                     "callback_offered": 2, "callback_requested": 1, "callback_declined": 1,
                                     "callback_invalid_number": 0}
    observer = MetricsObserver()
    for r in stored:
        observer.count(r)
    snap = metrics_snapshot(observer.registry)
    assert total(snap, "ivr_failover_calls_total", path="callback_requested", area_code="0111") == 1
    assert reconcile(snap, kpis) == []


def test_a_reload_with_an_overflow_loop_keeps_the_last_good_plan(service, tmp_path):
    plan_file = tmp_path / "plan.toml"
    plan_file.write_text('[municipalities.GM1676]\noverflow = "GM0664"\n')
    good = service.reload_plan(plan_file)
    plan_file.write_text('[municipalities.GM1676]\noverflow = "GM0664"\n\n[municipalities.GM0664]\n'
                         'overflow = "GM1676"\n')
    with pytest.raises(PlanError, match="overflow loop"):
        service.reload_plan(plan_file)
    assert service.plan is good and "plan.toml:5" in service.plan_error
