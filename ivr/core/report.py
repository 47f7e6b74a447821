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

import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable

from ivr.core.callrecord import CallRecord, Outcome
from ivr.core.histogram import LatencySummary, LogHistogram
from ivr.core.signals import (
    ASKED_BACK_PATHS,
    ATTEMPT_BUCKETS,
    ENTRIES,
    ERROR_KINDS,
    FAILOVER_PATHS,
    SECOND_PASS_PATHS,
    HANGUP_PHASES,
    LATENCIES,
    SUGGESTION_PATHS,
    MISROUTE_REASONS,
    NONE_LABEL,
    TRANSFER_RESULTS,
    Misroute,
    MisrouteTracker,
    asked_back_paths,
    attempts_bucket,
    entry_of,
    error_kind,
    expected_of,
    failover_paths,
    hangup_phase,
    second_pass_paths,
    immediate_misroute,
    is_routed,
    label,
    language_of,
    latencies,
    suggestion_paths,
    transfer_result,
    transfer_target,
)

# the KPIs' vocabulary, for the metrics and the tests (one place: ivr.core.signals / ivr.core.histogram)
__all__ = ["ASKED_BACK_PATHS", "ATTEMPT_BUCKETS", "BASELINE_2020", "ERROR_KINDS", "FAILOVER_PATHS", "SECOND_PASS_PATHS", "HANGUP_PHASES",
           "HEADLINE_KEYS",
           "HEADLINE_MODE",
           "LATENCIES", "MISROUTE_REASONS", "NONE_LABEL", "TRANSFER_RESULTS", "GroupKpis", "KpiAccumulator", "Kpis",
           "LatencySummary", "LogHistogram", "Misroute", "MisrouteTracker", "compute_kpis", "error_kind",
           "immediate_misroute"]

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
# --- the result ------------------------------------------------------------------------


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
    failover: dict[str, int] = field(default_factory=dict)  # FAILOVER_PATHS: overflow, alternative number, callback
    languages: dict[str, int] = field(default_factory=dict)  # calls by the language they ended in
    entries: dict[str, int] = field(default_factory=dict)  # calls by entry: fourteen (14 + code) or access
    routed_by_language: dict[str, int] = field(default_factory=dict)
    routed_by_entry: dict[str, int] = field(default_factory=dict)
    second_pass: dict[str, int] = field(default_factory=dict)  # SECOND_PASS_PATHS: a name outside the dialled code
    suggestions: dict[str, int] = field(default_factory=dict)  # SUGGESTION_PATHS: made, accepted, refused, …
    questions: int = 0  # questions asked until a decision, summed over the calls (recognition_attempts)
    asked_back: dict[str, int] = field(default_factory=dict)  # ASKED_BACK_PATHS: same-name place, confusable held


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
    # by the UTC month the call started ("2026-12"): recognition and right municipality as the
    # self-learning loop proceeds (issue 12). A repeat-call misroute counts in the month it was seen
    by_month: dict[str, GroupKpis] = field(default_factory=dict)
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
                 "transfers", "hangups", "errors", "hist", "failover", "languages", "entries",
                 "routed_by_language", "routed_by_entry", "second_pass", "suggestions", "questions", "asked_back")

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
        self.languages: Counter[str] = Counter()
        self.entries: Counter[str] = Counter()
        self.routed_by_language: Counter[str] = Counter()
        self.routed_by_entry: Counter[str] = Counter()
        self.failover: Counter[str] = Counter()
        self.second_pass: Counter[str] = Counter()
        self.suggestions: Counter[str] = Counter()
        self.questions = 0
        self.asked_back: Counter[str] = Counter()

    def merge(self, other: "_GroupAcc") -> None:
        self.calls += other.calls
        self.questions += other.questions
        for name in ("outcomes", "modes", "asked", "attempts", "routed", "ground_truth", "misroutes",
                     "transfers", "hangups", "errors", "failover", "languages", "entries", "routed_by_language",
                     "routed_by_entry", "second_pass", "suggestions", "asked_back"):
            getattr(self, name).update(getattr(other, name))
        for name, hist in other.hist.items():
            self.hist[name].merge(hist)

    def add(self, r: CallRecord, samples: list[tuple[str, float]]) -> None:
        mode = label(r.mode)
        self.calls += 1
        self.outcomes[label(r.outcome)] += 1
        self.modes[mode] += 1
        self.languages[language_of(r)] += 1
        self.entries[entry_of(r)] += 1
        bucket = attempts_bucket(r)
        if bucket:
            self.asked[mode] += 1
            self.attempts[(mode, bucket)] += 1
        if is_routed(r):
            self.routed[mode] += 1
            self.routed_by_language[language_of(r)] += 1
            self.routed_by_entry[entry_of(r)] += 1
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
        self.failover.update(failover_paths(r))
        self.second_pass.update(second_pass_paths(r))
        self.suggestions.update(suggestion_paths(r))
        self.questions += r.recognition_attempts
        self.asked_back.update(asked_back_paths(r))

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
        g.failover = {k: self.failover.get(k, 0) for k in FAILOVER_PATHS}
        g.second_pass = {k: self.second_pass.get(k, 0) for k in SECOND_PASS_PATHS}
        g.suggestions = {k: self.suggestions.get(k, 0) for k in SUGGESTION_PATHS}
        g.questions = self.questions
        g.asked_back = {k: self.asked_back.get(k, 0) for k in ASKED_BACK_PATHS}
        g.latency = {name: h.summary() for name, h in self.hist.items()}
        g.languages = dict(sorted(self.languages.items()))
        g.entries = {e: self.entries.get(e, 0) for e in ENTRIES}
        g.routed_by_language = dict(sorted(self.routed_by_language.items()))
        g.routed_by_entry = {e: self.routed_by_entry.get(e, 0) for e in ENTRIES}
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
        self.by_month: dict[str, _GroupAcc] = {}
        self.tracker = MisrouteTracker(misroute_window_s)
        self.unfinished = 0  # records of calls still in progress (no outcome yet): not counted

    def _groups_of(self, area: str | None, municipality: str | None, month: str | None = None) -> list[_GroupAcc]:
        out = [self.overall]
        if self.groups:
            for key, groups in ((area, self.by_area), (municipality, self.by_municipality), (month, self.by_month)):
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
        for mine, theirs in ((self.by_area, other.by_area), (self.by_municipality, other.by_municipality),
                             (self.by_month, other.by_month)):
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
        month = _month(record.started_at)
        for g in self._groups_of(record.area_code, record.municipality, month):
            g.add(record, samples)
        for m in self.tracker.add(record):
            area = None if m.area_code == NONE_LABEL else m.area_code
            for g in self._groups_of(area, m.municipality, month):
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
            by_month={k: v.result() for k, v in sorted(self.by_month.items())},
            cdf={name: h.cdf() for name, h in self.overall.hist.items()},
        )


def _month(epoch: float | None) -> str | None:
    if not epoch:
        return None
    return time.strftime("%Y-%m", time.gmtime(epoch))


def compute_kpis(records: Iterable[CallRecord], *, misroute_window_s: float = 300.0,
                 filters: dict[str, Any] | None = None, groups: bool = True) -> Kpis:
    """The KPIs of finished call records (pass them in start-time order for the repeat-call proxy)."""
    return KpiAccumulator(misroute_window_s=misroute_window_s, filters=filters, groups=groups).add_all(records).result()
