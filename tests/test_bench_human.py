"""``ivr bench human`` (``ivr_lab/bench_human.py``, ``ivr_lab/human_speech.py``): the split,
the tasks, the calibration table, the logistic fit, and one real run through the CLI.

Real data: the Dutch voice acting of Fish Fillets NG (Debian ``fillets-ng-data(-nl)``),
downloaded once into ``~/.cache/ivr14/human`` (``IVR_HUMAN_CACHE``); the module is skipped
when it cannot be had (no apt, no network). The CLI run uses the fusion engine (Whisper
weights, espeak-ng references).

    .venv/bin/python -m pytest -q tests/test_bench_human.py
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from itertools import combinations
from pathlib import Path

import numpy as np
import pytest
from rapidfuzz import fuzz

if shutil.which("sox") is None:
    pytest.skip("the human bench converts clips with sox: apt-get install -y sox", allow_module_level=True)

from ivr_lab.bench_human import (HOMOPHONE_RATIO, sound_key, BenchItem, BenchSettings, _names_a_candidate, fresh_oov_tasks,  # noqa: E402
                                 build_tasks, calibration, fit_logistic, spoken_text, summarise)
from ivr_lab.human_speech import CorpusError, ensure_unpacked, load_clips, split_of  # noqa: E402
from ivr.core.words import normalise, phonetic  # noqa: E402
from ivr.plan_files import load_base_plan  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def clips():
    try:
        return load_clips(ensure_unpacked())
    except CorpusError as exc:
        pytest.skip(f"human corpus not available: {exc}")


@pytest.fixture(scope="module")
def dev(clips):
    return build_tasks(BenchSettings(split="dev"))


@pytest.fixture(scope="module")
def test_split(clips):
    return build_tasks(BenchSettings(split="test"))


def sound(name: str) -> str:
    """The bench's phonetic key of a phrase (what its homophone rule compares): a final
    "auw"/"ouw" sounds as "au"/"ou"."""
    return re.sub(r"Aw\b", "A", phonetic(normalise(name))).replace(" ", "")


def test_final_w_homophones_are_one_sound():
    # "Auw" and "Au" were both candidates of one dev question: the same word, said twice
    assert sound("Auw") == sound("Au") == sound_key(normalise("Au"))
    assert sound("Auwerk") != sound("Auerk")  # only at a word's end


# --- the split ----------------------------------------------------------------------------------

def test_split_of_is_stable_across_processes_and_pinned(clips):
    levels = sorted({c.level for c in clips})
    assert len(levels) >= 40
    here = {lv: split_of(lv) for lv in levels}
    assert set(here.values()) == {"dev", "test"}
    # another interpreter with another string-hash seed: the same split (no hash(), no randomness)
    code = ("import json, sys; from ivr_lab.human_speech import split_of; "
            "print(json.dumps({lv: split_of(lv) for lv in json.loads(sys.stdin.read())}))")
    out = subprocess.run([sys.executable, "-c", code], input=json.dumps(levels), capture_output=True, text=True,
                         check=True, cwd=REPO, env={**os.environ, "PYTHONHASHSEED": "12345"}).stdout
    assert json.loads(out) == here
    # pinned: changing the split would silently put tuned-on levels into the test split
    assert [split_of(lv) for lv in ("airplane", "alibaba", "atlantis", "aztec", "barrel", "bathroom")] == \
        ["dev", "test", "dev", "test", "dev", "dev"]


def test_every_level_lands_in_exactly_one_split(clips):
    by_split: dict[str, set[str]] = {"dev": set(), "test": set()}
    for c in clips:
        assert c.split in by_split, c
        by_split[c.split].add(c.level)
    assert not by_split["dev"] & by_split["test"], "a level on both sides"
    levels = {c.level for c in clips}
    assert by_split["dev"] | by_split["test"] == levels
    # about half each, by level and by clip
    assert 0.3 <= len(by_split["dev"]) / len(levels) <= 0.7
    assert 0.3 <= sum(c.split == "dev" for c in clips) / len(clips) <= 0.7


def test_tasks_stay_on_their_split(clips, dev, test_split):
    level_of = {c.source: c.level for c in clips}
    for split, (_, tasks) in (("dev", dev), ("test", test_split)):
        assert tasks
        assert all(split_of(level_of[t.clip.source]) == split for t in tasks), split


# --- closed-set tasks ---------------------------------------------------------------------------------

def test_closed_tasks_hold_their_answer_among_candidates(dev):
    plan, tasks = dev
    closed = [t for t in tasks if t.kind == "closed"]
    assert len(closed) >= 50
    settings = BenchSettings(split="dev")
    for t in closed:
        area = plan.area_codes[t.area_code]
        assert t.expected in area.municipalities, t
        assert len(area.municipalities) == settings.candidates, t
        assert len(set(area.municipalities)) == len(area.municipalities)
        assert normalise(plan.municipalities[t.expected].name) == normalise(spoken_text(t.clip.text))
        assert 1 <= len(spoken_text(t.clip.text).split()) <= settings.max_words


def test_fresh_oov_tasks_never_replay_a_clip_the_seed_run_played(dev):
    _, played = dev  # BenchSettings(split="dev"), seed 1
    _, fresh = fresh_oov_tasks(BenchSettings(split="dev"), (2, 3))
    sources = [t.clip.source for t in fresh]
    assert len(sources) > 50 and all(t.kind == "oov" and not t.expected for t in fresh)
    assert len(sources) == len(set(sources)), "a clip twice"
    assert not {t.clip.source for t in played if t.kind == "oov"} & set(sources)
    assert {t.clip.split for t in fresh} == {"dev"}


@pytest.mark.parametrize("which", ["dev", "test_split"])
def test_no_two_candidates_are_homophones(request, which):
    plan, tasks = request.getfixturevalue(which)
    for t in tasks:
        if t.kind != "closed":
            continue
        names = [plan.municipalities[c].name for c in plan.area_codes[t.area_code].municipalities]
        for a, b in combinations(names, 2):
            assert fuzz.ratio(sound(a), sound(b)) < HOMOPHONE_RATIO, f"{t.area_code}: {a!r} / {b!r} sound the same"


def test_each_closed_task_has_its_nearest_sound_alike_as_distractor(dev):
    """The bench's sound-alike distractors: the phrase of the split that sounds most like the
    clip's own (and is no homophone of it, nor one of its words) is among the candidates."""
    plan, tasks = dev
    closed = [t for t in tasks if t.kind == "closed"]
    phrases = {normalise(plan.municipalities[c].name) for t in closed for c in plan.area_codes[t.area_code].municipalities}
    for t in closed:
        own = normalise(plan.municipalities[t.expected].name)
        eligible = [k for k in phrases if k != own and k not in own.split() and own not in k.split()
                    and fuzz.ratio(sound(own), sound(k)) < HOMOPHONE_RATIO]
        nearest = max(fuzz.ratio(sound(own), sound(k)) for k in eligible)
        distractors = [normalise(plan.municipalities[c].name) for c in plan.area_codes[t.area_code].municipalities
                       if c != t.expected]
        best = max(fuzz.ratio(sound(own), sound(k)) for k in distractors)
        assert best == nearest, f"{own!r}: closest distractor {best}, closest phrase of the split {nearest}"
        assert best > 0


# --- out-of-vocabulary tasks ----------------------------------------------------------------------------

def test_oov_tasks_name_no_candidate_of_a_real_area_code(dev):
    plan, tasks = dev
    base = load_base_plan()
    oov = [t for t in tasks if t.kind == "oov"]
    assert len(oov) == BenchSettings().oov_items
    assert len({t.clip.clip_id for t in oov}) == len(oov)
    for t in oov:
        assert t.expected == ""
        assert t.area_code in base.area_codes and base.area_codes[t.area_code].shared, t.area_code
        assert plan.area_codes[t.area_code].municipalities == base.area_codes[t.area_code].municipalities
        assert not _names_a_candidate(t.clip.text, base, t.area_code), (t.clip.text, t.area_code)


def test_names_a_candidate_sees_names_aliases_and_places():
    base = load_base_plan()
    goes = next(m for m in base.candidates("0113") if m.name == "Goes")
    assert _names_a_candidate("Ik wil naar Goes, alstublieft", base, "0113")
    assert _names_a_candidate("GOES!", base, "0113")
    if goes.places:
        assert _names_a_candidate(f"ik woon in {goes.places[0]}", base, "0113")
    assert not _names_a_candidate("Wat een onzin", base, "0113")
    assert not _names_a_candidate("Goes", base, "079")


# --- calibration table and the logistic fit ----------------------------------------------------------------

def _item(p: float, expected: str = "GM1", decided: str = "GM1", verdict: str = "accept", kind: str = "closed"):
    return BenchItem(path="x.wav", area_code="H0000", expected_cbs_code=expected, kind=kind,
                     decided_cbs_code=decided, verdict=verdict, p_right=p)


def test_calibration_bins_count_every_scored_item_once():
    items = [_item(p) for p in (0.0, 0.1, 0.4999, 0.5, 0.8, 0.9, 0.95, 0.99, 0.995, 0.999, 1.0)]
    items += [_item(0.97, decided="GM2", verdict="confirm"),  # wrong
              _item(0.3, expected="", decided="GM7", verdict="accept", kind="oov"),  # OOV: never right
              _item(-1.0),  # the engine gave no probability: not scored
              _item(0.5, verdict="error")]  # an error: not scored
    rows = calibration(items)
    scored = [i for i in items if i.verdict != "error" and i.p_right >= 0]
    assert sum(r["n"] for r in rows) == len(scored) == 13
    # bins are contiguous, half-open, and cover [0, 1]
    assert rows[0]["p_from"] == 0.0 and rows[-1]["p_to"] == 1.0
    assert all(a["p_to"] == b["p_from"] for a, b in zip(rows, rows[1:]))
    for i in scored:
        assert sum(1 for r in rows if r["p_from"] <= i.p_right < r["p_to"] or (r["p_to"] == 1.0 == i.p_right)) == 1
    by_from = {r["p_from"]: r for r in rows}
    assert by_from[0.0]["n"] == 4 and by_from[0.0]["accuracy"] == 0.75  # the OOV item counts as wrong
    assert by_from[0.95]["n"] == 2 and by_from[0.95]["accuracy"] == 0.5
    assert by_from[0.995]["n"] == 3 and by_from[0.995]["accepted"] == 3  # 1.0 lands in the last bin
    assert all(r["accuracy"] is None for r in rows if r["n"] == 0)


def test_summary_separates_closed_and_oov():
    items = [_item(0.999), _item(0.2, decided="GM2", verdict="confirm"),
             _item(0.05, expected="", decided="", verdict="reject", kind="oov"),
             _item(0.6, expected="", decided="GM3", verdict="confirm", kind="oov")]
    s = summarise(items)
    assert s["closed_set"]["n"] == 2 and s["out_of_vocabulary"]["n"] == 2
    assert s["out_of_vocabulary"]["rejected"] == 0.5 and s["out_of_vocabulary"]["confirmed"] == 0.5
    assert sum(r["n"] for r in s["calibration"]) == 4


def test_fit_logistic_recovers_known_weights():
    rng = np.random.default_rng(0)
    true_w, true_b = np.array([1.5, -2.0, 0.5]), 0.3
    x = rng.normal(size=(40_000, 3)) * np.array([1.0, 0.5, 2.0])
    y = rng.random(len(x)) < 1 / (1 + np.exp(-(x @ true_w + true_b)))
    w = fit_logistic(x, y.astype(int))
    assert w.shape == (4,)
    assert np.allclose(w[:3], true_w, atol=0.1), w
    assert abs(w[3] - true_b) < 0.1, w
    # a feature that carries nothing gets (close to) no weight
    noise = np.c_[x, rng.normal(size=len(x))]
    assert abs(fit_logistic(noise, y.astype(int))[3]) < 0.05


# --- one real run through the command line --------------------------------------------------------------

@pytest.mark.speech
def test_cli_run_on_dev_writes_figures_and_per_item_verdicts(clips, tmp_path):
    pytest.importorskip("faster_whisper")
    if shutil.which("espeak-ng") is None:
        pytest.skip("the fusion engine needs espeak-ng")
    out = tmp_path / "bench.json"
    run = subprocess.run([sys.executable, "-m", "ivr.cli", "bench", "human", "--split", "dev", "--limit", "8",
                          "--oov", "4", "--engine", "fusion", "--json", str(out)],
                         capture_output=True, text=True, cwd=REPO, timeout=900)
    assert run.returncode == 0, run.stderr[-2000:]
    text = run.stdout
    assert "human speech bench, split dev (engine fusion" in text
    assert "closed set  n=8 errors=0" in text, text
    assert "out of vocabulary  n=4" in text, text
    assert "first attempt right" in text and "calibration (P(best is right) bin" in text
    report = json.loads(out.read_text())
    assert report["engine"] == "fusion" and report["settings"]["split"] == "dev"
    items = report["items"]
    assert [i["kind"] for i in items] == ["closed"] * 8 + ["oov"] * 4
    verdicts = {"accept", "confirm", "choose", "reject", "no_input"}
    for i in items:
        assert i["verdict"] in verdicts, i
        assert i["error"] == ""
        # the fusion engine gives its P(right) whenever it was asked (not when nobody spoke)
        assert 0.0 <= i["p_right"] <= 1.0 or (i["verdict"] == "no_input" and i["p_right"] == -1.0), i
        assert Path(i["path"]).is_file()
        if i["kind"] == "oov":
            assert i["expected_cbs_code"] == ""
        else:
            assert i["expected_cbs_code"].startswith("GM9")
    # what the text says is what the items say
    closed = [i for i in items if i["kind"] == "closed"]
    assert report["closed_set"]["n"] == 8
    top1 = sum(i["decided_cbs_code"] == i["expected_cbs_code"] for i in closed) / 8
    assert report["closed_set"]["top1_accuracy"] == pytest.approx(top1, abs=1e-3)
    assert f"top-1 {top1:.1%}" in text
    assert sum(r["n"] for r in report["calibration"]) == sum(i["p_right"] >= 0 for i in items)
    oov_accepted = sum(i["verdict"] == "accept" for i in items if i["kind"] == "oov")
    assert report["out_of_vocabulary"]["accepted"] == pytest.approx(oov_accepted / 4)
