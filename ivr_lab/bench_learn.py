"""``ivr bench learn``: the self-learning loop's curve (issue 12).

Simulated callers confirm their municipality on *development* material; each confirmed
utterance becomes a learned reference of its municipality (as an approved candidate does
live: :meth:`ivr.speech.fusion_engine.FusionEngine.set_learned`, the features of
:meth:`~ivr.speech.fusion_engine.FusionEngine.learned_features`); then *test* material,
never taught, is decided through the real path (listening, engine, matcher) with 0, 5, 20,
100 learned utterances per municipality. Reported per step: top-1 (the matcher's best is the
right one), first attempt right (accept or confirm of the right one), accepted but wrong,
and the mean calibrated p_right of the right answers.

Two sets:

* ``synthetic`` (default): the municipalities of the given area codes. Teaching utterances
  are spoken with the corpus's *dev* voices and carrier phrases, test utterances with its
  disjoint *test* voices and phrases (:mod:`ivr_lab.corpus`), so a learned reference never
  is the test audio nor its voice.
* ``human``: the human bench's pseudo-municipalities (phrases of the corpus,
  :mod:`ivr_lab.bench_human`) whose phrase occurs in both splits: dev clips teach, test
  clips are decided in the test split's closed-set questions. The corpus is mostly one clip
  per phrase, so this is a small sample (printed with the figures).

Every confirmed dev utterance is promoted (operator approval of all): the held-back check
and the caps of the live loop are not applied here.
"""

from __future__ import annotations

import json
import random
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Sequence

from ivr.core.matcher import Matcher


def _decide(tasks, plan, engine) -> dict:
    from ivr_lab.bench_human import run_task

    matchers: dict[str, Matcher] = {}
    right = first = wrong_accept = 0
    p_right = []
    for task in tasks:
        item = run_task(task, plan, engine, matchers)
        ok = item.decided_cbs_code == task.expected
        right += ok
        first += ok and item.verdict in ("accept", "confirm")
        wrong_accept += (not ok) and item.verdict == "accept"
        if ok and item.p_right >= 0:
            p_right.append(item.p_right)
    n = len(tasks) or 1
    return {"n": len(tasks), "top1": right / n, "first_attempt": first / n, "accepted_wrong": wrong_accept / n,
            "mean_p_right_of_right": sum(p_right) / len(p_right) if p_right else None}


def _teach(engine, teaching: dict[str, list[tuple[str, bytes]]], per: int, features: dict) -> int:
    """The first ``per`` confirmed utterances of each municipality as its learned references
    (each encoded once: the steps share their first utterances)."""
    refs = []
    for code, said in teaching.items():
        for i, (phrase, slin) in enumerate(said[:per]):
            if (code, i) not in features:
                features[code, i] = engine.learned_features(slin)
            refs.append((code, phrase, *features[code, i]))
    return engine.set_learned(refs)


def synthetic_sets(area_codes: Sequence[str], steps: Sequence[int], test_per: int, workdir: Path, seed: int):
    """(plan, teaching {code: [(phrase, slin)]}, test tasks) for the municipalities of ``area_codes``."""
    from ivr.plan_files import load_base_plan
    from ivr_lab.bench_human import Task
    from ivr_lab.corpus import PHRASES, VOICES, Item, render, spoken_name
    from ivr_lab.human_speech import Clip
    from ivr_lab.replay_items import read_slin

    plan = load_base_plan()
    rng = random.Random(seed)
    most = max(steps)
    teaching: dict[str, list[tuple[str, bytes]]] = defaultdict(list)
    tasks = []
    workdir.mkdir(parents=True, exist_ok=True)
    k = 0
    for area in area_codes:
        for m in plan.candidates(area):
            name = spoken_name(m.name)
            for split, count in (("dev", most), ("test", test_per)):
                for i in range(count):
                    text = name if rng.random() < 0.5 else rng.choice(PHRASES[split]).format(n=name)
                    item = Item(area, m.cbs_code, "bare", text, rng.choice(VOICES[split]), rng.randint(130, 185),
                                rng.randint(30, 70))
                    wav = workdir / f"{split}-{area}-{m.cbs_code}-{i:03d}.wav"
                    if not wav.exists():
                        render(item, wav, seed=seed * 100003 + k)
                    k += 1
                    if split == "dev":
                        teaching[m.cbs_code].append((m.name, read_slin(wav)))
                    else:
                        clip = Clip(wav.name, "synthetic", "test", text, wav)
                        tasks.append(Task(clip, wav, area, m.cbs_code, "closed"))
            print(f"\r  spoken: {k}", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    return plan, teaching, tasks


def human_sets():
    """The human bench's phrases said in both splits: dev clips teach, test clips are decided."""
    from ivr.core.words import normalise
    from ivr_lab.bench_human import BenchSettings, build_tasks, spoken_text
    from ivr_lab.human_speech import convert_all, default_cache, ensure_unpacked, load_clips
    from ivr_lab.replay_items import read_slin

    settings = BenchSettings(split="test", oov_items=0)
    plan, tasks = build_tasks(settings)
    by_phrase = {normalise(spoken_text(plan.municipalities[t.expected].name)): t.expected for t in tasks}
    cache = default_cache()
    clips = load_clips(ensure_unpacked(cache))
    wavs = dict(zip(clips, convert_all(clips, cache)))
    teaching: dict[str, list[tuple[str, bytes]]] = defaultdict(list)
    for c in clips:
        if c.split != "dev":
            continue
        code = by_phrase.get(normalise(spoken_text(c.text)))
        if code:
            teaching[code].append((plan.municipalities[code].name, read_slin(wavs[c])))
    return plan, dict(teaching), [t for t in tasks if t.expected in teaching]


def run(set_name: str, steps: Sequence[int], area_codes: Sequence[str], test_per: int, workdir: Path,
        seed: int) -> dict:
    from ivr_lab.replay import make_recogniser

    t0 = time.perf_counter()
    if set_name == "human":
        plan, teaching, tasks = human_sets()
    else:
        plan, teaching, tasks = synthetic_sets(area_codes, steps, test_per, workdir, seed)
    engine = make_recogniser("fusion", plan)
    rows = []
    features: dict = {}
    for per in steps:
        used = _teach(engine, teaching, per, features)
        row = {"per_municipality": per, "learned": used, **_decide(tasks, plan, engine)}
        rows.append(row)
        print(f"  {per:>4} per municipality ({used} learned): top-1 {100 * row['top1']:.1f} %", file=sys.stderr)
    engine.set_learned([])
    available = sorted(len(v) for v in teaching.values())
    return {"set": set_name, "area_codes": list(area_codes) if set_name != "human" else [],
            "municipalities": len(teaching), "teaching_available_min_max": [available[0], available[-1]] if available
            else [0, 0], "test_items": len(tasks), "rows": rows, "seconds": round(time.perf_counter() - t0)}


def format_text(result: dict) -> str:
    lines = [f"learning curve, {result['set']} set"
             + (f" (area codes {', '.join(result['area_codes'])})" if result["area_codes"] else "")
             + f": {result['municipalities']} municipalities, {result['test_items']} test utterances, "
             f"teaching utterances available per municipality {result['teaching_available_min_max'][0]}-"
             f"{result['teaching_available_min_max'][1]}",
             f"{'taught/municipality':>20} {'learned':>8} {'top-1':>7} {'1st attempt':>12} {'accepted wrong':>15} "
             f"{'mean p_right (right)':>21}"]
    for r in result["rows"]:
        p = "-" if r["mean_p_right_of_right"] is None else f"{r['mean_p_right_of_right']:.3f}"
        lines.append(f"{r['per_municipality']:>20} {r['learned']:>8} {100 * r['top1']:>6.1f}% "
                     f"{100 * r['first_attempt']:>11.1f}% {100 * r['accepted_wrong']:>14.1f}% {p:>21}")
    lines.append(f"({result['seconds']} s)")
    return "\n".join(lines)


def register_bench(bench) -> None:
    p = bench.add_parser("learn", help="the self-learning loop's curve: test accuracy after 0, 5, 20, 100 "
                                       "confirmed dev utterances per municipality (fusion engine)")
    p.add_argument("--set", choices=("synthetic", "human"), default="synthetic")
    p.add_argument("--steps", default="0,5,20,100", help="learned utterances per municipality, comma-separated")
    p.add_argument("--area-codes", default="0113,0118", help="synthetic: the area codes whose municipalities learn")
    p.add_argument("--test-per", type=int, default=6, help="synthetic: test utterances per municipality")
    p.add_argument("--workdir", type=Path, default=Path("/tmp/ivr-bench-learn"), help="synthetic audio cache")
    p.add_argument("--seed", type=int, default=12)
    p.add_argument("--json", type=Path)
    p.set_defaults(func=_cmd)


def _cmd(args) -> int:
    steps = [int(x) for x in args.steps.split(",") if x.strip()]
    result = run(args.set, steps, [a.strip() for a in args.area_codes.split(",") if a.strip()], args.test_per,
                 args.workdir, args.seed)
    print(format_text(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return 0
