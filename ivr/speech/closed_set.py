"""What every closed-set engine shares: the choices, the buffered session, the result.

A closed-set engine does not transcribe: it decides which of an area code's
municipalities (or "ja"/"nee") the caller said, and hands the call flow a
:class:`~ivr.core.recognition.Recognition` with its ranked candidates and its verdict,
which :meth:`ivr.core.matcher.Matcher.decide` carries out as given.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable, Protocol, Sequence

import numpy as np

from ivr.core.recognition import Candidate, EngineVerdict, Recognition
from ivr.speech.base import FRAME_BYTES, RecogniserError

if TYPE_CHECKING:  # pragma: no cover
    from ivr.core.plan import Municipality, NumberingPlan

__all__ = ["Choice", "municipality_choice", "choices_for", "decided", "nothing", "BufferedSession", "frames_of",
           "YES_PHRASES", "NO_PHRASES", "FILLERS", "spoken"]

YES_PHRASES = ("ja", "ja graag", "ja, dat klopt", "jazeker", "klopt")
NO_PHRASES = ("nee", "nee, dat klopt niet", "nee hoor")
FILLERS = ("eh", "ehm", "uh", "uhm")  # filled pauses, spoken like the references
CBS = re.compile(r"^GM\d{4}$")


@dataclass(frozen=True)
class Choice:
    """One class of the closed set: a municipality (or "ja"/"nee") and how to say it."""

    key: str  # CBS code, "ja", "nee", or the phrase itself
    label: str  # what the record shows as heard (the candidate's phrase)
    phrases: tuple[str, ...]
    places: tuple[str, ...] = ()  # villages


def spoken(name: str) -> str:
    return name.split(" (")[0].strip()


def municipality_choice(m: "Municipality") -> Choice:
    """A municipality's phrases: its name, spoken aliases and former names; villages apart."""
    phrases = [spoken(m.name)]
    for a in (*m.aliases, *m.former_names):
        a = spoken(a)
        if a and "'" not in a.strip("'s-") and a not in phrases and len(a) > 2:
            phrases.append(a)
    places = tuple(dict.fromkeys(spoken(p) for p in m.places if "(" not in p and spoken(p) not in phrases))
    return Choice(m.cbs_code, m.name, tuple(phrases), places)


def choices_for(vocabulary: Sequence, plan: "NumberingPlan | None", yes_no: str = "auto") -> tuple[Choice, ...]:
    """The classes of one question. ``vocabulary``: CBS codes (what ``flow.Listen`` holds,
    resolved through ``plan``), municipalities, or plain phrases; empty = a yes/no question.
    ``yes_no``: "ja"/"nee" compete as classes "always", or ("auto") only in a yes/no question:
    an area code with two municipalities asks its first question with two choices, and
    "klopt" must not outscore "Oldebroek" there."""
    items = list(vocabulary)
    choices: list[Choice] = []
    if items and all(isinstance(v, str) and CBS.match(v) for v in items[:1]):
        # CBS codes, perhaps followed by plain phrases (a language's name offered with the names)
        if plan is None:
            raise RecogniserError("a closed-set engine needs a plan to resolve CBS codes")
        items = [plan.municipalities[v] if isinstance(v, str) and CBS.match(v) else v for v in items]
    for v in items:
        choices.append(Choice(v, v, (v,)) if isinstance(v, str) else municipality_choice(v))
    if yes_no == "always" or not choices:
        choices.append(Choice("ja", "ja", YES_PHRASES))
        choices.append(Choice("nee", "nee", NO_PHRASES))
    return tuple(choices)


def decided(scores: np.ndarray, choices: Sequence[Choice], decision: str | None, temperature: float,
            engine_ms: float, p_right: float | None = None, said: dict[int, str] | None = None,
            margin: float | None = None) -> Recognition:
    """The engine's result: its choices ranked by ``scores`` (higher = better), each with its
    softmax share at ``temperature``, and its ``decision`` (accept | confirm | choose) as the
    verdict. The verdict is about names: it stands when the best is a name and at least two
    names competed; otherwise (a yes/no question, "ja"/"nee" ahead of the names, a single
    name) there is none and the caller's words are read from the ranked phrases."""
    z = scores / max(temperature, 1e-6)
    z = np.exp(z - np.max(z))
    q = z / z.sum()
    order = [int(i) for i in np.argsort(-scores, kind="stable")]
    names = [i for i in order if choices[i].key not in ("ja", "nee")]
    verdict = None
    if decision is not None and len(names) >= 2 and choices[order[0]].key not in ("ja", "nee"):
        verdict = EngineVerdict(decision)
        order = names + [i for i in order if i not in names]  # a verdict is about the names
    said = said or {}
    candidates = tuple(Candidate(choices[i].key, choices[i].label, round(float(q[i]), 4), said.get(i, ""))
                       for i in order[:5])
    return Recognition(candidates, verdict, engine_ms=engine_ms, p_right=p_right, margin=margin)


def nothing(engine_ms: float, p_right: float | None = None) -> Recognition:
    """Nothing the engine knows was said (no speech, noise, out of vocabulary)."""
    return Recognition((), EngineVerdict.NOTHING, engine_ms=engine_ms, p_right=p_right)


class _Deciding(Protocol):
    def recognise(self, audio_8k: np.ndarray, choices: Sequence[Choice]) -> Recognition: ...


class BufferedSession:
    """One utterance: buffer 20 ms frames, decide once, at :meth:`finish`."""

    def __init__(self, engine: _Deciding, choices: tuple[Choice, ...]):
        self.engine = engine
        self.choices = choices
        self._chunks: list[bytes] = []
        self._finished = False

    def feed(self, pcm: bytes) -> Recognition | None:
        if self._finished:
            raise RuntimeError("session already finished")
        if len(pcm) % 2:
            pcm = pcm[:-1]
        self._chunks.append(pcm)
        return None  # no partials: the decision is made once, at end of speech

    def finish(self) -> Recognition:
        if self._finished:
            raise RuntimeError("finish() called twice")
        self._finished = True
        audio = np.frombuffer(b"".join(self._chunks), dtype="<i2").astype(np.float32) / 32768.0
        # keep at most the last 8 s (the endpointer caps speech at 6 s)
        audio = audio[-8 * 8000:]
        return self.engine.recognise(audio, self.choices)


def frames_of(pcm: bytes) -> Iterable[bytes]:
    """Split slin audio into 20 ms frames (the last one zero-padded)."""
    for i in range(0, len(pcm), FRAME_BYTES):
        frame = pcm[i: i + FRAME_BYTES]
        yield frame if len(frame) == FRAME_BYTES else frame + b"\0" * (FRAME_BYTES - len(frame))
