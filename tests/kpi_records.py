"""A fixed set of finished call records whose KPIs are computed by hand (test_report, test_metrics, test_api).

Speech area code 0113 (nine calls), direct 0115 (two), DTMF 0118 (two), one unknown
area code, and one call still in progress (left out of every figure).
"""

from __future__ import annotations

from ivr.core.callrecord import Attempt, CallRecord

T0 = 1_700_000_000.0  # 2023-11-14T22:13:20Z


def rec(call_id: str, start: float, *, mode: str | None = "speech", area: str | None = "0113",
        outcome: str | None = "routed", municipality: str | None = "GM0664", attempts: int = 1,
        ivr: float | None = 8.0, phase: str = "connected", caller: str = "", duration: float = 60.0,
        **kw) -> CallRecord:
    decision = kw.pop("decision", "transfer" if municipality else "ask")
    r = CallRecord(call_id=call_id, dialled=f"14{area or '099'}", caller=caller or f"h-{call_id}",
                   started_at=T0 + start, ended_at=T0 + start + duration, area_code=area, mode=mode,
                   decision=decision, municipality=municipality, outcome=outcome, phase=phase,
                   recognition_attempts=attempts, ivr_seconds=ivr, **kw)
    if municipality and outcome == "routed" and r.answered_by is None:
        r.answered_by = municipality
    if phase in ("connected", "transfer") and municipality:
        r.phase_seconds.setdefault("transfer", 1.0)
    return r


def fixed_records(ground_truth: bool = False) -> list[CallRecord]:
    """With ``ground_truth``, r4 carries the simulator's expected municipality (GM0664, not GM0654).

    CallRecord has no such field yet, so the SQLite store does not keep it: the
    stored variant has no ground truth and r4 counts as right.
    """
    r4 = rec("r4", 400, municipality="GM0654", ivr=9.0)
    if ground_truth:
        r4.expected_municipality = "GM0664"
    return [
        _r1(),
        rec("r2", 200, attempts=2, ivr=12.0),
        rec("r3", 300, municipality="GM0654", attempts=3, rejected_confirmations=1, ivr=20.0),
        r4,
        rec("r5", 500, outcome="caller_hangup", phase="transfer", hangup_phase="transfer", ivr=7.0,
            duration=9.0),
        rec("r6", 600, outcome="caller_hangup", municipality=None, attempts=2, phase="speech",
            hangup_phase="speech", ivr=10.0, duration=10.0),
        rec("r7", 1000, caller="h-same", ivr=8.0, duration=100.0),  # ends at +1100
        rec("r8", 1200, caller="h-same", municipality="GM0654", ivr=8.0),  # same caller, 100 s later
        rec("r9", 1300, answered_by="GM0678", ivr=8.0),
        rec("d1", 1400, mode="direct", area="0115", municipality="GM0715", attempts=0, ivr=1.0,
            decision_ms=0.0, transfer_setup_ms=1000.0),
        rec("d2", 1500, mode="direct", area="0115", municipality="GM0715", attempts=0, ivr=1.0,
            decision_ms=0.0, outcome="failed", phase="transfer", error="transfer failed: BUSY",
            error_kind="transfer_failed",
            hangup_cause="BUSY"),
        rec("u1", 1600, mode=None, area=None, municipality=None, attempts=0, ivr=0.5, outcome="unknown_area_code",
            phase="greeting", decision="unknown_area_code"),
        rec("m1", 1700, mode="dtmf", area="0118", municipality="GM0687", attempts=1, ivr=15.0,
            caller="h-same"),
        rec("m2", 1800, mode="dtmf", area="0118", municipality=None, attempts=1, ivr=6.0, outcome="caller_hangup",
            phase="menu", hangup_phase="menu"),
        _live(),
    ]


def _r1() -> CallRecord:
    r = rec("r1", 100, ivr=8.0, transfer_setup_ms=2000.0)
    r.attempts.append(Attempt("speech", "speech", "goes", verdict="accept", chosen="GM0664",
                              recogniser_ms=300.0, decision_ms=500.0))
    return r


def _live() -> CallRecord:
    r = rec("live", 1900, outcome=None, phase="speech", municipality=None, ivr=None)
    r.ended_at = None
    return r


#: The KPIs of fixed_records() as stored (no ground truth), by hand:
#: speech 0113: r1..r9, all asked; decided after 1 question: r1 r4 r5 r7 r8 r9, 2: r2, 3+: r3, undecided: r6.
#: routed: r1 r2 r3 r4 r7 r8 r9; misrouted: r3 (said "no" once), r7 (same caller 100 s after r7 ended went to
#: GM0654), r9 (answered by GM0678). Reached the transfer: all but r6; r5 hung up there.
#: ivr_seconds sorted: 0.5 1 1 6 7 8 8 8 8 9 10 12 15 20 -> nearest rank p50 = 7th = 8, p95 = 14th = 20.
EXPECTED = {
    "calls": 14,
    "unfinished": 1,
    "outcomes": {"routed": 9, "caller_hangup": 3, "failed": 1, "unknown_area_code": 1, "not_connected": 0,
                 "operator": 0},
    "speech_attempts": {"1": 6, "2": 1, "3+": 1, "undecided": 1},
    "dtmf_attempts": {"1": 1, "2": 0, "3+": 0, "undecided": 1},
    "first_attempt": 6 / 9,
    "after_one_repeat": 1 / 9,
    "after_several": 1 / 9,
    "speech_routed": 7,
    "speech_misroutes": {"expected_mismatch": 0, "answered_by_mismatch": 1, "rejected_confirmation": 1,
                         "repeat_call": 1},
    "right_municipality": 4 / 7,
    "all_routed": 9,
    "all_right": 6 / 9,
    "hangup_during_transfer": 1 / 8,
    "all_transfer_results": {"answered": 9, "caller_hangup": 1, "failed": 1},
    "hangups_by_phase": {"greeting": 0, "menu": 1, "speech": 1, "confirm": 0, "transfer": 1, "suggest": 0},
    "errors": {"transfer_failed": 1, "asterisk_lost": 0, "controller_lost": 0, "shutdown": 0, "other": 0},
    "ivr_p50": 8.0,
    "ivr_p95": 20.0,
    "ivr_sum": 113.5,
    "ivr_count": 14,
    "transfer_setup": {"count": 2, "sum": 3.0, "p50": 1.0, "p95": 2.0},
    "GM0664_right": 2 / 4,  # r1 r2 right; r7 repeat, r9 answered by another
    "GM0654_right": 2 / 3,  # r3 rejected once; r4 r8 right
}

#: With ground truth, r4 (expected GM0664, routed to GM0654) is misrouted as well.
EXPECTED_WITH_TRUTH = {
    "speech_misroutes": {"expected_mismatch": 1, "answered_by_mismatch": 1, "rejected_confirmation": 1,
                         "repeat_call": 1},
    "right_municipality": 3 / 7,
    "all_right": 5 / 9,
    "ground_truth": 1,
    "GM0654_right": 1 / 3,
}
