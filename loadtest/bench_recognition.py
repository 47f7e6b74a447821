"""Recognition latency under load: N simultaneous call streams sharing one engine.

    .venv/bin/python loadtest/bench_recognition.py [--engine templates|whisper] [--streams 20]
        [--seconds 60] [--gap 2.0 4.0] [--manifest tests/data/dev/manifest.csv] [--burst]
        [--threads N] [--workers N] [--max-batch N] [--fast-margin NATS]   (the last four: whisper)

Each stream behaves like a caller: silence while the prompt plays (``--gap`` seconds,
uniform), then one dev-set utterance fed in real time as 20 ms frames through the
energy endpointer and a recogniser session; at end of speech the session is finished
and the matcher decides. Latency = endpoint fired -> matcher verdict. ``--burst``
instead finishes all streams at the same instant (the worst case). Prints figures.
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ivr.core.matcher import Matcher  # noqa: E402
from ivr.core.plan import load_base_plan  # noqa: E402
from ivr_lab.replay import read_slin  # noqa: E402
from ivr.speech.base import FRAME_BYTES  # noqa: E402
from ivr.speech.endpoint import EndpointEvent, Endpointer  # noqa: E402
from ivr.speech.engines import load_recogniser  # noqa: E402
from ivr.speech.whisper_engine import EngineSettings, WhisperEngine  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--manifest", default="tests/data/dev/manifest.csv")
    ap.add_argument("--engine", choices=("templates", "whisper"), default="templates")
    ap.add_argument("--streams", type=int, default=20)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--gap", type=float, nargs=2, default=(2.0, 4.0), help="prompt silence before each utterance")
    ap.add_argument("--threads", type=int, default=None, help="engine cpu_threads (default: the engine's)")
    ap.add_argument("--workers", type=int, default=None, help="engine worker threads (default: the engine's)")
    ap.add_argument("--max-batch", type=int, default=None, help="queued utterances decided together")
    ap.add_argument("--fast-margin", type=float, default=None,
                    help="engine fast path: accept on bare names at this margin without a transcript")
    ap.add_argument("--burst", action="store_true", help="all streams finish at once, once")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()

    plan = load_base_plan()
    manifest = Path(args.manifest)
    rows = [r for r in csv.DictReader(manifest.open()) if plan.area_codes[r["area_code"]].shared]
    audio = [(r, read_slin(manifest.parent / r["path"])) for r in rows]
    over = {k: v for k, v in (("cpu_threads", args.threads), ("workers", args.workers),
                                ("max_batch", args.max_batch), ("fast_margin", args.fast_margin))
            if v is not None}
    if args.engine == "whisper":
        settings = EngineSettings(**over)
        engine = WhisperEngine(plan, settings).warm_up()
        described = (f"cpu_threads={settings.cpu_threads} workers={settings.workers} "
                     f"max_batch={settings.max_batch} fast_margin={settings.fast_margin}")
    else:
        engine = load_recogniser("templates", plan)  # as the service: references loaded, Whisper second opinion
        described = (f"voices={','.join(engine.settings.voices)} workers={engine.settings.workers} "
                     f"second_opinion={type(engine.second_opinion).__name__}")
    matchers = {c: Matcher(plan.candidates(c)) for c in {r["area_code"] for r in rows}}
    r0, a0 = audio[0]
    warm = engine.start(plan.area_codes[r0["area_code"]].municipalities)
    warm.feed(a0)
    warm.finish()  # load the model and fill the prior cache once
    latencies: list[float] = []
    lock = threading.Lock()
    cpu0, t0 = os.times(), time.perf_counter()

    def one(rng: random.Random, realtime: bool, barrier: threading.Barrier | None = None) -> None:
        row, slin = rng.choice(audio)
        code = row["area_code"]
        session = engine.start(plan.area_codes[code].municipalities)
        ep = Endpointer(hesitation=getattr(engine, "is_hesitation", None))
        start = time.perf_counter()
        for k, i in enumerate(range(0, len(slin), FRAME_BYTES)):
            frame = slin[i: i + FRAME_BYTES].ljust(FRAME_BYTES, b"\0")
            session.feed(frame)
            if ep.feed(frame) in (EndpointEvent.SPEECH_END, EndpointEvent.MAX_SPEECH):
                break
            if realtime:
                delay = start + (k + 1) * 0.02 - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
        if barrier is not None:
            barrier.wait()
        t = time.perf_counter()
        matchers[code].match(session.finish().nbest)
        with lock:
            latencies.append((time.perf_counter() - t) * 1000)

    if args.burst:
        barrier = threading.Barrier(args.streams)
        threads = [threading.Thread(target=one, args=(random.Random(args.seed + s), False, barrier))
                   for s in range(args.streams)]
    else:
        deadline = time.perf_counter() + args.seconds

        def stream(s: int) -> None:
            rng = random.Random(args.seed + s)
            time.sleep(rng.uniform(0, args.gap[1]))
            while time.perf_counter() < deadline:
                one(rng, True)
                time.sleep(rng.uniform(*args.gap))

        threads = [threading.Thread(target=stream, args=(s,)) for s in range(args.streams)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    wall = time.perf_counter() - t0
    cpu1 = os.times()
    cpu = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
    lat = np.array(latencies)
    mode = "burst" if args.burst else f"{args.seconds:.0f}s, prompt gap {args.gap[0]}-{args.gap[1]}s"
    print(f"engine={args.engine} streams={args.streams} ({mode}) {described} cores={os.cpu_count()}")
    print(f"decisions={len(lat)} rate={len(lat) / wall:.2f}/s process_cpu={cpu / wall:.2f} cores "
          f"loadavg={os.getloadavg()[0]:.2f}")
    print(f"end of speech -> decision: p50={np.percentile(lat, 50):.0f} ms p95={np.percentile(lat, 95):.0f} ms "
          f"max={lat.max():.0f} ms (target p95 <= 500 ms)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
