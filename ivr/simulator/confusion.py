"""A confusion model of the recogniser, for the simulator.

Per utterance kind (``bare``, ``phrase``, ``village``, ``former``, ``noisy``, ``accent``)
it gives the probability that the recogniser returns the right text, a *similar
candidate's* name, garbage, or nothing at all, plus a latency distribution. The
simulator (:mod:`ivr.simulator`) draws from it to build an n-best list of *text*; the
real :class:`~ivr.core.matcher.Matcher` then decides on that text, so what the flow does with
a confusion (accept, confirm, choose, reject) is the matcher's real behaviour.

Two sources:

* the built-in ``baseline-2020`` profile, calibrated so that the simulator reproduces
  the 2020 evaluation (85/10/3% of speech callers recognised at the first/second/a later
  attempt, 5% hang-up during the transfer; see docs/simulator.md);
* :func:`fit_confusion` on the JSON of ``ivr replay --json`` (per item
  ``expected_cbs_code``, ``decided_cbs_code``, ``action``, ``confidence``,
  ``latency_ms`` and, when the manifest has it, ``kind``), smoothed towards a prior.

Saved and loaded as plain JSON (:meth:`ConfusionModel.save` / :func:`load_confusion`).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable, Mapping

KINDS = ("bare", "phrase", "village", "former", "noisy", "accent")
OUTCOMES = ("correct", "confused", "garbage", "no_input")
NO_INPUT_ACTIONS = frozenset({"no_input", "noinput", "timeout", "silence", "no_speech"})
REJECT_ACTIONS = frozenset({"retry", "reject"})  # ivr replay: verdict reject -> action retry
ERROR_ACTIONS = frozenset({"error"})


@dataclass(frozen=True)
class KindRates:
    """What the recogniser makes of one kind of utterance."""

    correct: float
    confused: float
    garbage: float
    no_input: float
    latency_ms_p50: float = 300.0
    latency_ms_p95: float = 600.0
    n: int = 0  # replay items behind the figures (0: a prior / hand-set profile)

    def normalised(self) -> "KindRates":
        total = self.correct + self.confused + self.garbage + self.no_input
        if total <= 0:
            raise ValueError("a kind's probabilities sum to zero")
        return replace(self, correct=self.correct / total, confused=self.confused / total,
                       garbage=self.garbage / total, no_input=self.no_input / total)

    def cumulative(self) -> tuple[float, float, float]:
        """Thresholds for one uniform draw: < c0 correct, < c1 confused, < c2 garbage, else no input."""
        r = self.normalised()
        return (r.correct, r.correct + r.confused, r.correct + r.confused + r.garbage)

    def latency_params(self) -> tuple[float, float]:
        """(mu, sigma) of a lognormal with this p50 and p95."""
        p50 = max(self.latency_ms_p50, 1.0)
        p95 = max(self.latency_ms_p95, p50 * 1.0001)
        return math.log(p50), (math.log(p95) - math.log(p50)) / 1.6449


@dataclass
class ConfusionModel:
    name: str
    kinds: dict[str, KindRates]
    yes_no_error: float = 0.02  # a "ja"/"nee" heard as the opposite or as nothing
    source: str = ""
    notes: list[str] = field(default_factory=list)

    def rates(self, kind: str) -> KindRates:
        return self.kinds.get(kind) or self.kinds["bare"]

    # -- persistence ----------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {"format": "ivr-confusion/1", "name": self.name, "source": self.source,
                "yes_no_error": self.yes_no_error, "notes": list(self.notes),
                "kinds": {k: asdict(v) for k, v in self.kinds.items()}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ConfusionModel":
        if data.get("format", "ivr-confusion/1") != "ivr-confusion/1":
            raise ValueError(f"unknown confusion model format {data.get('format')!r}")
        kinds = {k: KindRates(**v) for k, v in data["kinds"].items()}
        if "bare" not in kinds:
            raise ValueError("a confusion model needs at least the 'bare' kind")
        return cls(name=data.get("name", "unnamed"), kinds=kinds, yes_no_error=float(data.get("yes_no_error", 0.02)),
                   source=data.get("source", ""), notes=list(data.get("notes", [])))

    def save(self, path: Path | str) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")


def load_confusion(path: Path | str) -> ConfusionModel:
    return ConfusionModel.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))


# --- built-in profiles ---------------------------------------------------------------------

def baseline_2020() -> ConfusionModel:
    """Hand-set rates that, through the real matcher and flow, give the 2020 figures.

    Calibrated with ``ivr simulate --profile baseline-2020`` on 200,000 calls, measured with
    the report's definitions (:mod:`ivr.core.report`): 84.9% first attempt, 10.0% after one
    repeat, 2.9% after several, 95.0% right municipality, 5.0% hang-up during transfer
    (tests/test_simulate.py checks this). These are recogniser rates per *utterance*; the
    figures per *caller* come out of the flow (confirmations, a second attempt, the menu)
    and the caller model (``ivr.simulator.CallerProfile``).
    """
    k = KindRates
    return ConfusionModel(
        name="baseline-2020",
        source="hand-calibrated to the 2020 evaluation (I&O Research 2020/110)",
        yes_no_error=0.02,
        kinds={
            "bare": k(0.918, 0.027, 0.035, 0.020, 350, 700),
            "phrase": k(0.868, 0.037, 0.065, 0.030, 420, 800),
            "village": k(0.839, 0.047, 0.084, 0.030, 380, 750),
            "former": k(0.859, 0.037, 0.074, 0.030, 380, 750),
            "noisy": k(0.520, 0.080, 0.270, 0.130, 450, 900),
            "accent": k(0.520, 0.140, 0.240, 0.100, 420, 850),
        },
        notes=["rates per utterance; see docs/simulator.md for the caller-level figures they produce"],
    )


def perfect() -> ConfusionModel:
    """Every utterance recognised as said (isolates the matcher and caller model)."""
    return ConfusionModel(name="perfect", source="built-in", yes_no_error=0.0,
                          kinds={kind: KindRates(1.0, 0.0, 0.0, 0.0, 200, 300) for kind in KINDS})


PROFILES = {"baseline-2020": baseline_2020, "perfect": perfect}


def get_profile(name_or_path: str) -> ConfusionModel:
    """A built-in profile by name, or a saved model (JSON) by path."""
    if name_or_path in PROFILES:
        return PROFILES[name_or_path]()
    path = Path(name_or_path)
    if path.is_file():
        return load_confusion(path)
    raise ValueError(f"unknown profile {name_or_path!r}: one of {', '.join(PROFILES)} or a confusion JSON file")


# --- fitting from replay ----------------------------------------------------------------------

def _items(replay: Any) -> list[Mapping[str, Any]]:
    if isinstance(replay, (str, Path)):
        replay = json.loads(Path(replay).read_text(encoding="utf-8"))
    if isinstance(replay, Mapping):
        for key in ("items", "results", "utterances", "rows"):
            if isinstance(replay.get(key), list):
                return replay[key]
        raise ValueError("replay JSON: expected a list of items or an object with 'items'/'results'")
    if isinstance(replay, list):
        return replay
    raise ValueError("replay JSON: expected a list or an object")


def classify(item: Mapping[str, Any]) -> str | None:
    """One replay item as correct / confused / garbage / no_input (None: an error, skipped).

    ``ivr replay`` fills ``decided_cbs_code`` with the matcher's best even when it rejects
    (action ``retry``): a rejected utterance counts as garbage, whatever its best was.
    """
    action = str(item.get("action") or item.get("verdict") or "").lower()
    expected = item.get("expected_cbs_code") or None
    decided = item.get("decided_cbs_code") or None
    if action in ERROR_ACTIONS or item.get("error"):
        return None
    if action in NO_INPUT_ACTIONS:
        return "no_input"
    if decided is None or action in REJECT_ACTIONS:
        return "garbage"
    return "correct" if decided == expected else "confused"


def _percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    if not values:
        return float("nan")
    pos = q * (len(values) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (pos - lo)


def fit_confusion(replay_json: Any, *, prior: ConfusionModel | None = None, prior_weight: float = 4.0,
                  name: str = "fitted") -> ConfusionModel:
    """A confusion model from ``ivr replay --json`` output (a path, JSON text parsed, or items).

    Each kind's rates are the replay counts plus ``prior_weight`` pseudo-counts spread as
    the prior's rates (``baseline-2020`` by default): kinds with few items stay close to
    the prior, kinds with many follow the data. Items without ``kind`` count as ``bare``.
    Kinds absent from the replay keep the prior's rates (noted in ``notes``).
    """
    prior = prior or baseline_2020()
    items = _items(replay_json)
    counts: dict[str, dict[str, int]] = {}
    latencies: dict[str, list[float]] = {}
    for item in items:
        outcome = classify(item)
        if outcome is None:
            continue
        kind = str(item.get("kind") or "bare")
        counts.setdefault(kind, dict.fromkeys(OUTCOMES, 0))[outcome] += 1
        lat = item.get("latency_ms")
        if isinstance(lat, (int, float)) and math.isfinite(lat) and lat >= 0:
            latencies.setdefault(kind, []).append(float(lat))
    kinds: dict[str, KindRates] = {}
    notes = [f"fitted from {len(items)} replay items, prior {prior.name} with weight {prior_weight:g}"]
    for kind in sorted(set(prior.kinds) | set(counts)):
        base = prior.rates(kind).normalised()
        c = counts.get(kind)
        if not c:
            kinds[kind] = base
            notes.append(f"{kind}: no replay items, prior kept")
            continue
        n = sum(c.values())
        rate = {o: (c[o] + prior_weight * getattr(base, o)) / (n + prior_weight) for o in OUTCOMES}
        lat = latencies.get(kind, [])
        p50 = _percentile(lat, 0.5) if lat else base.latency_ms_p50
        p95 = _percentile(lat, 0.95) if lat else base.latency_ms_p95
        kinds[kind] = KindRates(**rate, latency_ms_p50=round(p50, 1), latency_ms_p95=round(max(p95, p50), 1), n=n)
    if "bare" not in kinds:
        kinds["bare"] = prior.rates("bare")
    return ConfusionModel(name=name, kinds=kinds, yes_no_error=prior.yes_no_error,
                          source="ivr replay --json", notes=notes)


def summarise(model: ConfusionModel) -> Iterable[str]:
    yield f"confusion model {model.name} ({model.source})"
    yield (f"  {'kind':<8} {'correct':>8} {'confused':>9} {'garbage':>8} {'no input':>9} "
           f"{'p50 ms':>7} {'p95 ms':>7} {'n':>5}")
    for kind, r in sorted(model.kinds.items()):
        r = r.normalised()
        yield (f"  {kind:<8} {r.correct:8.3f} {r.confused:9.3f} {r.garbage:8.3f} {r.no_input:9.3f} "
               f"{r.latency_ms_p50:7.0f} {r.latency_ms_p95:7.0f} {r.n:5d}")
