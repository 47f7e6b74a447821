"""Percentiles in small memory: sparse logarithmic histograms (bins 1% wide)."""

from __future__ import annotations

import math
from dataclasses import dataclass

_LOG_STEP = math.log(1.01)
_ZERO_BIN = -(10**9)


class LogHistogram:
    """Sparse histogram with 1%-wide logarithmic bins: count, sum, min, max, quantiles.

    Each bin keeps its count and the sum of its values; a quantile is the mean of the
    bin it falls in (exact when the bin's values are equal, within 0.5% otherwise).
    """

    __slots__ = ("bins", "count", "total", "min", "max")

    def __init__(self) -> None:
        self.bins: dict[int, list[float]] = {}  # bin -> [count, sum]
        self.count = 0
        self.total = 0.0
        self.min = math.inf
        self.max = -math.inf

    def merge(self, other: "LogHistogram") -> None:
        for key, (n, total) in other.bins.items():
            mine = self.bins.get(key)
            if mine is None:
                self.bins[key] = [n, total]
            else:
                mine[0] += n
                mine[1] += total
        self.count += other.count
        self.total += other.total
        self.min = min(self.min, other.min)
        self.max = max(self.max, other.max)

    def add(self, value: float) -> None:
        if not math.isfinite(value):
            return
        value = max(0.0, value)
        key = _ZERO_BIN if value <= 1e-9 else round(math.log(value) / _LOG_STEP)
        b = self.bins.get(key)
        if b is None:
            self.bins[key] = [1, value]
        else:
            b[0] += 1
            b[1] += value
        self.count += 1
        self.total += value
        self.min = min(self.min, value)
        self.max = max(self.max, value)

    def quantile(self, q: float) -> float | None:
        """Nearest-rank quantile (the smallest value with at least q of the samples at or below)."""
        if not self.count:
            return None
        rank = max(1, math.ceil(q * self.count - 1e-9))
        if rank >= self.count:
            return self.max
        if rank == 1:
            return self.min
        seen = 0
        for key in sorted(self.bins):
            n, total = self.bins[key]
            seen += n
            if seen >= rank:
                return min(max(total / n, self.min), self.max)
        return self.max

    def cdf(self) -> list[tuple[float, float]]:
        """(value, fraction of samples at or below) per occupied bin."""
        out, seen = [], 0
        for key in sorted(self.bins):
            n, total = self.bins[key]
            seen += n
            out.append((round(total / n, 6), seen / self.count))
        return out

    def summary(self) -> "LatencySummary":
        if not self.count:
            return LatencySummary()
        return LatencySummary(count=self.count, sum=round(self.total, 6), mean=round(self.total / self.count, 6),
                              p50=_r(self.quantile(0.50)), p95=_r(self.quantile(0.95)),
                              min=_r(self.min), max=_r(self.max))


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 4)


@dataclass
class LatencySummary:
    count: int = 0
    sum: float = 0.0
    mean: float | None = None
    p50: float | None = None
    p95: float | None = None
    min: float | None = None
    max: float | None = None
