"""The cluster under load (issue 13): the zero-failure rate of the DTMF path through Kamailio with two
Asterisk nodes and with one, and the failover time when a node is killed.

    .venv/bin/python loadtest/bench_cluster.py [--rates 10,20,30] [--seconds 8] [--failovers 3]

Needs the chroot configs rendered (scripts/asterisk-install.sh) and the cluster's ports free (it starts
its own cluster in a temporary folder: PostgreSQL, two nodes, two controllers, Kamailio, all stopped at
the end). Each step is one SIPp run of DTMF calls (14 0113, a menu digit) at a fixed rate for
``--seconds``; a step passes when every call succeeded and every call has its record in PostgreSQL. The
zero-failure rate is the highest passing rate before the first failing one. "One node" is the same
cluster with node n2's Asterisk stopped (Kamailio sees it down and sends everything to n1).
Failover: calls at 4/s, ``kill -9`` of n1's Asterisk after 2 s; printed: seconds until Kamailio's
dispatcher shows n1 inactive, and how many calls never reached an Asterisk (0 = none lost).
The machine is shared: the nodes, controllers and SIPp all run on the same cores.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ivr.adapters.store import open_store  # noqa: E402
from ivr.core.callrecord import hash_caller  # noqa: E402
from ivr.plan_files import load_base_plan  # noqa: E402
from ivr_lab.cluster import Cluster  # noqa: E402
from ivr_lab.sipp import CallScript, Dtmf, Pause, run_sipp  # noqa: E402

SALT = "bench-cluster-salt"


def script(prefix: str) -> CallScript:
    digit = str([m.cbs_code for m in load_base_plan().candidates("0113")].index("GM0703") + 1)
    # the lab municipality hangs up ~11 s after the digit (announcement, ring, 3 s connected); 20 s leaves
    # room for a loaded node, so a late BYE is not counted as a failed call (12 s failed 10 of 640 at 80/s)
    return CallScript("140113", caller=f"{prefix}[call_number]", steps=[Pause(1200), Dtmf(digit)], via_proxy=True,
                      answer_timeout_ms=10000, bye_timeout_ms=20000)


def count_records(cluster: Cluster, prefix: str, calls: int, timeout_s: float = 15) -> int:
    wanted = {hash_caller(f"{prefix}{i}", SALT) for i in range(1, calls + 1)}
    deadline = time.monotonic() + timeout_s
    while True:
        store = open_store(cluster.db_url)
        try:
            n = sum(1 for r in store.iter_query() if r.caller in wanted and r.ended_at is not None)
        finally:
            store.close()
        if n >= calls or time.monotonic() > deadline:
            return n
        time.sleep(0.3)


def ramp(cluster: Cluster, label: str, rates: list[float], seconds: float, tag: int) -> dict:
    steps = []
    best = 0.0
    for k, rate in enumerate(rates):
        calls = max(1, int(rate * seconds))
        prefix = f"06{tag}{k}"
        r = run_sipp(script(prefix), calls=calls, rate=rate, target=cluster.sip_target)
        records = count_records(cluster, prefix, calls)
        ok = r.successful == calls and records == calls
        step = {"rate": rate, "calls": calls, "ok": r.successful, "failed": calls - r.successful, "records": records,
                "invite_to_200_ms": round(r.stat_float("ResponseTime1(C)") * 1000, 1)}
        steps.append(step)
        print(f"  {label}: {rate:g} calls/s x {seconds:g} s: {step}", flush=True)
        if not ok:
            break
        best = rate
    return {"zero_failure_rate": best, "steps": steps}


def failover(cluster: Cluster, runs: int) -> list[dict]:
    victim, survivor = cluster.nodes
    out = []
    for k in range(runs):
        cluster.start_asterisk(victim)
        cluster.wait_dispatcher({victim.name: "A", survivor.name: "A"}, timeout_s=15)
        log = cluster.dir / "logs/kamailio.log"
        mark = log.stat().st_size
        res: dict = {}
        cid = f"fo{k}-%u@%s"
        t = threading.Thread(target=lambda: res.update(r=run_sipp(script(f"067{k}"), calls=24, rate=4,
                                                                   target=cluster.sip_target,
                                                                   extra_args=["-cid_str", cid])))
        t.start()
        time.sleep(2.0)
        os.kill(cluster.ast_pid(victim), signal.SIGKILL)
        down_s = cluster.wait_dispatcher({victim.name: "I"}, timeout_s=15)
        t.join(120)
        text = log.read_bytes()[mark:].decode(errors="replace")
        reached = set(re.findall(rf"node-reached call=(fo{k}-\d+@\S+)", text))
        retried = len(set(re.findall(rf"call (fo{k}-\d+@\S+): node failed", text)))
        r = res["r"]
        out.append({"marked_down_s": round(down_s, 2), "calls": 24, "ok": r.successful,
                    "never_reached_asterisk": 24 - len(reached), "retried_on_other_node": retried})
        print(f"  failover {k + 1}: {out[-1]}", flush=True)
    cluster.start_asterisk(victim)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rates", default="10,20,30")
    ap.add_argument("--seconds", type=float, default=8)
    ap.add_argument("--failovers", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    rates = [float(x) for x in args.rates.split(",")]
    directory = Path(tempfile.mkdtemp(prefix="ivr14-bench-cluster-", dir="/tmp"))
    cluster = Cluster(dir=directory, pg_port=55477, extra_env={"IVR_CALLER_SALT": SALT, "IVR_SPEECH_ENGINE": "none"})  # the DTMF path
    result: dict = {"rates": rates, "seconds": args.seconds, "cpus": os.cpu_count()}
    try:
        cluster.up(install=False)
        print("two nodes through Kamailio:", flush=True)
        result["two_nodes"] = ramp(cluster, "two nodes", rates, args.seconds, 1)
        if args.failovers:
            print("failover (kill -9 of n1 during calls at 4/s):", flush=True)
            result["failover"] = failover(cluster, args.failovers)
        cluster.stop_asterisk(cluster.nodes[1])
        cluster.wait_dispatcher({cluster.nodes[1].name: "I", cluster.nodes[0].name: "A"}, timeout_s=15)
        print("one node through Kamailio (n2 stopped):", flush=True)
        result["one_node"] = ramp(cluster, "one node", rates, args.seconds, 2)
    finally:
        cluster.down(keep_db=False)
        shutil.rmtree(directory, ignore_errors=True)
    one, two = result["one_node"]["zero_failure_rate"], result["two_nodes"]["zero_failure_rate"]
    print(f"\nzero-failure rate, DTMF path: one node {one:g} calls/s, two nodes {two:g} calls/s"
          + (f" ({two / one:.2f}x)" if one else ""))
    if result.get("failover"):
        downs = [f["marked_down_s"] for f in result["failover"]]
        print(f"failover: node marked down after {statistics.median(downs):.2f} s median "
              f"(max {max(downs):.2f} s) over {len(downs)} kills; calls that never reached an Asterisk: "
              f"{sum(f['never_reached_asterisk'] for f in result['failover'])}")
    if args.json:
        print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
