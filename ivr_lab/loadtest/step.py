"""One step: SIPp processes at a fixed rate, then SIPp's statistics and the controller's records."""

from __future__ import annotations

import csv
import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ivr_lab.controller import Controller
from ivr_lab.sipp import CallScript, SippResult, run_sipp

from ivr_lab.loadtest.resources import Sampler
from ivr_lab.loadtest.scenarios import MAX_CALLS_PER_STEP, MAX_RATE, SALT, Scenario

# --- one step ------------------------------------------------------------------------------------

def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, max(0, math.ceil(q * len(values)) - 1))]


def _stats_rows(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with open(path, newline="", encoding="latin-1") as fh:
        rows = [r for r in csv.reader(fh, delimiter=";") if r]
    if len(rows) < 2:
        return []
    return [{h: v for h, v in zip(rows[0], r) if h} for r in rows[1:]]


def _rtt_ms(workdir: Path) -> list[float]:
    """Per-call INVITE->200 times from SIPp's -trace_rtt file(s)."""
    out: list[float] = []
    for path in workdir.glob("*_rtt.csv"):
        with open(path, newline="", encoding="latin-1") as fh:
            for row in csv.reader(fh, delimiter=";"):
                if len(row) >= 2:
                    try:
                        out.append(float(row[1]))
                    except ValueError:
                        continue
    return out


def sipp_summary(result: SippResult) -> dict[str, Any]:
    rows = _stats_rows(result.workdir / "stats.csv")
    last = rows[-1] if rows else {}
    failures = {}
    for key, value in last.items():
        if key.startswith("Failed") and key.endswith("(C)") and key != "FailedCall(C)":
            try:
                n = int(value)
            except ValueError:
                continue
            if n:
                failures[key[len("Failed"):-3]] = n

    def num(row: dict[str, str], key: str) -> int:
        try:
            return int(row.get(key, "0") or 0)
        except ValueError:
            return 0

    rtt = _rtt_ms(result.workdir)
    return {
        "successful": result.successful, "failed": result.failed, "returncode": result.returncode,
        "failures": failures,
        "retransmissions": num(last, "Retransmissions(C)"),
        "max_concurrent": max((num(r, "CurrentCall") for r in rows), default=0),
        "invite_200_ms": {"n": len(rtt), "p50": _pct(rtt, 0.5), "p95": _pct(rtt, 0.95), "p99": _pct(rtt, 0.99),
                          "max": max(rtt) if rtt else None},
        "elapsed_s": round(result.elapsed_s, 2),
        "errors_tail": result.errors[-600:] if result.failed else "",
    }


def _settled_records(db: Path, since: float, until: float, expected: int, wait_s: float = 10.0) -> list:
    """The step's records once the controller has finished them (it saves after the BYE)."""
    deadline = time.monotonic() + wait_s
    while True:
        records = records_between(db, since, until)
        done = sum(1 for r in records if r.outcome)
        if done >= expected or time.monotonic() > deadline:
            return records
        time.sleep(0.5)


def records_between(db: Path, since: float, until: float) -> list:
    from ivr.adapters.store import CallStore

    store = CallStore(db)
    try:
        return store.query(since=since, until=until)
    finally:
        store.close()


def record_summary(records: list, by_scenario: dict[str, Scenario]) -> dict[str, Any]:
    unique_ms = [r.decision_ms for r in records if r.mode == "direct" and r.decision_ms is not None]
    ivr_s = [r.ivr_seconds for r in records if r.ivr_seconds is not None]
    setup = [r.transfer_setup_ms for r in records if r.transfer_setup_ms is not None]
    speech_ms = [a.decision_ms for r in records for a in r.attempts if a.decision_ms is not None]
    recog_ms = [a.recogniser_ms for r in records for a in r.attempts if a.recogniser_ms is not None]
    outcomes: dict[str, int] = {}
    errors: dict[str, int] = {}
    for r in records:
        outcomes[r.outcome or "unfinished"] = outcomes.get(r.outcome or "unfinished", 0) + 1
        if r.error:
            key = r.error.split(":")[0][:60]
            errors[key] = errors.get(key, 0) + 1
    return {
        "records": len(records), "outcomes": outcomes, "errors": errors,
        "unique_decision_ms": {"n": len(unique_ms), "p50": _r(_pct(unique_ms, 0.5)), "p95": _r(_pct(unique_ms, 0.95)),
                               "p99": _r(_pct(unique_ms, 0.99)), "max": _r(max(unique_ms) if unique_ms else None)},
        "speech_decision_ms": {"n": len(speech_ms), "p50": _r(_pct(speech_ms, 0.5)), "p95": _r(_pct(speech_ms, 0.95)),
                               "p99": _r(_pct(speech_ms, 0.99))},
        "recogniser_ms": {"p50": _r(_pct(recog_ms, 0.5)), "p99": _r(_pct(recog_ms, 0.99))},
        "ivr_seconds": {"p50": _r(_pct(ivr_s, 0.5)), "p95": _r(_pct(ivr_s, 0.95)), "p99": _r(_pct(ivr_s, 0.99))},
        "transfer_setup_ms": {"p50": _r(_pct(setup, 0.5)), "p99": _r(_pct(setup, 0.99))},
    }


def _r(x: float | None, nd: int = 3) -> float | None:
    return None if x is None else round(x, nd)


def resource_summary(samples: list[dict[str, Any]]) -> dict[str, Any]:
    def col(key: str) -> list[float]:
        return [s[key] for s in samples if s.get(key) is not None]

    out: dict[str, Any] = {"samples": len(samples)}
    for name in ("controller", "asterisk", "sipp", "machine"):
        cpu = col(f"{name}_cpu_pct")
        out[f"{name}_cpu_pct_avg"] = _r(sum(cpu) / len(cpu), 1) if cpu else None
        out[f"{name}_cpu_pct_max"] = _r(max(cpu), 1) if cpu else None
        rss = col(f"{name}_rss_mb")
        if rss:
            out[f"{name}_rss_mb_max"] = _r(max(rss), 1)
    for key in ("ivr_in_progress", "ivr_menu", "ivr_speech", "ivr_transfer", "ivr_connected", "ivr_greeting"):
        vals = col(key)
        if vals:
            out[f"{key}_max"] = max(vals)
    return out


@dataclass
class StepResult:
    scenario: str
    rate: float
    duration_s: float
    offered: int
    successful: int
    failed: int
    completed_cps: float
    failures: dict[str, int]
    sipp: dict[str, Any]
    records: dict[str, Any]
    resources: dict[str, Any]
    started_at: float
    ended_at: float
    unexpected: dict[str, int] = field(default_factory=dict)  # records whose outcome/phase was not the scenario's

    @property
    def ok(self) -> bool:
        return self.failed == 0 and not self.unexpected and self.successful == self.offered


def run_step(ctl: Controller, sampler: Sampler, scen_list: list[tuple[Scenario, float]], duration_s: float,
             workdir: Path, *, timeout_s: float = 120.0) -> StepResult:
    """Offer each (scenario, rate) for ``duration_s`` seconds in parallel SIPp processes."""
    from ivr.core.callrecord import hash_caller

    jobs = []
    owner: dict[str, Scenario] = {}  # hashed caller number -> scenario: every call is checked
    for idx, (scen, rate) in enumerate(scen_list):
        calls = max(1, int(round(rate * duration_s)))
        if calls > MAX_CALLS_PER_STEP or rate > MAX_RATE:
            raise ValueError(f"step too large: {calls} calls at {rate} cps (bounds {MAX_CALLS_PER_STEP}, {MAX_RATE})")
        prefix = f"07{idx}"
        script = CallScript(scen.number, caller=prefix + "[call_number]", steps=list(scen.steps),
                            bye_timeout_ms=30000, answer_timeout_ms=15000)
        for n in range(1, calls + 1):
            owner[hash_caller(f"{prefix}{n}", SALT)] = scen
        jobs.append((scen, rate, calls, script))
    t0 = time.time()
    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        futures = [pool.submit(run_sipp, script, calls, rate, None, duration_s + timeout_s, "127.0.0.1:5060",
                               workdir / f"{scen.name}-{rate:g}", ["-trace_rtt", "-rtt_freq", "1"])
                   for scen, rate, calls, script in jobs]
        results = [f.result() for f in futures]
    t1 = time.time()
    records = _settled_records(ctl.db_path, t0 - 1, t1 + 1, expected=len(owner))
    sipps = [sipp_summary(r) for r in results]
    failures: dict[str, int] = {}
    for s in sipps:
        for k, v in s["failures"].items():
            failures[k] = failures.get(k, 0) + v
    offered = sum(c for _, _, c, _ in jobs)
    successful = sum(s["successful"] for s in sipps)
    failed = sum(s["failed"] for s in sipps)
    unexpected: dict[str, int] = {}
    seen: dict[str, int] = {}
    for r in records:
        scen = owner.get(r.caller)
        if scen is None:
            continue  # not ours (another tester's call in the same time window)
        seen[scen.name] = seen.get(scen.name, 0) + 1
        bad = (scen.expect_outcome and r.outcome != scen.expect_outcome) or (
            scen.expect_phase and r.hangup_phase != scen.expect_phase) or (
            scen.expect_municipality and r.municipality != scen.expect_municipality)
        if bad:
            key = f"{scen.name}: {r.outcome}/{r.hangup_phase or '-'}/{r.municipality or '-'}"
            if r.error:
                key += f" ({r.error[:40]})"
            unexpected[key] = unexpected.get(key, 0) + 1
    for scen, _, calls, _ in jobs:
        if seen.get(scen.name, 0) < calls:
            unexpected[f"{scen.name}: missing record"] = calls - seen.get(scen.name, 0)
    records = [r for r in records if r.caller in owner]
    rtts = [s["invite_200_ms"] for s in sipps]
    all_rtt: list[float] = []
    for r in results:
        all_rtt += _rtt_ms(r.workdir)
    combined_sipp = {
        "processes": sipps,
        "max_concurrent": sum(s["max_concurrent"] for s in sipps),
        "invite_200_ms": {"n": len(all_rtt), "p50": _r(_pct(all_rtt, 0.5)), "p95": _r(_pct(all_rtt, 0.95)),
                          "p99": _r(_pct(all_rtt, 0.99)), "max": _r(max(all_rtt) if all_rtt else None)},
        "retransmissions": sum(s["retransmissions"] for s in sipps),
    }
    del rtts
    return StepResult(
        scenario="+".join(s.name for s, _, _, _ in jobs), rate=sum(r for _, r, _, _ in jobs), duration_s=duration_s,
        offered=offered, successful=successful, failed=failed,
        completed_cps=round(successful / duration_s, 2), failures=failures, sipp=combined_sipp,
        records=record_summary(records, {}), resources=resource_summary(sampler.window(t0, t1)),
        started_at=t0, ended_at=t1, unexpected=unexpected)
