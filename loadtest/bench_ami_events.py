"""What the controller pays for AMI events it does not use: its CPU per call, side by side
with the AMI user reading every event class (``read = all``) and only user events
(``read = user``, the shipped ``dialplan/manager.conf``).

    .venv/bin/python loadtest/bench_ami_events.py [--rate 40] [--seconds 15]

Needs the project's Asterisk running (``scripts/asterisk-start.sh``) and port 4573 free; it
starts ``ivr serve`` itself (temporary SQLite file). For each read class it sets that class
in the running Asterisk's ``manager.conf`` (then ``manager reload``) and restores the file at
the end. Two kinds of call, each a SIPp run at ``--rate`` calls/s: calls that never touch the
controller (``[lab-selftest]`` extension 100 from 127.0.0.3: answer, a prompt, hang up) and
its own calls (14 0111: a unique area code, straight through). Printed: calls, the
controller's CPU seconds (utime + stime from /proc) and its CPU milliseconds per call.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ROOT = Path(os.environ.get("IVR_ASTERISK_ROOT", "/var/lib/ivr14/asterisk-root"))
MANAGER = ROOT / "etc/asterisk/manager.conf"
CLK = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK  # utime + stime


def asterisk(command: str) -> str:
    return subprocess.run(["chroot", str(ROOT), "/usr/sbin/asterisk", "-rx", command],
                          capture_output=True, text=True, timeout=20).stdout


def set_read_class(text: str, read: str) -> None:
    MANAGER.write_text(re.sub(r"(?m)^read\s*=.*$", f"read = {read}", text))
    asterisk("manager reload")


def sipp(number: str, local_ip: str, rate: int, calls: int) -> int:
    """A SIPp run of ``calls`` calls at ``rate``/s; returns how many succeeded."""
    out = subprocess.run(
        ["sipp", "127.0.0.1:5060", "-sn", "uac", "-s", number, "-i", local_ip, "-p", "0", "-r", str(rate),
         "-m", str(calls), "-l", str(rate * 4), "-d", "500", "-timeout", str(calls // rate + 30), "-trace_stat",
         "-stf", "/dev/null", "-nostdin"],
        capture_output=True, text=True, timeout=calls // rate + 60)
    found = re.findall(r"Successful call\s*\|\s*\d+\s*\|\s*(\d+)", out.stdout)
    return int(found[-1]) if found else 0


def settle(pid: int, timeout_s: float = 180.0) -> None:
    """Wait until the controller is idle (< 2 % of a core over 2 s): start-up work is not a call's."""
    time.sleep(3)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        c0 = cpu_s(pid)
        time.sleep(2)
        if cpu_s(pid) - c0 < 0.04:
            return
    raise SystemExit("the controller did not settle")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rate", type=int, default=40)
    ap.add_argument("--seconds", type=int, default=15)
    args = ap.parse_args()
    if "Asterisk" not in asterisk("core show version"):
        raise SystemExit("Asterisk is not running: scripts/asterisk-start.sh")
    if shutil.which("sipp") is None:
        raise SystemExit("sipp is not installed (Debian: sip-tester)")
    original = MANAGER.read_text()
    calls = args.rate * args.seconds
    work = Path(tempfile.mkdtemp(prefix="ivr-ami-bench-"))
    env = {**os.environ, "IVR_DB_PATH": str(work / "calls.sqlite"), "IVR_STATE_DIR": os.environ.get("IVR_STATE_DIR", "/var/lib/ivr14"),
           "IVR_SPEECH_ENGINE": "templates", "IVR_API_PORT": "9188"}
    print(f"controller CPU per call, {calls} calls per run at {args.rate}/s")
    try:
        for read in ("all", "user"):
            set_read_class(original, read)
            server = subprocess.Popen([sys.executable, "-m", "ivr.cli", "serve"], cwd=REPO, env=env,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                settle(server.pid)  # loaded (the engine warms up in the background), AMI logged in
                for label, number, ip in (("dialplan only ([lab-selftest] 100)", "100", "127.0.0.3"),
                                          ("the controller's own (14 0111)", "140111", "127.0.0.1")):
                    c0 = cpu_s(server.pid)
                    ok = sipp(number, ip, args.rate, calls)
                    time.sleep(2)
                    used = cpu_s(server.pid) - c0
                    print(f"  read = {read:<4}  {label:<36} {ok:>5} calls ok  controller CPU {used:6.2f} s"
                          f"  = {1000 * used / max(ok, 1):5.2f} ms a call")
            finally:
                server.send_signal(signal.SIGTERM)
                server.wait(30)
    finally:
        MANAGER.write_text(original)
        asterisk("manager reload")
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
