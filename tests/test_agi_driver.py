"""The FastAGI driver against a scripted Asterisk peer on a real TCP socket: what happens
when Asterisk goes away, when the caller hangs up, and when storage fails.

(The real Asterisk is in the end-to-end tests; here the peer misbehaves on purpose.)
"""

from __future__ import annotations

import asyncio
import sqlite3

import pytest

from ivr.adapters.asterisk.agi import CallController, parse_result, started_at_of
from ivr.core.callrecord import CallRecord, Outcome, Phase, hash_caller
from ivr.core.flow import CallFlow
from ivr.plan_files import load_base_plan
from ivr.adapters.store import CallStore

PLAN = load_base_plan()


async def fake_asterisk(port: int, dialled: str, answer, script: str = "call", unique_id: str = "fake-1") -> list[str]:
    """Send AGI headers, then answer each command with ``answer(command, n)``: a result line,
    None to close the connection, or a list of lines."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    headers = {"agi_network_script": script, "agi_uniqueid": unique_id, "agi_extension": dialled,
               "agi_callerid": "0612345678"}
    writer.write("".join(f"{k}: {v}\n" for k, v in headers.items()).encode() + b"\n")
    await writer.drain()
    commands = []
    while True:
        line = await reader.readline()
        if not line:
            break
        commands.append(line.decode().strip())
        reply = answer(commands[-1], len(commands))
        if reply is None:
            writer.close()
            break
        for out in [reply] if isinstance(reply, str) else reply:
            writer.write(out.encode() + b"\n")
        await writer.drain()
    return commands


async def run(tmp_path, dialled, answer, save=None, **session):
    store = CallStore(tmp_path / "calls.sqlite")
    controller = CallController(flow_factory=lambda: CallFlow(PLAN, speech_available=False),
                                save=save or store.save, find=store.get, caller_salt="salt")
    server = await asyncio.start_server(controller.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    commands = await asyncio.wait_for(fake_asterisk(port, dialled, answer, **session), 10)
    for _ in range(50):
        if controller.active == 0:
            break
        await asyncio.sleep(0.02)
    server.close()
    await server.wait_closed()
    return commands, store


def test_parse_result():
    r = parse_result("200 result=49 (dtmf) endpos=1234")
    assert (r.code, r.result, r.data, r.rest) == (200, "49", "dtmf", "endpos=1234")
    assert parse_result("200 result=1 (GM0664)").data == "GM0664"
    assert parse_result("511 Command Not Permitted on a dead channel").code == 511


def test_asterisk_going_away_mid_menu_keeps_the_record(tmp_path):
    def answer(cmd, n):
        return None if cmd.startswith("STREAM FILE") and n > 4 else "200 result=0"

    commands, store = asyncio.run(run(tmp_path, "140113", answer))
    [rec] = store.query()
    assert rec.outcome == "failed" and "asterisk lost" in rec.error
    assert rec.phase == "menu" and rec.ended_at is not None
    assert commands[0] == "ANSWER"  # the dialplan already set IVR_CALL_ID to the unique id


def test_caller_hang_up_notice_is_a_caller_hangup(tmp_path):
    def answer(cmd, n):
        if cmd.startswith("STREAM FILE") and n > 3:
            return ["HANGUP", "200 result=-1 endpos=0"]
        if cmd.startswith("GET VARIABLE HANGUPCAUSE"):
            return "200 result=1 (16)"
        return "200 result=0"

    _, store = asyncio.run(run(tmp_path, "140113", answer))
    [rec] = store.query()
    assert (rec.outcome, rec.hangup_phase, rec.hangup_cause) == ("caller_hangup", "menu", "16")


def test_direct_call_dials_without_answering(tmp_path):
    def answer(cmd, n):
        if cmd.startswith("GET VARIABLE DIALSTATUS"):
            return "200 result=1 (ANSWER)"
        if cmd.startswith("GET VARIABLE ANSWEREDTIME_MS"):
            return "200 result=1 (2000)"
        return "200 result=0"

    commands, store = asyncio.run(run(tmp_path, "140111", answer))
    assert "ANSWER" not in commands
    assert commands[0] == "EXEC Dial Local/GM1676@ivr14-lab,30,r"  # the first thing the controller says
    [rec] = store.query()
    assert rec.outcome == "routed" and rec.decision_ms is not None


def test_storage_failure_does_not_drop_the_call(tmp_path):
    saved = []

    def flaky_save(record):
        if len(saved) < 2:
            saved.append(None)
            raise OSError("disk full")
        store.save(record)

    store = CallStore(tmp_path / "other.sqlite")
    commands, _ = asyncio.run(run(tmp_path, "140111", lambda cmd, n: (
        "200 result=1 (CHANUNAVAIL)" if cmd.startswith("GET VARIABLE DIALSTATUS") else "200 result=0"),
        save=flaky_save))
    assert any(c.startswith("STREAM FILE ivr14/niet_bereikbaar") for c in commands)
    [rec] = store.query()  # the final save got through
    assert rec.outcome == "failed" and "CHANUNAVAIL" in rec.error


@pytest.mark.parametrize("garbage", [b"\x00\xff\xfe\n\n", b"agi_extension: 14abc\n\n"])
def test_garbage_sessions_do_not_kill_the_server(tmp_path, garbage):
    async def go():
        store = CallStore(tmp_path / "calls.sqlite")
        controller = CallController(flow_factory=lambda: CallFlow(PLAN, speech_available=False), save=store.save)
        server = await asyncio.start_server(controller.handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(garbage)
        await writer.drain()
        writer.close()
        await asyncio.sleep(0.2)
        # the server still takes a proper call afterwards
        commands = await fake_asterisk(port, "140999", lambda cmd, n: "200 result=0")
        server.close()
        return commands, store

    commands, store = asyncio.run(go())
    assert any("onbekend_nummer" in c for c in commands)
    assert any(r.outcome == "unknown_area_code" and r.dialled == "140999" for r in store.query())


def test_record_writer_batches_keeps_the_newest_and_flushes(tmp_path):
    from ivr.core.callrecord import CallRecord
    from ivr.adapters.store import RecordWriter

    store = CallStore(tmp_path / "calls.sqlite")
    writer = RecordWriter(store)
    rec = CallRecord(call_id="c1", dialled="140113", started_at=1.0)
    writer.save(rec)
    rec.outcome = "routed"  # later changes to the object do not leak into the queued snapshot
    for i in range(200):
        writer.save(CallRecord(call_id=f"x{i}", dialled="140111", started_at=2.0 + i))
    writer.save(rec)
    assert writer.flush(5)
    assert store.get("c1").outcome == "routed"
    assert store.count() == 201
    writer.close()


def test_record_writer_retries_a_failed_batch(tmp_path):
    from ivr.core.callrecord import CallRecord
    from ivr.adapters.store import RecordWriter

    store = CallStore(tmp_path / "calls.sqlite")
    real, failures = store.save_rows, []

    def flaky(rows):
        if len(failures) < 2:
            failures.append(1)
            raise sqlite3.OperationalError("database is locked")
        real(rows)

    store.save_rows = flaky
    writer = RecordWriter(store, retry_s=0.01)
    writer.save(CallRecord(call_id="c1", dialled="140113"))
    assert writer.flush(5)
    assert store.get("c1") is not None and len(failures) == 2
    writer.close()


async def run_with_lookup(tmp_path, lookup, answer):
    from ivr.adapters.asterisk.agi import CallController

    store = CallStore(tmp_path / "calls.sqlite")
    seen = []

    async def caller_lookup(number, caller, dialled):
        seen.append((number, caller, dialled))
        return await lookup()

    controller = CallController(flow_factory=lambda: CallFlow(PLAN, speech_available=False), save=store.save,
                                caller_salt="s", caller_lookup=caller_lookup)
    server = await asyncio.start_server(controller.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    commands = await asyncio.wait_for(fake_asterisk(port, "140113", answer), 10)
    for _ in range(50):
        if controller.active == 0:
            break
        await asyncio.sleep(0.02)
    server.close()
    await server.wait_closed()
    return commands, store, seen


def test_the_driver_puts_what_is_known_into_the_call_and_a_key_answers_the_suggestion(tmp_path):
    from ivr.adapters.asterisk.agi import CallerContext
    from ivr.core.callrecord import hash_caller

    async def lookup():
        return CallerContext("GM0664", None)

    def answer(cmd, n):
        if cmd.startswith("STREAM FILE ivr14/suggestie_toets"):
            return "200 result=49 endpos=100"  # the caller keys 1 during the question
        if cmd.startswith("GET VARIABLE DIALSTATUS"):
            return "200 result=1 (ANSWER)"
        return "200 result=0"

    commands, store, seen = asyncio.run(run_with_lookup(tmp_path, lookup, answer))
    assert seen == [("0612345678", hash_caller("0612345678", "s"), "140113")]
    streams = [c.split()[2] for c in commands if c.startswith("STREAM FILE")]
    assert streams[:4] == ["ivr14/welkom", "ivr14/suggestie_weer", "ivr14/gemeente/GM0664", "ivr14/suggestie_toets"]
    assert any(c.startswith("EXEC Dial Local/GM0664@ivr14-lab") for c in commands)
    [rec] = store.query()
    assert (rec.suggested, rec.suggestion, rec.municipality, rec.digits) == ("GM0664", "accepted", "GM0664", "1")


@pytest.mark.parametrize("how", ["slow", "broken"])
def test_a_slow_or_broken_lookup_never_holds_up_the_call(tmp_path, how):
    async def lookup():
        if how == "broken":
            raise sqlite3.OperationalError("database is locked")
        await asyncio.sleep(5)

    def answer(cmd, n):
        return None if cmd.startswith("WAIT FOR DIGIT") else "200 result=0"

    commands, store, _ = asyncio.run(run_with_lookup(tmp_path, lookup, answer))
    streams = [c.split()[2] for c in commands if c.startswith("STREAM FILE")]
    assert streams[:3] == ["ivr14/welkom", "ivr14/en/kies_engels", "ivr14/kies_menu"]  # the usual menu
    [rec] = store.query()
    assert rec.suggested is None


def test_every_call_ends_by_telling_the_dialplan_it_is_recorded(tmp_path):
    """Without IVR_RECORDED the dialplan reports the call as lost: a killed controller's socket
    closes like a finished one."""
    commands, store = asyncio.run(run(tmp_path, "140111", lambda cmd, n: "200 result=0"))
    assert commands[-1] == 'SET VARIABLE IVR_RECORDED "1"'
    [rec] = store.query()
    assert rec.ended_at is not None


def lost_session(tmp_path, saved: CallRecord | None, dial_status: str = ""):
    """Asterisk's report (agi://…/lost) of call n1-1700000000.7, whose controller stopped mid-call."""
    store = CallStore(tmp_path / "calls.sqlite")
    if saved is not None:
        store.save(saved)
    store.close()

    def answer(cmd, n):
        if cmd == "GET VARIABLE DIALSTATUS":
            return f"200 result=1 ({dial_status})" if dial_status else "200 result=0"
        return "200 result=1"

    commands, store = asyncio.run(run(tmp_path, "140113", answer, script="lost", unique_id="n1-1700000000.7"))
    return commands, store.get("n1-1700000000.7")


def test_a_lost_call_keeps_what_its_dead_controller_saved_and_is_ended_as_failed(tmp_path):
    saved = CallRecord(call_id="n1-1700000000.7", dialled="140113", caller="x", started_at=1700000000.25,
                       area_code="0113", phase=Phase.MENU, recognition_attempts=1, digits="9")
    commands, rec = lost_session(tmp_path, saved)
    assert (rec.outcome, rec.error_kind, rec.phase) == ("failed", "controller_lost", "menu")
    assert (rec.started_at, rec.area_code, rec.digits, rec.recognition_attempts) == (1700000000.25, "0113", "9", 1)
    assert rec.ended_at is not None and rec.ended_at >= rec.started_at
    assert commands == ["GET VARIABLE DIALSTATUS", 'SET VARIABLE IVR_RECORDED "1"']


def test_a_lost_call_no_record_of_which_reached_the_store_is_written_from_the_channel(tmp_path):
    _, rec = lost_session(tmp_path, None)
    assert (rec.dialled, rec.caller, rec.started_at) == ("140113", hash_caller("0612345678", "salt"), 1700000000.0)
    assert (rec.outcome, rec.error_kind) == ("failed", "controller_lost")


def test_a_lost_call_whose_transfer_was_answered_reached_the_municipality(tmp_path):
    saved = CallRecord(call_id="n1-1700000000.7", dialled="140113", started_at=1700000000.0,
                       municipality="GM0703", phase=Phase.TRANSFER)
    _, rec = lost_session(tmp_path, saved, dial_status="ANSWER")
    assert (rec.outcome, rec.phase, rec.error_kind) == ("routed", "connected", "controller_lost")
    _, rec = lost_session(tmp_path / "b", saved, dial_status="NOANSWER")
    assert rec.outcome == "failed"


def test_a_lost_call_already_finished_by_its_controller_stands(tmp_path):
    saved = CallRecord(call_id="n1-1700000000.7", dialled="140113", started_at=1700000000.0,
                       ended_at=1700000009.0, outcome=Outcome.CALLER_HANGUP)
    commands, rec = lost_session(tmp_path, saved)
    assert (rec.outcome, rec.error_kind, rec.ended_at) == ("caller_hangup", None, 1700000009.0)
    assert commands[-1] == 'SET VARIABLE IVR_RECORDED "1"'  # so the hang-up does not report it again


@pytest.mark.parametrize("unique_id, started", [("1700000000.12", 1700000000.0), ("n2-1700000001.3", 1700000001.0),
                                                ("not-a-uniqueid", 5.0)])
def test_when_a_channel_started_is_read_from_its_unique_id(unique_id, started):
    assert started_at_of(unique_id, 5.0) == started
