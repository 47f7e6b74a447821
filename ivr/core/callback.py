"""Callback requests: which keyed-in numbers we accept, and how long a request is kept.

Pure: the flow validates the caller's digits here, the store keeps the request
(:mod:`ivr.adapters.store`) and the admin API lists and clears it. A caller cannot key a
plus sign, so an international number is keyed with ``00``; every accepted number is
kept in E.164 form (``+31612345678``), the one form the municipality's staff dial back, for
``IVR_CALLBACK_RETENTION_DAYS`` (default 14).
"""

from __future__ import annotations

from dataclasses import dataclass

#: The most digits a caller can key for a number (E.164: 15 after the country code's 00).
MAX_KEYED_DIGITS = 17
#: The digit that ends a keyed number, and the one that gives consent to be called back.
END_DIGIT = "#"
CONSENT_DIGIT = "1"


def callback_number(keyed: str) -> str | None:
    """The E.164 form of a keyed Dutch or international number, or None when it is neither.

    Dutch: ten digits starting with 0 and not 00 (``0612345678``, ``0201234567``); service
    numbers (0800/090x) cannot be called back and are refused. International: ``00``, a
    country code (not 0) and at most 15 digits in all (E.164); ``0031`` must be followed
    by a Dutch number without its 0.
    """
    digits = keyed.strip()
    if not digits.isdigit():
        return None
    if digits.startswith("00"):
        e164 = digits[2:]
        if not 8 <= len(e164) <= 15 or e164[0] == "0":
            return None
        if e164.startswith("31"):
            return callback_number("0" + e164[2:])
        return "+" + e164
    if len(digits) != 10 or digits[0] != "0" or digits.startswith(("0800", "090")):
        return None
    return "+31" + digits[1:]


def is_public_number(text: str) -> bool:
    """Whether an operator's number (an alternative number the caller is told) is Dutch or E.164.

    Dutch: ten digits from 0 (not 00), or a 0800/090x service number of 8 to 11 digits;
    E.164: ``+``, a country code (not 0) and 8 to 15 digits. Spaces and dashes are allowed.
    """
    compact = text.replace(" ", "").replace("-", "")
    if compact.startswith("+"):
        rest = compact[1:]
        return rest.isdigit() and 8 <= len(rest) <= 15 and rest[0] != "0"
    if not compact.isdigit() or not compact.startswith("0") or compact.startswith("00"):
        return False
    if compact.startswith(("0800", "090")):
        return 8 <= len(compact) <= 11
    return len(compact) == 10


@dataclass(frozen=True, slots=True)
class CallbackRequest:
    """A caller's consented request to be called back by a municipality that was not reachable."""

    call_id: str
    municipality: str  # CBS code
    number: str  # E.164
    requested_at: float  # epoch seconds
    expires_at: float  # epoch seconds: purged from then on
