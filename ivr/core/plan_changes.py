"""Plan changes as pure functions: what the admin API can change, and the audit entry's
state both ways (written by :func:`municipality_state` / :func:`calamity_state`, read back
by :func:`audit_layer`). :mod:`ivr.plan_admin` applies them under its lock, swaps the plan
and writes the audit log.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Callable, Iterable

from ivr.core.plan import Calamity, Municipality, NumberingPlan, RoutingMode

#: A change: the current plan -> (new plan, the target's state before, after). Raises
#: :class:`UnknownTarget` or :class:`~ivr.core.plan.PlanError`.
ChangeFn = Callable[[NumberingPlan], tuple[NumberingPlan, dict[str, Any] | None, dict[str, Any] | None]]


class UnknownTarget(LookupError):
    """The change names a municipality, area code or calamity the plan does not have."""


class ChangeRefused(ValueError):
    """The change would make an invalid plan; the plan is unchanged."""


@dataclass(frozen=True, slots=True)
class Change:
    audit_id: int
    plan_version: str
    before: Any = None
    after: Any = None


# --- the state of a target, as the audit log keeps it --------------------------------------


def municipality_state(m: Municipality) -> dict[str, Any]:
    return {"status": m.status.value, "destination": m.destination, "alt_number": m.alt_number,
            "aliases": list(m.aliases), "overflow": m.overflow, "ring_timeout_s": m.ring_timeout_s}


def calamity_state(c: Calamity | None) -> dict[str, Any] | None:
    if c is None:
        return None
    return {"target": c.target, "destination": c.destination, "message": c.message,
            "expires": c.expires.isoformat() if c.expires else None}


#: The fields of a target's state that an override can set (what the audit replays).
MUNICIPALITY_FIELDS = ("status", "destination", "alt_number", "aliases", "overflow", "ring_timeout_s")
AREA_CODE_FIELDS = ("mode",)
CALAMITY_FIELDS = ("target", "destination", "message", "expires")


def audit_layer(entries: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """The admin changes, replayed from the audit log (oldest first), as one override layer
    (plain data in the override file's shape: ``municipalities``, ``area_codes``, ``calamities``).

    The audit log is the durable record of every admin write, so a restart or a reload of
    the override file re-applies them on top instead of losing them.
    """
    municipalities: dict[str, dict[str, Any]] = {}
    area_codes: dict[str, dict[str, Any]] = {}
    calamities: dict[str, dict[str, Any]] = {}

    def only(fields: tuple[str, ...], state: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in state.items() if k in fields}

    for entry in entries:
        action, target, after = entry["action"], entry["target"], entry.get("after")
        if action == "municipality" and after:
            municipalities[target] = only(MUNICIPALITY_FIELDS, after)
        elif action == "area_code" and after:
            area_codes[target] = only(AREA_CODE_FIELDS, after)
        elif action == "calamity" and after:
            calamities[target] = only(CALAMITY_FIELDS, after)
        elif action == "calamity_clear":
            calamities.pop(target, None)
    return {"municipalities": municipalities, "area_codes": area_codes, "calamities": list(calamities.values())}


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
