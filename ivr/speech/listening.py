"""Listening to one answer: endpointer + pre-roll + recogniser session -> a verdict.

The one place that decides which of the caller's frames the recogniser hears and when
the answer is complete. Live calls (:mod:`ivr.adapters.asterisk.audiosocket`) and ``ivr replay``
both use it, so a replayed WAV is heard exactly as a call would hear it:

- every 20 ms slin frame goes to the :class:`~ivr.speech.endpoint.Endpointer`;
- until speech starts, frames are kept in a pre-roll (the last ``preroll_frames``,
  300 ms); at speech start the pre-roll and the frame go to the recogniser session, and
  from then on every frame does, up to and including the frame that ends the utterance;
- the endpointer's end of speech, its cap on speech length or its no-input timeout ends
  the listen, and :meth:`Listening.finish` gives the :class:`Verdict`:
  ``heard`` (the session's final recognition), ``too_long`` (the caller talked past the
  cap: decided on what was heard, like ``heard``) or ``no_input`` (nobody spoke; the
  session is not asked).

Offline, :func:`listen` feeds a recording and then silence, as the caller's line carries
silence after they stop talking, until the endpointer decides.

Time in the verdict is audio time (ms since the first frame), except ``decision_ms``,
the wall time the session took to give its final recognition once the listen ended.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from enum import StrEnum
from typing import Callable, Iterable, Sequence

from ivr.core.recognition import Recognition
from ivr.speech.base import FRAME_BYTES, FRAME_MS, Recogniser, RecogniserSession
from ivr.speech.closed_set import frames_of
from ivr.speech.endpoint import EndpointConfig, EndpointEvent, Endpointer

__all__ = ["Heard", "Listening", "PREROLL_FRAMES", "SILENCE_FRAME", "Verdict", "hear_again", "listen"]

PREROLL_FRAMES = 15  # 300 ms of audio before speech start goes to the recogniser
SILENCE_FRAME = bytes(FRAME_BYTES)


class Heard(StrEnum):
    HEARD = "heard"  # speech, ended by silence: the recognition is the answer
    TOO_LONG = "too_long"  # speech past the endpointer's cap: decided on what was heard
    NO_INPUT = "no_input"  # no speech before the no-input timeout


@dataclass(frozen=True)
class Verdict:
    kind: Heard
    recognition: Recognition | None  # the session's final result; None for no input
    speech_start_ms: int | None = None  # audio time of the first voiced frame
    speech_end_ms: int | None = None  # audio time of the end of the last voiced frame
    ended_ms: int = 0  # audio time when the listen ended (endpoint, timeout or cap)
    decision_ms: float = 0.0  # wall time: listen ended -> final recognition
    held: int = 0  # how often a filled pause ("ehm") kept the line open
    utterance: bytes = b""  # the slin the recogniser heard (pre-roll included): what hear_again decides anew

    @property
    def speech(self) -> bool:
        return self.kind is not Heard.NO_INPUT


_ENDS = {EndpointEvent.SPEECH_END: Heard.HEARD, EndpointEvent.MAX_SPEECH: Heard.TOO_LONG,
         EndpointEvent.NO_INPUT: Heard.NO_INPUT}


class Listening:
    """One listen: feed 20 ms frames, then :meth:`finish`.

    ``hesitation`` defaults to the recogniser's optional ``is_hesitation`` hook;
    ``armed=False`` holds the no-input clock until :meth:`arm` (a prompt still playing).
    ``sink``: where the frames meant for the recogniser go; by default straight into the
    session (opened by :meth:`start`). The live path passes a queue's ``put`` and feeds the
    session from a worker thread instead.
    """

    def __init__(self, recogniser: Recogniser, vocabulary: Sequence[str], config: EndpointConfig | None = None,
                 *, armed: bool = True, endpointer: Endpointer | None = None,
                 sink: Callable[[bytes], object] | None = None, preroll_frames: int = PREROLL_FRAMES):
        self.recogniser = recogniser
        self.vocabulary = tuple(vocabulary)
        self.endpointer = endpointer or Endpointer(config, armed=armed,
                                                   hesitation=getattr(recogniser, "is_hesitation", None))
        self.session: RecogniserSession | None = None
        self._sink = sink
        self._preroll: deque[bytes] = deque(maxlen=preroll_frames)
        self._heard: list[bytes] = []  # what went to the recogniser, for hear_again
        self.event: EndpointEvent = EndpointEvent.NONE  # the event that ended the listen
        self._verdict: Verdict | None = None

    # -- control -------------------------------------------------------------------
    def start(self) -> "Listening":
        """Open the recogniser session (the live path calls this in a worker thread)."""
        if self.session is None:
            self.session = self.recogniser.start(self.vocabulary)
        return self

    def arm(self) -> None:
        self.endpointer.arm()

    @property
    def config(self) -> EndpointConfig:
        return self.endpointer.config

    @property
    def done(self) -> bool:
        """The endpointer has decided: no more frames are needed."""
        return self.event is not EndpointEvent.NONE

    @property
    def speech_started(self) -> bool:
        return self.endpointer.speech_started

    # -- frames --------------------------------------------------------------------
    def feed(self, frame: bytes) -> EndpointEvent:
        """One 20 ms frame; returns the endpointer's event for it (``SPEECH_START`` is the
        barge-in). Frames after the listen ended are ignored."""
        if self.done:
            return EndpointEvent.NONE
        ep = self.endpointer
        event = ep.feed(frame)
        if event is EndpointEvent.SPEECH_START:
            self._send(b"".join(self._preroll) + frame)
            self._preroll.clear()
        elif ep.speech_started or event in (EndpointEvent.SPEECH_END, EndpointEvent.MAX_SPEECH):
            self._send(frame)
        else:  # waiting (or a click the endpointer took back): keep it for the pre-roll
            self._preroll.append(frame)
        if event in _ENDS:
            self.event = event
        return event

    def _send(self, pcm: bytes) -> None:
        self._heard.append(pcm)
        if self._sink is not None:
            self._sink(pcm)
        else:
            self.start()
            assert self.session is not None
            self.session.feed(pcm)

    # -- the verdict -----------------------------------------------------------------
    def finish(self) -> Verdict:
        """The verdict (call once the frames are fed; the live path calls it in a worker
        thread). Speech the endpointer has not ended yet (audio ran out) counts as heard."""
        if self._verdict is not None:
            return self._verdict
        ep = self.endpointer
        kind = _ENDS.get(self.event) or (Heard.HEARD if ep.speech_started else Heard.NO_INPUT)
        recognition = None
        t0 = time.perf_counter()
        if kind is not Heard.NO_INPUT:
            self.start()
            assert self.session is not None
            recognition = self.session.finish()
        self._verdict = Verdict(kind, recognition, ep.speech_start_ms, ep.speech_end_ms, ep.elapsed_ms,
                                (time.perf_counter() - t0) * 1000, ep.held,
                                b"".join(self._heard) if recognition is not None else b"")
        return self._verdict


def listen(recogniser: Recogniser, vocabulary: Sequence[str], slin: bytes | Iterable[bytes],
           config: EndpointConfig | None = None, *, endpointer: Endpointer | None = None,
           silence_ms: int | None = None) -> Verdict:
    """Offline: ``slin`` (bytes, or 20 ms frames), then silence frames as a caller's line
    carries after they stop talking, until the endpointer decides. ``silence_ms`` bounds
    the silence (default: as long as the endpointer could still wait: no-input timeout
    plus speech cap plus the filled-pause hold)."""
    listening = Listening(recogniser, vocabulary, config, endpointer=endpointer).start()
    frames = frames_of(slin) if isinstance(slin, (bytes, bytearray)) else slin
    for frame in frames:
        listening.feed(frame)
        if listening.done:
            return listening.finish()
    cfg = listening.config
    if silence_ms is None:
        silence_ms = cfg.no_input_ms + cfg.max_speech_ms + cfg.hesitation_hold_ms
    for _ in range(max(0, silence_ms) // FRAME_MS):
        listening.feed(SILENCE_FRAME)
        if listening.done:
            break
    return listening.finish()


def hear_again(recogniser: Recogniser, vocabulary: Sequence[str], utterance: bytes) -> Recognition:
    """A :attr:`Verdict.utterance` decided anew against another ``vocabulary`` (the national
    second pass): exactly the frames the first session heard, in a new session."""
    session = recogniser.start(vocabulary)
    for i in range(0, len(utterance), FRAME_BYTES * 50):  # one second at a time
        session.feed(utterance[i: i + FRAME_BYTES * 50])
    return session.finish()
