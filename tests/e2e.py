"""End-to-end helpers: the real controller beside the real Asterisk (``ivr_lab.controller``)
and SIPp callers run side by side, each found again by its (hashed) caller number."""

from __future__ import annotations

import signal
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ivr_lab.controller import REPO, Controller, start_controller, wait_speech_ready  # noqa: F401 - re-exported for the tests
from ivr_lab.sipp import CallScript, SippResult, run_sipp

SALT = "e2e-test-salt"


def stop_server(proc: subprocess.Popen) -> str:
    """SIGTERM a server started by a test (killed after 15 s); its output."""
    proc.send_signal(signal.SIGTERM)
    try:
        out, _ = proc.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    return out


def run_calls(scripts: dict[str, CallScript], workdir: Path, at_once: int | None = None) -> dict[str, SippResult]:
    """Run one SIPp caller per script, ``at_once`` at a time (default: all; each on its own ports)."""
    with ThreadPoolExecutor(max_workers=at_once or len(scripts)) as pool:
        futures = {name: pool.submit(run_sipp, script, 1, 1, None, None, "127.0.0.1:5060", workdir / name)
                   for name, script in scripts.items()}
        return {name: f.result() for name, f in futures.items()}


def wait_until_speech_ready(controller: Controller, timeout_s: float = 400.0) -> None:
    """Until the controller's recogniser has warmed up (calls before it get the DTMF menu)."""
    wait_speech_ready(controller.log_path, lambda: controller.proc.poll() is None, timeout_s)


def answered_since(ami, mark) -> dict[str, str]:
    """Call id -> CBS code of every municipality (lab extension) that answered since ``mark``."""
    return {e.get("Call"): e.get("CBS") for e in ami.find(mark, Event="UserEvent", UserEvent="MunicipalityAnswered")}


def spoken_calls(scripts: dict[str, CallScript], workdir: Path, ami, **controller_options):
    """One caller at a time (each utterance is heard the same way every run) through a real
    controller with the configured recogniser: (SIPp results, each script's call record, who
    answered each call)."""
    from ivr.config import load_settings

    controller_options.setdefault("speech_engine", load_settings().speech_engine)
    controller = start_controller(workdir / "controller", salt=SALT, **controller_options)
    try:
        wait_until_speech_ready(controller)
        mark = ami.mark()
        results = run_calls(scripts, workdir / "sipp", at_once=1)
        records = {name: controller.record_of(script.caller) for name, script in scripts.items()}
    finally:
        controller.stop()
    return results, records, answered_since(ami, mark)
