"""KPIs (ivr.core.report) and ``ivr report`` against hand-computed figures for a fixed set of records."""

from __future__ import annotations

import csv
import io
import json
import math
import random

import pytest

from ivr.core.callrecord import CallRecord
from ivr.cli import main
from ivr.core.report import BASELINE_2020, KpiAccumulator, LogHistogram, MisrouteTracker, compute_kpis
from ivr.cli.report import parse_when, render
from ivr.adapters.store import CallStore
from kpi_records import EXPECTED, EXPECTED_WITH_TRUTH, T0, fixed_records, rec


@pytest.fixture
def db(tmp_path):
    path = tmp_path / "calls.sqlite"
    store = CallStore(path)
    store.save_many(fixed_records())
    store.close()
    return path


def stored_kpis(path, **filters):
    store = CallStore(path)
    try:
        return compute_kpis(store.iter_query(**filters), filters=filters)
    finally:
        store.close()


def check_overall(k, exp):
    o = k.overall
    assert o.calls == exp["calls"]
    assert k.unfinished == exp["unfinished"]
    assert o.outcomes == exp["outcomes"]
    assert o.recognition["speech"].asked == 9
    assert o.recognition["speech"].attempts == exp["speech_attempts"]
    assert o.recognition["dtmf"].attempts == exp["dtmf_attempts"]
    assert "direct" not in o.recognition  # nobody was asked
    h = o.headline
    assert h["first_attempt"] == pytest.approx(exp["first_attempt"], abs=1e-6)
    assert h["after_one_repeat"] == pytest.approx(exp["after_one_repeat"], abs=1e-6)
    assert h["after_several"] == pytest.approx(exp["after_several"], abs=1e-6)
    assert h["right_municipality"] == pytest.approx(exp["right_municipality"], abs=1e-6)
    assert h["hangup_during_transfer"] == pytest.approx(exp["hangup_during_transfer"], abs=1e-6)
    assert h["ivr_seconds_p50"] == pytest.approx(exp["ivr_p50"])
    assert h["ivr_seconds_p95"] == pytest.approx(exp["ivr_p95"])
    speech = o.routing["speech"]
    assert speech.routed == exp["speech_routed"]
    assert speech.misroutes == exp["speech_misroutes"]
    assert speech.misrouted == sum(exp["speech_misroutes"].values())
    assert o.routing["all"].routed == exp["all_routed"]
    assert o.routing["all"].right_municipality == pytest.approx(exp["all_right"], abs=1e-6)
    assert o.transfer["all"].results == exp["all_transfer_results"]
    assert o.transfer["speech"].reached == 8
    assert o.hangups_by_phase == exp["hangups_by_phase"]
    assert o.errors == exp["errors"]
    lat = o.latency["ivr_seconds"]
    assert (lat.count, lat.sum, lat.min, lat.max) == (exp["ivr_count"], exp["ivr_sum"], 0.5, 20.0)
    ts = o.latency["transfer_setup_seconds"]
    assert {"count": ts.count, "sum": ts.sum, "p50": ts.p50, "p95": ts.p95} == exp["transfer_setup"]
    assert o.latency["unique_decision_seconds"].count == 2
    assert o.latency["speech_decision_seconds"].sum == 0.5
    assert o.latency["recogniser_seconds"].sum == 0.3


def test_kpis_from_a_real_sqlite_file_match_hand_computed_figures(db):
    k = stored_kpis(db)
    check_overall(k, EXPECTED)
    assert k.overall.routing["speech"].ground_truth == 0
    assert set(k.by_area_code) == {"0113", "0115", "0118"}
    assert k.by_area_code["0113"].headline == k.overall.headline | {
        "ivr_seconds_p50": 8.0, "ivr_seconds_p95": 20.0}
    assert k.by_area_code["0115"].transfer["all"].results == {"answered": 1, "caller_hangup": 0, "failed": 1}
    assert k.by_area_code["0115"].headline["first_attempt"] is None  # nobody was asked
    assert k.by_municipality["GM0664"].headline["right_municipality"] == pytest.approx(EXPECTED["GM0664_right"])
    assert k.by_municipality["GM0654"].headline["right_municipality"] == pytest.approx(EXPECTED["GM0654_right"])
    assert k.by_municipality["GM0664"].calls == 5  # r1 r2 r5 r7 r9
    assert k.baseline == BASELINE_2020


def test_ground_truth_decides_when_known():
    k = compute_kpis(fixed_records(ground_truth=True))
    exp = EXPECTED | EXPECTED_WITH_TRUTH
    check_overall(k, exp)
    assert k.overall.routing["speech"].ground_truth == 1
    assert k.by_municipality["GM0654"].headline["right_municipality"] == pytest.approx(exp["GM0654_right"])


def test_accumulator_equals_compute_kpis_and_json_keys_are_stable():
    acc = KpiAccumulator()
    for r in fixed_records():
        acc.add(r)
    a, b = acc.result().to_dict(), compute_kpis(fixed_records()).to_dict()
    a.pop("generated_at"), b.pop("generated_at")
    assert a == b
    assert list(a) == ["schema", "baseline", "overall", "by_area_code", "by_municipality", "filters",
                       "misroute_window_s", "unfinished", "by_month"]
    assert list(a["overall"]) == ["calls", "headline", "outcomes", "modes", "recognition", "routing", "transfer",
                                  "hangups_by_phase", "errors", "latency", "failover", "languages", "entries",
                                  "routed_by_language", "routed_by_entry", "second_pass", "suggestions",
                                  "questions", "asked_back"]
    json.dumps(a)  # serialisable as is


def test_empty_input_gives_empty_rates():
    k = compute_kpis([])
    assert k.overall.calls == 0
    assert all(v is None for v in k.overall.headline.values())
    for fmt in ("table", "json", "csv", "html"):
        assert render(k, fmt, names={})


def test_repeat_call_proxy_respects_window_caller_and_area():
    def pair(gap: float, *, caller2="h-x", area2="0113", mun2="GM0654", window=300.0):
        a = rec("a", 0, caller="h-x", duration=50.0)
        b = rec("b", 50.0 + gap, caller=caller2, area=area2, municipality=mun2)
        return compute_kpis([a, b], misroute_window_s=window).overall.routing["all"].misroutes["repeat_call"]

    assert pair(10) == 1
    assert pair(300) == 1
    assert pair(301) == 0  # outside the window
    assert pair(301, window=600) == 1
    assert pair(-10) == 0  # overlapping calls
    assert pair(10, caller2="h-other") == 0
    assert pair(10, area2="0118") == 0
    assert pair(10, mun2="GM0664") == 0  # the same municipality again is not a misroute
    # a misroute is counted once per call, even when several signals apply
    a = rec("a", 0, caller="h-x", duration=50.0, rejected_confirmations=1)
    b = rec("b", 60, caller="h-x", municipality="GM0654")
    m = compute_kpis([a, b]).overall.routing["all"]
    assert (m.misrouted, m.misroutes["rejected_confirmation"], m.misroutes["repeat_call"]) == (1, 1, 0)
    # no caller hash, no proxy
    a, b = rec("a", 0, duration=10.0), rec("b", 20, municipality="GM0654")
    a.caller = b.caller = ""
    assert compute_kpis([a, b]).overall.routing["all"].misrouted == 0


def test_tracker_memory_stays_bounded_over_a_long_stream():
    tracker = MisrouteTracker(window_s=300)
    acc = KpiAccumulator(groups=False)
    for i in range(30_000):
        r = rec(f"c{i}", float(i), caller=f"h{i}", duration=5.0, ivr=3.0)
        tracker.add(r)
        acc.add(r)
    assert len(tracker) < 300 + 4096 + 10
    assert acc.overall.hist["ivr_seconds"].count == 30_000
    assert len(acc.overall.hist["ivr_seconds"].bins) == 1


def test_log_histogram_quantiles_are_within_half_a_percent():
    rng = random.Random(7)
    values = [rng.lognormvariate(2.0, 0.8) for _ in range(5001)]
    h = LogHistogram()
    for v in values:
        h.add(v)
    ordered = sorted(values)
    for q in (0.05, 0.5, 0.9, 0.95, 0.99):
        exact = ordered[math.ceil(q * len(values)) - 1]
        assert h.quantile(q) == pytest.approx(exact, rel=0.006)
    assert h.quantile(1.0) == max(values) and h.quantile(0.0) == min(values)
    assert h.count == len(values) and h.total == pytest.approx(sum(values))
    h.add(float("nan"))
    h.add(-1.0)  # clock skew: counted as zero
    assert h.count == len(values) + 1 and h.min == 0.0


# --- the command -------------------------------------------------------------------------


def run_cli(capsys, *argv) -> str:
    assert main(list(argv)) == 0
    return capsys.readouterr().out


def test_cli_json_equals_compute_kpis(db, capsys):
    data = json.loads(run_cli(capsys, "report", "--db", str(db), "--format", "json"))
    expected = stored_kpis(db).to_dict()
    data.pop("generated_at"), expected.pop("generated_at")
    assert data == expected


def test_cli_filters(db, capsys):
    data = json.loads(run_cli(capsys, "report", "--db", str(db), "--format", "json", "--area-code", "113"))
    assert data["overall"]["calls"] == 9 and list(data["by_area_code"]) == ["0113"]
    assert data["filters"] == {"area_code": "0113"}
    since = str(T0 + 1400)  # d1 onwards
    data = json.loads(run_cli(capsys, "report", "--db", str(db), "--format", "json", "--since", since,
                              "--until", "2023-11-14T22:43:20Z"))  # T0 + 1800: m2 excluded
    assert data["overall"]["calls"] == 4  # d1 d2 u1 m1
    assert data["overall"]["outcomes"]["failed"] == 1


def test_cli_table_csv_html(db, capsys, tmp_path):
    table = run_cli(capsys, "report", "--db", str(db))
    assert "recognised at the first attempt" in table and "66.7%" in table and "85.0%" in table
    assert "0113    Goes" in table
    rows = list(csv.DictReader(io.StringIO(run_cli(capsys, "report", "--db", str(db), "--format", "csv"))))
    assert rows[0]["scope"] == "baseline_2020" and float(rows[0]["first_attempt"]) == 0.85
    overall = rows[1]
    assert overall["scope"] == "overall" and int(overall["calls"]) == 14
    assert float(overall["right_municipality"]) == pytest.approx(4 / 7, abs=1e-6)
    assert {r["key"] for r in rows if r["scope"] == "municipality"} == {"GM0654", "GM0664", "GM0687", "GM0715"}
    out = tmp_path / "report.html"
    assert main(["report", "--db", str(db), "--format", "html", "-o", str(out)]) == 0
    page = out.read_text()
    assert page.count("<svg") == 4 and "Questions until a decision" in page and "Borsele" in page


def test_cli_missing_db(tmp_path, capsys):
    assert main(["report", "--db", str(tmp_path / "none.sqlite")]) == 1


def test_parse_when():
    assert parse_when("1700000000") == 1_700_000_000.0
    assert parse_when("2023-11-14T22:13:20Z") == T0
    assert parse_when("2023-11-14T22:13:20") == T0  # UTC when no zone
    assert parse_when("2h", now=T0) == T0 - 7200
    assert parse_when("7d", now=T0) == T0 - 7 * 86400
    with pytest.raises(Exception):
        parse_when("yesterday")


def test_records_in_progress_are_left_out():
    live = CallRecord(call_id="x", dialled="140113", area_code="0113", mode="speech", recognition_attempts=1)
    k = compute_kpis([live])
    assert (k.overall.calls, k.unfinished) == (0, 1)


def test_kpis_per_month_show_recognition_change_over_time():
    from kpi_records import rec
    nov = [rec(f"n{i}", i * 600.0, attempts=2 if i < 2 else 1) for i in range(4)]  # 2023-11: 2 of 4 at once
    dec = [rec(f"d{i}", 30 * 86400 + i * 600.0, attempts=1) for i in range(3)]  # 2023-12: 3 of 3
    k = compute_kpis(nov + dec)
    assert list(k.by_month) == ["2023-11", "2023-12"]
    assert [g.calls for g in k.by_month.values()] == [4, 3]
    assert k.by_month["2023-11"].headline["first_attempt"] == pytest.approx(0.5)
    assert k.by_month["2023-12"].headline["first_attempt"] == pytest.approx(1.0)
    from ivr.cli.report import render_table
    assert "per month (UTC)" in render_table(k) and "2023-12" in render_table(k)
