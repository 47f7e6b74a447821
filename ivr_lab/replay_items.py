"""One row of a replay manifest: its result, its checks and its audio (offline and ``--sip`` alike)."""

from __future__ import annotations

import csv
import subprocess
import wave
from dataclasses import dataclass
from pathlib import Path

from ivr.core.plan import AreaCode, NumberingPlan
from ivr.speech.base import FRAME_BYTES
from ivr_lab.pcap import RATE, read_wav_8k

ACTIONS = {"accept": "transfer", "confirm": "confirm", "choose": "choose", "reject": "retry"}


@dataclass
class ItemResult:
    path: str
    area_code: str
    expected_cbs_code: str
    kind: str = ""
    decided_cbs_code: str = ""  # the matcher's best (what accept routes to / confirm asks about)
    verdict: str = ""  # accept | confirm | choose | reject | no_input | error
    action: str = ""  # transfer | confirm | choose | retry | no_input | error
    confidence: float = 0.0  # the recogniser's confidence of its best hypothesis (closed-set engines: its share)
    score: float = 0.0  # the matcher's score of its best
    heard: str = ""  # the recogniser's best hypothesis
    latency_ms: float = 0.0
    engine_ms: float = 0.0
    listen: str = ""  # how the listen ended: heard | too_long | no_input (offline replay)
    speech_start_ms: int | None = None  # audio time from the start of the WAV (offline replay)
    speech_end_ms: int | None = None
    error: str = ""
    note: str = ""  # e.g. the WAV was converted from another rate
    answered_by: str = ""  # --sip: the municipality extension that answered the transfer
    outside_code: bool = False  # the expected municipality is not one of the area code's
    second_pass: str = ""  # the national second pass, when it ran: outside | in_code | nothing (SecondPass)
    national_ms: float = 0.0  # the national second pass's share of latency_ms
    national_verdict: str = ""  # the national decision's verdict and best, whatever the rule made of them
    national_best: str = ""


class ItemError(ValueError):
    pass


def wav_shape(path: Path) -> str:
    """What a WAV holds when it is not what a call carries (8 kHz mono 16-bit PCM), for the
    item's note; "" when it is, or when the header cannot be read (sox will say why)."""
    try:
        with wave.open(str(path), "rb") as w:
            rate, channels, width = w.getframerate(), w.getnchannels(), w.getsampwidth()
    except (wave.Error, EOFError, OSError):
        return ""
    if (rate, channels, width) == (RATE, 1, 2):
        return ""
    return f"converted from {rate} Hz, {channels} channel(s), {8 * width}-bit to 8 kHz mono 16-bit"


def read_slin(path: Path) -> bytes:
    """Any WAV -> slin bytes, 8 kHz mono 16-bit (converted with sox when it is not already:
    another sample rate is resampled, not refused); clear errors for anything that is not
    audio."""
    if not path.is_file():
        raise ItemError(f"missing file {path}")
    try:
        data = read_wav_8k(path).tobytes()
    except (wave.Error, EOFError) as exc:
        raise ItemError(f"{path.name}: not a PCM WAV file ({exc})") from exc
    except subprocess.CalledProcessError as exc:
        why = (exc.stderr or b"").decode("utf-8", "replace").strip().splitlines()
        raise ItemError(f"{path.name}: cannot convert to 8 kHz mono ({why[-1] if why else exc})") from exc
    except RuntimeError as exc:
        raise ItemError(f"{path.name}: cannot convert to 8 kHz mono ({exc})") from exc
    if len(data) < FRAME_BYTES:
        raise ItemError(f"{path.name}: empty audio (less than 20 ms)")
    return data


def new_item(row: dict[str, str]) -> ItemResult:
    def cell(name: str) -> str:
        value = row.get(name)
        return value.strip() if isinstance(value, str) else ""

    return ItemResult(path=cell("path"), area_code=cell("area_code"), expected_cbs_code=cell("expected_cbs_code"),
                      kind=cell("kind"))


def check_row(item: ItemResult, plan: NumberingPlan) -> AreaCode:
    """The row's area code, or an :class:`ItemError` saying what is wrong with the row."""
    for name in ("path", "area_code", "expected_cbs_code"):
        if not getattr(item, name):
            raise ItemError(f"row has no {name}")
    area = plan.area_codes.get(item.area_code)
    if area is None:
        raise ItemError(f"unknown area code {item.area_code!r}")
    if not area.shared:
        raise ItemError(f"area code {item.area_code} routes directly (one municipality): nothing to recognise")
    if item.expected_cbs_code not in plan.municipalities:
        raise ItemError(f"unknown municipality {item.expected_cbs_code!r}")
    # a municipality outside the code is what a caller on the wrong code names: the national second pass
    item.outside_code = item.expected_cbs_code not in area.municipalities
    return area


def mark_failed(item: ItemResult, exc: Exception) -> None:
    """The row ends as an error: its own message for a row problem, the exception's type otherwise."""
    item.verdict = item.action = "error"
    item.error = str(exc) if isinstance(exc, ItemError) else f"{type(exc).__name__}: {exc}"


def read_manifest(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = {"path", "area_code", "expected_cbs_code"} - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"{path}: manifest lacks column(s) {', '.join(sorted(missing))}")
        return list(reader)
