"""Metrics (ivr.adapters.metrics): naming rules, the observer against the report, scrape-time health gauges."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from prometheus_client import CollectorRegistry

from ivr.core.callrecord import Phase
from ivr.adapters.metrics import (
    BUCKETS,
    MetricsObserver,
    metrics_snapshot,
    parse_exposition,
    reconcile,
    snapshot_delta,
    total,
)
from ivr.adapters.overrides import load_plan
from ivr.core.report import compute_kpis
from kpi_records import EXPECTED, fixed_records, rec

ALLOWED_LABELS = {"area_code", "mode", "outcome", "attempts", "municipality", "reason", "target", "result", "phase",
                  "kind", "action", "status", "version", "le", "language", "entry"}


def observe(observer: MetricsObserver, records) -> None:
    """Drive the observer as the controller does: start, events, end (finished calls only)."""
    for r in records:
        observer.call_started(r)
        observer.call_event(r, None, [])
        if r.outcome:
            observer.call_ended(r)


def fake_service(**kw):
    plan = kw.pop("plan", None) or load_plan(None)
    return SimpleNamespace(plan=plan, plan_error=kw.pop("plan_error", ""),
                           ami=kw.pop("ami", SimpleNamespace(connected=True, reconnects=3)),
                           controller=SimpleNamespace(active=kw.pop("active", 2)), speech=kw.pop("speech", None))


def test_naming_rules():
    obs = MetricsObserver(service=fake_service())
    observe(obs, fixed_records())
    obs.admin_change("calamity", "applied")
    for family in obs.registry.collect():
        assert family.name.startswith("ivr_"), family.name
        if family.type == "counter":
            assert all(s.name.endswith(("_total", "_created")) for s in family.samples), family.name
        if family.type == "histogram":
            assert family.name.endswith("_seconds"), family.name
        for s in family.samples:
            assert set(s.labels) <= ALLOWED_LABELS, (s.name, s.labels)
            assert not any(str(v).startswith("h-") for v in s.labels.values())  # no caller hashes
    for buckets in BUCKETS.values():
        assert list(buckets) == sorted(buckets)


def test_observer_counts_agree_with_the_report():
    records = fixed_records()
    obs = MetricsObserver()
    observe(obs, records)
    snap = metrics_snapshot(obs.registry)
    kpis = compute_kpis(records)
    assert reconcile(snap, kpis) == []
    assert total(snap, "ivr_calls_total") == EXPECTED["calls"]
    assert total(snap, "ivr_calls_total", area_code="0113", mode="speech", outcome="routed") == 7
    assert total(snap, "ivr_calls_total", area_code="none", outcome="unknown_area_code") == 1
    assert total(snap, "ivr_recognition_calls_total", mode="speech", attempts="1") == 6
    assert total(snap, "ivr_misrouted_calls_total", reason="repeat_call", municipality="GM0664") == 1
    assert total(snap, "ivr_transfers_total", mode="speech", target="municipality", result="caller_hangup") == 1
    assert total(snap, "ivr_hangups_total", phase="transfer") == 1
    assert total(snap, "ivr_errors_total", kind="transfer_failed") == 1
    assert snap['ivr_time_in_ivr_seconds_bucket{le="10.0",mode="speech"}'] == 7  # 8 12 20 9 7 10 8 8 8
    assert total(snap, "ivr_time_in_ivr_seconds_count") == EXPECTED["ivr_count"]
    assert total(snap, "ivr_time_in_ivr_seconds_sum") == pytest.approx(EXPECTED["ivr_sum"])
    assert snap["ivr_transfer_setup_seconds_count"] == 2
    # nothing in progress once every call has ended; the unfinished one is still in its phase
    assert snap["ivr_calls_in_progress"] == 1
    assert snap['ivr_calls_in_phase{phase="speech"}'] == 1


def test_reconcile_reports_disagreements():
    records = fixed_records()
    obs = MetricsObserver()
    observe(obs, records[:-3])
    problems = reconcile(metrics_snapshot(obs.registry), compute_kpis(records))
    assert "calls outcome=routed: metrics 8 != report 9" in problems


def test_live_gauges_follow_phases():
    obs = MetricsObserver()
    r = rec("live", 0, outcome=None, phase=Phase.SPEECH.value)
    obs.call_started(r)
    snap = metrics_snapshot(obs.registry)
    assert snap["ivr_calls_in_progress"] == 1 and snap['ivr_calls_in_phase{phase="speech"}'] == 1
    r.phase = Phase.TRANSFER.value
    obs.call_event(r, None, [])
    snap = metrics_snapshot(obs.registry)
    assert snap['ivr_calls_in_phase{phase="speech"}'] == 0 and snap['ivr_calls_in_phase{phase="transfer"}'] == 1
    r.phase, r.outcome = Phase.CONNECTED.value, "routed"
    obs.call_ended(r)
    obs.call_ended(r)  # twice: counted once in the gauges
    snap = metrics_snapshot(obs.registry)
    assert snap["ivr_calls_in_progress"] == 0
    assert all(v == 0 for k, v in snap.items() if k.startswith("ivr_calls_in_phase"))


def test_observer_never_raises_into_a_call():
    obs = MetricsObserver()
    broken = SimpleNamespace(call_id="x", phase="speech", outcome="routed")  # not a CallRecord
    obs.call_started(broken)
    obs.call_ended(broken)
    assert metrics_snapshot(obs.registry)['ivr_errors_total{kind="observer"}'] == 1


def test_service_gauges_are_read_at_scrape_time():
    svc = fake_service()
    obs = MetricsObserver(service=svc)
    snap = metrics_snapshot(obs.registry)
    assert snap["ivr_ami_connected"] == 1 and snap["ivr_ami_reconnects_total"] == 3
    assert snap["ivr_agi_sessions_in_progress"] == 2
    assert snap[f'ivr_plan_info{{version="{svc.plan.version}"}}'] == 1
    assert snap['ivr_plan_municipalities{status="not_connected"}'] == 1
    assert snap["ivr_plan_reload_failing"] == 0 and snap["ivr_recogniser_loaded"] == 0
    svc.ami, svc.controller.active, svc.plan_error, svc.speech = None, 0, "bad file", object()
    snap = metrics_snapshot(obs.registry)
    assert snap["ivr_ami_connected"] == 0 and snap["ivr_agi_sessions_in_progress"] == 0
    assert snap["ivr_plan_reload_failing"] == 1 and snap["ivr_recogniser_loaded"] == 1


def test_registries_are_independent_and_exposition_parses_back():
    a, b = MetricsObserver(), MetricsObserver(CollectorRegistry())
    observe(a, fixed_records())
    assert total(metrics_snapshot(b.registry), "ivr_calls_total") == 0
    assert parse_exposition(a.exposition().decode()) == metrics_snapshot(a.registry)


def test_snapshot_delta_counts_only_new_calls():
    obs = MetricsObserver()
    records = fixed_records()
    observe(obs, records[:5])
    before = metrics_snapshot(obs.registry)
    observe(obs, records[5:])
    delta = snapshot_delta(metrics_snapshot(obs.registry), before)
    assert total(delta, "ivr_calls_total") == EXPECTED["calls"] - 5
