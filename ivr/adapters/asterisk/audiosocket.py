"""The live speech path: an asyncio AudioSocket server.

Asterisk's ``AudioSocket(<uuid>,127.0.0.1:9092)`` opens a TCP connection per call leg
(the frames: :mod:`ivr.adapters.asterisk.audiosocket_protocol`).

The AGI driver runs ``EXEC AudioSocket <uuid>,127.0.0.1:9092`` and concurrently awaits
:meth:`AudioSocketServer.listen` with the same UUID. ``listen`` plays the optional
prompt (20 ms frames paced in real time), stops it on barge-in (speech) or a DTMF,
feeds the caller's audio to a :class:`~ivr.speech.listening.Listening` (endpointer,
300 ms pre-roll, recogniser session: the same listening ``ivr replay`` does; the session
runs in a worker thread so the event loop never waits on the engine), and when the
endpointer decides - or a digit, hang-up or error arrives - closes the connection so the
AudioSocket application returns to the dialplan.

We always send a frame every 20 ms (prompt, else silence): Asterisk hangs up an
AudioSocket that receives nothing for ~2 s. Gaps in the caller's audio (SIPp, packet
loss) are filled with silence on our side after 100 ms, so every timer runs on wall
time too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Sequence

from ivr.adapters.asterisk.audiosocket_protocol import Kind, canonical_uuid, encode, read_frame
from ivr.core.recognition import Recognition
from ivr.speech.base import FRAME_BYTES, FRAME_MS, Recogniser
from ivr.speech.endpoint import EndpointConfig, EndpointEvent
from ivr.speech.listening import SILENCE_FRAME, Listening

log = logging.getLogger(__name__)

FRAME_S = FRAME_MS / 1000
GAP_FILL_S = 0.1  # no caller audio for this long: count silence ourselves
CLOSE_DRAIN_S = 2.0  # at most this long waiting for Asterisk to close its side
PARK_S = 10.0  # how long a connection may wait for its listen() call


@dataclass(frozen=True)
class ListenResult:
    outcome: str  # "speech" | "dtmf" | "no_input" | "hangup" | "error"
    recognition: Recognition = Recognition()  # what the recogniser made of the speech ("speech" only)
    digits: str = ""
    barge_in: bool = False  # speech or a digit interrupted the prompt
    speech_started_at: float | None = None  # time.monotonic()
    speech_ended_at: float | None = None
    decided_at: float | None = None
    recogniser_ms: float = 0.0
    detail: str = ""  # why, for "error" (and the endpointer's reason for "speech")
    utterance: bytes = b""  # the slin the recogniser heard ("speech" only), to decide it again


@dataclass
class _Request:
    recogniser: Recogniser
    vocabulary: tuple[str, ...]
    prompt_pcm: bytes | None
    no_input_s: float
    max_speech_s: float
    result: asyncio.Future = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    connected: asyncio.Event = field(default_factory=asyncio.Event)


async def _close_gracefully(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """FIN, never RST. Closing a socket with the caller's audio still unread in its receive
    buffer makes the kernel send RST; Asterisk then reports "Connection reset by peer",
    fails the AudioSocket application and hangs the caller up (2-5 % of speech calls under
    load). So: half-close, discard what Asterisk still sends until it closes its side
    (it does as soon as it reads our FIN), then close."""
    with contextlib.suppress(Exception):
        if writer.can_write_eof():
            writer.write_eof()

        async def discard() -> None:
            while await reader.read(4096):
                pass

        await asyncio.wait_for(discard(), CLOSE_DRAIN_S)
    writer.close()
    with contextlib.suppress(Exception):
        await writer.wait_closed()


class AudioSocketServer:
    def __init__(self, host: str = "127.0.0.1", port: int = 9092, *,
                 endpoint_config: EndpointConfig | None = None):
        self.host = host
        self.port = port
        self.endpoint_config = endpoint_config or EndpointConfig()
        self._server: asyncio.base_events.Server | None = None
        self._requests: dict[str, _Request] = {}  # listen() waiting for its connection
        self._parked: dict[str, asyncio.Future] = {}  # connection waiting for its listen()
        self._handlers: set[asyncio.Task] = set()

    # -- lifecycle -----------------------------------------------------------------
    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]  # resolves port=0
        log.info("AudioSocket server on %s:%d", self.host, self.port)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for task in list(self._handlers):
            task.cancel()
        for task in list(self._handlers):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for req in self._requests.values():
            if not req.result.done():
                req.result.set_result(ListenResult("error", detail="server closed"))
        self._requests.clear()

    async def __aenter__(self) -> "AudioSocketServer":
        await self.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    # -- the API used by the AGI driver ----------------------------------------------
    async def listen(self, call_uuid: str, recogniser: Recogniser, vocabulary: Sequence[str], *,
                     prompt_pcm: bytes | None = None, no_input_s: float = 5.0, max_speech_s: float = 6.0,
                     connect_timeout_s: float = 3.0) -> ListenResult:
        key = canonical_uuid(call_uuid)
        req = _Request(recogniser, tuple(vocabulary), prompt_pcm, no_input_s, max_speech_s)
        parked = self._parked.pop(key, None)
        if parked is not None and not parked.done():
            parked.set_result(req)
        else:
            if key in self._requests:
                return ListenResult("error", detail=f"already listening on {key}")
            self._requests[key] = req
        try:
            await asyncio.wait_for(req.connected.wait(), connect_timeout_s)
        except asyncio.TimeoutError:
            if self._requests.get(key) is req:
                del self._requests[key]
            return ListenResult("error", decided_at=time.monotonic(),
                                detail=f"no AudioSocket connection for {key} within {connect_timeout_s} s")
        return await req.result

    # -- connections -------------------------------------------------------------------
    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
        try:
            await self._serve_connection(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError) as exc:
            log.debug("AudioSocket connection ended: %r", exc)
        finally:
            if task is not None:
                self._handlers.discard(task)
            await _close_gracefully(reader, writer)

    async def _serve_connection(self, reader, writer) -> None:
        try:
            kind, payload = await asyncio.wait_for(read_frame(reader), 5.0)
        except asyncio.TimeoutError:
            return
        if kind != Kind.UUID or len(payload) != 16:
            log.warning("AudioSocket: first frame is type 0x%02x (%d bytes), not a UUID", kind, len(payload))
            return
        key = canonical_uuid(payload)
        req = self._requests.pop(key, None)
        if req is None:
            req = await self._park(key, writer)
            if req is None:
                log.warning("AudioSocket %s: no listen() claimed the connection within %.0f s", key, PARK_S)
                return
        req.connected.set()
        try:
            result = await _Session(req, reader, writer, self.endpoint_config, key).run()
        except Exception as exc:  # never leave the AGI driver waiting
            log.exception("AudioSocket %s failed", key)
            result = ListenResult("error", decided_at=time.monotonic(), detail=repr(exc))
        if not req.result.done():
            req.result.set_result(result)

    async def _park(self, key: str, writer: asyncio.StreamWriter) -> _Request | None:
        """The connection came first: keep Asterisk fed with silence until listen()."""
        fut: asyncio.Future = asyncio.get_running_loop().create_future()
        self._parked[key] = fut
        deadline = time.monotonic() + PARK_S
        try:
            while not fut.done() and time.monotonic() < deadline:
                writer.write(encode(Kind.AUDIO, SILENCE_FRAME))
                await writer.drain()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(asyncio.shield(fut), FRAME_S)
            return fut.result() if fut.done() else None
        finally:
            if self._parked.get(key) is fut:
                del self._parked[key]


class _Session:
    """One listen on one connection."""

    def __init__(self, req: _Request, reader, writer, config: EndpointConfig, key: str):
        self.req = req
        self.reader = reader
        self.writer = writer
        self.key = key
        cfg = EndpointConfig(**{**config.__dict__, "no_input_ms": int(req.no_input_s * 1000),
                                "max_speech_ms": int(req.max_speech_s * 1000)})
        self.prompt = req.prompt_pcm or b""
        self.feed_q: asyncio.Queue[bytes | None] = asyncio.Queue()
        # endpointer + pre-roll + session; frames for the recogniser go to the feeder thread
        self.listening = Listening(req.recogniser, req.vocabulary, cfg, armed=not self.prompt,
                                   sink=self.feed_q.put_nowait)
        self.prompt_pos = 0
        self.prompt_playing = bool(self.prompt)
        self.outcome: str | None = None
        self.detail = ""
        self.digits = ""
        self.barge_in = False
        self.speech_started_at: float | None = None
        self.speech_ended_at: float | None = None
        self.done = asyncio.Event()
        self.rx_buffer = b""
        self.last_rx = time.monotonic()
        self.feed_error: BaseException | None = None

    async def run(self) -> ListenResult:
        req = self.req
        await asyncio.to_thread(self.listening.start)
        wall_limit = len(self.prompt) / (2 * 8000) + req.no_input_s + req.max_speech_s + 5.0
        tasks = [asyncio.create_task(self._rx()), asyncio.create_task(self._tx())]
        feeder = asyncio.create_task(self._feeder())
        try:
            await asyncio.wait_for(self.done.wait(), wall_limit)
        except asyncio.TimeoutError:
            self._finish("error", "wall-clock limit reached")
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self.feed_q.put_nowait(None)
        await feeder
        recognition = Recognition()
        engine_ms = 0.0
        utterance = b""
        if self.outcome == "speech":
            if self.feed_error is not None:
                self.outcome, self.detail = "error", f"recogniser failed: {self.feed_error!r}"
            else:
                hold = asyncio.create_task(self._hold_line())
                try:
                    verdict = await asyncio.to_thread(self.listening.finish)
                    assert verdict.recognition is not None  # speech was heard (or capped)
                    recognition, engine_ms = verdict.recognition, verdict.recognition.engine_ms
                    utterance = verdict.utterance
                except Exception as exc:
                    log.exception("recogniser finish failed")
                    self.outcome, self.detail = "error", f"recogniser failed: {exc!r}"
                finally:
                    hold.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await hold
        return ListenResult(
            outcome=self.outcome or "error", recognition=recognition, digits=self.digits, barge_in=self.barge_in,
            speech_started_at=self.speech_started_at, speech_ended_at=self.speech_ended_at,
            decided_at=time.monotonic(), recogniser_ms=engine_ms, detail=self.detail, utterance=utterance,
        )

    def _finish(self, outcome: str, detail: str = "") -> None:
        if self.outcome is None:
            self.outcome, self.detail = outcome, detail
            self.done.set()

    def _stop_prompt(self) -> None:
        if self.prompt_playing:
            self.prompt_playing = False
            self.barge_in = True
        self.listening.arm()

    # -- caller -> us ----------------------------------------------------------------
    async def _rx(self) -> None:
        try:
            while True:
                kind, payload = await read_frame(self.reader)
                if kind == Kind.AUDIO:
                    self.last_rx = time.monotonic()
                    self._audio(payload, self.last_rx)
                elif kind == Kind.DTMF:
                    self.digits += payload.decode("ascii", "replace")
                    self._stop_prompt()
                    self._finish("dtmf")
                elif kind == Kind.HANGUP:
                    self._finish("hangup")
                elif kind == Kind.ERROR:
                    self._finish("error", f"Asterisk sent an error frame {payload.hex()}")
                elif kind == Kind.UUID:
                    pass
                else:
                    log.debug("AudioSocket %s: ignoring frame type 0x%02x", self.key, kind)
                if self.outcome is not None:
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            self._finish("hangup", "connection closed by Asterisk")

    def _audio(self, payload: bytes, arrived: float) -> None:
        self.rx_buffer += payload
        while len(self.rx_buffer) >= FRAME_BYTES and self.outcome is None:
            frame, self.rx_buffer = self.rx_buffer[:FRAME_BYTES], self.rx_buffer[FRAME_BYTES:]
            self._frame(frame, arrived)

    def _frame(self, frame: bytes, arrived: float) -> None:
        ep = self.listening.endpointer
        event = self.listening.feed(frame)  # pre-roll and speech go to the feeder
        if event is EndpointEvent.SPEECH_START:
            assert ep.speech_start_ms is not None
            self.speech_started_at = arrived - (ep.elapsed_ms - ep.speech_start_ms) / 1000
            self._stop_prompt()
            return
        if not ep.speech_started and self.speech_started_at is not None:
            self.speech_started_at = None  # a false start the endpointer took back
        if event in (EndpointEvent.SPEECH_END, EndpointEvent.MAX_SPEECH):
            assert ep.speech_end_ms is not None
            self.speech_ended_at = arrived - (ep.elapsed_ms - ep.speech_end_ms) / 1000
            self._finish("speech", event.value)
        elif event is EndpointEvent.NO_INPUT:
            self._finish("no_input")

    async def _hold_line(self) -> None:
        """While the recogniser decides, the line stays fed: Asterisk hangs up an AudioSocket
        that gets nothing for ~2 s, and a decision among every municipality (a call from
        abroad) takes longer than that. Silence out; what comes in is past the answer."""
        async def out() -> None:
            while True:
                self.writer.write(encode(Kind.AUDIO, SILENCE_FRAME))
                await self.writer.drain()
                await asyncio.sleep(FRAME_S)

        async def drain() -> None:
            while (await read_frame(self.reader))[0] != Kind.HANGUP:
                pass

        await asyncio.gather(out(), drain())

    # -- us -> caller ----------------------------------------------------------------
    async def _tx(self) -> None:
        start = time.monotonic()
        n = 0
        while self.outcome is None:
            if self.prompt_playing:
                chunk = self.prompt[self.prompt_pos: self.prompt_pos + FRAME_BYTES]
                self.prompt_pos += FRAME_BYTES
                if len(chunk) < FRAME_BYTES:
                    chunk = chunk + SILENCE_FRAME[len(chunk):]
                if self.prompt_pos >= len(self.prompt):
                    self.prompt_playing = False
                    self.listening.arm()  # the no-input clock starts when the prompt ends
            else:
                chunk = SILENCE_FRAME
            self.writer.write(encode(Kind.AUDIO, chunk))
            await self.writer.drain()
            now = time.monotonic()
            if now - self.last_rx > GAP_FILL_S:  # the caller's audio stalled: count silence
                self.last_rx += FRAME_S
                self._frame(SILENCE_FRAME, now)
            n += 1
            await asyncio.sleep(max(0.0, start + n * FRAME_S - time.monotonic()))

    # -- recogniser ----------------------------------------------------------------------
    async def _feeder(self) -> None:
        """Feeds frames to the session in a worker thread, in order, batching backlog."""
        while True:
            item = await self.feed_q.get()
            batch = [] if item is None else [item]
            stop = item is None
            while not self.feed_q.empty():
                more = self.feed_q.get_nowait()
                if more is None:
                    stop = True
                else:
                    batch.append(more)
            if batch and self.feed_error is None:
                try:
                    await asyncio.to_thread(self.listening.session.feed, b"".join(batch))
                except Exception as exc:
                    log.exception("recogniser feed failed")
                    self.feed_error = exc
            if stop:
                return
