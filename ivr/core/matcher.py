"""Match what a caller said against the municipalities sharing an area code.

Pure and fast: no I/O, no globals mutated after import. A :class:`Matcher` is built
once per candidate set (one area code); it precomputes normalised and phonetic keys
for every name, alias, former municipality and village, and then scores a recogniser
n-best list in well under a millisecond.

Scoring, in short:

* the transcript is normalised (lower case, no diacritics, ``'s-``/``'t``,
  punctuation), fillers ("eh", "ehm") are dropped, and every 1-5 word window that does
  not start or end on a carrier word ("ik wil graag de gemeente ... bellen") is compared
  with every key, spaces ignored, by ``rapidfuzz`` ratio on the plain text and on a
  rough Dutch phonetic key (ij/y -> ei, ch -> g, v -> f, z -> s, dt -> t, doubled
  letters ...);
* a key's kind weighs its score: the municipality's name or alias counts fully, a
  former municipality slightly less and a village less again, so "Rotterdam" is the
  municipality, not the village Rotterdam in Albrandswaard, while a village shared by
  two candidates ties them (-> CHOOSE);
* longest match wins: when one candidate's best window lies strictly inside another
  candidate's well-scoring window ("Bergen" inside "Bergen op Zoom", "Haarlem" inside
  "Haarlemmer meer"), the shorter one is penalised. Ratio (not partial ratio) already
  keeps a prefix from scoring like a full match;
* each hypothesis is discounted by its rank and its engine confidence; a candidate's
  score is its best over the n-best list.

:meth:`Matcher.decide` takes a :class:`~ivr.core.recognition.Recognition`: a closed-set
engine's own verdict is carried out as given (its candidates ranked in its order, scored
by their share), and only a result without one (transcripts) is scored as above.

Either way one rule has the last word (:class:`ConfusableRule`): an ACCEPT of one of a listed
confusable pair (Haarlem/Haarlemmermeer, Weert/Nederweert ...) on a thin margin over its partner
is held to a CONFIRM.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import TYPE_CHECKING, Iterable, Sequence

import numpy as np
from rapidfuzz import fuzz, process

from ivr.core.recognition import EngineVerdict, Recognition
from ivr.core.words import CARRIER_WORDS, FILLER_WORDS, normalise, phonetic

if TYPE_CHECKING:  # pragma: no cover
    from ivr.core.plan import Municipality, NumberingPlan

__all__ = [
    "MatchVerdict",
    "Scored",
    "MatchResult",
    "Matcher",
    "Thresholds",
    "ConfusableRule",
    "matcher_for",
]


class MatchVerdict(StrEnum):
    ACCEPT = "accept"
    CONFIRM = "confirm"
    CHOOSE = "choose"
    REJECT = "reject"


@dataclass(frozen=True, slots=True)
class Scored:
    cbs_code: str
    name: str
    score: float  # 0..100
    heard: str  # the name/alias/village (display form) that matched
    span: str = ""  # the normalised words of the transcript that matched it


@dataclass(frozen=True, slots=True)
class MatchResult:
    verdict: MatchVerdict
    ranked: tuple[Scored, ...]
    margin: float  # best - runner-up score (best score if there is no runner-up)
    # an ACCEPT held to CONFIRM by the confusable-pair rule: the CBS code of the best's listed partner
    held_by: str = ""

    @property
    def best(self) -> Scored | None:
        return self.ranked[0] if self.ranked else None

    @property
    def runner_up(self) -> Scored | None:
        return self.ranked[1] if len(self.ranked) > 1 else None


@dataclass(frozen=True, slots=True)
class Thresholds:
    """Decision thresholds on the 0..100 score scale (tuned on the synthetic corpus)."""

    reject_below: float = 66.0  # best below this: nothing usable
    accept_at: float = 88.0  # best at or above this ...
    accept_margin: float = 8.0  # ... and this far ahead of the runner-up: route
    exact_at: float = 97.0  # a (near-)exact match of a name ...
    exact_margin: float = 5.0  # ... needs less margin (Weststellingwerf/Eaststellingwerf)
    choose_floor: float = 75.0  # two candidates both at least this good ...
    choose_margin: float = 6.0  # ... and closer than this: ask "A of B?"
    containment_penalty: float = 15.0  # "Bergen" inside "Bergen op Zoom"
    containment_floor: float = 80.0  # the longer match must be at least this good


@dataclass(frozen=True, slots=True)
class ConfusableRule:
    """Known confusable pairs (Haarlem/Haarlemmermeer, Epe/Ede ...) are never accepted on a thin
    margin: an ACCEPT whose best and another ranked candidate form a listed pair, with the best
    less than ``margin`` points (0..100, the matcher's and the engines' shared scale) ahead of that
    partner, becomes a CONFIRM. The pairs come from the plan's data, read outside the core
    (``ivr.plan_files.confusable_rule``)."""

    pairs: frozenset[frozenset[str]] = frozenset()  # unordered CBS-code pairs
    # on an engine's verdict: share points (100 x softmax share); tuned on the human bench's dev split
    margin: float = 45.0
    # on the transcript matcher's scores (another scale: an exact name scores ~98, a sound-alike
    # ~65): twice its accept margin; not tuned on data (no transcript engine runs the human bench)
    transcript_margin: float = 15.0

    def within(self, codes: Iterable[str]) -> "ConfusableRule":
        """The pairs of one question's candidates only (a matcher keeps just those)."""
        codes = set(codes)
        return replace(self, pairs=frozenset(p for p in self.pairs if p <= codes))

    def partner(self, result: "MatchResult") -> Scored | None:
        """The best's highest-ranked listed partner among the other ranked candidates."""
        if result.best is None:
            return None
        best = result.best.cbs_code
        return next((s for s in result.ranked[1:] if frozenset((best, s.cbs_code)) in self.pairs), None)

    def apply(self, result: "MatchResult", engine: bool) -> "MatchResult":
        """``result`` with a thin ACCEPT of a listed pair held to CONFIRM; ``engine``: the scores
        are an engine's shares (else the transcript matcher's)."""
        if result.verdict is not MatchVerdict.ACCEPT or not self.pairs:
            return result
        partner = self.partner(result)
        if partner is None or result.best.score - partner.score >= (self.margin if engine else self.transcript_margin):
            return result
        return MatchResult(MatchVerdict.CONFIRM, result.ranked, result.margin, held_by=partner.cbs_code)


# --- candidate keys ------------------------------------------------------------------------

class _Kind:
    NAME = 0
    ALIAS = 1
    FORMER = 2
    PLACE = 3


_KIND_WEIGHT = {_Kind.NAME: 1.0, _Kind.ALIAS: 1.0, _Kind.FORMER: 0.97, _Kind.PLACE: 0.92}

_GEM_SUFFIX = re.compile(r"\s+gem\.?\s.*$", re.IGNORECASE)
_GLUED_PARENS = re.compile(r"(?<=\w)\(([^)]*)\)|\(([^)]*)\)(?=\w)")
_SPACED_PARENS = re.compile(r"\s*\(([^)]*)\)\s*")


def _display_variants(display: str) -> set[str]:
    """Spoken variants of a data spelling: 'Braambos(ch)', '(De) Vleut', 'Bergen (NH.)',
    'Alphen a/d Rijn', 'Spaarndam gem. Haarlem', 'Nuenen c.a.'."""
    s = _GEM_SUFFIX.sub("", display)
    s = re.sub(r"\ba/d\b", "aan de", s)
    s = re.sub(r"\bc\.a\.?", "", s)
    out = {s}
    # glued optional letters: Braambos(ch) -> Braambos, Braambosch
    while any(_GLUED_PARENS.search(v) for v in out):
        nxt = set()
        for v in out:
            m = _GLUED_PARENS.search(v)
            if not m:
                nxt.add(v)
                continue
            inner = m.group(1) if m.group(1) is not None else m.group(2)
            nxt.add(v[: m.start()] + v[m.end():])
            nxt.add(v[: m.start()] + inner + v[m.end():])
        out = nxt
    final = set()
    for v in out:
        if "(" in v:
            final.add(_SPACED_PARENS.sub(" ", v))  # without the qualifier
            final.add(v.replace("(", " ").replace(")", " "))  # with it
        else:
            final.add(v)
    return {n for n in (normalise(v) for v in final) if n}


def _key_variants(norm: str) -> set[str]:
    """Extra spoken forms of a normalised name: without a leading 's/'t article."""
    out = {norm}
    words = norm.split()
    if len(words) > 1 and words[0] in {"s", "t"}:
        out.add(" ".join(words[1:]))
    return out


@dataclass(frozen=True, slots=True)
class _Key:
    cbs_index: int
    kind: int
    display: str
    norm: str  # normalised, words separated by spaces


@dataclass(frozen=True, slots=True)
class _Window:
    start: int
    end: int  # exclusive
    text: str  # normalised words joined by spaces


class Matcher:
    """Scores n-best transcripts against one candidate set (one area code)."""

    def __init__(self, candidates: Sequence["Municipality"], thresholds: Thresholds | None = None,
                 confusable: ConfusableRule | None = None):
        self.candidates: tuple["Municipality", ...] = tuple(candidates)
        self.thresholds = thresholds or Thresholds()
        self.confusable = (confusable or ConfusableRule()).within(m.cbs_code for m in self.candidates)
        best: dict[tuple[int, str], _Key] = {}
        for i, m in enumerate(self.candidates):
            sources: list[tuple[int, str]] = [(_Kind.NAME, m.name)]
            sources += [(_Kind.ALIAS, a) for a in m.aliases]
            sources += [(_Kind.FORMER, f) for f in m.former_names]
            sources += [(_Kind.PLACE, p) for p in m.places]
            for kind, display in sources:
                for variant in _display_variants(display):
                    for norm in _key_variants(variant):
                        k = (i, norm)
                        if k not in best or kind < best[k].kind:
                            best[k] = _Key(i, kind, display, norm)
        self._keys: tuple[_Key, ...] = tuple(best.values())
        self._plain = [k.norm.replace(" ", "") for k in self._keys]
        self._phon = [phonetic(k.norm).replace(" ", "") for k in self._keys]
        self._weights = np.array([_KIND_WEIGHT[k.kind] for k in self._keys], dtype=np.float32)
        self._cand_of_key = np.array([k.cbs_index for k in self._keys], dtype=np.int32)
        name_words: set[str] = set()
        for k in self._keys:
            words = k.norm.split()
            name_words.update((words[0], words[-1]))
        self._edge_words = name_words
        self._carriers = CARRIER_WORDS - name_words
        self._max_words = max((len(k.norm.split()) for k in self._keys), default=1)

    # -- vocabulary ----------------------------------------------------------------

    def vocabulary(self) -> frozenset[str]:
        """Every normalised phrase this matcher knows (names, aliases, villages...)."""
        return frozenset(k.norm for k in self._keys)

    def words(self) -> frozenset[str]:
        """Every single word of :meth:`vocabulary`."""
        return frozenset(w for k in self._keys for w in k.norm.split())

    # -- matching ------------------------------------------------------------------

    def _windows(self, text: str) -> list[_Window]:
        words = [w for w in normalise(text).split() if w not in FILLER_WORDS][:40]
        carriers = self._carriers
        span = min(5, max(self._max_words + 1, 1))
        out = []
        for start in range(len(words)):
            if words[start] in carriers:
                continue
            for end in range(start + 1, min(len(words), start + span) + 1):
                if words[end - 1] in carriers:
                    continue
                out.append(_Window(start, end, " ".join(words[start:end])))
        return out

    def _score_hypothesis(self, text: str) -> list[tuple[float, int, _Window] | None]:
        """Per candidate: (score, key index, window) of its best key in this transcript."""
        n = len(self.candidates)
        result: list[tuple[float, int, _Window] | None] = [None] * n
        windows = self._windows(text)
        if not windows or not self._keys:
            return result
        plain_w = [w.text.replace(" ", "") for w in windows]
        phon_w = [phonetic(w.text).replace(" ", "") for w in windows]
        plain = process.cdist(plain_w, self._plain, scorer=fuzz.ratio, dtype=np.float32, workers=1)
        phon = process.cdist(phon_w, self._phon, scorer=fuzz.ratio, dtype=np.float32, workers=1)
        scores = np.maximum(plain, phon * 0.97) * self._weights  # (windows, keys)
        best_window = scores.argmax(axis=0)
        best_per_key = scores[best_window, np.arange(scores.shape[1])]
        for key_index in np.argsort(-best_per_key, kind="stable"):
            ci = int(self._cand_of_key[key_index])
            if result[ci] is None:
                result[ci] = (
                    float(best_per_key[key_index]),
                    int(key_index),
                    windows[int(best_window[key_index])],
                )
        # longest match wins: a candidate whose window sits strictly inside another
        # candidate's good window loses some points
        t = self.thresholds
        adjusted = list(result)
        for ci, r in enumerate(result):
            if r is None:
                continue
            for cj, other in enumerate(result):
                if cj == ci or other is None or other[0] < t.containment_floor:
                    continue
                a, b = r[2], other[2]
                if b.start <= a.start and a.end <= b.end and (b.end - b.start) > (a.end - a.start):
                    adjusted[ci] = (r[0] - t.containment_penalty, r[1], r[2])
                    break
        return adjusted

    def decide(self, recognition: Recognition) -> MatchResult:
        """The verdict on one recogniser result. An engine's verdict is taken as given, not
        re-derived from scores: CHOOSE ranks its two best names, NOTHING rejects with nothing
        ranked. Without one, the transcripts (or the candidates' phrases) are matched."""
        verdict = recognition.verdict
        if verdict is None:
            return self.match(recognition.nbest)
        if verdict is EngineVerdict.NOTHING:
            return MatchResult(MatchVerdict.REJECT, (), 0.0)
        names = {m.cbs_code: m.name for m in self.candidates}
        ranked = tuple(Scored(c.key, names[c.key], round(100.0 * c.share, 2), heard=c.said or c.phrase)
                       for c in recognition.candidates if c.key in names)
        if verdict is EngineVerdict.CHOOSE:
            ranked = ranked[:2]
        if not ranked or (verdict is EngineVerdict.CHOOSE and len(ranked) < 2):
            # an engine asked about other names than these (a driver bug): the caller is asked
            # again rather than sent somewhere nobody decided
            return MatchResult(MatchVerdict.REJECT, (), 0.0)
        margin = round(ranked[0].score - (ranked[1].score if len(ranked) > 1 else 0.0), 2)
        return self.confusable.apply(MatchResult(MatchVerdict(verdict.value), ranked, margin), engine=True)

    def match(self, nbest: Sequence[tuple[str, float]]) -> MatchResult:
        best: dict[int, tuple[float, int, str]] = {}
        for rank, (text, conf) in enumerate(nbest[:10]):
            if not text or not text.strip():
                continue
            conf = min(max(float(conf), 0.0), 1.0)
            discount = 4.0 * rank + 15.0 * (1.0 - conf)
            for ci, r in enumerate(self._score_hypothesis(text)):
                if r is None:
                    continue
                score = max(0.0, min(100.0, r[0] - discount))
                if ci not in best or score > best[ci][0]:
                    best[ci] = (score, r[1], r[2].text)
        ranked = tuple(
            Scored(
                cbs_code=self.candidates[ci].cbs_code,
                name=self.candidates[ci].name,
                score=round(score, 2),
                heard=self._keys[key_index].display,
                span=span,
            )
            for ci, (score, key_index, span) in sorted(best.items(), key=lambda kv: (-kv[1][0], kv[0]))
        )
        return self._decide(ranked)

    def _decide(self, ranked: tuple[Scored, ...]) -> MatchResult:
        t = self.thresholds
        if not ranked:
            return MatchResult(MatchVerdict.REJECT, (), 0.0)
        top = ranked[0].score
        second = ranked[1].score if len(ranked) > 1 else 0.0
        margin = round(top - second, 2)
        if top < t.reject_below:
            verdict = MatchVerdict.REJECT
        elif second >= t.choose_floor and margin < t.choose_margin:
            verdict = MatchVerdict.CHOOSE
        elif (top >= t.accept_at and margin >= t.accept_margin) or (
            top >= t.exact_at and margin >= t.exact_margin
        ):
            verdict = MatchVerdict.ACCEPT
        else:
            verdict = MatchVerdict.CONFIRM
        return self.confusable.apply(MatchResult(verdict, ranked, margin), engine=False)


# --- per-area-code cache ---------------------------------------------------------------------

_CACHE: dict[tuple[str, str], Matcher] = {}


def matcher_for(plan: "NumberingPlan", area_code: str) -> Matcher:
    """The (cached) matcher for one area code of one plan version."""
    key = (plan.version, area_code)
    m = _CACHE.get(key)
    if m is None:
        if len(_CACHE) > 1024:
            _CACHE.clear()
        m = _CACHE[key] = Matcher(plan.candidates(area_code))
    return m


def vocabulary_words(matchers: Iterable[Matcher]) -> frozenset[str]:
    out: set[str] = set()
    for m in matchers:
        out |= m.words()
    return frozenset(out)
