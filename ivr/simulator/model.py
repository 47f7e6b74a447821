"""The simulated world: the 2020 traffic model, caller profiles, the calendar, and the
per-process world (plan, weights, memoised matchers) every worker builds once."""

from __future__ import annotations

import random
from bisect import bisect
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Any, Sequence

from rapidfuzz import fuzz

from ivr.simulator.confusion import ConfusionModel
from ivr.core.flow import CallFlow, FlowSettings
from ivr.core.matcher import ConfusableRule, Matcher
from ivr.core.recognition import Recognition
from ivr.core.words import normalise, phonetic
from ivr.core.yes_no import yes_no
from ivr.core.plan import TABLE_FILES, AccessNumber, Municipality, NumberingPlan, RoutingMode, Status
from ivr.plan_files import read_rows
from ivr.core.prompts import LANGUAGES


CALLS_PER_YEAR_2020 = 12_000_000
CHUNK = 10_000  # calls per random stream; fixed so results do not depend on --workers
START_DATE = date(2020, 1, 6)  # a Monday

# --- the traffic model -----------------------------------------------------------------------

# Share of a weekday's calls per hour (local time), office hours peaking mid-morning.
WEEKDAY_HOURS = (0.1, 0.05, 0.05, 0.05, 0.05, 0.1, 0.3, 1.6, 6.0, 11.0, 11.8, 11.0,
                 8.2, 9.6, 9.6, 8.4, 5.8, 2.8, 1.5, 1.0, 0.8, 0.5, 0.3, 0.2)
WEEKEND_HOURS = (0.3, 0.2, 0.1, 0.1, 0.1, 0.2, 0.5, 1.5, 4.0, 7.0, 8.5, 9.0,
                 8.5, 8.0, 8.0, 7.5, 7.0, 6.5, 5.5, 4.5, 3.5, 2.5, 1.5, 0.8)
DAY_WEIGHTS = (1.0, 0.97, 0.93, 0.95, 0.82, 0.10, 0.06)  # Monday .. Sunday


@dataclass
class CallerProfile:
    """Who calls and how they behave. Defaults: the 2020 shape (see docs/simulator.md)."""

    calls_per_year: int = CALLS_PER_YEAR_2020
    # weight of a municipality's residents in the traffic, by 14+ status
    weight_active: float = 1.0
    weight_technical: float = 0.45
    weight_not_connected: float = 0.25  # callers still try Haarlemmermeer
    invalid_share: float = 0.004  # unknown/incomplete area codes
    dtmf_area_share: float = 0.25  # shared area codes with a DTMF menu instead of speech (3 of 12 in 2020)
    # what callers say (speech): kinds of utterance, and conditions that override the kind's rates
    kind_mix: dict[str, float] = field(default_factory=lambda: {
        "bare": 0.62, "phrase": 0.20, "village": 0.12, "former": 0.06})
    noisy_share: float = 0.085
    accent_share: float = 0.105
    alias_share: float = 0.10  # say an alias (Frisian name, 'Den Bosch') instead of the name
    switch_to_name: float = 0.5  # on a repeat, a village/sentence caller says the plain name instead
    nbest_alt_when_correct: float = 0.10  # P(a similar name as 2nd hypothesis) when recognised right
    nbest_alt_when_confused: float = 0.20  # P(the right words as 2nd hypothesis) when confused
    dtmf_during_speech: float = 0.01  # press a key instead of speaking (-> menu; '0' -> operator)
    # impatience: P(hang up) per question, by phase, and during the transfer
    hangup_speech: float = 0.006
    hangup_repeat: float = 0.08  # asked again ("niet verstaan", menu after failures): frustration
    hangup_confirm: float = 0.004
    hangup_menu: float = 0.012
    hangup_transfer_asked: float = 0.05  # after speaking the name / choosing (2020: 5%)
    hangup_transfer_direct: float = 0.025
    # the DTMF menu
    menu_wrong_digit: float = 0.02
    menu_no_input: float = 0.02
    menu_operator: float = 0.015
    # the transfer
    transfer_fail: float = 0.01  # busy / no answer at the municipality
    ring_s_median: float = 6.0
    # after a failed transfer: the alternative number and the offer to call back (no 2020 figure: assumed)
    callback_consent: float = 0.6  # press 1 to be called back
    hangup_callback: float = 0.1  # hang up at the offer
    callback_mistyped: float = 0.05  # a digit short: not a Dutch number, asked again
    talk_s_median: float = 180.0
    # new paths, off in the 2020 world (it had neither): callers who choose English at the
    # greeting (70% press 9, the rest say "English"), and callers from abroad on an access
    # number (70% say the name, the rest key in the area code)
    english_share: float = 0.0
    abroad_share: float = 0.0
    # callers on a shared area code who name a municipality outside it (the national second pass)
    wrong_code_share: float = 0.0
    # the suggestion (issue 11, item 3), off in the 2020 world: callers whose hash reached a
    # municipality of the dialled area code within N days (of whom repeat_same want that one
    # again, the rest another), and callers on a landline (landline_home of them in the area code of
    # the municipality they call, the rest in another candidate's). suggest=False: the same callers,
    # but the driver tells the flow nothing (the comparison, with the same seed)
    repeat_share: float = 0.0
    repeat_same: float = 0.8
    landline_share: float = 0.0
    landline_home: float = 0.8
    suggest: bool = True
    suggestion_named: float = 0.4  # a caller who does not want the suggestion says the name instead of "nee"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


PROFILES = {"baseline-2020": CallerProfile}

PHRASES = (
    "ik wil graag de gemeente {} bellen",
    "gemeente {} alstublieft",
    "eh {}",
    "ik woon in {}",
    "met de gemeente {} graag",
    "{} graag",
    "ik moet de gemeente {} hebben",
    "ja hallo ik wil {} spreken",
)
GARBAGE = (
    "eh", "hallo", "ja hallo", "wat zegt u", "hm", "sorry", "ik versta u niet", "mevrouw",
    "ik wil iemand spreken", "afval ophalen", "paspoort verlengen", "een afspraak maken",
    "parkeervergunning", "de burgerzaken", "ik heb een vraag", "goedemorgen", "wacht even",
)
YES = ("ja", "ja graag", "klopt", "ja dat klopt", "jazeker")
NO = ("nee", "nee hoor", "nee dat klopt niet", "neen")
NEITHER = ("nee geen van beide", "nee", "allebei niet")

# rough durations of prompts (s) for the simulated clock
_PROMPT_S = {"welkom": 3.0, "zeg_gemeente": 2.5, "niet_verstaan": 2.0, "kies_menu": 1.5, "voor": 0.3,
             "toets": 0.3, "medewerker_keuze": 2.0, "meer_keuzes": 1.5, "bedoelt_u": 0.8, "ja_nee": 2.0,
             "een_of_twee": 2.0, "of": 0.3, "doorverbinden": 1.2, "medewerker": 2.0, "kies_engels": 2.0,
             "welke_gemeente": 4.5, "toets_netnummer": 3.5, "onbekend_netnummer": 1.5,
             "suggestie_weer": 1.5, "suggestie_vast": 1.2, "suggestie_antwoord": 3.5, "suggestie_toets": 2.0}

#: the access number the simulated callers from abroad dial (added to the plan only when they exist)
SIM_ACCESS_NUMBER = AccessNumber("+31 88 000 1414", "31880001414")


def prompt_s(key: str) -> float:
    lang, _, rest = key.partition("/")
    if rest and lang in LANGUAGES:  # another language's prompt: as long as the Dutch one
        key = rest
    if key.startswith("gemeente/"):
        return 0.8
    if key.startswith("cijfer/"):
        return 0.4
    return _PROMPT_S.get(key, 1.5)


# --- the world each worker builds once ----------------------------------------------------------

class _MemoMatcher(Matcher):
    """The real Matcher, with the scoring of one transcript memoised (it is a pure function
    of the text). If the matcher's internals change, this only loses its speed-up."""

    def __init__(self, candidates: Sequence[Municipality], confusable: ConfusableRule | None = None):
        super().__init__(candidates, confusable=confusable)
        self._text_memo: dict = {}

    def _score_hypothesis(self, text):
        r = self._text_memo.get(text)
        if r is None:
            if len(self._text_memo) >= 50_000:
                self._text_memo.clear()
            r = self._text_memo[text] = super()._score_hypothesis(text)
        return r


class CachedMatcher:
    """The real Matcher with its (pure) answers memoised: simulated text repeats a lot."""

    __slots__ = ("matcher", "_memo", "hits", "misses")
    MAX = 200_000

    def __init__(self, candidates: Sequence[Municipality], confusable: ConfusableRule | None = None):
        self.matcher = _MemoMatcher(candidates, confusable)
        self._memo: dict = {}
        self.hits = self.misses = 0

    def decide(self, recognition: Recognition):
        # the simulated caller's recogniser transcribes: only a transcript n-best is memoised
        if recognition.verdict is None:
            return self.match(recognition.nbest)
        return self.matcher.decide(recognition)

    def match(self, nbest):
        key = tuple(nbest)
        r = self._memo.get(key)
        if r is None:
            self.misses += 1
            if len(self._memo) >= self.MAX:
                self._memo.clear()
            r = self._memo[key] = self.matcher.match(nbest)
        else:
            self.hits += 1
        return r


class World:
    """Plan, traffic weights and per-area-code helpers, built once per process."""

    def __init__(self, plan: NumberingPlan, profile: CallerProfile, model: ConfusionModel, seed: int,
                 settings: FlowSettings | None = None, confusable: ConfusableRule | None = None):
        if profile.abroad_share and not plan.access_numbers:
            plan = plan.with_changes(access_numbers=(SIM_ACCESS_NUMBER,))
        self.plan, self.profile, self.model = plan, profile, model
        self._matchers: dict[tuple[str, ...], CachedMatcher] = {}
        self.confusable_rule = confusable  # listed pairs not accepted on a thin margin (None: as in 2020)
        self.dtmf_codes = _dtmf_codes(plan, profile.dtmf_area_share, seed)
        self.shared_codes = sorted(c for c, a in plan.area_codes.items() if a.shared)
        # (wanted municipality, dialled area code) pairs weighted by residents x status weight
        pairs: list[tuple[str, str]] = []
        weights: list[float] = []
        status_w = {Status.ACTIVE: profile.weight_active, Status.TECHNICAL: profile.weight_technical,
                    Status.NOT_CONNECTED: profile.weight_not_connected}
        for cbs, code, residents in _resident_pairs(plan):
            w = residents * status_w[plan.municipalities[cbs].status]
            if w > 0:
                pairs.append((cbs, code))
                weights.append(w)
        self.pairs = pairs
        self.pair_cum = _cumulative(weights)
        self.kinds = list(profile.kind_mix)
        self.kind_cum = _cumulative([profile.kind_mix[k] for k in self.kinds])
        self.day_weights, self.day_starts, self.hour_cum = [], [], []
        self.similar: dict[tuple[str, str], tuple[list[str], list[float]]] = {}
        self.plan_timeout = 5.0  # FlowSettings.speech_timeout_s: a caller's silence costs this long
        self._flows_speech = dict(speech_available=True, matcher_factory=self.matcher_factory, yes_no=yes_no,
                                  settings=settings)

    # -- matchers ---------------------------------------------------------------------

    def matcher_factory(self, candidates: Sequence[Municipality]) -> CachedMatcher:
        key = tuple(m.cbs_code for m in candidates)
        m = self._matchers.get(key)
        if m is None:
            m = self._matchers[key] = CachedMatcher(candidates, self.confusable_rule)
        return m

    def cache_stats(self) -> tuple[int, int]:
        return (sum(m.hits for m in self._matchers.values()), sum(m.misses for m in self._matchers.values()))

    def new_flow(self, area_code: str | None) -> CallFlow:
        if area_code in self.dtmf_codes:
            return CallFlow(self.plan, speech_available=False, now=_FIXED_NOW, settings=self._flows_speech["settings"])
        return CallFlow(self.plan, now=_FIXED_NOW, **self._flows_speech)

    def confusable(self, area_code: str, wanted: str) -> tuple[list[str], list[float]]:
        """Other candidates of the area code, weighted by how alike their names sound."""
        key = (area_code, wanted)
        got = self.similar.get(key)
        if got is None:
            me = phonetic(normalise(self.plan.municipalities[wanted].name))
            others = [c for c in self.plan.area_codes[area_code].municipalities if c != wanted]
            w = [(fuzz.ratio(me, phonetic(normalise(self.plan.municipalities[c].name))) / 100) ** 4 + 0.02
                 for c in others]
            got = self.similar[key] = (others, _cumulative(w) if w else [])  # a unique code (asked from abroad)
        return got

    # -- calendar -----------------------------------------------------------------------

    def set_calendar(self, days: int) -> None:
        tz = _amsterdam()
        self.day_starts = [datetime.combine(START_DATE + timedelta(d), datetime.min.time(), tz).timestamp()
                           for d in range(days)]
        self.day_weights = [DAY_WEIGHTS[(START_DATE + timedelta(d)).weekday()] for d in range(days)]
        self.day_cum = _cumulative(self.day_weights)
        self.hour_cum = [_cumulative(WEEKDAY_HOURS), _cumulative(WEEKEND_HOURS)]

    def wall_time(self, rng: random.Random) -> float:
        d = bisect(self.day_cum, rng.random())
        d = min(d, len(self.day_starts) - 1)
        weekend = (START_DATE + timedelta(d)).weekday() >= 5
        h = min(bisect(self.hour_cum[weekend], rng.random()), 23)
        return self.day_starts[d] + h * 3600 + rng.random() * 3600


def _fixed_now() -> datetime:
    return datetime(2020, 3, 2, 10, 0, tzinfo=timezone.utc)


_FIXED_NOW = _fixed_now  # routing asks for "now" (calamities); the simulated world has none in force


def _amsterdam():
    try:
        from zoneinfo import ZoneInfo
        return ZoneInfo("Europe/Amsterdam")
    except Exception:  # pragma: no cover - no tz database
        return timezone(timedelta(hours=1))


def _cumulative(weights: Sequence[float]) -> list[float]:
    total = float(sum(weights))
    out, acc = [], 0.0
    for w in weights:
        acc += w / total
        out.append(acc)
    out[-1] = 1.0
    return out


def _dtmf_codes(plan: NumberingPlan, share: float, seed: int) -> frozenset[str]:
    """A fixed share of the shared area codes that use the DTMF menu: part of the modelled
    world, not of the randomness, so the same codes for every seed and worker."""
    shared = sorted(c for c, a in plan.area_codes.items() if a.mode is RoutingMode.SPEECH)
    rng = random.Random("dtmf-codes")
    return frozenset(rng.sample(shared, round(share * len(shared))))


def _resident_pairs(plan: NumberingPlan) -> list[tuple[str, str, float]]:
    """(CBS code, area code, residents) for every significant pair the plan routes."""
    out = []
    for row in read_rows(TABLE_FILES["municipality_area_codes"]):
        code, cbs = row["area_code"], row["cbs_code"]
        if row.get("significant") != "True" or code not in plan.area_codes:
            continue
        if cbs not in plan.area_codes[code].municipalities:
            continue
        out.append((cbs, code, float(row.get("residents_2021_est") or 0)))
    return out
