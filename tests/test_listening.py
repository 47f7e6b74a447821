"""The listening module (endpointer + pre-roll + session -> verdict), offline and live.

The last test sends the same audio through the live AudioSocket server (real TCP, no
Asterisk) and through offline :func:`listen`: the recogniser must receive the same bytes.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from ivr.adapters.asterisk.audiosocket import AudioSocketServer
from ivr_lab.audiosocket_client import AudioSocketClient
from ivr.core.recognition import Recognition
from ivr.speech.base import FRAME_BYTES, FRAME_MS
from ivr.speech.endpoint import EndpointConfig
from ivr.speech.listening import PREROLL_FRAMES, Heard, Listening, listen

BYTES_PER_MS = FRAME_BYTES // FRAME_MS


@dataclass
class RecordingSession:
    fed: bytearray = field(default_factory=bytearray)
    finished: bool = False

    def feed(self, pcm: bytes) -> None:
        self.fed += pcm

    def finish(self) -> Recognition:
        self.finished = True
        return Recognition.of_transcripts((("Goes", 0.95),), engine_ms=1.0)


@dataclass
class RecordingRecogniser:
    name: str = "recording"
    sessions: list[RecordingSession] = field(default_factory=list)

    def start(self, vocabulary: Sequence[str]) -> RecordingSession:
        self.sessions.append(RecordingSession())
        return self.sessions[-1]


def silence(ms: int) -> bytes:
    return bytes(ms * BYTES_PER_MS)


def voiced(ms: int, hz: float = 180.0) -> bytes:
    """A loud, pitched, amplitude-modulated burst: speech to the endpointer."""
    t = np.arange(8 * ms) / 8000
    x = 0.3 * np.sin(2 * np.pi * hz * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))
    return (x * 32767).astype("<i2").tobytes()


def test_the_recogniser_hears_the_pre_roll_and_the_speech_not_the_silence_before():
    audio = silence(1000) + voiced(400) + silence(200)
    rec = RecordingRecogniser()
    verdict = listen(rec, ("GM0664",), audio)
    assert verdict.kind is Heard.HEARD and verdict.recognition.nbest[0][0] == "Goes"
    assert verdict.speech_start_ms == 1000 and verdict.speech_end_ms == 1400
    assert verdict.ended_ms == 1400 + EndpointConfig().end_silence_ms  # ended by 280 ms of silence
    # the frame that started speech is the third voiced one; the pre-roll is the 15 before it
    start_frame = 1000 // FRAME_MS + EndpointConfig().start_frames - 1
    first_ms = (start_frame - PREROLL_FRAMES) * FRAME_MS
    padded = audio + silence(2000)  # the line carries silence after the caller stops
    session = rec.sessions[0]
    assert session.finished
    assert bytes(session.fed) == padded[first_ms * BYTES_PER_MS: verdict.ended_ms * BYTES_PER_MS]


def test_speech_from_the_first_frame_has_no_pre_roll():
    rec = RecordingRecogniser()
    verdict = listen(rec, (), voiced(300))
    assert verdict.kind is Heard.HEARD and verdict.speech_start_ms == 0
    assert bytes(rec.sessions[0].fed[: 300 * BYTES_PER_MS]) == voiced(300)


def test_silence_is_no_input_at_the_timeout_and_the_session_is_not_asked():
    rec = RecordingRecogniser()
    verdict = listen(rec, ("GM0664",), silence(800))  # the rest of the 5 s is the line's silence
    assert verdict.kind is Heard.NO_INPUT and not verdict.speech
    assert verdict.recognition is None and verdict.speech_start_ms is None
    assert verdict.ended_ms == EndpointConfig().no_input_ms
    assert not rec.sessions[0].fed and not rec.sessions[0].finished


def test_thirty_seconds_of_talk_is_capped_and_decided_on_what_was_heard():
    rec = RecordingRecogniser()
    verdict = listen(rec, ("GM0664",), silence(500) + voiced(30_000))
    assert verdict.kind is Heard.TOO_LONG and verdict.speech
    assert verdict.recognition is not None and rec.sessions[0].finished
    assert verdict.ended_ms - verdict.speech_start_ms == EndpointConfig().max_speech_ms
    assert len(rec.sessions[0].fed) <= (EndpointConfig().max_speech_ms + 400) * BYTES_PER_MS


def test_a_click_is_not_speech():
    rec = RecordingRecogniser()
    verdict = listen(rec, (), silence(500) + voiced(60) + silence(500))
    assert verdict.kind is Heard.NO_INPUT


def test_the_no_input_clock_waits_for_arm_and_frames_after_the_end_are_ignored():
    rec = RecordingRecogniser()
    listening = Listening(rec, (), EndpointConfig(no_input_ms=400), armed=False).start()
    for _ in range(50):  # 1 s of silence while a prompt plays: no timeout
        listening.feed(silence(FRAME_MS))
    assert not listening.done
    listening.arm()
    for _ in range(20):
        listening.feed(silence(FRAME_MS))
    assert listening.done and listening.finish().kind is Heard.NO_INPUT
    listening.feed(voiced(FRAME_MS))
    assert not rec.sessions[0].fed


def test_a_filled_pause_keeps_listening_through_the_engines_hook():
    calls = []

    class Hesitant(RecordingRecogniser):
        def is_hesitation(self, slin: bytes) -> bool:
            calls.append(len(slin))
            return len(calls) == 1  # the first short burst is "ehm"

    rec = Hesitant()
    verdict = listen(rec, (), silence(300) + voiced(200) + silence(700) + voiced(500) + silence(100))
    assert verdict.kind is Heard.HEARD and verdict.held == 1
    assert verdict.speech_end_ms == 300 + 200 + 700 + 500  # decided on the name, not the "ehm"


def test_live_audiosocket_feeds_the_recogniser_what_offline_listening_does():
    """The same caller audio, once through the AudioSocket server and once offline: the
    recogniser receives the same bytes (pre-roll, speech, the line's silence to the end)."""
    audio = silence(700) + voiced(350) + silence(150) + voiced(300) + silence(100)
    offline, live = RecordingRecogniser(), RecordingRecogniser()
    verdict = listen(offline, ("GM0664",), audio)

    async def call():
        async with AudioSocketServer(port=0) as server:
            call_id = str(uuid.uuid4())
            listening = asyncio.create_task(server.listen(call_id, live, ("GM0664",)))
            await asyncio.sleep(0.05)
            client = await AudioSocketClient.connect("127.0.0.1", server.port, call_id)
            await client.send_audio(audio, realtime=False)  # then nothing: the server fills silence
            result = await asyncio.wait_for(listening, 15)
            await client.close()
            return result

    result = asyncio.run(call())
    assert verdict.kind is Heard.HEARD and result.outcome == "speech"
    assert result.recognition == verdict.recognition
    assert bytes(live.sessions[0].fed) == bytes(offline.sessions[0].fed)
