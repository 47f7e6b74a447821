"""ivr corpus synth: a small run gives 8 kHz telephone-band WAVs and a manifest."""

from __future__ import annotations

import csv
import shutil
import wave

import pytest

from ivr_lab.corpus import KINDS, plan_items, synth
from ivr.plan_files import load_base_plan

pytestmark = pytest.mark.skipif(not (shutil.which("espeak-ng") and shutil.which("sox")),
                                reason="needs espeak-ng and sox")


def test_small_synth_run(tmp_path):
    manifest = synth(tmp_path, seed=5, per_kind=1, progress=False)
    rows = list(csv.DictReader(manifest.open()))
    assert list(rows[0]) == ["path", "area_code", "expected_cbs_code", "kind", "text", "voice"]
    assert [r["kind"] for r in rows] == list(KINDS)
    plan = load_base_plan()
    for r in rows:
        assert r["expected_cbs_code"] in plan.area_codes[r["area_code"]].municipalities
        with wave.open(str(tmp_path / r["path"])) as w:
            assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (8000, 1, 2)
            assert 0.8 < w.getnframes() / 8000 < 8


def test_dev_and_test_sets_do_not_share_voices_or_phrases():
    plan = load_base_plan()
    dev = plan_items(plan, seed=1, per_kind=20, voices="dev")
    test = plan_items(plan, seed=2, per_kind=20, voices="test")
    assert not {i.voice for i in dev} & {i.voice for i in test}
    assert plan_items(plan, seed=1, per_kind=20) == dev  # deterministic
