"""``ivr simulate`` and ``ivr simulate-fit``: traffic through the real call flow, no Asterisk."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from ivr.core.report import Kpis

from ivr.simulator.model import CALLS_PER_YEAR_2020, CallerProfile
from ivr.simulator.run import SimConfig, _remove_db, headline_table, simulate

# --- command line --------------------------------------------------------------------------------

def register(subparsers) -> None:
    p = subparsers.add_parser("simulate", help="simulate traffic through the real call flow (no Asterisk)")
    p.add_argument("--calls", type=int, help="number of calls (default: --rate scaled to --days)")
    p.add_argument("--days", type=int, default=None, help="days of traffic the calls are spread over (default 365)")
    p.add_argument("--rate", type=float, default=CALLS_PER_YEAR_2020,
                   help="calls per year when --calls is not given (default 12 million)")
    p.add_argument("--profile", default="baseline-2020",
                   help="caller/recogniser profile: baseline-2020, perfect, "
                        "or a confusion JSON (from ivr simulate-fit)")
    p.add_argument("--db", type=Path, default=Path("simulated-calls.sqlite"),
                   help="SQLite file for the call records (must not exist; --force replaces it)")
    p.add_argument("--force", action="store_true", help="replace an existing --db")
    p.add_argument("--records", choices=("all", "sample", "none"), default=None,
                   help="call records to store: all, a uniform sample (every k-th call), none "
                        "(default: all up to 2 million calls, else sample). KPIs always count every call.")
    p.add_argument("--sample", type=int, default=200_000, help="records kept with --records sample")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--overflow", metavar="DIAL_STRING",
                   help="every connected municipality overflows to this destination (e.g. a central switchboard) "
                        "when busy or not answering; default: the shipped plan, no overflow")
    p.add_argument("--kpi-groups", action="store_true",
                   help="also accumulate KPIs per area code and municipality over every call (about half as fast)")
    p.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    p.add_argument("--metrics", action="store_true",
                   help="also count every call into the Prometheus metrics (ivr.adapters.metrics), write the summed "
                        "snapshot to <db>.metrics.json and check it against the KPIs")
    p.add_argument("--english-share", type=float, default=0.0,
                   help="share of callers who choose English at the greeting (default 0: the 2020 world)")
    p.add_argument("--abroad-share", type=float, default=0.0,
                   help="share of callers who call an access number from abroad (default 0: the 2020 world)")
    p.add_argument("--wrong-code-share", type=float, default=0.0,
                   help="share of callers who dial a shared area code and name a municipality outside it "
                        "(default 0: the 2020 world)")
    p.add_argument("--no-second-pass", action="store_true",
                   help="decide spoken names only among the dialled code's municipalities (as before issue 11)")
    p.add_argument("--repeat-share", type=float, default=0.0,
                   help="share of callers whose hash reached a municipality of the dialled code within N days "
                        "(default 0: the 2020 world); with --landline-share: the suggestion is asked first")
    p.add_argument("--landline-share", type=float, default=0.0,
                   help="share of callers on a Dutch landline (default 0: the 2020 world)")
    p.add_argument("--no-suggestion", action="store_true",
                   help="the same callers, but no suggestion is asked (compare with the same --seed)")
    p.add_argument("--compare-suggestion", action="store_true",
                   help="run twice with the same seed, with and without the suggestion (all records; the second "
                        "in <db>.nosuggestion.sqlite), and compare the suggested calls: questions, IVR seconds")
    p.add_argument("--confusable", action="store_true",
                   help="hold thin accepts of listed confusable pairs to a confirmation, as live calls do")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_cmd_simulate)

    f = subparsers.add_parser("simulate-fit", help="fit a confusion model from `ivr replay --json` output")
    f.add_argument("replay_json", type=Path)
    f.add_argument("-o", "--output", type=Path, required=True, help="confusion model JSON to write")
    f.add_argument("--prior-weight", type=float, default=4.0)
    f.set_defaults(func=_cmd_fit)


def _cmd_simulate(args) -> int:
    days = args.days or 365
    calls = args.calls if args.calls is not None else round(args.rate * days / 365)
    if calls <= 0:
        print("nothing to simulate (--calls 0)", file=sys.stderr)
        return 2
    records = args.records or ("all" if calls <= 2_000_000 else "sample")
    db = None if records == "none" else args.db
    if db is not None and db.exists():
        if not args.force:
            print(f"{db} exists: choose another --db or pass --force to replace it", file=sys.stderr)
            return 2
        _remove_db(db)
    profile_name = args.profile
    model_path = None
    if profile_name not in ("baseline-2020", "perfect"):
        model_path, profile_name = profile_name, "baseline-2020"
        if not Path(model_path).is_file():
            print(f"unknown profile {args.profile!r}", file=sys.stderr)
            return 2
    for name in ("english_share", "abroad_share", "wrong_code_share", "repeat_share", "landline_share"):
        if not 0.0 <= getattr(args, name) <= 1.0:
            print(f"--{name.replace('_', '-')} must be between 0 and 1", file=sys.stderr)
            return 2
    caller_profile = CallerProfile(calls_per_year=int(args.rate), english_share=args.english_share,
                                   abroad_share=args.abroad_share, wrong_code_share=args.wrong_code_share,
                                   repeat_share=args.repeat_share, landline_share=args.landline_share,
                                   suggest=not args.no_suggestion)
    cfg = SimConfig(calls=calls, days=days, seed=args.seed, profile=profile_name, model_path=model_path, db=db,
                    records=records, sample=args.sample, workers=args.workers, progress=not args.no_progress,
                    kpi_groups=args.kpi_groups, metrics=args.metrics,
                    caller_profile=caller_profile, overflow=args.overflow, second_pass=not args.no_second_pass,
                    confusable=args.confusable)
    if args.compare_suggestion:
        return _compare_suggestion(cfg, args)
    summary = simulate(cfg)
    kpis: Kpis = summary.pop("_kpis")
    summary.pop("_metrics", None)
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    print(f"simulated {calls:,} calls over {days} days (seed {args.seed}, profile {args.profile}) in "
          f"{summary['elapsed_s']:.1f} s with {summary['workers']} worker(s): {summary['calls_per_s']:,.0f} calls/s")
    print(f"busy hour at {int(args.rate):,} calls/year: {summary['busy_hour_calls_per_s']} calls/s")
    if db is not None:
        kept = "all records" if records == "all" else f"every {summary['records_kept_every']}th record (sample)"
        print(f"records: {db} ({kept}); KPIs over all calls: {db}.summary.json")
    for line in headline_table(kpis):
        print("  " + line)
    if summary["metrics_vs_kpis"] is not None:
        agree = summary["metrics_vs_kpis"]
        print("metrics (ivr.adapters.metrics) vs KPIs: " + ("agree" if agree == "agree" else "; ".join(agree[:5])))
    if db is not None:
        print(f"the same KPIs from the stored records: ivr report --db {db}")
    return 0


def _compare_suggestion(cfg: SimConfig, args) -> int:
    from dataclasses import replace

    from ivr.simulator.run import savings_table, suggestion_savings

    if cfg.db is None or not (cfg.caller_profile.repeat_share or cfg.caller_profile.landline_share):
        print("--compare-suggestion needs a --db and --repeat-share or --landline-share", file=sys.stderr)
        return 2
    without_db = cfg.db.with_suffix(".nosuggestion.sqlite")
    _remove_db(without_db)
    runs = {}
    for db, suggest in ((cfg.db, True), (without_db, False)):
        run = replace(cfg, db=db, records="all", caller_profile=replace(cfg.caller_profile, suggest=suggest))
        runs[suggest] = simulate(run)["_kpis"].overall
    for suggest, o in runs.items():
        ivr = o.latency["ivr_seconds"]
        print(f"{'with' if suggest else 'without'} suggestion: questions {o.questions / o.calls:.4f} a call, "
              f"IVR {ivr.sum / o.calls:.3f} s a call, p50 {ivr.p50:.1f} s, p95 {ivr.p95:.1f} s; "
              + ", ".join(f"{k} {v:,}" for k, v in o.suggestions.items()))
    for line in savings_table(suggestion_savings(cfg.db, without_db)):
        print("  " + line)
    return 0


def _cmd_fit(args) -> int:
    from ivr.simulator.confusion import fit_confusion, summarise

    model = fit_confusion(args.replay_json, prior_weight=args.prior_weight, name=args.output.stem)
    model.save(args.output)
    for line in summarise(model):
        print(line)
    print(f"written {args.output}; use it with: ivr simulate --profile {args.output}")
    return 0
