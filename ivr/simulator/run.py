"""Running a simulation: chunks with their own random streams, worker processes, records
in SQLite shards merged at the end, KPIs over every call and the summary."""

from __future__ import annotations

import json
import math
import multiprocessing as mp
import random
import sqlite3
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable, Iterable

from ivr.core.callrecord import CallRecord
from ivr.core.flow import FlowSettings
from ivr.simulator.confusion import get_profile
from ivr.adapters.metrics import MetricsObserver, metrics_snapshot, reconcile
from ivr.adapters.store import CallStore
from ivr.core.report import BASELINE_2020 as REPORT_BASELINE
from ivr.core.report import KpiAccumulator, Kpis
from ivr.plan_files import confusable_rule, load_base_plan

from ivr.simulator.caller import SimulatedCall
from ivr.simulator.model import CHUNK, DAY_WEIGHTS, PROFILES, WEEKDAY_HOURS, CallerProfile, World

# --- KPIs over all calls ------------------------------------------------------------------------
# The KPIs are the report's (ivr.core.report.KpiAccumulator): the simulator, `ivr report` and the API
# count the same things the same way. Each worker accumulates its calls; the parent merges.

BASELINE_2020 = {k: v for k, v in REPORT_BASELINE.items() if v is not None}


def new_accumulator(groups: bool = False) -> KpiAccumulator:
    """Overall KPIs always; per area code and municipality with ``groups`` (halves the speed:
    with ``--records all`` ``ivr report --db`` gives those breakdowns from the records anyway)."""
    return KpiAccumulator(misroute_window_s=300.0, groups=groups)


def merge_accumulators(into: KpiAccumulator, other: KpiAccumulator) -> KpiAccumulator:
    """Add ``other``'s counts to ``into`` (both fed disjoint sets of calls)."""
    into.merge(other)
    return into


def headline_table(kpis: Kpis) -> list[str]:
    """The 2020 comparison and the traffic mix, for the terminal."""
    g = kpis.overall
    lines = [f"{'figure (speech mode, as ivr report)':<36} {'simulated':>10} {'2020':>7} {'diff':>7}"]
    for key, value in g.headline.items():
        base = REPORT_BASELINE.get(key)
        if key.startswith("ivr_seconds"):
            lines.append(f"{key:<36} {value if value is not None else float('nan'):9.1f}s")
            continue
        v = value if value is not None else float("nan")
        b = f"{base * 100:6.1f}%" if base is not None else ""
        d = f"{(v - base) * 100:+6.1f}" if base is not None and value is not None else ""
        lines.append(f"{key:<36} {v * 100:9.2f}% {b:>7} {d:>7}")
    calls = g.calls or 1
    lines.append("modes: " + ", ".join(f"{m} {n / calls:.1%}" for m, n in g.modes.items()))
    lines.append("outcomes: " + ", ".join(f"{o} {n / calls:.1%}" for o, n in g.outcomes.items() if n))
    lines.append("municipality not reachable, then: " + ", ".join(f"{k} {n:,}" for k, n in g.failover.items()))
    lines.append("national second pass: " + ", ".join(f"{k} {n:,}" for k, n in g.second_pass.items()))
    lines.append("suggestion asked first: " + ", ".join(f"{k} {n:,}" for k, n in g.suggestions.items()))
    ivr = g.latency["ivr_seconds"]
    lines.append(f"questions asked {g.questions:,} ({g.questions / calls:.4f} a call); time in the IVR "
                 f"{ivr.sum:,.0f} s ({ivr.sum / calls:.3f} s a call)")
    lines.append("asked back instead of transferred: " + ", ".join(f"{k} {n:,}" for k, n in g.asked_back.items()))
    return lines


# --- running ---------------------------------------------------------------------------------------

@dataclass
class SimConfig:
    calls: int
    days: int = 365
    seed: int = 1
    profile: str = "baseline-2020"
    model_path: str | None = None  # a fitted confusion JSON instead of the profile's built-in one
    db: Path | None = None
    records: str = "all"  # all | sample | none
    sample: int = 100_000  # records kept with --records sample (every k-th call)
    workers: int = 2
    batch: int = 2000
    kpi_groups: bool = False  # KPIs per area code / municipality in the summary too
    metrics: bool = False  # count every call into the project's Prometheus metrics (ivr.adapters.metrics) too
    progress: bool = True
    caller_profile: CallerProfile | None = None
    overflow: str | None = None  # a destination every connected municipality overflows to
    second_pass: bool = True  # the flow's national second pass (FlowSettings.national_second_pass)
    # the confusable-pair rule of live calls (ivr.core.matcher.ConfusableRule); off by default, so the
    # baseline-2020 profile reproduces the 2020 service, which had none
    confusable: bool = False

    def keep_every(self) -> int:
        if self.records == "all":
            return 1
        if self.records == "none" or self.db is None:
            return 0
        return max(1, math.ceil(self.calls / max(self.sample, 1)))


def _make_world(cfg: SimConfig) -> World:
    plan = load_base_plan()
    if cfg.overflow:
        plan = plan.with_changes(municipalities={
            cbs: replace(m, overflow=cfg.overflow) if m.status.connected else m
            for cbs, m in plan.municipalities.items()})
    profile = cfg.caller_profile or PROFILES.get(cfg.profile, CallerProfile)()
    model = get_profile(cfg.model_path or (cfg.profile if cfg.profile in ("baseline-2020", "perfect") else cfg.profile))
    world = World(plan, profile, model, cfg.seed, FlowSettings(national_second_pass=cfg.second_pass),
                  confusable=confusable_rule() if cfg.confusable else None)
    world.set_calendar(cfg.days)
    return world


def run_chunks(cfg: SimConfig, chunks: Iterable[int], store_path: Path | None,
               progress: Callable[[int], None] | None = None, world: World | None = None,
               observer=None) -> dict:
    """Simulate the given chunks; returns KPI counts (dict) and stats."""
    world = world or _make_world(cfg)
    store = None
    keep = cfg.keep_every()
    if store_path is not None and keep:
        store = CallStore(store_path)
    kpis = new_accumulator(cfg.kpi_groups)
    if observer is None and cfg.metrics:
        observer = MetricsObserver()
    pending: list[CallRecord] = []
    done = 0
    t0 = time.perf_counter()
    for chunk in chunks:
        lo, hi = chunk * CHUNK, min((chunk + 1) * CHUNK, cfg.calls)
        rng = random.Random(f"ivr-sim/{cfg.seed}/{chunk}")
        sim = SimulatedCall(world, rng)
        for i in range(lo, hi):
            rec = sim.run(i, f"sim{cfg.seed}-{i:09d}")
            kpis.add(rec)
            if observer is not None:
                observer.count(rec)  # the metrics a finished real call adds
            if store is not None and i % keep == 0:
                pending.append(rec)
                if len(pending) >= cfg.batch:
                    store.save_many(pending)
                    pending.clear()
        done += hi - lo
        if progress:
            progress(hi - lo)
    if store is not None:
        store.save_many(pending)
        store.close()
    hits, misses = world.cache_stats()
    snapshot = None
    if observer is not None and hasattr(observer, "registry"):
        snapshot = metrics_snapshot(observer.registry)
    return {"kpis": kpis, "metrics": snapshot, "calls": done, "seconds": time.perf_counter() - t0,
            "matcher_memo_hits": hits, "matcher_memo_misses": misses}


def _worker(cfg: SimConfig, chunks: list[int], shard: Path | None, queue) -> None:
    try:
        out = run_chunks(cfg, chunks, shard, progress=lambda n: queue.put(("progress", n)))
        queue.put(("done", out))
    except BaseException as exc:  # report, never hang the parent
        import traceback
        queue.put(("error", f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"))


class Progress:
    def __init__(self, total: int, enabled: bool):
        self.total, self.enabled, self.done = total, enabled and total > 0, 0
        self.t0 = time.perf_counter()
        self._last = 0.0

    def add(self, n: int) -> None:
        self.done += n
        now = time.perf_counter()
        if self.enabled and (now - self._last > 0.25 or self.done >= self.total):
            self._last = now
            el = now - self.t0
            rate = self.done / el if el > 0 else 0.0
            eta = (self.total - self.done) / rate if rate > 0 else 0.0
            width = 30
            fill = int(width * self.done / self.total)
            sys.stderr.write(f"\r[{'#' * fill}{'.' * (width - fill)}] {self.done:,}/{self.total:,} calls "
                             f"{rate:,.0f}/s eta {eta:,.0f}s ")
            sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")


def simulate(cfg: SimConfig) -> dict:
    """Run the simulation; write records (if any) to ``cfg.db`` and a summary next to it."""
    n_chunks = math.ceil(cfg.calls / CHUNK)
    workers = max(1, min(cfg.workers, n_chunks))
    bar = Progress(cfg.calls, cfg.progress)
    t0 = time.perf_counter()
    shards: list[Path] = []
    results: list[dict] = []
    keep = cfg.keep_every()
    if cfg.db is not None:
        cfg.db.parent.mkdir(parents=True, exist_ok=True)
    if workers == 1:
        shard = cfg.db if (cfg.db is not None and keep) else None
        results.append(run_chunks(cfg, range(n_chunks), shard, progress=bar.add))
    else:
        ctx = mp.get_context("fork")
        queue = ctx.Queue()
        procs = []
        for w in range(workers):
            shard = None
            if cfg.db is not None and keep:
                shard = cfg.db.with_name(f"{cfg.db.name}.shard{w}")
                _remove_db(shard)
                shards.append(shard)
            chunks = list(range(w, n_chunks, workers))
            p = ctx.Process(target=_worker, args=(cfg, chunks, shard, queue), daemon=True)
            p.start()
            procs.append(p)
        finished = 0
        error = None
        while finished < workers:
            kind, payload = queue.get()
            if kind == "progress":
                bar.add(payload)
            elif kind == "done":
                results.append(payload)
                finished += 1
            else:
                error = payload
                finished += 1
        for p in procs:
            p.join(30)
        if error:
            bar.close()
            raise RuntimeError(f"a simulator worker failed: {error}")
        if shards:
            _merge_shards(cfg.db, shards)
    bar.close()
    elapsed = time.perf_counter() - t0
    acc = results[0]["kpis"]
    for r in results[1:]:
        merge_accumulators(acc, r["kpis"])
    kpis = acc.result()
    overall = kpis.to_dict()["overall"]
    metrics_problems = None
    snapshot: dict[str, float] | None = None
    if cfg.metrics:
        snapshot = {}
        for r in results:
            for key, value in (r.get("metrics") or {}).items():
                snapshot[key] = snapshot.get(key, 0.0) + value
        metrics_problems = reconcile(snapshot, kpis)
    summary = {
        "format": "ivr-simulate/1",
        "calls": cfg.calls, "days": cfg.days, "seed": cfg.seed, "profile": cfg.profile,
        "confusion_model": cfg.model_path or cfg.profile, "workers": workers,
        "records": cfg.records, "records_kept_every": keep, "db": str(cfg.db) if cfg.db else None,
        "elapsed_s": round(elapsed, 2), "calls_per_s": round(cfg.calls / elapsed, 1) if elapsed else None,
        "matcher_memo_hits": sum(r["matcher_memo_hits"] for r in results),
        "matcher_memo_misses": sum(r["matcher_memo_misses"] for r in results),
        "headline": kpis.overall.headline, "baseline_2020": REPORT_BASELINE,
        "kpis": overall,
        "metrics_vs_kpis": None if metrics_problems is None else (metrics_problems or "agree"),
        "kpis_by_area_code": {k: asdict(v) for k, v in kpis.by_area_code.items()} if cfg.kpi_groups else None,
        "caller_profile": (cfg.caller_profile or PROFILES.get(cfg.profile, CallerProfile)()).to_dict(),
        "busy_hour_calls_per_s": busy_hour_rate(cfg),
    }
    if cfg.db is not None:
        Path(str(cfg.db) + ".summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    if snapshot is not None and cfg.db is not None:
        Path(str(cfg.db) + ".metrics.json").write_text(json.dumps(snapshot, indent=1, sort_keys=True) + "\n")
    summary["_kpis"] = kpis
    summary["_metrics"] = snapshot
    return summary


def busy_hour_rate(cfg: SimConfig) -> float:
    """Mean calls/s in the busiest hour of a weekday at the profile's yearly volume."""
    profile = cfg.caller_profile or PROFILES.get(cfg.profile, CallerProfile)()
    week = sum(DAY_WEIGHTS)
    per_monday = profile.calls_per_year / 52.18 * DAY_WEIGHTS[0] / week
    return round(per_monday * max(WEEKDAY_HOURS) / sum(WEEKDAY_HOURS) / 3600, 2)


def _remove_db(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        p = Path(str(path) + suffix)
        if p.exists():
            p.unlink()


def _merge_shards(db: Path, shards: list[Path]) -> None:
    CallStore(db).close()  # the schema, as the store defines it
    con = sqlite3.connect(str(db), isolation_level=None)
    try:
        con.execute("PRAGMA journal_mode=WAL")
        for i, shard in enumerate(shards):
            if not shard.exists():
                continue
            con.execute(f"ATTACH DATABASE ? AS s{i}", (str(shard),))
            con.execute("BEGIN")
            con.execute(f"INSERT OR REPLACE INTO calls SELECT * FROM s{i}.calls")
            con.execute("COMMIT")
            con.execute(f"DETACH DATABASE s{i}")
            _remove_db(shard)
    finally:
        con.close()


# --- the suggestion's savings: the same calls with and without it -------------------------------


def suggestion_savings(with_db: Path, without_db: Path) -> dict:
    """Pair the calls of two runs with the same seed (one with suggestions, one without: each
    call has its own random stream, so call i is the same caller in both) and compare the calls
    that were asked a suggestion: questions asked and seconds in the IVR, overall and by answer."""
    without = {}
    store = CallStore(without_db)
    try:
        for r in store.iter_query():
            without[r.call_id] = r
    finally:
        store.close()
    groups: dict[str, dict[str, float]] = {}
    store = CallStore(with_db)
    try:
        for r in store.iter_query():
            other = without.get(r.call_id)
            if not r.suggested or other is None:
                continue
            for key in ("all", r.suggestion.value if r.suggestion else "hung_up"):
                g = groups.setdefault(key, {"calls": 0, "questions_with": 0, "questions_without": 0,
                                            "ivr_s_with": 0.0, "ivr_s_without": 0.0, "routed_right_with": 0,
                                            "routed_right_without": 0})
                g["calls"] += 1
                g["questions_with"] += r.recognition_attempts
                g["questions_without"] += other.recognition_attempts
                g["ivr_s_with"] += r.ivr_seconds or 0.0
                g["ivr_s_without"] += other.ivr_seconds or 0.0
                g["routed_right_with"] += r.outcome == "routed" and r.municipality == r.expected_municipality
                g["routed_right_without"] += other.outcome == "routed" and other.municipality == other.expected_municipality
    finally:
        store.close()
    return groups


def savings_table(groups: dict) -> list[str]:
    lines = [f"{'suggested calls':<16}{'calls':>8}{'questions':>18}{'IVR seconds (mean)':>22}{'routed right':>18}",
             f"{'':<16}{'':>8}{'without -> with':>18}{'without -> with':>22}{'without -> with':>18}"]
    for key, g in sorted(groups.items(), key=lambda kv: -kv[1]["calls"]):
        n = g["calls"]
        lines.append(f"{key:<16}{n:>8,}{g['questions_without'] / n:>9.2f} -> {g['questions_with'] / n:<5.2f}"
                     f"{g['ivr_s_without'] / n:>12.1f} -> {g['ivr_s_with'] / n:<6.1f}"
                     f"{g['routed_right_without'] / n:>9.1%} -> {g['routed_right_with'] / n:.1%}")
    return lines
