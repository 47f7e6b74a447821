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

The changes themselves, and the audit entry's state both ways, are pure functions in
:mod:`ivr.core.plan_changes`; this module is the one place that applies them.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any, Iterable, Protocol

from ivr.adapters.overrides import Overrides, layer, load_plan
from ivr.core.plan import NumberingPlan, PlanError
from ivr.core.plan_changes import Change, ChangeFn, ChangeRefused, audit_layer

log = logging.getLogger(__name__)

class AuditLog(Protocol):
    def audit(self, who: str, action: str, target: str, before: Any, after: Any) -> int: ...
    def audit_entries(self) -> list[dict[str, Any]]: ...


def read_plan_file(path: Path | None) -> NumberingPlan:
    """Validate an override file on its own (``ivr plan check``): the plan it makes, or PlanError."""
    return load_plan(path)


def overrides_from_audit(entries: Iterable[dict[str, Any]]) -> Overrides:
    """The audit log's admin changes as one validated override layer."""
    return Overrides.model_validate(audit_layer(entries))


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
