"""``ivr``: the command line, one module per command group.

Runtime commands live here (``ivr.cli.*``); the lab's commands (corpus, replay, loadtest,
bench) plug in through the ``ivr14.commands`` entry point group, so the runtime never
imports the lab package (``pip install -e .`` registers them; a runtime-only install has
none).
"""

from __future__ import annotations

import argparse
import logging
import sys
from importlib.metadata import entry_points
from pathlib import Path

from ivr.cli import learn, plan, report, serve, simulate, speech
from ivr.core.plan import PlanError

ENTRY_POINTS = "ivr14.commands"  # register(subparsers) functions of other packages (the lab)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ivr", description="14+ netnummer routing controller and IVR")
    parser.add_argument("--plan-file", type=Path, help="operator override file (TOML); default: $IVR_PLAN_FILE")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)
    for group in (serve, plan, speech, simulate, report, learn):
        group.register(sub)
    for ep in entry_points(group=ENTRY_POINTS):
        try:
            ep.load()(sub)
        except ModuleNotFoundError as exc:  # a runtime-only install: the lab is not there
            logging.getLogger(__name__).debug("commands %s unavailable: %s", ep.name, exc)

    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except PlanError as exc:
        print(f"plan error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
