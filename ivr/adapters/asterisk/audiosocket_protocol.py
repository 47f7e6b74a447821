"""Asterisk's AudioSocket wire format: frames of ``type (1 byte) | length (2 bytes, big endian) | payload``.

Asterisk's ``AudioSocket(<uuid>,host:port)`` opens a TCP connection per call leg and
exchanges these frames:

====  =====================================================================
0x00  hang-up (no payload)
0x01  UUID (16 bytes) - always the first frame from Asterisk
0x03  DTMF (1 ASCII byte)
0x10  audio: 16-bit LE mono 8 kHz slin, normally 320 bytes = 20 ms
0xff  error (optional payload)
====  =====================================================================

Used by our server (:mod:`ivr.adapters.asterisk.audiosocket`) and by the lab's client
that plays Asterisk's side in tests (:mod:`ivr_lab.audiosocket_client`).
"""

from __future__ import annotations

import asyncio
import uuid as uuidlib
from enum import IntEnum

__all__ = ["Kind", "encode", "read_frame", "canonical_uuid"]


class Kind(IntEnum):
    HANGUP = 0x00
    UUID = 0x01
    DTMF = 0x03
    AUDIO = 0x10
    ERROR = 0xFF


def encode(kind: int, payload: bytes = b"") -> bytes:
    if len(payload) > 0xFFFF:
        raise ValueError("AudioSocket payload longer than 65535 bytes")
    return bytes((kind,)) + len(payload).to_bytes(2, "big") + payload


async def read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One frame; raises ``asyncio.IncompleteReadError`` at EOF."""
    header = await reader.readexactly(3)
    length = int.from_bytes(header[1:3], "big")
    payload = await reader.readexactly(length) if length else b""
    return header[0], payload


def canonical_uuid(value: str | bytes) -> str:
    if isinstance(value, bytes):
        return str(uuidlib.UUID(bytes=value))
    return str(uuidlib.UUID(value))
