"""The call flow: an explicit state machine fed by events, returning actions.

It does no I/O and knows nothing of Asterisk, sockets or SQLite (in the spirit of
``h11``). Asterisk and the simulator drive the same flow (through
:func:`ivr.core.drive.drive`): each sends :class:`Event` objects to :meth:`CallFlow.handle`
and carries out the returned :class:`Action` objects. Actions say what they ask —
:class:`AskName` among candidates, :class:`ConfirmOne`, :class:`ChooseOfTwo`, a
:class:`MenuPage` with its digit -> municipality entries, :class:`Transfer`,
:class:`Goodbye` — so a driver never re-derives the meaning from prompt keys. The
questions are answered by the next event.

The flow is the only writer of the :class:`~ivr.core.callrecord.CallRecord`. Every event
carries ``at``, a monotonic time in seconds from the driver, and the driver's other
timings travel in events too (:class:`Dialling`, :class:`CallEnded`), so timings in the
record are the driver's and tests are deterministic.

Longer than 400 lines on purpose: every transition of the state machine is in this one
module (as in h11's ``_state.py``); events and actions are in ``events.py`` / ``actions.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Callable, Sequence

from ivr.core.actions import (
    BACK_DIGIT,
    Action,
    AskDigits,
    AskName,
    ChooseOfTwo,
    CollectDigit,
    ConfirmOne,
    DecideAgain,
    Goodbye,
    Listen,
    MenuEntry,
    MenuPage,
    Play,
    Prompt,
    Question,
    RequestCallback,
    SuggestOne,
    Transfer,
    choose_place_prompts,
    digit_prompts,
    municipality_prompt,
    place_prompt,
    spoken_place,
)
from ivr.core.callback import CONSENT_DIGIT, MAX_KEYED_DIGITS, callback_number
from ivr.core.callrecord import (Attempt, AttemptKind, AttemptVerdict, CallbackResult, CallRecord, ErrorKind,
                                 InputKind, Outcome, Phase, SecondPass, SuggestionSource, SuggestionResult)
from ivr.core.events import (
    CallEnded,
    CallerHungUp,
    CallStarted,
    Digit,
    DigitsEntered,
    Dialling,
    DriverLost,
    Event,
    NoInput,
    SpeechHeard,
    TransferAnswered,
    TransferFailed,
)
from ivr.core.matcher import MatchResult
from ivr.core.recognition import EngineVerdict
from ivr.core.plan import Municipality, NumberingPlan, RoutingMode, is_cbs_code
from ivr.core.prompts import DEFAULT_LANGUAGE, LANGUAGES, language_said, localised
from ivr.core.suggestion import suggestion_for
from ivr.core.routing import (
    MORE_DIGIT,
    OPERATOR_DIGIT,
    Decision,
    Verdict,
    choose,
    menu_has_more,
    menu_page,
    route,
)
from ivr.core.second_pass import outside_the_code, worth_a_second_pass


# the flow's interface: events in (ivr.core.events), actions out (ivr.core.actions)
__all__ = ["Action", "AskDigits", "AskName", "BACK_DIGIT", "CallEnded", "CallFlow", "CallStarted", "CallerHungUp",
           "ChooseOfTwo", "CollectDigit", "ConfirmOne", "DecideAgain", "Dialling", "Digit", "DigitsEntered", "DriverLost",
           "Event", "FlowError", "FlowSettings", "Goodbye", "Listen", "MenuEntry", "MenuPage", "NoInput", "Play",
           "Prompt", "Question", "RequestCallback", "SpeechHeard", "SuggestOne", "Transfer", "TransferAnswered",
           "TransferFailed", "digit_prompts", "municipality_prompt"]


class FlowError(RuntimeError):
    """An event arrived that the flow cannot accept in its state (a driver bug)."""


# --- the flow ----------------------------------------------------------------------

MatcherFactory = Callable[[Sequence[Municipality]], object]


@dataclass
class FlowSettings:
    menu_timeout_s: float = 6.0
    speech_timeout_s: float = 5.0
    confirm_timeout_s: float = 4.0
    max_speech_attempts: int = 2  # then the DTMF menu: three attempts in all
    max_menu_failures: int = 2  # invalid/no digit twice -> operator
    # a failed transfer without (another) overflow: the alternative number and the offer to call back;
    # False: "niet bereikbaar, tot ziens" as before
    offer_callback: bool = True
    callback_number_timeout_s: float = 15.0
    max_callback_number_tries: int = 2
    # a spoken answer the dialled code's names do not fit surely is decided again among every
    # municipality (ivr.core.second_pass); False: only the dialled code's names are heard
    national_second_pass: bool = True


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
    transfer_to: Municipality | None = None  # whose destination is being dialled (its overflow is next)
    to_municipality: bool = False  # the transfer is to the decided municipality (or its overflow)
    overflow_tried: tuple[str, ...] = ()  # overflow targets dialled so far (never one twice)
    callback_step: str = ""  # "consent" or "number" while the callback is offered
    callback_tries: int = 0
    ended: bool = False
    started: float = 0.0
    language: str = DEFAULT_LANGUAGE
    national: bool = False  # an access number's call: candidates are every municipality
    area_digits: str | None = None  # the caller is keying in an area code (digits so far)
    # the dialled code's decision on a spoken name and its attempt, while the national pass is asked
    first_pass: tuple[MatchResult, Attempt] | None = None


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
        actions = self._handle(event)
        if self._state.language != DEFAULT_LANGUAGE:
            # the flow composes Dutch keys; the caller hears them from the language's folder
            actions = [replace(a, prompts=localised(a.prompts, self._state.language)) if hasattr(a, "prompts") else a
                       for a in actions]
        return actions

    def _handle(self, event: Event) -> list[Action]:
        if isinstance(event, CallStarted):
            return self._start(event)
        if self.record is None:
            raise FlowError(f"{type(event).__name__} before CallStarted")
        if isinstance(event, CallEnded):
            self.record.ended_at = event.wall_time
            return []
        if self._state.ended:
            return []
        if isinstance(event, Dialling):
            return self._dialling(event)
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
        if isinstance(event, DigitsEntered):
            return self._digits_entered(event)
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
                                 started_at=ev.wall_time, plan_version=self.plan.version,
                                 expected_municipality=ev.expected)
        decision = route(self.plan, ev.dialled, now=self._now(), speech_available=self.speech_available)
        self._note_decision(decision)
        self.record.area_code = decision.area_code
        self.record.mode = decision.mode
        if decision.access is not None:  # from abroad: any municipality, by name or area code
            self.record.access_number = decision.access.key
            self._state.language = self.record.language = decision.access.language
            self._state.national = True
        if decision.verdict is Verdict.ASK:
            self._state.candidates = decision.candidates
            suggested = None if self._state.national else suggestion_for(
                self.plan, decision.candidates, known=ev.known_municipality, caller_area_code=ev.caller_area_code)
            if suggested:
                return self._ask_suggestion(ev.at, *suggested)
            if decision.mode is RoutingMode.SPEECH:
                return self._ask_speech(ev.at, first=True)
            if self._state.national:
                return self._ask_area_code(ev.at, ("welkom", *self._language_offers(), "toets_netnummer"))
            return self._ask_menu(ev.at, prompts=("welkom",))
        self.record.decision_ms = 0.0  # decided on arrival; the driver's Dialling event adds its latency
        return self._act_on(decision, ev.at)

    # -- deciding -----------------------------------------------------------------

    def _note_decision(self, decision: Decision) -> None:
        rec = self.record
        rec.decision = decision.verdict
        rec.reason = decision.reason
        rec.calamity = decision.calamity
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
            m = decision.municipality
            cbs = m.cbs_code if m else None
            # a calamity sends the call elsewhere on purpose: the municipality's overflow is not for it
            self._state.transfer_to = m if m and not decision.calamity else None
            self._state.to_municipality = self._state.transfer_to is not None
            timeout = m.ring_timeout_s if m and not decision.calamity else None
            return self._transfer(Transfer(decision.destination, prompts, cbs, back, timeout_s=timeout), at)
        if v is Verdict.OPERATOR:
            return self._to_operator(at, reason=decision.reason)
        if v is Verdict.NOT_CONNECTED:
            m = decision.municipality
            prompts = ("de_gemeente", municipality_prompt(m.cbs_code), "niet_aangesloten")
            if m.alt_number:
                prompts += ("belt_u", *digit_prompts(m.alt_number))
            return self._finish(at, Outcome.NOT_CONNECTED, Goodbye(prompts + ("tot_ziens",)))
        # invalid number or unknown area code
        return self._finish(at, Outcome.UNKNOWN_AREA_CODE, Goodbye(("onbekend_nummer", "tot_ziens")))

    def _to_operator(self, at: float, reason: str) -> list[Action]:
        rec = self.record
        rec.decision = Verdict.OPERATOR
        rec.reason = reason
        rec.calamity = False
        rec.destination = self.plan.operator_destination
        rec.municipality = None
        self._state.transfer_to, self._state.to_municipality = None, False
        return self._transfer(Transfer(self.plan.operator_destination, ("medewerker",), None), at)

    def _transfer(self, action: Transfer, at: float) -> list[Action]:
        self._enter(Phase.TRANSFER, at)
        self._state.transfer_started = at
        self.record.ivr_seconds = at - self._state.started
        return [action]

    def _chosen(self, m: Municipality, at: float, how: str) -> list[Action]:
        if self.record.area_code is None:  # named from abroad: the municipality's own area code
            self.record.area_code = m.area_codes[0]
        area = self.plan.area_codes[self.record.area_code]
        decision = choose(self.plan, area, m, dialled=self.record.dialled, now=self._now(), how=how)
        return self._act_on(decision, at, announce=True)

    # -- the DTMF menu ------------------------------------------------------------

    def _ask_menu(self, at: float, prompts: tuple[str, ...] = (), page: int = 0, again: bool = False) -> list[Action]:
        self._enter(Phase.MENU, at)
        self._state.menu_page = page
        self.record.recognition_attempts += 1
        listing: list[str] = list(prompts) + (["kies_menu"] if page == 0 else [])
        if "welkom" in prompts and self._offer_digits_free(page):
            listing[1:1] = self._language_offers()
        entries: list[MenuEntry] = []
        for digit, m in menu_page(self._state.candidates, page):
            listing += ["voor", municipality_prompt(m.cbs_code), "toets", f"cijfer/{digit}"]
            entries.append(MenuEntry(digit, m.cbs_code, heard_after=len(listing)))
        more = menu_has_more(self._state.candidates, page)
        if more:
            listing.append("meer_keuzes")
        listing.append("medewerker_keuze")
        return [MenuPage(tuple(listing), tuple(entries), more, self.settings.menu_timeout_s, again=again)]

    def _menu_digit(self, ev: Digit) -> list[Action]:
        st = self._state
        rec = self.record
        rec.digits += ev.digit
        entries = dict(menu_page(st.candidates, st.menu_page))
        if ev.digit in entries:
            m = entries[ev.digit]
            rec.attempts.append(Attempt(AttemptKind.MENU, InputKind.DTMF, ev.digit, verdict=AttemptVerdict.CHOSEN,
                                        chosen=m.cbs_code))
            return self._chosen(m, ev.at, how=f"menu digit {ev.digit}")
        if ev.digit == MORE_DIGIT and menu_has_more(st.candidates, st.menu_page):
            rec.attempts.append(Attempt(AttemptKind.MENU, InputKind.DTMF, ev.digit, verdict=AttemptVerdict.MORE))
            rec.recognition_attempts -= 1  # paging is the same question
            return self._ask_menu(ev.at, page=st.menu_page + 1)
        if ev.digit == OPERATOR_DIGIT:
            rec.attempts.append(Attempt(AttemptKind.MENU, InputKind.DTMF, ev.digit, verdict=AttemptVerdict.OPERATOR))
            return self._to_operator(ev.at, reason="caller asked for a person")
        language = self._language_of_digit(ev.digit)
        if language and self._offer_digits_free(st.menu_page):
            return self._switch_language(ev.at, language, Attempt(AttemptKind.MENU, InputKind.DTMF, ev.digit))
        rec.attempts.append(Attempt(AttemptKind.MENU, InputKind.DTMF, ev.digit, verdict=AttemptVerdict.INVALID))
        return self._menu_failed(ev.at, "ongeldige_keuze")

    def _menu_failed(self, at: float, prompt: str) -> list[Action]:
        self._state.menu_failures += 1
        if self._state.menu_failures >= self.settings.max_menu_failures:
            return self._to_operator(at, reason="no valid menu choice")
        return self._ask_menu(at, prompts=(prompt,), again=True)

    # -- speech -------------------------------------------------------------------

    def _matcher_for_candidates(self):
        if self._matcher is None:
            self._matcher = self._matcher_factory(self._state.candidates)
        return self._matcher

    def _ask_speech(self, at: float, first: bool = False, prompts: tuple[str, ...] = ()) -> list[Action]:
        self._enter(Phase.SPEECH, at)
        self._state.speech_attempts += 1
        self.record.recognition_attempts += 1
        question = "welke_gemeente" if self._state.national else "zeg_gemeente"
        offers = self._language_offers() if first else ()
        prompts = prompts or (("welkom", *offers, question) if first else ("niet_verstaan", question))
        codes = tuple(m.cbs_code for m in self._state.candidates)
        # a language offered is also heard by its name ("English"), on the question that offers it
        words = tuple(LANGUAGES[lang].said_as[0].title() for lang in self._offered()) if offers else ()
        return [AskName(prompts, codes, self.settings.speech_timeout_s, again=not first, phrases=words)]

    def _speech(self, ev: SpeechHeard) -> list[Action]:
        st = self._state
        if st.phase is Phase.CONFIRM:
            return self._confirm_answer(ev)
        if st.phase is Phase.SUGGEST:
            return self._suggestion_answer(ev)
        if st.phase is not Phase.SPEECH:
            raise FlowError(f"speech result in phase {st.phase}")
        if st.first_pass is not None:
            return self._second_pass_heard(ev)
        heard = ev.recognition.heard
        # a language is switched to only on a sure hearing of its name: "Utrecht" heard unsurely as
        # "English" must not turn a Dutch caller's dialogue into English
        sure = ev.recognition.verdict in (None, EngineVerdict.ACCEPT)
        language = language_said(heard) if heard and sure else None
        if language in self._offered():
            return self._switch_language(ev.at, language, Attempt(
                AttemptKind.SPEECH, InputKind.SPEECH, heard, recogniser_ms=ev.recogniser_ms,
                decision_ms=_ms(ev.at, ev.speech_ended_at)))
        result = self._matcher_for_candidates().decide(ev.recognition)
        verdict = AttemptVerdict(result.verdict)
        attempt = Attempt(
            AttemptKind.SPEECH, InputKind.SPEECH, ev.recognition.heard,
            candidates=_ranked(result), verdict=verdict, recogniser_ms=ev.recogniser_ms,
            decision_ms=_ms(ev.at, ev.speech_ended_at),
        )
        self.record.attempts.append(attempt)
        if self._second_pass_allowed(result):
            st.first_pass = (result, attempt)
            return [DecideAgain(tuple(m.cbs_code for m in self.plan.national_candidates()))]
        return self._act_on_match(result, attempt, ev.at)

    def _act_on_match(self, result: MatchResult, attempt: Attempt, at: float) -> list[Action]:
        """Carry out the dialled code's decision on a spoken name (``attempt`` is its record)."""
        by_code = {m.cbs_code: m for m in self._state.candidates}
        verdict = AttemptVerdict(result.verdict)
        if verdict is AttemptVerdict.ACCEPT:
            attempt.chosen = result.best.cbs_code
            return self._chosen(by_code[result.best.cbs_code], at, how=f"speech {result.best.heard!r}")
        if verdict in (AttemptVerdict.CONFIRM, AttemptVerdict.CHOOSE):
            pending = [by_code[s.cbs_code] for s in result.ranked[: 2 if verdict is AttemptVerdict.CHOOSE else 1]]
            attempt.chosen = pending[0].cbs_code
            place = same_name_place(result.ranked, pending) if verdict is AttemptVerdict.CHOOSE else ""
            attempt.asked = "same_name_place" if place else "confusable_held" if result.held_by else ""
            return self._ask_confirm(at, tuple(pending), place=place)
        return self._speech_failed(at)

    # -- the national second pass (ivr.core.second_pass) ----------------------------------

    def _second_pass_allowed(self, first: MatchResult) -> bool:
        st = self._state
        return (self.settings.national_second_pass and not st.national and st.phase is Phase.SPEECH
                and worth_a_second_pass(first) and len(self.plan.municipalities) > len(st.candidates))

    def _second_pass_heard(self, ev: SpeechHeard) -> list[Action]:
        """The same answer, decided among every municipality: propose one outside the dialled
        code by a question, or carry out the code's own decision."""
        st, rec = self._state, self.record
        (first, attempt), st.first_pass = st.first_pass, None
        national = self._matcher_factory(self.plan.national_candidates()).decide(ev.recognition)
        in_code = {m.cbs_code for m in st.candidates}
        outside = outside_the_code(national, in_code, ev.recognition.p_right)
        national_attempt = Attempt(
            AttemptKind.NATIONAL, InputKind.SPEECH, ev.recognition.heard, candidates=_ranked(national),
            verdict=AttemptVerdict(national.verdict), chosen=outside[0].cbs_code if outside else "",
            recogniser_ms=ev.recogniser_ms, decision_ms=_ms(ev.at, ev.speech_ended_at))
        rec.attempts.append(national_attempt)
        if not outside:
            rec.second_pass = SecondPass.NOTHING if national.best is None else SecondPass.IN_CODE
            return self._act_on_match(first, attempt, ev.at)
        rec.second_pass = SecondPass.OUTSIDE
        pending = tuple(self.plan.municipalities[s.cbs_code] for s in outside)
        place = same_name_place(outside, pending)  # two outside the code: a place both have ("Velp")
        national_attempt.asked = "same_name_place" if place else ""
        return self._ask_confirm(ev.at, pending, outside_code=True, place=place)

    def _speech_failed(self, at: float) -> list[Action]:
        if self._state.speech_attempts < self.settings.max_speech_attempts:
            return self._ask_speech(at)
        if self._state.national:  # no menu of 342 names: the area code instead
            return self._ask_area_code(at, ("niet_verstaan", "toets_netnummer"), again=True)
        return self._ask_menu(at, prompts=("niet_verstaan",), again=True)

    def _ask_confirm(self, at: float, pending: tuple[Municipality, ...], outside_code: bool = False,
                     place: str = "") -> list[Action]:
        """Confirm one municipality, or ask which of two; ``place``: the place name both have
        (a same-name place), said with each municipality's name."""
        self._enter(Phase.CONFIRM, at)
        self._state.pending = pending
        self.record.recognition_attempts += 1
        if outside_code and len(pending) == 1:
            m = pending[0]
            name = municipality_prompt(m.cbs_code)
            said = (name, "valt_niet_onder", *digit_prompts(self.record.area_code or ""))
            # "Ik verbind u door" only where a transfer will follow: a municipality not connected is told so after "ja"
            question = ("verbinden_met", name, "klopt_dat") if m.status.connected else ("bedoelt_u", name, "ja_nee")
            return [ConfirmOne(said + question, m.cbs_code, self.settings.confirm_timeout_s)]
        if len(pending) == 1:
            prompts = ("bedoelt_u", municipality_prompt(pending[0].cbs_code), "ja_nee")
            return [ConfirmOne(prompts, pending[0].cbs_code, self.settings.confirm_timeout_s)]
        codes = (pending[0].cbs_code, pending[1].cbs_code)
        if place:
            return [ChooseOfTwo(choose_place_prompts(place, *codes), codes, self.settings.confirm_timeout_s,
                                place=spoken_place(place))]
        prompts = ("bedoelt_u", municipality_prompt(codes[0]), "of", municipality_prompt(codes[1]), "een_of_twee")
        return [ChooseOfTwo(prompts, codes, self.settings.confirm_timeout_s)]

    def _confirm_answer(self, ev: SpeechHeard) -> list[Action]:
        pending = self._state.pending
        attempt = Attempt(AttemptKind.CONFIRM, InputKind.SPEECH, ev.recognition.heard, recogniser_ms=ev.recogniser_ms,
                          decision_ms=_ms(ev.at, ev.speech_ended_at))
        self.record.attempts.append(attempt)
        if len(pending) == 1:
            answer = self._yes_no(ev.recognition.nbest) if self._yes_no else None
            attempt.verdict = {True: AttemptVerdict.YES, False: AttemptVerdict.NO, None: AttemptVerdict.UNCLEAR}[answer]
            if answer:
                attempt.chosen = pending[0].cbs_code
                return self._chosen(pending[0], ev.at, how="confirmed by voice")
            if answer is False:
                self.record.rejected_confirmations += 1
            return self._speech_failed(ev.at)
        result = self._matcher_factory(pending).decide(ev.recognition)
        attempt.verdict = AttemptVerdict(result.verdict)
        if attempt.verdict is AttemptVerdict.ACCEPT:
            attempt.chosen = result.best.cbs_code
            chosen = next(m for m in pending if m.cbs_code == result.best.cbs_code)
            return self._chosen(chosen, ev.at, how="chosen of two by voice")
        return self._speech_failed(ev.at)

    def _confirm_digit(self, ev: Digit) -> list[Action]:
        pending = self._state.pending
        self.record.digits += ev.digit
        attempt = Attempt(AttemptKind.CONFIRM, InputKind.DTMF, ev.digit)
        self.record.attempts.append(attempt)
        if len(pending) == 1:
            if ev.digit == "1":
                attempt.verdict, attempt.chosen = AttemptVerdict.YES, pending[0].cbs_code
                return self._chosen(pending[0], ev.at, how="confirmed by digit")
            if ev.digit == "2":
                attempt.verdict = AttemptVerdict.NO
                self.record.rejected_confirmations += 1
                return self._speech_failed(ev.at)
        elif ev.digit in ("1", "2"):
            m = pending[int(ev.digit) - 1]
            attempt.verdict, attempt.chosen = AttemptVerdict.CHOSEN, m.cbs_code
            return self._chosen(m, ev.at, how=f"chosen of two by digit {ev.digit}")
        attempt.verdict = AttemptVerdict.INVALID
        return self._speech_failed(ev.at)

    # -- the suggestion ("Belt u weer voor de gemeente X?") -----------------------------

    def _ask_suggestion(self, at: float, m: Municipality, source: SuggestionSource) -> list[Action]:
        """Ask the municipality known about the caller first: yes (1), no (2), or a name instead."""
        st, rec = self._state, self.record
        self._enter(Phase.SUGGEST, at)
        st.pending = (m,)
        rec.suggested, rec.suggestion_source = m.cbs_code, source
        rec.recognition_attempts += 1
        by_voice = rec.mode is RoutingMode.SPEECH
        question = "suggestie_weer" if source is SuggestionSource.HISTORY else "suggestie_vast"
        prompts = ("welkom", question, municipality_prompt(m.cbs_code),
                   "suggestie_antwoord" if by_voice else "suggestie_toets")
        names = tuple(c.cbs_code for c in st.candidates) if by_voice else ()
        timeout = self.settings.speech_timeout_s if by_voice else self.settings.menu_timeout_s
        return [SuggestOne(prompts, m.cbs_code, names, timeout, by_voice=by_voice)]

    def _suggestion_digit(self, ev: Digit) -> list[Action]:
        rec = self.record
        rec.digits += ev.digit
        attempt = Attempt(AttemptKind.SUGGEST, InputKind.DTMF, ev.digit)
        rec.attempts.append(attempt)
        if ev.digit == "1":
            attempt.verdict = AttemptVerdict.YES
            return self._suggestion_accepted(ev.at, attempt)
        if ev.digit == OPERATOR_DIGIT:  # 0 is a person everywhere in the dialogue
            attempt.verdict = AttemptVerdict.OPERATOR
            rec.suggestion = SuggestionResult.REFUSED
            return self._to_operator(ev.at, reason="caller asked for a person")
        attempt.verdict = AttemptVerdict.NO if ev.digit == "2" else AttemptVerdict.INVALID
        return self._after_suggestion(ev.at, SuggestionResult.REFUSED)

    def _suggestion_answer(self, ev: SpeechHeard) -> list[Action]:
        """Yes or no when the best hypothesis is one; anything else is the answer to the name question."""
        st, rec = self._state, self.record
        nbest = ev.recognition.nbest
        answer = self._yes_no(nbest) if self._yes_no and self._yes_no(nbest[:1]) is not None else None
        if answer is None:
            rec.suggestion = SuggestionResult.NAMED
            self._enter(Phase.SPEECH, ev.at)
            st.speech_attempts += 1  # the suggestion was the first name question
            return self._speech(ev)
        attempt = Attempt(AttemptKind.SUGGEST, InputKind.SPEECH, ev.recognition.heard,
                          verdict=AttemptVerdict.YES if answer else AttemptVerdict.NO,
                          recogniser_ms=ev.recogniser_ms, decision_ms=_ms(ev.at, ev.speech_ended_at))
        rec.attempts.append(attempt)
        if answer:
            return self._suggestion_accepted(ev.at, attempt)
        return self._after_suggestion(ev.at, SuggestionResult.REFUSED)

    def _suggestion_accepted(self, at: float, attempt: Attempt) -> list[Action]:
        m = self._state.pending[0]
        attempt.chosen = m.cbs_code
        self.record.suggestion = SuggestionResult.ACCEPTED
        return self._chosen(m, at, how="suggestion accepted")  # announced, with * to go back

    def _after_suggestion(self, at: float, result: SuggestionResult) -> list[Action]:
        """Not that one (or no answer): the question the caller would have had without a suggestion."""
        self.record.suggestion = result
        if self.record.mode is RoutingMode.SPEECH:
            return self._ask_speech(at, first=True, prompts=(*self._language_offers(), "zeg_gemeente"))
        return self._ask_menu(at)

    # -- shared event handlers -----------------------------------------------------

    def _digit(self, ev: Digit) -> list[Action]:
        phase = self._state.phase
        if phase is Phase.MENU and self._state.area_digits is not None:
            return self._area_code_digit(ev)
        if phase is Phase.MENU:
            return self._menu_digit(ev)
        if phase is Phase.CONFIRM:
            return self._confirm_digit(ev)
        if phase is Phase.SUGGEST:
            return self._suggestion_digit(ev)
        if phase is Phase.SPEECH and self._language_of_digit(ev.digit):
            self.record.digits += ev.digit
            return self._switch_language(ev.at, self._language_of_digit(ev.digit),
                                         Attempt(AttemptKind.SPEECH, InputKind.DTMF, ev.digit))
        if phase is Phase.SPEECH and self._state.national:
            # from abroad a digit starts the area code (they all begin with 0: no operator digit here)
            self.record.recognition_attempts -= 1  # the same question, answered by keys
            return self._area_code_digit(ev, started=self._ask_area_code(ev.at, ()))
        if phase is Phase.SPEECH:
            # DTMF works at any moment: a digit while we listen means "give me the menu"
            self.record.digits += ev.digit
            self.record.attempts.append(Attempt(AttemptKind.SPEECH, InputKind.DTMF, ev.digit,
                                               verdict=AttemptVerdict.TO_MENU))
            if ev.digit == OPERATOR_DIGIT:
                return self._to_operator(ev.at, reason="caller asked for a person")
            self.record.recognition_attempts -= 1  # the menu is asked instead, not as well
            return self._ask_menu(ev.at)
        if phase is Phase.TRANSFER and ev.digit == BACK_DIGIT and self.record.attempts:
            return self._went_back(ev)
        if phase is Phase.CALLBACK:  # a driver that reports single keys
            return self._digits_entered(DigitsEntered(ev.at, ev.digit))
        return []  # other digits during a transfer or announcement mean nothing

    def _went_back(self, ev: Digit) -> list[Action]:
        """The caller pressed * while hearing where we send them: the choice was wrong."""
        rec = self.record
        rec.digits += ev.digit
        rec.rejected_confirmations += 1
        rec.attempts.append(Attempt(AttemptKind.TRANSFER, InputKind.DTMF, ev.digit, verdict=AttemptVerdict.BACK,
                                    chosen=rec.municipality or ""))
        rec.municipality = rec.destination = None
        if self._state.national:  # the next name decides the area code again
            rec.area_code = None
        self._state.transfer_started = None
        rec.ivr_seconds = None
        if rec.mode is RoutingMode.SPEECH and self._state.speech_attempts < self.settings.max_speech_attempts:
            return self._ask_speech(ev.at)
        if self._state.national:
            return self._ask_area_code(ev.at, ("toets_netnummer",), again=True)
        return self._ask_menu(ev.at)

    def _no_input(self, ev: NoInput) -> list[Action]:
        phase = self._state.phase
        if phase is Phase.MENU and self._state.area_digits is not None:
            self.record.attempts.append(Attempt(AttemptKind.MENU, InputKind.NO_INPUT))
            return self._area_code_failed(ev.at, "geen_invoer")
        if phase is Phase.MENU:
            self.record.attempts.append(Attempt(AttemptKind.MENU, InputKind.NO_INPUT))
            return self._menu_failed(ev.at, "geen_invoer")
        if phase is Phase.SPEECH and self._state.first_pass is not None:
            # the driver could not decide the answer again: the dialled code's decision stands
            (first, attempt), self._state.first_pass = self._state.first_pass, None
            return self._act_on_match(first, attempt, ev.at)
        if phase in (Phase.SPEECH, Phase.CONFIRM):
            self.record.attempts.append(Attempt(AttemptKind(phase.value), InputKind.NO_INPUT))
            return self._speech_failed(ev.at)
        if phase is Phase.CALLBACK:
            return self._digits_entered(DigitsEntered(ev.at, ""))
        if phase is Phase.SUGGEST:
            self.record.attempts.append(Attempt(AttemptKind.SUGGEST, InputKind.NO_INPUT))
            return self._after_suggestion(ev.at, SuggestionResult.NO_ANSWER)
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
        rec.outcome = Outcome.OPERATOR if rec.decision == Verdict.OPERATOR else Outcome.ROUTED
        self._enter(Phase.CONNECTED, ev.at)
        return []

    def _transfer_failed(self, ev: TransferFailed) -> list[Action]:
        rec = self.record
        rec.hangup_cause = ev.status
        failing = self._state.transfer_to
        if failing is not None:
            overflow = self._overflow_after(failing, ev.at)
            if overflow:
                return overflow
        rec.error = f"transfer failed: {ev.status}"
        rec.error_kind = ErrorKind.TRANSFER_FAILED
        decided = self.plan.municipalities.get(rec.municipality or "")
        if not self._state.to_municipality or decided is None or not self.settings.offer_callback:
            return self._finish(ev.at, Outcome.FAILED, Goodbye(("niet_bereikbaar", "tot_ziens")))
        return self._offer_callback(ev.at, decided)

    # -- overflow and callback (a municipality that did not answer) ---------------------

    def _overflow_after(self, failing: Municipality, at: float) -> list[Action]:
        """Dial ``failing``'s overflow, once each along the chain; [] when there is none left."""
        st, rec = self._state, self.record
        target = failing.overflow
        if not target or target in st.overflow_tried or target == rec.municipality:
            return []
        if is_cbs_code(target):
            nxt = self.plan.municipalities.get(target)
            if nxt is None or not nxt.status.connected:
                return []
            destination, timeout = nxt.destination, nxt.ring_timeout_s
        else:  # a dial string: the end of the chain
            nxt, destination, timeout = None, target, failing.ring_timeout_s
        st.overflow_tried += (target,)
        st.transfer_to = nxt
        st.transfer_started = at  # the setup time is the overflow's
        rec.overflow_to = target
        rec.destination = destination
        rec.hangup_cause = None
        return [Transfer(destination, ("overloop",), nxt.cbs_code if nxt else None, timeout_s=timeout)]

    def _offer_callback(self, at: float, decided: Municipality) -> list[Action]:
        """Say the alternative number (if any) and ask for consent to call back."""
        rec = self.record
        self._enter(Phase.CALLBACK, at)
        rec.outcome = Outcome.FAILED  # not connected, whatever the caller answers now
        prompts: tuple[str, ...] = ("niet_bereikbaar_nu",)
        if decided.alt_number:
            prompts += ("belt_u", *digit_prompts(decided.alt_number))
            rec.alt_number_given = True
        self._state.callback_step = "consent"
        return [AskDigits(prompts + ("terugbellen_vraag",), 1, self.settings.menu_timeout_s)]

    def _digits_entered(self, ev: DigitsEntered) -> list[Action]:
        st, rec = self._state, self.record
        if st.phase is not Phase.CALLBACK:
            raise FlowError(f"keyed digits in phase {st.phase}")
        if st.callback_step == "consent":
            rec.digits += ev.digits
            if ev.digits != CONSENT_DIGIT:
                rec.callback = CallbackResult.DECLINED
                return self._finish(ev.at, Outcome.FAILED, Goodbye(("later_opnieuw", "tot_ziens")))
            st.callback_step = "number"
            return [AskDigits(("terugbellen_nummer",), MAX_KEYED_DIGITS, self.settings.callback_number_timeout_s)]
        # the number is personal data: it goes to the callback request only, never into the record
        number = callback_number(ev.digits)
        if number is None:
            st.callback_tries += 1
            if st.callback_tries < self.settings.max_callback_number_tries:
                return [AskDigits(("ongeldig_nummer", "terugbellen_nummer"), MAX_KEYED_DIGITS,
                                  self.settings.callback_number_timeout_s)]
            rec.callback = CallbackResult.INVALID_NUMBER
            return self._finish(ev.at, Outcome.FAILED, Goodbye(("ongeldig_nummer", "later_opnieuw", "tot_ziens")))
        rec.callback = CallbackResult.REQUESTED
        goodbye = Goodbye(("terugbellen_bevestigd", *digit_prompts(ev.digits), "tot_ziens"))
        return [RequestCallback(rec.municipality, number), *self._finish(ev.at, Outcome.FAILED, goodbye)]

    def _hung_up(self, ev: CallerHungUp) -> list[Action]:
        rec = self.record
        rec.hangup_cause = ev.cause or rec.hangup_cause
        if self._state.phase is Phase.CONNECTED:
            return self._finish(ev.at, rec.outcome)
        rec.hangup_phase = self._state.phase
        if rec.outcome in (Outcome.NOT_CONNECTED, Outcome.UNKNOWN_AREA_CODE) or self._state.phase is Phase.CALLBACK:
            return self._finish(ev.at, rec.outcome)
        return self._finish(ev.at, Outcome.CALLER_HANGUP)

    def _lost(self, ev: DriverLost) -> list[Action]:
        self.record.error = ev.reason
        self.record.error_kind = ev.kind
        if self._state.phase is Phase.CONNECTED:
            return self._finish(ev.at, self.record.outcome)
        return self._finish(ev.at, Outcome.FAILED)

    def _dialling(self, ev: Dialling) -> list[Action]:
        rec = self.record
        if rec.decision_ms is not None and not rec.attempts and not rec.overflow_to:  # decided on arrival
            rec.decision_ms = (ev.at - self._state.started) * 1000
        return []

    # -- languages ----------------------------------------------------------------

    def _offered(self) -> tuple[str, ...]:
        """Languages the caller can switch to now: the plan's, and Dutch once away from it."""
        offered = tuple(lang for lang in self.plan.languages if lang in LANGUAGES)
        return tuple(lang for lang in (DEFAULT_LANGUAGE, *offered) if lang != self._state.language)

    def _language_offers(self) -> tuple[str, ...]:
        """The greeting's "For English, press 9": said in Dutch calls only."""
        if self._state.language != DEFAULT_LANGUAGE:
            return ()
        return tuple(LANGUAGES[lang].offer for lang in self._offered() if LANGUAGES[lang].offer)

    def _language_of_digit(self, digit: str) -> str | None:
        if self._state.language != DEFAULT_LANGUAGE:
            return None
        return next((lang for lang in self._offered() if LANGUAGES[lang].offer_digit == digit), None)

    def _offer_digits_free(self, page: int) -> bool:
        """A menu page can offer a language only where its digit names no municipality and no next page."""
        taken = {d for d, _ in menu_page(self._state.candidates, page)}
        if menu_has_more(self._state.candidates, page):
            taken.add(MORE_DIGIT)
        return not any(LANGUAGES[lang].offer_digit in taken for lang in self._offered())

    def _switch_language(self, at: float, language: str, attempt: Attempt) -> list[Action]:
        """The caller chose a language: the same question again, in that language (not counted twice)."""
        st, rec = self._state, self.record
        st.language = rec.language = language
        attempt.verdict = AttemptVerdict.LANGUAGE
        rec.attempts.append(attempt)
        rec.recognition_attempts -= 1
        if st.area_digits is not None:
            return self._ask_area_code(at, ("welkom", "toets_netnummer"))
        if st.phase is Phase.MENU:
            return self._ask_menu(at, prompts=("welkom",), page=0)
        st.speech_attempts -= 1
        return self._ask_speech(at, first=True)

    # -- the area code, keyed in from abroad ---------------------------------------

    def _ask_area_code(self, at: float, prompts: tuple[str, ...], again: bool = False) -> list[Action]:
        self._enter(Phase.MENU, at)
        self._state.area_digits = ""
        self.record.recognition_attempts += 1
        return [MenuPage(prompts, (), False, self.settings.menu_timeout_s, again=again, area_code=True)]

    def _area_code_digit(self, ev: Digit, started: list[Action] | None = None) -> list[Action]:
        """One digit of an area code; the codes are prefix-free, so a complete one needs no '#'."""
        st, rec = self._state, self.record
        st.area_digits += ev.digit
        rec.digits += ev.digit
        code = st.area_digits
        if code in self.plan.area_codes:
            st.area_digits = None
            decision = route(self.plan, "14" + code, now=self._now(), speech_available=self.speech_available)
            rec.attempts.append(Attempt(AttemptKind.MENU, InputKind.DTMF, code, verdict=AttemptVerdict.CHOSEN,
                                        chosen=decision.municipality.cbs_code if decision.municipality else ""))
            rec.area_code, rec.mode = code, decision.mode
            st.national, st.speech_attempts, st.menu_failures, self._matcher = False, 0, 0, None
            st.candidates = decision.candidates or ((decision.municipality,) if decision.municipality else ())
            if decision.verdict is not Verdict.ASK:
                return self._act_on(decision, ev.at, announce=decision.verdict is Verdict.TRANSFER)
            if decision.mode is RoutingMode.SPEECH:
                return self._ask_speech(ev.at, first=True, prompts=("zeg_gemeente",))
            return self._ask_menu(ev.at)
        if code == ev.digit and self._language_of_digit(ev.digit):
            return self._switch_language(ev.at, self._language_of_digit(ev.digit),
                                         Attempt(AttemptKind.MENU, InputKind.DTMF, ev.digit))
        if code.isdigit() and any(c.startswith(code) for c in self.plan.area_codes):
            return started or [MenuPage((), (), False, self.settings.menu_timeout_s, area_code=True)]
        rec.attempts.append(Attempt(AttemptKind.MENU, InputKind.DTMF, code, verdict=AttemptVerdict.INVALID))
        return self._area_code_failed(ev.at, "onbekend_netnummer")

    def _area_code_failed(self, at: float, prompt: str) -> list[Action]:
        self._state.menu_failures += 1
        if self._state.menu_failures >= self.settings.max_menu_failures:
            self._state.area_digits = None
            return self._to_operator(at, reason="no valid area code keyed in")
        return self._ask_area_code(at, (prompt, "toets_netnummer"), again=True)

    # -- bookkeeping --------------------------------------------------------------

    def _enter(self, phase: Phase, at: float) -> None:
        st = self._state
        spent = max(0.0, at - st.phase_since)
        self.record.phase_seconds[st.phase] = self.record.phase_seconds.get(st.phase, 0.0) + spent
        st.phase, st.phase_since = phase, at
        st.first_pass = None  # a new question: no answer is waiting for its national pass
        self.record.phase = phase

    def _finish(self, at: float, outcome: Outcome, goodbye: Goodbye | None = None) -> list[Action]:
        """Close the call: the outcome is final; with a ``goodbye`` the caller hears it first."""
        rec = self.record
        rec.outcome = outcome
        self._enter(self._state.phase, at)  # account the time of the last phase
        if rec.ivr_seconds is None:
            rec.ivr_seconds = at - self._state.started
        self._state.ended = True
        return [goodbye] if goodbye else []


def _ranked(result: MatchResult) -> list[dict]:
    """The record's view of a decision: its three best, with their scores."""
    return [{"cbs_code": s.cbs_code, "score": round(s.score, 1)} for s in result.ranked[:3]]


def same_name_place(ranked: Sequence, pending: Sequence[Municipality]) -> str:
    """The place name two municipalities share, when the two best were matched on it ("Velp"
    heard: Rheden's and Land van Cuijk's village); "" otherwise (two names that sound alike)."""
    if len(ranked) < 2 or len(pending) < 2 or not ranked[0].heard:
        return ""
    key = place_prompt(ranked[0].heard)
    if key == "plaats/" or place_prompt(ranked[1].heard) != key:
        return ""
    if all(any(place_prompt(p) == key for p in m.places) for m in pending[:2]):
        return ranked[0].heard
    return ""


def _ms(at: float, since: float | None) -> float | None:
    return None if since is None else max(0.0, (at - since) * 1000)
