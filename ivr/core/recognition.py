"""What a recogniser heard, as the call flow receives it: an explicit result.

Two kinds of engine fill it in:

* a closed-set engine (fusion, templates, Whisper) scores the question's choices itself:
  it lists :class:`Candidate` s (CBS code, "ja" or "nee") and, in a question about names,
  gives its own :class:`EngineVerdict`, which the matcher carries out as given;
* a transcript engine (Vosk, the scripted fake, the simulator's caller) only writes down
  what was said: ``transcripts``, an n-best of (text, confidence), and no verdict; the
  matcher decides by reading them.

"Nothing recognised" is said, not implied by an empty list: :attr:`EngineVerdict.NOTHING`.
Pure data, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

__all__ = ["Candidate", "EngineVerdict", "Recognition"]


class EngineVerdict(StrEnum):
    """A closed-set engine's decision on a question about names (values as the matcher's)."""

    ACCEPT = "accept"  # route to the best candidate
    CONFIRM = "confirm"  # ask "bedoelt u ...?" about the best
    CHOOSE = "choose"  # ask "A of B?" between the two best
    NOTHING = "nothing"  # nothing the engine knows was said (silence, noise, out of vocabulary)


@dataclass(frozen=True, slots=True)
class Candidate:
    """One choice of the question as the engine ranks it."""

    key: str  # CBS code, "ja" or "nee"
    phrase: str  # as the record shows what was heard: the municipality's name, "ja" or "nee"
    share: float  # the engine's softmax share over the question's choices (0..1; not a calibrated probability)
    # the choice's phrase that matched best (a village, an alias), where the engine knows it: a
    # village of two candidates ("Velp") is asked back by that name
    said: str = ""


@dataclass(frozen=True, slots=True)
class Recognition:
    """One utterance's result, best first."""

    candidates: tuple[Candidate, ...] = ()
    verdict: EngineVerdict | None = None  # None: the engine did not decide (transcripts, yes/no questions)
    transcripts: tuple[tuple[str, float], ...] = ()  # (text, confidence 0..1) from transcript engines
    engine_ms: float = 0.0  # time spent in the engine for this utterance
    p_right: float | None = None  # calibrated P(the best candidate is right), from engines that know it
    margin: float | None = None  # the engine's score margin of the best name over the runner-up (fusion: nats)
    final: bool = True  # False: a partial result while the caller still talks

    @property
    def nothing_recognised(self) -> bool:
        return self.verdict is EngineVerdict.NOTHING or not (self.candidates or self.transcripts)

    @property
    def nbest(self) -> tuple[tuple[str, float], ...]:
        """What was heard as (text, confidence), best first, for readers of text (the matcher
        without an engine verdict, yes/no): the transcripts, else each candidate's phrase with
        its share; empty when nothing was recognised."""
        if self.verdict is EngineVerdict.NOTHING:
            return ()
        return self.transcripts or tuple((c.phrase, c.share) for c in self.candidates)

    @property
    def heard(self) -> str:
        """The best hypothesis in words ("" when nothing was recognised)."""
        nbest = self.nbest
        return nbest[0][0] if nbest else ""

    @classmethod
    def of_transcripts(cls, nbest, engine_ms: float = 0.0, *, final: bool = True) -> "Recognition":
        return cls(transcripts=tuple((str(t), float(c)) for t, c in nbest), engine_ms=engine_ms, final=final)
