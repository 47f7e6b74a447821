"""ivr replay: metrics on a fixed result list, and bad rows give errors, not crashes."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from ivr_lab.corpus import write_wav
from ivr.plan_files import load_base_plan
from ivr_lab.replay import main, replay
from ivr_lab.replay_items import ItemResult
from ivr_lab.replay_report import compute_metrics, confusion, report
from ivr.speech.base import ScriptedRecogniser


def _r(exp, dec, verdict, latency, kind="bare"):
    return ItemResult(path="x.wav", area_code="0113", expected_cbs_code=exp, kind=kind,
                      decided_cbs_code=dec, verdict=verdict, latency_ms=latency)


def test_metrics_match_hand_computed_values():
    items = [
        _r("GM0664", "GM0664", "accept", 100),  # right, first attempt
        _r("GM0664", "GM0703", "accept", 200),  # misroute
        _r("GM0678", "GM0678", "confirm", 300),  # right, first attempt
        _r("GM0678", "GM0654", "confirm", 400),  # wrong but asked: no misroute
        _r("GM0654", "GM0654", "choose", 500),  # choose: not first-attempt
        _r("GM0654", "", "reject", 600),
        _r("GM0654", "", "no_input", 700),
        _r("GM0654", "", "error", 0),  # errors are excluded from the rates
    ]
    m = compute_metrics(items)
    assert m["n"] == 7 and m["errors"] == 1
    assert m["accuracy_first_attempt"] == round(2 / 7, 4)
    assert m["misroutes"] == 1
    assert m["confirm_rate"] == round(2 / 7, 4)
    assert m["choose_rate"] == round(1 / 7, 4)
    assert m["reject_rate"] == round(2 / 7, 4)
    assert m["top1_accuracy"] == round(3 / 7, 4)
    assert m["latency_ms_p50"] == 400.0
    assert m["latency_ms_p95"] == pytest.approx(float(np.percentile([100, 200, 300, 400, 500, 600, 700], 95)), abs=0.1)
    table = confusion(items)
    assert table["GM0664"] == {"GM0664": 1, "GM0703": 1}
    assert table["GM0654"] == {"GM0654": 1, "reject": 1, "no_input": 1}


def _speechlike(seconds=1.0, rate=8000):
    t = np.arange(int(seconds * rate)) / rate
    burst = 0.3 * np.sin(2 * np.pi * 220 * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))
    return np.concatenate([np.zeros(rate // 2), burst, np.zeros(rate)]).astype(np.float32)


def test_replay_runs_rows_and_reports_bad_ones(tmp_path: Path):
    write_wav(tmp_path / "ok.wav", _speechlike())
    write_wav(tmp_path / "silent.wav", np.zeros(8000 * 6, np.float32))
    (tmp_path / "garbage.wav").write_bytes(b"this is not a wav file at all")
    write_wav(tmp_path / "wide.wav", _speechlike(), rate=16000)
    rows = [
        ("ok.wav", "0113", "GM0664", "bare"),
        ("ok.wav", "0113", "GM0678", "bare"),  # recogniser says Goes: misroute
        ("silent.wav", "0113", "GM0664", "bare"),  # nobody speaks: no input
        ("missing.wav", "0113", "GM0664", "bare"),
        ("garbage.wav", "0113", "GM0664", "bare"),
        ("wide.wav", "0113", "GM0664", "bare"),
        ("ok.wav", "9999", "GM0664", "bare"),  # unknown area code
        ("ok.wav", "0113", "GM9999", "bare"),  # no such municipality
        ("ok.wav", "0113", "GM0363", "bare"),  # Amsterdam, outside 0113: scored (Goes is accepted: a misroute)
    ]
    manifest = tmp_path / "manifest.csv"
    with manifest.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "area_code", "expected_cbs_code", "kind"])
        w.writerows(rows)
    rec = ScriptedRecogniser(nbest=(("Goes", 0.95),))
    items = replay(manifest, rec, load_base_plan())
    assert [i.verdict for i in items[:3]] == ["accept", "accept", "no_input"]
    assert items[0].decided_cbs_code == "GM0664" and items[0].action == "transfer"
    assert items[5].verdict == "accept"  # a 16 kHz WAV is converted, not refused
    errors = items[3:5] + items[6:8]
    assert all(i.verdict == "error" and i.error for i in errors)
    assert "missing file" in errors[0].error
    assert "not a PCM WAV" in errors[1].error
    assert "unknown area code" in errors[2].error
    assert "unknown municipality" in errors[3].error
    assert items[8].outside_code and items[8].verdict == "accept" and items[8].decided_cbs_code == "GM0664"
    rep = report(items)
    assert rep["metrics"]["n"] == 5 and rep["metrics"]["errors"] == 4 and rep["metrics"]["misroutes"] == 2
    assert rep["outside_code"]["n"] == 1 and rep["outside_code"]["misroutes"] == 1


def test_replay_scores_a_name_outside_the_area_code_through_the_national_second_pass(tmp_path: Path):
    write_wav(tmp_path / "ok.wav", _speechlike())
    (tmp_path / "m.csv").write_text("path,area_code,expected_cbs_code\nok.wav,0113,GM0344\nok.wav,0113,GM0664\n")
    said_utrecht = ScriptedRecogniser(nbest=(("Utrecht", 0.95),))
    items = replay(tmp_path / "m.csv", said_utrecht, load_base_plan())
    right, wrong = items
    assert (right.outside_code, right.verdict, right.decided_cbs_code, right.second_pass) == \
        (True, "confirm", "GM0344", "outside")  # "Utrecht valt niet onder 14 0113 ... klopt dat?"
    assert (wrong.outside_code, wrong.verdict, wrong.decided_cbs_code) == (False, "confirm", "GM0344")
    assert right.national_ms > 0 and right.latency_ms >= right.national_ms
    assert len(said_utrecht.sessions) == 4  # two items, each heard twice: its code, then every municipality
    rep = report(items)
    assert rep["outside_code"]["accuracy_first_attempt"] == 1.0 and rep["outside_code"]["misroutes"] == 0
    assert rep["in_code"]["accuracy_first_attempt"] == 0.0 and rep["second_pass"] == {"outside": 2}
    before = replay(tmp_path / "m.csv", ScriptedRecogniser(nbest=(("Utrecht", 0.95),)), load_base_plan(),
                    second_pass=False)
    assert before[0].decided_cbs_code != "GM0344" and not before[0].second_pass


def test_cli_writes_json(tmp_path: Path, monkeypatch, capsys):
    write_wav(tmp_path / "ok.wav", _speechlike())
    (tmp_path / "m.csv").write_text("path,area_code,expected_cbs_code\nok.wav,0113,GM0664\n")
    import ivr_lab.replay as replay_mod

    monkeypatch.setattr(replay_mod, "make_recogniser", lambda engine, plan: ScriptedRecogniser(nbest=(("Goes", 0.9),)))
    assert main(["replay", str(tmp_path / "m.csv"), "--json", str(tmp_path / "out.json"), "--quiet"]) == 0
    data = json.loads((tmp_path / "out.json").read_text())
    assert data["metrics"]["accuracy_first_attempt"] == 1.0
    assert data["items"][0]["decided_cbs_code"] == "GM0664"
    assert "accuracy_first_attempt" in capsys.readouterr().out


def test_missing_columns_is_a_clear_error(tmp_path: Path, capsys):
    (tmp_path / "m.csv").write_text("file,code\nx.wav,0113\n")
    assert main(["replay", str(tmp_path / "m.csv"), "--quiet"]) == 2
    assert "lacks column" in capsys.readouterr().err
