"""Grammar generation: one JSON phrase list per shared area code, committed and current."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ivr.speech.grammar import UNK, grammar_for, grammar_words, load_grammar, write_grammars
from ivr.core.words import normalise
from ivr.plan_files import load_base_plan

REPO_GRAMMARS = Path(__file__).resolve().parent.parent / "grammars"


@pytest.fixture(scope="module")
def plan():
    return load_base_plan()


def test_grammar_content(plan):
    phrases = grammar_for(plan, "023")
    assert phrases[-1] == UNK
    for want in ["haarlem", "haarlemmermeer", "heemstede", "ijmuiden", "ja", "nee", "bellen", "spaarndam"]:
        assert want in phrases, want
    assert len(phrases) == len(set(phrases))
    assert all(p == normalise(p) for p in phrases if p != UNK)
    assert "leeuwarden" in grammar_for(plan, "058") and "ljouwert" in grammar_for(plan, "058")
    assert "haarlem" in grammar_words(phrases)


def test_write_and_load(plan, tmp_path):
    paths = write_grammars(plan, tmp_path)
    assert len(paths) == sum(1 for a in plan.area_codes.values() if a.shared) == 126
    assert load_grammar("0113", tmp_path) == grammar_for(plan, "0113")
    json.loads((tmp_path / "020.json").read_text())
    (tmp_path / "0999.json").write_text("[]")  # stale: removed on the next build
    write_grammars(plan, tmp_path)
    assert not (tmp_path / "0999.json").exists()


def test_committed_grammars_are_current(plan, tmp_path):
    write_grammars(plan, tmp_path)
    fresh = {p.name: p.read_text() for p in tmp_path.glob("*.json")}
    committed = {p.name: p.read_text() for p in REPO_GRAMMARS.glob("*.json")}
    assert fresh == committed, "run: ivr grammars build"


def test_cli_build(tmp_path, capsys):
    from ivr.cli import main

    assert main(["grammars", "build", "--out", str(tmp_path)]) == 0
    assert "wrote 126 grammars" in capsys.readouterr().out
    assert (tmp_path / "0113.json").exists()
