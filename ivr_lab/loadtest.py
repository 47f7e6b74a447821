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

import csv
import json
import math
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ivr_lab.controller import REPO, Controller, start_controller
from ivr_lab.sipp import Audio, CallScript, Dtmf, HangUp, Pause, SippResult, run_sipp

RESULTS_DIR = REPO / "loadtest" / "results"
SALT = "loadtest-salt"
PLAN_OVERRIDES = """
# loadtest: Kapelle's line rings and rings, so a caller can hang up during the transfer
[municipalities.GM0678]
destination = "Local/noanswer@ivr14-lab"
"""
MAX_CALLS_PER_STEP = 20_000
MAX_RATE = 400.0


def asterisk_root() -> Path:
    return Path(os.environ.get("IVR_ASTERISK_ROOT", "/var/lib/ivr14/asterisk-root"))


def asterisk_pid() -> int | None:
    try:
        pid = int((asterisk_root() / "run/asterisk/asterisk.pid").read_text().strip())
        if Path(f"/proc/{pid}/comm").read_text().strip() == "asterisk":
            return pid
    except (OSError, ValueError):
        pass
    return None


# --- scenarios -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Scenario:
    name: str
    number: str
    steps: tuple
    speech: bool = False  # needs the controller's speech path
    expect_outcome: str | None = "routed"  # the outcome every call of it should have
    expect_phase: str | None = None  # hangup phase expected
    expect_municipality: str | None = None  # CBS code the call must be decided for
    share: float = 1.0  # in ``mixed``: share of the offered rate


def _menu_digit(area_code: str, cbs_code: str) -> str:
    from ivr.core.plan import load_base_plan

    return str([m.cbs_code for m in load_base_plan().candidates(area_code)].index(cbs_code) + 1)


def scenarios(menu_wait_s: float = 1.2, speech_pcap: Path | None = None,
              speech_target: tuple[str, str] = ("0113", "GM0664")) -> dict[str, Scenario]:
    goes = _menu_digit("0113", "GM0664")
    kapelle = _menu_digit("0113", "GM0678")
    wait = Pause(int(menu_wait_s * 1000))
    out = {
        "unique": Scenario("unique", "140111", (), expect_municipality="GM1676"),
        "dtmf": Scenario("dtmf", "140113", (wait, Dtmf(goes)), expect_municipality="GM0664"),
        "hangup_greeting": Scenario("hangup_greeting", "140113", (Pause(300), HangUp()),
                                    expect_outcome="caller_hangup", expect_phase="menu", share=0.1),
        "hangup_menu": Scenario("hangup_menu", "140113", (Pause(2500), HangUp()),
                                expect_outcome="caller_hangup", expect_phase="menu", share=0.1),
        "hangup_transfer": Scenario("hangup_transfer", "140113", (wait, Dtmf(kapelle), Pause(2000), HangUp()),
                                    expect_outcome="caller_hangup", expect_phase="transfer", share=0.1),
        "hangup_connected": Scenario("hangup_connected", "140111", (Pause(700), HangUp()), share=0.1),
    }
    # speech: the caller hears the welcome, says the name, then waits for the transfer (the pcap is
    # padded with silence; SIPp sends no RTP after it, see docs/asterisk.md)
    out["speech"] = Scenario("speech", "14" + speech_target[0],
                             (Pause(300), Audio(str(speech_pcap or "utterance.pcap"))),
                             speech=True, expect_municipality=speech_target[1])
    return out


def default_speech_utterance() -> tuple[Path, str, str] | None:
    """(WAV, area code, expected CBS code) of a bare-name utterance from the dev set."""
    manifest = REPO / "tests/data/dev/manifest.csv"
    if not manifest.is_file():
        return None
    with manifest.open(newline="", encoding="utf-8") as fh:
        rows = [r for r in csv.DictReader(fh) if r.get("kind") == "bare"]
    if not rows:
        return None
    row = next((r for r in rows if r.get("area_code") == "0113"), rows[0])
    return REPO / "tests/data/dev" / row["path"], row["area_code"], row["expected_cbs_code"]


MIX = ("unique", "dtmf", "hangup_greeting", "hangup_menu", "hangup_transfer", "hangup_connected")
MIX_SHARES = {"unique": 0.3, "dtmf": 0.3, "hangup_greeting": 0.1, "hangup_menu": 0.1, "hangup_transfer": 0.1,
              "hangup_connected": 0.1}


# --- resources -------------------------------------------------------------------------------------

_CLK = os.sysconf("SC_CLK_TCK")


def _proc_cpu_s(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _CLK  # utime + stime
    except (OSError, IndexError, ValueError):
        return None


def _proc_rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        pass
    return None


def _machine_busy() -> tuple[float, float]:
    parts = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    values = [int(v) for v in parts]
    idle = values[3] + values[4]
    return float(sum(values) - idle), float(sum(values))


def _sipp_children() -> list[int]:
    me = str(os.getpid())
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        comm = stat[stat.find("(") + 1:stat.rfind(")")]
        if comm == "sipp" and stat.rsplit(")", 1)[1].split()[1] == me:
            out.append(int(entry.name))
    return out


_GAUGE = re.compile(r'^ivr_calls_in_(?:progress|phase\{phase="(\w+)"\})\s+([0-9.eE+-]+)$')


def parse_ivr_gauges(text: str) -> dict[str, float]:
    """{'in_progress': n, 'menu': n, 'speech': n, ...} from the controller's /metrics."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        m = _GAUGE.match(line)
        if m:
            out[m.group(1) or "in_progress"] = float(m.group(2))
    return out


class Sampler(threading.Thread):
    """Every ``interval`` s: CPU% and RSS of the given pids, machine CPU, controller gauges."""

    def __init__(self, pids: dict[str, int | None], controller: Controller | None, interval: float = 0.5):
        super().__init__(daemon=True, name="loadtest-sampler")
        self.pids = {k: v for k, v in pids.items() if v}
        self.controller = controller
        self.interval = interval
        self.samples: list[dict[str, Any]] = []
        self._halt = threading.Event()
        self._lock = threading.Lock()

    def run(self) -> None:
        last = {name: (_proc_cpu_s(pid), time.monotonic()) for name, pid in self.pids.items()}
        sipp_last: dict[int, float] = {}
        last_machine = _machine_busy()
        next_scrape = 0.0
        gauges: dict[str, float] = {}
        while not self._halt.wait(self.interval):
            now = time.monotonic()
            row: dict[str, Any] = {"t": time.time()}
            for name, pid in self.pids.items():
                cpu = _proc_cpu_s(pid)
                prev_cpu, prev_t = last[name]
                if cpu is not None and prev_cpu is not None and now > prev_t:
                    row[f"{name}_cpu_pct"] = 100.0 * (cpu - prev_cpu) / (now - prev_t)
                row[f"{name}_rss_mb"] = _proc_rss_mb(pid)
                last[name] = (cpu, now)
            # SIPp processes (children of this process): their CPU, summed
            sipp_now = {pid: cpu for pid in _sipp_children() if (cpu := _proc_cpu_s(pid)) is not None}
            if sipp_last:
                used = sum(cpu - sipp_last.get(pid, cpu) for pid, cpu in sipp_now.items())
                row["sipp_cpu_pct"] = 100.0 * used / self.interval
            sipp_last = sipp_now
            busy, total = _machine_busy()
            if total > last_machine[1]:
                row["machine_cpu_pct"] = 100.0 * (os.cpu_count() or 1) * (busy - last_machine[0]) / (
                    total - last_machine[1])
            last_machine = (busy, total)
            if self.controller is not None and now >= next_scrape:
                next_scrape = now + 1.0
                try:
                    gauges = parse_ivr_gauges(self.controller.metrics_text())
                except Exception:
                    gauges = {}
                row.update({f"ivr_{k}": v for k, v in gauges.items()})
            with self._lock:
                self.samples.append(row)

    def stop(self) -> None:
        self._halt.set()
        self.join(5)

    def window(self, since: float, until: float) -> list[dict[str, Any]]:
        with self._lock:
            return [s for s in self.samples if since <= s["t"] <= until]


# --- one step ------------------------------------------------------------------------------------

def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, max(0, math.ceil(q * len(values)) - 1))]


def _stats_rows(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with open(path, newline="", encoding="latin-1") as fh:
        rows = [r for r in csv.reader(fh, delimiter=";") if r]
    if len(rows) < 2:
        return []
    return [{h: v for h, v in zip(rows[0], r) if h} for r in rows[1:]]


def _rtt_ms(workdir: Path) -> list[float]:
    """Per-call INVITE->200 times from SIPp's -trace_rtt file(s)."""
    out: list[float] = []
    for path in workdir.glob("*_rtt.csv"):
        with open(path, newline="", encoding="latin-1") as fh:
            for row in csv.reader(fh, delimiter=";"):
                if len(row) >= 2:
                    try:
                        out.append(float(row[1]))
                    except ValueError:
                        continue
    return out


def sipp_summary(result: SippResult) -> dict[str, Any]:
    rows = _stats_rows(result.workdir / "stats.csv")
    last = rows[-1] if rows else {}
    failures = {}
    for key, value in last.items():
        if key.startswith("Failed") and key.endswith("(C)") and key != "FailedCall(C)":
            try:
                n = int(value)
            except ValueError:
                continue
            if n:
                failures[key[len("Failed"):-3]] = n

    def num(row: dict[str, str], key: str) -> int:
        try:
            return int(row.get(key, "0") or 0)
        except ValueError:
            return 0

    rtt = _rtt_ms(result.workdir)
    return {
        "successful": result.successful, "failed": result.failed, "returncode": result.returncode,
        "failures": failures,
        "retransmissions": num(last, "Retransmissions(C)"),
        "max_concurrent": max((num(r, "CurrentCall") for r in rows), default=0),
        "invite_200_ms": {"n": len(rtt), "p50": _pct(rtt, 0.5), "p95": _pct(rtt, 0.95), "p99": _pct(rtt, 0.99),
                          "max": max(rtt) if rtt else None},
        "elapsed_s": round(result.elapsed_s, 2),
        "errors_tail": result.errors[-600:] if result.failed else "",
    }


def _settled_records(db: Path, since: float, until: float, expected: int, wait_s: float = 10.0) -> list:
    """The step's records once the controller has finished them (it saves after the BYE)."""
    deadline = time.monotonic() + wait_s
    while True:
        records = records_between(db, since, until)
        done = sum(1 for r in records if r.outcome)
        if done >= expected or time.monotonic() > deadline:
            return records
        time.sleep(0.5)


def records_between(db: Path, since: float, until: float) -> list:
    from ivr.adapters.store import CallStore

    store = CallStore(db)
    try:
        return store.query(since=since, until=until)
    finally:
        store.close()


def record_summary(records: list, by_scenario: dict[str, Scenario]) -> dict[str, Any]:
    unique_ms = [r.decision_ms for r in records if r.mode == "direct" and r.decision_ms is not None]
    ivr_s = [r.ivr_seconds for r in records if r.ivr_seconds is not None]
    setup = [r.transfer_setup_ms for r in records if r.transfer_setup_ms is not None]
    speech_ms = [a.decision_ms for r in records for a in r.attempts if a.decision_ms is not None]
    recog_ms = [a.recogniser_ms for r in records for a in r.attempts if a.recogniser_ms is not None]
    outcomes: dict[str, int] = {}
    errors: dict[str, int] = {}
    for r in records:
        outcomes[r.outcome or "unfinished"] = outcomes.get(r.outcome or "unfinished", 0) + 1
        if r.error:
            key = r.error.split(":")[0][:60]
            errors[key] = errors.get(key, 0) + 1
    return {
        "records": len(records), "outcomes": outcomes, "errors": errors,
        "unique_decision_ms": {"n": len(unique_ms), "p50": _r(_pct(unique_ms, 0.5)), "p95": _r(_pct(unique_ms, 0.95)),
                               "p99": _r(_pct(unique_ms, 0.99)), "max": _r(max(unique_ms) if unique_ms else None)},
        "speech_decision_ms": {"n": len(speech_ms), "p50": _r(_pct(speech_ms, 0.5)), "p95": _r(_pct(speech_ms, 0.95)),
                               "p99": _r(_pct(speech_ms, 0.99))},
        "recogniser_ms": {"p50": _r(_pct(recog_ms, 0.5)), "p99": _r(_pct(recog_ms, 0.99))},
        "ivr_seconds": {"p50": _r(_pct(ivr_s, 0.5)), "p95": _r(_pct(ivr_s, 0.95)), "p99": _r(_pct(ivr_s, 0.99))},
        "transfer_setup_ms": {"p50": _r(_pct(setup, 0.5)), "p99": _r(_pct(setup, 0.99))},
    }


def _r(x: float | None, nd: int = 3) -> float | None:
    return None if x is None else round(x, nd)


def resource_summary(samples: list[dict[str, Any]]) -> dict[str, Any]:
    def col(key: str) -> list[float]:
        return [s[key] for s in samples if s.get(key) is not None]

    out: dict[str, Any] = {"samples": len(samples)}
    for name in ("controller", "asterisk", "sipp", "machine"):
        cpu = col(f"{name}_cpu_pct")
        out[f"{name}_cpu_pct_avg"] = _r(sum(cpu) / len(cpu), 1) if cpu else None
        out[f"{name}_cpu_pct_max"] = _r(max(cpu), 1) if cpu else None
        rss = col(f"{name}_rss_mb")
        if rss:
            out[f"{name}_rss_mb_max"] = _r(max(rss), 1)
    for key in ("ivr_in_progress", "ivr_menu", "ivr_speech", "ivr_transfer", "ivr_connected", "ivr_greeting"):
        vals = col(key)
        if vals:
            out[f"{key}_max"] = max(vals)
    return out


@dataclass
class StepResult:
    scenario: str
    rate: float
    duration_s: float
    offered: int
    successful: int
    failed: int
    completed_cps: float
    failures: dict[str, int]
    sipp: dict[str, Any]
    records: dict[str, Any]
    resources: dict[str, Any]
    started_at: float
    ended_at: float
    unexpected: dict[str, int] = field(default_factory=dict)  # records whose outcome/phase was not the scenario's

    @property
    def ok(self) -> bool:
        return self.failed == 0 and not self.unexpected and self.successful == self.offered


def run_step(ctl: Controller, sampler: Sampler, scen_list: list[tuple[Scenario, float]], duration_s: float,
             workdir: Path, *, timeout_s: float = 120.0) -> StepResult:
    """Offer each (scenario, rate) for ``duration_s`` seconds in parallel SIPp processes."""
    from ivr.core.callrecord import hash_caller

    jobs = []
    owner: dict[str, Scenario] = {}  # hashed caller number -> scenario: every call is checked
    for idx, (scen, rate) in enumerate(scen_list):
        calls = max(1, int(round(rate * duration_s)))
        if calls > MAX_CALLS_PER_STEP or rate > MAX_RATE:
            raise ValueError(f"step too large: {calls} calls at {rate} cps (bounds {MAX_CALLS_PER_STEP}, {MAX_RATE})")
        prefix = f"07{idx}"
        script = CallScript(scen.number, caller=prefix + "[call_number]", steps=list(scen.steps),
                            bye_timeout_ms=30000, answer_timeout_ms=15000)
        for n in range(1, calls + 1):
            owner[hash_caller(f"{prefix}{n}", SALT)] = scen
        jobs.append((scen, rate, calls, script))
    t0 = time.time()
    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        futures = [pool.submit(run_sipp, script, calls, rate, None, duration_s + timeout_s, "127.0.0.1:5060",
                               workdir / f"{scen.name}-{rate:g}", ["-trace_rtt", "-rtt_freq", "1"])
                   for scen, rate, calls, script in jobs]
        results = [f.result() for f in futures]
    t1 = time.time()
    records = _settled_records(ctl.db_path, t0 - 1, t1 + 1, expected=len(owner))
    sipps = [sipp_summary(r) for r in results]
    failures: dict[str, int] = {}
    for s in sipps:
        for k, v in s["failures"].items():
            failures[k] = failures.get(k, 0) + v
    offered = sum(c for _, _, c, _ in jobs)
    successful = sum(s["successful"] for s in sipps)
    failed = sum(s["failed"] for s in sipps)
    unexpected: dict[str, int] = {}
    seen: dict[str, int] = {}
    for r in records:
        scen = owner.get(r.caller)
        if scen is None:
            continue  # not ours (another tester's call in the same time window)
        seen[scen.name] = seen.get(scen.name, 0) + 1
        bad = (scen.expect_outcome and r.outcome != scen.expect_outcome) or (
            scen.expect_phase and r.hangup_phase != scen.expect_phase) or (
            scen.expect_municipality and r.municipality != scen.expect_municipality)
        if bad:
            key = f"{scen.name}: {r.outcome}/{r.hangup_phase or '-'}/{r.municipality or '-'}"
            if r.error:
                key += f" ({r.error[:40]})"
            unexpected[key] = unexpected.get(key, 0) + 1
    for scen, _, calls, _ in jobs:
        if seen.get(scen.name, 0) < calls:
            unexpected[f"{scen.name}: missing record"] = calls - seen.get(scen.name, 0)
    records = [r for r in records if r.caller in owner]
    rtts = [s["invite_200_ms"] for s in sipps]
    all_rtt: list[float] = []
    for r in results:
        all_rtt += _rtt_ms(r.workdir)
    combined_sipp = {
        "processes": sipps,
        "max_concurrent": sum(s["max_concurrent"] for s in sipps),
        "invite_200_ms": {"n": len(all_rtt), "p50": _r(_pct(all_rtt, 0.5)), "p95": _r(_pct(all_rtt, 0.95)),
                          "p99": _r(_pct(all_rtt, 0.99)), "max": _r(max(all_rtt) if all_rtt else None)},
        "retransmissions": sum(s["retransmissions"] for s in sipps),
    }
    del rtts
    return StepResult(
        scenario="+".join(s.name for s, _, _, _ in jobs), rate=sum(r for _, r, _, _ in jobs), duration_s=duration_s,
        offered=offered, successful=successful, failed=failed,
        completed_cps=round(successful / duration_s, 2), failures=failures, sipp=combined_sipp,
        records=record_summary(records, {}), resources=resource_summary(sampler.window(t0, t1)),
        started_at=t0, ended_at=t1, unexpected=unexpected)


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
    engine = cfg.speech_engine or (os.environ.get("IVR_SPEECH_ENGINE", "templates") if speech else "none")
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
    ctl = start_controller(workdir / "controller", salt=SALT, speech_engine=engine, plan_overrides=PLAN_OVERRIDES)
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


def _f(x, nd: int = 1) -> str:
    return "-" if x is None else f"{x:.{nd}f}"


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


# --- output ------------------------------------------------------------------------------------------

def write_plot(result: dict[str, Any], path: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    steps = result["steps"]
    x = [s["rate"] for s in steps]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    ax = axes[0]
    ax.plot(x, x, ":", color="grey", label="offered")
    ax.plot(x, [s["completed_cps"] for s in steps], "o-", label="completed")
    ax.plot(x, [s["failed"] / s["duration_s"] for s in steps], "x-", color="red", label="failed")
    ax2 = ax.twinx()
    ax2.plot(x, [s["sipp"]["max_concurrent"] for s in steps], "s--", color="green", label="concurrent (SIPp)")
    ax2.set_ylabel("concurrent calls")
    ax.set_xlabel("offered calls/s")
    ax.set_ylabel("calls/s")
    ax.legend(loc="upper left")
    ax2.legend(loc="lower right")
    ax.set_title("throughput")
    ax = axes[1]
    for q in ("p50", "p95", "p99"):
        ax.plot(x, [s["sipp"]["invite_200_ms"][q] or 0 for s in steps], "o-", label=f"INVITE->200 {q}")
    dec = [s["records"]["unique_decision_ms"]["p99"] for s in steps]
    if any(d is not None for d in dec):
        ax.plot(x, [d or 0 for d in dec], "k^-", label="decision p99 (controller)")
    ax.set_yscale("log")
    ax.set_xlabel("offered calls/s")
    ax.set_ylabel("ms")
    ax.legend()
    ax.set_title("latency")
    ax = axes[2]
    for key, label in (("controller_cpu_pct_avg", "controller CPU avg"), ("asterisk_cpu_pct_avg", "Asterisk CPU avg"),
                       ("machine_cpu_pct_avg", "machine CPU avg")):
        ax.plot(x, [s["resources"].get(key) or 0 for s in steps], "o-", label=label)
    ax.set_ylabel("% of one core")
    ax.set_xlabel("offered calls/s")
    ax3 = ax.twinx()
    ax3.plot(x, [s["resources"].get("asterisk_rss_mb_max") or 0 for s in steps], "s--", color="purple",
             label="Asterisk RSS MB")
    ax3.plot(x, [s["resources"].get("controller_rss_mb_max") or 0 for s in steps], "d--", color="brown",
             label="controller RSS MB")
    ax3.set_ylabel("MB")
    ax.legend(loc="upper left")
    ax3.legend(loc="lower right")
    ax.set_title("resources")
    fig.suptitle(f"ivr loadtest {result['name']} — {result['machine'].get('cores')} cores, "
                 f"{result['machine'].get('cpu_model', '')}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def render_markdown(result: dict[str, Any], plot: Path | None) -> str:
    m = result["machine"]
    cfg = result["config"]
    lines = [f"# Load test `{result['name']}`", "",
             f"Scenario **{cfg['scenario']}**, steps of {cfg['step_s']:g} s, "
             f"{'ramp (stops at the first failing step)' if cfg['ramp'] else 'fixed rates'}; speech engine "
             f"`{result['speech_engine']}`. Loopback only (127.0.0.1).", "",
             "## Machine", "",
             f"- {m.get('cores')} cores, {m.get('cpu_model', '?')}, {m.get('ram_gb', '?')} GB RAM; "
             f"kernel {m.get('kernel')}; Python {m.get('python')}",
             f"- {m.get('asterisk')}; {m.get('sipp')}; git {m.get('git_commit', '?')}",
             f"- load average before the run: {' '.join(m.get('load_avg_before', []))} "
             "(the machine is shared: other work competes for the same cores)", ""]
    if result.get("skipped"):
        lines += ["## Skipped", "", result["skipped"], ""]
    if result["steps"]:
        lines += ["## Steps", "",
                  "| offered cps | calls | ok | failed (reasons) | completed cps | max concurrent (SIPp / IVR / menu) "
                  "| INVITE→200 p50/p95/p99 ms | unique decision p50/p95/p99 ms | speech decision p50/p99 ms "
                  "| IVR s p50 | controller CPU avg/max %, "
                  "RSS MB | Asterisk CPU avg/max %, RSS MB | SIPp CPU avg % | machine CPU avg % (all processes) |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for s in result["steps"]:
            r = s["resources"]
            rtt = s["sipp"]["invite_200_ms"]
            dec = s["records"]["unique_decision_ms"]
            sp = s["records"].get("speech_decision_ms", {})
            fails = f"{s['failed']}" + (f" {s['failures']}" if s["failures"] else "") + (
                f" unexpected {s['unexpected']}" if s["unexpected"] else "")
            lines.append(
                f"| {s['rate']:g} | {s['offered']} | {s['successful']} | {fails} | {s['completed_cps']:g} | "
                f"{s['sipp']['max_concurrent']} / {_f(r.get('ivr_in_progress_max'), 0)} / "
                f"{_f(r.get('ivr_menu_max'), 0)} | "
                f"{_f(rtt['p50'])} / {_f(rtt['p95'])} / {_f(rtt['p99'])} | "
                f"{_f(dec['p50'], 2)} / {_f(dec['p95'], 2)} / {_f(dec['p99'], 2)} | "
                f"{_f(sp.get('p50'), 0)} / {_f(sp.get('p99'), 0)} | "
                f"{_f(s['records']['ivr_seconds']['p50'], 2)} | "
                f"{_f(r.get('controller_cpu_pct_avg'), 0)}/{_f(r.get('controller_cpu_pct_max'), 0)}, "
                f"{_f(r.get('controller_rss_mb_max'), 0)} | "
                f"{_f(r.get('asterisk_cpu_pct_avg'), 0)}/{_f(r.get('asterisk_cpu_pct_max'), 0)}, "
                f"{_f(r.get('asterisk_rss_mb_max'), 0)} | {_f(r.get('sipp_cpu_pct_avg'), 0)} | "
                f"{_f(r.get('machine_cpu_pct_avg'), 0)} |")
        lines.append("")
    if result.get("stopped"):
        lines += [f"Stopped: {result['stopped']}", ""]
    if result.get("targets"):
        lines += ["## Targets", ""]
        for key, t in result["targets"].items():
            rest = ", ".join(f"{k} {v}" for k, v in t.items() if k not in ("target", "met"))
            lines.append(f"- {t['target']}: **{'met' if t['met'] else 'not met'}** ({rest})")
        lines.append("")
    if plot:
        lines += [f"![{result['name']}]({plot.name})", ""]
    lines += ["Columns: *concurrent* is SIPp's maximum of calls in progress and the controller's "
              "`ivr_calls_in_progress` / `ivr_calls_in_phase{phase=\"menu\"}` gauges (scraped each second); "
              "*unique decision* is the record's `decision_ms` (call start to Dial: the flow, the first "
              "record save and "
              "one AGI round trip) of unique-code calls; *speech decision* is each speech attempt's `decision_ms` "
              "(end of speech to decision, recogniser included); "
              "CPU is % of one core from /proc (utime+stime), sampled every 0.5 s; *machine* is all processes "
              "of the host (out of 100% x cores), so machine minus controller, Asterisk and SIPp is other work "
              "sharing the machine during the run.", ""]
    return "\n".join(lines)


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
