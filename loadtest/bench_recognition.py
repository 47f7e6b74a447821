"""Recognition latency under load: N simultaneous call streams sharing one engine.

    .venv/bin/python loadtest/bench_recognition.py [--engine fusion|templates|whisper|vosk]
        [--streams 20] [--seconds 60] [--gap 2.0 4.0] [--manifest tests/data/dev/manifest.csv]
        [--burst] [--threads N] [--workers N] [--max-batch N] [--fast-margin NATS]  (the last four: whisper)

The engine is loaded as the service loads it (``ivr.speech.engines.load_recogniser``;
default: the configured engine, ``IVR_SPEECH_ENGINE``). Each stream behaves like a
caller and is heard exactly as a call is heard, through the project's one listening
module (:class:`ivr.speech.listening.Listening`: endpointer with the engine's filled-pause
hook, 300 ms pre-roll, recogniser session): silence while the prompt plays (``--gap``
seconds, uniform, no-input clock not armed), then one dev-set utterance, then the line's
silence, all as 20 ms frames in real time, until the endpointer ends the listen; then
the session's final n-best and the matcher's verdict.

Latency = the moment the frame that ended the listen arrived (its real-time due time)
-> the matcher's verdict: the engine's decision plus any lag of the stream behind real
time (a filled-pause check runs inside the endpointer, on the frame path). ``--burst``
instead feeds every stream's utterance at once and finishes all listens at the same
instant (the worst case); latency = finish -> verdict. At the end: decisions/s, the
process's CPU (cores), and its memory (VmRSS, VmHWM from /proc/self/status).
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ivr.core.matcher import Matcher  # noqa: E402
from ivr.plan_files import load_base_plan  # noqa: E402
from ivr_lab.replay_items import read_slin  # noqa: E402
from ivr.speech.base import FRAME_MS  # noqa: E402
from ivr.speech.closed_set import frames_of  # noqa: E402
from ivr.speech.engines import ENGINES, load_recogniser  # noqa: E402
from ivr.speech.listening import SILENCE_FRAME, Listening  # noqa: E402


def memory() -> dict[str, str]:
    """VmRSS and VmHWM (peak RSS) of this process."""
    out = {}
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = " ".join(value.split())
    except OSError:
        pass
    return out


def load_engine(args, plan):
    over = {k: v for k, v in (("cpu_threads", args.threads), ("workers", args.workers),
                                ("max_batch", args.max_batch), ("fast_margin", args.fast_margin))
            if v is not None}
    if args.engine == "whisper" and over:
        from ivr.speech.whisper_engine import EngineSettings, WhisperEngine

        settings = EngineSettings(**over)
        return WhisperEngine(plan, settings).warm_up()
    if over:
        raise SystemExit("--threads/--workers/--max-batch/--fast-margin apply to --engine whisper only")
    return load_recogniser(args.engine, plan)  # as the service loads it


def describe(engine) -> str:
    s = getattr(engine, "settings", None)
    if s is None:
        return type(engine).__name__
    keys = ("voices", "workers", "cpu_threads", "max_batch", "accept_p", "reject_p")
    parts = [f"{k}={','.join(v) if isinstance(v, tuple) else v}" for k in keys if (v := getattr(s, k, None)) is not None]
    if hasattr(engine, "second_opinion"):
        parts.append(f"second_opinion={type(engine.second_opinion).__name__}")
    return " ".join(parts)


def main() -> int:
    from ivr.config import load_settings

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--manifest", default="tests/data/dev/manifest.csv")
    ap.add_argument("--engine", choices=ENGINES, default=None,
                    help="speech engine (default: the configured one, IVR_SPEECH_ENGINE)")
    ap.add_argument("--streams", type=int, default=20)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--gap", type=float, nargs=2, default=(2.0, 4.0), help="prompt silence before each utterance")
    ap.add_argument("--threads", type=int, default=None, help="whisper: cpu_threads")
    ap.add_argument("--workers", type=int, default=None, help="whisper: worker threads")
    ap.add_argument("--max-batch", type=int, default=None, help="whisper: queued utterances decided together")
    ap.add_argument("--fast-margin", type=float, default=None,
                    help="whisper fast path: accept on bare names at this margin without a transcript")
    ap.add_argument("--burst", action="store_true", help="all streams finish at once, once")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    args.engine = args.engine or load_settings().speech_engine
    if args.engine not in ENGINES:
        raise SystemExit(f"engine {args.engine!r} is not one of {', '.join(ENGINES)}")

    plan = load_base_plan()
    manifest = Path(args.manifest)
    rows = [r for r in csv.DictReader(manifest.open()) if plan.area_codes[r["area_code"]].shared]
    audio = [(r, read_slin(manifest.parent / r["path"])) for r in rows]
    t_load = time.perf_counter()
    engine = load_engine(args, plan)
    load_s = time.perf_counter() - t_load
    mem_loaded = memory()
    matchers = {c: Matcher(plan.candidates(c)) for c in {r["area_code"] for r in rows}}
    r0, a0 = audio[0]
    warm = Listening(engine, plan.area_codes[r0["area_code"]].municipalities).start()
    for frame in frames_of(a0):
        warm.feed(frame)
    while not warm.done:
        warm.feed(SILENCE_FRAME)
    warm.finish()  # the first decision pays one-off costs (priors, caches)

    latencies: list[float] = []
    engine_ms: list[float] = []
    lags: list[float] = []
    kinds: Counter = Counter()
    right = held = 0
    lock = threading.Lock()

    def one(rng: random.Random, realtime: bool, barrier: threading.Barrier | None = None) -> None:
        nonlocal right, held
        row, slin = rng.choice(audio)
        code = row["area_code"]
        gap_frames = int(rng.uniform(*args.gap) * 1000 / FRAME_MS) if realtime else 0
        # the prompt plays: no-input clock not armed yet, the caller's line is silent
        listening = Listening(engine, plan.area_codes[code].municipalities, armed=gap_frames == 0).start()
        start = time.perf_counter()
        due = start
        k = 0

        def frames():
            yield from (SILENCE_FRAME for _ in range(gap_frames))
            yield from frames_of(slin)
            while True:  # the line after the caller stops talking
                yield SILENCE_FRAME

        for frame in frames():
            if k == gap_frames:
                listening.arm()  # the prompt ended
            due = start + (k + 1) * FRAME_MS / 1000  # when this frame has fully arrived
            if realtime:
                delay = due - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
            listening.feed(frame)
            k += 1
            if listening.done:
                break
        if barrier is not None:
            barrier.wait()
            due = time.perf_counter()
        lag = max(0.0, time.perf_counter() - due) * 1000
        verdict = listening.finish()
        result = matchers[code].decide(verdict.recognition) if verdict.recognition is not None else None
        t = time.perf_counter()
        with lock:
            latencies.append((t - due) * 1000)
            lags.append(lag)
            engine_ms.append(verdict.decision_ms)
            kinds[str(verdict.kind)] += 1
            held += verdict.held
            right += bool(result and result.best and result.best.cbs_code == row["expected_cbs_code"]
                          and str(result.verdict) in ("accept", "confirm"))

    cpu0, t0 = os.times(), time.perf_counter()
    if args.burst:
        barrier = threading.Barrier(args.streams)
        threads = [threading.Thread(target=one, args=(random.Random(args.seed + s), False, barrier))
                   for s in range(args.streams)]
    else:
        deadline = time.perf_counter() + args.seconds

        def stream(s: int) -> None:
            rng = random.Random(args.seed + s)
            time.sleep(rng.uniform(0, args.gap[1]))  # callers do not arrive in step
            while time.perf_counter() < deadline:
                one(rng, True)

        threads = [threading.Thread(target=stream, args=(s,)) for s in range(args.streams)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    wall = time.perf_counter() - t0
    cpu1 = os.times()
    cpu = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
    lat, eng, lag = np.array(latencies), np.array(engine_ms), np.array(lags)
    mode = "burst" if args.burst else f"{args.seconds:.0f}s, prompt gap {args.gap[0]}-{args.gap[1]}s"
    print(f"engine={args.engine} streams={args.streams} ({mode}) {describe(engine)} cores={os.cpu_count()} "
          f"(loaded in {load_s:.1f} s)")
    print(f"decisions={len(lat)} rate={len(lat) / wall:.2f}/s process_cpu={cpu / wall:.2f} cores "
          f"loadavg={os.getloadavg()[0]:.2f}")
    print(f"listens: {dict(kinds)}, first attempt right {right}/{len(lat)}, filled-pause holds {held}")
    print(f"end of speech -> decision: p50={np.percentile(lat, 50):.0f} ms p95={np.percentile(lat, 95):.0f} ms "
          f"max={lat.max():.0f} ms (target p95 <= 500 ms; after the endpointer's "
          f"{Listening(engine, ()).config.end_silence_ms} ms)")
    print(f"  of which session.finish(): p50={np.percentile(eng, 50):.0f} ms p95={np.percentile(eng, 95):.0f} ms; "
          f"stream behind real time: p95={np.percentile(lag, 95):.0f} ms max={lag.max():.0f} ms")
    mem = memory()
    print(f"memory: after load VmRSS {mem_loaded.get('VmRSS', '?')}; at the end VmRSS {mem.get('VmRSS', '?')} "
          f"VmHWM {mem.get('VmHWM', '?')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
