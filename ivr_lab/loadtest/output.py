"""A load run's report: the plot (matplotlib, optional) and the markdown table."""

from __future__ import annotations

from pathlib import Path
from typing import Any



def _f(x, nd: int = 1) -> str:
    return "-" if x is None else f"{x:.{nd}f}"


# --- output ------------------------------------------------------------------------------------------

def write_plot(result: dict[str, Any], path: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    steps = result["steps"]
    x = [s["rate"] for s in steps]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    ax = axes[0]
    ax.plot(x, x, ":", color="grey", label="offered")
    ax.plot(x, [s["completed_cps"] for s in steps], "o-", label="completed")
    ax.plot(x, [s["failed"] / s["duration_s"] for s in steps], "x-", color="red", label="failed")
    ax2 = ax.twinx()
    ax2.plot(x, [s["sipp"]["max_concurrent"] for s in steps], "s--", color="green", label="concurrent (SIPp)")
    ax2.set_ylabel("concurrent calls")
    ax.set_xlabel("offered calls/s")
    ax.set_ylabel("calls/s")
    ax.legend(loc="upper left")
    ax2.legend(loc="lower right")
    ax.set_title("throughput")
    ax = axes[1]
    for q in ("p50", "p95", "p99"):
        ax.plot(x, [s["sipp"]["invite_200_ms"][q] or 0 for s in steps], "o-", label=f"INVITE->200 {q}")
    dec = [s["records"]["unique_decision_ms"]["p99"] for s in steps]
    if any(d is not None for d in dec):
        ax.plot(x, [d or 0 for d in dec], "k^-", label="decision p99 (controller)")
    ax.set_yscale("log")
    ax.set_xlabel("offered calls/s")
    ax.set_ylabel("ms")
    ax.legend()
    ax.set_title("latency")
    ax = axes[2]
    for key, label in (("controller_cpu_pct_avg", "controller CPU avg"), ("asterisk_cpu_pct_avg", "Asterisk CPU avg"),
                       ("machine_cpu_pct_avg", "machine CPU avg")):
        ax.plot(x, [s["resources"].get(key) or 0 for s in steps], "o-", label=label)
    ax.set_ylabel("% of one core")
    ax.set_xlabel("offered calls/s")
    ax3 = ax.twinx()
    ax3.plot(x, [s["resources"].get("asterisk_rss_mb_max") or 0 for s in steps], "s--", color="purple",
             label="Asterisk RSS MB")
    ax3.plot(x, [s["resources"].get("controller_rss_mb_max") or 0 for s in steps], "d--", color="brown",
             label="controller RSS MB")
    ax3.set_ylabel("MB")
    ax.legend(loc="upper left")
    ax3.legend(loc="lower right")
    ax.set_title("resources")
    fig.suptitle(f"ivr loadtest {result['name']} — {result['machine'].get('cores')} cores, "
                 f"{result['machine'].get('cpu_model', '')}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def render_markdown(result: dict[str, Any], plot: Path | None) -> str:
    m = result["machine"]
    cfg = result["config"]
    lines = [f"# Load test `{result['name']}`", "",
             f"Scenario **{cfg['scenario']}**, steps of {cfg['step_s']:g} s, "
             f"{'ramp (stops at the first failing step)' if cfg['ramp'] else 'fixed rates'}; speech engine "
             f"`{result['speech_engine']}`. Loopback only (127.0.0.1).", "",
             "## Machine", "",
             f"- {m.get('cores')} cores, {m.get('cpu_model', '?')}, {m.get('ram_gb', '?')} GB RAM; "
             f"kernel {m.get('kernel')}; Python {m.get('python')}",
             f"- {m.get('asterisk')}; {m.get('sipp')}; git {m.get('git_commit', '?')}",
             f"- load average before the run: {' '.join(m.get('load_avg_before', []))} "
             "(the machine is shared: other work competes for the same cores)", ""]
    if result.get("skipped"):
        lines += ["## Skipped", "", result["skipped"], ""]
    if result["steps"]:
        lines += ["## Steps", "",
                  "| offered cps | calls | ok | failed (reasons) | completed cps | max concurrent (SIPp / IVR / menu) "
                  "| INVITE→200 p50/p95/p99 ms | unique decision p50/p95/p99 ms | speech decision p50/p99 ms "
                  "| IVR s p50 | controller CPU avg/max %, "
                  "RSS MB | Asterisk CPU avg/max %, RSS MB | SIPp CPU avg % | machine CPU avg % (all processes) |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for s in result["steps"]:
            r = s["resources"]
            rtt = s["sipp"]["invite_200_ms"]
            dec = s["records"]["unique_decision_ms"]
            sp = s["records"].get("speech_decision_ms", {})
            fails = f"{s['failed']}" + (f" {s['failures']}" if s["failures"] else "") + (
                f" unexpected {s['unexpected']}" if s["unexpected"] else "")
            lines.append(
                f"| {s['rate']:g} | {s['offered']} | {s['successful']} | {fails} | {s['completed_cps']:g} | "
                f"{s['sipp']['max_concurrent']} / {_f(r.get('ivr_in_progress_max'), 0)} / "
                f"{_f(r.get('ivr_menu_max'), 0)} | "
                f"{_f(rtt['p50'])} / {_f(rtt['p95'])} / {_f(rtt['p99'])} | "
                f"{_f(dec['p50'], 2)} / {_f(dec['p95'], 2)} / {_f(dec['p99'], 2)} | "
                f"{_f(sp.get('p50'), 0)} / {_f(sp.get('p99'), 0)} | "
                f"{_f(s['records']['ivr_seconds']['p50'], 2)} | "
                f"{_f(r.get('controller_cpu_pct_avg'), 0)}/{_f(r.get('controller_cpu_pct_max'), 0)}, "
                f"{_f(r.get('controller_rss_mb_max'), 0)} | "
                f"{_f(r.get('asterisk_cpu_pct_avg'), 0)}/{_f(r.get('asterisk_cpu_pct_max'), 0)}, "
                f"{_f(r.get('asterisk_rss_mb_max'), 0)} | {_f(r.get('sipp_cpu_pct_avg'), 0)} | "
                f"{_f(r.get('machine_cpu_pct_avg'), 0)} |")
        lines.append("")
    if result.get("stopped"):
        lines += [f"Stopped: {result['stopped']}", ""]
    if result.get("targets"):
        lines += ["## Targets", ""]
        for key, t in result["targets"].items():
            rest = ", ".join(f"{k} {v}" for k, v in t.items() if k not in ("target", "met"))
            lines.append(f"- {t['target']}: **{'met' if t['met'] else 'not met'}** ({rest})")
        lines.append("")
    if plot:
        lines += [f"![{result['name']}]({plot.name})", ""]
    lines += ["Columns: *concurrent* is SIPp's maximum of calls in progress and the controller's "
              "`ivr_calls_in_progress` / `ivr_calls_in_phase{phase=\"menu\"}` gauges (scraped each second); "
              "*unique decision* is the record's `decision_ms` (call start to Dial: the flow, the first "
              "record save and "
              "one AGI round trip) of unique-code calls; *speech decision* is each speech attempt's `decision_ms` "
              "(end of speech to decision, recogniser included); "
              "CPU is % of one core from /proc (utime+stime), sampled every 0.5 s; *machine* is all processes "
              "of the host (out of 100% x cores), so machine minus controller, Asterisk and SIPp is other work "
              "sharing the machine during the run.", ""]
    return "\n".join(lines)
