"""In-process benchmark of the routing decision and the call flow (no Asterisk, no I/O).

    .venv/bin/python loadtest/bench_routing.py [--n 20000] [--json]

Prints microseconds per decision, p50/p99/max, for:

* ``route`` — the pure routing decision for a dialled unique code (140111) and a shared
  code (140113), what the controller computes when a call arrives;
* ``flow unique`` — a fresh CallFlow fed CallStarted for a unique code up to its Transfer
  action (the controller's decision for unique codes: target p99 <= 5 ms);
* ``flow dtmf`` — the menu digit of a shared code to its Transfer action;
* ``flow speech`` — an n-best transcript to the matcher's decision and the Transfer
  (matcher built and cached per area code, as in the controller).

The timings include Python's own overhead on this machine; run it on an idle machine for
figures to compare (``--json`` for the load-test report).
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import random
import statistics
import time

from ivr.core.flow import CallFlow, CallStarted, Digit, SpeechHeard, Transfer
from ivr.core.matcher import matcher_for
from ivr.core.recognition import Recognition
from ivr.core.yes_no import yes_no
from ivr.plan_files import load_base_plan
from ivr.core.routing import route


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, max(0, round(q * len(values)) - 1))]


def stats(name: str, samples_ns: list[int]) -> dict:
    us = [s / 1000 for s in samples_ns]
    return {"name": name, "n": len(us), "p50_us": round(pct(us, 0.50), 2), "p99_us": round(pct(us, 0.99), 2),
            "max_us": round(max(us), 2), "mean_us": round(statistics.fmean(us), 2)}


def bench(n: int, seed: int = 1) -> list[dict]:
    plan = load_base_plan()
    rng = random.Random(seed)
    unique = sorted("14" + c for c, a in plan.area_codes.items() if not a.shared)
    shared = sorted(c for c, a in plan.area_codes.items() if a.shared)
    factory = lambda cands: matcher_for(plan, _code_of(plan, cands))  # noqa: E731
    for code in shared:  # warm the per-area-code matcher cache, as a running controller has
        matcher_for(plan, code)
    perf = time.perf_counter_ns
    out = []

    gc.disable()
    try:
        # route(): the pure decision
        for label, numbers in (("route unique (140111)", ["140111"]), ("route unique (all 15 codes)", unique),
                               ("route shared (140113)", ["140113"])):
            samples = []
            for i in range(n):
                number = numbers[i % len(numbers)]
                t = perf()
                route(plan, number)
                samples.append(perf() - t)
            out.append(stats(label, samples))

        # the flow for a unique code: CallStarted -> Transfer
        samples = []
        for i in range(n):
            number = unique[i % len(unique)]
            t = perf()
            flow = CallFlow(plan, speech_available=False)
            actions = flow.handle(CallStarted(0.0, "b", number))
            samples.append(perf() - t)
            assert isinstance(actions[0], Transfer)
        out.append(stats("flow unique: CallStarted -> Transfer", samples))

        # the DTMF menu: digit -> Transfer
        samples = []
        for i in range(n):
            code = shared[i % len(shared)]
            flow = CallFlow(plan, speech_available=False)
            flow.handle(CallStarted(0.0, "b", "14" + code))
            t = perf()
            actions = flow.handle(Digit(1.0, "1"))
            samples.append(perf() - t)
            assert actions  # a Transfer, or "not connected" where the first listed is Haarlemmermeer
        out.append(stats("flow dtmf: menu digit -> Transfer", samples))

        # speech: n-best -> matcher -> Transfer (or confirmation)
        samples = []
        for i in range(n):
            code = shared[rng.randrange(len(shared))]
            cands = plan.candidates(code)
            m = cands[rng.randrange(len(cands))]
            text = rng.choice(("{}", "ik wil graag de gemeente {} bellen")).format(m.name)
            flow = CallFlow(plan, matcher_factory=factory, yes_no=yes_no)
            flow.handle(CallStarted(0.0, "b", "14" + code))
            t = perf()
            flow.handle(SpeechHeard(2.0, Recognition.of_transcripts(((text, 0.9),)), speech_ended_at=1.9))
            samples.append(perf() - t)
        out.append(stats("flow speech: n-best -> matcher -> decision", samples))
    finally:
        gc.enable()
    return out


def _code_of(plan, candidates) -> str:
    codes = tuple(m.cbs_code for m in candidates)
    for code, area in plan.area_codes.items():
        if area.municipalities == codes:
            return code
    raise KeyError(codes)  # a confirmation between two: the flow builds its own small matcher


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    rows = bench(args.n)
    if args.json:
        print(json.dumps({"python": platform.python_version(), "n": args.n, "results": rows}, indent=2))
        return
    print(f"{'decision':<44} {'p50 µs':>8} {'p99 µs':>8} {'max µs':>9}")
    for r in rows:
        print(f"{r['name']:<44} {r['p50_us']:8.1f} {r['p99_us']:8.1f} {r['max_us']:9.1f}")
    unique = next(r for r in rows if r["name"].startswith("flow unique"))
    verdict = "met" if unique["p99_us"] <= 5000 else "NOT met"
    print(f"target: unique-code decision p99 <= 5 ms inside the controller: {verdict} ({unique['p99_us']:.0f} µs)")


if __name__ == "__main__":
    main()
