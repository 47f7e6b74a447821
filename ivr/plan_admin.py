"""Plan administration, in one place: validate, apply, swap, audit, replay the audit, reload.

The numbering plan is immutable; every change builds a new, validated plan and swaps it
in atomically (the next call uses it, calls in progress keep theirs). Changes come from
three places, and all of them go through :class:`PlanAdmin`:

* the HTTP API's admin writes (:meth:`PlanAdmin.apply` with one of the change builders
  below): validated, swapped, and written to the audit log with who, when and the
  before/after state of the target;
* a reload of the override file (``SIGHUP``, ``POST /v1/plan/reload``):
  :meth:`PlanAdmin.reload` reads the file again and replays the audit log on top, so
  admin changes survive; a broken file is refused and the last good plan stays;
* start-up: the same load as a reload.

The audit entry's ``after`` state is written by :func:`municipality_state` /
:func:`calamity_state` and read back by :func:`overrides_from_audit` — one module owns
the format both ways.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Protocol

from pydantic import BaseModel

from .overrides import AreaCodeOverride, CalamityOverride, MunicipalityOverride, Overrides, layer, load_plan
from .plan import Calamity, Municipality, NumberingPlan, PlanError, RoutingMode

log = logging.getLogger(__name__)

#: A change: the current plan -> (new plan, the target's state before, after). Raises
#: :class:`UnknownTarget` or :class:`~ivr.plan.PlanError`.
ChangeFn = Callable[[NumberingPlan], tuple[NumberingPlan, dict[str, Any] | None, dict[str, Any] | None]]


class UnknownTarget(LookupError):
    """The change names a municipality, area code or calamity the plan does not have."""


class ChangeRefused(ValueError):
    """The change would make an invalid plan; the plan is unchanged."""


class AuditLog(Protocol):
    def audit(self, who: str, action: str, target: str, before: Any, after: Any) -> int: ...
    def audit_entries(self) -> list[dict[str, Any]]: ...


@dataclass(frozen=True, slots=True)
class Change:
    audit_id: int
    plan_version: str
    before: Any = None
    after: Any = None


# --- the state of a target, as the audit log keeps it --------------------------------------


def municipality_state(m: Municipality) -> dict[str, Any]:
    return {"status": m.status.value, "destination": m.destination, "alt_number": m.alt_number,
            "aliases": list(m.aliases)}


def calamity_state(c: Calamity | None) -> dict[str, Any] | None:
    if c is None:
        return None
    return {"target": c.target, "destination": c.destination, "message": c.message,
            "expires": c.expires.isoformat() if c.expires else None}


def overrides_from_audit(entries: Iterable[dict[str, Any]]) -> Overrides:
    """The admin changes, replayed from the audit log (oldest first), as one layer.

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
            municipalities[target] = only(MunicipalityOverride, after)
        elif action == "area_code" and after:
            area_codes[target] = only(AreaCodeOverride, after)
        elif action == "calamity" and after:
            calamities[target] = only(CalamityOverride, after)
        elif action == "calamity_clear":
            calamities.pop(target, None)
    return Overrides.model_validate({"municipalities": municipalities, "area_codes": area_codes,
                                     "calamities": list(calamities.values())})


# --- the changes the admin API offers ---------------------------------------------------------


def change_municipality(cbs: str, fields: dict[str, Any]) -> ChangeFn:
    """Status, destination, alternative number or aliases of one municipality."""
    def change(plan: NumberingPlan):
        old = plan.municipalities.get(cbs)
        if old is None:
            raise UnknownTarget(f"unknown municipality {cbs}")
        new = replace(old, **fields)
        municipalities = dict(plan.municipalities)
        municipalities[cbs] = new
        return plan.with_changes(municipalities=municipalities), municipality_state(old), municipality_state(new)
    return change


def change_area_code(code: str, mode: RoutingMode) -> ChangeFn:
    """The routing mode of one area code."""
    def change(plan: NumberingPlan):
        old = plan.area_codes.get(code)
        if old is None:
            raise UnknownTarget(f"unknown area code {code}")
        area_codes = dict(plan.area_codes)
        area_codes[old.code] = replace(old, mode=mode)
        return plan.with_changes(area_codes=area_codes), {"mode": old.mode.value}, {"mode": mode.value}
    return change


def set_calamity(new: Calamity) -> ChangeFn:
    """Send a target elsewhere, replacing a calamity already set for it."""
    def change(plan: NumberingPlan):
        old = next((c for c in plan.calamities if c.target == new.target), None)
        rest = tuple(c for c in plan.calamities if c.target != new.target)
        return plan.with_changes(calamities=rest + (new,)), calamity_state(old), calamity_state(new)
    return change


def clear_calamity(target: str) -> ChangeFn:
    def change(plan: NumberingPlan):
        old = next((c for c in plan.calamities if c.target == target), None)
        if old is None:
            raise UnknownTarget(f"no calamity for {target}")
        rest = tuple(c for c in plan.calamities if c.target != target)
        return plan.with_changes(calamities=rest), calamity_state(old), None
    return change


# --- the administrator ------------------------------------------------------------------------


class PlanAdmin:
    """Owns the current plan: every swap, admin change and reload goes through here."""

    def __init__(self, audit_log: AuditLog, plan_file: Path | None = None, *, plan: NumberingPlan | None = None):
        self.audit_log = audit_log
        self.plan_file = plan_file
        self._lock = threading.Lock()  # read-modify-swap, one at a time
        self.plan: NumberingPlan = plan if plan is not None else self.load()
        self.error = ""  # why the last reload was refused ("" after a good one)

    def load(self, path: Path | None = None) -> NumberingPlan:
        """The override file's plan with the admin changes (replayed from the audit log) on top."""
        return layer(load_plan(path or self.plan_file), overrides_from_audit(self.audit_log.audit_entries()))

    def swap(self, plan: NumberingPlan) -> None:
        self.plan = plan

    def apply(self, who: str, action: str, target: str, change: ChangeFn) -> Change:
        """Validate the change on the current plan, swap the new plan in and audit it."""
        with self._lock:
            plan = self.plan
            try:
                new_plan, before, after = change(plan)
            except PlanError as exc:
                raise ChangeRefused(str(exc)) from exc
            self.swap(new_plan)
            audit_id = self.audit_log.audit(who, action, target, {"plan_version": plan.version, **(before or {})},
                                            {"plan_version": new_plan.version, **(after or {})})
        log.info("admin %s: %s %s (plan %s -> %s)", who, action, target, plan.version, new_plan.version)
        return Change(audit_id, new_plan.version, before, after)

    def reload(self, path: Path | None = None) -> NumberingPlan:
        """Read the override file again (and replay the audit); a broken file keeps the last good plan."""
        with self._lock:
            try:
                plan = self.load(path)
            except PlanError as exc:
                self.error = str(exc)
                log.error("plan reload refused, keeping version %s: %s", self.plan.version, exc)
                raise
            self.error = ""
            old, self.plan = self.plan, plan
        log.info("plan reloaded: %s -> %s", old.version, plan.version)
        return plan
