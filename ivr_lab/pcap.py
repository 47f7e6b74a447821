"""WAV -> 8 kHz G.711 mu-law RTP pcap, for SIPp's ``play_pcap_audio``.

Each packet is Ethernet/IPv4/UDP/RTP with 160 bytes of payload (20 ms), timestamps 20 ms apart,
payload type 0 (PCMU). SIPp only uses the RTP part and the timing; the addresses are placeholders.
The audio is padded with mu-law silence before and after: SIPp sends no RTP between pcaps, and
Asterisk's silence detection and AudioSocket need frames to keep flowing.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import tempfile
import wave
from pathlib import Path

import numpy as np

RATE = 8000
FRAME_BYTES = 160  # 20 ms of 8 kHz G.711
ULAW_SILENCE = 0xFF
# G.711 mu-law on the 14-bit scale, the reference (Sun g711.c) algorithm that audioop used
_BIAS = 0x21
_CLIP = 8159
_SEG_END = np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF], dtype=np.int32)


def ulaw_encode(pcm: np.ndarray) -> bytes:
    """G.711 mu-law encode signed 16-bit samples (byte-identical to the old ``audioop.lin2ulaw``)."""
    v = np.asarray(pcm, dtype=np.int32) >> 2
    mask = np.where(v < 0, 0x7F, 0xFF).astype(np.int32)
    v = np.minimum(np.abs(v), _CLIP) + _BIAS
    seg = np.searchsorted(_SEG_END, v, side="left").astype(np.int32)
    uval = np.where(seg >= 8, 0x7F, (np.minimum(seg, 7) << 4) | ((v >> (np.minimum(seg, 7) + 1)) & 0x0F))
    return ((uval ^ mask) & 0xFF).astype(np.uint8).tobytes()


def read_wav_8k(wav_path: Path) -> np.ndarray:
    """Samples of any WAV as int16 at 8 kHz mono (sox converts what is not already in that shape)."""
    with wave.open(str(wav_path), "rb") as w:
        shape = (w.getframerate(), w.getnchannels(), w.getsampwidth(), w.getcomptype())
        if shape == (RATE, 1, 2, "NONE"):
            return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    return _sox_to_raw(wav_path)


def _sox_to_raw(wav_path: Path) -> np.ndarray:
    if shutil.which("sox") is None:
        raise RuntimeError(f"{wav_path} is not 8 kHz mono 16-bit and sox is not installed to convert it")
    with tempfile.TemporaryDirectory(prefix="ivr14-pcap-") as tmp:
        raw = Path(tmp) / "audio.raw"
        subprocess.run(
            ["sox", str(wav_path), "-r", str(RATE), "-c", "1", "-b", "16", "-e", "signed-integer",
             "-t", "raw", "-L", str(raw)],
            check=True, capture_output=True,
        )
        return np.frombuffer(raw.read_bytes(), dtype="<i2")


def _ip_checksum(hdr: bytes) -> int:
    s = sum((hdr[i] << 8) + hdr[i + 1] for i in range(0, len(hdr), 2))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def write_rtp_pcap(payload: bytes, pcap_path: Path | str, payload_type: int = 0) -> int:
    """Write G.711 bytes as 20 ms RTP packets into a pcap; returns the number of packets."""
    silence = bytes([ULAW_SILENCE if payload_type == 0 else 0xD5])
    if len(payload) % FRAME_BYTES:
        payload += silence * (FRAME_BYTES - len(payload) % FRAME_BYTES)
    out = bytearray(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))  # linktype 1 = Ethernet
    ssrc, seq, ts = 0x1234ABCD, 1000, 0
    n = 0
    for n, off in enumerate(range(0, len(payload), FRAME_BYTES)):
        chunk = payload[off:off + FRAME_BYTES]
        marker = 0x80 if n == 0 else 0
        rtp = struct.pack("!BBHII", 0x80, marker | payload_type, (seq + n) & 0xFFFF,
                          (ts + n * FRAME_BYTES) & 0xFFFFFFFF, ssrc) + chunk
        udp = struct.pack("!HHHH", 20000, 6000, 8 + len(rtp), 0) + rtp
        iph = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), n & 0xFFFF, 0, 64, 17, 0,
                          bytes([127, 0, 0, 1]), bytes([127, 0, 0, 1]))
        iph = iph[:10] + struct.pack("!H", _ip_checksum(iph)) + iph[12:]
        frame = b"\x00" * 12 + b"\x08\x00" + iph + udp
        t_us = n * 20000
        out += struct.pack("<IIII", t_us // 1_000_000, t_us % 1_000_000, len(frame), len(frame)) + frame
    Path(pcap_path).write_bytes(bytes(out))
    return n + 1 if payload else 0


def wav_to_pcap(
    wav_path: Path | str,
    pcap_path: Path | str,
    lead_silence_s: float = 0.5,
    tail_silence_s: float = 1.0,
) -> float:
    """Turn any WAV into a PCMU (PT 0) RTP pcap padded with silence; returns its duration in s."""
    pcm = read_wav_8k(Path(wav_path))
    lead = bytes([ULAW_SILENCE]) * int(round(lead_silence_s * RATE))
    tail = bytes([ULAW_SILENCE]) * int(round(tail_silence_s * RATE))
    packets = write_rtp_pcap(lead + ulaw_encode(pcm) + tail, pcap_path, payload_type=0)
    return packets * FRAME_BYTES / RATE


def pcap_duration_s(pcap_path: Path | str) -> float:
    """Time from the first to the last packet of a pcap, plus one 20 ms frame."""
    data = Path(pcap_path).read_bytes()
    if len(data) < 24:
        return 0.0
    magic = struct.unpack("<I", data[:4])[0]
    endian = "<" if magic in (0xA1B2C3D4, 0xA1B23C4D) else ">"
    nano = magic in (0xA1B23C4D, 0x4D3CB2A1)
    off, first, last = 24, None, None
    while off + 16 <= len(data):
        sec, frac, incl, _ = struct.unpack(endian + "IIII", data[off:off + 16])
        t = sec + frac / (1e9 if nano else 1e6)
        first = t if first is None else first
        last = t
        off += 16 + incl
    return 0.0 if first is None else (last - first) + 0.02


def rebase_rtp_pcap(src: Path | str, dst: Path | str, seq0: int, ts0: int) -> int:
    """Copy an RTP pcap with its sequence numbers and timestamps moved to start at
    ``seq0``/``ts0``; returns the number of packets.

    SIPp replays pcaps verbatim, and SIPp's stock DTMF pcaps carry fixed numbers: a digit
    whose numbers run backwards from the previous one is dropped by Asterisk as stale.
    Giving each play of a call its own, rising block keeps every digit and utterance.
    """
    data = bytearray(Path(src).read_bytes())
    if len(data) < 24 or struct.unpack("<I", data[:4])[0] != 0xA1B2C3D4:
        raise ValueError(f"{src}: not a little-endian microsecond pcap")
    off, n, first_seq, first_ts = 24, 0, None, None
    while off + 16 <= len(data):
        incl = struct.unpack("<I", data[off + 8:off + 12])[0]
        frame_start = off + 16
        rtp = frame_start + 14 + 20 + 8  # Ethernet, IPv4 (no options), UDP
        if rtp + 12 <= frame_start + incl:
            seq, ts = struct.unpack("!HI", data[rtp + 2:rtp + 8])
            if first_seq is None:
                first_seq, first_ts = seq, ts
            struct.pack_into("!HI", data, rtp + 2, (seq0 + ((seq - first_seq) & 0xFFFF)) & 0xFFFF,
                             (ts0 + ((ts - first_ts) & 0xFFFFFFFF)) & 0xFFFFFFFF)
            n += 1
        off = frame_start + incl
    Path(dst).write_bytes(bytes(data))
    return n
