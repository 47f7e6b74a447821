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
the WAVs) and reads each outcome from the controller's call record: see
:func:`ivr_lab.replay_sip.drive_sip`. A row's result and checks are in
:mod:`ivr_lab.replay_items`, the metrics and text in :mod:`ivr_lab.replay_report`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from functools import lru_cache
from pathlib import Path
from typing import Callable, Sequence

from ivr.core.callrecord import SecondPass
from ivr.core.matcher import Matcher, MatchResult
from ivr.core.plan import NumberingPlan
from ivr.core.second_pass import outside_the_code, worth_a_second_pass
from ivr.plan_files import confusable_rule, load_base_plan
from ivr.core.recognition import Recognition
from ivr.speech.base import Recogniser
from ivr.speech.endpoint import EndpointConfig, Endpointer
from ivr.speech.engines import ENGINES
from ivr.speech.listening import Verdict, hear_again, listen
from ivr_lab.replay_items import (ACTIONS, ItemResult, check_row, mark_failed, new_item, read_manifest, read_slin,
                                  wav_shape)
from ivr_lab.replay_report import format_text, progress_bar, report
from ivr_lab.replay_sip import drive_sip


# --- one item, offline ----------------------------------------------------------------------

def decide(recogniser: Recogniser, matcher: Matcher, vocabulary: Sequence[str], slin: bytes,
           endpointer: Endpointer | None = None, config: EndpointConfig | None = None,
           ) -> tuple[MatchResult | None, Recognition, float, str]:
    """Listen to ``slin`` as a live call does (:func:`ivr.speech.listening.listen`) and let
    the matcher decide on what was heard; return (match, recognition, latency_ms, how the
    listen ended: heard, too_long or no_input). No input gives no match and an empty recognition."""
    verdict = listen(recogniser, vocabulary, slin, config, endpointer=endpointer)
    if verdict.recognition is None:
        return None, Recognition(), verdict.decision_ms, str(verdict.kind)
    t0 = time.perf_counter()
    result = matcher.decide(verdict.recognition)
    latency = verdict.decision_ms + (time.perf_counter() - t0) * 1000
    return result, verdict.recognition, latency, str(verdict.kind)


class NationalPass:
    """The flow's national second pass, offline: the utterance decided again among every
    municipality of ``plan`` (:func:`ivr.speech.listening.hear_again`), and the rule of
    :mod:`ivr.core.second_pass` on what that changes."""

    def __init__(self, recogniser: Recogniser, plan: NumberingPlan):
        self.recogniser = recogniser
        self.codes = tuple(m.cbs_code for m in plan.national_candidates())
        self.matcher = Matcher(plan.national_candidates())

    def decide(self, utterance: bytes) -> tuple[MatchResult, float | None]:
        """The national decision and the engine's certainty of it (``Recognition.p_right``)."""
        recognition = hear_again(self.recogniser, self.codes, utterance)
        return self.matcher.decide(recognition), recognition.p_right


def run_item(row: dict[str, str], base: Path, plan: NumberingPlan, recogniser: Recogniser,
             matchers: dict[str, Matcher], national: NationalPass | None = None) -> ItemResult:
    item = new_item(row)
    try:
        area = check_row(item, plan)
        slin = read_slin(base / item.path)
        item.note = wav_shape(base / item.path)
        if item.area_code not in matchers:
            # as live calls decide: listed confusable pairs are not accepted on a thin margin
            matchers[item.area_code] = Matcher(plan.candidates(item.area_code), confusable=_confusable())
        verdict = listen(recogniser, area.municipalities, slin)
        fill_from_verdict(item, verdict, matchers[item.area_code], national)
    except Exception as exc:  # noqa: BLE001 - one bad item must not end the run
        mark_failed(item, exc)
    return item


@lru_cache(maxsize=1)
def _confusable():
    return confusable_rule()


def fill_from_verdict(item: ItemResult, verdict: Verdict, matcher: Matcher, national: NationalPass | None = None
                      ) -> None:
    """The row's outcome: how the listen ended and, when speech was heard, the matcher's verdict
    (after the national second pass, as a call decides, when ``national`` is given)."""
    item.listen = str(verdict.kind)
    item.speech_start_ms, item.speech_end_ms = verdict.speech_start_ms, verdict.speech_end_ms
    recognition = verdict.recognition
    if recognition is None:
        item.verdict = item.action = "no_input"
        return
    t0 = time.perf_counter()
    result = matcher.decide(recognition)
    item.latency_ms = round(verdict.decision_ms + (time.perf_counter() - t0) * 1000, 1)
    item.engine_ms = round(float(recognition.engine_ms), 1)
    nbest = recognition.nbest
    item.heard = nbest[0][0] if nbest else ""
    item.confidence = round(float(nbest[0][1]), 4) if nbest else 0.0
    best = result.best
    item.verdict = str(result.verdict)
    if national is not None and worth_a_second_pass(result) and verdict.utterance:
        t0 = time.perf_counter()
        found, p_right = national.decide(verdict.utterance)
        outside = outside_the_code(found, {m.cbs_code for m in matcher.candidates}, p_right)
        item.national_ms = round((time.perf_counter() - t0) * 1000, 1)
        item.national_verdict, item.national_best = str(found.verdict), found.best.cbs_code if found.best else ""
        item.latency_ms = round(item.latency_ms + item.national_ms, 1)
        item.second_pass = (SecondPass.OUTSIDE if outside else SecondPass.IN_CODE if found.best
                            else SecondPass.NOTHING).value
        if outside:  # proposed by a question: "confirm" one, or "choose" of two
            best = outside[0]
            item.verdict = "confirm" if len(outside) == 1 else "choose"
    item.action = ACTIONS[item.verdict]
    if best is not None:
        item.decided_cbs_code = best.cbs_code
        item.score = best.score


# --- running a manifest -----------------------------------------------------------------------

def replay(manifest: Path, recogniser: Recogniser, plan: NumberingPlan | None = None,
           progress: Callable[[int, int], None] | None = None, second_pass: bool = True) -> list[ItemResult]:
    plan = plan or load_base_plan()
    rows = read_manifest(manifest)
    matchers: dict[str, Matcher] = {}
    national = NationalPass(recogniser, plan) if second_pass else None
    out = []
    for k, row in enumerate(rows):
        out.append(run_item(row, manifest.parent, plan, recogniser, matchers, national))
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
            items = replay(manifest, recogniser, plan, progress=None if args.quiet else progress_bar,
                           second_pass=not args.no_second_pass)
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
    p.add_argument("--no-second-pass", action="store_true",
                   help="decide among the area code's municipalities only (a call with FlowSettings."
                        "national_second_pass off)")
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
