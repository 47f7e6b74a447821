"""One simulated caller on one call: the port the drive loop carries the flow's actions
out on (:class:`ivr.core.drive.CallPort`), answering each question as the caller profile
and the confusion model say, on a simulated clock."""

from __future__ import annotations

import math
import random
from bisect import bisect
from dataclasses import dataclass

from ivr.core.callrecord import CallRecord
from ivr.core.drive import answer, drive, run_sync
from ivr.core.flow import (
    AskDigits,
    AskName,
    CallEnded,
    CallerHungUp,
    CallStarted,
    ChooseOfTwo,
    ConfirmOne,
    DecideAgain,
    Digit,
    DigitsEntered,
    MenuPage,
    NoInput,
    Question,
    RequestCallback,
    SpeechHeard,
    SuggestOne,
    Transfer,
    TransferAnswered,
    TransferFailed,
)
from ivr.core.prompts import LANGUAGES
from ivr.core.recognition import Recognition
from ivr.core.routing import MORE_DIGIT, OPERATOR_DIGIT

from ivr.simulator.model import (
    GARBAGE, NEITHER, NO, PHRASES, SIM_ACCESS_NUMBER, YES, World, prompt_s,
)

ENGLISH_OFFER = LANGUAGES["en"].offer

# --- one simulated caller ---------------------------------------------------------------------

@dataclass
class Caller:
    wanted: str
    area_code: str
    kind: str  # bare / phrase / village / former
    condition: str  # clean / noisy / accent
    phrase: str = "{}"
    said_name: str = ""  # the words the caller uses for the municipality
    english: bool = False  # chooses English when offered
    abroad: bool = False  # calls an access number from outside the Netherlands
    keyed: int = 0  # digits of the area code keyed in so far (from abroad)
    wrong_code: bool = False  # dials a shared area code that is not the wanted municipality's
    known: str | None = None  # the municipality this caller's hash was routed to within N days
    landline: str | None = None  # the area code of the caller's landline


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
        # drawn only when the profile has these callers: the 2020 world's random stream stays as it was
        caller.english = bool(p.english_share) and rng.random() < p.english_share
        caller.abroad = bool(p.abroad_share) and rng.random() < p.abroad_share
        if p.wrong_code_share and not caller.abroad and rng.random() < p.wrong_code_share:
            others = [c for c in w.shared_codes if wanted not in w.plan.area_codes[c].municipalities]
            caller.wrong_code, caller.area_code = True, rng.choice(others)
        if p.repeat_share or p.landline_share:
            self._known_about(caller)
        return caller

    def _known_about(self, caller: Caller) -> None:
        """What a driver would know about this caller: where their hash was routed before, their landline."""
        rng, p, w = self.rng, self.w.profile, self.w
        others = [c for c in w.plan.area_codes[caller.area_code].municipalities if c != caller.wanted]
        u, v = rng.random(), rng.random()
        if u < p.repeat_share:
            caller.known = caller.wanted if v < p.repeat_same or not others else rng.choice(others)
        u, v = rng.random(), rng.random()
        if u < p.landline_share:
            home = caller.wanted if v < p.landline_home or not others else rng.choice(others)
            caller.landline = w.plan.municipalities[home].area_codes[0]

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

    def _answer_text(self, text: str, rng: random.Random | None = None) -> tuple[tuple[str, float], ...] | None:
        """A short answer (ja/nee) through the recogniser's yes/no error rate."""
        rng = rng or self.rng
        if rng.random() < self.w.model.yes_no_error:
            return None if rng.random() < 0.5 else ((rng.choice(NO if text in YES else YES), 0.6),)
        return ((text, 0.9),)

    # -- the call ---------------------------------------------------------------------------

    def run(self, index: int, call_id: str) -> CallRecord:
        rng, w = self.rng, self.w
        if w.profile.repeat_share or w.profile.landline_share:
            # each call its own stream: with and without suggestions (same seed) the same callers
            # call, and a call's questions change only that call
            rng.seed(f"ivr-sim/{call_id}")
        caller = self.new_caller()
        if caller is None:
            dialled = "14" + rng.choice(("0999", "09", "06", "0800", "1"))
            flow = w.new_flow(None)
        elif caller.abroad:
            dialled = "+" + SIM_ACCESS_NUMBER.key
            flow = w.new_flow(None)
        else:
            dialled = "14" + caller.area_code
            flow = w.new_flow(caller.area_code)
        wall = w.wall_time(rng)
        self.caller, self.t, self.last_at, self.call_id = caller, 0.0, 0.0, call_id
        self.asked_once = False  # the name question was asked before
        self.asked = False  # any question was asked
        self.last_said: SpeechHeard | None = None  # the last spoken answer, for DecideAgain
        told = caller is not None and not caller.abroad and w.profile.suggest
        actions = flow.handle(CallStarted(0.0, call_id, dialled, caller=f"{rng.getrandbits(48):012x}", wall_time=wall,
                                          expected=caller.wanted if caller else None,
                                          known_municipality=caller.known if told else None,
                                          caller_area_code=caller.landline if told else None))
        run_sync(drive(flow, self, actions, observe=self._fed))
        t = self.last_at
        if not flow.ended:  # e.g. a flow that stopped asking: the caller gives up
            flow.handle(CallerHungUp(t + 1.0, "16"))
        flow.handle(CallEnded(t, wall + t))
        return flow.record

    def _fed(self, event, actions) -> None:
        self.t = self.last_at = event.at  # the simulated clock follows the events

    # -- the port the drive loop carries the flow's actions out on (ivr.core.drive.CallPort) ---------

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
        return answer(question, name=self._say_name, confirm=self._confirm, choose=self._choose,
                      suggest=self._suggested)

    async def decide_again(self, again: DecideAgain):
        """The same words decided again (a transcript does not depend on the candidates), after
        the national decision's time: lognormal, median 0.7 s (README: 0.72 s warm). Drawn from a
        generator of the call's own, so the callers after it draw what they drew before."""
        said = self.last_said
        if said is None:
            return NoInput(self.t)
        rng = random.Random(f"national/{self.call_id}/{said.at}")
        ms = _lognormal(rng, 700.0, 0.3)
        return SpeechHeard(self.t + ms / 1000, said.recognition, speech_ended_at=self.t, recogniser_ms=round(ms, 1))

    async def dial(self, transfer: Transfer, started_at: float) -> list:
        return self._transfer(transfer, self.t)

    async def collect_digits(self, ask: AskDigits):
        """The callback offer: consent (1 key) or a number (06 + 8 digits, some mistyped).

        Drawn from a generator of the call's own, so the callers after it draw what they drew
        before callbacks were offered: the other figures of a seed stay as they were."""
        p, rng = self.w.profile, random.Random(f"callback/{self.call_id}/{len(ask.prompts)}/{ask.max_digits}")
        t = self.t + sum(prompt_s(k) for k in ask.prompts)
        u = rng.random()
        if u < p.hangup_callback:
            return CallerHungUp(self.t + rng.random() * (t - self.t + 1.0), "16")
        if ask.max_digits == 1:
            return DigitsEntered(t + _lognormal(rng, 1.0, 0.4), "1") if u < p.hangup_callback + p.callback_consent \
                else NoInput(t + ask.timeout_s)
        n = 7 if rng.random() < p.callback_mistyped else 8
        number = "06" + "".join(str(rng.randrange(10)) for _ in range(n))
        return DigitsEntered(t + 0.5 * len(number) + _lognormal(rng, 1.5, 0.4), number)

    async def request_callback(self, request: RequestCallback) -> None:
        return None  # counted from the call record (callback = requested)

    async def hang_up(self) -> None:
        return None

    def _hang_up_in(self, t: float, span: float, rng: random.Random | None = None):
        return CallerHungUp(t + (rng or self.rng).random() * span, "16")

    def _answering(self, question: Question, p_hang: float, rng: random.Random | None = None):
        """(hang-up event, None) if the caller hangs up during the question, else (None, when they answer)."""
        rng = rng or self.rng
        prompt_time = sum(prompt_s(k) for k in question.prompts)
        if rng.random() < p_hang:
            return self._hang_up_in(self.t, prompt_time + 2.0, rng), None
        return None, self.t + (prompt_time + _lognormal(rng, 0.8, 0.4))  # listen, then start speaking

    def _say_name(self, question: AskName):
        """Which municipality? The caller's words through the simulated recogniser (or a key: the menu)."""
        rng, p, caller = self.rng, self.w.profile, self.caller
        hung_up, t = self._answering(question, p.hangup_repeat if self.asked_once else p.hangup_speech)
        if hung_up:
            return hung_up
        if caller.english and ENGLISH_OFFER in question.prompts:  # heard "For English, press 9"
            t -= sum(prompt_s(k) for k in question.prompts[question.prompts.index(ENGLISH_OFFER) + 1:])
            if rng.random() < 0.7:
                return Digit(t, LANGUAGES["en"].offer_digit)
            return self._heard((("English", _q(0.8 + 0.2 * rng.random())),), 250.0, t, 0.6)
        national = len(question.candidates) == len(self.w.plan.municipalities)
        if caller.abroad and national and rng.random() < 0.3:  # key in the area code instead of the name
            caller.keyed = 1
            return Digit(t, caller.area_code[0])
        if rng.random() < p.dtmf_during_speech:
            return Digit(t, "0" if rng.random() < 0.3 else "1")
        if self.asked_once and caller.kind != "bare" and rng.random() < p.switch_to_name:
            self._choose_words(caller, "bare")
        self.asked_once = True
        nbest, latency_ms = self.recognise(caller)
        return self._heard(nbest, latency_ms, t, 1.0 + 0.1 * len(caller.said_name) / 2)

    def _choose(self, question: ChooseOfTwo):
        """"X of Y?": the name (or 1/2) when the wanted one is offered, else "neither"."""
        rng, caller = self.rng, self.caller
        hung_up, t = self._answering(question, self.w.profile.hangup_confirm)
        if hung_up:
            return hung_up
        if caller.wanted in question.options:
            if rng.random() < 0.3:
                return Digit(t, str(question.options.index(caller.wanted) + 1))
            saved = (caller.kind, caller.phrase, caller.said_name)
            self._choose_words(caller, "bare")
            nbest, latency_ms = self.recognise(caller)
            caller.kind, caller.phrase, caller.said_name = saved
            return self._heard(nbest, latency_ms, t, 1.0)
        nbest = ((rng.choice(NEITHER), 0.9),)
        return self._heard(nbest, 250.0, t, 0.8)

    def _confirm(self, question: ConfirmOne):
        """"Bedoelt u X?": yes or no (some by key), through the recogniser's yes/no error rate."""
        rng, caller = self.rng, self.caller
        hung_up, t = self._answering(question, self.w.profile.hangup_confirm)
        if hung_up:
            return hung_up
        meant = question.municipality
        if rng.random() < 0.15:  # some answer by key
            return Digit(t, "1" if meant == caller.wanted else "2")
        text = rng.choice(YES) if meant == caller.wanted else rng.choice(NO)
        return self._heard(self._answer_text(text), 250.0, t, 0.5)

    def _suggested(self, question: SuggestOne):
        """"Belt u weer voor X?": yes when X is wanted (some by key); else no, or the name said instead.

        How the caller answers is drawn from a generator of the call's own: which calls accept,
        refuse or name another does not depend on the draws the same call makes without the
        suggestion, so the paired comparison per answer (suggestion_savings) is not skewed."""
        rng, caller, p = random.Random(f"suggest/{self.call_id}"), self.caller, self.w.profile
        hung_up, t = self._answering(question, p.hangup_confirm, rng)
        if hung_up:
            return hung_up
        wanted = question.municipality == caller.wanted
        if not question.by_voice or rng.random() < 0.15:  # by key
            return Digit(t, "1" if wanted else "2")
        if wanted:
            return self._heard(self._answer_text(rng.choice(YES), rng), 250.0, t, 0.5)
        if rng.random() < p.suggestion_named:
            self.asked_once = True
            nbest, latency_ms = self.recognise(caller)  # the name, as the name question would hear it
            return self._heard(nbest, latency_ms, t, 1.0 + 0.1 * len(caller.said_name) / 2)
        return self._heard(self._answer_text(rng.choice(NO), rng), 250.0, t, 0.5)

    def _heard(self, nbest, latency_ms: float, t: float, speech_s: float):
        ended = t + speech_s + 0.4  # end of speech + endpointer hangover
        at = ended + latency_ms / 1000
        if nbest is None:
            return NoInput(t + self.w.plan_timeout)
        self.last_said = SpeechHeard(at, Recognition.of_transcripts(nbest, latency_ms), speech_ended_at=ended,
                                     recogniser_ms=round(latency_ms, 1))
        return self.last_said

    def _menu(self, caller: Caller | None, action: MenuPage, t: float):
        rng, p = self.rng, self.w.profile
        prompts = action.prompts
        if action.area_code and caller is not None:  # keying in the area code, digit by digit
            if caller.keyed >= len(caller.area_code):
                caller.keyed = 0  # asked again: start over
            caller.keyed += 1
            return Digit(t + sum(prompt_s(k) for k in prompts) + _lognormal(rng, 0.4, 0.3),
                         caller.area_code[caller.keyed - 1])
        if caller is not None and caller.english and ENGLISH_OFFER in prompts:
            i = prompts.index(ENGLISH_OFFER)
            return Digit(t + sum(prompt_s(k) for k in prompts[: i + 1]) + _lognormal(rng, 0.5, 0.3),
                         LANGUAGES["en"].offer_digit)
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
