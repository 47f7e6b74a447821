"""``ivr report``: the KPIs of :mod:`ivr.core.report` as a table, JSON, CSV or HTML (with inline SVG plots)."""

from __future__ import annotations

import argparse
import csv
import html
import io
import json
import math
import re
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ivr.core.report import ATTEMPT_BUCKETS, BASELINE_2020, HEADLINE_KEYS, GroupKpis, Kpis, compute_kpis

HEADLINE_LABELS = {
    "first_attempt": "recognised at the first attempt",
    "after_one_repeat": "... after one repeat",
    "after_several": "... after several repeats",
    "right_municipality": "right municipality",
    "hangup_during_transfer": "hang-up during transfer",
    "ivr_seconds_p50": "time in IVR p50 (s)",
    "ivr_seconds_p95": "time in IVR p95 (s)",
}
_SECONDS = {"ivr_seconds_p50", "ivr_seconds_p95"}


def _fmt(key: str, value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.1f}" if key in _SECONDS else f"{100 * value:.1f}%"


# --- names for display (optional) ----------------------------------------------------------


def plan_names() -> dict[str, str]:
    """CBS code -> name and area code -> main place, from the shipped plan; {} if unavailable."""
    try:
        from ivr.plan_files import load_base_plan

        plan = load_base_plan()
    except Exception:
        return {}
    names = {cbs: m.name for cbs, m in plan.municipalities.items()}
    names.update({code: a.main_place for code, a in plan.area_codes.items()})
    return names


def _rows(kpis: Kpis, names: dict[str, str]) -> list[tuple[str, str, str, GroupKpis]]:
    rows = [("overall", "", "", kpis.overall)]
    rows += [("area_code", code, names.get(code, ""), g) for code, g in kpis.by_area_code.items()]
    rows += [("municipality", cbs, names.get(cbs, ""), g) for cbs, g in kpis.by_municipality.items()]
    rows += [("month", month, "", g) for month, g in kpis.by_month.items()]
    return rows


# --- table ------------------------------------------------------------------------------------


def render_table(kpis: Kpis, names: dict[str, str] | None = None) -> str:
    names = names or {}
    o = kpis.overall
    out = io.StringIO()
    w = out.write
    w(f"{o.calls} calls")
    if kpis.filters:
        w(" (" + ", ".join(f"{k}={_show_filter(k, v)}" for k, v in kpis.filters.items()) + ")")
    if kpis.unfinished:
        w(f"; {kpis.unfinished} in progress left out")
    w("\n\n")
    w(f"{'KPI (speech callers)':<34}{'2020':>8}{'now':>9}\n")
    for key in HEADLINE_KEYS:
        w(f"{HEADLINE_LABELS[key]:<34}{_fmt(key, kpis.baseline[key]):>8}{_fmt(key, o.headline[key]):>9}\n")
    w("\noutcomes: " + ", ".join(f"{k} {v}" for k, v in o.outcomes.items() if v) + "\n")
    w("hang-ups by phase: " + ", ".join(f"{k} {v}" for k, v in o.hangups_by_phase.items()) + "\n")
    w("municipality not reachable, then: " + ", ".join(f"{k} {v}" for k, v in o.failover.items()) + "\n")
    w("national second pass: " + ", ".join(f"{k} {v}" for k, v in o.second_pass.items()) + "\n")
    w("suggestion asked first: " + ", ".join(f"{k} {v}" for k, v in o.suggestions.items()) + "\n")
    w("asked back instead of transferred: " + ", ".join(f"{k} {v}" for k, v in o.asked_back.items()) + "\n")
    w(_languages_line(o) + "\n")
    r = o.routing["all"]
    w(f"routed {r.routed}, misrouted {r.misrouted} (" +
      ", ".join(f"{k} {v}" for k, v in r.misroutes.items()) + f"), ground truth known for {r.ground_truth}\n")
    w("latency (s):\n")
    for name, lat in o.latency.items():
        if lat.count:
            w(f"  {name:<26} n={lat.count:<7} p50={lat.p50:<8g} p95={lat.p95:<8g} max={lat.max:g}\n")
    head = (f"{'':<8}{'':<22}{'calls':>7}{'1st':>7}{'+1':>7}{'more':>7}{'right':>7}{'hangT':>7}"
            f"{'p50 s':>7}{'p95 s':>7}\n")
    for scope, title in (("area_code", "per area code"), ("municipality", "per municipality (decided)"),
                         ("month", "per month (UTC): does recognition improve as the service learns?")):
        groups = {"area_code": kpis.by_area_code, "municipality": kpis.by_municipality,
                  "month": kpis.by_month}[scope]
        if not groups:
            continue
        w(f"\n{title}:\n{head}")
        for key, g in groups.items():
            h = g.headline
            w(f"{key:<8}{names.get(key, '')[:21]:<22}{g.calls:>7}" +
              "".join(f"{_fmt(k, h[k]):>7}" for k in HEADLINE_KEYS) + "\n")
    return out.getvalue()


def _languages_line(o) -> str:
    """Language and entry of the calls (2020: English wished for; 14-numbers unreachable from abroad)."""
    langs = ", ".join(f"{k} {v} (routed {o.routed_by_language.get(k, 0)})" for k, v in o.languages.items())
    entries = ", ".join(f"{k} {v} (routed {o.routed_by_entry.get(k, 0)})" for k, v in o.entries.items())
    return f"languages: {langs or '-'}; entry: {entries}"


def _show_filter(key: str, value: Any) -> str:
    if key in ("since", "until") and isinstance(value, (int, float)):
        return datetime.fromtimestamp(value, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return str(value)


# --- CSV ----------------------------------------------------------------------------------------

CSV_COLUMNS = ["scope", "key", "name", "calls", *HEADLINE_KEYS, "asked_speech", "routed", "misrouted",
               "transfers_to_municipality", *(f"hangup_{p}" for p in ("greeting", "menu", "speech", "confirm",
                                                                      "transfer"))]


def render_csv(kpis: Kpis, names: dict[str, str] | None = None) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    writer.writerow(["baseline_2020", "", "", "", *("" if BASELINE_2020[k] is None else BASELINE_2020[k]
                                                    for k in HEADLINE_KEYS), *[""] * 9])
    for scope, key, name, g in _rows(kpis, names or {}):
        rec = g.recognition.get("speech")
        writer.writerow([scope, key, name, g.calls,
                         *("" if g.headline[k] is None else g.headline[k] for k in HEADLINE_KEYS),
                         rec.asked if rec else 0, g.routing["all"].routed, g.routing["all"].misrouted,
                         g.transfer["all"].reached,
                         *(g.hangups_by_phase.get(p, 0) for p in ("greeting", "menu", "speech", "confirm",
                                                                   "transfer"))])
    return out.getvalue()


# --- HTML + SVG -------------------------------------------------------------------------------------

_FONT = "font-family='system-ui,sans-serif' font-size='12'"
_NOW, _THEN, _GRID, _INK = "#2563eb", "#9ca3af", "#e5e7eb", "#111827"


def svg_bars(title: str, categories: list[str], series: list[tuple[str, str, list[float]]], *,
             percent: bool = True, width: int = 460, height: int = 260) -> str:
    """Grouped vertical bars: series = [(legend, colour, values per category)]."""
    left, right, top, bottom = 48, 12, 34, 40
    pw, ph = width - left - right, height - top - bottom
    vmax = max([v for _, _, vals in series for v in vals] + [0.0])
    vmax = 1.0 if percent and vmax > 0.5 else _nice(vmax if vmax > 0 else 1.0) if percent else _nice(max(vmax, 4.0))
    parts = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' role='img' "
             f"aria-label='{html.escape(title)}' {_FONT}>",
             f"<text x='{left}' y='18' font-size='14' font-weight='600' fill='{_INK}'>{html.escape(title)}</text>"]
    for i in range(5):
        v = vmax * i / 4
        y = top + ph - ph * i / 4
        parts.append(f"<line x1='{left}' x2='{left + pw}' y1='{y:.1f}' y2='{y:.1f}' stroke='{_GRID}'/>")
        text = f"{100 * v:.0f}%" if percent else f"{v:g}"
        parts.append(f"<text x='{left - 6}' y='{y + 4:.1f}' text-anchor='end' fill='#4b5563'>{text}</text>")
    group_w = pw / max(1, len(categories))
    bar_w = min(34.0, group_w * 0.8 / max(1, len(series)))
    for ci, cat in enumerate(categories):
        gx = left + ci * group_w + (group_w - bar_w * len(series)) / 2
        for si, (_, colour, values) in enumerate(series):
            v = values[ci]
            h = 0 if vmax == 0 else ph * min(v, vmax) / vmax
            x = gx + si * bar_w
            parts.append(f"<rect x='{x:.1f}' y='{top + ph - h:.1f}' width='{bar_w - 2:.1f}' height='{h:.1f}' "
                         f"fill='{colour}'><title>{html.escape(cat)}: "
                         f"{(f'{100 * v:.1f}%' if percent else f'{v:g}')}</title></rect>")
            if v > 0:
                label = f"{100 * v:.0f}%" if percent else f"{v:g}"
                parts.append(f"<text x='{x + (bar_w - 2) / 2:.1f}' y='{top + ph - h - 3:.1f}' text-anchor='middle' "
                             f"font-size='10' fill='{_INK}'>{label}</text>")
        parts.append(f"<text x='{left + (ci + 0.5) * group_w:.1f}' y='{top + ph + 16}' text-anchor='middle' "
                     f"fill='{_INK}'>{html.escape(cat)}</text>")
    lx = left + pw
    for si, (legend, colour, _) in enumerate(reversed(series)):
        tx = lx - 70 * (si + 1)
        parts.append(f"<rect x='{tx}' y='{height - 14}' width='10' height='10' fill='{colour}'/>"
                     f"<text x='{tx + 14}' y='{height - 5}' fill='{_INK}'>{html.escape(legend)}</text>")
    parts.append("</svg>")
    return "".join(parts)


def svg_cdf(title: str, curves: list[tuple[str, str, list[tuple[float, float]]]], *, xlabel: str = "seconds",
            width: int = 460, height: int = 260) -> str:
    """Step CDFs on a linear x axis from 0 to the largest p99 (outliers beyond are clipped)."""
    left, right, top, bottom = 48, 14, 34, 40
    pw, ph = width - left - right, height - top - bottom
    xmax = 0.0
    for _, _, pts in curves:
        p99 = next((x for x, f in pts if f >= 0.99), pts[-1][0] if pts else 0.0)
        xmax = max(xmax, p99)
    xmax = _nice(xmax * 1.05 if xmax > 0 else 1.0)
    parts = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' role='img' "
             f"aria-label='{html.escape(title)}' {_FONT}>",
             f"<text x='{left}' y='18' font-size='14' font-weight='600' fill='{_INK}'>{html.escape(title)}</text>"]
    for i in range(5):
        y = top + ph - ph * i / 4
        parts.append(f"<line x1='{left}' x2='{left + pw}' y1='{y:.1f}' y2='{y:.1f}' stroke='{_GRID}'/>"
                     f"<text x='{left - 6}' y='{y + 4:.1f}' text-anchor='end' fill='#4b5563'>{25 * i}%</text>")
    for i in range(6):
        v = xmax * i / 5
        x = left + pw * i / 5
        parts.append(f"<text x='{x:.1f}' y='{top + ph + 16}' text-anchor='middle' fill='#4b5563'>{v:g}</text>")
    parts.append(f"<text x='{left + pw / 2:.1f}' y='{height - 6}' text-anchor='middle' fill='{_INK}'>"
                 f"{html.escape(xlabel)}</text>")
    for ci, (legend, colour, pts) in enumerate(curves):
        if not pts:
            continue
        path, prev_f = [f"M{left},{top + ph}"], 0.0
        for xv, f in pts:
            x = left + pw * min(xv, xmax) / xmax
            path.append(f"L{x:.1f},{top + ph - ph * prev_f:.1f}L{x:.1f},{top + ph - ph * f:.1f}")
            prev_f = f
        path.append(f"L{left + pw},{top + ph - ph * prev_f:.1f}")
        parts.append(f"<path d='{''.join(path)}' fill='none' stroke='{colour}' stroke-width='2'/>")
        parts.append(f"<rect x='{left + 10}' y='{top + 8 + 16 * ci}' width='10' height='10' fill='{colour}'/>"
                     f"<text x='{left + 24}' y='{top + 17 + 16 * ci}' fill='{_INK}'>{html.escape(legend)}</text>")
    parts.append("</svg>")
    return "".join(parts)


def _nice(x: float) -> float:
    exp = math.floor(math.log10(x))
    for m in (1, 2, 2.5, 5, 10):
        if m * 10**exp >= x:
            return m * 10**exp
    return 10 ** (exp + 1)


def render_html(kpis: Kpis, names: dict[str, str] | None = None) -> str:
    names = names or {}
    o = kpis.overall
    e = html.escape
    rec = o.recognition.get("speech")
    asked = rec.asked if rec else 0
    now_shares = [(rec.attempts[b] / asked if asked else 0.0) for b in ATTEMPT_BUCKETS] if rec else [0.0] * 4
    then = [BASELINE_2020["first_attempt"], BASELINE_2020["after_one_repeat"], BASELINE_2020["after_several"],
            1 - BASELINE_2020["first_attempt"] - BASELINE_2020["after_one_repeat"] - BASELINE_2020["after_several"]]
    attempts_svg = svg_bars(f"Questions until a decision (speech callers, n={asked})",
                            ["1", "2", "3+", "undecided"], [("2020", _THEN, then), ("now", _NOW, now_shares)])
    colours = ["#2563eb", "#db2777", "#059669", "#d97706"]
    curves = [(name.replace("_seconds", "").replace("_", " "), colours[i % 4], kpis.cdf.get(name, []))
              for i, name in enumerate(("ivr_seconds", "transfer_setup_seconds")) if kpis.cdf.get(name)]
    cdf_svg = svg_cdf("Latency CDF: time in IVR, transfer setup", curves)
    small = [(name.replace("_seconds", "").replace("_", " "), colours[i % 4], kpis.cdf.get(name, []))
             for i, name in enumerate(("speech_decision_seconds", "recogniser_seconds", "unique_decision_seconds"))
             if kpis.cdf.get(name)]
    cdf2_svg = svg_cdf("Latency CDF: deciding", small) if small else ""
    phases = list(o.hangups_by_phase)
    hang_svg = svg_bars(f"Caller hang-ups by phase (n={sum(o.hangups_by_phase.values())})", phases,
                        [("calls", _NOW, [float(o.hangups_by_phase[p]) for p in phases])], percent=False)

    def headline_table() -> str:
        rows = "".join(f"<tr><td>{e(HEADLINE_LABELS[k])}</td><td>{_fmt(k, kpis.baseline[k])}</td>"
                       f"<td><b>{_fmt(k, o.headline[k])}</b></td></tr>" for k in HEADLINE_KEYS)
        return f"<table><tr><th>KPI (speech callers)</th><th>2020</th><th>now</th></tr>{rows}</table>"

    def group_table(title: str, groups: dict[str, GroupKpis]) -> str:
        if not groups:
            return ""
        head = "".join(f"<th>{e(HEADLINE_LABELS[k])}</th>" for k in HEADLINE_KEYS)
        rows = "".join(f"<tr><td>{e(key)}</td><td>{e(names.get(key, ''))}</td><td>{g.calls}</td>" +
                       "".join(f"<td>{_fmt(k, g.headline[k])}</td>" for k in HEADLINE_KEYS) + "</tr>"
                       for key, g in groups.items())
        return f"<h2>{e(title)}</h2><table><tr><th></th><th></th><th>calls</th>{head}</tr>{rows}</table>"

    filters = ", ".join(f"{k}={_show_filter(k, v)}" for k, v in kpis.filters.items()) or "all calls"
    outcomes = ", ".join(f"{k} {v}" for k, v in o.outcomes.items() if v)
    generated = datetime.fromtimestamp(kpis.generated_at, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>14+ IVR report</title>
<style>
body{{font-family:system-ui,sans-serif;margin:24px;color:{_INK};max-width:1100px}}
table{{border-collapse:collapse;margin:8px 0 20px}} td,th{{border-bottom:1px solid {_GRID};padding:3px 8px;
text-align:right}} td:first-child,th:first-child,td:nth-child(2){{text-align:left}}
.plots{{display:flex;flex-wrap:wrap;gap:16px}} .plots svg{{border:1px solid {_GRID};border-radius:6px}}
.muted{{color:#6b7280}}
</style></head><body>
<h1>14+ IVR report</h1>
<p class="muted">{o.calls} calls ({e(filters)}); generated {generated}; outcomes: {e(outcomes)};
{e(_languages_line(o))}.
Baseline: I&amp;O Research 2020/110. Misroute window {kpis.misroute_window_s:g} s.</p>
{headline_table()}
<div class="plots">{attempts_svg}{hang_svg}{cdf_svg}{cdf2_svg}</div>
{group_table("Per area code", kpis.by_area_code)}
{group_table("Per municipality (decided)", kpis.by_municipality)}
{group_table("Per month (UTC)", kpis.by_month)}
</body></html>
"""


# --- the command --------------------------------------------------------------------------------------

_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)([smhdw])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_when(text: str, *, now: float | None = None) -> float:
    """Epoch seconds, an ISO 8601 date/time (UTC unless a zone is given), or '24h', '7d' ago."""
    text = text.strip()
    m = _RELATIVE.match(text)
    if m:
        return (now if now is not None else time.time()) - float(m.group(1)) * _UNITS[m.group(2)]
    try:
        return float(text)
    except ValueError:
        pass
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a time: {text!r} (epoch, ISO 8601 or e.g. 24h, 7d)") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.timestamp()


def register(sub) -> None:
    p = sub.add_parser("report", help="KPIs from the call records next to the 2020 evaluation")
    p.add_argument("--since", type=parse_when, help="from (inclusive): epoch, ISO 8601, or 24h/7d ago")
    p.add_argument("--until", type=parse_when, help="until (exclusive)")
    p.add_argument("--area-code", help="only calls to this area code")
    p.add_argument("--municipality", help="only calls decided for this CBS code")
    p.add_argument("--format", choices=("table", "json", "csv", "html"), default="table")
    p.add_argument("--db", help="call records: a SQLite path, sqlite:///path or postgresql://…; "
                                "default: settings (IVR_DB_URL, else db_path)")
    p.add_argument("--misroute-window", type=float, help="seconds; default: settings misroute_window_s")
    p.add_argument("-o", "--output", type=Path, help="write to a file instead of stdout")
    p.set_defaults(func=run_report)


def run_report(args) -> int:
    from ivr.config import load_settings
    from ivr.adapters.store import open_store, sqlite_path

    settings = load_settings()
    db = str(args.db or settings.records_db)
    path = sqlite_path(db)
    if path is not None and not path.exists():
        print(f"no call records at {db}", file=sys.stderr)
        return 1
    area = args.area_code
    if area:
        area = area.strip()
        area = area if area.startswith("0") else "0" + area
    window = args.misroute_window if args.misroute_window is not None else settings.misroute_window_s
    store = open_store(db)
    try:
        filters = {k: v for k, v in dict(since=args.since, until=args.until, area_code=area,
                                         municipality=args.municipality).items() if v is not None}
        kpis = compute_kpis(store.iter_query(**filters), misroute_window_s=window, filters=filters)
    finally:
        store.close()
    text = render(kpis, args.format)
    if args.output:
        args.output.write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


def render(kpis: Kpis, fmt: str, names: dict[str, str] | None = None) -> str:
    if fmt == "json":
        return json.dumps(kpis.to_dict(), indent=2) + "\n"
    names = plan_names() if names is None else names
    if fmt == "csv":
        return render_csv(kpis, names)
    if fmt == "html":
        return render_html(kpis, names)
    return render_table(kpis, names)
