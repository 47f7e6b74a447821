"""FastAGI: the Asterisk driver of the call flow.

Asterisk's dialplan sends every dialled number to ``agi://host:4573/call``. For each
call this module runs one :class:`~ivr.core.flow.CallFlow` through the drive loop
(:func:`ivr.core.drive.drive`) over an :class:`AgiPort`, which turns the port's requests into
AGI commands and their results into flow events; the controller saves the call record as
the call goes, so a record survives a caller hanging up mid-prompt or Asterisk going away.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Awaitable, Callable, Protocol, Sequence

from ivr.core.callrecord import CallRecord, ErrorKind, controller_lost, hash_caller
from ivr.core.drive import answer_first, drive
from ivr.core.flow import (
    Action,
    AskDigits,
    CallEnded,
    CallerHungUp,
    CallFlow,
    CallStarted,
    DecideAgain,
    Digit,
    DigitsEntered,
    DriverLost,
    Event,
    MenuPage,
    NoInput,
    Question,
    RequestCallback,
    Transfer,
    TransferAnswered,
    TransferFailed,
)

log = logging.getLogger(__name__)

PROMPT_DIR = "ivr14"
ALL_DIGITS = "0123456789*#"
DIAL_TIMEOUT_S = 30
INTER_DIGIT_TIMEOUT_S = 5.0  # a keyed number is complete when the caller stops keying this long
CALLER_LOOKUP_TIMEOUT_S = 0.5  # what is known about a caller must never hold up the call
LOST_LOOKUP_TIMEOUT_S = 2.0  # reading a lost call's saved record; without it, the record is made from the channel


@dataclass(frozen=True, slots=True)
class CallerContext:
    """What the driver knows about a caller for a suggestion (see ivr.core.suggestion)."""

    known_municipality: str | None = None
    caller_area_code: str | None = None


#: (the caller's number as Asterisk gave it, its salted hash, the dialled number) -> what is known
CallerLookup = Callable[[str, str, str], Awaitable[CallerContext]]


class ChannelHungUp(Exception):
    """The caller's channel is gone."""


class AsteriskLost(Exception):
    """The AGI connection to Asterisk dropped or answered nonsense."""


@dataclass(frozen=True, slots=True)
class AgiResult:
    code: int
    result: str
    data: str  # text in parentheses, e.g. "timeout"
    rest: str  # anything after, e.g. "endpos=1234"


def parse_result(line: str) -> AgiResult:
    """Parse '200 result=49 (dtmf) endpos=123' and friends."""
    head, _, tail = line.partition(" ")
    if not head.isdigit():
        raise AsteriskLost(f"unexpected AGI line {line!r}")
    code = int(head)
    result, data, rest = "", "", tail
    if tail.startswith("result="):
        value, _, rest = tail[len("result="):].partition(" ")
        result = value
        if rest.startswith("("):
            data, _, rest = rest[1:].partition(")")
            rest = rest.strip()
    return AgiResult(code, result, data, rest)


class AgiChannel:
    """One FastAGI session: send a command, read its result, notice hang-ups."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, headers: dict[str, str]):
        self.reader, self.writer, self.headers = reader, writer, headers
        self.hung_up = False
        self.answered = False

    async def command(self, text: str, *, dead_ok: bool = False) -> AgiResult:
        if self.hung_up and not dead_ok:
            raise ChannelHungUp(text)
        try:
            self.writer.write(text.encode() + b"\n")
            await self.writer.drain()
            while True:
                raw = await self.reader.readline()
                if not raw:
                    raise AsteriskLost(f"connection closed during {text!r}")
                line = raw.decode(errors="replace").rstrip("\r\n")
                if line == "HANGUP":  # asynchronous notice; the command's own result follows
                    self.hung_up = True
                    continue
                if line.startswith("100 "):
                    continue
                if line.startswith("520-"):  # usage error: multi-line, ends with '520 End of proper usage.'
                    while line and not line.startswith("520 "):
                        line = (await self.reader.readline()).decode(errors="replace").rstrip("\r\n")
                    raise AsteriskLost(f"usage error for {text!r}")
                break
        except (ConnectionError, OSError) as exc:
            raise AsteriskLost(f"{type(exc).__name__} during {text!r}") from exc
        result = parse_result(line)
        if result.code == 511 or (result.result == "-1" and not dead_ok):
            self.hung_up = True
            raise ChannelHungUp(text)
        return result

    async def stream(self, key: str, escape_digits: str = "") -> str | None:
        r = await self.command(f'STREAM FILE {PROMPT_DIR}/{key} "{escape_digits}"')
        return chr(int(r.result)) if r.result not in ("", "0") else None

    async def wait_for_digit(self, timeout_s: float) -> str | None:
        r = await self.command(f"WAIT FOR DIGIT {int(timeout_s * 1000)}")
        return chr(int(r.result)) if r.result not in ("", "0") else None

    async def get_variable(self, name: str) -> str:
        r = await self.command(f"GET VARIABLE {name}", dead_ok=True)
        return r.data if r.result == "1" else ""

    async def set_variable(self, name: str, value: str) -> None:
        await self.command(f'SET VARIABLE {name} "{value}"', dead_ok=True)


class SpeechPath(Protocol):
    """How a Listen action is carried out (the AudioSocket path); absent = no speech."""

    async def listen(self, channel: AgiChannel, call_id: str, action: Question) -> Event: ...

    async def decide_again(self, call_id: str, action: DecideAgain) -> Event: ...


class CallObserver(Protocol):
    """Told about every call's progress: the metrics and any live view hang off this."""

    def call_started(self, record: CallRecord) -> None: ...
    def call_event(self, record: CallRecord, event: Event, actions: list[Action]) -> None: ...
    def call_ended(self, record: CallRecord) -> None: ...


class CallController:
    """Runs each AGI session through a fresh call flow."""

    def __init__(self, *, flow_factory: Callable[[], CallFlow], save: Callable[[CallRecord], None],
                 caller_salt: str = "", speech: SpeechPath | None = None,
                 answered_by: Callable[[str], Awaitable[tuple[str, float] | None]] | None = None,
                 observer: CallObserver | None = None, clock: Callable[[], float] = time.monotonic,
                 callbacks: Callable[[str, RequestCallback], None] | None = None,
                 caller_lookup: CallerLookup | None = None,
                 find: Callable[[str], CallRecord | None] | None = None):
        self.flow_factory = flow_factory
        self.find = find  # a saved record by call id: what a controller that died had written
        self.caller_lookup = caller_lookup
        self.callbacks = callbacks
        self.save = save
        self.caller_salt = caller_salt
        self.speech = speech
        self.answered_by = answered_by
        self.observer = observer
        self.clock = clock
        self.active = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """asyncio server callback for one FastAGI connection."""
        self.active += 1
        try:
            headers = await _read_headers(reader)
            if headers is None:
                return
            channel = AgiChannel(reader, writer, headers)
            if headers.get("agi_network_script", "").strip("/") == "lost":
                await self.record_lost(channel)
            else:
                await self.run_call(channel)
        except Exception:  # one broken call must never take the server down
            log.exception("AGI session failed")
        finally:
            self.active -= 1
            writer.close()

    async def run_call(self, channel: AgiChannel) -> CallRecord:
        h = channel.headers
        flow = self.flow_factory()
        call_id = h.get("agi_uniqueid") or uuid.uuid4().hex
        dialled = h.get("agi_extension", "")
        number = h.get("agi_callerid", "")
        caller = hash_caller(number, self.caller_salt)
        known = await self._caller_context(number, caller, dialled)
        started = CallStarted(self.clock(), call_id, dialled, caller=caller, wall_time=time.time(),
                              known_municipality=known.known_municipality, caller_area_code=known.caller_area_code)
        actions = flow.handle(started)
        record = flow.record
        self._persist(record)
        if self.observer:
            self.observer.call_started(record)
            self.observer.call_event(record, started, actions)
        port = AgiPort(channel, call_id, speech=self.speech, answered_by=self.answered_by, clock=self.clock,
                       callbacks=self.callbacks)
        try:
            if call_id != h.get("agi_uniqueid"):  # the dialplan sets it to UNIQUEID itself
                await channel.set_variable("__IVR_CALL_ID", call_id)
            if answer_first(actions):  # straight through: the caller hears the far end ring
                await channel.command("ANSWER")
                channel.answered = True
            await drive(flow, port, actions, observe=lambda event, acts: self._observe(record, event, acts),
                        settled=lambda: self._persist(record))
        except ChannelHungUp:
            self._feed(flow, CallerHungUp(self.clock(), await port.hangup_cause()))
        except AsteriskLost as exc:
            self._feed(flow, DriverLost(self.clock(), f"asterisk lost: {exc}", ErrorKind.ASTERISK_LOST))
        except asyncio.CancelledError:
            self._feed(flow, DriverLost(self.clock(), "controller shutting down", ErrorKind.SHUTDOWN))
            raise
        finally:
            if not flow.ended:
                self._feed(flow, CallerHungUp(self.clock(), await port.hangup_cause()))
            self._feed(flow, CallEnded(self.clock(), time.time()))
            self._persist(record)
            if self.observer:
                self.observer.call_ended(record)
            await _mark_recorded(channel)
        return record

    async def record_lost(self, channel: AgiChannel) -> CallRecord | None:
        """Asterisk reports a call whose controller died while holding it (``agi://…/lost`` in the
        dialplan's fallback): finish its record as lost, so a call a controller took is never left
        without an ended record - also when the dead controller's last save never reached the store."""
        h = channel.headers
        call_id = h.get("agi_uniqueid", "")
        saved = None
        if self.find is not None:
            try:
                saved = await asyncio.wait_for(asyncio.to_thread(self.find, call_id), LOST_LOOKUP_TIMEOUT_S)
            except Exception:
                log.warning("lost call %s: its saved record could not be read; writing it from the channel",
                            call_id, exc_info=True)
        try:
            dial_status = await channel.get_variable("DIALSTATUS")
        except (ChannelHungUp, AsteriskLost):
            dial_status = ""
        now = time.time()
        record = controller_lost(saved, call_id=call_id, dialled=h.get("agi_extension", ""),
                                 caller=hash_caller(h.get("agi_callerid", ""), self.caller_salt),
                                 started_at=started_at_of(call_id, now), at=now,
                                 reason="controller lost: the controller holding the call stopped (reported by Asterisk)",
                                 transfer_answered=dial_status == "ANSWER")
        if record is None:
            log.info("lost call %s: its controller had finished the record already", call_id)
            await _mark_recorded(channel)
            return None
        log.warning("lost call %s: its controller stopped mid-call; recorded as %s", call_id, record.outcome)
        self._persist(record)
        if self.observer:
            self.observer.call_ended(record)
        await _mark_recorded(channel)
        return record

    async def _caller_context(self, number: str, caller: str, dialled: str) -> CallerContext:
        """What is known about the caller; nothing when the lookup is slow or fails (no suggestion then)."""
        if self.caller_lookup is None:
            return CallerContext()
        try:
            return await asyncio.wait_for(self.caller_lookup(number, caller, dialled), CALLER_LOOKUP_TIMEOUT_S)
        except Exception:
            log.warning("caller lookup for a call to %s failed: no suggestion", dialled, exc_info=True)
            return CallerContext()

    def _observe(self, record: CallRecord, event: Event, actions: list[Action]) -> None:
        if self.observer:
            self.observer.call_event(record, event, actions)

    def _feed(self, flow: CallFlow, event: Event) -> None:
        self._observe(flow.record, event, flow.handle(event))

    def _persist(self, record: CallRecord) -> None:
        try:
            self.save(record)
        except Exception:  # storage trouble must not drop the call; the final save retries
            log.exception("could not save call record %s", record.call_id)


class AgiPort:
    """The drive loop's port on one AGI session (see :class:`ivr.core.drive.CallPort`)."""

    def __init__(self, channel: AgiChannel, call_id: str, *, speech: SpeechPath | None = None,
                 answered_by: Callable[[str], Awaitable[tuple[str, float] | None]] | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 callbacks: Callable[[str, RequestCallback], None] | None = None):
        self.channel, self.call_id = channel, call_id
        self.speech, self.answered_by, self.now = speech, answered_by, clock
        self.callbacks = callbacks
        self._dial_failed = False

    async def play(self, prompts: Sequence[str], stop_digits: str = "") -> str | None:
        if prompts and self._dial_failed and not self.channel.answered:
            # a straight-through call whose municipality failed: the caller must hear the overflow,
            # the alternative number and the callback offer, and key in digits
            await self.channel.command("ANSWER")
            self.channel.answered = True
        for key in prompts:
            digit = await self.channel.stream(key, stop_digits)
            if digit:
                return digit
        return None

    async def collect_digit(self, menu: MenuPage) -> Event:
        digit = await self.play(menu.prompts, ALL_DIGITS)
        if digit:
            return Digit(self.now(), digit)
        digit = await self.channel.wait_for_digit(menu.timeout_s)
        return Digit(self.now(), digit) if digit else NoInput(self.now())

    async def listen(self, question: Question) -> Event:
        if not question.by_voice:  # a question of a DTMF-menu area code: a key answers it
            digit = await self.play(question.prompts, ALL_DIGITS) or await self.channel.wait_for_digit(
                question.timeout_s)
            return Digit(self.now(), digit) if digit else NoInput(self.now())
        if self.speech is None:
            raise AsteriskLost("Listen action without a speech path")
        return await self.speech.listen(self.channel, self.call_id, question)

    async def decide_again(self, again: DecideAgain) -> Event:
        if self.speech is None:
            return NoInput(self.now())
        return await self.speech.decide_again(self.call_id, again)

    async def dial(self, transfer: Transfer, started_at: float) -> list[Event]:
        channel = self.channel
        answered_before = channel.answered
        # 'r': the caller hears ringback while the destination is set up
        timeout = int(transfer.timeout_s or DIAL_TIMEOUT_S)
        await channel.command(f"EXEC Dial {transfer.destination},{timeout},r", dead_ok=True)
        status = await channel.get_variable("DIALSTATUS")
        now = self.now()
        if status == "ANSWER":
            # Dial returns when the connected call ends; ANSWEREDTIME_MS dates the answer
            answer = await self.answered_by(self.call_id) if self.answered_by else None
            who, answered_at = answer if answer else ("", None)
            if answered_at is None and not answered_before:
                # ANSWEREDTIME counts from the caller channel's answer: usable only when Dial answered it
                answered_at = now - (_int(await channel.get_variable("ANSWEREDTIME_MS")) or 0) / 1000
            setup_ms = max(0.0, (answered_at - started_at) * 1000) if answered_at is not None else None
            answered = TransferAnswered(answered_at or now, who, setup_ms, timed=answered_at is not None)
            return [answered, CallerHungUp(now, "normal")]
        if status == "CANCEL" or channel.hung_up:
            return [CallerHungUp(now, await self.hangup_cause())]
        self._dial_failed = True
        return [TransferFailed(now, status or "UNKNOWN")]

    async def collect_digits(self, ask: AskDigits) -> Event:
        keyed = await self.play(ask.prompts, ALL_DIGITS) or ""
        deadline = self.now() + ask.timeout_s
        while ask.end_digit not in keyed and len(keyed) < ask.max_digits:
            left = deadline - self.now()
            if left <= 0:
                break
            digit = await self.channel.wait_for_digit(min(left, INTER_DIGIT_TIMEOUT_S) if keyed else left)
            if not digit:
                break
            keyed += digit
        keyed = keyed.split(ask.end_digit)[0] if ask.end_digit else keyed
        return DigitsEntered(self.now(), keyed) if keyed else NoInput(self.now())

    async def request_callback(self, request: RequestCallback) -> None:
        if self.callbacks is None:
            log.error("call %s: callback request for %s dropped: no callback store", self.call_id,
                      request.municipality)
            return
        try:
            self.callbacks(self.call_id, request)
        except Exception:  # the caller is told it is noted; an operator must see that it was not
            log.exception("call %s: could not store the callback request for %s", self.call_id,
                          request.municipality)

    async def hang_up(self) -> None:
        await self.channel.command("HANGUP")

    async def hangup_cause(self) -> str:
        try:
            return await asyncio.wait_for(self.channel.get_variable("HANGUPCAUSE"), 1.0)
        except Exception:
            return ""


async def _mark_recorded(channel: AgiChannel) -> None:
    """Tell the dialplan this call's record is finished: without IVR_RECORDED it reports the call as
    lost (the controller stopped mid-call), because a closed socket looks the same either way."""
    try:
        await channel.set_variable("IVR_RECORDED", "1")
    except (ChannelHungUp, AsteriskLost):
        pass  # the channel or Asterisk is gone: nobody is left to report the call


def started_at_of(unique_id: str, default: float) -> float:
    """When Asterisk created the channel: its UNIQUEID is ``[systemname-]epoch.sequence``."""
    try:
        return float(unique_id.rsplit("-", 1)[-1].split(".", 1)[0])
    except ValueError:
        return default


def _int(text: str) -> int | None:
    try:
        return int(text)
    except (TypeError, ValueError):
        return None


async def _read_headers(reader: asyncio.StreamReader) -> dict[str, str] | None:
    headers: dict[str, str] = {}
    while True:
        raw = await reader.readline()
        if not raw:
            return None
        line = raw.decode(errors="replace").rstrip("\r\n")
        if not line:
            return headers
        key, sep, value = line.partition(": ")
        if sep:
            headers[key] = value
