"""Load tests: SIPp callers against the real Asterisk and the real controller (``ivr loadtest``).

The harness starts ``ivr serve`` as a subprocess with a temporary SQLite file (Asterisk must
be installed and running: scripts/asterisk-install.sh + scripts/asterisk-start.sh, or pass
``--start-asterisk``), then runs *steps*: one or more SIPp processes offering calls of a
scenario at a fixed rate for a fixed time. While a step runs, a sampler reads CPU and RSS of
the controller and of Asterisk from ``/proc`` and scrapes the controller's ``/metrics``
(calls in the IVR). After a step it reads the controller's call records of that step
(decision latency, outcomes, errors) and SIPp's statistics (failures by reason, INVITE->200
response times, concurrent calls).

A *ramp* raises the rate step by step until calls fail or a latency bound is passed.
Everything is loopback (127.0.0.1) and bounded: calls per step, total calls and total time.

Scenarios (``SCENARIOS``):

* ``unique``   140111 (one municipality): straight through; the lab municipality answers after
  0.3 s, holds 1 s and hangs up;
* ``dtmf``     140113 with ``IVR_SPEECH_ENGINE=none``: the menu; the caller listens ``--menu-wait``
  seconds (default 1.2 s; longer keeps more callers in the IVR) and presses the digit of Goes;
* ``speech``   140113 with a speech engine: the caller says a name (RTP from a WAV of
  tests/data/dev via ``wav_to_pcap``); skipped with the reason when the controller reports
  no recogniser;
* ``hangup_greeting``, ``hangup_menu``, ``hangup_transfer``, ``hangup_connected``: callers
  hanging up in each phase (the transfer one rings ``Local/noanswer`` via a plan override);
* ``mixed``    all of the above (except speech) in parallel SIPp processes.

Results: ``loadtest/results/<name>.json`` and ``.md`` (with the machine described) and a
plot ``<name>.png`` (matplotlib, optional).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from ivr_lab.controller import REPO

from ivr_lab.loadtest.resources import Sampler, parse_ivr_gauges
from ivr_lab.loadtest.run import LoadConfig, evaluate_targets, run_load
from ivr_lab.loadtest.scenarios import MAX_RATE, MIX, RESULTS_DIR, Scenario, asterisk_pid, scenarios
from ivr_lab.loadtest.step import StepResult, run_step

__all__ = ["LoadConfig", "MIX", "RESULTS_DIR", "Sampler", "Scenario", "StepResult", "evaluate_targets",
           "parse_ivr_gauges", "run_load", "run_step", "scenarios"]


# --- command line ------------------------------------------------------------------------------------

def register(subparsers) -> None:
    p = subparsers.add_parser("loadtest", help="SIPp load against the real Asterisk and controller (loopback)")
    p.add_argument("--scenario", default="unique",
                   help="unique, dtmf, speech, hangup_greeting, hangup_menu, hangup_transfer, hangup_connected, mixed")
    p.add_argument("--rates", default="10", help="comma-separated calls/s, one step each (e.g. 10,20,50)")
    p.add_argument("--ramp", default=None,
                   help="start:stop:step calls/s, e.g. 20:200:20; stops at the first failing step or latency bound")
    p.add_argument("--step-seconds", type=float, default=10.0)
    p.add_argument("--max-latency-ms", type=float, default=1000.0,
                   help="ramp bound on INVITE->200 p99 (unique codes include the lab's 0.3 s ring)")
    p.add_argument("--max-decision-ms", type=float, default=None,
                   help="optional ramp bound on the unique decision p99 (always reported)")
    p.add_argument("--max-total-seconds", type=float, default=900.0)
    p.add_argument("--max-total-calls", type=int, default=60_000)
    p.add_argument("--menu-wait", type=float, default=1.2, help="seconds a DTMF caller listens before pressing")
    p.add_argument("--speech-engine", default=None, help="controller speech engine for the speech scenario")
    p.add_argument("--name", help="results file name (loadtest/results/<name>.md/.json/.png)")
    p.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    p.add_argument("--no-plot", action="store_true")
    p.add_argument("--start-asterisk", action="store_true",
                   help="run scripts/asterisk-install.sh and asterisk-start.sh first if Asterisk is not running")
    p.set_defaults(func=_cmd)


def _cmd(args) -> int:
    if args.start_asterisk and asterisk_pid() is None:
        for script in ("asterisk-install.sh", "asterisk-start.sh"):
            proc = subprocess.run(["bash", str(REPO / "scripts" / script)], cwd=REPO, timeout=900)
            if proc.returncode != 0:
                print(f"scripts/{script} failed ({proc.returncode})", file=sys.stderr)
                return 2
    if args.ramp:
        try:
            start, stop, step = (float(x) for x in args.ramp.split(":"))
        except ValueError:
            print("--ramp wants start:stop:step, e.g. 20:200:20", file=sys.stderr)
            return 2
        rates, r = [], start
        while r <= stop + 1e-9:
            rates.append(round(r, 3))
            r += step
        ramp = True
    else:
        rates = [float(x) for x in args.rates.split(",") if x.strip()]
        ramp = False
    if not rates or any(r <= 0 or r > MAX_RATE for r in rates):
        print(f"rates must be in (0, {MAX_RATE:g}]", file=sys.stderr)
        return 2
    cfg = LoadConfig(scenario=args.scenario, rates=rates, step_s=args.step_seconds, ramp=ramp,
                     max_latency_ms=args.max_latency_ms, max_decision_ms=args.max_decision_ms,
                     max_total_s=args.max_total_seconds, max_total_calls=args.max_total_calls,
                     menu_wait_s=args.menu_wait, speech_engine=args.speech_engine, name=args.name,
                     results_dir=args.results_dir, plot=not args.no_plot)
    try:
        result = run_load(cfg, log=lambda m: print(m, flush=True))
    except RuntimeError as exc:
        print(f"loadtest: {exc}", file=sys.stderr)
        return 2
    if result.get("skipped"):
        return 0
    return 0 if all(s["ok"] for s in result["steps"]) or ramp else 1
