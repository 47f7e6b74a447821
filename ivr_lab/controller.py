"""The real controller (``ivr serve``) as a subprocess beside the lab Asterisk, for the
end-to-end tests and the load harness: one way to start it, wait for it, read its
records and stop it."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ivr.core.callrecord import CallRecord, hash_caller
from ivr.adapters.store import CallStore

REPO = Path(__file__).resolve().parents[1]
AGI_PORT = 4573  # the dialplan's agi://127.0.0.1:4573/call


def port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]



def wait_speech_ready(log_path: Path, running: Callable[[], bool], timeout_s: float = 400.0) -> None:
    """Until the controller logging to ``log_path`` has loaded its recogniser (calls before that get
    the DTMF menu); RuntimeError with the log's end when it stopped (``running()`` false) or after
    ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        text = log_path.read_text(errors="replace") if log_path.exists() else ""
        if "speech recognition ready" in text:
            return
        if not running():
            raise RuntimeError(f"the controller stopped before its recogniser was ready:\n{text[-2000:]}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"no recogniser after {timeout_s:.0f} s:\n{text[-2000:]}")
        time.sleep(0.2)

@dataclass
class Controller:
    proc: subprocess.Popen
    workdir: Path
    db_path: Path
    api_url: str
    log_path: Path
    salt: str

    @property
    def pid(self) -> int:
        return self.proc.pid

    def ready(self) -> dict:
        try:
            with urllib.request.urlopen(self.api_url + "/readyz", timeout=3) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as exc:  # 503 when not ready still has the body
            return json.loads(exc.read() or b"{}")
        except Exception as exc:
            return {"ready": False, "error": str(exc)}

    def metrics_text(self) -> str:
        with urllib.request.urlopen(self.api_url + "/metrics", timeout=2) as r:
            return r.read().decode()

    def record_of(self, caller: str, timeout_s: float = 5.0) -> CallRecord:
        """The finished record of the call made from ``caller`` (waits for the final save)."""
        wanted = hash_caller(caller, self.salt)
        deadline = time.monotonic() + timeout_s
        store = CallStore(self.db_path)
        try:
            while True:
                found = [r for r in store.iter_query() if r.caller == wanted]
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
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def start_controller(workdir: Path, *, salt: str, speech_engine: str = "none", plan_overrides: str = "",
                     extra_env: dict[str, str] | None = None, wait_port_s: float = 60.0) -> Controller:
    """``ivr serve`` with a fresh database in ``workdir``; waits for a controller that still
    holds port 4573 (another test or load run) to go away rather than clash with it."""
    deadline = time.monotonic() + wait_port_s
    while not port_free(AGI_PORT):
        if time.monotonic() > deadline:
            raise RuntimeError(f"port {AGI_PORT} stays busy: another controller is running")
        time.sleep(0.5)
    workdir.mkdir(parents=True, exist_ok=True)
    api_port = free_port()
    db = workdir / "calls.sqlite"
    env = {**os.environ, "IVR_DB_PATH": str(db), "IVR_SPEECH_ENGINE": speech_engine, "IVR_API_PORT": str(api_port),
           "IVR_CALLER_SALT": salt, "IVR_STATE_DIR": os.environ.get("IVR_STATE_DIR", "/var/lib/ivr14"),
           **(extra_env or {})}
    if plan_overrides:
        plan_file = workdir / "plan.toml"
        plan_file.write_text(plan_overrides, encoding="utf-8")
        env["IVR_PLAN_FILE"] = str(plan_file)
    log = workdir / "serve.log"
    proc = subprocess.Popen([sys.executable, "-m", "ivr.cli", "serve"], cwd=REPO, env=env,
                            stdout=log.open("w"), stderr=subprocess.STDOUT)
    ctl = Controller(proc, workdir, db, f"http://127.0.0.1:{api_port}", log, salt)
    deadline = time.monotonic() + 90
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"ivr serve exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with socket.create_connection(("127.0.0.1", AGI_PORT), timeout=0.2):
                pass
            with socket.create_connection(("127.0.0.1", api_port), timeout=0.2):
                return ctl
        except OSError:
            if time.monotonic() > deadline:
                ctl.stop()
                raise RuntimeError(f"ivr serve did not listen within 90 s:\n{log.read_text()[-3000:]}")
            time.sleep(0.1)
