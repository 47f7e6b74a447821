"""CPU, memory and in-IVR gauges sampled from /proc and /metrics while a step runs."""

from __future__ import annotations

import os
import re
import threading
import time
from pathlib import Path
from typing import Any

from ivr_lab.controller import Controller


# --- resources -------------------------------------------------------------------------------------

_CLK = os.sysconf("SC_CLK_TCK")


def _proc_cpu_s(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _CLK  # utime + stime
    except (OSError, IndexError, ValueError):
        return None


def _proc_rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        pass
    return None


def _machine_busy() -> tuple[float, float]:
    parts = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    values = [int(v) for v in parts]
    idle = values[3] + values[4]
    return float(sum(values) - idle), float(sum(values))


def _sipp_children() -> list[int]:
    me = str(os.getpid())
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        comm = stat[stat.find("(") + 1:stat.rfind(")")]
        if comm == "sipp" and stat.rsplit(")", 1)[1].split()[1] == me:
            out.append(int(entry.name))
    return out


_GAUGE = re.compile(r'^ivr_calls_in_(?:progress|phase\{phase="(\w+)"\})\s+([0-9.eE+-]+)$')


def parse_ivr_gauges(text: str) -> dict[str, float]:
    """{'in_progress': n, 'menu': n, 'speech': n, ...} from the controller's /metrics."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        m = _GAUGE.match(line)
        if m:
            out[m.group(1) or "in_progress"] = float(m.group(2))
    return out


class Sampler(threading.Thread):
    """Every ``interval`` s: CPU% and RSS of the given pids, machine CPU, controller gauges."""

    def __init__(self, pids: dict[str, int | None], controller: Controller | None, interval: float = 0.5):
        super().__init__(daemon=True, name="loadtest-sampler")
        self.pids = {k: v for k, v in pids.items() if v}
        self.controller = controller
        self.interval = interval
        self.samples: list[dict[str, Any]] = []
        self._halt = threading.Event()
        self._lock = threading.Lock()

    def run(self) -> None:
        last = {name: (_proc_cpu_s(pid), time.monotonic()) for name, pid in self.pids.items()}
        sipp_last: dict[int, float] = {}
        last_machine = _machine_busy()
        next_scrape = 0.0
        gauges: dict[str, float] = {}
        while not self._halt.wait(self.interval):
            now = time.monotonic()
            row: dict[str, Any] = {"t": time.time()}
            for name, pid in self.pids.items():
                cpu = _proc_cpu_s(pid)
                prev_cpu, prev_t = last[name]
                if cpu is not None and prev_cpu is not None and now > prev_t:
                    row[f"{name}_cpu_pct"] = 100.0 * (cpu - prev_cpu) / (now - prev_t)
                row[f"{name}_rss_mb"] = _proc_rss_mb(pid)
                last[name] = (cpu, now)
            # SIPp processes (children of this process): their CPU, summed
            sipp_now = {pid: cpu for pid in _sipp_children() if (cpu := _proc_cpu_s(pid)) is not None}
            if sipp_last:
                used = sum(cpu - sipp_last.get(pid, cpu) for pid, cpu in sipp_now.items())
                row["sipp_cpu_pct"] = 100.0 * used / self.interval
            sipp_last = sipp_now
            busy, total = _machine_busy()
            if total > last_machine[1]:
                row["machine_cpu_pct"] = 100.0 * (os.cpu_count() or 1) * (busy - last_machine[0]) / (
                    total - last_machine[1])
            last_machine = (busy, total)
            if self.controller is not None and now >= next_scrape:
                next_scrape = now + 1.0
                try:
                    gauges = parse_ivr_gauges(self.controller.metrics_text())
                except Exception:
                    gauges = {}
                row.update({f"ivr_{k}": v for k, v in gauges.items()})
            with self._lock:
                self.samples.append(row)

    def stop(self) -> None:
        self._halt.set()
        self.join(5)

    def window(self, since: float, until: float) -> list[dict[str, Any]]:
        with self._lock:
            return [s for s in self.samples if since <= s["t"] <= until]
