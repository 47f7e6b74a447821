"""Our own end-of-speech detector, tuned for short answers ("Goes", "ja").

Pure and frame-fed: give it 20 ms slin frames (16-bit LE mono 8 kHz) and it says when
speech starts (barge-in), when it ends (~280 ms of silence after it), or that nobody
spoke (no-input) or that the caller talks too long (max speech). Time is audio time,
counted in frames, so it behaves the same in tests, replay and live calls.

Energy in dBFS against an adaptive noise floor, with hysteresis: speech must rise
``snr_start_db`` above the floor (and above an absolute gate) for ``start_frames``
consecutive frames to start; once started, frames stay "voiced" down to
``snr_continue_db`` so word-internal dips and stops do not end the utterance.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Callable
from enum import StrEnum

import numpy as np

from ivr.speech.base import FRAME_BYTES, FRAME_MS


class EndpointEvent(StrEnum):
    NONE = "none"
    SPEECH_START = "speech_start"  # barge-in: stop the prompt
    SPEECH_END = "speech_end"  # silence after speech: decide now
    NO_INPUT = "no_input"  # nothing said before the no-input timeout
    MAX_SPEECH = "max_speech"  # talked longer than max_speech_ms: decide now


class EndpointState(StrEnum):
    WAITING = "waiting"
    SPEAKING = "speaking"
    DONE = "done"


@dataclass(frozen=True)
class EndpointConfig:
    frame_ms: int = FRAME_MS
    start_frames: int = 3  # 60 ms of voiced frames to call it speech
    end_silence_ms: int = 280  # silence that ends an utterance
    # a lone short burst ("eh, ...") is more often a hesitation than an answer: it waits longer
    hesitation_speech_ms: int = 240
    hesitation_silence_ms: int = 500
    # with a hesitation detector (the engine's ``is_hesitation``): a short utterance it calls
    # a filled pause ("ehm, ...") keeps the line open this long before it counts as the answer
    hesitation_check_ms: int = 700  # only utterances with less voiced audio than this are asked
    hesitation_hold_ms: int = 1500
    min_speech_ms: int = 100  # shorter bursts (clicks, coughs) are not speech
    no_input_ms: int = 5000
    max_speech_ms: int = 6000
    abs_gate_dbfs: float = -42.0  # nothing quieter than this is speech
    snr_start_db: float = 12.0
    snr_continue_db: float = 6.0
    initial_floor_dbfs: float = -60.0
    min_floor_dbfs: float = -75.0


def frame_dbfs(frame: bytes) -> float:
    """RMS level of a slin frame in dBFS (digital silence ~ -120)."""
    if len(frame) < 2:
        return -120.0
    samples = np.frombuffer(frame[: len(frame) // 2 * 2], dtype="<i2").astype(np.float32)
    power = float(np.mean(samples * samples)) / (32768.0 * 32768.0)
    return 10.0 * math.log10(power + 1e-12)


class Endpointer:
    """Feed frames; read events. ``arm()`` starts the no-input timer (e.g. after a
    prompt ends); it is armed from the first frame unless ``armed=False``."""

    def __init__(self, config: EndpointConfig | None = None, *, armed: bool = True,
                 hesitation: Callable[[bytes], bool] | None = None):
        self.config = config or EndpointConfig()
        self.hesitation = hesitation  # slin of the utterance so far -> "only a filled pause"
        self._frames: list[bytes] = []  # the utterance so far, for the hesitation detector
        self._held_at_voiced_ms = -1  # the detector's verdict is asked once per stretch of speech
        self._hold = False
        self.held = 0  # how many times a filled pause kept the line open
        self._recent: deque[bytes] = deque(maxlen=self.config.start_frames)
        self.state = EndpointState.WAITING
        self.floor_dbfs = self.config.initial_floor_dbfs
        self.elapsed_ms = 0
        self.speech_start_ms: int | None = None
        self.speech_end_ms: int | None = None  # end of the last voiced frame
        self.result: EndpointEvent = EndpointEvent.NONE
        self._armed_at_ms: int | None = 0 if armed else None
        self._run = 0  # consecutive voiced frames while waiting
        self._silence_ms = 0
        self._voiced_ms = 0

    # -- control -----------------------------------------------------------------
    def arm(self) -> None:
        if self._armed_at_ms is None:
            self._armed_at_ms = self.elapsed_ms

    @property
    def speech_started(self) -> bool:
        return self.speech_start_ms is not None

    @property
    def done(self) -> bool:
        return self.state is EndpointState.DONE

    # -- feeding -----------------------------------------------------------------
    def feed(self, frame: bytes) -> EndpointEvent:
        """One 20 ms frame (longer buffers are split into frames)."""
        if len(frame) > FRAME_BYTES:
            event = EndpointEvent.NONE
            for i in range(0, len(frame), FRAME_BYTES):
                e = self.feed(frame[i: i + FRAME_BYTES])
                if e is not EndpointEvent.NONE:
                    event = e
            return event
        if self.state is EndpointState.DONE:
            return EndpointEvent.NONE
        cfg = self.config
        level = frame_dbfs(frame)
        frame_start = self.elapsed_ms
        self.elapsed_ms += cfg.frame_ms

        if self.state is EndpointState.WAITING:
            if self.hesitation is not None:
                self._recent.append(frame)
            voiced = level >= max(cfg.abs_gate_dbfs, self.floor_dbfs + cfg.snr_start_db)
            if voiced:
                self._run += 1
                if self._run >= cfg.start_frames:
                    self.state = EndpointState.SPEAKING
                    self.speech_start_ms = frame_start - (self._run - 1) * cfg.frame_ms
                    self.speech_end_ms = self.elapsed_ms
                    self._voiced_ms = self._run * cfg.frame_ms
                    self._silence_ms = 0
                    self._run = 0
                    self._frames = list(self._recent)
                    return EndpointEvent.SPEECH_START
            else:
                self._run = 0
                self._adapt_floor(level)
            if (
                self._armed_at_ms is not None
                and self.elapsed_ms - self._armed_at_ms >= cfg.no_input_ms
            ):
                return self._finish(EndpointEvent.NO_INPUT)
            return EndpointEvent.NONE

        # SPEAKING
        if self.hesitation is not None:
            self._frames.append(frame)
        voiced = level >= max(cfg.abs_gate_dbfs - 3.0, self.floor_dbfs + cfg.snr_continue_db)
        if voiced:
            self._silence_ms = 0
            self._voiced_ms += cfg.frame_ms
            self.speech_end_ms = self.elapsed_ms
        else:
            self._silence_ms += cfg.frame_ms
        assert self.speech_start_ms is not None
        if self.elapsed_ms - self.speech_start_ms >= cfg.max_speech_ms:
            return self._finish(EndpointEvent.MAX_SPEECH)
        hesitating = self._voiced_ms < cfg.hesitation_speech_ms
        if self._silence_ms >= (cfg.hesitation_silence_ms if hesitating else cfg.end_silence_ms):
            if self._voiced_ms < cfg.min_speech_ms:
                # a click or a cough: back to waiting, keep the no-input clock running
                self.state = EndpointState.WAITING
                self.speech_start_ms = None
                self.speech_end_ms = None
                self._silence_ms = 0
                self._voiced_ms = 0
                self._frames = []
                return EndpointEvent.NONE
            if self._silence_ms < cfg.hesitation_hold_ms and self._filled_pause():
                return EndpointEvent.NONE  # "ehm, ..." - the name is still to come
            return self._finish(EndpointEvent.SPEECH_END)
        return EndpointEvent.NONE

    def _filled_pause(self) -> bool:
        """Is the short utterance so far only a hesitation? Asked once per stretch of speech."""
        if self.hesitation is None or self._voiced_ms >= self.config.hesitation_check_ms:
            return False
        if self._held_at_voiced_ms != self._voiced_ms:
            self._held_at_voiced_ms = self._voiced_ms
            self._hold = bool(self.hesitation(b"".join(self._frames)))
            self.held += self._hold
        return self._hold

    def _finish(self, event: EndpointEvent) -> EndpointEvent:
        self.state = EndpointState.DONE
        self.result = event
        return event

    def _adapt_floor(self, level: float) -> None:
        cfg = self.config
        level = max(level, cfg.min_floor_dbfs)
        if level < self.floor_dbfs:
            self.floor_dbfs += 0.3 * (level - self.floor_dbfs)  # fall fast
        else:
            self.floor_dbfs += 0.03 * (level - self.floor_dbfs)  # rise slowly
