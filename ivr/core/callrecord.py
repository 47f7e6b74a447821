"""What is kept of one call: filled in by the call flow, persisted by a store.

Plain data, no I/O. Times are seconds on the driver's clock (monotonic for durations,
wall-clock epoch for ``started_at``/``ended_at``).
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

from ivr.core.plan import RoutingMode
from ivr.core.routing import Verdict


class Outcome(StrEnum):
    ROUTED = "routed"
    NOT_CONNECTED = "not_connected"
    UNKNOWN_AREA_CODE = "unknown_area_code"
    OPERATOR = "operator"
    CALLER_HANGUP = "caller_hangup"
    FAILED = "failed"


class Phase(StrEnum):
    GREETING = "greeting"
    MENU = "menu"
    SPEECH = "speech"
    CONFIRM = "confirm"
    TRANSFER = "transfer"
    CONNECTED = "connected"
    CALLBACK = "callback"  # the transfer failed: alternative number and the offer to call back
    SUGGEST = "suggest"  # "Belt u weer voor de gemeente X?" before the name question


class AttemptKind(StrEnum):
    """Which question an attempt answered."""

    SPEECH = "speech"  # "which municipality?"
    CONFIRM = "confirm"  # "did you mean X?" / "X or Y?"
    MENU = "menu"  # a DTMF menu page
    TRANSFER = "transfer"  # "*" while hearing where the call goes
    NATIONAL = "national"  # the same spoken answer decided again among every municipality
    SUGGEST = "suggest"  # "Belt u weer voor de gemeente X?": yes or no (a name goes to SPEECH)


class InputKind(StrEnum):
    SPEECH = "speech"
    DTMF = "dtmf"
    NO_INPUT = "no_input"


class AttemptVerdict(StrEnum):
    """What one answer meant: the matcher's verdicts, then the menu's and the confirmation's."""

    ACCEPT = "accept"
    CONFIRM = "confirm"
    CHOOSE = "choose"
    REJECT = "reject"
    YES = "yes"
    NO = "no"
    UNCLEAR = "unclear"
    CHOSEN = "chosen"
    MORE = "more"
    OPERATOR = "operator"
    INVALID = "invalid"
    TO_MENU = "to_menu"
    BACK = "back"
    LANGUAGE = "language"  # the caller chose another language (9, or its name)
    NONE = ""  # no answer (no input)


class ErrorKind(StrEnum):
    """Why a call went wrong on our side (``CallRecord.error`` says it in words, for people)."""

    TRANSFER_FAILED = "transfer_failed"
    ASTERISK_LOST = "asterisk_lost"
    CONTROLLER_LOST = "controller_lost"  # the controller that held the call died; another one wrote this
    SHUTDOWN = "shutdown"
    OTHER = "other"


class CallbackResult(StrEnum):
    """How the offer to be called back ended (the number itself is never in the record)."""

    REQUESTED = "requested"
    DECLINED = "declined"  # no consent: another key, or none
    INVALID_NUMBER = "invalid_number"  # consent given, but no Dutch or E.164 number keyed


class SecondPass(StrEnum):
    """What deciding a spoken answer again among every municipality found (the national second pass)."""

    OUTSIDE = "outside"  # a municipality outside the dialled area code: proposed by a question
    IN_CODE = "in_code"  # a municipality of the dialled code, or nothing sure: the code's own decision stands
    NOTHING = "nothing"  # nothing recognised nationally either
class SuggestionSource(StrEnum):
    """What a suggested municipality was known from."""

    HISTORY = "history"  # this caller's salted hash was routed there within the last N days
    LANDLINE = "landline"  # the caller's landline area code belongs to one municipality


class SuggestionResult(StrEnum):
    """How the caller answered a suggestion (None in the record: hung up during it)."""

    ACCEPTED = "accepted"  # ja / 1: the announced transfer
    REFUSED = "refused"  # nee / 2 / another key: the normal question
    NAMED = "named"  # answered with a name: decided as the first answer to the name question
    NO_ANSWER = "no_answer"  # nothing heard: the normal question


class MisrouteSignal(StrEnum):
    """How a misrouted call shows itself, in order of precedence (see ivr.core.report)."""

    EXPECTED_MISMATCH = "expected_mismatch"
    ANSWERED_BY_MISMATCH = "answered_by_mismatch"
    REJECTED_CONFIRMATION = "rejected_confirmation"
    REPEAT_CALL = "repeat_call"


@dataclass
class Attempt:
    """One question to the caller and what came back."""

    kind: AttemptKind
    input: InputKind
    heard: str = ""  # best transcript or the digit
    candidates: list[dict[str, Any]] = field(default_factory=list)  # [{cbs_code, score}] best first
    verdict: AttemptVerdict = AttemptVerdict.NONE  # matcher verdict or menu result
    chosen: str = ""  # CBS code the attempt pointed to, if any
    recogniser_ms: float | None = None
    decision_ms: float | None = None  # end of speech -> decision
    # why a question followed where it would not have: "same_name_place" (a place of two
    # municipalities asked back by name), "confusable_held" (an accept of a listed pair held to confirm)
    asked: str = ""

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Attempt":
        d = dict(data)
        d["kind"], d["input"] = AttemptKind(d["kind"]), InputKind(d["input"])
        d["verdict"] = AttemptVerdict(d.get("verdict") or "")
        return cls(**d)


@dataclass
class CallRecord:
    call_id: str
    dialled: str
    caller: str = ""  # hashed: callers' numbers are personal data
    started_at: float = 0.0
    ended_at: float | None = None
    area_code: str | None = None
    mode: RoutingMode | None = None
    decision: Verdict | str = ""  # routing verdict ("" until the call has started)
    reason: str = ""  # for people: never read by logic
    municipality: str | None = None  # CBS code decided
    destination: str | None = None
    answered_by: str | None = None  # what answered the transfer (lab: CBS code)
    outcome: Outcome | None = None
    phase: Phase = Phase.GREETING  # current phase; at the end: the phase the call ended in
    hangup_phase: Phase | None = None  # set when the caller hung up before being connected
    hangup_cause: str | None = None
    recognition_attempts: int = 0  # questions asked until a decision (speech + confirm + menu)
    rejected_confirmations: int = 0  # caller said "no" to an announced municipality
    digits: str = ""
    attempts: list[Attempt] = field(default_factory=list)
    phase_seconds: dict[str, float] = field(default_factory=dict)
    decision_ms: float | None = None  # call start -> routing decision (unique codes)
    transfer_setup_ms: float | None = None  # Dial -> answer
    ivr_seconds: float | None = None  # call start -> transfer or end
    error: str | None = None  # for people: never read by logic (see error_kind)
    plan_version: str = ""
    # ground truth where a driver knows it (simulator, replay): the CBS code the caller wanted
    expected_municipality: str | None = None
    error_kind: ErrorKind | None = None
    calamity: bool = False  # the decision is a calamity override's
    language: str = "nl"  # the language the dialogue ended in (ivr.core.prompts.LANGUAGES)
    access_number: str | None = None  # dialled an access number (from abroad): its digits
    # the decided destination failed (busy, no answer, unreachable): where the call overflowed to
    overflow_to: str | None = None  # CBS code or dial string
    alt_number_given: bool = False  # the caller was told the municipality's alternative number
    callback: CallbackResult | None = None  # the offer to call back, when it was made and answered
    second_pass: SecondPass | None = None  # the last national second pass of the call, when one ran
    suggested: str | None = None  # CBS code asked first ("Belt u weer voor de gemeente X?"), when one was
    suggestion_source: SuggestionSource | None = None
    suggestion: SuggestionResult | None = None  # the caller's answer to it

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "CallRecord":
        """A record from plain data (a stored row, JSON): the enums become enums again."""
        d = dict(data)
        d["attempts"] = [a if isinstance(a, Attempt) else Attempt.from_dict(a) for a in d.get("attempts") or []]
        d["phase_seconds"] = {Phase(k): v for k, v in (d.get("phase_seconds") or {}).items()}
        for key, enum in (("mode", RoutingMode), ("outcome", Outcome), ("hangup_phase", Phase),
                          ("error_kind", ErrorKind), ("callback", CallbackResult),
                          ("second_pass", SecondPass),
                          ("suggestion_source", SuggestionSource), ("suggestion", SuggestionResult)):
            d[key] = enum(d[key]) if d.get(key) else None
        d["phase"] = Phase(d.get("phase") or Phase.GREETING)
        d["decision"] = Verdict(d["decision"]) if d.get("decision") else ""
        d["calamity"] = bool(d.get("calamity"))
        d["alt_number_given"] = bool(d.get("alt_number_given"))
        return cls(**d)


def controller_lost(record: CallRecord | None, *, call_id: str, dialled: str, caller: str, started_at: float,
                    at: float, reason: str, transfer_answered: bool) -> CallRecord | None:
    """The record of a call whose controller died while holding it, as another controller finishes it
    when Asterisk reports the loss (the dialplan's ``lost`` AGI). ``record`` is what the dead controller
    had saved, or None when none reached the store (it is then made from what Asterisk knows). None when
    that record was finished already: the controller died after writing the end, which stands.
    A caller whose transfer had been answered reached the municipality; anyone else did not."""
    if record is not None and record.ended_at is not None:
        return None
    if record is None:
        record = CallRecord(call_id=call_id, dialled=dialled, caller=caller, started_at=started_at)
    record.error = reason
    record.error_kind = ErrorKind.CONTROLLER_LOST
    record.ended_at = at
    if transfer_answered and record.municipality:
        record.phase = Phase.CONNECTED
        record.outcome = Outcome.ROUTED
    else:
        record.outcome = Outcome.FAILED
    return record


def hash_caller(number: str, salt: str) -> str:
    """A stable pseudonym for a caller's number (keeps repeat-caller analysis possible)."""
    digits = "".join(ch for ch in (number or "") if ch.isdigit())
    if not digits:
        return ""
    return hashlib.sha256((salt + digits).encode()).hexdigest()[:16]
