"""What a driver tells the call flow: events, each with ``at`` (the driver's monotonic
clock, seconds); the driver's own timings travel in events too (:class:`Dialling`,
:class:`CallEnded`), so the flow alone writes the call record."""

from __future__ import annotations

from dataclasses import dataclass

from ivr.core.callrecord import ErrorKind
from ivr.core.recognition import Recognition

@dataclass(frozen=True, slots=True)
class CallStarted:
    at: float
    call_id: str
    dialled: str
    caller: str = ""  # already pseudonymised by the driver
    wall_time: float = 0.0
    expected: str | None = None  # ground truth where the driver knows it (simulator, replay): a CBS code
    # what the driver knows about the caller, for a suggestion (ivr.core.suggestion); never the number itself
    known_municipality: str | None = None  # CBS code this caller's hash was last routed to (within N days)
    caller_area_code: str | None = None  # the area code of the caller's Dutch landline number


@dataclass(frozen=True, slots=True)
class Digit:
    at: float
    digit: str


@dataclass(frozen=True, slots=True)
class DigitsEntered:
    """The digits keyed in answer to :class:`~ivr.core.actions.AskDigits` (without the end digit)."""

    at: float
    digits: str


@dataclass(frozen=True, slots=True)
class SpeechHeard:
    at: float
    recognition: Recognition
    speech_ended_at: float | None = None  # when the caller stopped talking
    recogniser_ms: float | None = None


@dataclass(frozen=True, slots=True)
class NoInput:
    at: float


@dataclass(frozen=True, slots=True)
class Dialling:
    """The driver starts dialling a :class:`Transfer`'s destination (its announcement is over)."""

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
    reason: str  # for people
    kind: ErrorKind = ErrorKind.OTHER


@dataclass(frozen=True, slots=True)
class CallEnded:
    """The driver is done with the call (after the last words); ``wall_time`` in epoch seconds."""

    at: float
    wall_time: float


Event = (CallStarted | Digit | DigitsEntered | SpeechHeard | NoInput | Dialling | TransferAnswered | TransferFailed
         | CallerHungUp | DriverLost | CallEnded)
