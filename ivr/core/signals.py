"""What one finished call record says, the same for the KPIs (:mod:`ivr.core.report`) and
the Prometheus metrics (:mod:`ivr.adapters.metrics`): its attempt bucket, transfer target
and result, hang-up phase, error kind, latencies, and misroute signals (including the
repeat-call proxy, which needs the next call: :class:`MisrouteTracker`). Only enums and
numbers are read, never a reason or an error sentence.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from ivr.core.callrecord import (AttemptKind, AttemptVerdict, CallbackResult, CallRecord, ErrorKind, MisrouteSignal,
                                 Outcome, Phase)
from ivr.core.plan import RoutingMode, is_cbs_code
from ivr.core.routing import Verdict

ATTEMPT_BUCKETS = ("1", "2", "3+", "undecided")
MISROUTE_REASONS = tuple(MisrouteSignal)
TRANSFER_RESULTS = ("answered", "caller_hangup", "failed")
# after a failed transfer the call stays "failed" whenever the caller hangs up (the callback offer)
HANGUP_PHASES = tuple(p.value for p in Phase if p not in (Phase.CONNECTED, Phase.CALLBACK))
LATENCIES = ("ivr_seconds", "unique_decision_seconds", "speech_decision_seconds", "recogniser_seconds",
             "transfer_setup_seconds")
ERROR_KINDS = tuple(ErrorKind)
#: What happened after the decided municipality was busy, did not answer or was unreachable
#: (2020: "niet bereikbaar, tot ziens", the caller lost). A call can take several.
FAILOVER_PATHS = ("overflow_taken", "overflow_answered", "alternative_number", "callback_offered",
                  "callback_requested", "callback_declined", "callback_invalid_number")
#: The national second pass (2020: a name outside the dialled code went to the nearest name
#: inside it, Haarlemmermeer -> Haarlem). A call can take several.
SECOND_PASS_PATHS = ("run", "outside_proposed", "outside_accepted", "outside_refused")
# a question asked instead of a transfer (issue 11 item 2; 2020: Haarlemmermeer -> Haarlem misroutes):
# a place of two municipalities asked back by name, an accept of a listed confusable pair held to confirm
ASKED_BACK_PATHS = ("same_name_place", "confusable_held")
NONE_LABEL = "none"  # label value for a missing area code or mode
#: The suggestion asked first ("Belt u weer voor de gemeente X?"): made, and how it was answered
#: (a call that hung up during it is made and nothing else).
SUGGESTION_PATHS = ("made", "accepted", "refused", "named", "no_answer")


# --- classifying one record (shared with ivr.adapters.metrics) ---------------------------------


def label(value: str | None) -> str:
    return value if value else NONE_LABEL


def expected_of(record: CallRecord) -> str | None:
    """Ground truth, when a simulator or replay knows it (optional attribute/field)."""
    value = getattr(record, "expected_municipality", None)
    return value or None


def is_routed(record: CallRecord) -> bool:
    return record.outcome == Outcome.ROUTED and bool(record.municipality)


ENTRIES = ("fourteen", "access")  # dialled a 14-number, or an access number (from abroad)


def entry_of(record: CallRecord) -> str:
    return "access" if record.access_number else "fourteen"


def language_of(record: CallRecord) -> str:
    return record.language or "nl"  # records from before languages were all Dutch


def attempts_bucket(record: CallRecord) -> str | None:
    """'1', '2', '3+' or 'undecided' for a call whose caller was asked; None otherwise."""
    if record.recognition_attempts < 1:
        return None
    decided = bool(record.municipality) and record.decision in (Verdict.TRANSFER, Verdict.NOT_CONNECTED)
    if not decided:
        return "undecided"
    n = record.recognition_attempts
    return "1" if n == 1 else "2" if n == 2 else "3+"


def transfer_target(record: CallRecord) -> str | None:
    """'municipality', 'operator' or 'other' when the call reached a transfer; else None."""
    reached = record.phase in (Phase.TRANSFER, Phase.CONNECTED) or Phase.TRANSFER in record.phase_seconds
    if not reached:
        return None
    if record.decision == Verdict.OPERATOR:
        return "operator"
    return "municipality" if record.municipality else "other"


def transfer_result(record: CallRecord) -> str:
    if record.outcome in (Outcome.ROUTED, Outcome.OPERATOR):
        return "answered"
    if record.outcome == Outcome.CALLER_HANGUP:
        return "caller_hangup"
    return "failed"


def hangup_phase(record: CallRecord) -> str | None:
    if record.outcome == Outcome.CALLER_HANGUP and record.hangup_phase:
        return record.hangup_phase
    return None


def error_kind(record: CallRecord) -> ErrorKind | None:
    """The record's error kind (the flow sets it with the error; ``error`` is for people)."""
    if record.error_kind:
        return ErrorKind(record.error_kind)
    return ErrorKind.OTHER if record.error else None


def suggestion_paths(record: CallRecord) -> list[str]:
    """The :data:`SUGGESTION_PATHS` a call took: none, or "made" and its answer."""
    if not record.suggested:
        return []
    return ["made", record.suggestion.value] if record.suggestion else ["made"]


def failover_paths(record: CallRecord) -> list[str]:
    """The :data:`FAILOVER_PATHS` a call took (none for most calls)."""
    paths = []
    if record.overflow_to:
        paths.append("overflow_taken")
        if record.outcome == Outcome.ROUTED:
            paths.append("overflow_answered")
    if record.alt_number_given:
        paths.append("alternative_number")
    if record.phase == Phase.CALLBACK or Phase.CALLBACK in record.phase_seconds:
        paths.append("callback_offered")
    if record.callback:
        paths.append(f"callback_{CallbackResult(record.callback).value}")
    return paths


def second_pass_paths(record: CallRecord) -> list[str]:
    """The :data:`SECOND_PASS_PATHS` a call took: a spoken answer decided again among every
    municipality (``run``); a municipality outside the dialled code proposed by a question;
    the caller said yes to one (``outside_accepted``: the call was decided for it) or no."""
    national = [a for a in record.attempts if a.kind == AttemptKind.NATIONAL]
    if not national:
        return []
    paths = ["run"]
    proposed = {a.chosen for a in national if a.chosen}
    if proposed:
        paths.append("outside_proposed")
        confirmed = any(a.kind == AttemptKind.CONFIRM and a.chosen in proposed
                        and a.verdict in (AttemptVerdict.YES, AttemptVerdict.CHOSEN, AttemptVerdict.ACCEPT)
                        for a in record.attempts)
        paths.append("outside_accepted" if confirmed else "outside_refused")
    return paths


def asked_back_paths(record: CallRecord) -> list[str]:
    """The :data:`ASKED_BACK_PATHS` a call took, once each (the flow marks the attempt: ``Attempt.asked``)."""
    asked = {a.asked for a in record.attempts if getattr(a, "asked", "")}
    return [p for p in ASKED_BACK_PATHS if p in asked]


def immediate_misroute(record: CallRecord) -> MisrouteSignal | None:
    """The misroute signal visible in the record itself (routed calls only)."""
    if not is_routed(record):
        return None
    expected = expected_of(record)
    if expected is not None:
        return MisrouteSignal.EXPECTED_MISMATCH if expected != record.municipality else None
    answered = record.answered_by or ""
    # an overflow is answered by another municipality on purpose
    if is_cbs_code(answered) and answered not in (record.municipality, record.overflow_to) and not record.calamity:
        return MisrouteSignal.ANSWERED_BY_MISMATCH
    if record.rejected_confirmations > 0:
        return MisrouteSignal.REJECTED_CONFIRMATION
    return None


def latencies(record: CallRecord) -> Iterable[tuple[str, float]]:
    """(latency name, seconds) samples of one record."""
    if record.ivr_seconds is not None:
        yield "ivr_seconds", float(record.ivr_seconds)
    if record.mode == RoutingMode.DIRECT and record.decision_ms is not None:
        yield "unique_decision_seconds", record.decision_ms / 1000
    for a in record.attempts:
        if a.decision_ms is not None:
            yield "speech_decision_seconds", a.decision_ms / 1000
        if a.recogniser_ms is not None:
            yield "recogniser_seconds", a.recogniser_ms / 1000
    if record.transfer_setup_ms is not None:
        yield "transfer_setup_seconds", record.transfer_setup_ms / 1000


@dataclass(frozen=True, slots=True)
class Misroute:
    call_id: str
    area_code: str
    municipality: str
    mode: str
    reason: MisrouteSignal


@dataclass(slots=True)
class _Routed:
    call_id: str
    area_code: str
    municipality: str
    mode: str
    ended_at: float
    misrouted: bool


class MisrouteTracker:
    """Finds misrouted calls, including the repeat-call proxy that needs the next call.

    Feed finished records in time order; :meth:`add` returns the misroutes it found (the
    record's own, and/or an earlier call's from the same caller). Memory: one entry per
    (caller, area code) routed within the last ``window_s``.
    """

    def __init__(self, window_s: float = 300.0):
        self.window_s = float(window_s)
        self._last: dict[tuple[str, str], _Routed] = {}
        self._seen = 0
        self._latest = 0.0

    def add(self, record: CallRecord) -> list[Misroute]:
        found: list[Misroute] = []
        routed = is_routed(record)
        mode, area = label(record.mode), label(record.area_code)
        own = immediate_misroute(record)
        if own:
            found.append(Misroute(record.call_id, area, record.municipality, mode, own))
        if expected_of(record) is not None or not record.caller or not record.area_code:
            return found
        key = (record.caller, record.area_code)
        prev = self._last.get(key)
        if prev and routed and not prev.misrouted and record.municipality != prev.municipality \
                and 0.0 <= record.started_at - prev.ended_at <= self.window_s:
            prev.misrouted = True
            found.append(Misroute(prev.call_id, prev.area_code, prev.municipality, prev.mode,
                                  MisrouteSignal.REPEAT_CALL))
        if routed:
            ended = record.ended_at if record.ended_at is not None else record.started_at + (record.ivr_seconds or 0)
            self._last[key] = _Routed(record.call_id, area, record.municipality, mode, ended, bool(own))
        self._latest = max(self._latest, record.started_at)
        self._seen += 1
        if self._seen % 4096 == 0:
            self.prune(self._latest)
        return found

    def prune(self, now: float) -> None:
        horizon = now - self.window_s
        for key in [k for k, v in self._last.items() if v.ended_at < horizon]:
            del self._last[key]

    def __len__(self) -> int:
        return len(self._last)
