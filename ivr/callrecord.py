"""What is kept of one call: filled in by the call flow, persisted by a store.

Plain data, no I/O. Times are seconds on the driver's clock (monotonic for durations,
wall-clock epoch for ``started_at``/``ended_at``).
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any


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


@dataclass
class Attempt:
    """One question to the caller and what came back."""

    kind: str  # "speech", "confirm", "menu"
    input: str  # "speech", "dtmf", "no_input"
    heard: str = ""  # best transcript or the digit
    candidates: list[dict[str, Any]] = field(default_factory=list)  # [{cbs_code, score}] best first
    verdict: str = ""  # matcher verdict or menu result
    chosen: str = ""  # CBS code the attempt pointed to, if any
    recogniser_ms: float | None = None
    decision_ms: float | None = None  # end of speech -> decision


@dataclass
class CallRecord:
    call_id: str
    dialled: str
    caller: str = ""  # hashed: callers' numbers are personal data
    started_at: float = 0.0
    ended_at: float | None = None
    area_code: str | None = None
    mode: str | None = None
    decision: str = ""  # routing verdict
    reason: str = ""
    municipality: str | None = None  # CBS code decided
    destination: str | None = None
    answered_by: str | None = None  # what answered the transfer (lab: CBS code)
    outcome: str | None = None
    phase: str = Phase.GREETING.value  # current phase; at the end: the phase the call ended in
    hangup_phase: str | None = None  # set when the caller hung up before being connected
    hangup_cause: str | None = None
    recognition_attempts: int = 0  # questions asked until a decision (speech + confirm + menu)
    rejected_confirmations: int = 0  # caller said "no" to an announced municipality
    digits: str = ""
    attempts: list[Attempt] = field(default_factory=list)
    phase_seconds: dict[str, float] = field(default_factory=dict)
    decision_ms: float | None = None  # call start -> routing decision (unique codes)
    transfer_setup_ms: float | None = None  # Dial -> answer
    ivr_seconds: float | None = None  # call start -> transfer or end
    error: str | None = None
    plan_version: str = ""
    # ground truth where a driver knows it (simulator, replay): the CBS code the caller wanted
    expected_municipality: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def hash_caller(number: str, salt: str) -> str:
    """A stable pseudonym for a caller's number (keeps repeat-caller analysis possible)."""
    digits = "".join(ch for ch in (number or "") if ch.isdigit())
    if not digits:
        return ""
    return hashlib.sha256((salt + digits).encode()).hexdigest()[:16]
