"""Lab tooling: drive the real Asterisk with SIPp callers (see docs/asterisk.md)."""

from ivr_lab.pcap import pcap_duration_s, ulaw_encode, wav_to_pcap, write_rtp_pcap
from ivr_lab.sipp import (
    Audio,
    CallScript,
    Dtmf,
    HangUp,
    Pause,
    SippResult,
    WaitBye,
    render_scenario,
    run_sipp,
)

__all__ = [
    "Audio",
    "CallScript",
    "Dtmf",
    "HangUp",
    "Pause",
    "SippResult",
    "WaitBye",
    "pcap_duration_s",
    "render_scenario",
    "run_sipp",
    "ulaw_encode",
    "wav_to_pcap",
    "write_rtp_pcap",
]
