"""``ivr plan check|show|reload`` and ``ivr route``: the numbering plan and dry-run decisions."""

from __future__ import annotations

import json
import sys

import httpx

from ivr.config import load_settings
from ivr.core.flow import CallFlow, CallStarted, Digit
from ivr.core.routing import Verdict, route
from ivr.plan_admin import read_plan_file


def register(sub) -> None:
    plan = sub.add_parser("plan", help="inspect the numbering plan").add_subparsers(dest="plan_command", required=True)
    p = plan.add_parser("check", help="validate the plan (and override file)")
    p.set_defaults(func=_plan_check)
    p = plan.add_parser("show", help="one area code: its municipalities and routing mode")
    p.add_argument("area_code")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_plan_show)
    p = plan.add_parser("reload", help="make the running service read the override file again (as SIGHUP does)")
    p.add_argument("--url", help="the service's API (default: http://$IVR_API_HOST:$IVR_API_PORT)")
    p.set_defaults(func=_plan_reload)

    p = sub.add_parser("route", help="dry run: the routing decision for a dialled number, and why")
    p.add_argument("number")
    p.add_argument("--dtmf", help="menu digit(s) the caller presses")
    p.add_argument("--no-speech", action="store_true", help="as if no recogniser were available")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_route)


def plan_from_args(args):
    """The override file's plan, validated (``--plan-file`` or ``IVR_PLAN_FILE``)."""
    return read_plan_file(args.plan_file or load_settings().plan_file)


def _plan_check(args) -> int:
    plan = plan_from_args(args)
    shared = sum(1 for a in plan.area_codes.values() if a.shared)
    modes: dict[str, int] = {}
    for a in plan.area_codes.values():
        modes[a.mode.value] = modes.get(a.mode.value, 0) + 1
    statuses: dict[str, int] = {}
    for m in plan.municipalities.values():
        statuses[m.status.value] = statuses.get(m.status.value, 0) + 1
    print(f"plan {plan.version}: OK")
    print(f"  {len(plan.municipalities)} municipalities ({_fmt(statuses)})")
    print(f"  {len(plan.area_codes)} area codes, {shared} shared ({_fmt(modes)})")
    print(f"  {len(plan.calamities)} calamity override(s)")
    return 0


def _plan_reload(args) -> int:
    """POST /v1/plan/reload with the admin token: the service's plan admin reloads and audits nothing new."""
    settings = load_settings()
    url = (args.url or f"http://{settings.api_host}:{settings.api_port}").rstrip("/") + "/v1/plan/reload"
    token = settings.admin_token.get_secret_value() if settings.admin_token is not None else ""
    try:
        r = httpx.post(url, headers={"Authorization": f"Bearer {token}", "X-Admin-User": "cli"}, timeout=30)
    except httpx.HTTPError as exc:
        print(f"reload: cannot reach {url}: {exc}", file=sys.stderr)
        return 1
    if r.status_code != 200:
        print(f"reload refused ({r.status_code}): {r.json().get('detail') if r.content else ''}", file=sys.stderr)
        return 1
    body = r.json()
    print(f"plan reloaded: {body['previous_version']} -> {body['plan_version']}")
    return 0


def _fmt(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))


def _plan_show(args) -> int:
    plan = plan_from_args(args)
    code = args.area_code.strip()
    code = code if code.startswith("0") else "0" + code
    if code not in plan.area_codes:
        print(f"unknown area code {args.area_code!r}", file=sys.stderr)
        return 1
    area = plan.area_codes[code]
    rows = [{"cbs_code": m.cbs_code, "name": m.name, "status": m.status.value, "destination": m.destination,
             "alt_number": m.alt_number} for m in plan.candidates(code)]
    if args.json:
        print(json.dumps({"area_code": code, "main_place": area.main_place, "mode": area.mode.value,
                          "population": area.population, "municipalities": rows}, indent=2))
        return 0
    print(f"area code {code} ({area.main_place}), mode {area.mode.value}, {area.population:,} residents")
    for i, r in enumerate(rows, 1):
        alt = f"  alt {r['alt_number']}" if r["alt_number"] else ""
        print(f"  {i}. {r['name']:<28} {r['cbs_code']}  {r['status']:<13} {r['destination']}{alt}")
    return 0


def _route(args) -> int:
    plan = plan_from_args(args)
    decision = route(plan, args.number, speech_available=not args.no_speech)
    out = {"number": args.number, **decision.to_dict()}
    if args.dtmf and decision.verdict is Verdict.ASK:
        # the caller's digits go through the real call flow (menu pages, invalid digits, operator)
        flow = CallFlow(plan, speech_available=False)
        flow.handle(CallStarted(0.0, "dry-run", args.number))
        for i, digit in enumerate(args.dtmf):
            flow.handle(Digit(float(i + 1), digit))
        rec = flow.record  # the flow notes the destination of the transfer it asks for
        chosen = plan.municipalities.get(rec.municipality or "")
        out.update(verdict=rec.decision, reason=rec.reason, municipality=rec.municipality,
                   municipality_name=chosen.name if chosen else None, destination=rec.destination, candidates=[])
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print(f"{out['number']}: {out['verdict']} — {out['reason']}")
        for key in ("area_code", "mode", "municipality_name", "destination", "message"):
            if out[key]:
                print(f"  {key.removesuffix('_name')}: {out[key]}")
        if out["candidates"]:
            print("  candidates: " + ", ".join(plan.municipalities[c].name for c in out["candidates"]))
    return 0
