"""SIPp callers for the lab: run one caller's script N times and read the stats.

    script = CallScript("140113", caller="0612345678",
                        steps=[Pause(1500), Dtmf("1"), Audio("utterance.pcap")])
    result = run_sipp(script, calls=1)
    assert result.ok, result.describe()

The caller's script and the SIPp scenario XML it becomes: :mod:`ivr_lab.sipp_scenario`.

Every run uses its own free SIP and media ports, so runs can go in parallel.
"""

from __future__ import annotations

import csv
import os
import random
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from ivr_lab.sipp_scenario import Audio, CallScript, Dtmf, HangUp, Pause, WaitBye, render_scenario

__all__ = ["run_sipp", "SippResult", "free_port_block", "DEFAULT_TARGET",
           # the caller's script, for the callers of run_sipp
           "CallScript", "Pause", "Dtmf", "Audio", "HangUp", "WaitBye"]

DEFAULT_TARGET = "127.0.0.1:5060"


@dataclass
class SippResult:
    returncode: int
    successful: int
    failed: int
    stats: dict[str, str]
    command: list[str]
    scenario_path: Path
    workdir: Path
    stdout: str
    stderr: str
    errors: str
    elapsed_s: float

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and self.failed == 0 and self.successful > 0

    def stat_float(self, name: str, default: float = 0.0) -> float:
        """A numeric stats column, e.g. ``"ResponseTime1(C)"`` (SIPp's HH:MM:SS:usec parsed to s)."""
        raw = self.stats.get(name, "")
        try:
            return float(raw)
        except ValueError:
            pass
        parts = raw.split(":")
        try:
            if len(parts) >= 4:
                h, m, s, us = (float(p) for p in parts[:4])
                return h * 3600 + m * 60 + s + us / 1e6
        except ValueError:
            pass
        return default

    def describe(self) -> str:
        return (
            f"sipp exit {self.returncode}: {self.successful} ok, {self.failed} failed in {self.elapsed_s:.1f} s\n"
            f"command: {' '.join(self.command)}\n"
            f"stderr: {self.stderr[-1500:]}\nerrors: {self.errors[-3000:]}"
        )


def _udp_free(ip: str, port: int) -> bool:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.bind((ip, port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def free_port_block(ip: str, size: int = 6, lo: int = 30000, hi: int = 59000) -> int:
    """An even port p with p..p+size-1 free on UDP (SIPp: SIP port, media port + RTCP + video)."""
    rng = random.Random(os.getpid() ^ time.monotonic_ns())
    for _ in range(200):
        base = rng.randrange(lo, hi, 2)
        if all(_udp_free(ip, base + k) for k in range(size)):
            return base
    raise RuntimeError(f"no free UDP port block on {ip}")


def _parse_stats(path: Path) -> dict[str, str]:
    if not path.is_file():
        return {}
    with open(path, newline="", encoding="latin-1") as fh:
        rows = [r for r in csv.reader(fh, delimiter=";") if r]
    if len(rows) < 2:
        return {}
    header, last = rows[0], rows[-1]
    return {h: v for h, v in zip(header, last) if h}


def run_sipp(
    script: CallScript,
    calls: int = 1,
    rate: float = 1,
    concurrent: int | None = None,
    timeout_s: float | None = None,
    target: str = DEFAULT_TARGET,
    workdir: Path | None = None,
    extra_args: list[str] | None = None,
) -> SippResult:
    """Run ``calls`` copies of ``script`` at ``rate`` calls/s with at most ``concurrent`` at once.

    ``timeout_s`` (default: generous from the script) bounds the whole run; SIPp is killed 15 s
    after it if it has not ended. Files (scenario, stats CSV, error log) stay in ``workdir``.
    """
    sipp = shutil.which("sipp")
    if sipp is None:
        raise RuntimeError("sipp not found (apt-get install sip-tester)")
    if timeout_s is None:
        per_call = (script.answer_timeout_ms + script.bye_timeout_ms) / 1000 + sum(
            (s.ms / 1000 if isinstance(s, Pause) else 1.0) for s in script.steps
        )
        timeout_s = max(30.0, calls / max(rate, 0.001) + per_call + 10)
    workdir = Path(workdir or tempfile.mkdtemp(prefix="ivr14-sipp-"))
    workdir.mkdir(parents=True, exist_ok=True)
    scenario = workdir / "scenario.xml"
    scenario.write_text(render_scenario(script, media_dir=workdir), encoding="latin-1")
    stats = workdir / "stats.csv"
    errors = workdir / "errors.log"
    base = free_port_block(script.local_ip)
    cmd = [
        sipp, target,
        "-sf", str(scenario),
        "-s", script.number,
        "-i", script.local_ip, "-mi", script.local_ip,
        "-p", str(base), "-mp", str(base + 2),
        "-nostdin",
        "-m", str(calls),
        "-r", f"{rate:g}",
        "-l", str(concurrent if concurrent is not None else max(calls, 1)),
        "-timeout", f"{int(timeout_s)}s", "-timeout_error",
        "-trace_stat", "-stf", str(stats), "-fd", "1",
        "-trace_err", "-error_file", str(errors),
        *(extra_args or []),
    ]
    t0 = time.monotonic()
    try:
        proc = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True,
                              errors="replace", timeout=timeout_s + 15)
        rc, out, err = proc.returncode, proc.stdout, proc.stderr
    except subprocess.TimeoutExpired as exc:
        rc = -9
        out = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        err = (exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else (exc.stderr or ""))
        err += f"\nsipp killed after {timeout_s + 15:.0f} s"
    elapsed = time.monotonic() - t0
    st = _parse_stats(stats)

    def count(name: str) -> int:
        try:
            return int(st.get(name, "0") or 0)
        except ValueError:
            return 0

    return SippResult(
        returncode=rc,
        successful=count("SuccessfulCall(C)"),
        failed=count("FailedCall(C)"),
        stats=st,
        command=cmd,
        scenario_path=scenario,
        workdir=workdir,
        stdout=out,
        stderr=err,
        errors=errors.read_text(errors="replace") if errors.is_file() else "",
        elapsed_s=elapsed,
    )
