"""Replay is what a call gets: the same dev utterances replayed offline (``ivr replay``) and
as real SIP calls through Asterisk (``ivr replay --sip``) give the same verdicts.

Both sides listen with :mod:`ivr.speech.listening` (endpointer, 300 ms pre-roll, session)
and use the engine live calls use (``IVR_SPEECH_ENGINE``, default from the settings).
The WAVs are G.711 mu-law quantised before either side hears them, so the phone line's
codec is not a difference between the two: what remains is how each side listens.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from e2e import REPO, SALT, start_controller, wait_until_speech_ready

from ivr.config import Settings
from ivr_lab.corpus import write_wav
from ivr_lab.pcap import ulaw_encode
from ivr_lab.replay_items import read_slin

pytestmark = [pytest.mark.asterisk, pytest.mark.speech]

DEV = Path(__file__).resolve().parent / "data" / "dev"
ROWS = ["bare/0005.wav", "bare/0009.wav", "phrase/0050.wav", "village/0101.wav", "former/0151.wav",
        "noisy/0201.wav"]


def engine_name() -> str:
    name = Settings().speech_engine
    if name == "none":
        pytest.skip("IVR_SPEECH_ENGINE=none: no engine to compare")
    return name


def ulaw_decode(codes: bytes) -> np.ndarray:
    """G.711 mu-law -> 16-bit linear (the reference ulaw2linear)."""
    u = ~np.frombuffer(codes, np.uint8).astype(np.int32) & 0xFF
    t = (((u & 0x0F) << 3) + 0x84) << ((u & 0x70) >> 4)
    return np.where(u & 0x80, 0x84 - t, t - 0x84).astype(np.int16)


def as_on_the_line(slin: bytes) -> np.ndarray:
    """What the controller receives of this audio over a PCMU call (float, for write_wav)."""
    pcm = np.frombuffer(slin, "<i2")
    line = ulaw_decode(ulaw_encode(pcm))
    assert np.array_equal(ulaw_decode(ulaw_encode(line)), line)  # quantised once: the call changes nothing
    return line.astype(np.float32) / 32768.0


@pytest.fixture(scope="module")
def controller(asterisk, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("replay-live-controller")
    controller = start_controller(workdir, salt=SALT, speech_engine=engine_name())
    wait_until_speech_ready(controller)
    yield controller
    controller.stop()


def _replay(args: list[str], env: dict[str, str], out: Path) -> dict:
    proc = subprocess.run([sys.executable, "-m", "ivr.cli", "replay", *args, "--json", str(out), "--quiet"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return {i["path"]: i for i in json.loads(out.read_text())["items"]}


def test_dev_utterances_get_the_same_verdicts_offline_and_over_sip(controller, tmp_path):
    dev = {r["path"]: r for r in csv.DictReader((DEV / "manifest.csv").open(encoding="utf-8"))}
    with open(tmp_path / "manifest.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "area_code", "expected_cbs_code", "kind"])
        for path in ROWS:
            r = dev[path]
            name = path.replace("/", "_")
            write_wav(tmp_path / name, as_on_the_line(read_slin(DEV / path)))
            w.writerow([name, r["area_code"], r["expected_cbs_code"], r["kind"]])
        write_wav(tmp_path / "silence.wav", np.zeros(3 * 8000, np.float32))
        w.writerow(["silence.wav", "0113", "GM0664", "silence"])
    env = {**os.environ, "IVR_CALLER_SALT": SALT}
    engine = engine_name()
    offline = _replay([str(tmp_path / "manifest.csv"), "--engine", engine], env, tmp_path / "offline.json")
    # one call at a time, as the e2e speech tests: the engine batches concurrent utterances;
    # the caller holds on 12 s after the audio, longer than the greeting (~9 s) plus the 5 s
    # no-input timeout, so the silent call ends its first question before hanging up
    sip = _replay(["--sip", str(tmp_path / "manifest.csv"), "--db", str(controller.db_path),
                   "--sip-concurrency", "1", "--sip-hold", "12"], env, tmp_path / "sip.json")

    def verdict(item: dict) -> tuple[str, str]:
        return item["action"], "" if item["action"] == "no_input" else item["decided_cbs_code"]

    assert set(offline) == set(sip)
    for path in offline:
        assert not offline[path]["error"] and not sip[path]["error"], (offline[path], sip[path])
    differ = {p: (verdict(offline[p]), verdict(sip[p])) for p in offline if verdict(offline[p]) != verdict(sip[p])}
    assert not differ, f"offline vs SIP verdicts differ ({engine}): {differ}"
    assert verdict(offline["silence.wav"]) == ("no_input", "")
    assert sum(1 for p in offline if offline[p]["action"] != "no_input") == len(ROWS)
