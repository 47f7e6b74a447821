"""Microbenchmark of the matcher: microseconds per match on every shared area code.

    .venv/bin/python loadtest/bench_matcher.py [--rounds N]

Prints build time per area code, then p50/p95/max µs per ``match`` call for bare
names, carrier phrases and 3-best lists, and the accuracy of bare/carrier utterances
of every candidate's own name, aliases and unambiguous villages (text in -> verdict).
"""

from __future__ import annotations

import argparse
import statistics
import time

from ivr.core.matcher import Matcher, MatchVerdict
from ivr.plan_files import load_base_plan


def pct(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    plan = load_base_plan()
    codes = [c for c, a in plan.area_codes.items() if a.shared]

    t = time.perf_counter()
    matchers = {c: Matcher(plan.candidates(c)) for c in codes}
    build_ms = (time.perf_counter() - t) * 1000
    print(f"built {len(matchers)} matchers in {build_ms:.0f} ms ({build_ms / len(matchers):.2f} ms each)")

    timings: dict[str, list[float]] = {"bare": [], "phrase": [], "3-best": []}
    outcome = {"name": [0, 0, 0], "village": [0, 0, 0]}  # right accept, wrong accept, total
    for _ in range(args.rounds):
        for code, m in matchers.items():
            for cand in plan.candidates(code):
                owners = {}
                for other in plan.candidates(code):
                    for p in other.places:
                        owners.setdefault(p, set()).add(other.cbs_code)
                utterances = [("name", cand.name)] + [("name", a) for a in cand.aliases]
                utterances += [("village", p) for p in cand.places[:5] if owners.get(p) == {cand.cbs_code}]
                for kind, said in utterances:
                    for style, nbest in (
                        ("bare", [(said, 0.9)]),
                        ("phrase", [(f"eh ik wil graag de gemeente {said} bellen alstublieft", 0.8)]),
                        ("3-best", [(said, 0.7), (f"naar {said}", 0.5), ("ik wil graag", 0.2)]),
                    ):
                        t = time.perf_counter()
                        r = m.match(nbest)
                        timings[style].append((time.perf_counter() - t) * 1e6)
                        if style != "3-best":
                            o = outcome[kind]
                            o[2] += 1
                            if r.verdict is MatchVerdict.ACCEPT:
                                o[0 if r.best.cbs_code == cand.cbs_code else 1] += 1
    for style, values in timings.items():
        print(f"{style:7s} n={len(values):6d}  p50 {statistics.median(values):7.0f} µs  "
              f"p95 {pct(values, 0.95):7.0f} µs  max {max(values):7.0f} µs")
    for kind, (ok, wrong, total) in outcome.items():
        total //= args.rounds
        ok //= args.rounds
        wrong //= args.rounds
        print(f"{kind:7s} utterances {total:5d}: accepted right {ok / total:6.1%}, "
              f"accepted WRONG {wrong / total:6.2%}, else confirm/choose/reject")


if __name__ == "__main__":
    main()
