"""The one drive loop: carries out a call flow's actions over a small port.

A driver (the Asterisk AGI session, the simulator's caller) implements :class:`CallPort`
— play, collect a digit, listen, dial, hang up — and hands it to :func:`drive`, which
feeds the flow the events the port returns and carries out the actions the flow gives
back. This is the only place that branches on action types.

The loop is a coroutine. Asterisk awaits it on the event loop; a synchronous port (the
simulator's, whose methods never suspend) runs it with :func:`run_sync`, without an
event loop.
"""

from __future__ import annotations

from typing import Any, Callable, Coroutine, Protocol, Sequence, TypeVar

from ivr.core.flow import (
    Action,
    AskDigits,
    AskName,
    CallFlow,
    ChooseOfTwo,
    ConfirmOne,
    DecideAgain,
    Digit,
    Dialling,
    Event,
    Goodbye,
    MenuPage,
    Play,
    Prompt,
    Question,
    RequestCallback,
    SuggestOne,
    Transfer,
)

T = TypeVar("T")
Observer = Callable[[Event, list[Action]], None]  # told of every event fed and the actions it gave


class CallPort(Protocol):
    """What a driver can do on one call."""

    def now(self) -> float:
        """The driver's monotonic clock, in seconds (the time events carry)."""

    async def play(self, prompts: Prompt, stop_digits: str = "") -> str | None:
        """Say ``prompts``; a digit of ``stop_digits`` pressed meanwhile stops them and is returned."""

    async def collect_digit(self, menu: MenuPage) -> Event:
        """Read the menu page (any digit stops it) and wait for a digit: Digit, NoInput or CallerHungUp."""

    async def listen(self, question: Question) -> Event:
        """Ask the question (barge-in) and listen: SpeechHeard, Digit, NoInput or CallerHungUp."""

    async def decide_again(self, again: DecideAgain) -> Event:
        """Decide the caller's last spoken answer again among ``again.candidates``: SpeechHeard,
        or NoInput when the port no longer has that answer."""

    async def dial(self, transfer: Transfer, started_at: float) -> list[Event]:
        """Dial the destination (the announcement is over) and report how the transfer went."""

    async def collect_digits(self, ask: AskDigits) -> Event:
        """Say the prompts (a digit stops them) and collect keyed digits: DigitsEntered, NoInput or CallerHungUp."""

    async def request_callback(self, request: RequestCallback) -> None:
        """Keep the caller's request to be called back (the driver's store)."""

    async def hang_up(self) -> None:
        """End the call on our side."""


async def drive(flow: CallFlow, port: CallPort, actions: Sequence[Action], *,
                observe: Observer | None = None, settled: Callable[[], None] | None = None) -> None:
    """Carry out ``actions`` (the flow's answer to CallStarted) until the flow has ended or stops asking.

    ``observe`` is told of every event fed to the flow; ``settled`` is called after each
    answer has been fed (a driver saves the record there). The last words of an ended
    flow (a :class:`Goodbye`) are carried out before returning.
    """
    actions = list(actions)
    while actions and not flow.ended:
        events = await carry_out(flow, port, actions, observe)
        if not events:
            break
        for event in events:
            actions = flow.handle(event)
            if observe:
                observe(event, actions)
        if settled:
            settled()
    if flow.ended and actions:
        await carry_out(flow, port, actions, observe)


async def carry_out(flow: CallFlow, port: CallPort, actions: Sequence[Action],
                    observe: Observer | None = None) -> list[Event]:
    """Carry out actions up to the first that waits for the caller; return the events that answer it."""
    for action in actions:
        if isinstance(action, Play):
            await port.play(action.prompts)
        elif isinstance(action, MenuPage):
            return [await port.collect_digit(action)]
        elif isinstance(action, (AskName, ConfirmOne, ChooseOfTwo, SuggestOne)):
            return [await port.listen(action)]
        elif isinstance(action, DecideAgain):
            return [await port.decide_again(action)]
        elif isinstance(action, AskDigits):
            return [await port.collect_digits(action)]
        elif isinstance(action, RequestCallback):
            await port.request_callback(action)
        elif isinstance(action, Transfer):
            digit = await port.play(action.prompts, action.back_digit)
            if digit:
                return [Digit(port.now(), digit)]
            dialling = Dialling(port.now())
            after = flow.handle(dialling)
            if observe:
                observe(dialling, after)
            return await port.dial(action, dialling.at)
        elif isinstance(action, Goodbye):
            await port.play(action.prompts)
            await port.hang_up()
            return []
        else:  # pragma: no cover - a new action type without a driver
            raise TypeError(f"no driver for {action!r}")
    return []


def answer(question: Question, *, name: Callable[[AskName], T], confirm: Callable[[ConfirmOne], T],
           choose: Callable[[ChooseOfTwo], T], suggest: Callable[[SuggestOne], T]) -> T:
    """The handler for the question's kind, for a port that answers questions itself (the
    simulated caller): the branching on action types stays in this module."""
    if isinstance(question, AskName):
        return name(question)
    if isinstance(question, ConfirmOne):
        return confirm(question)
    if isinstance(question, ChooseOfTwo):
        return choose(question)
    if isinstance(question, SuggestOne):
        return suggest(question)
    raise TypeError(f"not a question: {question!r}")  # pragma: no cover


def answer_first(actions: Sequence[Action]) -> bool:
    """Whether the driver answers the caller's channel before carrying out ``actions``: not
    when the call goes straight through (the caller hears the far end ring instead)."""
    return not (actions and isinstance(actions[0], Transfer))


def run_sync(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run a coroutine that never suspends (a synchronous port) to its end, without an event loop."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value
    coro.close()
    raise RuntimeError("a synchronous port awaited something that suspends")
