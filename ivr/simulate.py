"""Traffic simulator: the real call flow, routing and matcher, driven by simulated callers.

``ivr simulate`` runs :class:`~ivr.flow.CallFlow` in-process (no Asterisk) for a traffic
model with the shape of 2020: ~12 million calls a year, each call for a municipality
drawn by population (residents per area code from the shipped data), on a weekday/hour
profile, with unique, speech and DTMF area codes, and callers who say a village, a
former municipality or a whole sentence, who have an accent or a noisy line, who hang
up impatiently, or who ask for a municipality that is not connected (Haarlemmermeer).

Recognition is simulated by a :mod:`~ivr.confusion` model that produces *text*
(n-best): the right words, a similar candidate's name, or noise. The flow's real
:class:`~ivr.matcher.Matcher` decides on that text, so confusions play out as they would
on a real call. Each call leaves the same :class:`~ivr.callrecord.CallRecord` a real
call does, plus ``expected_municipality`` (ground truth), written with
:meth:`CallStore.save_many`.

Deterministic for a seed, whatever the number of workers: calls are cut into fixed
chunks, each with its own random stream. KPIs are always accumulated over *all* calls
(the report's :class:`~ivr.report.KpiAccumulator`, merged across workers) and written
next to the database (``<db>.summary.json``), also when only a sample of the records is stored (``--records sample``).
"""

from __future__ import annotations

import csv
import json
import math
import multiprocessing as mp
import os
import random
import sqlite3
import sys
import time
from bisect import bisect
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from rapidfuzz import fuzz

from .callrecord import CallRecord
from .confusion import ConfusionModel, get_profile
from .drive import drive, run_sync
from .flow import (
    AskName,
    CallEnded,
    CallerHungUp,
    CallFlow,
    CallStarted,
    ChooseOfTwo,
    Digit,
    MenuPage,
    NoInput,
    Question,
    SpeechHeard,
    Transfer,
    TransferAnswered,
    TransferFailed,
)
from .matcher import Matcher, normalise, phonetic, yes_no
from .report import BASELINE_2020 as REPORT_BASELINE
from .report import KpiAccumulator, Kpis
from .routing import MORE_DIGIT, OPERATOR_DIGIT
from .plan import DATA_DIR, Municipality, NumberingPlan, RoutingMode, Status, load_base_plan

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
    talk_s_median: float = 180.0

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
             "een_of_twee": 2.0, "of": 0.3, "doorverbinden": 1.2, "medewerker": 2.0}


def prompt_s(key: str) -> float:
    if key.startswith("gemeente/"):
        return 0.8
    if key.startswith("cijfer/"):
        return 0.4
    return _PROMPT_S.get(key, 1.5)


# --- the world each worker builds once ----------------------------------------------------------

class _MemoMatcher(Matcher):
    """The real Matcher, with the scoring of one transcript memoised (it is a pure function
    of the text). If the matcher's internals change, this only loses its speed-up."""

    def __init__(self, candidates: Sequence[Municipality]):
        super().__init__(candidates)
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

    def __init__(self, candidates: Sequence[Municipality]):
        self.matcher = _MemoMatcher(candidates)
        self._memo: dict = {}
        self.hits = self.misses = 0

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

    def __init__(self, plan: NumberingPlan, profile: CallerProfile, model: ConfusionModel, seed: int):
        self.plan, self.profile, self.model = plan, profile, model
        self._matchers: dict[tuple[str, ...], CachedMatcher] = {}
        self.dtmf_codes = _dtmf_codes(plan, profile.dtmf_area_share, seed)
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
        self._flows_speech = dict(speech_available=True, matcher_factory=self.matcher_factory, yes_no=yes_no)

    # -- matchers ---------------------------------------------------------------------

    def matcher_factory(self, candidates: Sequence[Municipality]) -> CachedMatcher:
        key = tuple(m.cbs_code for m in candidates)
        m = self._matchers.get(key)
        if m is None:
            m = self._matchers[key] = CachedMatcher(candidates)
        return m

    def cache_stats(self) -> tuple[int, int]:
        return (sum(m.hits for m in self._matchers.values()), sum(m.misses for m in self._matchers.values()))

    def new_flow(self, area_code: str | None) -> CallFlow:
        if area_code in self.dtmf_codes:
            return CallFlow(self.plan, speech_available=False, now=_FIXED_NOW)
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
            got = self.similar[key] = (others, _cumulative(w))
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
    with open(DATA_DIR / "municipality_area_codes.csv", newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            code, cbs = row["area_code"], row["cbs_code"]
            if row.get("significant") != "True" or code not in plan.area_codes:
                continue
            if cbs not in plan.area_codes[code].municipalities:
                continue
            out.append((cbs, code, float(row.get("residents_2021_est") or 0)))
    return out


# --- one simulated caller ---------------------------------------------------------------------

@dataclass
class Caller:
    wanted: str
    area_code: str
    kind: str  # bare / phrase / village / former
    condition: str  # clean / noisy / accent
    phrase: str = "{}"
    said_name: str = ""  # the words the caller uses for the municipality


def _lognormal(rng: random.Random, median: float, sigma: float = 0.5) -> float:
    return median * math.exp(rng.gauss(0.0, sigma))


_CONF_STEPS = tuple(round(i / 10, 1) for i in range(11))


def _q(x: float) -> float:
    return _CONF_STEPS[int(x * 10 + 0.5)]  # confidences in 0.1 steps: keeps the matcher memo small


class SimulatedCall:
    """Drives one CallFlow with one caller's behaviour; the world's clock is simulated."""

    def __init__(self, world: World, rng: random.Random):
        self.w, self.rng = world, rng

    # -- caller set-up --------------------------------------------------------------------

    def new_caller(self) -> Caller | None:
        w, rng, p = self.w, self.rng, self.w.profile
        if rng.random() < p.invalid_share:
            return None
        wanted, code = w.pairs[bisect(w.pair_cum, rng.random())]
        kind = w.kinds[bisect(w.kind_cum, rng.random())]
        u = rng.random()
        condition = "noisy" if u < p.noisy_share else "accent" if u < p.noisy_share + p.accent_share else "clean"
        caller = Caller(wanted, code, kind, condition)
        self._choose_words(caller, kind)
        return caller

    def _choose_words(self, caller: Caller, kind: str) -> None:
        rng, m = self.rng, self.w.plan.municipalities[caller.wanted]
        caller.kind = kind
        caller.phrase = rng.choice(PHRASES) if kind == "phrase" else "{}"
        if kind == "village" and m.places:
            caller.said_name = rng.choice(m.places)
        elif kind == "former" and m.former_names:
            caller.said_name = rng.choice(m.former_names)
        elif m.aliases and rng.random() < self.w.profile.alias_share:
            caller.said_name = rng.choice(m.aliases)
        else:
            caller.said_name = m.name

    # -- recognition ----------------------------------------------------------------------

    def recognise(self, caller: Caller) -> tuple[tuple[tuple[str, float], ...] | None, float]:
        """The simulated recogniser: (n-best or None for no input, latency ms)."""
        rng, w = self.rng, self.w
        rates_kind = caller.condition if caller.condition != "clean" else caller.kind
        rates = w.model.rates(rates_kind)
        c0, c1, c2 = _cum_rates(rates)
        mu, sigma = _lat_params(rates)
        latency = math.exp(rng.gauss(mu, sigma))
        u = rng.random()
        right = caller.phrase.format(caller.said_name)
        if u < c0:
            nbest = [(right, _q(0.75 + 0.2 * rng.random()))]
            if rng.random() < w.profile.nbest_alt_when_correct:
                nbest.append((caller.phrase.format(self._confusable_name(caller)), _q(0.3 + 0.3 * rng.random())))
            return tuple(nbest), latency
        if u < c1:
            nbest = [(caller.phrase.format(self._confusable_name(caller)), _q(0.5 + 0.35 * rng.random()))]
            if rng.random() < w.profile.nbest_alt_when_confused:
                nbest.append((right, _q(0.3 + 0.3 * rng.random())))
            return tuple(nbest), latency
        if u < c2:
            return ((rng.choice(GARBAGE), _q(0.3 + 0.4 * rng.random())),), latency
        return None, latency

    def _confusable_name(self, caller: Caller) -> str:
        others, cum = self.w.confusable(caller.area_code, caller.wanted)
        if not others:
            return caller.said_name
        return self.w.plan.municipalities[others[bisect(cum, self.rng.random())]].name

    def _answer_text(self, text: str) -> tuple[tuple[str, float], ...] | None:
        """A short answer (ja/nee) through the recogniser's yes/no error rate."""
        rng = self.rng
        if rng.random() < self.w.model.yes_no_error:
            return None if rng.random() < 0.5 else ((rng.choice(NO if text in YES else YES), 0.6),)
        return ((text, 0.9),)

    # -- the call ---------------------------------------------------------------------------

    def run(self, index: int, call_id: str) -> CallRecord:
        rng, w = self.rng, self.w
        caller = self.new_caller()
        if caller is None:
            dialled = "14" + rng.choice(("0999", "09", "06", "0800", "1"))
            flow = w.new_flow(None)
        else:
            dialled = "14" + caller.area_code
            flow = w.new_flow(caller.area_code)
        wall = w.wall_time(rng)
        self.caller, self.t, self.last_at = caller, 0.0, 0.0
        self.asked_once = False  # the name question was asked before
        self.asked = False  # any question was asked
        actions = flow.handle(CallStarted(0.0, call_id, dialled, caller=f"{rng.getrandbits(48):012x}", wall_time=wall,
                                          expected=caller.wanted if caller else None))
        run_sync(drive(flow, self, actions, observe=self._fed))
        t = self.last_at
        if not flow.ended:  # e.g. a flow that stopped asking: the caller gives up
            flow.handle(CallerHungUp(t + 1.0, "16"))
        flow.handle(CallEnded(t, wall + t))
        return flow.record

    def _fed(self, event, actions) -> None:
        self.t = self.last_at = event.at  # the simulated clock follows the events

    # -- the port the drive loop carries the flow's actions out on (ivr.drive.CallPort) ---------

    def now(self) -> float:
        return self.t

    async def play(self, prompts, stop_digits: str = "") -> str | None:
        self.t += sum(prompt_s(k) for k in prompts)  # simulated callers never press * to go back
        return None

    async def collect_digit(self, menu: MenuPage):
        self.asked = True
        return self._menu(self.caller, menu, self.t)

    async def listen(self, question: Question):
        self.asked = True
        return self._listen(self.caller, question, self.t)

    async def dial(self, transfer: Transfer, started_at: float) -> list:
        return self._transfer(transfer, self.t)

    async def hang_up(self) -> None:
        return None

    def _hang_up_in(self, t: float, span: float):
        return CallerHungUp(t + self.rng.random() * span, "16")

    def _listen(self, caller: Caller, action: Question, t: float):
        rng, p = self.rng, self.w.profile
        prompt_time = sum(prompt_s(k) for k in action.prompts)
        confirming = not isinstance(action, AskName)
        p_hang = p.hangup_confirm if confirming else p.hangup_repeat if self.asked_once else p.hangup_speech
        if rng.random() < p_hang:
            return self._hang_up_in(t, prompt_time + 2.0)
        t += prompt_time + _lognormal(rng, 0.8, 0.4)  # listen, then start speaking
        if not confirming:
            if rng.random() < p.dtmf_during_speech:
                return Digit(t, "0" if rng.random() < 0.3 else "1")
            if self.asked_once and caller.kind != "bare" and rng.random() < p.switch_to_name:
                self._choose_words(caller, "bare")
            self.asked_once = True
            nbest, latency_ms = self.recognise(caller)
            return self._heard(nbest, latency_ms, t, 1.0 + 0.1 * len(caller.said_name) / 2)
        # a confirmation: "Bedoelt u X?" (yes/no) or "X of Y?" (say the name or 1/2)
        if isinstance(action, ChooseOfTwo):
            if caller.wanted in action.options:
                if rng.random() < 0.3:
                    return Digit(t, str(action.options.index(caller.wanted) + 1))
                saved = (caller.kind, caller.phrase, caller.said_name)
                self._choose_words(caller, "bare")
                nbest, latency_ms = self.recognise(caller)
                caller.kind, caller.phrase, caller.said_name = saved
                return self._heard(nbest, latency_ms, t, 1.0)
            nbest = ((rng.choice(NEITHER), 0.9),)
            return self._heard(nbest, 250.0, t, 0.8)
        meant = action.municipality
        if rng.random() < 0.15:  # some answer by key
            return Digit(t, "1" if meant == caller.wanted else "2")
        text = rng.choice(YES) if meant == caller.wanted else rng.choice(NO)
        return self._heard(self._answer_text(text), 250.0, t, 0.5)

    def _heard(self, nbest, latency_ms: float, t: float, speech_s: float):
        ended = t + speech_s + 0.4  # end of speech + endpointer hangover
        at = ended + latency_ms / 1000
        if nbest is None:
            return NoInput(t + self.w.plan_timeout)
        return SpeechHeard(at, nbest, speech_ended_at=ended, recogniser_ms=round(latency_ms, 1))

    def _menu(self, caller: Caller | None, action: MenuPage, t: float):
        rng, p = self.rng, self.w.profile
        prompts = action.prompts
        if rng.random() < (p.hangup_repeat if action.again else p.hangup_menu):
            return self._hang_up_in(t, sum(prompt_s(k) for k in prompts))
        wanted = caller.wanted if caller else ""
        digit, heard_upto = None, len(prompts)
        for entry in action.entries:
            if entry.municipality == wanted:
                digit, heard_upto = entry.digit, entry.heard_after
                break
        if digit is None:
            digit = MORE_DIGIT if action.more else OPERATOR_DIGIT
        t += sum(prompt_s(k) for k in prompts[:heard_upto]) + _lognormal(rng, 0.7, 0.4)
        u = rng.random()
        if u < p.menu_no_input:
            return NoInput(t + action.timeout_s)
        if u < p.menu_no_input + p.menu_wrong_digit:
            others = [d for d in action.digits if d != digit and d != "0"] or [digit]
            return Digit(t, rng.choice(others))
        if u < p.menu_no_input + p.menu_wrong_digit + p.menu_operator:
            return Digit(t, "0")
        return Digit(t, digit)

    def _transfer(self, action: Transfer, t: float) -> list:
        """After the announcement (played by the port): ringing, then an answer, a failure or a hang-up."""
        rng, p = self.rng, self.w.profile
        ring = _lognormal(rng, p.ring_s_median, 0.6)
        if rng.random() < (p.hangup_transfer_asked if self.asked else p.hangup_transfer_direct):
            return [CallerHungUp(t + rng.random() * ring, "16")]
        if rng.random() < p.transfer_fail:
            return [TransferFailed(t + ring, rng.choice(("NOANSWER", "BUSY")))]
        answered_by = action.municipality or "operator"
        return [TransferAnswered(t + ring, answered_by, setup_ms=round(ring * 1000, 1)),
                CallerHungUp(t + ring + _lognormal(rng, p.talk_s_median, 0.8), "16")]


_RATE_CACHE: dict[int, tuple] = {}


def _cum_rates(rates) -> tuple[float, float, float]:
    got = _RATE_CACHE.get(id(rates))
    if got is None:
        got = _RATE_CACHE[id(rates)] = (rates.cumulative(), rates.latency_params(), rates)
    return got[0]


def _lat_params(rates) -> tuple[float, float]:
    _cum_rates(rates)
    return _RATE_CACHE[id(rates)][1]


# --- KPIs over all calls ------------------------------------------------------------------------
# The KPIs are the report's (ivr.report.KpiAccumulator): the simulator, `ivr report` and the API
# count the same things the same way. Each worker accumulates its calls; the parent merges.

BASELINE_2020 = {k: v for k, v in REPORT_BASELINE.items() if v is not None}


def new_accumulator(groups: bool = False) -> KpiAccumulator:
    """Overall KPIs always; per area code and municipality with ``groups`` (halves the speed:
    with ``--records all`` ``ivr report --db`` gives those breakdowns from the records anyway)."""
    return KpiAccumulator(misroute_window_s=300.0, groups=groups)


def merge_accumulators(into: KpiAccumulator, other: KpiAccumulator) -> KpiAccumulator:
    """Add ``other``'s counts to ``into`` (both fed disjoint sets of calls)."""
    into.merge(other)
    return into


def headline_table(kpis: Kpis) -> list[str]:
    """The 2020 comparison and the traffic mix, for the terminal."""
    g = kpis.overall
    lines = [f"{'figure (speech mode, as ivr report)':<36} {'simulated':>10} {'2020':>7} {'diff':>7}"]
    for key, value in g.headline.items():
        base = REPORT_BASELINE.get(key)
        if key.startswith("ivr_seconds"):
            lines.append(f"{key:<36} {value if value is not None else float('nan'):9.1f}s")
            continue
        v = value if value is not None else float("nan")
        b = f"{base * 100:6.1f}%" if base is not None else ""
        d = f"{(v - base) * 100:+6.1f}" if base is not None and value is not None else ""
        lines.append(f"{key:<36} {v * 100:9.2f}% {b:>7} {d:>7}")
    calls = g.calls or 1
    lines.append("modes: " + ", ".join(f"{m} {n / calls:.1%}" for m, n in g.modes.items()))
    lines.append("outcomes: " + ", ".join(f"{o} {n / calls:.1%}" for o, n in g.outcomes.items() if n))
    return lines


# --- running ---------------------------------------------------------------------------------------

@dataclass
class SimConfig:
    calls: int
    days: int = 365
    seed: int = 1
    profile: str = "baseline-2020"
    model_path: str | None = None  # a fitted confusion JSON instead of the profile's built-in one
    db: Path | None = None
    records: str = "all"  # all | sample | none
    sample: int = 100_000  # records kept with --records sample (every k-th call)
    workers: int = 2
    batch: int = 2000
    kpi_groups: bool = False  # KPIs per area code / municipality in the summary too
    metrics: bool = False  # count every call into the project's Prometheus metrics (ivr.metrics) too
    progress: bool = True
    caller_profile: CallerProfile | None = None

    def keep_every(self) -> int:
        if self.records == "all":
            return 1
        if self.records == "none" or self.db is None:
            return 0
        return max(1, math.ceil(self.calls / max(self.sample, 1)))


def _make_world(cfg: SimConfig) -> World:
    plan = load_base_plan()
    profile = cfg.caller_profile or PROFILES.get(cfg.profile, CallerProfile)()
    model = get_profile(cfg.model_path or (cfg.profile if cfg.profile in ("baseline-2020", "perfect") else cfg.profile))
    world = World(plan, profile, model, cfg.seed)
    world.set_calendar(cfg.days)
    return world


def run_chunks(cfg: SimConfig, chunks: Iterable[int], store_path: Path | None,
               progress: Callable[[int], None] | None = None, world: World | None = None,
               observer=None) -> dict:
    """Simulate the given chunks; returns KPI counts (dict) and stats."""
    world = world or _make_world(cfg)
    store = None
    keep = cfg.keep_every()
    if store_path is not None and keep:
        from .store import CallStore
        store = CallStore(store_path)
    kpis = new_accumulator(cfg.kpi_groups)
    if observer is None and cfg.metrics:
        from .metrics import MetricsObserver

        observer = MetricsObserver()
    pending: list[CallRecord] = []
    done = 0
    t0 = time.perf_counter()
    for chunk in chunks:
        lo, hi = chunk * CHUNK, min((chunk + 1) * CHUNK, cfg.calls)
        rng = random.Random(f"ivr-sim/{cfg.seed}/{chunk}")
        sim = SimulatedCall(world, rng)
        for i in range(lo, hi):
            rec = sim.run(i, f"sim{cfg.seed}-{i:09d}")
            kpis.add(rec)
            if observer is not None:
                observer.count(rec)  # the metrics a finished real call adds
            if store is not None and i % keep == 0:
                pending.append(rec)
                if len(pending) >= cfg.batch:
                    store.save_many(pending)
                    pending.clear()
        done += hi - lo
        if progress:
            progress(hi - lo)
    if store is not None:
        store.save_many(pending)
        store.close()
    hits, misses = world.cache_stats()
    snapshot = None
    if observer is not None and hasattr(observer, "registry"):
        from .metrics import metrics_snapshot

        snapshot = metrics_snapshot(observer.registry)
    return {"kpis": kpis, "metrics": snapshot, "calls": done, "seconds": time.perf_counter() - t0,
            "matcher_memo_hits": hits, "matcher_memo_misses": misses}


def _worker(cfg: SimConfig, chunks: list[int], shard: Path | None, queue) -> None:
    try:
        out = run_chunks(cfg, chunks, shard, progress=lambda n: queue.put(("progress", n)))
        queue.put(("done", out))
    except BaseException as exc:  # report, never hang the parent
        import traceback
        queue.put(("error", f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"))


class Progress:
    def __init__(self, total: int, enabled: bool):
        self.total, self.enabled, self.done = total, enabled and total > 0, 0
        self.t0 = time.perf_counter()
        self._last = 0.0

    def add(self, n: int) -> None:
        self.done += n
        now = time.perf_counter()
        if self.enabled and (now - self._last > 0.25 or self.done >= self.total):
            self._last = now
            el = now - self.t0
            rate = self.done / el if el > 0 else 0.0
            eta = (self.total - self.done) / rate if rate > 0 else 0.0
            width = 30
            fill = int(width * self.done / self.total)
            sys.stderr.write(f"\r[{'#' * fill}{'.' * (width - fill)}] {self.done:,}/{self.total:,} calls "
                             f"{rate:,.0f}/s eta {eta:,.0f}s ")
            sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")


def simulate(cfg: SimConfig) -> dict:
    """Run the simulation; write records (if any) to ``cfg.db`` and a summary next to it."""
    n_chunks = math.ceil(cfg.calls / CHUNK)
    workers = max(1, min(cfg.workers, n_chunks))
    bar = Progress(cfg.calls, cfg.progress)
    t0 = time.perf_counter()
    shards: list[Path] = []
    results: list[dict] = []
    keep = cfg.keep_every()
    if cfg.db is not None:
        cfg.db.parent.mkdir(parents=True, exist_ok=True)
    if workers == 1:
        shard = cfg.db if (cfg.db is not None and keep) else None
        results.append(run_chunks(cfg, range(n_chunks), shard, progress=bar.add))
    else:
        ctx = mp.get_context("fork")
        queue = ctx.Queue()
        procs = []
        for w in range(workers):
            shard = None
            if cfg.db is not None and keep:
                shard = cfg.db.with_name(f"{cfg.db.name}.shard{w}")
                _remove_db(shard)
                shards.append(shard)
            chunks = list(range(w, n_chunks, workers))
            p = ctx.Process(target=_worker, args=(cfg, chunks, shard, queue), daemon=True)
            p.start()
            procs.append(p)
        finished = 0
        error = None
        while finished < workers:
            kind, payload = queue.get()
            if kind == "progress":
                bar.add(payload)
            elif kind == "done":
                results.append(payload)
                finished += 1
            else:
                error = payload
                finished += 1
        for p in procs:
            p.join(30)
        if error:
            bar.close()
            raise RuntimeError(f"a simulator worker failed: {error}")
        if shards:
            _merge_shards(cfg.db, shards)
    bar.close()
    elapsed = time.perf_counter() - t0
    acc = results[0]["kpis"]
    for r in results[1:]:
        merge_accumulators(acc, r["kpis"])
    kpis = acc.result()
    overall = kpis.to_dict()["overall"]
    metrics_problems = None
    snapshot: dict[str, float] | None = None
    if cfg.metrics:
        from .metrics import reconcile

        snapshot = {}
        for r in results:
            for key, value in (r.get("metrics") or {}).items():
                snapshot[key] = snapshot.get(key, 0.0) + value
        metrics_problems = reconcile(snapshot, kpis)
    summary = {
        "format": "ivr-simulate/1",
        "calls": cfg.calls, "days": cfg.days, "seed": cfg.seed, "profile": cfg.profile,
        "confusion_model": cfg.model_path or cfg.profile, "workers": workers,
        "records": cfg.records, "records_kept_every": keep, "db": str(cfg.db) if cfg.db else None,
        "elapsed_s": round(elapsed, 2), "calls_per_s": round(cfg.calls / elapsed, 1) if elapsed else None,
        "matcher_memo_hits": sum(r["matcher_memo_hits"] for r in results),
        "matcher_memo_misses": sum(r["matcher_memo_misses"] for r in results),
        "headline": kpis.overall.headline, "baseline_2020": REPORT_BASELINE,
        "kpis": overall,
        "metrics_vs_kpis": None if metrics_problems is None else (metrics_problems or "agree"),
        "kpis_by_area_code": {k: asdict(v) for k, v in kpis.by_area_code.items()} if cfg.kpi_groups else None,
        "caller_profile": (cfg.caller_profile or PROFILES.get(cfg.profile, CallerProfile)()).to_dict(),
        "busy_hour_calls_per_s": busy_hour_rate(cfg),
    }
    if cfg.db is not None:
        Path(str(cfg.db) + ".summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    if snapshot is not None and cfg.db is not None:
        Path(str(cfg.db) + ".metrics.json").write_text(json.dumps(snapshot, indent=1, sort_keys=True) + "\n")
    summary["_kpis"] = kpis
    summary["_metrics"] = snapshot
    return summary


def busy_hour_rate(cfg: SimConfig) -> float:
    """Mean calls/s in the busiest hour of a weekday at the profile's yearly volume."""
    profile = cfg.caller_profile or PROFILES.get(cfg.profile, CallerProfile)()
    week = sum(DAY_WEIGHTS)
    per_monday = profile.calls_per_year / 52.18 * DAY_WEIGHTS[0] / week
    return round(per_monday * max(WEEKDAY_HOURS) / sum(WEEKDAY_HOURS) / 3600, 2)


def _remove_db(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        p = Path(str(path) + suffix)
        if p.exists():
            p.unlink()


def _merge_shards(db: Path, shards: list[Path]) -> None:
    from .store import CallStore

    CallStore(db).close()  # the schema, as the store defines it
    con = sqlite3.connect(str(db), isolation_level=None)
    try:
        con.execute("PRAGMA journal_mode=WAL")
        for i, shard in enumerate(shards):
            if not shard.exists():
                continue
            con.execute(f"ATTACH DATABASE ? AS s{i}", (str(shard),))
            con.execute("BEGIN")
            con.execute(f"INSERT OR REPLACE INTO calls SELECT * FROM s{i}.calls")
            con.execute("COMMIT")
            con.execute(f"DETACH DATABASE s{i}")
            _remove_db(shard)
    finally:
        con.close()


# --- command line --------------------------------------------------------------------------------

def register(subparsers) -> None:
    p = subparsers.add_parser("simulate", help="simulate traffic through the real call flow (no Asterisk)")
    p.add_argument("--calls", type=int, help="number of calls (default: --rate scaled to --days)")
    p.add_argument("--days", type=int, default=None, help="days of traffic the calls are spread over (default 365)")
    p.add_argument("--rate", type=float, default=CALLS_PER_YEAR_2020,
                   help="calls per year when --calls is not given (default 12 million)")
    p.add_argument("--profile", default="baseline-2020",
                   help="caller/recogniser profile: baseline-2020, perfect, "
                        "or a confusion JSON (from ivr simulate-fit)")
    p.add_argument("--db", type=Path, default=Path("simulated-calls.sqlite"),
                   help="SQLite file for the call records (must not exist; --force replaces it)")
    p.add_argument("--force", action="store_true", help="replace an existing --db")
    p.add_argument("--records", choices=("all", "sample", "none"), default=None,
                   help="call records to store: all, a uniform sample (every k-th call), none "
                        "(default: all up to 2 million calls, else sample). KPIs always count every call.")
    p.add_argument("--sample", type=int, default=200_000, help="records kept with --records sample")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--kpi-groups", action="store_true",
                   help="also accumulate KPIs per area code and municipality over every call (about half as fast)")
    p.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    p.add_argument("--metrics", action="store_true",
                   help="also count every call into the Prometheus metrics (ivr.metrics), write the summed "
                        "snapshot to <db>.metrics.json and check it against the KPIs")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_cmd_simulate)

    f = subparsers.add_parser("simulate-fit", help="fit a confusion model from `ivr replay --json` output")
    f.add_argument("replay_json", type=Path)
    f.add_argument("-o", "--output", type=Path, required=True, help="confusion model JSON to write")
    f.add_argument("--prior-weight", type=float, default=4.0)
    f.set_defaults(func=_cmd_fit)


def _cmd_simulate(args) -> int:
    days = args.days or 365
    calls = args.calls if args.calls is not None else round(args.rate * days / 365)
    if calls <= 0:
        print("nothing to simulate (--calls 0)", file=sys.stderr)
        return 2
    records = args.records or ("all" if calls <= 2_000_000 else "sample")
    db = None if records == "none" else args.db
    if db is not None and db.exists():
        if not args.force:
            print(f"{db} exists: choose another --db or pass --force to replace it", file=sys.stderr)
            return 2
        _remove_db(db)
    profile_name = args.profile
    model_path = None
    if profile_name not in ("baseline-2020", "perfect"):
        model_path, profile_name = profile_name, "baseline-2020"
        if not Path(model_path).is_file():
            print(f"unknown profile {args.profile!r}", file=sys.stderr)
            return 2
    caller_profile = CallerProfile(calls_per_year=int(args.rate))
    cfg = SimConfig(calls=calls, days=days, seed=args.seed, profile=profile_name, model_path=model_path, db=db,
                    records=records, sample=args.sample, workers=args.workers, progress=not args.no_progress,
                    kpi_groups=args.kpi_groups, metrics=args.metrics,
                    caller_profile=caller_profile)
    summary = simulate(cfg)
    kpis: Kpis = summary.pop("_kpis")
    summary.pop("_metrics", None)
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    print(f"simulated {calls:,} calls over {days} days (seed {args.seed}, profile {args.profile}) in "
          f"{summary['elapsed_s']:.1f} s with {summary['workers']} worker(s): {summary['calls_per_s']:,.0f} calls/s")
    print(f"busy hour at {int(args.rate):,} calls/year: {summary['busy_hour_calls_per_s']} calls/s")
    if db is not None:
        kept = "all records" if records == "all" else f"every {summary['records_kept_every']}th record (sample)"
        print(f"records: {db} ({kept}); KPIs over all calls: {db}.summary.json")
    for line in headline_table(kpis):
        print("  " + line)
    if summary["metrics_vs_kpis"] is not None:
        agree = summary["metrics_vs_kpis"]
        print("metrics (ivr.metrics) vs KPIs: " + ("agree" if agree == "agree" else "; ".join(agree[:5])))
    if db is not None:
        print(f"the same KPIs from the stored records: ivr report --db {db}")
    return 0


def _cmd_fit(args) -> int:
    from .confusion import fit_confusion, summarise

    model = fit_confusion(args.replay_json, prior_weight=args.prior_weight, name=args.output.stem)
    model.save(args.output)
    for line in summarise(model):
        print(line)
    print(f"written {args.output}; use it with: ivr simulate --profile {args.output}")
    return 0
