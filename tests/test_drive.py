"""The one drive loop over a fake port (a port that implements the same interface as the real ones)."""

from __future__ import annotations

import asyncio

import pytest

from ivr.core.drive import answer_first, drive, run_sync
from ivr.core.flow import (
    CallerHungUp,
    CallFlow,
    CallStarted,
    Digit,
    DigitsEntered,
    Dialling,
    NoInput,
    SpeechHeard,
    TransferAnswered,
    TransferFailed,
)
from ivr.core.matcher import Matcher
from ivr.core.recognition import Recognition
from ivr.core.yes_no import yes_no
from ivr.plan_files import load_base_plan

PLAN = load_base_plan()


class ScriptedPort:
    """Answers each request with the next scripted reply; records what was asked."""

    def __init__(self, *, digits=(), heard=(), dial=None, back=None, keyed=()):
        self.t = 0.0
        self.log: list[tuple] = []
        self.digits, self.heard, self.dial_result, self.back = list(digits), list(heard), dial, back
        self.keyed = list(keyed)

    def now(self) -> float:
        return self.t

    async def play(self, prompts, stop_digits=""):
        self.t += 0.5 * len(prompts)
        self.log.append(("play", tuple(prompts), stop_digits))
        if stop_digits and self.back:
            digit, self.back = self.back, None
            return digit
        return None

    async def collect_digit(self, menu):
        self.log.append(("menu", menu.digits))
        self.t += 1.0
        return Digit(self.t, self.digits.pop(0)) if self.digits else NoInput(self.t)

    async def listen(self, question):
        self.log.append(("listen", type(question).__name__, question.vocabulary_of))
        self.t += 1.0
        return SpeechHeard(self.t, Recognition.of_transcripts(((self.heard.pop(0), 0.9),))) if self.heard else NoInput(self.t)

    async def dial(self, transfer, started_at):
        self.log.append(("dial", transfer.destination, started_at))
        self.t += 2.0
        return self.dial_result(self.t) if self.dial_result else [TransferAnswered(self.t, transfer.municipality or ""),
                                                                  CallerHungUp(self.t + 60)]

    async def collect_digits(self, ask):
        self.log.append(("keys", ask.prompts, ask.max_digits))
        self.t += 3.0
        return DigitsEntered(self.t, self.keyed.pop(0)) if self.keyed else NoInput(self.t)

    async def request_callback(self, request):
        self.log.append(("callback", request.municipality, request.number))

    async def hang_up(self):
        self.log.append(("hang_up",))


def run(flow, port, number):
    seen = []
    actions = flow.handle(CallStarted(port.now(), "c", number))
    run_sync(drive(flow, port, actions, observe=lambda ev, acts: seen.append(type(ev).__name__)))
    return seen


def test_menu_choice_is_dialled_and_the_dial_is_an_event():
    flow, port = CallFlow(PLAN, speech_available=False), ScriptedPort(digits=["1"])
    seen = run(flow, port, "140113")
    assert [e[0] for e in port.log] == ["menu", "play", "dial"]
    assert port.log[1][2] == "*"  # the announcement can be interrupted with *
    assert seen == ["Digit", "Dialling", "TransferAnswered", "CallerHungUp"]
    assert flow.ended and flow.record.outcome == "routed"


def test_star_during_the_announcement_is_a_digit_not_a_dial():
    flow, port = CallFlow(PLAN, speech_available=False), ScriptedPort(digits=["1", "2"], back="*")
    seen = run(flow, port, "140113")
    assert seen[:2] == ["Digit", "Digit"] and seen.count("Dialling") == 1
    assert flow.record.municipality == "GM0703" and flow.record.rejected_confirmations == 1  # 2: Reimerswaal


def test_goodbye_is_said_then_hung_up():
    flow, port = CallFlow(PLAN, speech_available=False), ScriptedPort(dial=lambda t: [TransferFailed(t, "BUSY")])
    run(flow, port, "140111")  # the callback offer goes unanswered
    assert port.log[-3][0] == "keys" and port.log[-3][1][-1] == "terugbellen_vraag"
    assert port.log[-2][0] == "play" and port.log[-2][1][0] == "later_opnieuw" and port.log[-1] == ("hang_up",)
    assert flow.record.outcome == "failed" and flow.record.error_kind == "transfer_failed"


def test_a_consented_callback_is_handed_to_the_port_before_the_goodbye():
    flow = CallFlow(PLAN, speech_available=False)
    port = ScriptedPort(dial=lambda t: [TransferFailed(t, "NOANSWER")], keyed=["1", "0612345678"])
    run(flow, port, "140111")
    assert [e[0] for e in port.log] == ["play", "dial", "keys", "keys", "callback", "play", "hang_up"]
    assert port.log[4] == ("callback", "GM1676", "+31612345678")
    assert port.log[5][1][0] == "terugbellen_bevestigd"
    assert flow.record.callback == "requested" and "0612345678" not in flow.record.digits


def test_unique_code_decision_is_timed_at_the_dial():
    flow, port = CallFlow(PLAN, speech_available=False), ScriptedPort()
    seen = run(flow, port, "140111")
    assert seen[0] == "Dialling" and flow.record.decision_ms == 0.0  # no announcement: dialled at once
    assert not answer_first(CallFlow(PLAN, speech_available=False).handle(CallStarted(0.0, "x", "140111")))


def test_speech_questions_go_to_listen():
    flow = CallFlow(PLAN, matcher_factory=Matcher, yes_no=yes_no)
    port = ScriptedPort(heard=["kapelle"])
    run(flow, port, "140113")
    assert port.log[0][:2] == ("listen", "AskName")
    assert flow.record.municipality == "GM0678"


def test_the_same_loop_runs_on_an_event_loop():
    flow, port = CallFlow(PLAN, speech_available=False), ScriptedPort(digits=["3"])
    actions = flow.handle(CallStarted(0.0, "c", "140113"))
    assert answer_first(actions)
    asyncio.run(drive(flow, port, actions))
    assert flow.record.municipality == "GM0654"


def test_run_sync_refuses_a_port_that_suspends():
    async def suspends():
        await asyncio.sleep(0)

    with pytest.raises(RuntimeError):
        run_sync(suspends())


def test_answer_picks_the_handler_for_the_question_kind():
    from ivr.core.drive import answer
    from ivr.core.flow import AskName, ChooseOfTwo, ConfirmOne, SuggestOne

    handlers = dict(name=lambda q: ("name", q.candidates), confirm=lambda q: ("confirm", q.municipality),
                    choose=lambda q: ("choose", q.options), suggest=lambda q: ("suggest", q.municipality))
    assert answer(AskName((), ("GM1",), 5.0), **handlers) == ("name", ("GM1",))
    assert answer(ConfirmOne((), "GM1", 4.0), **handlers) == ("confirm", "GM1")
    assert answer(ChooseOfTwo((), ("GM1", "GM2"), 4.0), **handlers) == ("choose", ("GM1", "GM2"))
    assert answer(SuggestOne((), "GM1", ("GM1", "GM2"), 5.0), **handlers) == ("suggest", "GM1")
