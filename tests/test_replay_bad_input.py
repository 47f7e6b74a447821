"""Bad input to ``ivr replay``: every item gets a clear verdict or a clear error, the run
never crashes.

Audio cases (silence, line noise, clipping, DTMF tones, 0.1 s and 30 s utterances, other
sample rates) are generated into ``tmp_path`` and replayed with the engine live calls use
(``IVR_SPEECH_ENGINE``, default from the settings); row and file cases (missing file, not
a WAV, empty cells, a short row) with a scripted recogniser.

A WAV at another rate (or stereo, or 8-bit) is *resampled*, not refused: sox converts it to
8 kHz mono as it does for ``--sip``, and the item's ``note`` says so.

    .venv/bin/python -m pytest -q tests/test_replay_bad_input.py
"""

from __future__ import annotations

import csv
import json
import shutil
import wave
from pathlib import Path

import numpy as np
import pytest

from ivr.config import Settings
from ivr_lab.corpus import write_wav
from ivr.plan_files import load_base_plan
from ivr_lab.replay import main, replay
from ivr_lab.replay_items import read_slin
from ivr_lab.replay_report import report
from ivr.speech.base import ScriptedRecogniser

DEV = Path(__file__).resolve().parent / "data" / "dev"
RATE = 8000
DTMF = {"1": (697, 1209), "2": (697, 1336), "3": (697, 1477), "4": (770, 1209), "5": (770, 1336),
        "6": (770, 1477), "7": (852, 1209), "8": (852, 1336), "9": (852, 1477), "0": (941, 1336),
        "#": (941, 1477)}
BARE = ("bare/0005.wav", "0522", "GM0119")  # Meppel


def dev_audio(path: str) -> np.ndarray:
    return np.frombuffer(read_slin(DEV / path), "<i2").astype(np.float32) / 32768.0


def trimmed(audio: np.ndarray, level: float = 0.02) -> np.ndarray:
    loud = np.flatnonzero(np.abs(audio) > level)
    return audio[loud[0]: loud[-1] + 1] if len(loud) else audio[:0]


def dtmf(digits: str, on_ms: int = 100, off_ms: int = 100) -> np.ndarray:
    """Tones as a phone keypad makes them (-9 dBFS per tone), with gaps."""
    parts = [np.zeros(RATE // 2, np.float32)]
    for d in digits:
        t = np.arange(RATE * on_ms // 1000) / RATE
        low, high = DTMF[d]
        parts += [0.25 * (np.sin(2 * np.pi * low * t) + np.sin(2 * np.pi * high * t)),
                  np.zeros(RATE * off_ms // 1000)]
    parts.append(np.zeros(RATE, np.float32))
    return np.concatenate(parts).astype(np.float32)


def thirty_seconds_of_talk() -> np.ndarray:
    """Names from the dev set, one after another with 60 ms between them: no pause the
    endpointer takes for the end of the answer, for 30 s."""
    rows = [r for r in csv.DictReader((DEV / "manifest.csv").open()) if r["kind"] in ("bare", "former")]
    parts, n = [np.zeros(RATE // 2, np.float32)], 0
    for r in rows:
        clip = trimmed(dev_audio(r["path"]))
        parts += [clip, np.zeros(RATE * 60 // 1000, np.float32)]
        n += len(clip) + RATE * 60 // 1000
        if n >= 30 * RATE:
            break
    assert n >= 30 * RATE
    return np.concatenate(parts)


def write_manifest(path: Path, rows) -> Path:
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "area_code", "expected_cbs_code", "kind"])
        w.writerows(rows)
    return path


@pytest.fixture(scope="module")
def engine():
    from ivr_lab.replay import make_recogniser

    name = Settings().speech_engine
    if name == "none":
        pytest.skip("IVR_SPEECH_ENGINE=none")
    if shutil.which("sox") is None:
        pytest.skip("sox converts the WAVs at other rates")
    plan = load_base_plan()
    return make_recogniser(name, plan), plan


@pytest.fixture(scope="module")
def acoustic(engine, tmp_path_factory):
    """One replay of every generated recording with the live engine: {name: item}."""
    recogniser, plan = engine
    d = tmp_path_factory.mktemp("bad-audio")
    path, code, cbs = BARE
    name = dev_audio(path)
    rng = np.random.default_rng(1)
    write_wav(d / "name.wav", name)
    write_wav(d / "silence.wav", np.zeros(6 * RATE, np.float32))
    write_wav(d / "line_noise.wav", (rng.standard_normal(4 * RATE) * 0.002).astype(np.float32))
    write_wav(d / "clipped.wav", np.clip(name * 12.0, -1.0, 1.0))  # far past full scale
    write_wav(d / "dtmf.wav", dtmf("0113#"))
    short = trimmed(name)
    mid = len(short) // 2
    write_wav(d / "short.wav", np.concatenate([np.zeros(RATE // 2), short[mid - 400: mid + 400],
                                               np.zeros(RATE)]).astype(np.float32))  # 0.1 s of the name
    write_wav(d / "long.wav", thirty_seconds_of_talk())
    resampled = np.interp(np.arange(2 * len(name)) / 2, np.arange(len(name)), name).astype(np.float32)
    write_wav(d / "wide.wav", resampled, rate=16000)
    stereo = np.clip(np.repeat(resampled[:, None], 2, axis=1) * 32768, -32768, 32767).astype("<i2")
    with wave.open(str(d / "stereo.wav"), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(stereo.tobytes())
    names = ["name", "silence", "line_noise", "clipped", "dtmf", "short", "long", "wide", "stereo"]
    manifest = write_manifest(d / "m.csv", [(f"{n}.wav", code, cbs, n) for n in names])
    items = replay(manifest, recogniser, plan)
    rep = report(items)
    assert rep["metrics"]["errors"] == 0, [(i.path, i.error) for i in items if i.error]
    return {i.kind: i for i in items}


@pytest.mark.speech
@pytest.mark.parametrize("kind", ["silence", "line_noise"])
def test_nothing_said_is_no_input(acoustic, kind):
    item = acoustic[kind]
    assert (item.verdict, item.action, item.listen) == ("no_input", "no_input", "no_input"), item
    assert not item.decided_cbs_code and not item.error


@pytest.mark.speech
def test_thirty_seconds_of_talk_is_capped_not_a_crash(acoustic):
    item = acoustic["long"]
    assert item.listen == "too_long" and not item.error, item
    assert item.verdict in ("accept", "confirm", "choose", "reject"), item
    assert item.speech_start_ms is not None and item.speech_end_ms - item.speech_start_ms <= 6000


@pytest.mark.speech
def test_dtmf_tones_in_the_audio_are_no_municipality(acoustic):
    item = acoustic["dtmf"]
    assert not item.error and item.verdict != "accept", item


@pytest.mark.speech
def test_a_tenth_of_a_second_is_not_an_answer(acoustic):
    item = acoustic["short"]
    assert not item.error and item.verdict != "accept", item


@pytest.mark.speech
def test_clipped_speech_is_heard_and_never_misrouted(acoustic):
    item = acoustic["clipped"]
    assert item.listen == "heard" and not item.error, item
    assert not (item.verdict == "accept" and item.decided_cbs_code != item.expected_cbs_code), item


@pytest.mark.speech
@pytest.mark.parametrize("kind, shape", [("wide", "16000 Hz, 1 channel"), ("stereo", "16000 Hz, 2 channel")])
def test_other_rates_are_resampled_and_decided_as_the_8k_original(acoustic, kind, shape):
    item, original = acoustic[kind], acoustic["name"]
    assert not original.note
    assert item.note.startswith(f"converted from {shape}"), item
    assert (item.listen, item.verdict, item.decided_cbs_code) == \
        (original.listen, original.verdict, original.decided_cbs_code), (item, original)


def test_bad_files_and_rows_are_errors_per_item_and_the_run_completes(tmp_path: Path, capsys):
    """Through the command line (a scripted engine): exit 0, every bad row named."""
    voiced = (0.3 * np.sin(2 * np.pi * 180 * np.arange(RATE) / RATE)).astype(np.float32)
    write_wav(tmp_path / "ok.wav", np.concatenate([np.zeros(RATE // 2), voiced, np.zeros(RATE)]))
    (tmp_path / "notes.txt").write_text("not audio at all\n")
    write_wav(tmp_path / "empty.wav", np.zeros(0, np.float32))
    (tmp_path / "float.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt \x10\x00\x00\x00\x03\x00\x01\x00"
                                         b"\x40\x1f\x00\x00\x00\x7d\x00\x00\x04\x00\x20\x00data\x00\x00\x00\x00")
    (tmp_path / "folder.wav").mkdir()
    lines = ["path,area_code,expected_cbs_code,kind",
             "ok.wav,0113,GM0664,ok",
             "missing.wav,0113,GM0664,missing",
             "notes.txt,0113,GM0664,not_wav",
             "empty.wav,0113,GM0664,empty",
             "float.wav,0113,GM0664,float",
             "folder.wav,0113,GM0664,folder",
             ",0113,GM0664,no_path",
             "ok.wav,,GM0664,no_area_code",
             "ok.wav,0113,,no_expected",
             "ok.wav,0111,GM1676,direct",  # one municipality: nothing to recognise
             "ok.wav,0113",  # a short row: the remaining cells are missing
             ]
    (tmp_path / "m.csv").write_text("\n".join(lines) + "\n")
    import ivr_lab.replay as replay_mod

    scripted = ScriptedRecogniser(nbest=(("Goes", 0.95),))
    original = replay_mod.make_recogniser
    replay_mod.make_recogniser = lambda engine, plan: scripted
    try:
        rc = main(["replay", str(tmp_path / "m.csv"), "--json", str(tmp_path / "out.json"), "--quiet"])
    finally:
        replay_mod.make_recogniser = original
    assert rc == 0
    data = json.loads((tmp_path / "out.json").read_text())
    items = data["items"]
    assert len(items) == len(lines) - 1
    errors = {i["kind"] or i["path"]: i["error"] for i in items if i["verdict"] == "error"}
    assert items[0]["verdict"] == "accept" and items[0]["listen"] == "heard"
    expected = {
        "missing": "missing file", "not_wav": "not a PCM WAV file", "empty": "empty audio",
        "float": "not a PCM WAV file", "folder": "missing file", "no_path": "row has no path",
        "no_area_code": "row has no area_code", "no_expected": "row has no expected_cbs_code",
        "direct": "routes directly", "ok.wav": "row has no expected_cbs_code",
    }
    assert set(errors) == set(expected), errors
    for kind, text in expected.items():
        assert text in errors[kind], (kind, errors[kind])
    assert data["metrics"]["errors"] == len(expected) and data["metrics"]["n"] == 1
    out = capsys.readouterr().out
    assert "missing file" in out and "row has no path" in out  # the text report names them too
