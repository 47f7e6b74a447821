"""One SIPp caller: its script (pauses, digits, audio, hang-up) and the SIPp scenario XML it becomes.

The caller sends INVITE (offering PCMU, PCMA and telephone-event/8000 as payload type 101),
waits for 200, ACKs, runs the steps and then, unless the last step is ``HangUp()``, waits for
Asterisk's BYE and answers 200. ``Dtmf`` plays SIPp's RFC 4733 sample pcaps
(``/usr/share/sip-tester/dtmf_2833_<d>.pcap``); ``Audio`` plays an RTP pcap (``wav_to_pcap``).
Playing a pcap does not block in SIPp, so each media step is followed by a pause as long as the
pcap, and a new pcap never cuts off the previous one. SIPp sends no RTP between pcaps.

A BYE from Asterisk while the caller is still in a step ends the call normally and skips the
remaining steps (``CallScript.early_bye_ok``; set it False to count that as a failed call).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Union
from xml.sax.saxutils import quoteattr

from ivr_lab.pcap import pcap_duration_s, rebase_rtp_pcap

__all__ = ["CallScript", "Step", "Pause", "Dtmf", "Audio", "HangUp", "WaitBye", "render_scenario",
           "DTMF_DIR", "DTMF_NAMES"]

DTMF_DIR = Path("/usr/share/sip-tester")
DTMF_NAMES = {**{str(d): str(d) for d in range(10)}, "*": "star", "#": "pound"}


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
    # through a SIP proxy that stays in the path (Kamailio's record_route): ACK and BYE go to the
    # answering node's Contact along the recorded Route set instead of to the INVITE's target
    via_proxy: bool = False


# --- scenario XML ---------------------------------------------------------------------------------

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


def _in_dialog(template: str, script: CallScript) -> str:
    """ACK/BYE as sent to the target, or, through a proxy, to the remote Contact along the Route set."""
    if not script.via_proxy:
        return template
    first, rest = template.lstrip("\n").split("\n", 1)
    method = first.split()[0]
    return f"\n      {method} [next_url] SIP/2.0\n      [routes]\n" + rest


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
        f'  <recv response="200" rtd="true" timeout="{script.answer_timeout_ms}"'
        + (' rrs="true"' if script.via_proxy else "") + "/>\n",
        f"  <send>{_cdata(_in_dialog(_ACK, script).format(caller=c))}</send>\n",
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
            body.append(f'  <send retrans="500">{_cdata(_in_dialog(_BYE, script).format(caller=c))}</send>\n')
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
