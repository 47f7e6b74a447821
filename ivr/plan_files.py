"""Reading the shipped plan data (``ivr/data/*.csv``): the only place that opens those files.

The pure core (``ivr.core.plan``) builds the plan from the rows read here. This adapter
sits in the bottom layer next to ``ivr.config`` rather than in ``ivr.adapters``: the
fusion engine (``ivr.speech``) fits its projection on the shipped names whatever plan is
served, and speech must not import the adapters above it.
"""

from __future__ import annotations

import csv
from pathlib import Path

from ivr.core.plan import TABLE_FILES, NumberingPlan, PlanError, PlanTables, base_plan_from_tables

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
