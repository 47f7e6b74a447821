"""Reading the shipped plan data (``ivr/data/*.csv``): the only place that opens those files.

The pure core (``ivr.core.plan``) builds the plan from the rows read here. This adapter
sits in the bottom layer next to ``ivr.config`` rather than in ``ivr.adapters``: the
fusion engine (``ivr.speech``) fits its projection on the shipped names whatever plan is
served, and speech must not import the adapters above it.
"""

from __future__ import annotations

import csv
from pathlib import Path

from itertools import combinations
from typing import TYPE_CHECKING

from ivr.core.plan import TABLE_FILES, NumberingPlan, PlanError, PlanTables, base_plan_from_tables

if TYPE_CHECKING:  # pragma: no cover
    from ivr.core.matcher import ConfusableRule

DATA_DIR = Path(__file__).resolve().parent / "data"


def read_rows(name: str, data_dir: Path = DATA_DIR) -> list[dict[str, str]]:
    """One shipped CSV file as a list of rows (column name -> text); a clear PlanError if unreadable."""
    path = data_dir / name
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            return list(csv.DictReader(fh))
    except OSError as exc:
        raise PlanError(f"{path}: cannot read ({exc.strerror})") from exc


def read_plan_tables(data_dir: Path = DATA_DIR) -> PlanTables:
    return PlanTables(**{table: read_rows(name, data_dir) for table, name in TABLE_FILES.items()})


def load_base_plan(data_dir: Path = DATA_DIR) -> NumberingPlan:
    """The plan as derived from the shipped data, before operator overrides."""
    return base_plan_from_tables(read_plan_tables(data_dir))


CONFUSABLE_FILE = "confusable_names.csv"


def confusable_pairs(data_dir: Path = DATA_DIR) -> frozenset[frozenset[str]]:
    """The report's confusable pairs as unordered CBS-code pairs. A row pairs ``code_a`` with
    each code of ``code_b`` (``;``-separated); a woonplaats row (one official name in several
    municipalities) pairs every municipality of that name with every other."""
    pairs: set[frozenset[str]] = set()
    for i, row in enumerate(read_rows(CONFUSABLE_FILE, data_dir), start=2):
        a = (row.get("code_a") or "").strip()
        others = [c.strip() for c in (row.get("code_b") or "").split(";") if c.strip()]
        if not a or not others:
            raise PlanError(f"{CONFUSABLE_FILE}:{i}: a pair needs code_a and code_b")
        if row.get("type") == "woonplaats~woonplaats":
            pairs.update(frozenset(p) for p in combinations(dict.fromkeys([a, *others]), 2))
        else:
            pairs.update(frozenset((a, b)) for b in others if b != a)
    return frozenset(pairs)


def confusable_rule(margin: float | None = None, data_dir: Path = DATA_DIR) -> "ConfusableRule":
    """The rule holding a thin accept of a listed pair to a confirmation (default margin: the core's)."""
    # imported here: the install script reads this module with a Python that has no matcher dependencies
    from ivr.core.matcher import ConfusableRule

    pairs = confusable_pairs(data_dir)
    return ConfusableRule(pairs) if margin is None else ConfusableRule(pairs, margin)
