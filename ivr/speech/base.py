"""The engine-agnostic streaming recogniser interface.

The call flow and the drivers only ever see these types and the
:class:`~ivr.core.recognition.Recognition` a session gives; concrete engines (Vosk,
Whisper, ...) live in their own modules and are chosen by configuration.

Audio is always *slin*: 16-bit signed little-endian mono PCM at 8 kHz, fed in 20 ms
frames (320 bytes), exactly what Asterisk's AudioSocket delivers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, Sequence, runtime_checkable

from ivr.core.recognition import Recognition

SAMPLE_RATE = 8000
SAMPLE_WIDTH = 2  # bytes, signed 16-bit little endian
FRAME_MS = 20
FRAME_BYTES = SAMPLE_RATE * SAMPLE_WIDTH * FRAME_MS // 1000  # 320


@runtime_checkable
class RecogniserSession(Protocol):
    """One utterance. Not thread-safe; one session per listen."""

    def feed(self, pcm: bytes) -> Recognition | None:
        """Feed 20 ms slin frames (any multiple of 320 bytes); may return a partial (``final=False``)."""
        ...

    def finish(self) -> Recognition:
        """End of speech: the final result. Call once."""
        ...


@runtime_checkable
class Recogniser(Protocol):
    name: str

    def start(self, vocabulary: Sequence[str]) -> RecogniserSession:
        """Open a session biased/restricted to ``vocabulary`` (the area code's phrases)."""
        ...


class RecogniserError(RuntimeError):
    """The engine cannot be used as configured (missing model, unknown words...)."""


@dataclass
class ScriptedRecogniser:
    """A fake transcript engine for tests: returns a fixed n-best of transcripts at finish.

    ``partial_every`` > 0 makes ``feed`` return a non-final partial every that many
    frames (the first entry of ``nbest``)."""

    nbest: tuple[tuple[str, float], ...] = ()
    name: str = "scripted"
    partial_every: int = 0
    sessions: list["_ScriptedSession"] = field(default_factory=list)

    def start(self, vocabulary: Sequence[str]) -> "_ScriptedSession":
        s = _ScriptedSession(self, tuple(vocabulary))
        self.sessions.append(s)
        return s


@dataclass
class _ScriptedSession:
    owner: ScriptedRecogniser
    vocabulary: tuple[str, ...]
    fed_bytes: int = 0
    finished: bool = False

    def feed(self, pcm: bytes) -> Recognition | None:
        frames_before = self.fed_bytes // FRAME_BYTES
        self.fed_bytes += len(pcm)
        every = self.owner.partial_every
        if every and self.owner.nbest and (self.fed_bytes // FRAME_BYTES) // every > frames_before // every:
            return Recognition.of_transcripts(self.owner.nbest[:1], final=False)
        return None

    def finish(self) -> Recognition:
        self.finished = True
        return Recognition.of_transcripts(self.owner.nbest)
