"""End-to-end harness: the real controller (``ivr serve``) as a subprocess beside the real
Asterisk, and SIPp callers whose records are found again by their (hashed) number."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from ivr.callrecord import CallRecord, hash_caller
from ivr.lab.sipp import CallScript, SippResult, run_sipp
from ivr.store import CallStore

REPO = Path(__file__).resolve().parent.parent
SALT = "e2e-test-salt"


def free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(host: str, port: int, timeout_s: float, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"ivr serve exited with {proc.returncode}:\n{log.read_text()}")
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"ivr serve did not listen on {host}:{port} within {timeout_s} s:\n{log.read_text()}")


@dataclass
class Controller:
    proc: subprocess.Popen
    db_path: Path
    log_path: Path
    api_url: str

    def store(self) -> CallStore:
        return CallStore(self.db_path)

    def record_of(self, caller: str, timeout_s: float = 5.0) -> CallRecord:
        """The finished record of the call made from ``caller`` (waits for the final save)."""
        wanted = hash_caller(caller, SALT)
        deadline = time.monotonic() + timeout_s
        store = self.store()
        try:
            while True:
                found = [r for r in store.query() if r.caller == wanted]
                if found and found[-1].ended_at is not None:
                    return found[-1]
                if time.monotonic() > deadline:
                    raise AssertionError(f"no finished record for caller {caller}: {found}")
                time.sleep(0.1)
        finally:
            store.close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def start_controller(workdir: Path, *, speech_engine: str = "none", plan_file: Path | None = None,
                     extra_env: dict[str, str] | None = None) -> Controller:
    workdir.mkdir(parents=True, exist_ok=True)
    api_port = free_tcp_port()
    env = {**os.environ, "IVR_DB_PATH": str(workdir / "calls.sqlite"), "IVR_SPEECH_ENGINE": speech_engine,
           "IVR_API_PORT": str(api_port), "IVR_CALLER_SALT": SALT, "IVR_ADMIN_TOKEN": "e2e-admin-token",
           **(extra_env or {})}
    if plan_file:
        env["IVR_PLAN_FILE"] = str(plan_file)
    log = workdir / "serve.log"
    proc = subprocess.Popen([sys.executable, "-m", "ivr.cli", "serve"], cwd=REPO, env=env,
                            stdout=log.open("w"), stderr=subprocess.STDOUT)
    wait_listening("127.0.0.1", 4573, 60, proc, log)
    return Controller(proc, workdir / "calls.sqlite", log, f"http://127.0.0.1:{api_port}")


def run_calls(scripts: dict[str, CallScript], workdir: Path) -> dict[str, SippResult]:
    """Run one SIPp caller per script, all at once (each on its own ports)."""
    with ThreadPoolExecutor(max_workers=len(scripts)) as pool:
        futures = {name: pool.submit(run_sipp, script, 1, 1, None, None, "127.0.0.1:5060", workdir / name)
                   for name, script in scripts.items()}
        return {name: f.result() for name, f in futures.items()}
