"""Replay labelled recordings through the live recognition path and score it.

``ivr replay MANIFEST.csv [--json OUT.json] [--engine NAME]`` (default: the engine calls
use, ``IVR_SPEECH_ENGINE``)

The manifest needs ``path,area_code,expected_cbs_code`` (paths relative to the
manifest; other columns are ignored, ``kind`` gives a per-kind breakdown). Each WAV
goes through exactly what a call does (:mod:`ivr.speech.listening`, the module the live
AudioSocket path listens with): 20 ms frames, followed by the silence a caller's line
carries after they stop talking, into the endpointer; the 300 ms pre-roll and the speech
into the recogniser session; the session's n-best at end of speech into the area code's
:class:`~ivr.core.matcher.Matcher`, and its verdict is the action. ``listen`` records how the
listen ended: ``heard``, ``too_long`` (talked past the 6 s cap: decided on what was heard,
as a call is) or ``no_input`` (no speech within the 5 s no-input timeout).

Audio that is not 8 kHz mono 16-bit PCM (another rate, stereo, 8-bit...) is converted with
sox, as ``--sip`` converts it for RTP, and ``note`` says so; what cannot be read as audio
is an error naming the file.

Metrics:
  accuracy_first_attempt  accepted or confirmed, and the right municipality
  misroutes               accepted (transferred without asking) but wrong
  confirm_rate / choose_rate / reject_rate   share of items with that verdict
  latency_ms_p50 / _p95   end of the listen (the endpoint) -> decision (engine + matcher)

A bad row (missing file, not a WAV, an empty cell, unknown area code...) is reported as
an error for that item and counted in ``errors``; it never stops the run. A manifest
without the required columns is refused as a whole, naming them.

``--sip`` places the same utterances as real SIP calls through Asterisk (SIPp, RTP from
the WAVs) and reads each outcome from the controller's call record: see :func:`drive_sip`.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import time
import wave
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from ivr_lab.pcap import RATE, read_wav_8k
from ivr.core.matcher import Matcher, MatchResult
from ivr.core.plan import AreaCode, NumberingPlan
from ivr.plan_files import load_base_plan
from ivr.speech.base import FRAME_BYTES, Hypotheses, Recogniser
from ivr.speech.endpoint import EndpointConfig, Endpointer
from ivr.speech.engines import ENGINES
from ivr.speech.listening import Verdict, listen

ACTIONS = {"accept": "transfer", "confirm": "confirm", "choose": "choose", "reject": "retry"}


@dataclass
class ItemResult:
    path: str
    area_code: str
    expected_cbs_code: str
    kind: str = ""
    decided_cbs_code: str = ""  # the matcher's best (what accept routes to / confirm asks about)
    verdict: str = ""  # accept | confirm | choose | reject | no_input | error
    action: str = ""  # transfer | confirm | choose | retry | no_input | error
    confidence: float = 0.0  # the recogniser's confidence of its best hypothesis
    score: float = 0.0  # the matcher's score of its best
    heard: str = ""  # the recogniser's best hypothesis
    latency_ms: float = 0.0
    engine_ms: float = 0.0
    listen: str = ""  # how the listen ended: heard | too_long | no_input (offline replay)
    speech_start_ms: int | None = None  # audio time from the start of the WAV (offline replay)
    speech_end_ms: int | None = None
    error: str = ""
    note: str = ""  # e.g. the WAV was converted from another rate
    answered_by: str = ""  # --sip: the municipality extension that answered the transfer


# --- one item ------------------------------------------------------------------------------

class ItemError(ValueError):
    pass


def wav_shape(path: Path) -> str:
    """What a WAV holds when it is not what a call carries (8 kHz mono 16-bit PCM), for the
    item's note; "" when it is, or when the header cannot be read (sox will say why)."""
    try:
        with wave.open(str(path), "rb") as w:
            rate, channels, width = w.getframerate(), w.getnchannels(), w.getsampwidth()
    except (wave.Error, EOFError, OSError):
        return ""
    if (rate, channels, width) == (RATE, 1, 2):
        return ""
    return f"converted from {rate} Hz, {channels} channel(s), {8 * width}-bit to 8 kHz mono 16-bit"


def read_slin(path: Path) -> bytes:
    """Any WAV -> slin bytes, 8 kHz mono 16-bit (converted with sox when it is not already:
    another sample rate is resampled, not refused); clear errors for anything that is not
    audio."""
    if not path.is_file():
        raise ItemError(f"missing file {path}")
    try:
        data = read_wav_8k(path).tobytes()
    except (wave.Error, EOFError) as exc:
        raise ItemError(f"{path.name}: not a PCM WAV file ({exc})") from exc
    except subprocess.CalledProcessError as exc:
        why = (exc.stderr or b"").decode("utf-8", "replace").strip().splitlines()
        raise ItemError(f"{path.name}: cannot convert to 8 kHz mono ({why[-1] if why else exc})") from exc
    except RuntimeError as exc:
        raise ItemError(f"{path.name}: cannot convert to 8 kHz mono ({exc})") from exc
    if len(data) < FRAME_BYTES:
        raise ItemError(f"{path.name}: empty audio (less than 20 ms)")
    return data


def decide(recogniser: Recogniser, matcher: Matcher, vocabulary: Sequence[str], slin: bytes,
           endpointer: Endpointer | None = None, config: EndpointConfig | None = None,
           ) -> tuple[MatchResult | None, Hypotheses, float, str]:
    """Listen to ``slin`` as a live call does (:func:`ivr.speech.listening.listen`) and match
    what was heard; return (match, hypotheses, latency_ms, how the listen ended: heard,
    too_long or no_input). No input gives no match and an empty n-best."""
    verdict = listen(recogniser, vocabulary, slin, config, endpointer=endpointer)
    if verdict.hypotheses is None:
        return None, Hypotheses((), final=True, engine_ms=0.0), verdict.decision_ms, str(verdict.kind)
    t0 = time.perf_counter()
    result = matcher.match(verdict.hypotheses.nbest)
    latency = verdict.decision_ms + (time.perf_counter() - t0) * 1000
    return result, verdict.hypotheses, latency, str(verdict.kind)


def new_item(row: dict[str, str]) -> ItemResult:
    def cell(name: str) -> str:
        value = row.get(name)
        return value.strip() if isinstance(value, str) else ""

    return ItemResult(path=cell("path"), area_code=cell("area_code"), expected_cbs_code=cell("expected_cbs_code"),
                      kind=cell("kind"))


def check_row(item: ItemResult, plan: NumberingPlan) -> AreaCode:
    """The row's area code, or an :class:`ItemError` saying what is wrong with the row."""
    for name in ("path", "area_code", "expected_cbs_code"):
        if not getattr(item, name):
            raise ItemError(f"row has no {name}")
    area = plan.area_codes.get(item.area_code)
    if area is None:
        raise ItemError(f"unknown area code {item.area_code!r}")
    if not area.shared:
        raise ItemError(f"area code {item.area_code} routes directly (one municipality): nothing to recognise")
    if item.expected_cbs_code not in area.municipalities:
        raise ItemError(f"{item.expected_cbs_code!r} is not a candidate of area code {item.area_code}")
    return area


def _failed(item: ItemResult, exc: Exception) -> None:
    item.verdict = item.action = "error"
    item.error = str(exc) if isinstance(exc, ItemError) else f"{type(exc).__name__}: {exc}"


def run_item(row: dict[str, str], base: Path, plan: NumberingPlan, recogniser: Recogniser,
             matchers: dict[str, Matcher]) -> ItemResult:
    item = new_item(row)
    try:
        area = check_row(item, plan)
        slin = read_slin(base / item.path)
        item.note = wav_shape(base / item.path)
        if item.area_code not in matchers:
            matchers[item.area_code] = Matcher(plan.candidates(item.area_code))
        verdict = listen(recogniser, area.municipalities, slin)
        fill_from_verdict(item, verdict, matchers[item.area_code])
    except Exception as exc:  # noqa: BLE001 - one bad item must not end the run
        _failed(item, exc)
    return item


def fill_from_verdict(item: ItemResult, verdict: Verdict, matcher: Matcher) -> None:
    """The row's outcome: how the listen ended and, when speech was heard, the matcher's verdict."""
    item.listen = str(verdict.kind)
    item.speech_start_ms, item.speech_end_ms = verdict.speech_start_ms, verdict.speech_end_ms
    hyps = verdict.hypotheses
    if hyps is None:
        item.verdict = item.action = "no_input"
        return
    t0 = time.perf_counter()
    result = matcher.match(hyps.nbest)
    item.latency_ms = round(verdict.decision_ms + (time.perf_counter() - t0) * 1000, 1)
    item.engine_ms = round(float(hyps.engine_ms), 1)
    item.heard = hyps.nbest[0][0] if hyps.nbest else ""
    item.confidence = round(float(hyps.nbest[0][1]), 4) if hyps.nbest else 0.0
    item.verdict = str(result.verdict)
    item.action = ACTIONS[item.verdict]
    if result.best is not None:
        item.decided_cbs_code = result.best.cbs_code
        item.score = result.best.score


# --- metrics -------------------------------------------------------------------------------

def _pct(values: Sequence[float], q: float) -> float:
    return round(float(np.percentile(values, q)), 1) if values else 0.0


def compute_metrics(items: Sequence[ItemResult]) -> dict:
    """The headline figures over ``items`` (errors excluded from rates, counted apart)."""
    ok = [i for i in items if i.verdict != "error"]
    n = len(ok)

    def rate(k: int) -> float:
        return round(k / n, 4) if n else 0.0

    right = [i for i in ok if i.decided_cbs_code == i.expected_cbs_code]
    lat = [i.latency_ms for i in ok]
    return {
        "n": n,
        "errors": len(items) - n,
        "accuracy_first_attempt": rate(sum(1 for i in right if i.verdict in ("accept", "confirm"))),
        "misroutes": sum(1 for i in ok if i.verdict == "accept" and i.decided_cbs_code != i.expected_cbs_code),
        "misroute_rate": rate(sum(1 for i in ok if i.verdict == "accept" and i.decided_cbs_code != i.expected_cbs_code)),
        "accept_rate": rate(sum(1 for i in ok if i.verdict == "accept")),
        "confirm_rate": rate(sum(1 for i in ok if i.verdict == "confirm")),
        "choose_rate": rate(sum(1 for i in ok if i.verdict == "choose")),
        "reject_rate": rate(sum(1 for i in ok if i.verdict in ("reject", "no_input"))),
        "top1_accuracy": rate(len(right)),
        "latency_ms_p50": _pct(lat, 50),
        "latency_ms_p95": _pct(lat, 95),
    }


def confusion(items: Iterable[ItemResult]) -> dict[str, dict[str, int]]:
    """expected -> decided (or the verdict when nothing was decided) -> count; errors only."""
    table: dict[str, Counter] = defaultdict(Counter)
    for i in items:
        if i.verdict == "error":
            continue
        table[i.expected_cbs_code][i.decided_cbs_code or i.verdict] += 1
    return {k: dict(v) for k, v in sorted(table.items())}


def report(items: Sequence[ItemResult]) -> dict:
    out = {"metrics": compute_metrics(items)}
    kinds = sorted({i.kind for i in items if i.kind})
    if kinds:
        out["per_kind"] = {k: compute_metrics([i for i in items if i.kind == k]) for k in kinds}
    out["confusion"] = confusion(items)
    out["items"] = [asdict(i) for i in items]
    return out


# --- running a manifest -----------------------------------------------------------------------

def read_manifest(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = {"path", "area_code", "expected_cbs_code"} - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"{path}: manifest lacks column(s) {', '.join(sorted(missing))}")
        return list(reader)


def replay(manifest: Path, recogniser: Recogniser, plan: NumberingPlan | None = None,
           progress: Callable[[int, int], None] | None = None) -> list[ItemResult]:
    plan = plan or load_base_plan()
    rows = read_manifest(manifest)
    matchers: dict[str, Matcher] = {}
    out = []
    for k, row in enumerate(rows):
        out.append(run_item(row, manifest.parent, plan, recogniser, matchers))
        if progress:
            progress(k + 1, len(rows))
    return out


def make_recogniser(engine: str, plan: NumberingPlan) -> Recogniser:
    from ivr.speech.base import RecogniserError
    from ivr.speech.engines import load_recogniser

    try:
        recogniser = load_recogniser(engine, plan)
    except (RecogniserError, ImportError, ValueError) as exc:
        raise SystemExit(f"{engine} engine not available: {exc}") from exc
    return recogniser


def default_engine() -> str:
    """The engine a live call uses (settings), so that replay hears what a call hears."""
    from ivr.config import load_settings

    engine = load_settings().speech_engine
    return engine if engine in ENGINES else ENGINES[0]


def drive_sip(manifest: Path, args: argparse.Namespace) -> list[ItemResult]:
    """``--sip``: one real call per row through the running Asterisk and controller.

    SIPp dials 14 + the row's area code, plays the WAV as RTP once the IVR has greeted,
    hangs up after ``--sip-hold`` seconds if the IVR has not ended the call, and the row's
    result is read from the controller's call record (found by the caller number, hashed
    with the controller's salt): the first speech attempt's verdict, decision and latency,
    and which municipality answered the transfer.
    """
    import tempfile
    from concurrent.futures import ThreadPoolExecutor

    from ivr.core.callrecord import hash_caller
    from ivr.config import load_settings
    from ivr_lab.pcap import wav_to_pcap
    from ivr_lab.sipp import Audio, CallScript, HangUp, Pause, run_sipp
    from ivr.adapters.store import CallStore

    settings = load_settings()
    plan = load_base_plan()
    db_path = Path(args.db) if args.db else settings.db_path
    salt = settings.caller_salt.get_secret_value()
    rows = read_manifest(manifest)
    workdir = Path(tempfile.mkdtemp(prefix="ivr14-replay-sip-"))
    run_id = int(time.time()) % 10_000

    def one(index: int, row: dict[str, str]) -> ItemResult:
        item = new_item(row)
        caller = f"09{run_id:04d}{index:05d}"
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
            _failed(item, exc)
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
                _progress_bar(n, len(rows))
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


def _progress_bar(done: int, total: int) -> None:
    width = 30
    filled = int(width * done / max(total, 1))
    print(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total}", end="", file=sys.stderr, flush=True)
    if done == total:
        print(file=sys.stderr)


def format_text(rep: dict) -> str:
    lines = []
    m = rep["metrics"]
    lines.append("  ".join(f"{k}={v}" for k, v in m.items()))
    for kind, km in rep.get("per_kind", {}).items():
        lines.append(f"  {kind:8s} n={km['n']:4d} first={km['accuracy_first_attempt']:.3f} "
                     f"misroutes={km['misroutes']} confirm={km['confirm_rate']:.3f} choose={km['choose_rate']:.3f} "
                     f"reject={km['reject_rate']:.3f} p50={km['latency_ms_p50']}ms p95={km['latency_ms_p95']}ms")
    lines.append("items (path expected decided action confidence latency_ms):")
    for i in rep["items"]:
        mark = "" if i["decided_cbs_code"] == i["expected_cbs_code"] else "  <-- " + (i["error"] or "wrong")
        extra = "".join(f" [{x}]" for x in (i.get("listen") if i.get("listen") == "too_long" else "", i.get("note"))
                        if x)
        lines.append(f"  {i['path']} {i['expected_cbs_code']} {i['decided_cbs_code'] or '-'} {i['action']} "
                     f"{i['confidence']:.3f} {i['latency_ms']}{extra}{mark}")
    lines.append("confusion (expected: decided=count):")
    for exp, row in rep["confusion"].items():
        lines.append(f"  {exp}: " + ", ".join(f"{k}={v}" for k, v in sorted(row.items(), key=lambda kv: -kv[1])))
    return "\n".join(lines)


def _cmd_replay(args: argparse.Namespace) -> int:
    manifest = Path(args.manifest)
    if not manifest.is_file():
        print(f"no such manifest: {manifest}", file=sys.stderr)
        return 2
    plan = load_base_plan()
    try:
        if args.sip:
            items = drive_sip(manifest, args)
        else:
            args.engine = args.engine or default_engine()
            recogniser = make_recogniser(args.engine, plan)
            items = replay(manifest, recogniser, plan, progress=None if args.quiet else _progress_bar)
    except (ValueError, NotImplementedError) as exc:
        print(str(exc), file=sys.stderr)
        return 2
    rep = report(items)
    rep["engine"] = "sip" if args.sip else args.engine
    rep["manifest"] = str(manifest)
    print(format_text(rep))
    if args.json:
        Path(args.json).write_text(json.dumps(rep, indent=1, ensure_ascii=False), encoding="utf-8")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("replay", help="replay labelled WAVs through recogniser + matcher; print metrics")
    p.add_argument("manifest", help="CSV with path,area_code,expected_cbs_code[,kind,...]")
    p.add_argument("--json", help="write the full report (metrics, per kind, items, confusion) here")
    p.add_argument("--engine", choices=ENGINES, default=None,
                   help="default: the engine live calls use (IVR_SPEECH_ENGINE)")
    p.add_argument("--sip", action="store_true",
                   help="place real SIP calls through the running Asterisk + controller (scripts/run.sh)")
    p.add_argument("--db", help="--sip: the controller's call records (default: settings db_path)")
    p.add_argument("--sip-concurrency", type=int, default=4, help="--sip: calls at once")
    p.add_argument("--sip-hold", type=float, default=12.0,
                   help="--sip: seconds after the utterance before the caller hangs up")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_replay)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ivr-replay")
    sub = parser.add_subparsers(dest="command", required=True)
    register(sub)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
