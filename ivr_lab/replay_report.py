"""What a replay run reports: headline metrics (overall and per kind), the confusion table,
the text summary, and the progress bar."""

from __future__ import annotations

import sys
from collections import Counter, defaultdict
from dataclasses import asdict
from typing import Iterable, Sequence

import numpy as np

from ivr_lab.replay_items import ItemResult

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
    outside = [i for i in items if i.outside_code]
    if outside:  # callers on the wrong area code: reached by the national second pass, or not
        out["in_code"] = compute_metrics([i for i in items if not i.outside_code])
        out["outside_code"] = compute_metrics(outside)
    out["second_pass"] = dict(sorted(Counter(i.second_pass for i in items if i.second_pass).items()))
    out["confusion"] = confusion(items)
    out["items"] = [asdict(i) for i in items]
    return out


def format_text(rep: dict) -> str:
    lines = []
    m = rep["metrics"]
    lines.append("  ".join(f"{k}={v}" for k, v in m.items()))
    for kind, km in rep.get("per_kind", {}).items():
        lines.append(f"  {kind:8s} n={km['n']:4d} first={km['accuracy_first_attempt']:.3f} "
                     f"misroutes={km['misroutes']} confirm={km['confirm_rate']:.3f} choose={km['choose_rate']:.3f} "
                     f"reject={km['reject_rate']:.3f} p50={km['latency_ms_p50']}ms p95={km['latency_ms_p95']}ms")
    for group in ("in_code", "outside_code"):
        if group in rep:
            g = rep[group]
            lines.append(f"  {group:12s} n={g['n']:4d} first={g['accuracy_first_attempt']:.3f} "
                         f"misroutes={g['misroutes']} confirm={g['confirm_rate']:.3f} reject={g['reject_rate']:.3f}")
    if rep.get("second_pass"):
        lines.append("  national second pass: " + ", ".join(f"{k} {v}" for k, v in rep["second_pass"].items()))
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


def progress_bar(done: int, total: int) -> None:
    width = 30
    filled = int(width * done / max(total, 1))
    print(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total}", end="", file=sys.stderr, flush=True)
    if done == total:
        print(file=sys.stderr)
