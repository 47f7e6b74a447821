"""``ivr grammars build`` and ``ivr references``: what the speech engines need on disk."""

from __future__ import annotations

import time
from pathlib import Path

from ivr.cli.plan import plan_from_args
from ivr.config import load_settings
from ivr.plan_files import load_base_plan
from ivr.speech.engines import ENGINES, cache_references
from ivr.speech.grammar import DEFAULT_DIR, load_grammar, write_grammars


def register(subparsers) -> None:
    _register_grammars(subparsers)
    _register_references(subparsers)


def _register_grammars(subparsers) -> None:
    grammars = subparsers.add_parser("grammars", help="recogniser grammars per area code")
    sub = grammars.add_subparsers(dest="grammars_command", required=True)
    p = sub.add_parser("build", help="write grammars/<code>.json for every shared area code")
    p.add_argument("--out", type=Path, default=DEFAULT_DIR, help="output directory (default: ./grammars)")
    p.add_argument("--all", action="store_true", help="also single-municipality codes")
    p.set_defaults(func=_build)


def _build(args) -> int:
    plan = plan_from_args(args)
    paths = write_grammars(plan, args.out, shared_only=not args.all)
    sizes = [len(load_grammar(p.stem, args.out)) for p in paths]
    print(f"wrote {len(paths)} grammars to {args.out} "
          f"({min(sizes, default=0)}-{max(sizes, default=0)} phrases each, plan {plan.version})")
    return 0


def _register_references(sub) -> None:
    p = sub.add_parser("references", help="build the speech engine's spoken references into the disk cache")
    p.add_argument("--engine", choices=ENGINES, help="default: IVR_SPEECH_ENGINE")
    p.set_defaults(func=_cache_command)


def _cache_command(args) -> int:
    engine = args.engine or load_settings().speech_engine
    t0 = time.perf_counter()
    made = cache_references(engine, load_base_plan())
    print(f"references for {engine}: {made} made ({time.perf_counter() - t0:.1f} s)")
    return 0
