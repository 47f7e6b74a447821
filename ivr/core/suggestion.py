"""Which municipality to suggest to a caller before asking for the name (issue 11, item 3).

Pure, no I/O. The driver looks up what it can about the caller (the municipality this
caller's salted hash was routed to in the last N days, from its store; the area code of the
caller's landline number, with :func:`landline_area_code`) and puts it into
:class:`~ivr.core.events.CallStarted`; the flow asks :func:`suggestion_for` whether that is
worth a question. The caller's number itself never travels further than the driver.
"""

from __future__ import annotations

from typing import Sequence

from ivr.core.callrecord import SuggestionSource
from ivr.core.plan import Municipality, NumberingPlan

#: Dutch national numbers that are not landlines: mobile (06), non-geographic and service
#: numbers (08x, 09x). None of them is in the plan's area codes either; listed so the rule reads.
NOT_LANDLINE_PREFIXES = ("06", "08", "09")
NATIONAL_LENGTH = 10  # every Dutch number, with its leading 0


def national_number(number: str) -> str | None:
    """A Dutch number in national form ("0113 123456", "+31113123456", "0031…", "31…" as some
    trunks deliver it): "0113123456"; None for anything else (withheld, foreign, malformed)."""
    text = "".join(ch for ch in (number or "").strip() if ch not in " -.()/")
    if text.startswith("+"):
        text = "00" + text[1:]
    if not text.isdigit():
        return None
    if text.startswith("0031"):
        text = "0" + text[4:]
    elif text.startswith("31") and len(text) == NATIONAL_LENGTH + 1:
        text = "0" + text[2:]
    if not text.startswith("0") or text.startswith("00") or len(text) != NATIONAL_LENGTH:
        return None
    return text


def landline_area_code(plan: NumberingPlan, number: str) -> str | None:
    """The plan's area code of a Dutch landline number, or None (mobile, withheld, foreign,
    unknown). Area codes are prefix-free, so at most one of the 3- and 4-digit prefixes matches."""
    national = national_number(number)
    if national is None or national.startswith(NOT_LANDLINE_PREFIXES):
        return None
    return next((c for c in (national[:3], national[:4]) if c in plan.area_codes), None)


def suggestion_for(plan: NumberingPlan, candidates: Sequence[Municipality], *, known: str | None,
                   caller_area_code: str | None) -> tuple[Municipality, SuggestionSource] | None:
    """The municipality to ask first, and why; None when nothing is known that points into
    ``candidates`` (the dialled shared area code's). What the caller reached before wins over
    where their landline is; a municipality that 14+ cannot reach is never suggested (the
    name question tells the caller so)."""
    by_code = {m.cbs_code: m for m in candidates}
    m = by_code.get(known or "")
    if m is not None and m.status.connected:
        return m, SuggestionSource.HISTORY
    area = plan.area_codes.get(caller_area_code or "")
    if area is not None and not area.shared:
        m = by_code.get(area.municipalities[0])
        if m is not None and m.status.connected:
            return m, SuggestionSource.LANDLINE
    return None
