"""Closed-set recogniser by template matching against synthesised references.

For each question the engine compares the caller's utterance with a spoken reference of
every phrase of every candidate - name, aliases, former names and *all* villages - by
subsequence DTW over log-mel frames (:mod:`ivr.speech.templates`), and decides on the
margin between the best and the runner-up municipality:

* margin >= ``accept_margin``: accept (the call is transferred);
* margin <  ``choose_margin`` between two municipalities: "A of B?";
* otherwise: confirm the best ("Bedoelt u X?").

References are spoken by espeak-ng voice variants that neither the development nor the
test corpus uses (``voices``): the first voice scores every phrase; the others re-score
the ``rescore_top`` best, and a phrase keeps its best score. Villages carry a small
penalty (``village_penalty``): callers name the municipality far more often, and a
one-syllable village otherwise fits inside many longer names.

Measured on the development set and explained in ``docs/recognition.md``; the caveat
that matters: the references and the corpora come from the same synthesiser, so these
figures do not predict accuracy on human callers.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Protocol, Sequence

import numpy as np

from ivr.core.recognition import Recognition
from ivr.speech.closed_set import (FILLERS, BufferedSession, Choice, choices_for, decided, municipality_choice,
                                   nothing)
from ivr.speech.templates import FeatureSettings, ReferenceBank, log_mel, subsequence_dtw, voiced_ms

if TYPE_CHECKING:  # pragma: no cover
    from pathlib import Path

    from ivr.core.plan import NumberingPlan

__all__ = ["TemplateEngine", "TemplateSettings"]

log = logging.getLogger(__name__)


class SecondOpinion(Protocol):
    def score_phrases(self, audio_8k: np.ndarray, phrases: Sequence[str]) -> np.ndarray:
        """Higher = the phrase fits the audio better."""


@dataclass(frozen=True)
class TemplateSettings:
    # disjoint from the corpus voices; espeak-ng variant names are case-sensitive file names,
    # and an unknown one silently falls back to plain "nl" (a development voice)
    voices: tuple[str, ...] = ("nl+m6", "nl+linda")
    features: FeatureSettings = field(default_factory=lambda: FeatureSettings(noise_subtract=2.0, noise_floor=0.02))
    village_penalty: float = 0.02  # added to a village's distance
    accept_margin: float = 0.07  # distance between the best two municipalities to accept
    choose_margin: float = 0.002  # ... below which the caller chooses between the two
    reject_above: float = 0.6  # best distance above this: nothing was said that we know
    min_voiced_ms: int = 100  # less voiced (pitched) audio than this is noise, not an answer
    filler_distance: float = 0.2  # a filled pause fits a filler reference this closely ...
    filler_coverage: float = 0.6  # ... over this share of the utterance
    rescore_top: int = 24  # phrases re-scored with the other voices
    # a close call (margin below second_below) re-ranks its best few municipalities with a
    # second opinion (Whisper's score of their best phrases) minus second_weight x the distance
    second_below: float = 0.04
    second_top: int = 3
    second_weight: float = 100.0
    temperature: float = 0.02  # softmax over -distance: the candidates' shares
    yes_no: str = "auto"
    workers: int = 2  # utterances scored at the same time


class TemplateEngine:
    """A :class:`~ivr.speech.base.Recogniser`; ``start(vocabulary)`` as the Whisper engine."""

    name = "templates"
    closed_set = True  # start() takes CBS codes; () is a yes/no question

    def __init__(self, plan: "NumberingPlan | None" = None, settings: TemplateSettings | None = None,
                 cache_dir: "Path | None" = None, second_opinion: "SecondOpinion | None" = None):
        self.plan = plan
        self.second_opinion = second_opinion
        self.settings = settings or TemplateSettings()
        self.banks = [ReferenceBank(replace(self.settings.features, voice=v), cache_dir)
                      for v in self.settings.voices]
        for bank in self.banks:
            bank.check_voice()
        self._slots = threading.Semaphore(max(1, self.settings.workers))
        self.last_debug: dict = {}

    # -- lifecycle ------------------------------------------------------------------------
    def warm_up(self) -> "TemplateEngine":
        """Load (or speak, when not cached) the references of every shared area code, most
        populous first. Without it, a question loads its own references on first use."""
        if self.plan is None:
            return self
        t0 = time.perf_counter()
        for phrases in self._phrases_by_area():
            for bank in self.banks:
                bank.build(phrases)
        log.info("template references ready: %d phrases x %d voices in %.1f s",
                 len(self.banks[0]), len(self.banks), time.perf_counter() - t0)
        return self

    def _phrases_by_area(self) -> list[list[str]]:
        """The fillers, then every shared area code's phrases, most populous area code first."""
        areas = sorted((a for a in self.plan.area_codes.values() if a.shared), key=lambda a: -a.population)
        return [list(FILLERS)] + [
            [p for code in area.municipalities for p in _phrases(municipality_choice(self.plan.municipalities[code]))]
            for area in areas]

    def cache_references(self) -> int:
        """Fill the disk cache (what ``scripts/install.sh`` runs); returns phrases spoken."""
        phrases = [p for area in self._phrases_by_area() for p in area]
        return sum(bank.ensure_cached(phrases) for bank in self.banks)

    def _after_filler(self, utterance: np.ndarray) -> np.ndarray:
        """Drop a filled pause at the start ("ehm, ... Gorinchem"): a short village otherwise
        finds its best fit in the "ehm"."""
        s = self.settings
        dist, length, end = subsequence_dtw(self._filler_refs(), utterance, with_end=True)
        k = int(np.argmin(dist))
        start = int(end[k]) - int(length[k]) + 1
        rest = utterance.shape[0] - int(end[k]) - 1
        if dist[k] <= s.filler_distance and start <= 3 and rest >= 10:
            rest = utterance[int(end[k]) + 1:]
            return rest - rest.mean(axis=0, keepdims=True)  # normalised as if said alone
        return utterance

    def _filler_refs(self) -> list[np.ndarray]:
        return [r for bank in self.banks for r in bank.get(FILLERS)]

    def is_hesitation(self, slin: bytes) -> bool:
        """Is this short utterance only a filled pause ("eh", "ehm")? The endpointer asks,
        and keeps listening when it is: otherwise "ehm, ... Roermond" is decided on "ehm".
        A filler reference must fit closely and cover most of the utterance."""
        s = self.settings
        audio = np.frombuffer(slin[: len(slin) // 2 * 2], "<i2").astype(np.float32) / 32768.0
        utterance = log_mel(audio, s.features)
        if utterance.shape[0] < 4:
            return False
        dist, length = subsequence_dtw(self._filler_refs(), utterance)
        covers = length >= s.filler_coverage * utterance.shape[0]
        return bool(np.any(covers & (dist <= s.filler_distance)))

    # -- Recogniser protocol ---------------------------------------------------------------
    def start(self, vocabulary: Sequence) -> BufferedSession:
        return BufferedSession(self, self.choices_for(vocabulary))

    def choices_for(self, vocabulary: Sequence) -> tuple[Choice, ...]:
        return choices_for(vocabulary, self.plan, self.settings.yes_no)

    def recognise(self, audio_8k: np.ndarray, choices: Sequence[Choice]) -> Recognition:
        with self._slots:
            return self._decide(np.asarray(audio_8k, np.float32), tuple(choices))

    # -- decision --------------------------------------------------------------------------
    def _decide(self, audio: np.ndarray, choices: tuple[Choice, ...]) -> Recognition:
        t0 = time.perf_counter()
        s = self.settings
        scored = [(ci, p, 0.0) for ci, c in enumerate(choices) for p in c.phrases]
        scored += [(ci, p, s.village_penalty) for ci, c in enumerate(choices) for p in c.places]
        owner = [ci for ci, _, _ in scored]
        phrases = [p for _, p, _ in scored]
        penalty = np.array([pen for _, _, pen in scored], np.float32)
        utterance = log_mel(audio, s.features)
        if utterance.shape[0] < 4 or not phrases or voiced_ms(audio) < s.min_voiced_ms:
            self.last_debug = {"reason": "no speech"}
            return nothing((time.perf_counter() - t0) * 1000)
        utterance = self._after_filler(utterance)
        dist, _ = subsequence_dtw(self.banks[0].get(phrases), utterance)
        dist = dist + penalty
        top = np.argsort(dist)[: s.rescore_top]
        for bank in self.banks[1:]:
            again, _ = subsequence_dtw(bank.get([phrases[i] for i in top]), utterance)
            dist[top] = np.minimum(dist[top], again + penalty[top])
        per_choice = np.full(len(choices), np.inf)
        best_phrase: dict[int, str] = {}
        for i, d in enumerate(dist):
            if d < per_choice[owner[i]]:
                per_choice[owner[i]] = float(d)
                best_phrase[owner[i]] = phrases[i]
        elapsed = (time.perf_counter() - t0) * 1000
        order = [int(i) for i in np.argsort(per_choice, kind="stable")]
        names = [i for i in order if choices[i].key not in ("ja", "nee")]
        decision = None
        margin = float(per_choice[names[1]] - per_choice[names[0]]) if len(names) > 1 else float("inf")
        if per_choice[order[0]] > s.reject_above:
            self.last_debug = {"reason": "no close reference", "distance": float(per_choice[order[0]])}
            return nothing(elapsed)
        if len(names) >= 2 and choices[order[0]].key not in ("ja", "nee"):
            decision = ("accept" if margin >= s.accept_margin
                        else "choose" if margin < s.choose_margin else "confirm")
        self.last_debug = {"decision": decision, "margin": margin,
                           "heard": [(choices[i].key, best_phrase.get(i, ""), round(float(per_choice[i]), 4))
                                     for i in order[:3]]}
        scores = -np.where(np.isfinite(per_choice), per_choice, 10.0)
        if decision in ("confirm", "choose") and margin < s.second_below and self.second_opinion is not None:
            scores = self._second_opinion(audio, scores, names[: s.second_top], best_phrase)
        return decided(scores, choices, decision, s.temperature, (time.perf_counter() - t0) * 1000)

    def _second_opinion(self, audio: np.ndarray, scores: np.ndarray, best: list[int],
                        best_phrase: dict[int, str]) -> np.ndarray:
        """Re-rank the closest municipalities: the second opinion's score of each one's best
        phrase minus ``second_weight`` x its distance. Their scores are handed back in the
        new order, so the doubt (and with it confirm / "A of B?") stays what it was."""
        try:
            opinion = self.second_opinion.score_phrases(audio, [best_phrase[i] for i in best])
        except Exception:  # noqa: BLE001 - a failing second opinion must not lose the answer
            log.exception("second opinion failed; keeping the template ranking")
            return scores
        fused = np.asarray(opinion, float) + self.settings.second_weight * scores[best]
        reranked = scores.copy()
        reranked[[best[int(i)] for i in np.argsort(-fused, kind="stable")]] = np.sort(scores[best])[::-1]
        self.last_debug["second_opinion"] = {best_phrase[i]: round(float(o), 2) for i, o in zip(best, opinion)}
        return reranked


def _phrases(choice: Choice) -> tuple[str, ...]:
    return choice.phrases + choice.places
