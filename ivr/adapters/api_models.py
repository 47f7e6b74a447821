"""The HTTP API's response models (what ``/docs`` shows); the routes are in ``api.py``."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

class Health(BaseModel):
    status: Literal["ok"] = "ok"


class Readiness(BaseModel):
    ready: bool
    checks: dict[str, dict[str, Any]]


class AttemptOut(BaseModel):
    kind: str
    input: str
    heard: str = ""
    candidates: list[dict[str, Any]] = []
    verdict: str = ""
    chosen: str = ""
    recogniser_ms: float | None = None
    decision_ms: float | None = None


class CallOut(BaseModel):
    """One call record (``caller`` is a salted hash, never the number)."""

    call_id: str
    dialled: str
    caller: str = ""
    started_at: float = 0.0
    ended_at: float | None = None
    area_code: str | None = None
    mode: str | None = None
    decision: str = ""
    reason: str = ""
    municipality: str | None = None
    destination: str | None = None
    answered_by: str | None = None
    outcome: str | None = None
    phase: str = ""
    hangup_phase: str | None = None
    hangup_cause: str | None = None
    recognition_attempts: int = 0
    rejected_confirmations: int = 0
    digits: str = ""
    attempts: list[AttemptOut] = []
    phase_seconds: dict[str, float] = {}
    decision_ms: float | None = None
    transfer_setup_ms: float | None = None
    ivr_seconds: float | None = None
    error: str | None = None
    plan_version: str = ""
    error_kind: str | None = None
    calamity: bool = False
    overflow_to: str | None = None
    alt_number_given: bool = False
    callback: str | None = None


class CallPage(BaseModel):
    total: int
    limit: int
    offset: int
    items: list[CallOut]


class MunicipalityOut(BaseModel):
    cbs_code: str
    name: str
    province: str
    population: int
    status: str
    destination: str
    area_codes: list[str]
    aliases: list[str]
    former_names: list[str]
    alt_number: str | None = None
    overflow: str | None = None
    ring_timeout_s: int | None = None
    calamity: "CalamityOut | None" = None


class CalamityOut(BaseModel):
    target: str
    destination: str
    message: str = ""
    expires: datetime | None = None
    in_force: bool = True


class AreaCodeOut(BaseModel):
    code: str
    main_place: str
    mode: str
    population: int
    shared: bool
    municipalities: list[MunicipalityOut]
    calamity: CalamityOut | None = None


class AreaCodeSummary(BaseModel):
    code: str
    main_place: str
    mode: str
    municipalities: list[str]


class PlanOut(BaseModel):
    version: str
    operator_destination: str
    municipalities: int
    area_codes: list[AreaCodeSummary]
    calamities: list[CalamityOut]


class RouteOut(BaseModel):
    number: str
    verdict: str
    reason: str
    area_code: str | None = None
    mode: str | None = None
    municipality: str | None = None
    municipality_name: str | None = None
    destination: str | None = None
    message: str = ""
    candidates: list[str] = []
    plan_version: str


class ChangeOut(BaseModel):
    audit_id: int
    plan_version: str
    before: Any = None
    after: Any = None


class ReloadOut(BaseModel):
    plan_version: str
    previous_version: str


class AuditEntry(BaseModel):
    id: int
    at: float
    who: str
    action: str
    target: str
    before: Any = None
    after: Any = None


class CallbackOut(BaseModel):
    """A caller's consented request to be called back (kept until ``expires_at``, epoch seconds)."""

    id: int
    call_id: str
    municipality: str
    number: str  # E.164
    requested_at: float
    expires_at: float


class ErrorOut(BaseModel):
    detail: Any


class AdminUser(BaseModel):
    model_config = ConfigDict(frozen=True)
    who: str


MunicipalityOut.model_rebuild()
