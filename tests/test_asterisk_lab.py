"""Real-Asterisk tests that need no controller.

SIPp calls come from 127.0.0.3 (endpoint ``sipp-selftest``, context ``[lab-selftest]``) so they
never reach the controller's FastAGI; AMI events prove what happened inside Asterisk.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import urllib.request
import uuid
import wave
from pathlib import Path

import pytest

from ivr_lab import Audio, CallScript, Dtmf, Pause, run_sipp, wav_to_pcap
from ivr_lab.prompts_build import project_prompt_texts

pytestmark = pytest.mark.asterisk

SELFTEST_IP = "127.0.0.3"
_caller_seq = iter(range(1000, 10**6))


def caller_id() -> str:
    """A fresh caller number per call, used to correlate AMI events."""
    return f"0699{next(_caller_seq):06d}"


def selftest_call(number: str, steps=(), **kw):
    caller = kw.pop("caller", None) or caller_id()
    result = run_sipp(CallScript(number, caller=caller, local_ip=SELFTEST_IP, steps=list(steps)), **kw)
    assert result.ok, result.describe()
    return caller, result


def test_boots_with_project_config(asterisk):
    assert "Asterisk 22" in asterisk.cli("core show version")
    mods = asterisk.cli("module show like audiosocket")
    assert mods.count("Running") == 3, mods
    assert "Running" in asterisk.cli("module show like res_prometheus")
    endpoints = asterisk.cli("pjsip show endpoints")
    assert "sipp-selftest" in endpoints and " sipp " in endpoints
    log = asterisk.log_since(0)
    assert "Address already in use" not in log and "Unable to bind" not in log


def test_from_caller_contract(asterisk):
    plan = asterisk.cli("dialplan show from-caller")
    assert "AGI(agi://127.0.0.1:4573/call)" in plan
    assert "'_+X.'" in plan and "Goto(from-caller,${EXTEN:1},1)" in plan
    assert "Playback(ivr14/storing)" in plan and "Dial(Local/operator@ivr14-lab,30,r)" in plan
    lab = asterisk.cli("dialplan show ivr14-lab")
    assert "'GM0664'" in lab and "'operator'" in lab and "'busy'" in lab and "'noanswer'" in lab
    assert lab.count("MunicipalityAnswered") == 342 + 1
    glob = asterisk.cli("dialplan show globals")
    assert "LAB_RING=0.3" in glob and "LAB_HOLD=1" in glob


def test_prometheus_metrics(asterisk):
    body = urllib.request.urlopen("http://127.0.0.1:8088/metrics", timeout=5).read().decode()
    assert "asterisk_channels_count" in body and "asterisk_calls_count" in body


def test_prompts_in_chroot(asterisk):
    sounds = asterisk.root / "usr/share/asterisk/sounds/ivr14"
    for key in project_prompt_texts():
        path = sounds / f"{key}.wav"
        assert path.is_file(), path
        with wave.open(str(path)) as w:
            assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (8000, 1, 2), path
            assert w.getnframes() > 4000, f"{path} shorter than 0.5 s"


def test_ami_login_with_persisted_secret(ami):
    assert ami.manager.authenticated


def test_answers_and_plays_prompt(asterisk, ami):
    mark = ami.mark()
    caller, _ = selftest_call("100")
    (ev,) = ami.wait_for(mark, UserEvent="SelftestPlayed", Caller=caller)
    assert ev["Status"] == "SUCCESS", ev


def test_dtmf_reaches_read(asterisk, ami):
    mark = ami.mark()
    caller, _ = selftest_call("200", [Pause(700), Dtmf("7")])
    (ev,) = ami.wait_for(mark, UserEvent="SelftestDigit", Caller=caller)
    assert (ev["Digit"], ev["Status"]) == ("7", "OK"), ev


@pytest.mark.parametrize(
    "cbs,name",
    [("GM0664", "Goes"), ("GM0820", "Nuenen, Gerwen en Nederwetten"), ("GM0518", "'s-Gravenhage"),
     ("GM0893", "Bergen (L)")],
)
def test_lab_municipality_answers_with_user_event(asterisk, ami, cbs, name):
    mark = ami.mark()
    caller, result = selftest_call(cbs)
    (ev,) = ami.wait_for(mark, UserEvent="MunicipalityAnswered", Call=caller)
    assert (ev["CBS"], ev["Name"]) == (cbs, name), ev
    (dialed,) = ami.wait_for(mark, UserEvent="SelftestDialed", Caller=caller)
    assert dialed["DialStatus"] == "ANSWER"
    # rings LAB_RING (0.3 s), prompt (~2.5 s), holds LAB_HOLD (1 s)
    assert 3.0 < result.stat_float("CallLength(C)") < 10


def test_the_ami_user_reads_only_user_events(asterisk, ami):
    """manager.conf: ``read = user``. The controller uses UserEvent(MunicipalityAnswered) only;
    channel, dial and CDR events cost it CPU on every call (loadtest/bench_ami_events.py)."""
    mark = ami.mark()
    caller, _ = selftest_call("GM0664")
    ami.wait_for(mark, UserEvent="MunicipalityAnswered", Call=caller)
    ami.wait_for(mark, UserEvent="SelftestDialed", Caller=caller)
    kinds = {e.get("Event") for e in ami.events[mark:]}
    assert kinds == {"UserEvent"}, kinds


@pytest.mark.parametrize("exten,status", [("operator", "ANSWER"), ("busy", "BUSY"), ("noanswer", "NOANSWER")])
def test_lab_special_destinations(asterisk, ami, exten, status):
    mark = ami.mark()
    caller, _ = selftest_call(exten)
    (ev,) = ami.wait_for(mark, UserEvent="SelftestDialed", Caller=caller, timeout=15)
    assert ev["DialStatus"] == status, ev
    answered = ami.find(mark, UserEvent="MunicipalityAnswered", Call=caller)
    if exten == "operator":
        assert [e["CBS"] for e in answered] == ["operator"]
    else:
        assert answered == []


def test_unreachable_agi_sets_failure(asterisk, ami):
    mark = ami.mark()
    caller, _ = selftest_call("300")
    (ev,) = ami.wait_for(mark, UserEvent="SelftestAgi", Caller=caller)
    assert ev["AgiStatus"] == "FAILURE"


def _port_in_use(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_from_caller_falls_back_to_operator_without_controller(asterisk, ami):
    if _port_in_use(4573):
        pytest.skip("a FastAGI controller listens on 127.0.0.1:4573; the fallback path is not reachable")
    mark = ami.mark()
    off = asterisk.log_offset()
    result = run_sipp(CallScript("+31140113", caller=caller_id()))
    assert result.ok, result.describe()
    ev = ami.wait_for(mark, UserEvent="MunicipalityAnswered", CBS="operator")
    assert ev
    log = asterisk.log_since(off)
    assert "Playback(\"PJSIP/sipp-" in log and "ivr14/storing" in log


def test_from_caller_fallback_branch(asterisk, ami):
    """The fallback branch itself: storing prompt, then the lab operator (reached via a Goto)."""
    mark = ami.mark()
    off = asterisk.log_offset()
    caller, _ = selftest_call("fallback140113")
    ami.wait_for(mark, UserEvent="MunicipalityAnswered", CBS="operator")
    log = asterisk.log_since(off)
    assert f"Playback(\"PJSIP/sipp-selftest-" in log and "ivr14/storing" in log
    assert "Dial(\"PJSIP/sipp-selftest-" in log and "Local/operator@ivr14-lab,30,r" in log


def test_parallel_lab_calls(asterisk, ami):
    mark = ami.mark()
    result = run_sipp(CallScript("GM0664", caller="0698[call_number]", local_ip=SELFTEST_IP),
                      calls=10, rate=10, concurrent=10)
    assert result.ok and result.successful == 10, result.describe()
    calls = {f"0698{n}" for n in range(1, 11)}
    ami.wait_for(mark, UserEvent="MunicipalityAnswered", CBS="GM0664", count=10,
                 where=lambda e: e.get("Call") in calls)


# ------------------------------------------------------------------ AudioSocket behaviour (pinned)

AGI_PORT = 4599  # [lab-selftest] exten 500 runs AGI(agi://127.0.0.1:4599/selftest)


@pytest.mark.parametrize("server_ends_with", ["tcp-close", "hangup-frame"])
def test_audiosocket_returns_to_agi_with_channel_up(asterisk, ami, tmp_path: Path, server_ends_with):
    """When the AudioSocket server ends the stream, AudioSocket returns 0 to the AGI and the call
    stays up: the controller can go on (play a prompt, Dial) on the same AGI session."""
    replies: list[tuple[str, str]] = []
    wav = asterisk.root / "usr/share/asterisk/sounds/ivr14/welkom.wav"
    pcap = tmp_path / "caller.pcap"
    wav_to_pcap(wav, pcap, lead_silence_s=0.5, tail_silence_s=6.0)  # keep RTP flowing

    async def audiosocket_server(reader, writer):
        frames = 0
        while frames < 25:  # 0.5 s of caller audio
            kind, length = struct.unpack("!BH", await reader.readexactly(3))
            await reader.readexactly(length)
            frames += kind == 0x10
        if server_ends_with == "hangup-frame":
            writer.write(b"\x00\x00\x00")
            await writer.drain()
            await asyncio.sleep(0.2)
        writer.close()

    async def agi(reader, writer):
        while (await reader.readline()).strip():
            pass

        async def cmd(c: str) -> str:
            writer.write(c.encode() + b"\n")
            await writer.drain()
            reply = (await reader.readline()).decode().strip()
            replies.append((c.split()[0] + " " + c.split()[1], reply))
            return reply

        await cmd(f"EXEC AudioSocket {uuid.uuid4()},127.0.0.1:{as_port}")
        await cmd("CHANNEL STATUS")
        await cmd('STREAM FILE ivr14/lab/verbonden ""')
        await cmd("CHANNEL STATUS")
        writer.close()

    async def main():
        nonlocal as_port
        as_srv = await asyncio.start_server(audiosocket_server, "127.0.0.1", 0)
        as_port = as_srv.sockets[0].getsockname()[1]
        agi_srv = await asyncio.start_server(agi, "127.0.0.1", AGI_PORT)
        try:
            return await asyncio.to_thread(
                run_sipp, CallScript("500", caller=caller, local_ip=SELFTEST_IP, steps=[Audio(pcap)]))
        finally:
            as_srv.close()
            agi_srv.close()

    as_port = 0
    caller = caller_id()
    mark = ami.mark()
    result = asyncio.run(main())
    assert result.ok, result.describe()
    assert replies == [
        ("EXEC AudioSocket", "200 result=0"),
        ("CHANNEL STATUS", "200 result=6"),  # 6 = line up
        ("STREAM FILE", "200 result=0 endpos=19895") if replies[2][1].endswith("19895") else replies[2],
        ("CHANNEL STATUS", "200 result=6"),
    ], replies
    assert replies[2][1].startswith("200 result=0 endpos=")
    (ev,) = ami.wait_for(mark, UserEvent="SelftestAfterAgi", Caller=caller)
    assert ev["AgiStatus"] == "SUCCESS"
