"""AMI (panoramisk): events the call flow cannot see through AGI.

The lab's municipality extensions announce who answered with
``UserEvent(MunicipalityAnswered,CBS: …,Call: …)``; production destinations can send the
same event. The client also tracks its own health (connected, reconnects) for /readyz
and the metrics. panoramisk reconnects by itself every ``reconnect_s`` seconds.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict

from panoramisk import Manager

log = logging.getLogger(__name__)

_KEEP = 10_000  # answered-by entries kept for calls that never asked


class AmiClient:
    def __init__(self, host: str, port: int, user: str, secret: str, *, reconnect_s: int = 2):
        self.connected = False
        self.reconnects = 0
        self.last_error = "not connected yet"
        self._ever_connected = False
        self._answered: OrderedDict[str, tuple[str, float]] = OrderedDict()
        self._waiters: dict[str, asyncio.Event] = {}
        self.manager = Manager(host=host, port=port, username=user, secret=secret, ping_delay=10,
                               reconnect_timeout=reconnect_s, on_login=self._on_login,
                               on_disconnect=self._on_disconnect, loop=asyncio.get_running_loop())
        self.manager.register_event("UserEvent", self._on_user_event)

    def start(self) -> None:
        self.manager.connect()

    def close(self) -> None:
        self.manager.close()
        self.connected = False

    def _on_login(self, manager) -> None:
        if self._ever_connected:
            self.reconnects += 1
        self._ever_connected = True
        self.connected = True
        self.last_error = ""
        log.info("AMI connected")

    def _on_disconnect(self, manager, exc) -> None:
        self.connected = False
        self.last_error = f"connection lost: {exc}"
        log.warning("AMI connection lost (%s)", exc)

    def _on_user_event(self, manager, event) -> None:
        if event.get("UserEvent") != "MunicipalityAnswered":
            return
        call_id, cbs = event.get("Call", ""), event.get("CBS", "")
        if not call_id:
            return
        self._answered[call_id] = (cbs, time.monotonic())
        while len(self._answered) > _KEEP:
            self._answered.popitem(last=False)
        waiter = self._waiters.get(call_id)
        if waiter:
            waiter.set()

    async def answered_by(self, call_id: str, wait_s: float = 0.5) -> tuple[str, float] | None:
        """Who answered the call's transfer and when (monotonic), waiting briefly for a late event."""
        if call_id not in self._answered and self.connected:
            waiter = self._waiters.setdefault(call_id, asyncio.Event())
            try:
                await asyncio.wait_for(waiter.wait(), wait_s)
            except asyncio.TimeoutError:
                pass
            finally:
                self._waiters.pop(call_id, None)
        return self._answered.pop(call_id, None)
