"""Operator overrides: one readable TOML file on top of the shipped plan.

Example::

    operator_destination = "PJSIP/+31201234567@trunk"

    [municipalities.GM0394]          # Haarlemmermeer
    status = "not_connected"
    alt_number = "0235676000"

    [municipalities.GM0664]          # Goes
    destination = "PJSIP/+31113249249@trunk"
    aliases = ["Goes stad"]
    ring_timeout_s = 20              # then the overflow (5-120 s; default 30)
    overflow = "GM0703"              # Reimerswaal answers when Goes is busy (a CBS code or a dial string)

    [area_codes."0113"]
    mode = "dtmf"

    [[calamities]]
    target = "0113"
    destination = "Local/operator@ivr14-lab"
    message = "Wegens een storing wordt u doorverbonden met een medewerker."
    expires = 2026-12-31T23:00:00Z

A broken file is rejected with the file, line and reason; callers of
:func:`load_plan` keep their last good plan.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ivr.core.callback import is_public_number
from ivr.core.plan import (
    CALAMITY_TARGET_PATTERN,
    Calamity,
    NumberingPlan,
    RING_TIMEOUT_RANGE,
    PlanError,
    RoutingMode,
    Status,
)
from ivr.plan_files import load_base_plan

_DIAL_STRING = r"^[A-Za-z][A-Za-z0-9_-]*/[^\s,|&]+$"
_OVERFLOW = r"^(GM\d{4}|[A-Za-z][A-Za-z0-9_-]*/[^\s,|&]+)$"  # another municipality, or a dial string


class MunicipalityOverride(BaseModel):
    model_config = ConfigDict(extra="forbid")
    status: Status | None = None
    destination: str | None = Field(default=None, pattern=_DIAL_STRING)
    alt_number: str | None = Field(default=None, pattern=r"^\+?[0-9 -]{3,20}$")
    aliases: list[str] | None = None
    overflow: str | None = Field(default=None, pattern=_OVERFLOW)
    ring_timeout_s: int | None = Field(default=None, ge=RING_TIMEOUT_RANGE[0], le=RING_TIMEOUT_RANGE[1])

    @field_validator("alt_number")
    @classmethod
    def _dialable(cls, value: str | None) -> str | None:
        # callers are told this number and may be called back on the same terms: Dutch or E.164 only
        if value is not None and not is_public_number(value):
            raise ValueError("not a Dutch (0xx xxxxxxx, 0800/090x) or E.164 (+31 ...) number")
        return value


class AreaCodeOverride(BaseModel):
    model_config = ConfigDict(extra="forbid")
    mode: RoutingMode


class CalamityOverride(BaseModel):
    model_config = ConfigDict(extra="forbid")
    target: str = Field(pattern=CALAMITY_TARGET_PATTERN)
    destination: str = Field(pattern=_DIAL_STRING)
    message: str = Field(default="", max_length=500)
    expires: datetime | None = None

    @field_validator("expires")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value


class Overrides(BaseModel):
    model_config = ConfigDict(extra="forbid")
    operator_destination: str | None = Field(default=None, pattern=_DIAL_STRING)
    municipalities: dict[str, MunicipalityOverride] = {}
    area_codes: dict[str, AreaCodeOverride] = {}
    calamities: list[CalamityOverride] = []


def apply_overrides(base: NumberingPlan, overrides: Overrides) -> NumberingPlan:
    municipalities = dict(base.municipalities)
    for cbs, change in overrides.municipalities.items():
        if cbs not in municipalities:
            raise PlanError(f"municipalities.{cbs}: unknown CBS code")
        fields: dict[str, Any] = change.model_dump(exclude_none=True)
        if "aliases" in fields:
            fields["aliases"] = tuple(dict.fromkeys(a.strip() for a in fields["aliases"] if a.strip()))
        municipalities[cbs] = replace(municipalities[cbs], **fields)
    area_codes = dict(base.area_codes)
    for code, change in overrides.area_codes.items():
        if code not in area_codes:
            raise PlanError(f"area_codes.{code}: unknown area code")
        area_codes[code] = replace(area_codes[code], mode=change.mode)
    calamities = tuple(Calamity(**c.model_dump()) for c in overrides.calamities)
    return base.with_changes(
        municipalities=municipalities,
        area_codes=area_codes,
        calamities=calamities,
        operator_destination=overrides.operator_destination,
    )


def read_overrides(path: Path) -> Overrides:
    """Parse and validate an override file; errors name the file and line."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PlanError(f"{path}: cannot read ({exc.strerror})") from exc
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PlanError(f"{path}: {exc}") from exc
    try:
        return Overrides.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = tuple(str(p) for p in first["loc"])
        line = _line_of(text, loc)
        where = f"{path}:{line}" if line else str(path)
        raise PlanError(f"{where}: {'.'.join(loc)}: {first['msg']}") from exc


def load_plan(overrides_path: Path | None = None, base: NumberingPlan | None = None) -> NumberingPlan:
    base = base or load_base_plan()
    if overrides_path is None:
        return base
    try:
        return apply_overrides(base, read_overrides(overrides_path))
    except PlanError as exc:
        if str(exc).startswith(str(overrides_path)):
            raise
        raise PlanError(f"{_where(overrides_path, exc.key_path)}: {exc}") from exc


def _where(path: Path, key_path: tuple[str, ...]) -> str:
    """``path:line`` of the key a plan error names, when the file has it; else the path."""
    try:
        line = _line_of(path.read_text(encoding="utf-8"), key_path) if key_path else None
    except OSError:
        line = None
    return f"{path}:{line}" if line else str(path)


def _line_of(text: str, loc: tuple[str, ...]) -> int | None:
    """Best-effort line number of a TOML key path such as ('municipalities', 'GM0664', 'status')."""
    lines = text.splitlines()
    start = 0
    if len(loc) >= 2 and loc[0] in {"municipalities", "area_codes"}:
        header = re.compile(rf'^\s*\[\s*{loc[0]}\s*\.\s*"?{re.escape(loc[1])}"?\s*\]')
        for i, line in enumerate(lines):
            if header.match(line):
                start = i
                break
    if len(loc) >= 2 and loc[0] == "calamities" and loc[1].isdigit():
        seen = -1
        for i, line in enumerate(lines):
            if re.match(r"^\s*\[\[\s*calamities\s*\]\]", line):
                seen += 1
                if seen == int(loc[1]):
                    start = i
                    break
    key = re.compile(rf'^\s*"?{re.escape(loc[-1])}"?\s*=')
    for i in range(start, len(lines)):
        if key.match(lines[i]):
            return i + 1
    return start + 1 if start else None


def overrides_from_audit(entries: Iterable[dict[str, Any]]) -> Overrides:
    """The admin API's changes, replayed from the audit log (oldest first), as one layer.

    The audit log is the durable record of every admin write, so a restart or a reload of
    the override file re-applies them on top instead of losing them.
    """
    municipalities: dict[str, dict[str, Any]] = {}
    area_codes: dict[str, dict[str, Any]] = {}
    calamities: dict[str, dict[str, Any]] = {}
    def only(model: type[BaseModel], state: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in state.items() if k in model.model_fields}

    for entry in entries:
        action, target, after = entry["action"], entry["target"], entry.get("after")
        if action == "municipality" and after:
            after = only(MunicipalityOverride, after)
        elif action == "area_code" and after:
            after = only(AreaCodeOverride, after)
        elif action == "calamity" and after:
            after = only(CalamityOverride, after)
        if action == "municipality" and after:
            municipalities[target] = after
        elif action == "area_code" and after:
            area_codes[target] = after
        elif action == "calamity" and after:
            calamities[target] = after
        elif action == "calamity_clear":
            calamities.pop(target, None)
    return Overrides.model_validate({"municipalities": municipalities, "area_codes": area_codes,
                                     "calamities": list(calamities.values())})


def layer(plan: NumberingPlan, overrides: Overrides) -> NumberingPlan:
    """Apply a layer on top of a plan: its calamities replace those with the same target."""
    kept = tuple(c for c in plan.calamities if c.target not in {o.target for o in overrides.calamities})
    changed = apply_overrides(plan, overrides)
    return changed.with_changes(calamities=kept + changed.calamities)
