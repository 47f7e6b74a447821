"""Shared fixtures: the real Asterisk (chroot, scripts/asterisk-*.sh) and an AMI event log.

``asterisk`` (session): installs (idempotent, fast when already installed) and starts Asterisk.
It is skipped only when ``IVR_SKIP_ASTERISK=1``; any other failure to install or start is an
error, never a silent skip.

``ami`` (session): a panoramisk AMI connection (user ``ivr``, secret from ``IVR_AMI_SECRET`` or
``${IVR_STATE_DIR:-/var/lib/ivr14}/secrets.env``) that records every event; tests wait on it with
``ami.wait_for(...)``.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def asterisk_root() -> Path:
    return Path(os.environ.get("IVR_ASTERISK_ROOT", "/var/lib/ivr14/asterisk-root"))


def state_dir() -> Path:
    return Path(os.environ.get("IVR_STATE_DIR", "/var/lib/ivr14"))


def read_secret(name: str) -> str:
    """``name`` from the environment, else from ``secrets.env`` written by the install script."""
    if os.environ.get(name):
        return os.environ[name]
    path = state_dir() / "secrets.env"
    value = ""
    if path.is_file():
        for line in path.read_text().splitlines():
            key, sep, val = line.partition("=")
            if sep and key.strip() == name:
                value = val.strip()
    if not value:
        raise RuntimeError(f"{name} is neither in the environment nor in {path}")
    return value


@dataclass
class AsteriskLab:
    root: Path
    started_here: bool

    @property
    def log_path(self) -> Path:
        return self.root / "var/log/asterisk/console.log"

    def log_offset(self) -> int:
        """A mark for ``log_since``: the log's current size."""
        try:
            return self.log_path.stat().st_size
        except FileNotFoundError:
            return 0

    def log_since(self, offset: int = 0) -> str:
        """The Asterisk console log from ``offset`` (from ``log_offset()``) on."""
        with open(self.log_path, "rb") as fh:
            fh.seek(offset)
            return fh.read().decode("utf-8", errors="replace")

    def cli(self, command: str, timeout: float = 15) -> str:
        """Run an Asterisk CLI command (``asterisk -rx``) and return its output."""
        proc = subprocess.run(
            ["chroot", str(self.root), "/usr/sbin/asterisk", "-rx", command],
            capture_output=True, text=True, timeout=timeout,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"asterisk -rx {command!r} failed: {proc.stderr or proc.stdout}")
        return proc.stdout


def asterisk_log(offset: int = 0) -> str:
    """The Asterisk console log (helper usable without the fixture object)."""
    return AsteriskLab(asterisk_root(), False).log_since(offset)


def _run_script(name: str, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(REPO / "scripts" / name)], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout)


def _asterisk_running(root: Path) -> bool:
    try:
        pid = int((root / "run/asterisk/asterisk.pid").read_text().strip())
        return Path(f"/proc/{pid}/comm").read_text().strip() == "asterisk"
    except (OSError, ValueError):
        return False


@pytest.fixture(scope="session")
def asterisk() -> AsteriskLab:
    if os.environ.get("IVR_SKIP_ASTERISK") == "1":
        pytest.skip("IVR_SKIP_ASTERISK=1: real-Asterisk tests disabled")
    root = asterisk_root()
    inst = _run_script("asterisk-install.sh", timeout=900)
    if inst.returncode != 0:
        pytest.fail(f"scripts/asterisk-install.sh failed ({inst.returncode}):\n{inst.stdout}\n{inst.stderr}",
                    pytrace=False)
    was_running = _asterisk_running(root)
    start = _run_script("asterisk-start.sh", timeout=120)
    if start.returncode != 0:
        pytest.fail(f"scripts/asterisk-start.sh failed ({start.returncode}):\n{start.stdout}\n{start.stderr}",
                    pytrace=False)
    lab = AsteriskLab(root, started_here=not was_running)
    if was_running:  # pick up the configs the install just rendered
        lab.cli("core reload")
        time.sleep(0.5)
    yield lab
    if lab.started_here and os.environ.get("IVR_KEEP_ASTERISK") != "1":
        _run_script("asterisk-stop.sh", timeout=60)


@dataclass
class AmiEventLog:
    """AMI events collected in a background thread (panoramisk runs on its own event loop)."""

    events: list[dict[str, str]] = field(default_factory=list)
    cond: threading.Condition = field(default_factory=threading.Condition)
    loop: asyncio.AbstractEventLoop | None = None
    manager: object = None

    def mark(self) -> int:
        with self.cond:
            return len(self.events)

    def _record(self, _manager, event) -> None:
        with self.cond:
            self.events.append({str(k): str(v) for k, v in dict(event).items()})
            self.cond.notify_all()

    def find(self, since: int = 0, **match: str) -> list[dict[str, str]]:
        with self.cond:
            return [e for e in self.events[since:] if all(e.get(k) == v for k, v in match.items())]

    def wait_for(self, since: int = 0, timeout: float = 10, count: int = 1,
                 where: Callable[[dict[str, str]], bool] | None = None, **match: str) -> list[dict[str, str]]:
        """Wait until ``count`` events after mark ``since`` have all the ``match`` headers."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                found = [e for e in self.events[since:]
                         if all(e.get(k) == v for k, v in match.items()) and (where is None or where(e))]
                if len(found) >= count:
                    return found
                left = deadline - time.monotonic()
                if left <= 0:
                    recent = [(e.get("Event"), e.get("UserEvent")) for e in self.events[since:]][-30:]
                    raise AssertionError(f"no {count} AMI event(s) {match} within {timeout} s; "
                                         f"got {len(found)}; recent: {recent}")
                self.cond.wait(left)


@pytest.fixture(scope="session")
def ami(asterisk) -> AmiEventLog:
    from panoramisk import Manager

    log = AmiEventLog()
    ready = threading.Event()
    error: list[BaseException] = []
    loop = asyncio.new_event_loop()
    log.loop = loop

    async def connect() -> None:
        manager = Manager(loop=loop, host="127.0.0.1", port=5038, username="ivr",
                          secret=read_secret("IVR_AMI_SECRET"), ping_delay=3600)
        manager.register_event("*", log._record)
        log.manager = manager
        await manager.connect()
        for _ in range(100):
            if manager.authenticated:
                return
            await asyncio.sleep(0.05)
        raise RuntimeError("AMI login as 'ivr' failed (wrong secret?)")

    def run() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(connect())
        except BaseException as exc:  # reported to the test thread
            error.append(exc)
            ready.set()
            return
        ready.set()
        loop.run_forever()

    thread = threading.Thread(target=run, name="ami-events", daemon=True)
    thread.start()
    if not ready.wait(15) or error:
        pytest.fail(f"AMI connection failed: {error[0] if error else 'timeout'}", pytrace=False)
    yield log
    loop.call_soon_threadsafe(log.manager.close)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)


# --- PostgreSQL (Debian's package; scripts/postgres-start.sh) ------------------------------------------


@dataclass
class PostgresServer:
    """A throwaway cluster for the test session; ``schema_url()`` gives each test tables of its own."""

    dir: Path
    port: int
    url: str
    schemas: int = 0

    def schema_url(self) -> str:
        import psycopg

        self.schemas += 1
        name = f"t{os.getpid()}_{self.schemas}"
        with psycopg.connect(self.url, autocommit=True) as db:
            db.execute(f"CREATE SCHEMA {name}")
        return f"{self.url}?options=-csearch_path%3D{name}"

    def stop(self, mode: str = "fast") -> None:
        """``mode`` as pg_ctl's: fast (clean) or immediate (like a crash: recovery at the next start)."""
        bin_dir = postgres_bin()
        user = ["runuser", "-u", "postgres", "--"] if os.getuid() == 0 else []
        subprocess.run([*user, str(bin_dir / "pg_ctl"), "-D", str(self.dir / "data"), "-m", mode, "-w", "stop"],
                       check=True, capture_output=True, timeout=60)

    def start(self) -> None:
        subprocess.run(["bash", str(REPO / "scripts/postgres-start.sh"), str(self.dir), str(self.port)],
                       check=True, capture_output=True, timeout=120)


def postgres_bin() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))
    return found[-1].parent if found else None


@pytest.fixture(scope="session")
def postgres() -> PostgresServer:
    """The real PostgreSQL server, started for the session in a directory of its own; skipped only when
    the server binaries are not installed (Debian package postgresql, which .ci/run installs)."""
    if postgres_bin() is None:
        pytest.skip("PostgreSQL server binaries not installed (/usr/lib/postgresql/*/bin): "
                    "apt-get install postgresql")
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    directory = Path(f"/tmp/ivr14-pg-test-{os.getpid()}")
    proc = subprocess.run(["bash", str(REPO / "scripts/postgres-start.sh"), str(directory), str(port)],
                          capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise RuntimeError(f"scripts/postgres-start.sh failed: {proc.stderr}")
    server = PostgresServer(directory, port, proc.stdout.strip().splitlines()[-1])
    yield server
    subprocess.run(["bash", str(REPO / "scripts/postgres-stop.sh"), str(directory)], capture_output=True,
                   timeout=60)


@pytest.fixture
def pg_url(postgres) -> str:
    """A ``postgresql://`` URL whose tables (in a schema of this test's own) start empty."""
    return postgres.schema_url()
