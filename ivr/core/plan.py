"""The numbering plan: municipalities, area codes and how each area code routes.

Built once from the shipped tables (read by ``ivr.plan_files``; this module only gets
their rows) plus an optional operator override file, validated, and then immutable. An
admin change builds a new plan and swaps it; nothing mutates a plan in place.

A little over 400 lines on purpose: the plan's types and every rule that keeps a plan valid
sit together, so a new field and its check cannot drift apart.
"""

from __future__ import annotations

import hashlib
import re
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from types import MappingProxyType
from typing import Iterable, Mapping, Sequence

#: A CBS municipality code ("GM0664"): the one pattern for it (API paths, overrides, reports).
CBS_CODE_PATTERN = r"^GM\d{4}$"
CALAMITY_TARGET_PATTERN = r"^(0\d{2,3}|GM\d{4})$"  # an area code or a CBS code
_CBS_CODE = re.compile(CBS_CODE_PATTERN)


def is_cbs_code(text: str | None) -> bool:
    return bool(text) and _CBS_CODE.match(text) is not None

DEFAULT_DESTINATION_TEMPLATE = "Local/{cbs_code}@ivr14-lab"
DEFAULT_OPERATOR_DESTINATION = "Local/operator@ivr14-lab"
# The 2020 evaluation's example of a municipality that is not connected.
NOT_CONNECTED_BY_DEFAULT = {"GM0394": "0900 1852"}  # Haarlemmermeer; its main number in the 2014 almanak


class Status(StrEnum):
    ACTIVE = "active"  # connected and advertises 14+
    TECHNICAL = "technical"  # connected, does not advertise 14+
    NOT_CONNECTED = "not_connected"

    @property
    def connected(self) -> bool:
        return self is not Status.NOT_CONNECTED


class RoutingMode(StrEnum):
    DIRECT = "direct"
    SPEECH = "speech"
    DTMF = "dtmf"
    OPERATOR = "operator"


@dataclass(frozen=True, slots=True)
class Municipality:
    cbs_code: str
    name: str
    province: str
    population: int
    status: Status
    destination: str
    area_codes: tuple[str, ...]  # significant codes, primary first
    aliases: tuple[str, ...] = ()  # other names of today's municipality (Frisian, spoken, CBS)
    former_names: tuple[str, ...] = ()  # municipalities merged into this one
    places: tuple[str, ...] = ()  # woonplaatsen, kernen, hamlets (and their other spellings)
    alt_number: str | None = None  # announced when 14+ cannot reach it
    # tried when the destination is busy, does not answer or is unreachable: a CBS code or a dial string
    overflow: str | None = None
    ring_timeout_s: int | None = None  # how long the destination rings before the overflow (None: the default)


@dataclass(frozen=True, slots=True)
class AreaCode:
    code: str
    main_place: str
    municipalities: tuple[str, ...]  # CBS codes, largest share of residents first
    mode: RoutingMode
    population: int

    @property
    def shared(self) -> bool:
        return len(self.municipalities) > 1


@dataclass(frozen=True, slots=True)
class Calamity:
    """An operator's temporary override: send a target elsewhere, with a message."""

    target: str  # an area code ("0113") or a CBS code ("GM0664")
    destination: str
    message: str = ""
    expires: datetime | None = None

    def in_force(self, now: datetime) -> bool:
        return self.expires is None or now < self.expires


@dataclass(frozen=True, slots=True)
class AccessNumber:
    """An ordinary number (e.g. +31 88 …) that callers abroad dial instead of a 14-number:
    the caller names any municipality of the country, or keys in its area code."""

    number: str  # as the operator wrote it
    key: str  # international digits without the plus ("31881234567"): see access_number_key
    language: str = "nl"  # the language the dialogue starts in


def _international_digits(text: str) -> str:
    digits = "".join(ch for ch in (text or "").strip() if ch not in " -.()")
    if digits.startswith("+"):
        return digits[1:]
    if digits.startswith("00"):
        return digits[2:]
    if digits.startswith("0"):
        return "31" + digits[1:]
    return digits


def access_number_key(text: str) -> str | None:
    """The international digits of a number ("+31 88 123 4567", "0031881234567" and the
    national "088 123 4567" all give "31881234567"); None when it is no phone number."""
    digits = _international_digits(text)
    if not digits.isdigit() or not 8 <= len(digits) <= 15:
        return None
    return digits


def collides_with_14(number: str) -> bool:
    """Whether a number would be read as a 14-number (14 + area code), in any of its forms."""
    digits = _international_digits(number)
    return digits.startswith("14") or digits.startswith("3114")


@dataclass(frozen=True)
class NumberingPlan:
    municipalities: Mapping[str, Municipality]
    area_codes: Mapping[str, AreaCode]
    operator_destination: str = DEFAULT_OPERATOR_DESTINATION
    calamities: tuple[Calamity, ...] = ()
    version: str = field(default="")
    access_numbers: tuple[AccessNumber, ...] = ()
    languages: tuple[str, ...] = ("en",)  # offered besides Dutch at the greeting

    def candidates(self, code: str) -> tuple[Municipality, ...]:
        return tuple(self.municipalities[c] for c in self.area_codes[code].municipalities)

    def access_number(self, dialled: str) -> AccessNumber | None:
        """The access number ``dialled`` is, if it is one."""
        if not self.access_numbers:
            return None
        key = access_number_key(dialled)
        return next((a for a in self.access_numbers if a.key == key), None) if key else None

    def national_candidates(self) -> tuple[Municipality, ...]:
        """Every municipality: the candidates of a call on an access number."""
        return tuple(self.municipalities.values())

    def calamity_for(self, target: str, now: datetime) -> Calamity | None:
        for calamity in self.calamities:
            if calamity.target == target and calamity.in_force(now):
                return calamity
        return None

    def with_changes(
        self,
        municipalities: Mapping[str, Municipality] | None = None,
        area_codes: Mapping[str, AreaCode] | None = None,
        calamities: tuple[Calamity, ...] | None = None,
        operator_destination: str | None = None,
        access_numbers: tuple[AccessNumber, ...] | None = None,
        languages: tuple[str, ...] | None = None,
    ) -> "NumberingPlan":
        """A new validated plan with some parts replaced (the old one is untouched)."""
        return build_plan(
            municipalities if municipalities is not None else self.municipalities,
            area_codes if area_codes is not None else self.area_codes,
            operator_destination=operator_destination or self.operator_destination,
            calamities=self.calamities if calamities is None else calamities,
            access_numbers=self.access_numbers if access_numbers is None else access_numbers,
            languages=self.languages if languages is None else languages,
        )


class PlanError(ValueError):
    """The plan's data is inconsistent; the message says where and why."""

    #: the override-file key path at fault, when known (the file's reader turns it into a line)
    key_path: tuple[str, ...] = ()


#: The range an operator may set a ring timeout in (seconds): shorter cuts off a normal answer,
#: longer keeps the caller waiting for a line nobody picks up.
RING_TIMEOUT_RANGE = (5, 120)


def overflow_chain(municipalities: Mapping[str, Municipality], cbs: str) -> list[str]:
    """``cbs`` and the municipalities its overflow leads to, in order; stops at a dial string
    or at the first municipality seen twice (a loop, which :func:`build_plan` refuses)."""
    chain = [cbs]
    nxt = municipalities[cbs].overflow
    while nxt and is_cbs_code(nxt) and nxt in municipalities:
        chain.append(nxt)
        if chain.count(nxt) > 1:
            break
        nxt = municipalities[nxt].overflow
    return chain


def build_plan(
    municipalities: Mapping[str, Municipality],
    area_codes: Mapping[str, AreaCode],
    *,
    operator_destination: str = DEFAULT_OPERATOR_DESTINATION,
    calamities: Iterable[Calamity] = (),
    access_numbers: Iterable[AccessNumber] = (),
    languages: Iterable[str] = ("en",),
) -> NumberingPlan:
    calamities = tuple(calamities)
    access_numbers = tuple(access_numbers)
    problems = list(_consistency_problems(municipalities, area_codes, calamities))
    problems += _access_number_problems(access_numbers)
    if problems:
        raise PlanError("; ".join(problems))
    _check_overflow(municipalities)
    plan = NumberingPlan(
        municipalities=MappingProxyType(dict(municipalities)),
        area_codes=MappingProxyType(dict(area_codes)),
        operator_destination=operator_destination,
        calamities=calamities,
        access_numbers=access_numbers,
        languages=tuple(languages),
    )
    object.__setattr__(plan, "version", _fingerprint(plan))
    return plan


def _consistency_problems(municipalities, area_codes, calamities) -> Iterable[str]:
    codes = sorted(area_codes)
    for code in codes:
        if not (code.isdigit() and code.startswith("0") and 3 <= len(code) <= 4):
            yield f"area code {code!r} is not 0 followed by 2 or 3 digits"
        entry = area_codes[code]
        if not entry.municipalities:
            yield f"area code {code} covers no municipality"
        for cbs in entry.municipalities:
            if cbs not in municipalities:
                yield f"area code {code} names unknown municipality {cbs}"
        if entry.mode is RoutingMode.DIRECT and len(entry.municipalities) != 1:
            yield f"area code {code} is direct but covers {len(entry.municipalities)} municipalities"
    for a in codes:
        for b in codes:
            if a != b and b.startswith(a):
                yield f"area code {a} is a prefix of {b}: dialled numbers would be ambiguous"
    for cbs, m in municipalities.items():
        if not m.destination.strip():
            yield f"municipality {cbs} has an empty destination"
    for c in calamities:
        if c.target not in area_codes and c.target not in municipalities:
            yield f"calamity target {c.target!r} is neither an area code nor a municipality"


def _access_number_problems(access_numbers: tuple[AccessNumber, ...]) -> list[str]:
    problems, seen = [], set()
    for a in access_numbers:
        if access_number_key(a.number) != a.key:
            problems.append(f"access number {a.number!r} is not a phone number")
        elif collides_with_14(a.number):
            problems.append(f"access number {a.number!r} collides with the 14-numbers (14 + area code)")
        elif a.key in seen:
            problems.append(f"access number {a.number!r} is listed twice")
        seen.add(a.key)
    return problems


def _check_overflow(municipalities: Mapping[str, Municipality]) -> None:
    """Overflow targets exist and lead nowhere twice; ring timeouts are in range. Raised one at a
    time with the key at fault, so an override file's error names its line."""
    lo, hi = RING_TIMEOUT_RANGE
    for cbs in sorted(municipalities):
        m = municipalities[cbs]
        if m.ring_timeout_s is not None and not lo <= m.ring_timeout_s <= hi:
            _raise(f"municipality {cbs}: ring timeout {m.ring_timeout_s} s is outside {lo}-{hi} s",
                   cbs, "ring_timeout_s")
        if not m.overflow:
            continue
        if is_cbs_code(m.overflow):
            if m.overflow not in municipalities:
                _raise(f"municipality {cbs}: overflow to unknown municipality {m.overflow}", cbs, "overflow")
            if m.overflow == cbs:
                _raise(f"municipality {cbs}: overflows to itself", cbs, "overflow")
            chain = overflow_chain(municipalities, cbs)
            if len(chain) != len(set(chain)):
                _raise(f"municipality {cbs}: overflow loop {' -> '.join(chain)}", cbs, "overflow")
        elif "/" not in m.overflow or any(ch.isspace() for ch in m.overflow):
            _raise(f"municipality {cbs}: overflow {m.overflow!r} is neither a CBS code nor a dial string",
                   cbs, "overflow")


def _raise(message: str, cbs: str, key: str) -> None:
    err = PlanError(message)
    err.key_path = ("municipalities", cbs, key)
    raise err


def _fingerprint(plan: NumberingPlan) -> str:
    h = hashlib.sha256()
    for cbs in sorted(plan.municipalities):
        h.update(repr(plan.municipalities[cbs]).encode())
    for code in sorted(plan.area_codes):
        h.update(repr(plan.area_codes[code]).encode())
    h.update(repr((plan.operator_destination, plan.calamities)).encode())
    if plan.access_numbers or plan.languages != ("en",):  # plans without them keep their version
        h.update(repr((plan.access_numbers, plan.languages)).encode())
    return h.hexdigest()[:12]


# --- building the plan from the shipped tables ---------------------------------------

_ALIAS_KINDS = {"alt_name", "municipality_cbs_name"}
_FORMER_KINDS = {"former_municipality"}
_PLACE_KINDS = {"woonplaats", "woonplaats_alt", "kern_or_hamlet", "kern_or_hamlet_alt"}

Row = Mapping[str, str]


@dataclass(frozen=True, slots=True)
class PlanTables:
    """The shipped tables as read, one mapping per row (column name -> text), in file order.

    Error messages name a row as ``<table file>:<line>`` (the header is line 1), so an
    operator finds the bad line whoever read the file."""

    municipalities: Sequence[Row]  # municipalities.csv
    area_codes: Sequence[Row]  # area_codes.csv
    municipality_area_codes: Sequence[Row]  # municipality_area_codes.csv
    name_lookup: Sequence[Row]  # name_lookup.csv
    snapshot_2014: Sequence[Row]  # fourteen_plus_2014_snapshot.csv


#: The file each table of ``PlanTables`` is read from (the names its error messages use).
TABLE_FILES = {
    "snapshot_2014": "fourteen_plus_2014_snapshot.csv",
    "name_lookup": "name_lookup.csv",
    "municipality_area_codes": "municipality_area_codes.csv",
    "municipalities": "municipalities.csv",
    "area_codes": "area_codes.csv",
}


def _require(row: Row, column: str, where: str) -> str:
    value = row.get(column)
    if value is None or not value.strip():
        raise PlanError(f"{where}: missing value for column {column!r}")
    return value.strip()


def base_plan_from_tables(tables: PlanTables) -> NumberingPlan:
    """The plan as derived from the shipped tables, before operator overrides."""
    snapshot = {r["cbs_code"]: r for r in tables.snapshot_2014}
    names: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for i, row in enumerate(tables.name_lookup, start=2):
        kind = row.get("kind", "")
        bucket = (
            "aliases" if kind in _ALIAS_KINDS
            else "former" if kind in _FORMER_KINDS
            else "places" if kind in _PLACE_KINDS
            else None
        )
        if bucket:
            alias = _require(row, "alias", f"name_lookup.csv:{i}")
            names[_require(row, "cbs_code", f"name_lookup.csv:{i}")][bucket].append(alias)

    pairs: dict[str, list[tuple[float, str]]] = defaultdict(list)
    for i, row in enumerate(tables.municipality_area_codes, start=2):
        if row.get("significant") != "True":
            continue
        where = f"municipality_area_codes.csv:{i}"
        code = _require(row, "area_code", where)
        # documentary pairs (from municipal letters, not postcode data) carry no share: list them last
        share = float(row.get("share_of_area_code") or 0.0)
        pairs[code].append((share, _require(row, "cbs_code", where)))

    municipalities: dict[str, Municipality] = {}
    for i, row in enumerate(tables.municipalities, start=2):
        where = f"municipalities.csv:{i}"
        cbs = _require(row, "cbs_code", where)
        name = _require(row, "name", where)
        own = names.get(cbs, {})
        if cbs in NOT_CONNECTED_BY_DEFAULT:
            status = Status.NOT_CONNECTED
        elif snapshot.get(cbs, {}).get("main_number_was_14plus_2014") in {"yes", "partial"}:
            status = Status.ACTIVE
        else:
            status = Status.TECHNICAL
        primary = _require(row, "primary_area_code", where)
        codes = [c for c in row.get("area_codes", "").split(";") if c]
        municipalities[cbs] = Municipality(
            cbs_code=cbs,
            name=name,
            province=row.get("province", ""),
            population=int(row.get("population_2021_est") or 0),
            status=status,
            destination=DEFAULT_DESTINATION_TEMPLATE.format(cbs_code=cbs),
            area_codes=tuple([primary] + [c for c in codes if c != primary]),
            aliases=_unique(a for a in own.get("aliases", ()) if a != name),
            former_names=_unique(own.get("former", ())),
            places=_unique(own.get("places", ())),
            alt_number=NOT_CONNECTED_BY_DEFAULT.get(cbs),
        )

    area_codes: dict[str, AreaCode] = {}
    for i, row in enumerate(tables.area_codes, start=2):
        where = f"area_codes.csv:{i}"
        code = _require(row, "area_code", where)
        members = tuple(cbs for _, cbs in sorted(pairs.get(code, []), key=lambda p: (-p[0], p[1])))
        area_codes[code] = AreaCode(
            code=code,
            main_place=row.get("main_place", ""),
            municipalities=members,
            mode=RoutingMode.DIRECT if len(members) == 1 else RoutingMode.SPEECH,
            population=int(row.get("residents_2021_est") or 0),
        )
    return build_plan(municipalities, area_codes)


def _unique(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(v.strip() for v in values if v and v.strip()))
