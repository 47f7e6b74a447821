"""The call flow: an explicit state machine fed by events, returning actions.

It does no I/O and knows nothing of Asterisk, sockets or SQLite (in the spirit of
``h11``). Asterisk, the simulator and replay drive the same flow: each sends
:class:`Event` objects to :meth:`CallFlow.handle` and carries out the returned
:class:`Action` objects. Actions that wait for the caller (:class:`CollectDigit`,
:class:`Listen`, :class:`Transfer`) are answered by the next event.

Every event carries ``at``, a monotonic time in seconds from the driver, so timings in
the call record are the driver's and tests are deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable, Sequence

from .callrecord import Attempt, CallRecord, Outcome, Phase
from .plan import Municipality, NumberingPlan, RoutingMode
from .routing import (
    MORE_DIGIT,
    OPERATOR_DIGIT,
    Decision,
    Verdict,
    choose,
    menu_has_more,
    menu_page,
    route,
)

# --- events ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CallStarted:
    at: float
    call_id: str
    dialled: str
    caller: str = ""  # already pseudonymised by the driver
    wall_time: float = 0.0


@dataclass(frozen=True, slots=True)
class Digit:
    at: float
    digit: str


@dataclass(frozen=True, slots=True)
class SpeechHeard:
    at: float
    nbest: tuple[tuple[str, float], ...]
    speech_ended_at: float | None = None  # when the caller stopped talking
    recogniser_ms: float | None = None


@dataclass(frozen=True, slots=True)
class NoInput:
    at: float


@dataclass(frozen=True, slots=True)
class TransferAnswered:
    at: float
    answered_by: str = ""
    setup_ms: float | None = None  # dial -> answer, when the driver measured it itself
    timed: bool = True  # False: the driver could not tell when the answer came


@dataclass(frozen=True, slots=True)
class TransferFailed:
    at: float
    status: str  # Asterisk DIALSTATUS: BUSY, NOANSWER, CHANUNAVAIL, CONGESTION, …


@dataclass(frozen=True, slots=True)
class CallerHungUp:
    at: float
    cause: str = ""


@dataclass(frozen=True, slots=True)
class DriverLost:
    """The driver lost the call (e.g. the connection to Asterisk dropped)."""

    at: float
    reason: str


Event = CallStarted | Digit | SpeechHeard | NoInput | TransferAnswered | TransferFailed | CallerHungUp | DriverLost

# --- actions -----------------------------------------------------------------------

Prompt = tuple[str, ...]  # prompt keys, played in order (see ivr.prompts)


@dataclass(frozen=True, slots=True)
class Play:
    prompts: Prompt


@dataclass(frozen=True, slots=True)
class CollectDigit:
    prompts: Prompt  # played with barge-in: any digit stops them
    digits: str  # digits that mean something here
    timeout_s: float


@dataclass(frozen=True, slots=True)
class Listen:
    prompts: Prompt  # played with barge-in (speech or digit stops them)
    vocabulary_of: tuple[str, ...]  # CBS codes whose names are expected, or () for yes/no
    timeout_s: float
    digits: str = ""  # digits accepted as an answer as well


@dataclass(frozen=True, slots=True)
class Transfer:
    destination: str
    prompts: Prompt = ()  # said before dialling
    municipality: str | None = None
    back_digit: str = ""  # pressed during the prompts: "not that one", back to the question


@dataclass(frozen=True, slots=True)
class Hangup:
    cause: str = "normal"


Action = Play | CollectDigit | Listen | Transfer | Hangup


class FlowError(RuntimeError):
    """An event arrived that the flow cannot accept in its state (a driver bug)."""


# --- prompt keys (texts in ivr/prompts.py) ----------------------------------------


BACK_DIGIT = "*"


def municipality_prompt(cbs_code: str) -> str:
    return f"gemeente/{cbs_code}"


def digit_prompts(number: str) -> Prompt:
    return tuple(f"cijfer/{d}" for d in number if d.isdigit())


# --- the flow ----------------------------------------------------------------------

MatcherFactory = Callable[[Sequence[Municipality]], object]


@dataclass
class FlowSettings:
    menu_timeout_s: float = 6.0
    speech_timeout_s: float = 5.0
    confirm_timeout_s: float = 4.0
    max_speech_attempts: int = 2  # then the DTMF menu: three attempts in all
    max_menu_failures: int = 2  # invalid/no digit twice -> operator


@dataclass
class _State:
    phase: Phase = Phase.GREETING
    phase_since: float = 0.0
    candidates: tuple[Municipality, ...] = ()
    speech_attempts: int = 0
    menu_failures: int = 0
    menu_page: int = 0
    pending: tuple[Municipality, ...] = ()  # what a confirmation is about (1 or 2 municipalities)
    transfer_started: float | None = None
    ended: bool = False
    started: float = 0.0


class CallFlow:
    def __init__(self, plan: NumberingPlan, *, speech_available: bool = True,
                 matcher_factory: MatcherFactory | None = None, yes_no: Callable | None = None,
                 settings: FlowSettings | None = None, now: Callable[[], datetime] | None = None):
        self.plan = plan
        self.speech_available = speech_available and matcher_factory is not None
        self._matcher_factory = matcher_factory
        self._yes_no = yes_no
        self.settings = settings or FlowSettings()
        self._now = now or (lambda: datetime.now(timezone.utc))
        self._state = _State()
        self.record: CallRecord | None = None
        self._matcher = None

    # -- public -----------------------------------------------------------------

    @property
    def phase(self) -> Phase:
        return self._state.phase

    @property
    def ended(self) -> bool:
        return self._state.ended

    def handle(self, event: Event) -> list[Action]:
        if isinstance(event, CallStarted):
            return self._start(event)
        if self.record is None:
            raise FlowError(f"{type(event).__name__} before CallStarted")
        if self._state.ended:
            return []
        if isinstance(event, CallerHungUp):
            return self._hung_up(event)
        if isinstance(event, DriverLost):
            return self._lost(event)
        if isinstance(event, TransferAnswered):
            return self._answered(event)
        if isinstance(event, TransferFailed):
            return self._transfer_failed(event)
        if isinstance(event, Digit):
            return self._digit(event)
        if isinstance(event, SpeechHeard):
            return self._speech(event)
        if isinstance(event, NoInput):
            return self._no_input(event)
        raise FlowError(f"unknown event {event!r}")

    # -- start --------------------------------------------------------------------

    def _start(self, ev: CallStarted) -> list[Action]:
        if self.record is not None:
            raise FlowError("CallStarted twice")
        self._state.started = self._state.phase_since = ev.at
        self.record = CallRecord(call_id=ev.call_id, dialled=ev.dialled, caller=ev.caller,
                                 started_at=ev.wall_time, plan_version=self.plan.version)
        decision = route(self.plan, ev.dialled, now=self._now(), speech_available=self.speech_available)
        self._note_decision(decision)
        self.record.area_code = decision.area_code
        self.record.mode = decision.mode.value if decision.mode else None
        if decision.verdict is Verdict.ASK:
            self._state.candidates = decision.candidates
            if decision.mode is RoutingMode.SPEECH:
                return self._ask_speech(ev.at, first=True)
            return self._ask_menu(ev.at, prompts=("welkom",))
        self.record.decision_ms = 0.0  # decided on arrival; the driver adds its own latency
        return self._act_on(decision, ev.at)

    # -- deciding -----------------------------------------------------------------

    def _note_decision(self, decision: Decision) -> None:
        rec = self.record
        rec.decision = decision.verdict.value
        rec.reason = decision.reason
        if decision.municipality:
            rec.municipality = decision.municipality.cbs_code
        if decision.destination:
            rec.destination = decision.destination

    def _act_on(self, decision: Decision, at: float, announce: bool = False) -> list[Action]:
        self._note_decision(decision)
        v = decision.verdict
        if v is Verdict.TRANSFER:
            prompts: tuple[str, ...] = ()
            if decision.message:
                prompts += ("calamiteit",)
            back = ""
            if announce and decision.municipality:
                prompts += ("doorverbinden", municipality_prompt(decision.municipality.cbs_code), "terug_keuze")
                back = BACK_DIGIT
            cbs = decision.municipality.cbs_code if decision.municipality else None
            return self._transfer(Transfer(decision.destination, prompts, cbs, back), at)
        if v is Verdict.OPERATOR:
            return self._to_operator(at, reason=decision.reason)
        if v is Verdict.NOT_CONNECTED:
            m = decision.municipality
            prompts = ("de_gemeente", municipality_prompt(m.cbs_code), "niet_aangesloten")
            if m.alt_number:
                prompts += ("belt_u", *digit_prompts(m.alt_number))
            return self._finish(at, Outcome.NOT_CONNECTED, [Play(prompts + ("tot_ziens",))])
        # invalid number or unknown area code
        return self._finish(at, Outcome.UNKNOWN_AREA_CODE, [Play(("onbekend_nummer", "tot_ziens"))])

    def _to_operator(self, at: float, reason: str) -> list[Action]:
        rec = self.record
        rec.decision = Verdict.OPERATOR.value
        rec.reason = reason
        rec.destination = self.plan.operator_destination
        rec.municipality = None
        return self._transfer(Transfer(self.plan.operator_destination, ("medewerker",), None), at)

    def _transfer(self, action: Transfer, at: float) -> list[Action]:
        self._enter(Phase.TRANSFER, at)
        self._state.transfer_started = at
        self.record.ivr_seconds = at - self._state.started
        return [action]

    def _chosen(self, m: Municipality, at: float, how: str) -> list[Action]:
        area = self.plan.area_codes[self.record.area_code]
        decision = choose(self.plan, area, m, dialled=self.record.dialled, now=self._now(), how=how)
        return self._act_on(decision, at, announce=True)

    # -- the DTMF menu ------------------------------------------------------------

    def _ask_menu(self, at: float, prompts: tuple[str, ...] = (), page: int = 0) -> list[Action]:
        self._enter(Phase.MENU, at)
        self._state.menu_page = page
        self.record.recognition_attempts += 1
        entries = menu_page(self._state.candidates, page)
        listing: list[str] = ["kies_menu"] if page == 0 else []
        for digit, m in entries:
            listing += ["voor", municipality_prompt(m.cbs_code), "toets", f"cijfer/{digit}"]
        digits = "".join(d for d, _ in entries)
        if menu_has_more(self._state.candidates, page):
            listing.append("meer_keuzes")
            digits += MORE_DIGIT
        listing.append("medewerker_keuze")
        digits += OPERATOR_DIGIT
        return [CollectDigit(tuple(prompts) + tuple(listing), digits, self.settings.menu_timeout_s)]

    def _menu_digit(self, ev: Digit) -> list[Action]:
        st = self._state
        rec = self.record
        rec.digits += ev.digit
        entries = dict(menu_page(st.candidates, st.menu_page))
        if ev.digit in entries:
            m = entries[ev.digit]
            rec.attempts.append(Attempt("menu", "dtmf", ev.digit, verdict="chosen", chosen=m.cbs_code))
            return self._chosen(m, ev.at, how=f"menu digit {ev.digit}")
        if ev.digit == MORE_DIGIT and menu_has_more(st.candidates, st.menu_page):
            rec.attempts.append(Attempt("menu", "dtmf", ev.digit, verdict="more"))
            rec.recognition_attempts -= 1  # paging is the same question
            return self._ask_menu(ev.at, page=st.menu_page + 1)
        if ev.digit == OPERATOR_DIGIT:
            rec.attempts.append(Attempt("menu", "dtmf", ev.digit, verdict="operator"))
            return self._to_operator(ev.at, reason="caller asked for a person")
        rec.attempts.append(Attempt("menu", "dtmf", ev.digit, verdict="invalid"))
        return self._menu_failed(ev.at, "ongeldige_keuze")

    def _menu_failed(self, at: float, prompt: str) -> list[Action]:
        self._state.menu_failures += 1
        if self._state.menu_failures >= self.settings.max_menu_failures:
            return self._to_operator(at, reason="no valid menu choice")
        return self._ask_menu(at, prompts=(prompt,))

    # -- speech -------------------------------------------------------------------

    def _matcher_for_candidates(self):
        if self._matcher is None:
            self._matcher = self._matcher_factory(self._state.candidates)
        return self._matcher

    def _ask_speech(self, at: float, first: bool = False) -> list[Action]:
        self._enter(Phase.SPEECH, at)
        self._state.speech_attempts += 1
        self.record.recognition_attempts += 1
        prompts = ("welkom", "zeg_gemeente") if first else ("niet_verstaan", "zeg_gemeente")
        codes = tuple(m.cbs_code for m in self._state.candidates)
        return [Listen(prompts, codes, self.settings.speech_timeout_s, digits="0123456789")]

    def _speech(self, ev: SpeechHeard) -> list[Action]:
        st = self._state
        if st.phase is Phase.CONFIRM:
            return self._confirm_answer(ev)
        if st.phase is not Phase.SPEECH:
            raise FlowError(f"speech result in phase {st.phase}")
        result = self._matcher_for_candidates().match(ev.nbest)
        attempt = Attempt(
            "speech", "speech", ev.nbest[0][0] if ev.nbest else "",
            candidates=[{"cbs_code": s.cbs_code, "score": round(s.score, 1)} for s in result.ranked[:3]],
            verdict=str(result.verdict), recogniser_ms=ev.recogniser_ms,
            decision_ms=_ms(ev.at, ev.speech_ended_at),
        )
        self.record.attempts.append(attempt)
        by_code = {m.cbs_code: m for m in st.candidates}
        verdict = str(result.verdict)
        if verdict == "accept":
            attempt.chosen = result.best.cbs_code
            return self._chosen(by_code[result.best.cbs_code], ev.at, how=f"speech {result.best.heard!r}")
        if verdict in ("confirm", "choose"):
            pending = [by_code[s.cbs_code] for s in result.ranked[: 2 if verdict == "choose" else 1]]
            attempt.chosen = pending[0].cbs_code
            return self._ask_confirm(ev.at, tuple(pending))
        return self._speech_failed(ev.at)

    def _speech_failed(self, at: float) -> list[Action]:
        if self._state.speech_attempts < self.settings.max_speech_attempts:
            return self._ask_speech(at)
        return self._ask_menu(at, prompts=("niet_verstaan",))

    def _ask_confirm(self, at: float, pending: tuple[Municipality, ...]) -> list[Action]:
        self._enter(Phase.CONFIRM, at)
        self._state.pending = pending
        self.record.recognition_attempts += 1
        if len(pending) == 1:
            prompts = ("bedoelt_u", municipality_prompt(pending[0].cbs_code), "ja_nee")
        else:
            prompts = ("bedoelt_u", municipality_prompt(pending[0].cbs_code), "of",
                       municipality_prompt(pending[1].cbs_code), "een_of_twee")
        codes = tuple(m.cbs_code for m in pending) if len(pending) > 1 else ()
        return [Listen(prompts, codes, self.settings.confirm_timeout_s, digits="12")]

    def _confirm_answer(self, ev: SpeechHeard) -> list[Action]:
        pending = self._state.pending
        heard = ev.nbest[0][0] if ev.nbest else ""
        attempt = Attempt("confirm", "speech", heard, recogniser_ms=ev.recogniser_ms,
                          decision_ms=_ms(ev.at, ev.speech_ended_at))
        self.record.attempts.append(attempt)
        if len(pending) == 1:
            answer = self._yes_no(ev.nbest) if self._yes_no else None
            attempt.verdict = {True: "yes", False: "no", None: "unclear"}[answer]
            if answer:
                attempt.chosen = pending[0].cbs_code
                return self._chosen(pending[0], ev.at, how="confirmed by voice")
            if answer is False:
                self.record.rejected_confirmations += 1
            return self._speech_failed(ev.at)
        result = self._matcher_factory(pending).match(ev.nbest)
        attempt.verdict = str(result.verdict)
        if str(result.verdict) == "accept":
            attempt.chosen = result.best.cbs_code
            chosen = next(m for m in pending if m.cbs_code == result.best.cbs_code)
            return self._chosen(chosen, ev.at, how="chosen of two by voice")
        return self._speech_failed(ev.at)

    def _confirm_digit(self, ev: Digit) -> list[Action]:
        pending = self._state.pending
        self.record.digits += ev.digit
        attempt = Attempt("confirm", "dtmf", ev.digit)
        self.record.attempts.append(attempt)
        if len(pending) == 1:
            if ev.digit == "1":
                attempt.verdict, attempt.chosen = "yes", pending[0].cbs_code
                return self._chosen(pending[0], ev.at, how="confirmed by digit")
            if ev.digit == "2":
                attempt.verdict = "no"
                self.record.rejected_confirmations += 1
                return self._speech_failed(ev.at)
        elif ev.digit in ("1", "2"):
            m = pending[int(ev.digit) - 1]
            attempt.verdict, attempt.chosen = "chosen", m.cbs_code
            return self._chosen(m, ev.at, how=f"chosen of two by digit {ev.digit}")
        attempt.verdict = "invalid"
        return self._speech_failed(ev.at)

    # -- shared event handlers -----------------------------------------------------

    def _digit(self, ev: Digit) -> list[Action]:
        phase = self._state.phase
        if phase is Phase.MENU:
            return self._menu_digit(ev)
        if phase is Phase.CONFIRM:
            return self._confirm_digit(ev)
        if phase is Phase.SPEECH:
            # DTMF works at any moment: a digit while we listen means "give me the menu"
            self.record.digits += ev.digit
            self.record.attempts.append(Attempt("speech", "dtmf", ev.digit, verdict="to_menu"))
            if ev.digit == OPERATOR_DIGIT:
                return self._to_operator(ev.at, reason="caller asked for a person")
            self.record.recognition_attempts -= 1  # the menu is asked instead, not as well
            return self._ask_menu(ev.at)
        if phase is Phase.TRANSFER and ev.digit == BACK_DIGIT and self.record.attempts:
            return self._went_back(ev)
        return []  # other digits during a transfer or announcement mean nothing

    def _went_back(self, ev: Digit) -> list[Action]:
        """The caller pressed * while hearing where we send them: the choice was wrong."""
        rec = self.record
        rec.digits += ev.digit
        rec.rejected_confirmations += 1
        rec.attempts.append(Attempt("transfer", "dtmf", ev.digit, verdict="back", chosen=rec.municipality or ""))
        rec.municipality = rec.destination = None
        self._state.transfer_started = None
        rec.ivr_seconds = None
        if rec.mode == RoutingMode.SPEECH.value and self._state.speech_attempts < self.settings.max_speech_attempts:
            return self._ask_speech(ev.at)
        return self._ask_menu(ev.at)

    def _no_input(self, ev: NoInput) -> list[Action]:
        phase = self._state.phase
        if phase is Phase.MENU:
            self.record.attempts.append(Attempt("menu", "no_input"))
            return self._menu_failed(ev.at, "geen_invoer")
        if phase in (Phase.SPEECH, Phase.CONFIRM):
            self.record.attempts.append(Attempt(phase.value, "no_input"))
            return self._speech_failed(ev.at)
        return []

    def _answered(self, ev: TransferAnswered) -> list[Action]:
        rec = self.record
        if not ev.timed:
            rec.transfer_setup_ms = None
        elif ev.setup_ms is not None:
            rec.transfer_setup_ms = ev.setup_ms
        elif self._state.transfer_started is not None:
            rec.transfer_setup_ms = (ev.at - self._state.transfer_started) * 1000
        rec.answered_by = ev.answered_by or rec.answered_by
        rec.outcome = (Outcome.OPERATOR if rec.decision == Verdict.OPERATOR.value else Outcome.ROUTED).value
        self._enter(Phase.CONNECTED, ev.at)
        return []

    def _transfer_failed(self, ev: TransferFailed) -> list[Action]:
        self.record.hangup_cause = ev.status
        self.record.error = f"transfer failed: {ev.status}"
        return self._finish(ev.at, Outcome.FAILED, [Play(("niet_bereikbaar", "tot_ziens"))])

    def _hung_up(self, ev: CallerHungUp) -> list[Action]:
        rec = self.record
        rec.hangup_cause = ev.cause or rec.hangup_cause
        if self._state.phase is Phase.CONNECTED:
            return self._finish(ev.at, Outcome(rec.outcome), [])
        rec.hangup_phase = self._state.phase.value
        if rec.outcome in (Outcome.NOT_CONNECTED.value, Outcome.UNKNOWN_AREA_CODE.value):
            return self._finish(ev.at, Outcome(rec.outcome), [])
        return self._finish(ev.at, Outcome.CALLER_HANGUP, [])

    def _lost(self, ev: DriverLost) -> list[Action]:
        self.record.error = ev.reason
        if self._state.phase is Phase.CONNECTED:
            return self._finish(ev.at, Outcome(self.record.outcome), [])
        return self._finish(ev.at, Outcome.FAILED, [])

    # -- bookkeeping --------------------------------------------------------------

    def _enter(self, phase: Phase, at: float) -> None:
        st = self._state
        spent = max(0.0, at - st.phase_since)
        self.record.phase_seconds[st.phase.value] = self.record.phase_seconds.get(st.phase.value, 0.0) + spent
        st.phase, st.phase_since = phase, at
        self.record.phase = phase.value

    def _finish(self, at: float, outcome: Outcome, actions: list[Action]) -> list[Action]:
        """Close the call: the outcome is final; with ``actions`` the caller hears them first."""
        rec = self.record
        rec.outcome = outcome.value
        self._enter(self._state.phase, at)  # account the time of the last phase
        if rec.ivr_seconds is None:
            rec.ivr_seconds = at - self._state.started
        self._state.ended = True
        return [*actions, Hangup()] if actions else []


def _ms(at: float, since: float | None) -> float | None:
    return None if since is None else max(0.0, (at - since) * 1000)
