"""A load run: the machine, the controller, the ramp of steps and the targets."""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ivr.config import load_settings
from ivr_lab.controller import REPO, Controller, start_controller

from ivr_lab.loadtest.output import _f, render_markdown, write_plot
from ivr_lab.loadtest.resources import Sampler
from ivr_lab.loadtest.scenarios import (
    MIX,
    MIX_SHARES,
    PLAN_OVERRIDES,
    RESULTS_DIR,
    SALT,
    asterisk_pid,
    asterisk_root,
    default_speech_utterance,
    scenarios,
)
from ivr_lab.loadtest.step import StepResult, run_step

# --- the machine ------------------------------------------------------------------------------------

def describe_machine() -> dict[str, Any]:
    info: dict[str, Any] = {"cores": os.cpu_count(), "python": platform.python_version(),
                            "kernel": platform.release(), "platform": platform.platform()}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu_model"] = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                info["ram_gb"] = round(int(line.split()[1]) / 1024 / 1024, 1)
        info["load_avg_before"] = Path("/proc/loadavg").read_text().split()[:3]
    except OSError:
        pass
    try:
        out = subprocess.run(["chroot", str(asterisk_root()), "/usr/sbin/asterisk", "-rx", "core show version"],
                             capture_output=True, text=True, timeout=10).stdout.strip()
        info["asterisk"] = out.splitlines()[0] if out else "unknown"
    except Exception as exc:
        info["asterisk"] = f"unknown ({exc})"
    try:
        out = subprocess.run(["sipp", "-v"], capture_output=True, text=True, timeout=5)
        m = re.search(r"SIPp v[\S]+", out.stdout + out.stderr)
        info["sipp"] = m.group(0) if m else "unknown"
    except Exception:
        info["sipp"] = "unknown"
    try:
        info["git_commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                                            text=True, timeout=5).stdout.strip()
    except Exception:
        pass
    return info


# --- the run ---------------------------------------------------------------------------------------

@dataclass
class LoadConfig:
    scenario: str = "unique"
    rates: list[float] = field(default_factory=lambda: [10.0])
    step_s: float = 10.0
    ramp: bool = False  # stop at the first failing step
    max_latency_ms: float = 1000.0  # ramp bound: INVITE->200 p99
    max_decision_ms: float | None = None  # optional ramp bound on the unique decision p99 (reported always)
    max_total_s: float = 900.0
    max_total_calls: int = 60_000
    menu_wait_s: float = 1.2
    speech_engine: str | None = None  # default: none, or the configured engine for ``speech``
    name: str | None = None
    results_dir: Path = RESULTS_DIR
    plot: bool = True
    cooldown_s: float = 3.0


def run_load(cfg: LoadConfig, log=print) -> dict[str, Any]:
    if not shutil.which("sipp"):
        raise RuntimeError("sipp not found (apt-get install sip-tester)")
    a_pid = asterisk_pid()
    if a_pid is None:
        raise RuntimeError(f"Asterisk is not running (no live pid in {asterisk_root()}/run/asterisk/asterisk.pid): "
                           "run scripts/asterisk-install.sh and scripts/asterisk-start.sh, or pass --start-asterisk")
    workdir = Path(tempfile.mkdtemp(prefix="ivr14-loadtest-"))
    speech_pcap = workdir / "utterance.pcap"
    utterance = default_speech_utterance()
    all_scen = scenarios(cfg.menu_wait_s, speech_pcap, utterance[1:] if utterance else ("0113", "GM0664"))
    if cfg.scenario == "mixed":
        mix = [(all_scen[n], MIX_SHARES[n]) for n in MIX]
    elif cfg.scenario in all_scen:
        mix = [(all_scen[cfg.scenario], 1.0)]
    else:
        raise ValueError(f"unknown scenario {cfg.scenario!r}: one of {', '.join([*all_scen, 'mixed'])}")
    speech = any(s.speech for s, _ in mix)
    engine = cfg.speech_engine or (load_settings().speech_engine if speech else "none")
    machine = describe_machine()
    result: dict[str, Any] = {"format": "ivr-loadtest/1", "config": _cfg_dict(cfg), "machine": machine,
                              "speech_engine": engine, "steps": [], "skipped": None, "workdir": str(workdir)}
    if speech:
        if utterance is None:
            result["skipped"] = "no bare-name utterance in tests/data/dev/manifest.csv"
            return _finish(cfg, result, log)
        from ivr_lab.pcap import wav_to_pcap

        wav = utterance[0]
        wav_to_pcap(wav, speech_pcap)
        result["speech_utterance"] = str(wav.relative_to(REPO))
    # the scenarios script the plain dialogue, and every step's callers repeat the last step's
    # numbers: a suggestion ("Belt u weer voor …?") would take their menu digit as its answer
    ctl = start_controller(workdir / "controller", salt=SALT, speech_engine=engine, plan_overrides=PLAN_OVERRIDES,
                           extra_env={"IVR_SUGGEST_DAYS": "0"})
    sampler = Sampler({"controller": ctl.pid, "asterisk": a_pid}, ctl)
    sampler.start()
    t_start = time.monotonic()
    total_calls = 0
    try:
        if speech:
            ready = _wait_ready(ctl, 120)
            rec = ready.get("checks", {}).get("recogniser", {})
            if not rec.get("ok") or engine == "none":
                result["skipped"] = (f"speech scenario skipped: the controller has no working speech path "
                                     f"(engine {engine!r}: {rec.get('reason') or ready.get('error') or 'not ready'})")
                log(result["skipped"])
                return _finish(cfg, result, log)
        for rate in cfg.rates:
            step_calls = int(rate * cfg.step_s)
            over_time = time.monotonic() - t_start + cfg.step_s > cfg.max_total_s
            if over_time or total_calls + step_calls > cfg.max_total_calls:
                log(f"stopping before {rate:g} cps: time/call budget of the run reached")
                result["stopped"] = "budget"
                break
            scen_rates = [(s, round(rate * share, 3)) for s, share in mix]
            log(f"step {rate:g} cps x {cfg.step_s:g} s ({cfg.scenario}) ...")
            step = run_step(ctl, sampler, scen_rates, cfg.step_s, workdir / f"step-{rate:g}")
            total_calls += step.offered
            d = asdict(step)
            d["ok"] = step.ok
            result["steps"].append(d)
            log("  " + _step_line(step))
            if ctl.proc.poll() is not None:
                result["stopped"] = f"controller exited with {ctl.proc.returncode}"
                break
            if cfg.ramp:
                why = _ramp_stop(step, cfg)
                if why:
                    result["stopped"] = why
                    log(f"ramp stops: {why}")
                    break
            time.sleep(cfg.cooldown_s)
    finally:
        sampler.stop()
        ctl.stop()
    result["controller_log_tail"] = ctl.log_path.read_text(errors="replace")[-2000:] if ctl.log_path.exists() else ""
    return _finish(cfg, result, log)


def _wait_ready(ctl: Controller, timeout_s: float) -> dict:
    deadline = time.monotonic() + timeout_s
    ready = ctl.ready()
    while not ready.get("checks", {}).get("recogniser", {}).get("ok") and time.monotonic() < deadline:
        if ctl.proc.poll() is not None:
            break
        time.sleep(2)
        ready = ctl.ready()
    return ready


def _ramp_stop(step: StepResult, cfg: LoadConfig) -> str | None:
    if step.failed:
        return f"{step.failed} failed call(s) at {step.rate:g} cps: {step.failures}"
    if step.unexpected:
        return f"unexpected outcomes at {step.rate:g} cps: {step.unexpected}"
    p99 = step.sipp["invite_200_ms"]["p99"]
    if p99 is not None and p99 > cfg.max_latency_ms:
        return f"INVITE->200 p99 {p99:.0f} ms > {cfg.max_latency_ms:g} ms at {step.rate:g} cps"
    dec = step.records["unique_decision_ms"]["p99"]
    if dec is not None and cfg.max_decision_ms is not None and dec > cfg.max_decision_ms:
        return f"unique decision p99 {dec:.2f} ms > {cfg.max_decision_ms:g} ms at {step.rate:g} cps"
    return None


def _step_line(s: StepResult) -> str:
    rtt = s.sipp["invite_200_ms"]
    dec = s.records["unique_decision_ms"]
    res = s.resources
    return (f"{s.successful}/{s.offered} ok, {s.failed} failed {s.failures or ''} "
            f"{'unexpected ' + str(s.unexpected) if s.unexpected else ''}| conc {s.sipp['max_concurrent']} "
            f"(IVR {res.get('ivr_in_progress_max', '?')}, menu {res.get('ivr_menu_max', '?')}) | "
            f"INVITE->200 p50/p99 {_f(rtt['p50'])}/{_f(rtt['p99'])} ms | decision p50/p99 {_f(dec['p50'], 2)}/"
            f"{_f(dec['p99'], 2)} ms | ctl CPU {_f(res.get('controller_cpu_pct_avg'), 0)}% "
            f"ast CPU {_f(res.get('asterisk_cpu_pct_avg'), 0)}%")




def _cfg_dict(cfg: LoadConfig) -> dict[str, Any]:
    d = asdict(cfg)
    d["results_dir"] = str(cfg.results_dir)
    return d


def _finish(cfg: LoadConfig, result: dict[str, Any], log) -> dict[str, Any]:
    name = cfg.name or f"{cfg.scenario}-{'ramp' if cfg.ramp else 'steps'}"
    result["name"] = name
    result["targets"] = evaluate_targets(result)
    if cfg.results_dir:
        cfg.results_dir.mkdir(parents=True, exist_ok=True)
        (cfg.results_dir / f"{name}.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
        plot = None
        if cfg.plot and result["steps"]:
            plot = write_plot(result, cfg.results_dir / f"{name}.png")
        (cfg.results_dir / f"{name}.md").write_text(render_markdown(result, plot))
        log(f"results: {cfg.results_dir / name}.md / .json" + (f" / {plot.name}" if plot else ""))
    return result


def evaluate_targets(result: dict[str, Any]) -> dict[str, Any]:
    steps = result.get("steps", [])
    scen = result["config"]["scenario"]
    out: dict[str, Any] = {}
    if scen == "unique":
        good = [s for s in steps if s["ok"]]
        best = max((s["rate"] for s in good), default=0)
        out["unique_100cps_zero_failures"] = {"target": ">= 100 calls/s with zero failures",
                                              "best_clean_rate": best, "met": best >= 100}
        decs = [s["records"]["unique_decision_ms"]["p99"] for s in good if s["records"]["unique_decision_ms"]["p99"]]
        worst = max(decs) if decs else None
        within = [s["rate"] for s in good if s["records"]["unique_decision_ms"]["p99"] is not None
                  and s["records"]["unique_decision_ms"]["p99"] <= 5.0]
        out["unique_decision_p99_5ms"] = {"target": "decision p99 <= 5 ms inside the controller",
                                          "highest_rate_within_5ms": max(within, default=None),
                                          "worst_p99_ms_at_clean_steps": worst,
                                          "met_at_100cps": any(s["rate"] >= 100 for s in good if s["rate"] in within),
                                          "met": worst is not None and worst <= 5.0}
    if scen == "dtmf":
        conc = max((s["resources"].get("ivr_menu_max", 0) or 0 for s in steps if s["ok"]), default=0)
        out["dtmf_200_concurrent"] = {"target": ">= 200 concurrent calls in the IVR (menu phase) on the DTMF path",
                                      "max_in_menu_at_clean_steps": conc, "met": conc >= 200}
    return out
