"""``ivr replay --sip``: the manifest's utterances as real SIP calls through Asterisk and the
controller, each row's outcome read from the controller's call record."""

from __future__ import annotations

import argparse
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ivr.adapters.store import CallStore
from ivr.config import load_settings
from ivr.core.callrecord import hash_caller
from ivr.plan_files import load_base_plan
from ivr_lab.pcap import wav_to_pcap
from ivr_lab.replay_items import (ACTIONS, ItemError, ItemResult, check_row, mark_failed, new_item, read_manifest,
                                  read_slin, wav_shape)
from ivr_lab.replay_report import progress_bar
from ivr_lab.sipp import Audio, CallScript, HangUp, Pause, run_sipp

def drive_sip(manifest: Path, args: argparse.Namespace) -> list[ItemResult]:
    """``--sip``: one real call per row through the running Asterisk and controller.

    SIPp dials 14 + the row's area code, plays the WAV as RTP once the IVR has greeted,
    hangs up after ``--sip-hold`` seconds if the IVR has not ended the call, and the row's
    result is read from the controller's call record (found by the caller number, hashed
    with the controller's salt): the first speech attempt's verdict, decision and latency,
    and which municipality answered the transfer.
    """
    settings = load_settings()
    plan = load_base_plan()
    db_path = Path(args.db) if args.db else settings.db_path
    salt = settings.caller_salt.get_secret_value()
    rows = read_manifest(manifest)
    workdir = Path(tempfile.mkdtemp(prefix="ivr14-replay-sip-"))
    # callers new to the controller (never a suggestion "Belt u weer voor …?" from an earlier run)
    run_id = int(time.time() * 1000) % 10**9

    def one(index: int, row: dict[str, str]) -> ItemResult:
        item = new_item(row)
        caller = f"09{run_id:09d}{index:05d}"
        try:
            check_row(item, plan)  # the same per-row errors as offline replay, before any call
            read_slin(manifest.parent / item.path)
            item.note = wav_shape(manifest.parent / item.path)
            pcap = workdir / f"{index:05d}.pcap"
            wav_to_pcap(manifest.parent / item.path, pcap)
            script = CallScript("14" + item.area_code, caller=caller,
                                steps=[Pause(1500), Audio(pcap), Pause(int(args.sip_hold * 1000)), HangUp()])
            result = run_sipp(script, workdir=workdir / f"{index:05d}")
            if not result.ok:
                raise ItemError(f"SIP call failed: {result.describe().splitlines()[0]}")
            record = _record_of(db_path, hash_caller(caller, salt))
            _fill_from_record(item, record)
        except Exception as exc:  # noqa: BLE001 - one bad item must not end the run
            mark_failed(item, exc)
        return item

    def _record_of(path: Path, caller_hash: str):
        deadline = time.monotonic() + 10
        store = CallStore(path)
        try:
            while time.monotonic() < deadline:
                found = [r for r in store.iter_query(since=time.time() - 3600) if r.caller == caller_hash]
                if found and found[-1].ended_at is not None:
                    return found[-1]
                time.sleep(0.2)
        finally:
            store.close()
        raise ItemError(f"no call record in {path} for this call (is `ivr serve` writing there?)")

    items: list[ItemResult] = []
    with ThreadPoolExecutor(max_workers=max(1, args.sip_concurrency)) as pool:
        for n, item in enumerate(pool.map(lambda pair: one(*pair), enumerate(rows)), 1):
            items.append(item)
            if not args.quiet:
                progress_bar(n, len(rows))
    return items


def _fill_from_record(item: ItemResult, record) -> None:
    """The row's outcome as the live call decided it: its first speech question."""
    first = next((a for a in record.attempts if a.kind == "speech"), None)
    item.answered_by = record.answered_by or ""
    if first is None:
        item.verdict = item.action = "no_input"
        item.error = f"no speech attempt recorded (outcome {record.outcome})"
        if record.outcome == "caller_hangup":
            item.error += ": the caller hung up before the IVR decided (a longer --sip-hold?)"
        return
    if first.input == "no_input":  # nobody spoke before the no-input timeout
        item.verdict = item.action = item.listen = "no_input"
        return
    if first.input != "speech":
        item.verdict = item.action = first.input
        item.error = f"the first question was answered by {first.input} {first.heard!r}, not speech"
        return
    item.verdict = first.verdict
    item.action = ACTIONS.get(first.verdict, first.verdict)
    item.heard = first.heard
    best = first.candidates[0] if first.candidates else {}
    item.decided_cbs_code = first.chosen or best.get("cbs_code", "")
    item.score = float(best.get("score", 0.0))
    item.confidence = round(item.score / 100, 4)
    item.latency_ms = round(first.decision_ms or 0.0, 1)
    item.engine_ms = round(first.recogniser_ms or 0.0, 1)
    if item.action == "transfer" and record.answered_by and record.answered_by != item.decided_cbs_code:
        item.error = f"decided {item.decided_cbs_code} but {record.answered_by} answered"
