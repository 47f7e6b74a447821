"""The HTTP API (FastAPI; OpenAPI at ``/docs``) and ``/metrics``, on the running service.

Reads are open (bind the API to a management network: ``IVR_API_HOST``). Admin writes
need ``Authorization: Bearer <IVR_ADMIN_TOKEN>``; with no token configured every write is
refused (503). A write builds a new validated plan (plans are immutable), swaps it in —
the next call uses it, calls in progress keep theirs — and is audit-logged with who,
when, what, and the before/after — all of it by :mod:`ivr.plan_admin`. The audit log is
replayed on restart and on a reload of the override file (``SIGHUP`` or
``POST /v1/plan/reload``), so admin changes last; put lasting changes in the file.

A little over 400 lines on purpose: every route is here, so the HTTP surface reads in one
place; what the writes do is in :mod:`ivr.plan_admin` and the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import re
from datetime import datetime, timezone
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from ivr.adapters.api_models import (
    AdminUser,
    AreaCodeOut,
    AreaCodeSummary,
    AuditEntry,
    CallbackOut,
    CallOut,
    CallPage,
    CalamityOut,
    ChangeOut,
    ErrorOut,
    Health,
    MunicipalityOut,
    PlanOut,
    Readiness,
    ReloadOut,
    RouteOut,
)
from ivr.adapters.metrics import MetricsObserver
from ivr.adapters.overrides import AreaCodeOverride, CalamityOverride, MunicipalityOverride
from ivr.core import plan_changes
from ivr.core.callrecord import Outcome
from ivr.core.plan import (CALAMITY_TARGET_PATTERN, CBS_CODE_PATTERN, AreaCode, Calamity, Municipality, NumberingPlan,
                           PlanError)
from ivr.core.report import compute_kpis
from ivr.core.routing import MAX_DIGITS, route

log = logging.getLogger(__name__)

AREA_CODE = r"^0?\d{2,3}$"
CBS_CODE = CBS_CODE_PATTERN
CALAMITY_TARGET = CALAMITY_TARGET_PATTERN
MAX_PAGE = 1000

Since = Annotated[str | None, Query(max_length=40, description="epoch seconds or ISO 8601; inclusive")]
Until = Annotated[str | None, Query(max_length=40, description="epoch seconds or ISO 8601; exclusive")]
AreaQ = Annotated[str | None, Query(pattern=AREA_CODE)]
MunQ = Annotated[str | None, Query(pattern=CBS_CODE)]

AreaP = Annotated[str, Path(pattern=AREA_CODE, description="area code, with or without the leading 0")]
CbsP = Annotated[str, Path(pattern=CBS_CODE, description="CBS code, e.g. GM0664")]



# --- helpers ----------------------------------------------------------------------------------


def _calamity_out(c: Calamity | None, now: datetime | None = None) -> CalamityOut | None:
    if c is None:
        return None
    now = now or datetime.now(timezone.utc)
    return CalamityOut(target=c.target, destination=c.destination, message=c.message, expires=c.expires,
                       in_force=c.in_force(now))


def _municipality_out(plan: NumberingPlan, m: Municipality) -> MunicipalityOut:
    return MunicipalityOut(
        cbs_code=m.cbs_code, name=m.name, province=m.province, population=m.population, status=m.status.value,
        destination=m.destination, area_codes=list(m.area_codes), aliases=list(m.aliases),
        former_names=list(m.former_names), alt_number=m.alt_number, overflow=m.overflow,
        ring_timeout_s=m.ring_timeout_s,
        calamity=_calamity_out(plan.calamity_for(m.cbs_code, datetime.now(timezone.utc))))


def normalise_area_code(code: str) -> str:
    return code if code.startswith("0") else "0" + code


def _parse_time(value: str | None, name: str) -> float | None:
    """Epoch seconds or an ISO 8601 date/time (UTC when no zone is given)."""
    if value is None or value == "":
        return None
    try:
        x = float(value)
        if x != x or x in (float("inf"), float("-inf")):
            raise ValueError
        return x
    except ValueError:
        pass
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        raise HTTPException(422, f"{name}: expected epoch seconds or an ISO 8601 date/time, got {value[:40]!r}")
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.timestamp()


# --- the app -----------------------------------------------------------------------------------


def create_app(service: Any, metrics: MetricsObserver | None = None) -> FastAPI:
    """The API on a service (``ivr.service.Service`` or anything with the same attributes)."""
    if metrics is None:
        metrics = service.observer if isinstance(getattr(service, "observer", None), MetricsObserver) else None
    if metrics is None:
        metrics = MetricsObserver(misroute_window_s=service.settings.misroute_window_s)
    metrics.bind(service)

    app = FastAPI(title="14+ netnummer IVR controller", version="1", description=__doc__)
    app.state.service = service
    app.state.metrics = metrics

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        # the reason without echoing the input: a body of NaN or Infinity cannot be written back as JSON
        detail = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
                  for e in exc.errors()]
        return JSONResponse({"detail": detail}, status_code=422)

    @app.exception_handler(Exception)
    async def _unhandled(request: Request, exc: Exception):  # pragma: no cover - only on bugs
        log.exception("API error on %s %s", request.method, request.url.path)
        metrics.api_error()
        return JSONResponse({"detail": "internal error"}, status_code=500)

    _health_routes(app, service, metrics)
    _call_routes(app, service)
    _plan_routes(app, service)
    _admin_routes(app, service, metrics)
    return app


def _health_routes(app: FastAPI, service: Any, metrics: MetricsObserver) -> None:
    """Liveness, readiness and the Prometheus exposition."""

    @app.get("/healthz", response_model=Health, tags=["health"])
    def healthz() -> Health:
        """The process is up."""
        return Health()

    @app.get("/readyz", response_model=Readiness, tags=["health"],
             responses={503: {"model": Readiness, "description": "not ready; the reasons are in the body"}})
    def readyz():
        """Ready to take calls: AMI connected, plan loaded, recogniser loaded."""
        state = service.readiness()
        return JSONResponse(Readiness(**state).model_dump(), status_code=200 if state["ready"] else 503)

    @app.get("/metrics", tags=["health"], response_class=Response,
             responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus exposition"}})
    def prometheus_metrics() -> Response:
        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)


def _call_routes(app: FastAPI, service: Any) -> None:
    """Call records and the KPI report."""

    @app.get("/v1/calls", response_model=CallPage, tags=["calls"])
    def list_calls(since: Since = None, until: Until = None, area_code: AreaQ = None, municipality: MunQ = None,
                   outcome: Annotated[Outcome | None, Query()] = None,
                   limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
                   offset: Annotated[int, Query(ge=0, le=10**9)] = 0) -> CallPage:
        """Call records, oldest first, with filters and pagination."""
        filters = dict(since=_parse_time(since, "since"), until=_parse_time(until, "until"),
                       area_code=normalise_area_code(area_code) if area_code else None,
                       municipality=municipality, outcome=outcome.value if outcome else None)
        store = service.records()
        items = [CallOut.model_validate(r.to_dict()) for r in store.query(**filters, limit=limit, offset=offset)]
        return CallPage(total=store.count(**filters), limit=limit, offset=offset, items=items)

    @app.get("/v1/calls/{call_id}", response_model=CallOut, tags=["calls"],
             responses={404: {"model": ErrorOut}})
    def get_call(call_id: Annotated[str, Path(min_length=1, max_length=128)]) -> CallOut:
        record = service.records().get(call_id)
        if record is None:
            raise HTTPException(404, f"no call {call_id!r}")
        return CallOut.model_validate(record.to_dict())

    @app.get("/v1/report", tags=["calls"])
    def report(since: Since = None, until: Until = None, area_code: AreaQ = None,
               municipality: MunQ = None) -> dict[str, Any]:
        """KPIs of the selected calls next to the 2020 baseline (the same as ``ivr report --format json``)."""
        filters = dict(since=_parse_time(since, "since"), until=_parse_time(until, "until"),
                       area_code=normalise_area_code(area_code) if area_code else None, municipality=municipality)
        records = service.records().iter_query(**filters)
        kpis = compute_kpis(records, misroute_window_s=service.settings.misroute_window_s,
                            filters={k: v for k, v in filters.items() if v is not None})
        return kpis.to_dict()


def _plan_routes(app: FastAPI, service: Any) -> None:
    """The plan, read only, and dry-run routing."""

    @app.get("/v1/plan", response_model=PlanOut, tags=["plan"])
    def get_plan() -> PlanOut:
        plan = service.plan
        now = datetime.now(timezone.utc)
        return PlanOut(
            version=plan.version, operator_destination=plan.operator_destination,
            municipalities=len(plan.municipalities),
            area_codes=[AreaCodeSummary(code=a.code, main_place=a.main_place, mode=a.mode.value,
                                        municipalities=list(a.municipalities))
                        for a in sorted(plan.area_codes.values(), key=lambda a: a.code)],
            calamities=[_calamity_out(c, now) for c in plan.calamities])

    def _area(plan: NumberingPlan, code: str) -> AreaCode:
        code = normalise_area_code(code)
        if code not in plan.area_codes:
            raise HTTPException(404, f"unknown area code {code}")
        return plan.area_codes[code]

    def _municipality(plan: NumberingPlan, cbs: str) -> Municipality:
        if cbs not in plan.municipalities:
            raise HTTPException(404, f"unknown municipality {cbs}")
        return plan.municipalities[cbs]

    @app.get("/v1/area-codes/{code}", response_model=AreaCodeOut, tags=["plan"],
             responses={404: {"model": ErrorOut}})
    def get_area_code(code: AreaP) -> AreaCodeOut:
        plan = service.plan
        area = _area(plan, code)
        return AreaCodeOut(code=area.code, main_place=area.main_place, mode=area.mode.value,
                           population=area.population, shared=area.shared,
                           municipalities=[_municipality_out(plan, m) for m in plan.candidates(area.code)],
                           calamity=_calamity_out(plan.calamity_for(area.code, datetime.now(timezone.utc))))

    @app.get("/v1/municipalities/{cbs}", response_model=MunicipalityOut, tags=["plan"],
             responses={404: {"model": ErrorOut}})
    def get_municipality(cbs: CbsP) -> MunicipalityOut:
        plan = service.plan
        return _municipality_out(plan, _municipality(plan, cbs))

    @app.get("/v1/route", response_model=RouteOut, tags=["plan"])
    def dry_run(number: Annotated[str, Query(min_length=1, max_length=MAX_DIGITS)]) -> RouteOut:
        """What a call to ``number`` would do now (no call is made)."""
        plan = service.plan
        d = route(plan, number, speech_available=getattr(service, "speech", None) is not None)
        return RouteOut(number=number, **d.to_dict(), plan_version=plan.version)

    @app.get("/v1/calamities", response_model=list[CalamityOut], tags=["plan"])
    def list_calamities() -> list[CalamityOut]:
        now = datetime.now(timezone.utc)
        return [_calamity_out(c, now) for c in service.plan.calamities]


def _admin_routes(app: FastAPI, service: Any, metrics: MetricsObserver) -> None:
    """Admin writes (bearer token), each through the plan admin, and the audit log."""

    def admin(action: str):
        def dependency(request: Request) -> AdminUser:
            token = service.settings.admin_token
            expected = token.get_secret_value() if token is not None else ""
            if not expected:
                metrics.admin_change(action, "disabled")
                raise HTTPException(503, "admin writes are disabled: no admin token configured (IVR_ADMIN_TOKEN)")
            header = request.headers.get("authorization", "")
            scheme, _, given = header.partition(" ")
            if scheme.lower() != "bearer" or not given.strip():
                metrics.admin_change(action, "unauthorized")
                raise HTTPException(401, "missing bearer token", headers={"WWW-Authenticate": "Bearer"})
            if not hmac.compare_digest(given.strip().encode(), expected.encode()):
                metrics.admin_change(action, "unauthorized")
                raise HTTPException(403, "wrong admin token")
            user = re.sub(r"[^\w.@-]", "", request.headers.get("x-admin-user", ""))[:64] or "admin"
            host = request.client.host if request.client else "?"
            return AdminUser(who=f"{user}@{host}")
        return dependency

    def apply(action: str, target: str, user: AdminUser, change: plan_changes.ChangeFn) -> ChangeOut:
        """The change through the plan admin (validate, swap, audit); its refusals as HTTP errors."""
        try:
            done = service.plans.apply(user.who, action, target, change)
        except plan_changes.UnknownTarget as exc:
            raise HTTPException(404, str(exc))
        except plan_changes.ChangeRefused as exc:
            metrics.admin_change(action, "rejected")
            raise HTTPException(422, f"change refused, plan unchanged: {exc}")
        metrics.admin_change(action, "applied")
        return ChangeOut(audit_id=done.audit_id, plan_version=done.plan_version, before=done.before, after=done.after)

    denied = {401: {"model": ErrorOut}, 403: {"model": ErrorOut}, 404: {"model": ErrorOut},
              422: {"model": ErrorOut}, 503: {"model": ErrorOut, "description": "no admin token configured"}}

    @app.patch("/v1/municipalities/{cbs}", response_model=ChangeOut, tags=["admin"], responses=denied)
    def change_municipality(cbs: CbsP, body: MunicipalityOverride,
                            user: AdminUser = Depends(admin("municipality"))) -> ChangeOut:
        """Change a municipality's 14+ status, destination, alternative number or aliases."""
        fields = body.model_dump(exclude_none=True)
        if not fields:
            raise HTTPException(422, "nothing to change: give status, destination, alt_number, aliases, "
                                     "overflow or ring_timeout_s")
        if "aliases" in fields:
            aliases = tuple(dict.fromkeys(a.strip() for a in fields["aliases"] if a.strip()))
            if any(len(a) > 100 for a in aliases) or len(aliases) > 50:
                raise HTTPException(422, "aliases: at most 50, each at most 100 characters")
            fields["aliases"] = aliases

        return apply("municipality", cbs, user, plan_changes.change_municipality(cbs, fields))

    @app.patch("/v1/area-codes/{code}", response_model=ChangeOut, tags=["admin"], responses=denied)
    def change_area_code(code: AreaP, body: AreaCodeOverride,
                         user: AdminUser = Depends(admin("area_code"))) -> ChangeOut:
        """Change an area code's routing mode (direct, speech, dtmf, operator)."""
        code = normalise_area_code(code)
        return apply("area_code", code, user, plan_changes.change_area_code(code, body.mode))

    @app.put("/v1/calamities/{target}", response_model=ChangeOut, tags=["admin"], responses=denied)
    def set_calamity(target: Annotated[str, Path(pattern=CALAMITY_TARGET)], body: CalamityOverride,
                     user: AdminUser = Depends(admin("calamity"))) -> ChangeOut:
        """Send an area code or a municipality elsewhere, with a message, until it expires.

        Replaces a calamity already set for the same target. The body's ``target`` must
        match the path.
        """
        if body.target != target:
            raise HTTPException(422, f"body target {body.target!r} differs from the path {target!r}")
        if body.expires is not None and body.expires <= datetime.now(timezone.utc):
            raise HTTPException(422, "expires is in the past")
        return apply("calamity", target, user, plan_changes.set_calamity(Calamity(**body.model_dump())))

    @app.delete("/v1/calamities/{target}", response_model=ChangeOut, tags=["admin"], responses=denied)
    def clear_calamity(target: Annotated[str, Path(pattern=CALAMITY_TARGET)],
                       user: AdminUser = Depends(admin("calamity_clear"))) -> ChangeOut:
        """End the calamity override of a target."""
        return apply("calamity_clear", target, user, plan_changes.clear_calamity(target))

    @app.post("/v1/plan/reload", response_model=ReloadOut, tags=["admin"], responses=denied)
    def reload_plan(user: AdminUser = Depends(admin("reload"))) -> ReloadOut:
        """Read the override file again (as SIGHUP does), with the audited admin changes on top.

        A broken file is refused (422, with file, line and reason) and the running plan stays.
        """
        before = service.plan.version
        try:
            plan = service.reload_plan()
        except PlanError as exc:
            metrics.admin_change("reload", "rejected")
            raise HTTPException(422, f"reload refused, plan unchanged: {exc}")
        metrics.admin_change("reload", "applied")
        log.info("admin %s: plan reloaded (%s -> %s)", user.who, before, plan.version)
        return ReloadOut(plan_version=plan.version, previous_version=before)

    @app.get("/v1/callbacks", response_model=list[CallbackOut], tags=["admin"], responses=denied)
    def list_callbacks(municipality: MunQ = None,
                       user: AdminUser = Depends(admin("callbacks_read"))) -> list[CallbackOut]:
        """Callers who asked to be called back (numbers in E.164), oldest first; expired ones are purged."""
        return [CallbackOut(**row) for row in service.store.callbacks(municipality=municipality)]

    @app.delete("/v1/callbacks/{callback_id}", status_code=204, tags=["admin"], responses=denied)
    def clear_callback(callback_id: Annotated[int, Path(ge=1)],
                       user: AdminUser = Depends(admin("callback_clear"))) -> Response:
        """Clear a callback request (called back, or no longer wanted)."""
        if not service.store.delete_callback(callback_id):
            raise HTTPException(404, f"no callback request {callback_id}")
        metrics.admin_change("callback_clear", "applied")
        log.info("admin %s: callback request %s cleared", user.who, callback_id)
        return Response(status_code=204)

    # -- self-learning (issue 12): callers' confirmed answers, promoted by an operator (audited) --
    @app.get("/v1/learning", tags=["admin"], responses=denied)
    def list_learning(status: Annotated[str | None, Query(pattern="^(candidate|active|rejected)$")] = None,
                      municipality: MunQ = None,
                      user: AdminUser = Depends(admin("learning_read"))) -> list[dict[str, Any]]:
        """Kept utterances (without their features), oldest first; expired ones are purged."""
        return service.store.learned(status=status, cbs_code=municipality)

    @app.post("/v1/learning/{item_id}/approve", tags=["admin"], responses=denied)
    def approve_learning(item_id: Annotated[int, Path(ge=1)],
                         user: AdminUser = Depends(admin("learn_approve"))) -> dict[str, Any]:
        """Make a candidate a reference of the engine, if the held-back check does not get worse (422 if it does)."""
        done = service.learning.approve(item_id, user.who)
        if not done["ok"]:
            metrics.admin_change("learn_approve", "rejected")
            raise HTTPException(404 if "no such" in done["reason"] else 422, done["reason"])
        metrics.admin_change("learn_approve", "applied")
        return done

    @app.post("/v1/learning/{item_id}/reject", tags=["admin"], responses=denied)
    def reject_learning(item_id: Annotated[int, Path(ge=1)],
                        user: AdminUser = Depends(admin("learn_reject"))) -> dict[str, Any]:
        done = service.learning.reject(item_id, user.who)
        if not done["ok"]:
            raise HTTPException(404, done["reason"])
        metrics.admin_change("learn_reject", "applied")
        return done

    @app.delete("/v1/learning/callers/{caller}", tags=["admin"], responses=denied)
    def purge_learning(caller: Annotated[str, Path(pattern=r"^[0-9a-f]{1,64}$")],
                       user: AdminUser = Depends(admin("learn_purge"))) -> dict[str, Any]:
        """Delete every kept utterance of one caller hash (a caller's request)."""
        gone = service.learning.purge(caller, user.who)
        metrics.admin_change("learn_purge", "applied")
        return {"deleted": gone}

    @app.get("/v1/audit", response_model=list[AuditEntry], tags=["admin"], responses=denied)
    def audit_log(limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
                  user: AdminUser = Depends(admin("audit_read"))) -> list[AuditEntry]:
        """The latest admin changes, newest first (needs the admin token)."""
        return [AuditEntry(**row) for row in service.store.audit_log(limit)]



async def run_api(service: Any, host: str, port: int, *, metrics: MetricsObserver | None = None,
                  app: FastAPI | None = None, started: asyncio.Event | None = None) -> None:
    """Serve the API in the running event loop until cancelled."""
    import uvicorn

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self):  # the service owns SIGINT/SIGTERM
            yield

    app = app or create_app(service, metrics)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="off", access_log=False)
    server = Server(config)
    log.info("HTTP API and /metrics on http://%s:%s", host, port)

    async def _serve() -> None:
        try:
            await server.serve()
        except SystemExit:  # uvicorn exits when it cannot bind
            raise RuntimeError(f"HTTP API could not listen on {host}:{port}") from None

    task = asyncio.ensure_future(_serve())
    try:
        if started is not None:
            while not server.started and not task.done():
                await asyncio.sleep(0.01)
            started.set()
        await asyncio.shield(task)
    except asyncio.CancelledError:
        server.should_exit = True
        with contextlib.suppress(BaseException):
            await asyncio.wait_for(task, 5.0)
        raise
