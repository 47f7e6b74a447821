"""README rules checked on the syntax tree: only the flow writes the call record; only the
drive loop branches on action types. Each checker is also shown samples it must catch."""

from textwrap import dedent

import pytest

from architecture_rules import (ACTION_CLASSES, RECORD_FIELDS, RUNTIME_AND_LAB, action_branches, project_sources,
                                record_writes)

#: the flow fills the record; the record's own module builds records from stored rows
RECORD_WRITERS = {"ivr/core/flow.py", "ivr/core/callrecord.py"}
ACTION_BRANCHER = "ivr/core/drive.py"


@pytest.fixture(scope="module")
def sources():
    return project_sources(*RUNTIME_AND_LAB)


def test_only_the_flow_writes_call_record_fields(sources):
    found = [str(v) for path, text in sources.items() if path not in RECORD_WRITERS
             for v in record_writes(text, path)]
    assert not found, "call-record fields written outside the flow (send the flow an event instead):\n" + "\n".join(found)


def test_the_flow_is_seen_writing_the_record(sources):
    # the checker recognises the flow's own writes: were it blind, the test above would prove nothing
    writes = record_writes(sources["ivr/core/flow.py"], "ivr/core/flow.py")
    written = " ".join(v.code for v in writes)
    assert len(writes) > 30
    for code in ("self.record.ended_at =", "rec.outcome =", "self.record.attempts.append(", "attempt.verdict ="):
        assert code in written


def test_only_the_drive_loop_branches_on_action_types(sources):
    found = [str(v) for path, text in sources.items() if path != ACTION_BRANCHER
             for v in action_branches(text, path)]
    assert not found, f"branching on action types outside {ACTION_BRANCHER}:\n" + "\n".join(found)


def test_the_drive_loop_is_seen_branching(sources):
    branches = action_branches(sources[ACTION_BRANCHER], ACTION_BRANCHER)
    assert len(branches) >= 8
    assert {"MenuPage", "Transfer", "Goodbye", "AskName"} <= ACTION_CLASSES


RECORD_SAMPLES = {
    "attribute": "def f(flow):\n    flow.record.decision_ms = 3.0\n",
    "augmented": "def f(flow):\n    rec = flow.record\n    rec.recognition_attempts += 1\n",
    "annotated parameter": "def f(r: CallRecord, t):\n    r.ended_at = t\n",
    "string annotation": "def f(r: 'CallRecord | None'):\n    r.error = 'x'\n",
    "appended attempt": "def f(self, a):\n    self.record.attempts.append(a)\n",
    "attempt of a record": "def f(flow):\n    for a in flow.record.attempts:\n        a.verdict = 'yes'\n",
    "last attempt": "def f(flow):\n    flow.record.attempts[-1].chosen = 'GM0664'\n",
    "dict item": "def f(flow, k):\n    flow.record.phase_seconds[k] = 1.0\n",
    "setattr": "def f(flow):\n    setattr(flow.record, 'expected_municipality', 'GM0664')\n",
    "object.__setattr__": "def f(flow):\n    object.__setattr__(flow.record, 'outcome', None)\n",
    "built here": "def f():\n    r = CallRecord('c', '140113')\n    r.outcome = None\n",
    "walrus": "def f(flow):\n    if (r := flow.record):\n        r.digits = '1'\n",
    "delete": "def f(flow):\n    del flow.record.error\n",
    "tuple target": "def f(flow, a, b):\n    flow.record.ended_at, x = a, b\n",
    "module level": "record = flow.record\nrecord.hangup_cause = 'x'\n",
}


@pytest.mark.parametrize("kind", RECORD_SAMPLES)
def test_record_checker_catches_a_write(kind):
    [violation] = record_writes(RECORD_SAMPLES[kind])
    assert violation.line == RECORD_SAMPLES[kind].count("\n")


def test_record_checker_leaves_reads_and_other_objects_alone():
    clean = dedent("""
        def f(flow, item, store):
            rec = flow.record
            seconds = rec.ivr_seconds or 0.0  # reading is fine
            item.verdict = rec.outcome  # a replay item's field, not the record's
            self_like = store
            self_like.error = "x"  # not a record
            rows = [a.verdict for a in rec.attempts]
            store.save(CallRecord.from_dict({"call_id": "c", "dialled": "1"}))  # built, not changed
            return seconds, rows
    """)
    assert record_writes(clean) == []
    assert {"ended_at", "attempts", "verdict", "expected_municipality"} <= RECORD_FIELDS


ACTION_SAMPLES = {
    "isinstance": "def f(a):\n    return isinstance(a, Transfer)\n",
    "isinstance tuple": "def f(a):\n    return isinstance(a, (Play, Goodbye))\n",
    "module attribute": "def f(a):\n    return isinstance(a, actions.MenuPage)\n",
    "union": "def f(a):\n    return isinstance(a, Question)\n",
    "aliased import": "from ivr.core.flow import Transfer as T\ndef f(a):\n    return isinstance(a, T)\n",
    "match": "def f(a):\n    match a:\n        case AskName(again=True):\n            return 1\n",
    "type is": "def f(a):\n    return type(a) is ConfirmOne\n",
    "type name": "def f(a):\n    return type(a).__name__ == 'ChooseOfTwo'\n",
    "dispatch table": "def f(a):\n    return {MenuPage: 1,\n            Play: 2}[type(a)]\n",
}


@pytest.mark.parametrize("kind", ACTION_SAMPLES)
def test_action_checker_catches_a_branch(kind):
    found = action_branches(ACTION_SAMPLES[kind])
    assert found and found[0].line >= ACTION_SAMPLES[kind].count("\n") - 1


def test_action_checker_leaves_events_and_other_classes_alone():
    clean = dedent("""
        def f(event, actions, x):
            if isinstance(event, TransferAnswered):  # an event, not an action
                return actions
            if isinstance(x, (int, str)):
                return x
            match event:
                case Digit(digit="1"):
                    return 1
            return type(x) is dict
    """)
    assert action_branches(clean) == []
