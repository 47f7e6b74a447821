"""Prometheus metrics: every definition is in this module (docs/metrics.md documents them),
which is why it is a little over 400 lines.

Each service gets its own :class:`~prometheus_client.CollectorRegistry` (tests build as
many as they like). Three sources feed it:

* :class:`MetricsObserver` — the controller's ``CallObserver``. Call counters and latency
  histograms are counted once per call, in ``call_ended``, from the final call record,
  with the same classification functions as the report (:mod:`ivr.core.report`), so
  ``/metrics``, ``/v1/report`` and ``ivr report`` agree on the same calls
  (:func:`reconcile` checks it). Live gauges (calls in progress, by phase) follow
  ``call_started`` / ``call_event`` / ``call_ended``.
* :class:`ServiceCollector` — read at scrape time from the service: AMI connected and
  reconnects, AGI sessions in progress, the plan loaded, the recogniser.
* the HTTP API — admin changes and unhandled API errors.

Labels are low-cardinality only: area code, municipality (CBS code), routing mode,
outcome, phase, reason. Never a caller number, a caller hash or a call id.
"""

from __future__ import annotations

import logging
import re
import threading
from datetime import datetime, timezone
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from ivr.core.callrecord import CallRecord, Phase
from ivr.core.report import Kpis
from ivr.core.signals import (
    ERROR_KINDS,
    MisrouteTracker,
    failover_paths,
    second_pass_paths,
    suggestion_paths,
    asked_back_paths,
    attempts_bucket,
    entry_of,
    error_kind,
    hangup_phase,
    is_routed,
    label,
    language_of,
    latencies,
    transfer_result,
    transfer_target,
)

log = logging.getLogger(__name__)

NAMESPACE = "ivr"

#: Histogram buckets (seconds), each fitted to the range of what it measures.
BUCKETS: dict[str, tuple[float, ...]] = {
    # a unique area code is decided in the controller: sub-millisecond to a few ms
    "unique_decision_seconds": (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
    # end of speech -> decision (endpointing tail + recogniser + matcher)
    "speech_decision_seconds": (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0),
    # recogniser compute time for one utterance
    "recogniser_seconds": (0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0),
    # Dial -> answer at the municipality (ringing included)
    "transfer_setup_seconds": (0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0),
    # call start -> transfer or end: a direct code ~1 s, speech 8-20 s, the menu up to minutes
    "ivr_seconds": (0.5, 1.0, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 45.0, 60.0, 90.0, 120.0, 180.0, 300.0),
}

#: report latency name -> metric name (without namespace)
HISTOGRAM_NAMES = {
    "unique_decision_seconds": "unique_code_decision_seconds",
    "speech_decision_seconds": "speech_decision_seconds",
    "recogniser_seconds": "recogniser_seconds",
    "transfer_setup_seconds": "transfer_setup_seconds",
    "ivr_seconds": "time_in_ivr_seconds",
}

OTHER_ERROR_KINDS = ("observer", "api")


class Metrics:
    """The metric objects, registered on one registry."""

    def __init__(self, registry: CollectorRegistry):
        r, ns = registry, NAMESPACE
        self.registry = registry
        self.calls = Counter("calls", "Finished calls by area code, routing mode and outcome.",
                             ["area_code", "mode", "outcome"], namespace=ns, registry=r)
        self.recognition = Counter(
            "recognition_calls", "Calls whose caller was asked (speech or menu), by the number of questions "
            "needed until a municipality was decided: 1, 2, 3+ or undecided (2020: 85/10/3%).",
            ["area_code", "mode", "attempts"], namespace=ns, registry=r)
        self.routed = Counter("routed_calls", "Calls connected to the municipality decided (right-municipality "
                              "denominator).", ["area_code", "municipality", "mode"], namespace=ns, registry=r)
        self.misrouted = Counter(
            "misrouted_calls", "Routed calls found misrouted, once per call, by the first signal: expected_mismatch, "
            "answered_by_mismatch, rejected_confirmation, repeat_call (2020: 95% right).",
            ["area_code", "municipality", "mode", "reason"], namespace=ns, registry=r)
        self.transfers = Counter(
            "transfers", "Calls that reached a transfer, by target (municipality, operator, other) and result "
            "(answered, caller_hangup, failed) (2020: 5% hang up during the transfer).",
            ["area_code", "mode", "target", "result"], namespace=ns, registry=r)
        self.hangups = Counter("hangups", "Callers who hung up before being connected, by IVR phase.",
                               ["area_code", "mode", "phase"], namespace=ns, registry=r)
        self.errors = Counter("errors", "Errors by kind (calls: transfer_failed, asterisk_lost, controller_lost, shutdown, other; "
                              "controller: observer, api).", ["kind"], namespace=ns, registry=r)
        for kind in (*ERROR_KINDS, *OTHER_ERROR_KINDS):
            self.errors.labels(kind)
        self.languages = Counter(
            "language_calls", "Finished calls by the language the dialogue ended in (nl, en, …), how they came in "
            "(entry: fourteen = 14 + area code, access = an access number, from abroad) and outcome (2020: English "
            "and Frisian wished for; 14-numbers cannot be dialled from abroad).",
            ["language", "entry", "outcome"], namespace=ns, registry=r)
        self.failover = Counter(
            "failover_calls", "Calls whose decided municipality was busy, did not answer or was unreachable, by "
            "what followed: overflow_taken/answered, alternative_number, callback_offered/requested/declined/"
            "invalid_number (2020: the caller heard 'niet bereikbaar, tot ziens').",
            ["area_code", "path"], namespace=ns, registry=r)
        self.second_pass = Counter(
            "second_pass_calls", "Calls whose spoken answer was decided again among every municipality, by what "
            "followed: run, outside_proposed (a municipality outside the dialled code was asked about), "
            "outside_accepted / outside_refused (2020: such names went to the nearest name inside the code, "
            "Haarlemmermeer -> Haarlem).", ["area_code", "path"], namespace=ns, registry=r)
        self.suggestions = Counter(
            "suggestion_calls", "Calls asked first for a municipality known about the caller ('Belt u weer voor de "
            "gemeente X?'), by source (history: this caller's hash reached it within N days; landline: the "
            "caller's area code is one municipality's) and path: made, accepted, refused, named (a name instead), "
            "no_answer (2020: callers waited through the whole dialogue on every call).",
            ["area_code", "source", "path"], namespace=ns, registry=r)
        self.asked_back = Counter(
            "asked_back_calls", "Calls asked a question where a name alone would have decided, by path: "
            "same_name_place (a place of two municipalities, 'Velp in de gemeente A, of Velp in de gemeente B?'), "
            "confusable_held (an accept of a listed confusable pair on a thin margin, confirmed instead; "
            "2020: Haarlemmermeer -> Haarlem misroutes).",
            ["area_code", "path"], namespace=ns, registry=r)
        self.learning = Counter(
            "learning_utterances", "Self-learning (issue 12): callers' spoken answers by step: collected (labelled "
            "by the caller's confirmation or choice), candidate (kept, within the caps), capped (not kept), "
            "promoted_approval / promoted_agreement (now a reference of the engine), rejected_operator / "
            "rejected_check (the held-back check got worse).", ["step"], namespace=ns, registry=r)
        self.admin_changes = Counter("admin_changes", "Admin write requests by action and result "
                                     "(applied, rejected, unauthorized, disabled).", ["action", "result"],
                                     namespace=ns, registry=r)
        self.hist = {
            "unique_decision_seconds": Histogram(
                HISTOGRAM_NAMES["unique_decision_seconds"], "Routing decision time of calls to a unique area code.",
                namespace=ns, registry=r, buckets=BUCKETS["unique_decision_seconds"]),
            "speech_decision_seconds": Histogram(
                HISTOGRAM_NAMES["speech_decision_seconds"], "End of the caller's speech to the flow's decision, "
                "per spoken answer.", namespace=ns, registry=r, buckets=BUCKETS["speech_decision_seconds"]),
            "recogniser_seconds": Histogram(
                HISTOGRAM_NAMES["recogniser_seconds"], "Recogniser time per spoken answer.",
                namespace=ns, registry=r, buckets=BUCKETS["recogniser_seconds"]),
            "transfer_setup_seconds": Histogram(
                HISTOGRAM_NAMES["transfer_setup_seconds"], "Transfer setup: Dial to answer.",
                namespace=ns, registry=r, buckets=BUCKETS["transfer_setup_seconds"]),
        }
        self.ivr_time = Histogram(HISTOGRAM_NAMES["ivr_seconds"], "Time in the IVR: call start to transfer or end.",
                                  ["mode"], namespace=ns, registry=r, buckets=BUCKETS["ivr_seconds"])
        self.in_progress = Gauge("calls_in_progress", "Calls in the IVR or connected through it right now.",
                                 namespace=ns, registry=r)
        self.in_phase = Gauge("calls_in_phase", "Calls in progress by their current phase.", ["phase"],
                              namespace=ns, registry=r)
        for phase in Phase:
            self.in_phase.labels(phase.value)


class ServiceCollector(Collector):
    """Controller health, read from the service at scrape time."""

    def __init__(self, service: Any):
        self.service = service

    def describe(self):
        return []  # collected lazily; nothing to check at registration

    def collect(self):
        s = self.service
        ami = getattr(s, "ami", None)
        yield GaugeMetricFamily(f"{NAMESPACE}_ami_connected", "1 when the AMI connection is up.",
                                value=1.0 if ami is not None and ami.connected else 0.0)
        yield CounterMetricFamily(f"{NAMESPACE}_ami_reconnects", "AMI reconnections since start.",
                                  value=float(getattr(ami, "reconnects", 0) or 0))
        controller = getattr(s, "controller", None)
        yield GaugeMetricFamily(f"{NAMESPACE}_agi_sessions_in_progress", "FastAGI sessions open right now.",
                                value=float(getattr(controller, "active", 0) or 0))
        writer = getattr(s, "writer", None)
        if writer is not None:
            # the database away (PostgreSQL restarting): records wait in memory and are written after
            yield GaugeMetricFamily(f"{NAMESPACE}_records_pending", "Call record saves waiting to be written.",
                                    value=float(writer.pending))
            yield CounterMetricFamily(f"{NAMESPACE}_record_save_retries", "Record batches that failed and were retried.",
                                      value=float(writer.failed_attempts))
        plan = getattr(s, "plan", None)
        if plan is not None:
            yield InfoMetricFamily(f"{NAMESPACE}_plan", "The numbering plan loaded (version = fingerprint).",
                                   value={"version": plan.version})
            g = GaugeMetricFamily(f"{NAMESPACE}_plan_municipalities", "Municipalities in the plan by 14+ status.",
                                  labels=["status"])
            counts: dict[str, int] = {}
            for m in plan.municipalities.values():
                counts[m.status.value] = counts.get(m.status.value, 0) + 1
            for status, n in sorted(counts.items()):
                g.add_metric([status], n)
            yield g
            g = GaugeMetricFamily(f"{NAMESPACE}_plan_area_codes", "Area codes in the plan by routing mode.",
                                  labels=["mode"])
            counts = {}
            for a in plan.area_codes.values():
                counts[a.mode.value] = counts.get(a.mode.value, 0) + 1
            for mode, n in sorted(counts.items()):
                g.add_metric([mode], n)
            yield g
            now = datetime.now(timezone.utc)
            yield GaugeMetricFamily(f"{NAMESPACE}_plan_calamities_in_force", "Calamity overrides in force.",
                                    value=sum(1 for c in plan.calamities if c.in_force(now)))
        yield GaugeMetricFamily(f"{NAMESPACE}_plan_reload_failing", "1 when the last plan reload was refused.",
                                value=1.0 if getattr(s, "plan_error", "") else 0.0)
        yield GaugeMetricFamily(f"{NAMESPACE}_recogniser_loaded", "1 when a speech recogniser is loaded.",
                                value=1.0 if getattr(s, "speech", None) is not None else 0.0)


class MetricsObserver:
    """The ``CallObserver`` that turns call records into metrics. Never raises into a call."""

    def __init__(self, registry: CollectorRegistry | None = None, *, misroute_window_s: float = 300.0,
                 service: Any = None):
        self.registry = registry if registry is not None else CollectorRegistry()
        self.metrics = Metrics(self.registry)
        self.tracker = MisrouteTracker(misroute_window_s)
        self._phases: dict[str, str] = {}  # call id -> current phase (calls in progress only)
        self._lock = threading.Lock()
        self._service_collector: ServiceCollector | None = None
        if service is not None:
            self.bind(service)

    def bind(self, service: Any) -> None:
        """Publish the service's health gauges (once)."""
        if self._service_collector is None:
            self._service_collector = ServiceCollector(service)
            self.registry.register(self._service_collector)
        else:
            self._service_collector.service = service

    # -- CallObserver ---------------------------------------------------------------

    def call_started(self, record: CallRecord) -> None:
        try:
            with self._lock:
                if record.call_id in self._phases:
                    return
                self._phases[record.call_id] = record.phase
                self.metrics.in_progress.inc()
                self.metrics.in_phase.labels(record.phase).inc()
        except Exception:  # pragma: no cover - defensive
            self._observer_error()

    def call_event(self, record: CallRecord, event: Any, actions: list[Any]) -> None:
        try:
            with self._lock:
                old = self._phases.get(record.call_id)
                if old is not None and old != record.phase:
                    self._phases[record.call_id] = record.phase
                    self.metrics.in_phase.labels(old).dec()
                    self.metrics.in_phase.labels(record.phase).inc()
        except Exception:  # pragma: no cover - defensive
            self._observer_error()

    def call_ended(self, record: CallRecord) -> None:
        try:
            with self._lock:
                old = self._phases.pop(record.call_id, None)
                if old is not None:
                    self.metrics.in_progress.dec()
                    self.metrics.in_phase.labels(old).dec()
            self.count(record)
        except Exception:
            self._observer_error()

    def _observer_error(self) -> None:
        log.exception("metrics observer failed")
        self.metrics.errors.labels("observer").inc()

    # -- counting a finished call ---------------------------------------------------------

    def count(self, record: CallRecord) -> None:
        """Count one finished call (also for replay/simulator drivers without live calls)."""
        if not record.outcome:
            return
        m = self.metrics
        area, mode = label(record.area_code), label(record.mode)
        m.calls.labels(area, mode, record.outcome).inc()
        m.languages.labels(language_of(record), entry_of(record), record.outcome).inc()
        bucket = attempts_bucket(record)
        if bucket:
            m.recognition.labels(area, mode, bucket).inc()
        if is_routed(record):
            m.routed.labels(area, record.municipality, mode).inc()
        target = transfer_target(record)
        if target:
            m.transfers.labels(area, mode, target, transfer_result(record)).inc()
        phase = hangup_phase(record)
        if phase:
            m.hangups.labels(area, mode, phase).inc()
        kind = error_kind(record)
        if kind:
            m.errors.labels(kind).inc()
        for path in failover_paths(record):
            m.failover.labels(area, path).inc()
        for path in second_pass_paths(record):
            m.second_pass.labels(area, path).inc()
        for path in suggestion_paths(record):
            m.suggestions.labels(area, label(record.suggestion_source), path).inc()
        for path in asked_back_paths(record):
            m.asked_back.labels(area, path).inc()
        for name, seconds in latencies(record):
            if name == "ivr_seconds":
                m.ivr_time.labels(mode).observe(seconds)
            else:
                m.hist[name].observe(seconds)
        with self._lock:
            found = self.tracker.add(record)
        for mis in found:
            m.misrouted.labels(mis.area_code, mis.municipality, mis.mode, mis.reason).inc()

    # -- API hooks --------------------------------------------------------------------------

    def learning_step(self, step: str, n: int = 1) -> None:
        self.metrics.learning.labels(step).inc(n)

    def admin_change(self, action: str, result: str) -> None:
        self.metrics.admin_changes.labels(action, result).inc()

    def api_error(self) -> None:
        self.metrics.errors.labels("api").inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


# --- snapshots, for tests and the end-to-end check ---------------------------------------

Snapshot = dict[str, float]


def _key(name: str, labels: dict[str, str]) -> str:
    if not labels:
        return name
    inner = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    return f"{name}{{{inner}}}"


def metrics_snapshot(registry: CollectorRegistry) -> Snapshot:
    """Every sample as ``'name{label="value",…}' -> value`` (labels sorted; ``_created`` left out)."""
    out: Snapshot = {}
    for family in registry.collect():
        for s in family.samples:
            if s.name.endswith("_created"):
                continue
            out[_key(s.name, s.labels)] = float(s.value)
    return out


def parse_exposition(text: str) -> Snapshot:
    """The same mapping as :func:`metrics_snapshot`, from scraped ``/metrics`` text."""
    out: Snapshot = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name.endswith("_created"):
                continue
            out[_key(s.name, s.labels)] = float(s.value)
    return out


def snapshot_delta(after: Snapshot, before: Snapshot) -> Snapshot:
    """after - before, for counters and histograms; gauges are taken from ``after``."""
    return {k: v - before.get(k, 0.0) for k, v in after.items()}


_SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>.*)\})?$")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def samples(snapshot: Snapshot, name: str) -> list[tuple[dict[str, str], float]]:
    """The samples of one sample name, with their labels."""
    out = []
    for key, value in snapshot.items():
        m = _SAMPLE.match(key)
        if m and m.group("name") == name:
            out.append((dict(_LABEL.findall(m.group("labels") or "")), value))
    return out


def total(snapshot: Snapshot, name: str, **match: str) -> float:
    """Sum of a sample name over the series whose labels match ``match``."""
    return sum(v for labels, v in samples(snapshot, name) if all(labels.get(k) == x for k, x in match.items()))


def reconcile(snapshot: Snapshot, kpis: Kpis) -> list[str]:
    """Where ``/metrics`` (a snapshot or delta over the same calls) and the report disagree.

    Empty when they agree: calls by outcome, overall and per area code; attempts to a
    decision by mode; routed and misrouted by mode and reason; transfers to a
    municipality by result; hang-ups by phase; call errors by kind; and the count and
    sum of every latency.
    """
    problems: list[str] = []
    p = NAMESPACE

    def check(what: str, metric: float, report: float, tol: float = 0.0) -> None:
        if abs(metric - report) > tol:
            problems.append(f"{what}: metrics {metric:g} != report {report:g}")

    o = kpis.overall
    for outcome, n in o.outcomes.items():
        check(f"calls outcome={outcome}", total(snapshot, f"{p}_calls_total", outcome=outcome), n)
    for code, g in kpis.by_area_code.items():
        check(f"calls area_code={code}", total(snapshot, f"{p}_calls_total", area_code=code), g.calls)
    for mode, rec in o.recognition.items():
        for bucket, n in rec.attempts.items():
            check(f"recognition mode={mode} attempts={bucket}",
                  total(snapshot, f"{p}_recognition_calls_total", mode=mode, attempts=bucket), n)
    for mode, r in o.routing.items():
        sel = {} if mode == "all" else {"mode": mode}
        check(f"routed mode={mode}", total(snapshot, f"{p}_routed_calls_total", **sel), r.routed)
        for reason, n in r.misroutes.items():
            check(f"misrouted mode={mode} reason={reason}",
                  total(snapshot, f"{p}_misrouted_calls_total", reason=reason, **sel), n)
    for mode, t in o.transfer.items():
        sel = {} if mode == "all" else {"mode": mode}
        for result, n in t.results.items():
            check(f"transfers mode={mode} result={result}",
                  total(snapshot, f"{p}_transfers_total", target="municipality", result=result, **sel), n)
    for language, n in o.languages.items():
        check(f"calls language={language}", total(snapshot, f"{p}_language_calls_total", language=language), n)
    for entry, n in o.entries.items():
        check(f"calls entry={entry}", total(snapshot, f"{p}_language_calls_total", entry=entry), n)
    for phase, n in o.hangups_by_phase.items():
        check(f"hangups phase={phase}", total(snapshot, f"{p}_hangups_total", phase=phase), n)
    for kind, n in o.errors.items():
        check(f"errors kind={kind}", total(snapshot, f"{p}_errors_total", kind=kind), n)
    for path, n in o.failover.items():
        check(f"failover path={path}", total(snapshot, f"{p}_failover_calls_total", path=path), n)
    for path, n in o.second_pass.items():
        check(f"second pass path={path}", total(snapshot, f"{p}_second_pass_calls_total", path=path), n)
    for path, n in o.suggestions.items():
        check(f"suggestion path={path}", total(snapshot, f"{p}_suggestion_calls_total", path=path), n)
    for path, n in o.asked_back.items():
        check(f"asked back path={path}", total(snapshot, f"{p}_asked_back_calls_total", path=path), n)
    for name, metric in HISTOGRAM_NAMES.items():
        lat = o.latency[name]
        check(f"{name} count", total(snapshot, f"{p}_{metric}_count"), lat.count)
        s = total(snapshot, f"{p}_{metric}_sum")
        check(f"{name} sum", s, lat.sum, tol=1e-6 * max(1.0, abs(lat.sum)) + 1e-5)
    return problems

