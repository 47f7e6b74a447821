"""``ivr serve``: the controller (FastAGI, AMI, speech, HTTP API, metrics)."""

from __future__ import annotations

import asyncio


def register(sub) -> None:
    p = sub.add_parser("serve", help="run the controller (FastAGI, AMI, speech, HTTP API, metrics)")
    p.set_defaults(func=_serve)


def _serve(args) -> int:
    from ivr.config import load_settings
    from ivr.service import serve

    settings = load_settings(**({"plan_file": args.plan_file} if args.plan_file else {}))
    asyncio.run(serve(settings))
    return 0
