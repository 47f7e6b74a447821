"""``ivr bench human``: recognition on human Dutch speech, through the engine's real path.

Two tasks, each on a fixed ``dev`` or ``test`` split by game level
(:mod:`ivr_lab.human_speech`):

* **closed set**: every clip of 1-4 words with at most ``max_speech_s`` of speech is
  decided among ``candidates`` phrases: its own transcript, ``sound_alike`` transcripts
  of other clips that sound most like it (by the matcher's Dutch phonetic key), and
  random others. Each phrase plays a municipality (``GM9xxx``) in a plan of its own, so
  the clip goes through exactly what a caller's utterance goes through in ``ivr replay``:
  endpointer, recogniser session, the matcher's verdict.
* **out of vocabulary**: clips that name no municipality are decided among the real
  municipalities of a random shared area code. The right answer is "not understood"
  (reject) or, at worst, a question; an accept is a misroute.

Reported: top-1, first attempt right (accept or confirm of the right one), accepted
but wrong, the verdict mix, per speaker, and the calibration of the engine's
probability that its best answer is right (accuracy per bin).
"""

from __future__ import annotations

import json
import random
import re
import sys
import time
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from types import MappingProxyType
from typing import Sequence

from rapidfuzz import fuzz

from ivr_lab.human_speech import Clip, convert_all, default_cache, ensure_unpacked, load_clips, speech_seconds
from ivr.core.matcher import ConfusableRule, Matcher
from ivr.core.words import normalise, phonetic
from ivr.core.plan import AreaCode, Municipality, NumberingPlan, RoutingMode, Status
from ivr.plan_files import load_base_plan
from ivr.speech.listening import listen
from ivr_lab.replay import NationalPass, fill_from_verdict
from ivr_lab.replay_items import ItemResult, read_manifest, read_slin
from ivr_lab.replay_report import compute_metrics

_WORD = re.compile(r"[\w'’-]+")
HOMOPHONE_RATIO = 90  # phonetic keys this alike (0..100) are the same name said twice
# "auw"/"ouw" at the end of a word sound as "au"/"ou": "Auw" and "Au" are one word said twice
_FINAL_W = re.compile(r"Aw\b")


def sound_key(text: str) -> str:
    """The matcher's Dutch phonetic key, for telling homophones apart in the bench."""
    return _FINAL_W.sub("A", phonetic(text)).replace(" ", "")



@dataclass(frozen=True)
class BenchSettings:
    split: str = "test"
    candidates: int = 12  # phrases per closed-set question (the clip's own included)
    sound_alike: int = 4  # of which this many sound most like the clip's own phrase
    max_words: int = 4
    max_speech_s: float = 2.5
    oov_items: int = 150  # out-of-vocabulary clips per split (0: none)
    seed: int = 1
    limit: int = 0  # closed-set items at most (0: all)
    # the flow's national second pass: every answer not accepted is decided again among all the
    # plan's municipalities (the real 342 and every phrase of the split), and each closed-set clip
    # is also asked once on a code without its own phrase (kind "outside": a caller on the wrong code)
    second_pass: bool = False
    # the confusable-pair rule (ivr.core.matcher.ConfusableRule) with each clip's sound-alike
    # phrases as its listed partners (the bench has no real names); None: the core's default margin
    confusable_margin: float | None = None


@dataclass(frozen=True)
class Task:
    clip: Clip
    wav: Path
    area_code: str  # the question's key in the bench plan
    expected: str  # CBS code of the right answer; "" = names nothing (out of vocabulary)
    kind: str  # "closed" | "oov" | "outside"
    alike: tuple[str, ...] = ()  # CBS codes of the phrases that sound most like the right one (closed set)


def spoken_text(text: str) -> str:
    return " ".join(_WORD.findall(text)).strip("-'’ ")


def build_tasks(settings: BenchSettings, cache: Path | None = None) -> tuple[NumberingPlan, list[Task]]:
    """The bench plan (the base plan plus one pseudo-municipality per phrase) and the tasks."""
    cache = cache or default_cache()
    clips = load_clips(ensure_unpacked(cache))
    wavs = dict(zip(clips, convert_all(clips, cache)))
    base = load_base_plan()
    rng = random.Random(settings.seed)
    in_split = [c for c in clips if c.split == settings.split]

    short = [c for c in in_split if 1 <= len(spoken_text(c.text).split()) <= settings.max_words
             and speech_seconds(wavs[c]) <= settings.max_speech_s]
    phrases: dict[str, str] = {}  # normalised -> spoken form (first seen)
    for c in short:
        phrases.setdefault(normalise(spoken_text(c.text)), spoken_text(c.text))
    keys = sorted(phrases)
    code_of = {k: f"GM{9000 + i:04d}" for i, k in enumerate(keys)}
    municipalities = dict(base.municipalities)
    for k in keys:
        municipalities[code_of[k]] = Municipality(code_of[k], phrases[k], "bench", 1, Status.ACTIVE,
                                                  "Local/bench", ())
    area_codes = dict(base.area_codes)
    tasks: list[Task] = []
    sound = {k: sound_key(k) for k in keys}
    for n, c in enumerate(short):
        own = normalise(spoken_text(c.text))
        # no homophones ("Au" / "Auw"): no two municipalities of an area code sound the same
        others = [k for k in keys if k != own and k not in own.split() and own not in k.split()
                  and fuzz.ratio(sound[own], sound[k]) < HOMOPHONE_RATIO]
        alike = sorted(others, key=lambda k: (-fuzz.ratio(sound[own], sound[k]), k))[: settings.sound_alike]
        rest = [k for k in others if k not in alike]
        chosen = [own, *alike, *rng.sample(rest, min(len(rest), settings.candidates - 1 - len(alike)))]
        rng.shuffle(chosen)
        code = f"H{n:04d}"
        area_codes[code] = AreaCode(code, "bench", tuple(code_of[k] for k in chosen), RoutingMode.SPEECH, 1)
        tasks.append(Task(c, wavs[c], code, code_of[own], "closed", tuple(code_of[k] for k in alike)))
        if settings.second_pass:  # the same clip on a code that lacks its phrase: found only nationally
            area_codes["X" + code[1:]] = AreaCode("X" + code[1:], "bench", tuple(code_of[k] for k in chosen if k != own),
                                                  RoutingMode.SPEECH, 1)
            tasks.append(Task(c, wavs[c], "X" + code[1:], code_of[own], "outside"))
    if settings.limit:
        tasks = tasks[: settings.limit * (2 if settings.second_pass else 1)]

    shared = sorted(code for code, a in base.area_codes.items() if a.shared)
    pool = [c for c in in_split if speech_seconds(wavs[c]) <= 6.0]
    rng.shuffle(pool)
    oov: list[Task] = []
    for c in pool:
        if len(oov) >= settings.oov_items:
            break
        code = rng.choice(shared)
        if _names_a_candidate(c.text, base, code):
            continue
        oov.append(Task(c, wavs[c], code, "", "oov"))
    plan = NumberingPlan(MappingProxyType(municipalities), MappingProxyType(area_codes),
                         version=f"bench-human-{settings.split}-{settings.seed}")
    return plan, tasks + oov


def _names_a_candidate(text: str, plan: NumberingPlan, code: str) -> bool:
    """Does the transcript contain any word of any name, alias, former name or place of the
    area code's municipalities? (Such a clip is not out of vocabulary.)"""
    words = set(normalise(text).split())
    for m in plan.candidates(code):
        for name in (m.name, *m.aliases, *m.former_names, *m.places):
            if set(normalise(name).split()) & words:
                return True
    return False


# --- running -----------------------------------------------------------------------------------

@dataclass
class BenchItem(ItemResult):
    speaker: str = ""
    text: str = ""
    p_right: float = -1.0  # the engine's probability that its best answer is right (-1: none given)
    partner_margin: float = -1.0  # best minus its listed (sound-alike) partner's score (-1: no partner ranked)
    held: bool = False  # an accept the confusable-pair rule held to a confirmation


def bench_rule(task: Task, margin: float | None) -> ConfusableRule:
    """The confusable-pair rule of one closed-set question: the right phrase and each of its
    sound-alikes are a listed pair (what confusable_names.csv is to real names)."""
    pairs = frozenset(frozenset((task.expected, a)) for a in task.alike)
    return ConfusableRule(pairs) if margin is None else ConfusableRule(pairs, margin)


def run_task(task: Task, plan: NumberingPlan, recogniser, matchers: dict[str, Matcher],
             national: "NationalPass | None" = None, margin: float | None = None) -> BenchItem:
    """One clip as ``ivr replay`` plays one row: the listening module, the engine, the matcher."""
    item = BenchItem(path=str(task.wav), area_code=task.area_code, expected_cbs_code=task.expected, kind=task.kind,
                     speaker=task.clip.speaker, text=task.clip.text)
    try:
        slin = read_slin(task.wav)
        if task.area_code not in matchers:
            matchers[task.area_code] = Matcher(plan.candidates(task.area_code), confusable=bench_rule(task, margin))
        matcher = matchers[task.area_code]
        verdict = listen(recogniser, plan.area_codes[task.area_code].municipalities, slin)
        fill_from_verdict(item, verdict, matcher, national)
        item.outside_code = task.kind == "outside"
        if verdict.recognition is not None:
            result = matcher.decide(verdict.recognition)
            partner = matcher.confusable.partner(result)
            item.partner_margin = round(result.best.score - partner.score, 2) if partner else -1.0
            item.held = bool(result.held_by)
        p = verdict.recognition.p_right if verdict.recognition is not None else None
        item.p_right = round(float(p), 4) if p is not None else -1.0
    except Exception as exc:  # noqa: BLE001 - one bad clip must not end the run
        item.verdict = item.action = "error"
        item.error = f"{type(exc).__name__}: {exc}"
    return item


def oov_metrics(items: Sequence[BenchItem]) -> dict:
    ok = [i for i in items if i.verdict != "error"]
    n = len(ok) or 1
    count = defaultdict(int)
    for i in ok:
        count[i.verdict] += 1
    return {"n": len(ok), "errors": len(items) - len(ok),
            "accepted": round(count["accept"] / n, 4), "confirmed": round(count["confirm"] / n, 4),
            "chose": round(count["choose"] / n, 4),
            "rejected": round((count["reject"] + count["no_input"]) / n, 4),
            "proposed_outside": sum(1 for i in ok if i.second_pass == "outside")}


def outside_metrics(items: Sequence[BenchItem]) -> dict:
    """Clips asked on a code without their phrase: every answer is a question or nothing, unless
    a name of the code was accepted (a misroute, as in 2020)."""
    ok = [i for i in items if i.verdict != "error"]
    n = len(ok) or 1
    asked = [i for i in ok if i.verdict in ("confirm", "choose")]
    lat = sorted(i.latency_ms for i in ok)
    return {"n": len(ok), "errors": len(items) - len(ok),
            "asked_right": round(sum(1 for i in asked if i.decided_cbs_code == i.expected_cbs_code) / n, 4),
            "asked_wrong": round(sum(1 for i in asked if i.decided_cbs_code != i.expected_cbs_code) / n, 4),
            "accepted_wrong": sum(1 for i in ok if i.verdict == "accept"),
            "rejected": round(sum(1 for i in ok if i.verdict in ("reject", "no_input")) / n, 4),
            "latency_ms_p50": lat[len(lat) // 2] if lat else 0.0,
            "latency_ms_p95": lat[min(len(lat) - 1, int(0.95 * len(lat)))] if lat else 0.0}


def calibration(items: Sequence[BenchItem], edges=(0.0, 0.5, 0.8, 0.9, 0.95, 0.99, 0.995, 1.0001)) -> list[dict]:
    """Accuracy of the best answer per bin of the engine's probability that it is right.
    Out-of-vocabulary items count as wrong whatever was decided."""
    rows = []
    scored = [i for i in items if i.verdict not in ("error",) and i.p_right >= 0]
    for lo, hi in zip(edges, edges[1:]):
        inside = [i for i in scored if lo <= i.p_right < hi]
        right = sum(1 for i in inside if i.expected_cbs_code and i.decided_cbs_code == i.expected_cbs_code)
        rows.append({"p_from": lo, "p_to": min(hi, 1.0), "n": len(inside),
                     "accuracy": round(right / len(inside), 4) if inside else None,
                     "accepted": sum(1 for i in inside if i.verdict == "accept")})
    return rows


def summarise(items: Sequence[BenchItem]) -> dict:
    closed = [i for i in items if i.kind == "closed"]
    oov = [i for i in items if i.kind == "oov"]
    outside = [i for i in items if i.kind == "outside"]
    speakers = sorted({i.speaker for i in closed})
    metrics = compute_metrics(closed)
    return {"closed_set": metrics,
            "accepted_wrong_rate": metrics["misroute_rate"],
            "confusable_held": {"right": sum(1 for i in closed if i.held and i.decided_cbs_code == i.expected_cbs_code),
                                "wrong": sum(1 for i in closed if i.held and i.decided_cbs_code != i.expected_cbs_code)},
            "per_speaker": {s: compute_metrics([i for i in closed if i.speaker == s]) for s in speakers},
            "out_of_vocabulary": oov_metrics(oov),
            "calibration": calibration(closed + oov),
            **({"outside_code": outside_metrics(outside),
                "second_pass": {kind: dict(Counter(i.second_pass or "not_run" for i in group))
                                for kind, group in (("closed", closed), ("outside", outside), ("oov", oov))}}
               if outside else {})}


def format_text(summary: dict, settings: BenchSettings, engine: str) -> str:
    c, o = summary["closed_set"], summary["out_of_vocabulary"]
    lines = [f"human speech bench, split {settings.split} (engine {engine}; "
             f"{settings.candidates} candidates, {settings.sound_alike} sound-alike)",
             f"closed set  n={c['n']} errors={c['errors']}  top-1 {c['top1_accuracy']:.1%}  "
             f"first attempt right {c['accuracy_first_attempt']:.1%}  accepted wrong {c['misroute_rate']:.2%} "
             f"({c['misroutes']})",
             f"            accept {c['accept_rate']:.1%}  confirm {c['confirm_rate']:.1%}  "
             f"choose {c['choose_rate']:.1%}  reject {c['reject_rate']:.1%}  "
             f"latency p50 {c['latency_ms_p50']} ms p95 {c['latency_ms_p95']} ms",
             f"            confusable pair held to confirm: {summary['confusable_held']['right']} right, "
             f"{summary['confusable_held']['wrong']} wrong",
             f"out of vocabulary  n={o['n']}  accepted {o['accepted']:.1%}  confirmed {o['confirmed']:.1%}  "
             f"chose {o['chose']:.1%}  rejected {o['rejected']:.1%}  asked about one outside the code "
             f"{o['proposed_outside']}",
             "per speaker:"]
    if "outside_code" in summary:
        x = summary["outside_code"]
        lines[3:3] = [f"outside the code  n={x['n']}  asked about the right one {x['asked_right']:.1%}  "
                      f"asked about a wrong one {x['asked_wrong']:.1%}  accepted wrong {x['accepted_wrong']}  "
                      f"rejected {x['rejected']:.1%}  latency p50 {x['latency_ms_p50']} ms p95 {x['latency_ms_p95']} ms",
                      "second pass by kind: " + "; ".join(f"{k}: " + ", ".join(f"{v} {n}" for v, n in sorted(c.items()))
                                                          for k, c in summary["second_pass"].items())]
    for s, m in summary["per_speaker"].items():
        lines.append(f"  {s:<5} n={m['n']:<4} top-1 {m['top1_accuracy']:.1%}  first attempt {m['accuracy_first_attempt']:.1%}"
                     f"  accepted wrong {m['misroutes']}")
    lines.append("calibration (P(best is right) bin: n, accuracy, accepted):")
    for r in summary["calibration"]:
        acc = "-" if r["accuracy"] is None else f"{r['accuracy']:.1%}"
        lines.append(f"  [{r['p_from']:.3f}, {r['p_to']:.3f})  n={r['n']:<4} accuracy {acc:<6} accepted {r['accepted']}")
    return "\n".join(lines)


def fresh_oov_tasks(settings: BenchSettings, seeds: Sequence[int], cache: Path | None = None
                    ) -> tuple[NumberingPlan, list[Task]]:
    """Out-of-vocabulary tasks of the split that the run with ``settings.seed`` never played:
    sampled with each of ``seeds``, each clip once. For measuring a change prompted by a
    run of that split on clips nothing was chosen by."""
    plan, used = build_tasks(settings, cache)
    seen = {t.clip.source for t in used if t.kind == "oov"}
    fresh: list[Task] = []
    for seed in seeds:
        for t in build_tasks(replace(settings, seed=seed), cache)[1]:
            if t.kind == "oov" and t.clip.source not in seen:
                seen.add(t.clip.source)
                fresh.append(t)
    return plan, fresh  # out-of-vocabulary tasks ask only real area codes, which every bench plan holds


def run_bench(settings: BenchSettings, engine: str, cache: Path | None = None, progress: bool = False,
              recogniser=None, fresh_oov_seeds: Sequence[int] = ()) -> tuple[dict, list[BenchItem]]:
    from ivr_lab.replay import make_recogniser

    plan, tasks = (fresh_oov_tasks(settings, fresh_oov_seeds, cache) if fresh_oov_seeds
                   else build_tasks(settings, cache))
    recogniser = recogniser or make_recogniser(engine, plan)
    matchers: dict[str, Matcher] = {}
    national = NationalPass(recogniser, plan) if settings.second_pass else None
    items = []
    for k, task in enumerate(tasks):
        items.append(run_task(task, plan, recogniser, matchers, national, settings.confusable_margin))
        if progress and (k + 1) % 25 == 0:
            print(f"  {k + 1}/{len(tasks)}", file=sys.stderr)
    return summarise(items), items


# --- calibration -----------------------------------------------------------------------------------

def evidence_rows(engine, plan: NumberingPlan, tasks: Sequence[Task]) -> list[dict]:
    """Run the engine on ``tasks``; per item the numbers its calibration reads and whether its
    best answer was right (an out-of-vocabulary item is never right)."""
    rows = []
    matchers: dict[str, Matcher] = {}
    for task in tasks:
        engine.last_evidence = None
        item = run_task(task, plan, engine, matchers)
        ev = engine.last_evidence
        if ev is None or not ev.ranked:
            continue
        rows.append({"kind": task.kind, "path": str(task.wav), "text": task.clip.text, **ev.features, "p_right": ev.p_right,
                     "right": int(bool(task.expected) and ev.ranked[0][0] == task.expected),
                     "verdict": item.verdict})
    return rows


def fit_logistic(x, y, l2: float = 1e-2, steps: int = 50):
    """Weights and bias of a logistic regression (Newton's method, a little L2 on the weights)."""
    import numpy as np

    x = np.c_[np.asarray(x, float), np.ones(len(x))]
    y = np.asarray(y, float)
    w = np.zeros(x.shape[1])
    ridge = l2 * np.diag([1.0] * (x.shape[1] - 1) + [0.0])
    for _ in range(steps):
        p = 1 / (1 + np.exp(-x @ w))
        grad = x.T @ (p - y) + ridge @ w
        hess = (x * (p * (1 - p))[:, None]).T @ x + ridge + 1e-9 * np.eye(len(w))
        w -= np.linalg.solve(hess, grad)
    return w


def manifest_tasks(manifest: Path, plan: NumberingPlan) -> list[Task]:
    """A synthetic corpus (``ivr corpus synth``) as bench tasks."""
    tasks = []
    for row in read_manifest(manifest):
        clip = Clip(row["path"], "synthetic", row.get("kind", ""), row.get("text", ""), manifest.parent / row["path"])
        tasks.append(Task(clip, manifest.parent / row["path"], row["area_code"], row["expected_cbs_code"], "closed"))
    return tasks


# --- command line ---------------------------------------------------------------------------------

def register(sub) -> None:
    bench = sub.add_parser("bench", help="benchmarks").add_subparsers(dest="bench_command", required=True)
    p = bench.add_parser("human", help="recognition on human Dutch speech (downloads fillets-ng-data-nl once)")
    p.add_argument("--split", choices=("dev", "test"), default="test")
    p.add_argument("--engine", default=None, help="speech engine (default: IVR_SPEECH_ENGINE)")
    p.add_argument("--candidates", type=int, default=BenchSettings.candidates)
    p.add_argument("--sound-alike", type=int, default=BenchSettings.sound_alike)
    p.add_argument("--oov", type=int, default=BenchSettings.oov_items, help="out-of-vocabulary clips")
    p.add_argument("--limit", type=int, default=0, help="closed-set items at most")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json", type=Path, help="write the summary and every item here")
    p.add_argument("--second-pass", action="store_true",
                   help="the flow's national second pass: answers not accepted are decided again among all "
                        "municipalities, and every clip is also asked on a code without its own phrase")
    p.add_argument("--confusable-margin", type=float, default=None,
                   help="hold accepts this close to a sound-alike to a confirmation (default: the core's; "
                        "0: never)")
    p.add_argument("--fresh-oov", metavar="SEEDS", default="",
                   help="out of vocabulary only: the split's clips that the run with --seed never played, "
                        "sampled with these comma-separated seeds (e.g. 2,3,4,5)")
    p.set_defaults(func=_cmd_human)
    p = bench.add_parser("calibrate", help="fit the fusion engine's calibration on the dev splits (prints settings)")
    p.add_argument("--synthetic", type=Path, action="append", default=[],
                   help="a dev manifest of `ivr corpus synth --voices dev` (repeatable)")
    p.add_argument("--features", help="comma-separated evidence features the calibration reads "
                   "(default: the engine's CALIBRATION_FEATURES)")
    p.add_argument("--json", type=Path, help="write every row here")
    p.set_defaults(func=_cmd_calibrate)
    from ivr_lab.bench_learn import register_bench
    register_bench(bench)


def _cmd_human(args) -> int:
    from ivr.config import load_settings

    engine = args.engine or load_settings().speech_engine
    settings = BenchSettings(split=args.split, candidates=args.candidates, sound_alike=args.sound_alike,
                             oov_items=args.oov, seed=args.seed, limit=args.limit, second_pass=args.second_pass,
                             confusable_margin=args.confusable_margin)
    t0 = time.perf_counter()
    seeds = [int(x) for x in args.fresh_oov.split(",") if x.strip()]
    summary, items = run_bench(settings, engine, progress=True, fresh_oov_seeds=seeds)
    print(format_text(summary, settings, engine))
    print(f"({len(items)} items in {time.perf_counter() - t0:.0f} s)")
    if args.json:
        args.json.write_text(json.dumps({"settings": asdict(settings), "engine": engine, **summary,
                                         "items": [asdict(i) for i in items]}, indent=1, ensure_ascii=False))
    return 0


def _cmd_calibrate(args) -> int:
    import numpy as np

    from ivr.speech.fusion_engine import CALIBRATION_FEATURES, FusionEngine

    plan, tasks = build_tasks(BenchSettings(split="dev"))
    engine = FusionEngine(plan).warm_up()
    rows = evidence_rows(engine, plan, tasks)
    for manifest in args.synthetic:
        rows += [dict(r, kind="synthetic") for r in evidence_rows(engine, plan, manifest_tasks(manifest, plan))]
    names = args.features.split(",") if args.features else list(CALIBRATION_FEATURES)
    x = [[r[n] for n in names] for r in rows]
    w = fit_logistic(x, [r["right"] for r in rows])
    fitted = tuple((n, round(float(v), 4)) for n, v in zip([*names, "bias"], w))
    print(f"{len(rows)} dev rows ({sum(r['right'] for r in rows)} right): calibration = {fitted}")
    p = 1 / (1 + np.exp(-(np.c_[np.asarray(x), np.ones(len(x))] @ w)))
    for threshold in (0.9, 0.95, 0.98, 0.99, 0.995):
        accepted = p >= threshold
        wrong = sum(1 for a, r in zip(accepted, rows) if a and not r["right"])
        print(f"  accept at p >= {threshold}: {int(accepted.sum())} accepted, {wrong} of them wrong")
    for threshold in (0.02, 0.05, 0.1, 0.2):
        rejected = p < threshold
        oov = [r for r in rows if r["kind"] == "oov"]
        print(f"  reject below {threshold}: {sum(1 for q, r in zip(rejected, rows) if q and r['kind'] == 'oov')}"
              f" of {len(oov)} out-of-vocabulary, {sum(1 for q, r in zip(rejected, rows) if q and r['right'])}"
              f" right answers lost")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0
