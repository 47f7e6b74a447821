"""The running controller: plan, store, AMI, FastAGI (and speech) wired together.

``ivr serve`` builds one :class:`Service` and runs it; the HTTP API reads and changes
the same object. The plan is swapped atomically: a call keeps the plan it started with.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from pathlib import Path

from ivr.adapters.api import run_api
from ivr.adapters.asterisk.agi import CallController, CallerContext, CallObserver
from ivr.adapters.asterisk.ami import AmiClient
from ivr.adapters.asterisk.audiosocket import AudioSocketServer
from ivr.adapters.asterisk.speech_path import AudioSocketSpeech, PromptAudio, cached_matcher
from ivr.adapters.learning import Learning
from ivr.adapters.metrics import MetricsObserver
from ivr.adapters.store import RecordStore, RecordWriter, open_store
from ivr.config import Settings
from ivr.core.callback import CallbackRequest
from ivr.core.flow import CallFlow, RequestCallback
from ivr.core.yes_no import yes_no
from ivr.core.plan import NumberingPlan, PlanError
from ivr.core.routing import Verdict, route
from ivr.core.suggestion import landline_area_code
from ivr.plan_admin import PlanAdmin
from ivr.plan_files import confusable_rule
from ivr.speech.engines import load_recogniser  # loads the configured engine's modules only when called

log = logging.getLogger(__name__)


class Service:
    def __init__(self, settings: Settings, *, plan: NumberingPlan | None = None,
                 observer: CallObserver | None = None):
        self.settings = settings
        self.store = open_store(settings.records_db)
        log.info("call records: %s (schema version %s)", self.store.describe(), self.store.schema_version)
        self.plans = PlanAdmin(self.store, settings.plan_file, plan=plan)
        self.observer = observer
        self.ami = None
        self.speech = None  # set when a recogniser is loaded
        self.speech_error = "" if settings.speech_engine != "none" else "speech disabled by configuration"
        self._matcher_factory = None
        self._yes_no = None
        self.writer = RecordWriter(self.store)
        self.learning = Learning(self.store, settings, plan=lambda: self.plan,
                                 metrics=observer if hasattr(observer, "learning_step") else None)
        self.controller = CallController(
            flow_factory=self.new_flow, save=self.writer.save,
            caller_salt=settings.caller_salt.get_secret_value(),
            observer=_Collecting(observer, self) if settings.learn_collect else observer, callbacks=self.add_callback,
            caller_lookup=self.caller_context, find=self.store.get,
        )
        self._servers: list[asyncio.AbstractServer] = []
        self._audiosocket = None
        self._speech_task: asyncio.Task | None = None
        self._purge_task: asyncio.Task | None = None
        self._learn_task: asyncio.Task | None = None

    # -- plan (administered by ivr.plan_admin) --------------------------------------

    @property
    def plan(self) -> NumberingPlan:
        return self.plans.plan

    @property
    def plan_error(self) -> str:
        """Why the last reload was refused ("" after a good one)."""
        return self.plans.error

    def reload_plan(self, path: Path | None = None) -> NumberingPlan:
        """Load the override file again (SIGHUP, ``POST /v1/plan/reload``); a broken file keeps the last good plan."""
        return self.plans.reload(path)

    def new_flow(self) -> CallFlow:
        return CallFlow(self.plan, speech_available=self.speech is not None,
                        matcher_factory=self._matcher_factory, yes_no=self._yes_no)

    def enable_speech(self, speech_path, matcher_factory, yes_no) -> None:
        self.speech = speech_path
        self._matcher_factory = matcher_factory
        self._yes_no = yes_no
        self.controller.speech = speech_path
        self.speech_error = ""

    # -- what is known about a caller (the suggestion) -------------------------------

    async def caller_context(self, number: str, caller: str, dialled: str) -> CallerContext:
        """The municipality this caller was last routed to among the dialled shared area code's
        (within ``suggest_days``) and their landline's area code; only for calls that will be asked."""
        s, plan = self.settings, self.plan
        decision = route(plan, dialled, speech_available=self.speech is not None)
        if decision.verdict is not Verdict.ASK or decision.access is not None:
            return CallerContext()  # straight through, told, or from abroad: nothing to suggest
        area = landline_area_code(plan, number) if s.suggest_landline else None
        known = None
        if s.suggest_days > 0 and caller:
            codes = tuple(m.cbs_code for m in decision.candidates)
            since = time.time() - s.suggest_days * 86400
            known = await asyncio.to_thread(self.store.last_routed_municipality, caller, codes, since)
        return CallerContext(known, area)

    # -- callback requests --------------------------------------------------------

    def add_callback(self, call_id: str, request: RequestCallback) -> int:
        """Keep a caller's consented callback request for the configured retention."""
        now = time.time()
        expires = now + self.settings.callback_retention_days * 86400
        callback_id = self.store.add_callback(CallbackRequest(call_id, request.municipality, request.number, now,
                                                              expires))
        log.info("call %s: callback request %s for %s kept until %s", call_id, callback_id, request.municipality,
                 time.strftime("%Y-%m-%d", time.gmtime(expires)))
        return callback_id

    async def _purge_callbacks(self, every_s: float = 3600.0) -> None:
        """Expired callback requests and learned utterances go even when nobody lists or adds one."""
        while True:
            try:
                gone = await asyncio.to_thread(self.store.purge_callbacks)
                if gone:
                    log.info("purged %d expired callback request(s)", gone)
                gone = await asyncio.to_thread(self.store.purge_learned)
                if gone:  # the engine lets them go at its next refresh (IVR_LEARN_REFRESH_S)
                    log.info("purged %d expired learned utterance(s)", gone)
            except Exception:  # a locked or broken file: try again at the next round
                log.exception("purging callback requests failed")
            await asyncio.sleep(every_s)

    # -- running ------------------------------------------------------------------

    async def start(self) -> None:
        s = self.settings
        # a deep backlog: at 100+ calls/s a burst of FastAGI connects must not be refused
        server = await asyncio.start_server(self.controller.handle, s.agi_host, s.agi_port, backlog=1024)
        self._servers.append(server)
        log.info("FastAGI listening on %s:%s", s.agi_host, s.agi_port)
        self._purge_task = asyncio.create_task(self._purge_callbacks())
        if s.speech_engine != "none":
            self._speech_task = asyncio.create_task(self._start_speech())
        if s.ami_secret is not None:
            self.ami = AmiClient(s.ami_host, s.ami_port, s.ami_user, s.ami_secret.get_secret_value())
            self.controller.answered_by = self.ami.answered_by
            self.ami.start()
        else:
            log.warning("no AMI secret configured (IVR_AMI_SECRET): running without AMI events")

    async def _start_speech(self) -> None:
        """Load the recogniser off the event loop; until it is ready shared codes use the menu."""
        s = self.settings
        self.speech_error = f"loading {s.speech_engine}"
        try:
            recogniser = await asyncio.to_thread(load_recogniser, s.speech_engine, self.plan)
            server = AudioSocketServer(s.audiosocket_host, s.audiosocket_port)
            await server.start()
        except Exception as exc:  # no speech: the DTMF menu serves shared codes
            self.speech_error = f"{s.speech_engine} unavailable: {exc}"
            log.error("speech recognition unavailable, shared area codes use the DTMF menu: %s", exc)
            return
        self._audiosocket = server
        path = AudioSocketSpeech(server, recogniser, PromptAudio(s.prompts_dir), lambda: self.plan)
        path.keep_spoken = s.learn_collect
        if hasattr(recogniser, "set_learned"):  # the fusion engine learns; the others only collect nothing
            self.learning.engine = recogniser
            self._learn_task = asyncio.create_task(self._refresh_learned())
        confusable = confusable_rule(s.confusable_margin)
        self.enable_speech(path, lambda candidates: cached_matcher(tuple(candidates), confusable), yes_no)
        log.info("speech recognition ready (%s), AudioSocket on %s:%s", s.speech_engine, server.host, server.port)

    async def _refresh_learned(self) -> None:
        """The active learned references into the engine, now and every ``learn_refresh_s`` (an
        approval by ``ivr learn`` in another process, expiry, a purge)."""
        while True:
            try:
                n = await asyncio.to_thread(self.learning.refresh)
                log.debug("learned references in use: %d", n)
            except Exception:
                log.exception("reading the learned references failed")
            await asyncio.sleep(self.settings.learn_refresh_s)

    async def stop(self) -> None:
        if self._learn_task is not None:
            self._learn_task.cancel()
            await asyncio.gather(self._learn_task, return_exceptions=True)
        self.learning.close()
        if self._purge_task is not None:
            self._purge_task.cancel()
            await asyncio.gather(self._purge_task, return_exceptions=True)
        if self._audiosocket is not None:
            await self._audiosocket.close()
        for server in self._servers:
            server.close()
            await server.wait_closed()
        if self.ami:
            self.ami.close()
        self.writer.close()
        self.store.close()

    def readiness(self) -> dict[str, object]:
        checks = {
            "plan": {"ok": True, "version": self.plan.version, "last_reload_error": self.plan_error},
            "ami": {"ok": bool(self.ami and self.ami.connected),
                    "reason": "" if self.ami and self.ami.connected else
                    (self.ami.last_error if self.ami else "AMI not configured")},
            "recogniser": {"ok": self.speech is not None or self.settings.speech_engine == "none",
                           "reason": self.speech_error},
        }
        return {"ready": all(c["ok"] for c in checks.values()), "checks": checks}

    def records(self) -> RecordStore:
        """The call store, once every record saved so far has been written."""
        self.writer.flush(2.0)
        return self.store


class _Collecting:
    """The call observer when collecting: the service's own observer, then, at the end of a call,
    the call's spoken answers to the self-learning loop."""

    def __init__(self, inner: CallObserver | None, service: Service):
        self.inner, self.service = inner, service

    def call_started(self, record) -> None:
        if self.inner:
            self.inner.call_started(record)

    def call_event(self, record, event, actions) -> None:
        if self.inner:
            self.inner.call_event(record, event, actions)

    def call_ended(self, record) -> None:
        if self.inner:
            self.inner.call_ended(record)
        speech = self.service.speech
        if speech is None:
            return
        try:
            self.service.learning.call_ended(record, speech.spoken(record.call_id))
        except Exception:  # learning must never disturb calls
            log.exception("call %s: handing its answers to the learning loop failed", record.call_id)


async def serve(settings: Settings) -> None:
    """Run until SIGINT/SIGTERM: FastAGI, AMI and the HTTP API with /metrics."""
    metrics = MetricsObserver(misroute_window_s=settings.misroute_window_s)
    service = Service(settings, observer=metrics)
    metrics.bind(service)
    await service.start()
    api = asyncio.create_task(run_api(service, settings.api_host, settings.api_port, metrics=metrics))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, lambda: asyncio.ensure_future(reload_on_signal(service)))
    done, _ = await asyncio.wait({api, asyncio.ensure_future(stop.wait())}, return_when=asyncio.FIRST_COMPLETED)
    if api in done and not stop.is_set():
        log.error("HTTP API stopped (%s); shutting down", api.exception() or "no error")
    api.cancel()
    await asyncio.gather(api, return_exceptions=True)
    await service.stop()


async def reload_on_signal(service: Service) -> None:
    """SIGHUP: reload the override file off the event loop; a broken file is logged and refused."""
    try:
        await asyncio.to_thread(service.reload_plan)
    except PlanError:
        pass  # logged by the plan admin; the last good plan stays
    except Exception:  # pragma: no cover - a reload must never stop the service
        log.exception("plan reload failed")
