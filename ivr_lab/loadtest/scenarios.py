"""Load-test scenarios: what each SIPp caller does, and the shared constants."""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

from ivr_lab.controller import REPO
from ivr_lab.sipp import Audio, Dtmf, HangUp, Pause


RESULTS_DIR = REPO / "loadtest" / "results"
SALT = "loadtest-salt"
PLAN_OVERRIDES = """
# loadtest: Kapelle's line rings and rings, so a caller can hang up during the transfer
[municipalities.GM0678]
destination = "Local/noanswer@ivr14-lab"
"""
MAX_CALLS_PER_STEP = 20_000
MAX_RATE = 400.0


def asterisk_root() -> Path:
    return Path(os.environ.get("IVR_ASTERISK_ROOT", "/var/lib/ivr14/asterisk-root"))


def asterisk_pid() -> int | None:
    try:
        pid = int((asterisk_root() / "run/asterisk/asterisk.pid").read_text().strip())
        if Path(f"/proc/{pid}/comm").read_text().strip() == "asterisk":
            return pid
    except (OSError, ValueError):
        pass
    return None


# --- scenarios -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Scenario:
    name: str
    number: str
    steps: tuple
    speech: bool = False  # needs the controller's speech path
    expect_outcome: str | None = "routed"  # the outcome every call of it should have
    expect_phase: str | None = None  # hangup phase expected
    expect_municipality: str | None = None  # CBS code the call must be decided for
    share: float = 1.0  # in ``mixed``: share of the offered rate


def _menu_digit(area_code: str, cbs_code: str) -> str:
    from ivr.plan_files import load_base_plan

    return str([m.cbs_code for m in load_base_plan().candidates(area_code)].index(cbs_code) + 1)


def scenarios(menu_wait_s: float = 1.2, speech_pcap: Path | None = None,
              speech_target: tuple[str, str] = ("0113", "GM0664")) -> dict[str, Scenario]:
    goes = _menu_digit("0113", "GM0664")
    kapelle = _menu_digit("0113", "GM0678")
    wait = Pause(int(menu_wait_s * 1000))
    out = {
        "unique": Scenario("unique", "140111", (), expect_municipality="GM1676"),
        "dtmf": Scenario("dtmf", "140113", (wait, Dtmf(goes)), expect_municipality="GM0664"),
        "hangup_greeting": Scenario("hangup_greeting", "140113", (Pause(300), HangUp()),
                                    expect_outcome="caller_hangup", expect_phase="menu", share=0.1),
        "hangup_menu": Scenario("hangup_menu", "140113", (Pause(2500), HangUp()),
                                expect_outcome="caller_hangup", expect_phase="menu", share=0.1),
        "hangup_transfer": Scenario("hangup_transfer", "140113", (wait, Dtmf(kapelle), Pause(2000), HangUp()),
                                    expect_outcome="caller_hangup", expect_phase="transfer", share=0.1),
        "hangup_connected": Scenario("hangup_connected", "140111", (Pause(700), HangUp()), share=0.1),
    }
    # speech: the caller hears the welcome, says the name, then waits for the transfer (the pcap is
    # padded with silence; SIPp sends no RTP after it, see docs/asterisk.md)
    out["speech"] = Scenario("speech", "14" + speech_target[0],
                             (Pause(300), Audio(str(speech_pcap or "utterance.pcap"))),
                             speech=True, expect_municipality=speech_target[1])
    return out


def default_speech_utterance() -> tuple[Path, str, str] | None:
    """(WAV, area code, expected CBS code) of a bare-name utterance from the dev set."""
    manifest = REPO / "tests/data/dev/manifest.csv"
    if not manifest.is_file():
        return None
    with manifest.open(newline="", encoding="utf-8") as fh:
        rows = [r for r in csv.DictReader(fh) if r.get("kind") == "bare"]
    if not rows:
        return None
    row = next((r for r in rows if r.get("area_code") == "0113"), rows[0])
    return REPO / "tests/data/dev" / row["path"], row["area_code"], row["expected_cbs_code"]


MIX = ("unique", "dtmf", "hangup_greeting", "hangup_menu", "hangup_transfer", "hangup_connected")
MIX_SHARES = {"unique": 0.3, "dtmf": 0.3, "hangup_greeting": 0.1, "hangup_menu": 0.1, "hangup_transfer": 0.1,
              "hangup_connected": 0.1}
