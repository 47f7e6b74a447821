"""Asterisk's side of the AudioSocket protocol (what its ``AudioSocket()`` application does),
over real TCP: tests drive our AudioSocket server with it as Asterisk would.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid as uuidlib

from ivr.adapters.asterisk.audiosocket_protocol import Kind, encode, read_frame
from ivr.speech.base import FRAME_BYTES

__all__ = ["AudioSocketClient"]


class AudioSocketClient:
    """The Asterisk side of the protocol (what ``AudioSocket()`` does), over real TCP."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader = reader
        self.writer = writer
        self.received_audio = bytearray()
        self.closed_by_server = asyncio.Event()
        self._rx_task: asyncio.Task | None = None

    @classmethod
    async def connect(cls, host: str, port: int, call_uuid: str) -> "AudioSocketClient":
        reader, writer = await asyncio.open_connection(host, port)
        client = cls(reader, writer)
        writer.write(encode(Kind.UUID, uuidlib.UUID(call_uuid).bytes))
        await writer.drain()
        client._rx_task = asyncio.create_task(client._receive())
        return client

    async def _receive(self) -> None:
        try:
            while True:
                kind, payload = await read_frame(self.reader)
                if kind == Kind.AUDIO:
                    self.received_audio += payload
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.closed_by_server.set()

    async def send_audio(self, pcm: bytes, *, realtime: bool = True, frame_bytes: int = FRAME_BYTES) -> bool:
        """Stream ``pcm`` in frames (paced at 20 ms when ``realtime``); False once the
        server has closed the connection."""
        start = time.monotonic()
        for n, i in enumerate(range(0, len(pcm), frame_bytes)):
            if self.closed_by_server.is_set():
                return False
            try:
                self.writer.write(encode(Kind.AUDIO, pcm[i: i + frame_bytes]))
                await self.writer.drain()
            except ConnectionError:
                return False
            if realtime:
                await asyncio.sleep(max(0.0, start + (n + 1) * frame_bytes / 16000 - time.monotonic()))
        return not self.closed_by_server.is_set()

    async def send_dtmf(self, digit: str) -> None:
        self.writer.write(encode(Kind.DTMF, digit.encode("ascii")))
        await self.writer.drain()

    async def send_hangup(self) -> None:
        self.writer.write(encode(Kind.HANGUP))
        await self.writer.drain()

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()
        if self._rx_task:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(self._rx_task, 1.0)
