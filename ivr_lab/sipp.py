"""SIPp caller scenarios for the lab: build one caller's script, run it N times, read the stats.

    script = CallScript("140113", caller="0612345678",
                        steps=[Pause(1500), Dtmf("1"), Audio("utterance.pcap")])
    result = run_sipp(script, calls=1)
    assert result.ok, result.describe()

The caller sends INVITE (offering PCMU, PCMA and telephone-event/8000 as payload type 101),
waits for 200, ACKs, runs the steps and then, unless the last step is ``HangUp()``, waits for
Asterisk's BYE and answers 200. ``Dtmf`` plays SIPp's RFC 4733 sample pcaps
(``/usr/share/sip-tester/dtmf_2833_<d>.pcap``); ``Audio`` plays an RTP pcap (``wav_to_pcap``).
Playing a pcap does not block in SIPp, so each media step is followed by a pause as long as the
pcap, and a new pcap never cuts off the previous one. SIPp sends no RTP between pcaps.

A BYE from Asterisk while the caller is still in a step ends the call normally and skips the
remaining steps (``CallScript.early_bye_ok``; set it False to count that as a failed call).

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Union
from xml.sax.saxutils import quoteattr

from ivr_lab.pcap import pcap_duration_s, rebase_rtp_pcap

DTMF_DIR = Path("/usr/share/sip-tester")
DTMF_NAMES = {**{str(d): str(d) for d in range(10)}, "*": "star", "#": "pound"}
DEFAULT_TARGET = "127.0.0.1:5060"


@dataclass(frozen=True)
class Pause:
    ms: int


@dataclass(frozen=True)
class Dtmf:
    """RFC 4733 digits (0-9, *, #), ``gap_ms`` of silence after each one."""

    digits: str
    gap_ms: int = 150

    def __post_init__(self) -> None:
        bad = [d for d in self.digits if d not in DTMF_NAMES]
        if bad or not self.digits:
            raise ValueError(f"unsupported DTMF digits {self.digits!r} (SIPp ships 0-9, * and #)")


@dataclass(frozen=True)
class Audio:
    """Play an RTP pcap; by default wait until it has been sent (``wait=False``: carry on at once)."""

    pcap: Union[str, Path]
    wait: bool = True


@dataclass(frozen=True)
class HangUp:
    """The caller hangs up: sends BYE, expects 200."""


@dataclass(frozen=True)
class WaitBye:
    """Wait up to ``timeout_ms`` for the far end's BYE and answer 200 (the default ending)."""

    timeout_ms: int = 30000


Step = Union[Pause, Dtmf, Audio, HangUp, WaitBye]


@dataclass
class CallScript:
    """One caller. ``caller`` may contain SIPp keywords, e.g. ``"06[call_number]"``."""

    number: str
    caller: str = "0612345678"
    steps: list[Step] = field(default_factory=list)
    local_ip: str = "127.0.0.1"  # 127.0.0.3 reaches the [lab-selftest] context
    bye_timeout_ms: int = 30000
    answer_timeout_ms: int = 30000
    # a BYE from the far end during a step ends the call normally (remaining steps are skipped);
    # False: such a BYE fails the call (SIPp "unexpected BYE")
    early_bye_ok: bool = True
    name: str = "ivr14 caller"


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


# ---------------------------------------------------------------------------------- scenario XML

_INVITE = """
      INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: "Lab caller" <sip:{caller}@[local_ip]:[local_port]>;tag=[pid]SIPpTag[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: <sip:{caller}@[local_ip]:[local_port]>
      Max-Forwards: 70
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=sipp 53655765 2353687637 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[local_ip_type] [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 0 8 101
      a=rtpmap:0 PCMU/8000
      a=rtpmap:8 PCMA/8000
      a=rtpmap:101 telephone-event/8000
      a=fmtp:101 0-16
      a=ptime:20
      a=sendrecv
"""

_ACK = """
      ACK sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: "Lab caller" <sip:{caller}@[local_ip]:[local_port]>;tag=[pid]SIPpTag[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Contact: <sip:{caller}@[local_ip]:[local_port]>
      Max-Forwards: 70
      Content-Length: 0
"""

_BYE = """
      BYE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: "Lab caller" <sip:{caller}@[local_ip]:[local_port]>;tag=[pid]SIPpTag[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 2 BYE
      Contact: <sip:{caller}@[local_ip]:[local_port]>
      Max-Forwards: 70
      Content-Length: 0
"""

_200_TO_BYE = """
      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <sip:{caller}@[local_ip]:[local_port]>
      Content-Length: 0
"""


def _cdata(text: str) -> str:
    return "<![CDATA[\n" + text + "\n    ]]>"


def _play(pcap: Path) -> str:
    return f"  <nop><action><exec play_pcap_audio={quoteattr(str(pcap))}/></action></nop>\n"


def render_scenario(script: CallScript, media_dir: Path | None = None) -> str:
    """The SIPp XML scenario for one caller.

    With ``media_dir``, each pcap the caller plays is copied there with its own rising
    RTP sequence numbers and timestamps (see :func:`rebase_rtp_pcap`), so any order of
    digits and utterances reaches Asterisk."""
    if any(c in script.caller for c in "<>\"\r\n ") or not script.caller:
        raise ValueError(f"bad caller number {script.caller!r}")
    c = script.caller
    body = [
        '<?xml version="1.0" encoding="ISO-8859-1" ?>\n<!DOCTYPE scenario SYSTEM "sipp.dtd">\n',
        f"<scenario name={quoteattr(script.name)}>\n",
        f'  <send retrans="500">{_cdata(_INVITE.format(caller=c))}</send>\n',
        '  <recv response="100" optional="true"/>\n',
        '  <recv response="180" optional="true"/>\n',
        '  <recv response="183" optional="true"/>\n',
        f'  <recv response="200" rtd="true" timeout="{script.answer_timeout_ms}"/>\n',
        f"  <send>{_cdata(_ACK.format(caller=c))}</send>\n",
    ]
    labels = iter(range(1, 1_000_000))

    def wait(ms: int) -> str:
        """A pause that a BYE from the far end may cut short (then the caller answers 200)."""
        ms = max(int(ms), 1)
        if not script.early_bye_ok:
            return f'  <pause milliseconds="{ms}"/>\n'
        label = f"w{next(labels)}"
        return (f'  <recv request="BYE" timeout="{ms}" ontimeout="{label}" next="bye"/>\n'
                f'  <label id="{label}"/>\n')

    plays = iter(range(1, 1_000_000))

    def media(pcap: Path) -> Path:
        if media_dir is None:
            return pcap
        k = next(plays)
        copy = Path(media_dir) / f"play{k:03d}-{pcap.name}"
        rebase_rtp_pcap(pcap, copy, seq0=k * 2000, ts0=k * 8000 * 60)
        return copy

    hung_up = False
    for i, step in enumerate(script.steps):
        if hung_up:
            raise ValueError(f"step {i} ({step!r}) comes after the call has ended")
        if isinstance(step, Pause):
            body.append(wait(step.ms))
        elif isinstance(step, Dtmf):
            for d in step.digits:
                pcap = DTMF_DIR / f"dtmf_2833_{DTMF_NAMES[d]}.pcap"
                if not pcap.is_file():
                    raise FileNotFoundError(f"{pcap} missing (apt-get install sip-tester)")
                body.append(_play(media(pcap)))
                body.append(wait(int(pcap_duration_s(pcap) * 1000) + step.gap_ms))
        elif isinstance(step, Audio):
            pcap = Path(step.pcap).resolve()
            if not pcap.is_file():
                raise FileNotFoundError(pcap)
            body.append(_play(media(pcap)))
            if step.wait:
                body.append(wait(int(pcap_duration_s(pcap) * 1000) + 40))
        elif isinstance(step, HangUp):
            body.append(f'  <send retrans="500">{_cdata(_BYE.format(caller=c))}</send>\n')
            body.append('  <recv response="200" next="end"/>\n')
            hung_up = True
        elif isinstance(step, WaitBye):
            body.append(f'  <recv request="BYE" timeout="{int(step.timeout_ms)}" next="bye"/>\n')
            hung_up = True
        else:
            raise TypeError(f"unknown step {step!r}")
    if not hung_up:
        body.append(f'  <recv request="BYE" timeout="{int(script.bye_timeout_ms)}" next="bye"/>\n')
    body.append('  <label id="bye"/>\n')
    body.append(f"  <send>{_cdata(_200_TO_BYE.format(caller=c))}</send>\n")
    body.append('  <label id="end"/>\n')
    # linger briefly so a retransmitted BYE is absorbed before the call is counted
    body.append('  <pause milliseconds="100"/>\n')
    body.append('  <ResponseTimeRepartition value="10, 20, 50, 100, 200, 500, 1000, 2000"/>\n')
    body.append('  <CallLengthRepartition value="1000, 2000, 5000, 10000, 30000, 60000"/>\n')
    body.append("</scenario>\n")
    return "".join(body)


# ------------------------------------------------------------------------------------- running

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
