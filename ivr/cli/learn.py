"""``ivr learn``: the self-learning loop's candidates (issue 12): list, approve, reject, purge.

The same as the admin API's ``/v1/learning`` routes, on the records database of the
settings (``IVR_DB_URL`` / ``IVR_DB_PATH``); every change is in the audit log. A running
controller picks an approval up within ``IVR_LEARN_REFRESH_S``.
"""

from __future__ import annotations

import getpass
import json


def register(sub) -> None:
    p = sub.add_parser("learn", help="self-learning speech routing: list, approve, reject or purge kept utterances")
    cmd = p.add_subparsers(dest="learn_command", required=True)
    ls = cmd.add_parser("list", help="kept utterances (candidates, active, rejected), oldest first")
    ls.add_argument("--status", choices=("candidate", "active", "rejected"))
    ls.add_argument("--municipality", help="CBS code")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=_list)
    for name, helptext in (("approve", "make candidates references of the engine (if the held-back check "
                                        "does not get worse)"), ("reject", "reject candidates or active ones")):
        a = cmd.add_parser(name, help=helptext)
        a.add_argument("ids", type=int, nargs="+")
        a.set_defaults(func=_decide, decision=name)
    pg = cmd.add_parser("purge", help="delete every kept utterance of one caller hash, or the expired ones")
    pg.add_argument("--caller", help="the caller's salted hash (as in the call records)")
    pg.set_defaults(func=_purge)


def _learning(args, engine: bool):
    from ivr.adapters.learning import Learning
    from ivr.adapters.store import open_store
    from ivr.config import load_settings

    settings = load_settings(**({"plan_file": args.plan_file} if args.plan_file else {}))
    store = open_store(settings.records_db)
    plan = None
    recogniser = None
    if engine:
        from ivr.plan_admin import PlanAdmin
        from ivr.speech.fusion_engine import FusionEngine

        plan = PlanAdmin(store, settings.plan_file).plan
        recogniser = FusionEngine(plan)
    return Learning(store, settings, engine=recogniser, plan=(lambda: plan) if plan else None), store


def _who() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except Exception:
        return "cli"


def _list(args) -> int:
    learning, store = _learning(args, engine=False)
    try:
        rows = store.learned(status=args.status, cbs_code=args.municipality)
    finally:
        store.close()
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    print(f"{'id':>5} {'status':9} {'cbs':7} {'phrase':22} {'area':5} {'how':9} {'caller':16} collected")
    for r in rows:
        import time
        when = time.strftime("%Y-%m-%d %H:%M", time.gmtime(r["collected_at"]))
        print(f"{r['id']:>5} {r['status']:9} {r['cbs_code']:7} {r['phrase'][:22]:22} {r['area_code'] or '-':5} "
              f"{r['how']:9} {r['caller'] or '-':16} {when}")
    print(f"{len(rows)} kept")
    return 0


def _decide(args) -> int:
    learning, store = _learning(args, engine=args.decision == "approve")
    failed = 0
    try:
        for item_id in args.ids:
            done = (learning.approve if args.decision == "approve" else learning.reject)(item_id, _who())
            print(json.dumps(done))
            failed += not done["ok"]
    finally:
        learning.close()
        store.close()
    return 1 if failed else 0


def _purge(args) -> int:
    learning, store = _learning(args, engine=False)
    try:
        if args.caller:
            gone = learning.purge(args.caller, _who())
        else:
            gone = store.purge_learned()
    finally:
        learning.close()
        store.close()
    print(f"deleted {gone}")
    return 0
