"""Routing decisions: pure functions of (plan, dialled number, time) — no I/O.

``route`` answers what happens to a call the moment it arrives; ``choose`` answers what
happens once the caller has picked a municipality (by digit or by voice). Both return a
:class:`Decision` that carries its reason, which is what ``ivr route`` prints.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from enum import StrEnum

from ivr.core.plan import AccessNumber, AreaCode, Municipality, NumberingPlan, RoutingMode

MAX_DIGITS = 32


class Verdict(StrEnum):
    TRANSFER = "transfer"  # put through to destination
    ASK = "ask"  # shared area code: ask the caller (speech or DTMF menu)
    NOT_CONNECTED = "not_connected"  # say so, with the alternative number
    UNKNOWN_AREA_CODE = "unknown_area_code"
    INVALID_NUMBER = "invalid_number"
    OPERATOR = "operator"  # hand the caller to a person


@dataclass(frozen=True, slots=True)
class Decision:
    verdict: Verdict
    reason: str
    dialled: str
    area_code: str | None = None
    mode: RoutingMode | None = None
    municipality: Municipality | None = None
    destination: str | None = None
    candidates: tuple[Municipality, ...] = ()
    message: str = ""  # a calamity message to say before transferring
    calamity: bool = False  # a calamity override decided (``reason`` says so in words)
    access: AccessNumber | None = None  # dialled an access number (from abroad): every municipality

    def to_dict(self) -> dict[str, object]:
        """The decision as plain data: what `ivr route --json` and `GET /v1/route` show."""
        m = self.municipality
        return {"verdict": self.verdict.value, "reason": self.reason, "area_code": self.area_code,
                "mode": self.mode.value if self.mode else None,
                "municipality": m.cbs_code if m else None, "municipality_name": m.name if m else None,
                "destination": self.destination, "message": self.message,
                "candidates": [c.cbs_code for c in self.candidates],
                "access_number": self.access.number if self.access else None}


@dataclass(frozen=True, slots=True)
class ParsedNumber:
    digits: str | None  # the number as 14 + area code, or None when malformed
    area_code: str | None
    problem: str = ""


def parse_dialled(plan: NumberingPlan, dialled: str) -> ParsedNumber:
    """Normalise what the caller dialled and find its area code."""
    raw = (dialled or "").strip()
    if len(raw) > MAX_DIGITS:
        return ParsedNumber(None, None, f"number longer than {MAX_DIGITS} characters")
    digits = "".join(ch for ch in raw if ch not in " -.()")
    if not digits:
        return ParsedNumber(None, None, "no number dialled")
    if digits.startswith("+"):
        digits = "00" + digits[1:]
    if not digits.isdigit():
        return ParsedNumber(None, None, "number contains characters other than digits")
    if digits.startswith("0031"):
        digits = digits[4:]
    elif digits.startswith("3114"):  # +31 14… after a dialplan stripped the plus
        digits = digits[2:]
    if not digits.startswith("14"):
        return ParsedNumber(None, None, "not a 14+ number (must start with 14)")
    rest = digits[2:]
    if not rest:
        return ParsedNumber(digits, None, "area code missing after 14")
    if not rest.startswith("0"):
        return ParsedNumber(digits, None, "area code must start with 0")
    for code in (rest[:3], rest[:4]):  # area codes are 3 or 4 digits and prefix-free (the plan checks)
        if code in plan.area_codes:
            if len(rest) > len(code):
                return ParsedNumber(digits, code, f"{len(rest) - len(code)} digit(s) too many after area code {code}")
            return ParsedNumber(digits, code)
    if any(code.startswith(rest) for code in plan.area_codes):
        return ParsedNumber(digits, None, f"incomplete area code {rest}")
    return ParsedNumber(digits, None, f"unknown area code {rest[:4]}")


def route(plan: NumberingPlan, dialled: str, *, now: datetime | None = None,
          speech_available: bool = True) -> Decision:
    now = now or datetime.now(timezone.utc)
    access = plan.access_number(dialled)
    if access is not None:
        mode = RoutingMode.SPEECH if speech_available else RoutingMode.DTMF
        return Decision(Verdict.ASK, f"access number {access.number}: any municipality, by name or area code",
                        dialled, mode=mode, candidates=plan.national_candidates(), access=access)
    parsed = parse_dialled(plan, dialled)
    if parsed.area_code is None or parsed.problem:
        verdict = Verdict.UNKNOWN_AREA_CODE if parsed.problem.startswith("unknown") else Verdict.INVALID_NUMBER
        return Decision(verdict, parsed.problem, dialled, area_code=parsed.area_code)
    area = plan.area_codes[parsed.area_code]
    calamity = plan.calamity_for(area.code, now)
    if calamity:
        return Decision(Verdict.TRANSFER, f"calamity override for area code {area.code}", dialled,
                        area_code=area.code, mode=area.mode, destination=calamity.destination,
                        message=calamity.message, calamity=True)
    mode = effective_mode(area, speech_available)
    candidates = plan.candidates(area.code)
    if mode is RoutingMode.DIRECT:
        return choose(plan, area, candidates[0], dialled=dialled, now=now, how="unique area code")
    if mode is RoutingMode.OPERATOR:
        return Decision(Verdict.OPERATOR, f"area code {area.code} is routed to the operator", dialled,
                        area_code=area.code, mode=mode, destination=plan.operator_destination)
    return Decision(Verdict.ASK, f"area code {area.code} is shared by {len(candidates)} municipalities",
                    dialled, area_code=area.code, mode=mode, candidates=candidates)


def effective_mode(area: AreaCode, speech_available: bool) -> RoutingMode:
    if area.mode is RoutingMode.SPEECH and not speech_available:
        return RoutingMode.DTMF
    return area.mode


def choose(plan: NumberingPlan, area: AreaCode, municipality: Municipality, *, dialled: str = "",
           now: datetime | None = None, how: str = "chosen") -> Decision:
    """The decision once a municipality is known."""
    now = now or datetime.now(timezone.utc)
    base = dict(dialled=dialled, area_code=area.code, mode=area.mode, municipality=municipality)
    if not municipality.status.connected:
        alt = f"; alternative number {municipality.alt_number}" if municipality.alt_number else ""
        return Decision(Verdict.NOT_CONNECTED, f"{how}: {municipality.name} is not connected to 14+{alt}", **base)
    calamity = plan.calamity_for(municipality.cbs_code, now)
    if calamity:
        return Decision(Verdict.TRANSFER, f"{how}: calamity override for {municipality.name}",
                        destination=calamity.destination, message=calamity.message, calamity=True, **base)
    return Decision(Verdict.TRANSFER, f"{how}: {municipality.name}", destination=municipality.destination, **base)


# --- the DTMF menu ---------------------------------------------------------------

MENU_PAGE = 8  # digits 1-8 name municipalities; 9 = more choices when a code has over 9
MORE_DIGIT = "9"
OPERATOR_DIGIT = "0"


def menu_page(candidates: tuple[Municipality, ...], page: int) -> list[tuple[str, Municipality]]:
    """(digit, municipality) pairs on a menu page. Up to 9 candidates fit on one page."""
    if len(candidates) <= 9:
        return [(str(i + 1), m) for i, m in enumerate(candidates)] if page == 0 else []
    chunk = candidates[page * MENU_PAGE:(page + 1) * MENU_PAGE]
    return [(str(i + 1), m) for i, m in enumerate(chunk)]


def menu_has_more(candidates: tuple[Municipality, ...], page: int) -> bool:
    return len(candidates) > 9 and (page + 1) * MENU_PAGE < len(candidates)
