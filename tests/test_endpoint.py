"""The energy endpointer, fed synthetic telephone audio frame by frame."""

from __future__ import annotations

import numpy as np
import pytest

from ivr.speech.base import FRAME_BYTES, SAMPLE_RATE
from ivr.speech.endpoint import EndpointConfig, EndpointEvent, Endpointer, frame_dbfs

RNG = np.random.default_rng(7)


def silence(ms: int, noise_dbfs: float = -65.0) -> np.ndarray:
    n = SAMPLE_RATE * ms // 1000
    amp = 32768 * 10 ** (noise_dbfs / 20)
    return RNG.normal(0, amp, n)


def speech(ms: int, level_dbfs: float = -20.0) -> np.ndarray:
    """A voiced-ish signal: harmonics of 140 Hz with a syllable envelope."""
    n = SAMPLE_RATE * ms // 1000
    t = np.arange(n) / SAMPLE_RATE
    sig = sum(np.sin(2 * np.pi * 140 * k * t) / k for k in range(1, 8))
    env = 0.6 + 0.4 * np.abs(np.sin(2 * np.pi * 4 * t))  # ~4 syllables/s, never silent
    sig = sig * env
    sig = sig / np.sqrt(np.mean(sig**2)) * 32768 * 10 ** (level_dbfs / 20)
    return sig


def pcm(*parts: np.ndarray) -> bytes:
    x = np.concatenate(parts)
    return np.clip(x, -32768, 32767).astype("<i2").tobytes()


def run(ep: Endpointer, audio: bytes) -> list[tuple[int, EndpointEvent]]:
    events = []
    for i in range(0, len(audio) - FRAME_BYTES + 1, FRAME_BYTES):
        e = ep.feed(audio[i: i + FRAME_BYTES])
        if e is not EndpointEvent.NONE:
            events.append((ep.elapsed_ms, e))
    return events


def test_frame_level():
    assert frame_dbfs(bytes(FRAME_BYTES)) < -100
    assert -22 < frame_dbfs(pcm(speech(20, -20))) < -18


def test_short_answer_start_and_end():
    ep = Endpointer()
    events = run(ep, pcm(silence(500), speech(400), silence(1000)))
    kinds = [e for _, e in events]
    assert kinds == [EndpointEvent.SPEECH_START, EndpointEvent.SPEECH_END]
    assert abs(ep.speech_start_ms - 500) <= 40
    assert abs(ep.speech_end_ms - 900) <= 40
    end_at = events[1][0]
    assert 900 + 240 <= end_at <= 900 + 340  # ~280 ms of silence ends it
    assert ep.done and ep.result is EndpointEvent.SPEECH_END


def test_pause_inside_a_phrase_does_not_end_it():
    ep = Endpointer()
    run(ep, pcm(silence(300), speech(300), silence(150), speech(400), silence(600)))
    assert ep.result is EndpointEvent.SPEECH_END
    assert abs(ep.speech_end_ms - 1150) <= 40


def test_no_input_timeout():
    ep = Endpointer(EndpointConfig(no_input_ms=2000))
    events = run(ep, pcm(silence(3000)))
    assert events == [(2000, EndpointEvent.NO_INPUT)]
    assert not ep.speech_started


def test_no_input_timer_can_be_armed_later():
    ep = Endpointer(EndpointConfig(no_input_ms=1000), armed=False)
    assert run(ep, pcm(silence(1500))) == []
    ep.arm()
    assert run(ep, pcm(silence(1200))) == [(2500, EndpointEvent.NO_INPUT)]


def test_max_speech():
    ep = Endpointer(EndpointConfig(max_speech_ms=2000))
    events = run(ep, pcm(silence(200), speech(5000)))
    assert [e for _, e in events] == [EndpointEvent.SPEECH_START, EndpointEvent.MAX_SPEECH]
    assert events[1][0] - ep.speech_start_ms == 2000


def test_click_is_not_speech():
    ep = Endpointer(EndpointConfig(no_input_ms=3000))
    events = run(ep, pcm(silence(500), speech(20, -10), silence(600), speech(60, -10), silence(2500)))
    assert events[-1][1] is EndpointEvent.NO_INPUT
    assert not ep.speech_started


def test_noise_floor_adapts_to_a_noisy_line():
    # -45 dBFS line noise: speech at -20 still starts and ends; the noise itself does not
    ep = Endpointer()
    events = run(ep, pcm(silence(800, -45), speech(500, -20), silence(800, -45)))
    assert [e for _, e in events] == [EndpointEvent.SPEECH_START, EndpointEvent.SPEECH_END]


def test_quiet_caller_below_gate_is_no_input():
    ep = Endpointer(EndpointConfig(no_input_ms=1500))
    assert run(ep, pcm(silence(300), speech(500, -55), silence(1000)))[-1][1] is EndpointEvent.NO_INPUT


@pytest.mark.parametrize("chunk", [FRAME_BYTES * 5, 1600])
def test_longer_buffers_are_split(chunk):
    ep = Endpointer()
    audio = pcm(silence(400), speech(400), silence(800))
    seen = set()
    for i in range(0, len(audio), chunk):
        seen.add(ep.feed(audio[i: i + chunk]))
    assert ep.result is EndpointEvent.SPEECH_END


def test_a_filled_pause_keeps_the_line_open_until_the_name():
    """ "ehm, <name>": the detector calls the short first burst a filled pause, so the
    utterance ends after the name; without a detector it would end after "ehm"."""
    audio = pcm(silence(300), speech(300), silence(450), speech(700), silence(800))
    asked: list[int] = []

    def filler(slin: bytes) -> bool:
        asked.append(len(slin))
        return True

    held = Endpointer(hesitation=filler)
    ends = [t for t, e in run(held, audio) if e is EndpointEvent.SPEECH_END]
    plain = [t for t, e in run(Endpointer(), audio) if e is EndpointEvent.SPEECH_END]
    assert plain and plain[0] < 1100  # after the first burst
    assert ends and ends[0] > 1750  # after the second
    assert held.held == 1 and len(asked) == 1  # asked once, with the audio since speech start
    assert asked[0] >= FRAME_BYTES * (300 // 20)


def test_a_name_the_detector_rejects_ends_as_usual():
    audio = pcm(silence(300), speech(400), silence(800))
    ep = Endpointer(hesitation=lambda slin: False)
    ends = [t for t, e in run(ep, audio) if e is EndpointEvent.SPEECH_END]
    assert ends and ends[0] < 1100 and ep.held == 0


def test_long_utterances_are_not_asked():
    audio = pcm(silence(300), speech(1200), silence(800))
    ep = Endpointer(hesitation=lambda slin: pytest.fail("asked about a long utterance"))
    assert [e for _, e in run(ep, audio) if e is EndpointEvent.SPEECH_END]
