"""KPIs from call records, side by side with the 2020 evaluation.

One pure computation used by ``ivr report``, ``GET /v1/report`` and the simulator:
:func:`compute_kpis` over any iterable of :class:`~ivr.core.callrecord.CallRecord`, or
:class:`KpiAccumulator` fed record by record. Both are O(n) in time and small in
memory: percentiles come from sparse logarithmic histograms (bins 1% wide, so a
reported percentile is within 0.5% of the exact nearest-rank value, and exact at the
minimum and maximum), and the misroute proxy keeps one entry per (caller, area code)
for the length of the misroute window only.

Definitions (docs/metrics.md lists them next to the Prometheus metrics, which count
exactly the same things — :func:`ivr.adapters.metrics.reconcile` checks that):

* **asked** — the caller was asked at least once (``recognition_attempts >= 1``).
* **attempts to a decision** — ``recognition_attempts`` of an asked call that reached a
  municipality by the caller's answer: ``1``, ``2`` or ``3+``; asked calls that never
  did (hang-up, operator, no valid answer) count as ``undecided``. A confirmation
  question counts as a question ("did you mean Goes?").
* **routed** — connected to the municipality decided (``outcome == routed`` with a
  municipality). **Misrouted** — a routed call with one of these signals, counted once
  under the first that applies:

  1. ``expected_mismatch``: ground truth is known (``expected_municipality`` set by the
     simulator or replay) and differs from the municipality decided. When ground truth
     is known the other signals are not used.
  2. ``answered_by_mismatch``: the transfer was answered by a known, different
     municipality (``answered_by`` is a CBS code), except for calamity routes.
  3. ``rejected_confirmation``: the caller said "no" to an announced municipality during
     the call (the recogniser was wrong once, even if the call ended up right).
  4. ``repeat_call``: the same (hashed) caller dialled the same area code again within
     ``misroute_window_s`` after this call ended, and that call was routed to another
     municipality. Detected when the later call is counted.

  **Right municipality** = (routed - misrouted) / routed.
* **hang-up during transfer** — of the calls that reached the transfer to a decided
  municipality, the share where the caller hung up before it was answered.

The 2020 figures were measured for callers who met speech recognition, so the
``headline`` compares the ``speech`` routing mode with them; every figure is also
available per mode, per area code and per (decided) municipality.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable

from ivr.core.callrecord import CallRecord, ErrorKind, MisrouteSignal, Outcome, Phase
from ivr.core.plan import RoutingMode, is_cbs_code
from ivr.core.routing import Verdict

SCHEMA_VERSION = 1

#: The 2020 figures the report compares with (findings.md); None = not measured in 2020.
BASELINE_2020: dict[str, float | None] = {
    "first_attempt": 0.85,
    "after_one_repeat": 0.10,
    "after_several": 0.03,
    "right_municipality": 0.95,
    "hangup_during_transfer": 0.05,
    "ivr_seconds_p50": None,
    "ivr_seconds_p95": None,
}

HEADLINE_KEYS = tuple(BASELINE_2020)
HEADLINE_MODE = "speech"
ATTEMPT_BUCKETS = ("1", "2", "3+", "undecided")
MISROUTE_REASONS = tuple(MisrouteSignal)
TRANSFER_RESULTS = ("answered", "caller_hangup", "failed")
HANGUP_PHASES = tuple(p.value for p in Phase if p is not Phase.CONNECTED)
LATENCIES = ("ivr_seconds", "unique_decision_seconds", "speech_decision_seconds", "recogniser_seconds",
             "transfer_setup_seconds")
ERROR_KINDS = tuple(ErrorKind)
NONE_LABEL = "none"  # label value for a missing area code or mode


# --- classifying one record (shared with ivr.adapters.metrics) ---------------------------------


def label(value: str | None) -> str:
    return value if value else NONE_LABEL


def expected_of(record: CallRecord) -> str | None:
    """Ground truth, when a simulator or replay knows it (optional attribute/field)."""
    value = getattr(record, "expected_municipality", None)
    return value or None


def is_routed(record: CallRecord) -> bool:
    return record.outcome == Outcome.ROUTED and bool(record.municipality)


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


def immediate_misroute(record: CallRecord) -> MisrouteSignal | None:
    """The misroute signal visible in the record itself (routed calls only)."""
    if not is_routed(record):
        return None
    expected = expected_of(record)
    if expected is not None:
        return MisrouteSignal.EXPECTED_MISMATCH if expected != record.municipality else None
    answered = record.answered_by or ""
    if is_cbs_code(answered) and answered != record.municipality and not record.calamity:
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


# --- percentiles in small memory -------------------------------------------------------

_LOG_STEP = math.log(1.01)
_ZERO_BIN = -(10**9)


class LogHistogram:
    """Sparse histogram with 1%-wide logarithmic bins: count, sum, min, max, quantiles.

    Each bin keeps its count and the sum of its values; a quantile is the mean of the
    bin it falls in (exact when the bin's values are equal, within 0.5% otherwise).
    """

    __slots__ = ("bins", "count", "total", "min", "max")

    def __init__(self) -> None:
        self.bins: dict[int, list[float]] = {}  # bin -> [count, sum]
        self.count = 0
        self.total = 0.0
        self.min = math.inf
        self.max = -math.inf

    def merge(self, other: "LogHistogram") -> None:
        for key, (n, total) in other.bins.items():
            mine = self.bins.get(key)
            if mine is None:
                self.bins[key] = [n, total]
            else:
                mine[0] += n
                mine[1] += total
        self.count += other.count
        self.total += other.total
        self.min = min(self.min, other.min)
        self.max = max(self.max, other.max)

    def add(self, value: float) -> None:
        if not math.isfinite(value):
            return
        value = max(0.0, value)
        key = _ZERO_BIN if value <= 1e-9 else round(math.log(value) / _LOG_STEP)
        b = self.bins.get(key)
        if b is None:
            self.bins[key] = [1, value]
        else:
            b[0] += 1
            b[1] += value
        self.count += 1
        self.total += value
        self.min = min(self.min, value)
        self.max = max(self.max, value)

    def quantile(self, q: float) -> float | None:
        """Nearest-rank quantile (the smallest value with at least q of the samples at or below)."""
        if not self.count:
            return None
        rank = max(1, math.ceil(q * self.count - 1e-9))
        if rank >= self.count:
            return self.max
        if rank == 1:
            return self.min
        seen = 0
        for key in sorted(self.bins):
            n, total = self.bins[key]
            seen += n
            if seen >= rank:
                return min(max(total / n, self.min), self.max)
        return self.max

    def cdf(self) -> list[tuple[float, float]]:
        """(value, fraction of samples at or below) per occupied bin."""
        out, seen = [], 0
        for key in sorted(self.bins):
            n, total = self.bins[key]
            seen += n
            out.append((round(total / n, 6), seen / self.count))
        return out

    def summary(self) -> "LatencySummary":
        if not self.count:
            return LatencySummary()
        return LatencySummary(count=self.count, sum=round(self.total, 6), mean=round(self.total / self.count, 6),
                              p50=_r(self.quantile(0.50)), p95=_r(self.quantile(0.95)),
                              min=_r(self.min), max=_r(self.max))


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 4)


# --- the result ------------------------------------------------------------------------


@dataclass
class LatencySummary:
    count: int = 0
    sum: float = 0.0
    mean: float | None = None
    p50: float | None = None
    p95: float | None = None
    min: float | None = None
    max: float | None = None


@dataclass
class RecognitionKpis:
    asked: int = 0
    attempts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ATTEMPT_BUCKETS, 0))


@dataclass
class RoutingKpis:
    routed: int = 0
    misrouted: int = 0
    misroutes: dict[str, int] = field(default_factory=lambda: dict.fromkeys(MISROUTE_REASONS, 0))
    ground_truth: int = 0  # routed calls whose expected municipality was known
    right_municipality: float | None = None


@dataclass
class TransferKpis:
    """Transfers to a decided municipality."""

    reached: int = 0
    results: dict[str, int] = field(default_factory=lambda: dict.fromkeys(TRANSFER_RESULTS, 0))
    hangup_during_transfer: float | None = None


@dataclass
class GroupKpis:
    calls: int = 0
    headline: dict[str, float | None] = field(default_factory=dict)  # keys of BASELINE_2020
    outcomes: dict[str, int] = field(default_factory=dict)
    modes: dict[str, int] = field(default_factory=dict)
    recognition: dict[str, RecognitionKpis] = field(default_factory=dict)  # by routing mode
    routing: dict[str, RoutingKpis] = field(default_factory=dict)  # by routing mode and "all"
    transfer: dict[str, TransferKpis] = field(default_factory=dict)  # by routing mode and "all"
    hangups_by_phase: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    latency: dict[str, LatencySummary] = field(default_factory=dict)


@dataclass
class Kpis:
    schema: int
    generated_at: float
    baseline: dict[str, float | None]
    overall: GroupKpis
    by_area_code: dict[str, GroupKpis]
    by_municipality: dict[str, GroupKpis]  # by the municipality decided
    filters: dict[str, Any] = field(default_factory=dict)
    misroute_window_s: float = 300.0
    unfinished: int = 0  # calls still in progress in the selection, left out
    # plot data for the overall group (not in the JSON unless asked): latency CDFs
    cdf: dict[str, list[tuple[float, float]]] = field(default_factory=dict, repr=False)

    def to_dict(self, *, with_cdf: bool = False) -> dict[str, Any]:
        data = asdict(self)
        if not with_cdf:
            data.pop("cdf")
        return data


# --- accumulating ------------------------------------------------------------------------


class _GroupAcc:
    __slots__ = ("calls", "outcomes", "modes", "asked", "attempts", "routed", "ground_truth", "misroutes",
                 "transfers", "hangups", "errors", "hist")

    def __init__(self) -> None:
        self.calls = 0
        self.outcomes: Counter[str] = Counter()
        self.modes: Counter[str] = Counter()
        self.asked: Counter[str] = Counter()  # mode -> asked calls
        self.attempts: Counter[tuple[str, str]] = Counter()  # (mode, bucket)
        self.routed: Counter[str] = Counter()  # mode
        self.ground_truth: Counter[str] = Counter()
        self.misroutes: Counter[tuple[str, str]] = Counter()  # (mode, reason)
        self.transfers: Counter[tuple[str, str]] = Counter()  # (mode, result) to a municipality
        self.hangups: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.hist = {name: LogHistogram() for name in LATENCIES}

    def merge(self, other: "_GroupAcc") -> None:
        self.calls += other.calls
        for name in ("outcomes", "modes", "asked", "attempts", "routed", "ground_truth", "misroutes",
                     "transfers", "hangups", "errors"):
            getattr(self, name).update(getattr(other, name))
        for name, hist in other.hist.items():
            self.hist[name].merge(hist)

    def add(self, r: CallRecord, samples: list[tuple[str, float]]) -> None:
        mode = label(r.mode)
        self.calls += 1
        self.outcomes[label(r.outcome)] += 1
        self.modes[mode] += 1
        bucket = attempts_bucket(r)
        if bucket:
            self.asked[mode] += 1
            self.attempts[(mode, bucket)] += 1
        if is_routed(r):
            self.routed[mode] += 1
            if expected_of(r) is not None:
                self.ground_truth[mode] += 1
        if transfer_target(r) == "municipality":
            self.transfers[(mode, transfer_result(r))] += 1
        phase = hangup_phase(r)
        if phase:
            self.hangups[phase] += 1
        kind = error_kind(r)
        if kind:
            self.errors[kind] += 1
        for name, seconds in samples:
            self.hist[name].add(seconds)

    def result(self) -> GroupKpis:
        g = GroupKpis(calls=self.calls)
        g.outcomes = {o.value: self.outcomes.get(o.value, 0) for o in Outcome}
        g.outcomes.update({k: v for k, v in self.outcomes.items() if k not in g.outcomes})
        g.modes = dict(sorted(self.modes.items()))
        modes = sorted(self.modes)
        for mode in modes:
            if self.asked[mode]:
                g.recognition[mode] = RecognitionKpis(
                    asked=self.asked[mode], attempts={b: self.attempts.get((mode, b), 0) for b in ATTEMPT_BUCKETS})
        for mode in [*modes, "all"]:
            ms = modes if mode == "all" else [mode]
            routed = sum(self.routed[m] for m in ms)
            reasons = {reason: sum(self.misroutes.get((m, reason), 0) for m in ms) for reason in MISROUTE_REASONS}
            misrouted = sum(reasons.values())
            if routed or mode == "all":
                g.routing[mode] = RoutingKpis(routed=routed, misrouted=misrouted, misroutes=reasons,
                                              ground_truth=sum(self.ground_truth[m] for m in ms),
                                              right_municipality=_rate(routed - misrouted, routed))
            results = {res: sum(self.transfers.get((m, res), 0) for m in ms) for res in TRANSFER_RESULTS}
            reached = sum(results.values())
            if reached or mode == "all":
                g.transfer[mode] = TransferKpis(reached=reached, results=results,
                                                hangup_during_transfer=_rate(results["caller_hangup"], reached))
        g.hangups_by_phase = {p: self.hangups.get(p, 0) for p in HANGUP_PHASES}
        g.errors = {k: self.errors.get(k, 0) for k in ERROR_KINDS}
        g.latency = {name: h.summary() for name, h in self.hist.items()}
        rec = g.recognition.get(HEADLINE_MODE)
        asked = rec.asked if rec else 0
        att = rec.attempts if rec else {}
        routing = g.routing.get(HEADLINE_MODE)
        transfer = g.transfer.get(HEADLINE_MODE)
        g.headline = {
            "first_attempt": _rate(att.get("1", 0), asked),
            "after_one_repeat": _rate(att.get("2", 0), asked),
            "after_several": _rate(att.get("3+", 0), asked),
            "right_municipality": routing.right_municipality if routing else None,
            "hangup_during_transfer": transfer.hangup_during_transfer if transfer else None,
            "ivr_seconds_p50": g.latency["ivr_seconds"].p50,
            "ivr_seconds_p95": g.latency["ivr_seconds"].p95,
        }
        return g


def _rate(num: int, den: int) -> float | None:
    return round(num / den, 6) if den else None


class KpiAccumulator:
    """Streaming KPIs: ``add`` finished records (in start-time order), then ``result``."""

    def __init__(self, *, misroute_window_s: float = 300.0, filters: dict[str, Any] | None = None,
                 groups: bool = True):
        self.misroute_window_s = misroute_window_s
        self.filters = filters or {}
        self.groups = groups
        self.overall = _GroupAcc()
        self.by_area: dict[str, _GroupAcc] = {}
        self.by_municipality: dict[str, _GroupAcc] = {}
        self.tracker = MisrouteTracker(misroute_window_s)
        self.unfinished = 0  # records of calls still in progress (no outcome yet): not counted

    def _groups_of(self, area: str | None, municipality: str | None) -> list[_GroupAcc]:
        out = [self.overall]
        if self.groups:
            for key, groups in ((area, self.by_area), (municipality, self.by_municipality)):
                if key:
                    group = groups.get(key)
                    if group is None:
                        group = groups[key] = _GroupAcc()
                    out.append(group)
        return out

    def merge(self, other: "KpiAccumulator") -> None:
        """Add the counts of an accumulator fed a disjoint set of calls (e.g. another worker's).
        Repeat-call misroutes are detected within each accumulator only."""
        self.overall.merge(other.overall)
        for mine, theirs in ((self.by_area, other.by_area), (self.by_municipality, other.by_municipality)):
            for key, group in theirs.items():
                if key in mine:
                    mine[key].merge(group)
                else:
                    mine[key] = group
        self.unfinished += other.unfinished

    def add(self, record: CallRecord) -> None:
        if not record.outcome:
            self.unfinished += 1
            return
        samples = list(latencies(record))
        for g in self._groups_of(record.area_code, record.municipality):
            g.add(record, samples)
        for m in self.tracker.add(record):
            area = None if m.area_code == NONE_LABEL else m.area_code
            for g in self._groups_of(area, m.municipality):
                g.misroutes[(m.mode, m.reason)] += 1

    def add_all(self, records: Iterable[CallRecord]) -> "KpiAccumulator":
        for r in records:
            self.add(r)
        return self

    def result(self) -> Kpis:
        return Kpis(
            schema=SCHEMA_VERSION, generated_at=round(time.time(), 3), baseline=dict(BASELINE_2020),
            overall=self.overall.result(),
            by_area_code={k: v.result() for k, v in sorted(self.by_area.items())},
            by_municipality={k: v.result() for k, v in sorted(self.by_municipality.items())},
            filters=dict(self.filters), misroute_window_s=self.misroute_window_s, unfinished=self.unfinished,
            cdf={name: h.cdf() for name, h in self.overall.hist.items()},
        )


def compute_kpis(records: Iterable[CallRecord], *, misroute_window_s: float = 300.0,
                 filters: dict[str, Any] | None = None, groups: bool = True) -> Kpis:
    """The KPIs of finished call records (pass them in start-time order for the repeat-call proxy)."""
    return KpiAccumulator(misroute_window_s=misroute_window_s, filters=filters, groups=groups).add_all(records).result()
