"""The lab cluster: Kamailio in front of two Asterisk nodes, a controller per node, one PostgreSQL.

    python -m ivr_lab.cluster up|down|status        (scripts/cluster.sh calls this)

Both Asterisk nodes run from the one chroot that scripts/asterisk-install.sh builds, each with its own
config folder (``asterisk -C /etc/asterisk-nN/asterisk.conf``), run, log, spool and astdb folders and
ports, so they never touch the default Asterisk (5060/5038/8088) that the other tests use. A node's
configs are the default's rendered configs (dialplan/, secrets, lab municipalities) with its ports
swapped in and ``systemname`` set, which prefixes every UNIQUEID - the controller's call id - with the
node's name: ids never collide in the shared database, and each record says which node took the call.

A node's FastAGI goes to its own controller; when that controller cannot be reached *before it took
the call* (channel not yet answered), the dialplan asks the other node's controller instead. Chosen
over letting Kamailio mark the node down because Kamailio's OPTIONS probe reaches Asterisk, not the
controller: a node whose controller died still answers OPTIONS, so Kamailio would keep sending it
calls. A controller that dies mid-call leaves the channel answered: that caller gets the existing
fallback (apology, operator) and the call is recorded as lost by the other side (issue 13 item 5).

The controllers recognise speech with IVR_SPEECH_ENGINE (default: fusion, as a single node); ``up``
returns once both have loaded it.

Prometheus (Debian's ``prometheus`` package, its own service kept off: it would take 9090) runs as the
cluster's own process on 127.0.0.1:9290 with a config rendered into the cluster dir: both controllers'
and both Asterisks' /metrics every second, each target labelled ``node``. The jobs are named as in
docker/prometheus.yml, so the Grafana dashboard reads either. Without the binary the cluster runs
unmonitored (a warning, not an error). Environment: IVR_CLUSTER_DIR (default /var/lib/ivr14-cluster; not below the 0700 state dir, PostgreSQL runs as user postgres), IVR_ASTERISK_ROOT, IVR_STATE_DIR.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from ivr_lab.controller import wait_speech_ready

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SPEECH_ENGINE = "fusion"  # as scripts/run.sh: each controller loads it (~20 s, ~0.7 GB) after start
KAMAILIO_CFG = REPO / "dialplan/kamailio/kamailio.cfg"
CONTROLLER_JOB, ASTERISK_JOB = "ivr14-controller", "asterisk"  # as docker/prometheus.yml: one dashboard for both


@dataclass(frozen=True)
class Node:
    name: str  # also Asterisk's systemname: the prefix of its UNIQUEIDs (the call ids)
    sip_port: int
    ami_port: int
    http_port: int
    rtp: tuple[int, int]
    agi_port: int  # its controller's FastAGI
    api_port: int  # its controller's HTTP API (/metrics, /readyz)
    audiosocket_port: int

    @property
    def etc(self) -> str:  # inside the chroot
        return f"/etc/asterisk-{self.name}"


NODES = (
    Node("n1", 5161, 5139, 8189, (12000, 14999), 4601, 9201, 9301),
    Node("n2", 5162, 5140, 8190, (15000, 17999), 4602, 9202, 9302),
)


@dataclass
class Cluster:
    dir: Path = field(default_factory=lambda: Path(os.environ.get("IVR_CLUSTER_DIR", "/var/lib/ivr14-cluster")))
    root: Path = field(default_factory=lambda: Path(os.environ.get("IVR_ASTERISK_ROOT", "/var/lib/ivr14/asterisk-root")))
    nodes: tuple[Node, ...] = NODES
    sip_port: int = 5090  # Kamailio: where callers send their INVITEs
    pg_port: int = 55433
    prom_port: int = 9290  # the cluster's Prometheus (the Debian package's own service would take 9090)
    scrape_interval_s: float = 1.0  # short: a lab run lasts seconds
    extra_env: dict[str, str] = field(default_factory=dict)  # for the controllers (tests: a known salt)

    @property
    def sip_target(self) -> str:
        return f"127.0.0.1:{self.sip_port}"

    @property
    def run(self) -> Path:
        return self.dir / "run"

    @property
    def pg_dir(self) -> Path:
        return self.dir / "postgres"

    @property
    def db_url(self) -> str:
        return f"postgresql://ivr@127.0.0.1:{self.pg_port}/ivr"

    def node(self, name: str) -> Node:
        return next(n for n in self.nodes if n.name == name)

    def peer(self, node: Node) -> Node:
        return next(n for n in self.nodes if n is not node)

    # -- Asterisk nodes -----------------------------------------------------------------------------

    def ast_pidfile(self, node: Node) -> Path:
        return self.root / f"run/asterisk-{node.name}/asterisk.pid"

    def ast_console(self, node: Node) -> Path:
        return self.root / f"var/log/asterisk-{node.name}/console.log"

    def ast_cli(self, node: Node, command: str, timeout: float = 15) -> str:
        proc = subprocess.run(["chroot", str(self.root), "/usr/sbin/asterisk", "-C", f"{node.etc}/asterisk.conf",
                               "-rx", command], capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            raise RuntimeError(f"asterisk {node.name} -rx {command!r}: {proc.stderr or proc.stdout}")
        return proc.stdout

    def render_node(self, node: Node) -> None:
        """The node's config folder: the default's rendered configs with the node's ports."""
        src, dst = self.root / "etc/asterisk", self.root / node.etc.lstrip("/")
        if not (src / "municipalities.conf").is_file():
            raise RuntimeError(f"{src} is not rendered: run scripts/asterisk-install.sh first")
        if dst.exists():
            shutil.rmtree(dst)
        shutil.copytree(src, dst)
        peer = self.peer(node)

        def edit(name: str, *pairs: tuple[str, str]) -> None:
            path = dst / name
            text = path.read_text()
            for old, new in pairs:
                if old not in text:
                    raise RuntimeError(f"{name}: {old!r} not found (dialplan/ changed?)")
                text = text.replace(old, new)
            path.write_text(text)

        edit("asterisk.conf",
             ("[directories](!)", "[directories]"),
             ("astetcdir => /etc/asterisk", f"astetcdir => {node.etc}"),
             ("astdbdir => /var/lib/asterisk", f"astdbdir => /var/lib/asterisk-{node.name}"),
             ("astspooldir => /var/spool/asterisk", f"astspooldir => /var/spool/asterisk-{node.name}"),
             ("astrundir => /var/run/asterisk", f"astrundir => /run/asterisk-{node.name}"),
             ("astlogdir => /var/log/asterisk", f"astlogdir => /var/log/asterisk-{node.name}"),
             ("[options]", f"[options]\nsystemname = {node.name}"))
        edit("pjsip.conf", ("bind = 127.0.0.1:5060", f"bind = 127.0.0.1:{node.sip_port}"))
        edit("manager.conf", ("port = 5038", f"port = {node.ami_port}"))
        edit("http.conf", ("bindport = 8088", f"bindport = {node.http_port}"))
        edit("rtp.conf", ("rtpstart = 20000", f"rtpstart = {node.rtp[0]}"), ("rtpend = 29999", f"rtpend = {node.rtp[1]}"))
        # own controller first; the peer's only when the own one never took the call (channel not answered)
        # a controller that stopped mid-call is reported to the other node's (agi://…/lost)
        edit("extensions.conf",
             (" same => n,AGI(agi://127.0.0.1:4573/call)\n",
              f" same => n,AGI(agi://127.0.0.1:{node.agi_port}/call)\n"
              ' same => n,GotoIf($["${AGISTATUS}" != "FAILURE" | "${CHANNEL(state)}" = "Up"]?called)\n'
              f" same => n,NoOp(controller of {node.name} unreachable: the one of {peer.name})\n"
              f" same => n,AGI(agi://127.0.0.1:{peer.agi_port}/call)\n"),
             ("agi://127.0.0.1:4573/lost", f"agi://127.0.0.1:{peer.agi_port}/lost"))
        for sub in ("var/lib/asterisk/keys", f"run/asterisk-{node.name}", f"var/log/asterisk-{node.name}", f"var/lib/asterisk-{node.name}",
                    f"var/spool/asterisk-{node.name}/recording"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)

    def ast_pid(self, node: Node) -> int | None:
        return _live_pid(self.ast_pidfile(node), "asterisk")

    def start_asterisk(self, node: Node) -> None:
        if self.ast_pid(node):
            return
        busy = [p for p in (node.sip_port, node.ami_port, node.http_port) if not _port_free(p, udp=p == node.sip_port)]
        if busy:
            raise RuntimeError(f"node {node.name}: ports {busy} already in use")
        self.render_node(node)
        run = self.root / f"run/asterisk-{node.name}"
        for f in ("asterisk.ctl", "asterisk.pid"):
            (run / f).unlink(missing_ok=True)
        console = self.ast_console(node)
        with console.open("w") as out:
            subprocess.Popen(["chroot", str(self.root), "/usr/sbin/asterisk", "-C", f"{node.etc}/asterisk.conf",
                              "-f", "-n"], stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                             start_new_session=True)
        subprocess.run(["timeout", "30", "chroot", str(self.root), "/usr/sbin/asterisk", "-C",
                        f"{node.etc}/asterisk.conf", "-rx", "core waitfullybooted"], capture_output=True, check=False)
        deadline = time.monotonic() + 30
        while not self.ast_pid(node):
            if time.monotonic() > deadline:
                raise RuntimeError(f"Asterisk {node.name} did not start:\n{console.read_text()[-2000:]}")
            time.sleep(0.1)
        bad = re.findall(r".*(?:Address already in use|Unable to bind|Failed to bind).*", console.read_text())
        if bad:
            raise RuntimeError(f"Asterisk {node.name} could not bind: {bad}")

    def stop_asterisk(self, node: Node) -> None:
        pid = self.ast_pid(node)
        if not pid:
            return
        try:
            self.ast_cli(node, "core stop now", timeout=10)
        except Exception:
            os.kill(pid, signal.SIGTERM)
        _wait_gone(pid, 5)

    # -- controllers --------------------------------------------------------------------------------

    def ctl_pidfile(self, node: Node) -> Path:
        return self.run / f"controller-{node.name}.pid"

    def ctl_pid(self, node: Node) -> int | None:
        return _live_pid(self.ctl_pidfile(node), None)

    def controller_env(self, node: Node) -> dict[str, str]:
        return {**os.environ, "IVR_DB_URL": self.db_url, "IVR_AGI_PORT": str(node.agi_port),
                "IVR_AMI_PORT": str(node.ami_port), "IVR_API_PORT": str(node.api_port),
                "IVR_AUDIOSOCKET_PORT": str(node.audiosocket_port),
                "IVR_SPEECH_ENGINE": os.environ.get("IVR_SPEECH_ENGINE", DEFAULT_SPEECH_ENGINE), **self.extra_env}

    def start_controller(self, node: Node) -> None:
        if self.ctl_pid(node):
            return
        for p in (node.agi_port, node.api_port):
            if not _port_free(p):
                raise RuntimeError(f"controller {node.name}: port {p} already in use")
        log = self.dir / f"logs/controller-{node.name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        proc = subprocess.Popen([sys.executable, "-m", "ivr.cli", "serve"], cwd=REPO, env=self.controller_env(node),
                                stdin=subprocess.DEVNULL, stdout=log.open("w"), stderr=subprocess.STDOUT,
                                start_new_session=True)
        self.ctl_pidfile(node).write_text(str(proc.pid))
        deadline = time.monotonic() + 90
        while not (_listening(node.agi_port) and _listening(node.api_port)):
            if proc.poll() is not None:
                raise RuntimeError(f"controller {node.name} exited:\n{log.read_text()[-2000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"controller {node.name} did not listen within 90 s")
            time.sleep(0.1)

    def wait_speech_ready(self, node: Node, timeout_s: float = 400) -> None:
        """Until the node's controller has loaded its recogniser (calls before that get the DTMF menu);
        at once when speech is off."""
        if self.controller_env(node)["IVR_SPEECH_ENGINE"] != "none":
            wait_speech_ready(self.dir / f"logs/controller-{node.name}.log", lambda: bool(self.ctl_pid(node)), timeout_s)

    def stop_controller(self, node: Node) -> None:
        pid = self.ctl_pid(node)
        if pid:
            os.kill(pid, signal.SIGTERM)
            _wait_gone(pid, 15)
        self.ctl_pidfile(node).unlink(missing_ok=True)

    # -- Kamailio -----------------------------------------------------------------------------------

    @property
    def kam_pidfile(self) -> Path:
        return self.run / "kamailio.pid"

    def kam_pid(self) -> int | None:
        return _live_pid(self.kam_pidfile, "kamailio")

    def render_kamailio(self) -> Path:
        cfg = self.run / "kamailio.cfg"
        cfg.write_text(KAMAILIO_CFG.read_text().replace("@LISTEN@", self.sip_target).replace("@RUN@", str(self.run)))
        (self.run / "dispatcher.list").write_text(
            "# setid destination flags priority attributes\n"
            + "".join(f"1 sip:127.0.0.1:{n.sip_port} 0 0 duid={n.name}\n" for n in self.nodes))
        return cfg

    def start_kamailio(self) -> None:
        if self.kam_pid():
            return
        if shutil.which("kamailio") is None:
            raise RuntimeError("kamailio not installed (apt-get install kamailio)")
        if not _port_free(self.sip_port, udp=True):
            raise RuntimeError(f"Kamailio: UDP port {self.sip_port} already in use")
        cfg = self.render_kamailio()
        check = subprocess.run(["kamailio", "-c", "-f", str(cfg)], capture_output=True, text=True)
        if check.returncode != 0:
            raise RuntimeError(f"kamailio config check failed:\n{check.stderr[-3000:]}")
        log = self.dir / "logs/kamailio.log"
        subprocess.Popen(["kamailio", "-f", str(cfg), "-P", str(self.kam_pidfile), "-DD", "-E"],
                         stdin=subprocess.DEVNULL, stdout=log.open("w"), stderr=subprocess.STDOUT,
                         start_new_session=True)
        deadline = time.monotonic() + 15
        while not self.kam_pid() or not (self.run / "kamailio_ctl").exists():
            if time.monotonic() > deadline:
                raise RuntimeError(f"Kamailio did not start:\n{log.read_text()[-2000:]}")
            time.sleep(0.1)

    def stop_kamailio(self) -> None:
        pid = self.kam_pid()
        if pid:
            os.kill(pid, signal.SIGTERM)
            _wait_gone(pid, 10)
        self.kam_pidfile.unlink(missing_ok=True)

    def dispatcher(self) -> dict[str, str]:
        """Kamailio's view of the nodes: ``{node name: flags}``, e.g. ``AP`` (active, probing) or ``IP``
        (inactive) - from ``kamcmd dispatcher.list``."""
        out = subprocess.run(["kamcmd", "-s", f"unix:{self.run}/kamailio_ctl", "dispatcher.list"],
                             capture_output=True, text=True, timeout=5)
        if out.returncode != 0:
            raise RuntimeError(f"kamcmd dispatcher.list: {out.stderr or out.stdout}")
        view = {}
        for uri, flags in re.findall(r"URI:\s*sip:(\S+)\s+FLAGS:\s*(\S+)", out.stdout):
            port = int(uri.rsplit(":", 1)[1])
            view[next(n.name for n in self.nodes if n.sip_port == port)] = flags
        return view

    def wait_dispatcher(self, want: dict[str, str], timeout_s: float = 15) -> float:
        """Wait until each named node's flags start with the wanted letter (A active / I inactive);
        returns the seconds it took."""
        t0 = time.monotonic()
        while True:
            view = self.dispatcher()
            if all(view.get(n, "").startswith(f) for n, f in want.items()):
                return time.monotonic() - t0
            if time.monotonic() - t0 > timeout_s:
                raise RuntimeError(f"dispatcher view {view}, wanted {want}")
            time.sleep(0.05)

    # -- PostgreSQL ---------------------------------------------------------------------------------

    def start_postgres(self) -> None:
        pg = subprocess.run(["bash", str(REPO / "scripts/postgres-start.sh"), str(self.pg_dir), str(self.pg_port)],
                            capture_output=True, text=True)
        if pg.returncode != 0:
            raise RuntimeError(f"postgres-start.sh failed:\n{pg.stderr}")

    def stop_postgres(self, keep_db: bool = True) -> None:
        subprocess.run(["bash", str(REPO / "scripts/postgres-stop.sh"), str(self.pg_dir),
                        *(["--keep"] if keep_db else [])], capture_output=True, text=True)

    # -- Prometheus ---------------------------------------------------------------------------------

    @property
    def prom_url(self) -> str:
        return f"http://127.0.0.1:{self.prom_port}"

    @property
    def prom_pidfile(self) -> Path:
        return self.run / "prometheus.pid"

    def prom_pid(self) -> int | None:
        return _live_pid(self.prom_pidfile, "prometheus")

    def render_prometheus(self) -> Path:
        """The scrape config: every controller's and every Asterisk's /metrics, labelled with its node.
        JSON is YAML, so the config is written with the standard library."""
        def job(name: str, port_of) -> dict:
            return {"job_name": name, "metrics_path": "/metrics",
                    "static_configs": [{"targets": [f"127.0.0.1:{port_of(n)}"], "labels": {"node": n.name}}
                                       for n in self.nodes]}

        interval = f"{int(self.scrape_interval_s * 1000)}ms"
        config = {"global": {"scrape_interval": interval, "scrape_timeout": interval, "evaluation_interval": interval},
                  "scrape_configs": [job(CONTROLLER_JOB, lambda n: n.api_port), job(ASTERISK_JOB, lambda n: n.http_port)]}
        path = self.run / "prometheus.yml"
        path.write_text(json.dumps(config, indent=2) + "\n")
        return path

    def start_prometheus(self) -> bool:
        """Started, or already running; False (with a warning) when the binary is not installed."""
        if self.prom_pid():
            return True
        binary = shutil.which("prometheus")
        if binary is None:
            print("warning: prometheus not installed (apt-get install --no-install-recommends prometheus): "
                  "the cluster runs without its Prometheus", file=sys.stderr)
            return False
        if not _port_free(self.prom_port):
            raise RuntimeError(f"Prometheus: port {self.prom_port} already in use")
        cfg = self.render_prometheus()
        log = self.dir / "logs/prometheus.log"
        proc = subprocess.Popen([binary, f"--config.file={cfg}", f"--storage.tsdb.path={self.dir / 'prometheus'}",
                                 "--storage.tsdb.retention.time=2d", f"--web.listen-address=127.0.0.1:{self.prom_port}"],
                                cwd=self.dir, stdin=subprocess.DEVNULL, stdout=log.open("w"), stderr=subprocess.STDOUT,
                                start_new_session=True)
        self.prom_pidfile.write_text(str(proc.pid))
        deadline = time.monotonic() + 30
        while not self._prom_ready():
            if proc.poll() is not None:
                raise RuntimeError(f"Prometheus exited:\n{log.read_text()[-2000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError("Prometheus not ready within 30 s")
            time.sleep(0.1)
        return True

    def _prom_ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.prom_url}/-/ready", timeout=1) as r:
                return r.status == 200
        except OSError:
            return False

    def stop_prometheus(self) -> None:
        pid = self.prom_pid()
        if pid:
            os.kill(pid, signal.SIGTERM)
            _wait_gone(pid, 10)
        self.prom_pidfile.unlink(missing_ok=True)

    def prom_query(self, expr: str) -> list[dict]:
        """An instant PromQL query against the cluster's Prometheus: the result vector. A query Prometheus
        refuses (bad syntax) raises with its error."""
        url = f"{self.prom_url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                body = json.load(r)
        except urllib.error.HTTPError as exc:
            body = json.load(exc)
        if body.get("status") != "success":
            raise ValueError(f"{expr}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]["result"]

    def prom_targets(self) -> dict[str, dict[str, str]] | str:
        """Prometheus's view of its targets: ``{job: {node: health}}`` (``up``, ``down``, ``unknown``)."""
        if not self.prom_pid():
            return "not running"
        try:
            with urllib.request.urlopen(f"{self.prom_url}/api/v1/targets?state=active", timeout=5) as r:
                active = json.load(r)["data"]["activeTargets"]
        except OSError as exc:
            return f"unavailable ({exc})"
        view: dict[str, dict[str, str]] = {}
        for t in active:
            view.setdefault(t["labels"]["job"], {})[t["labels"].get("node", t["labels"]["instance"])] = t["health"]
        return view

    # -- the whole ----------------------------------------------------------------------------------

    def up(self, install: bool = True) -> None:
        """Everything, in order; ``install=False`` when the caller ran scripts/asterisk-install.sh already."""
        self.run.mkdir(parents=True, exist_ok=True)
        (self.dir / "logs").mkdir(exist_ok=True)
        self.dir.chmod(0o755)  # PostgreSQL (user postgres) must reach its folder below it
        if install:
            inst = subprocess.run(["bash", str(REPO / "scripts/asterisk-install.sh")], capture_output=True, text=True)
            if inst.returncode != 0:
                raise RuntimeError(f"asterisk-install.sh failed:\n{inst.stderr[-2000:]}")
        self.start_postgres()
        for node in self.nodes:
            self.start_asterisk(node)
        for node in self.nodes:
            self.start_controller(node)
        self.start_kamailio()
        self.start_prometheus()
        self.wait_dispatcher({n.name: "A" for n in self.nodes})
        for node in self.nodes:
            self.wait_speech_ready(node)

    def down(self, keep_db: bool = True) -> None:
        self.stop_prometheus()
        self.stop_kamailio()
        for node in self.nodes:
            self.stop_controller(node)
        for node in self.nodes:
            self.stop_asterisk(node)
        self.stop_postgres(keep_db=keep_db)

    def status(self) -> dict:
        try:
            view: dict | str = self.dispatcher()
        except Exception as exc:
            view = f"unavailable ({exc})"
        pg = subprocess.run(["pg_isready", "-h", "127.0.0.1", "-p", str(self.pg_port)], capture_output=True, text=True)
        return {
            "postgres": {"url": self.db_url, "ready": pg.returncode == 0},
            "kamailio": {"pid": self.kam_pid(), "sip": self.sip_target, "dispatcher": view},
            "prometheus": {"pid": self.prom_pid(), "url": self.prom_url, "targets": self.prom_targets()},
            "nodes": {n.name: {"asterisk_pid": self.ast_pid(n), "sip": n.sip_port, "ami": n.ami_port,
                               "controller_pid": self.ctl_pid(n), "agi": n.agi_port, "api": n.api_port}
                      for n in self.nodes},
        }


def _live_pid(pidfile: Path, comm: str | None) -> int | None:
    try:
        pid = int(pidfile.read_text().split()[0])
        name = Path(f"/proc/{pid}/comm").read_text().strip()
    except (OSError, ValueError, IndexError):
        return None
    if Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z":
        return None
    return pid if comm is None or name == comm else None


def _gone(pid: int) -> bool:
    """Exited: no process, or a zombie. A process this one started (tests) stays a zombie until reaped,
    so it is reaped here; otherwise every stop waited out its whole timeout."""
    try:
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return True
    except ChildProcessError:  # not our child: its parent reaps it
        pass
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


def _wait_gone(pid: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not _gone(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if not _gone(pid):
        os.kill(pid, signal.SIGKILL)


def _port_free(port: int, udp: bool = False) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM if udp else socket.SOCK_STREAM) as s:
        if not udp:  # as the servers do: a TIME_WAIT left by the last run does not count as taken
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def main(argv: list[str] | None = None) -> int:
    args = argv if argv is not None else sys.argv[1:]
    if len(args) != 1 or args[0] not in ("up", "down", "status"):
        print("usage: python -m ivr_lab.cluster up|down|status", file=sys.stderr)
        return 2
    cluster = Cluster()
    if args[0] == "up":
        try:
            cluster.up()
        except Exception:
            cluster.down()
            raise
    elif args[0] == "down":
        cluster.down()
    print(json.dumps(cluster.status(), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
