"""Outgoing calls show the 14+ number (issue 11, item 7), through the real Asterisk.

A SIPp caller on a municipality's lab line (127.0.0.4-6, endpoints in dialplan/pjsip.conf) calls
an ordinary number; Asterisk's generated ``[from-municipality]`` (outgoing.conf, rendered from
the plan at install) dials it out to the public network's stand-in, a SIPp answering on
127.0.0.7, and the test reads the caller ID in the INVITE that SIPp received.
"""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from ivr_lab.sipp import CallScript, HangUp, Pause, run_sipp

pytestmark = pytest.mark.asterisk

PSTN_IP = "127.0.0.7"
# (the municipality's lab line, its own caller ID) -> what the called party must see
CALLS = [
    ("127.0.0.4", "0111452000", "0201234567", ('"Gemeente Schouwen-Duiveland"', "140111")),  # own area code
    ("127.0.0.5", "0113249249", "+31612345678", ('"Gemeente Goes"', "140113")),  # shares 0113; E.164 dialled
    ("127.0.0.6", "0235676000", "0201234568", ('"Lab caller"', "0235676000")),  # not connected: unchanged
]
_FROM = re.compile(r"^From:\s*(?P<name>\"[^\"]*\")?\s*<sip:(?P<user>[^@>]+)@", re.MULTILINE | re.IGNORECASE)
_INVITE_TO = re.compile(r"^INVITE sip:(?P<user>[^@ ]+)@", re.MULTILINE)


@pytest.fixture(scope="module")
def received(asterisk, tmp_path_factory):
    """The (request user, From name, From user) of each INVITE the public network received, in order."""
    workdir = tmp_path_factory.mktemp("e2e-outgoing")
    messages = workdir / "pstn-messages.log"
    uas = subprocess.Popen([shutil.which("sipp") or "sipp", "-sn", "uas", "-i", PSTN_IP, "-mi", PSTN_IP,
                            "-p", "5060", "-mp", "36000", "-m", str(len(CALLS)), "-nostdin",
                            "-trace_msg", "-message_file", str(messages), "-timeout", "60s"],
                           cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        results = []
        for i, (ip, own, number, _) in enumerate(CALLS):
            script = CallScript(number, caller=own, local_ip=ip, steps=[Pause(300), HangUp()])
            results.append(run_sipp(script, 1, 1, None, None, "127.0.0.1:5060", workdir / f"call{i}"))
        out, _ = uas.communicate(timeout=30)
    finally:
        if uas.poll() is None:
            uas.kill()
            uas.wait()
    text = messages.read_text(errors="replace") if messages.exists() else ""
    # the trace: a dashed line, "UDP message received [n] bytes :", a blank line, the message
    chunks = [c.split("\n", 1) for c in re.split(r"^-{5,}.*\n", text, flags=re.MULTILINE) if c.strip()]
    invites = [body for head, body in (c for c in chunks if len(c) == 2)
               if "received" in head and body.lstrip().startswith("INVITE sip:")]
    got = []
    for invite in invites:
        to, sender = _INVITE_TO.search(invite), _FROM.search(invite)
        got.append((to["user"], sender["name"], sender["user"]))
    return results, got, uas.returncode, out


def test_every_call_was_made_and_answered_by_the_public_network(received):
    results, got, rc, out = received
    for (ip, *_), result in zip(CALLS, results):
        assert result.ok, f"{ip}: {result.describe()}"
    assert rc == 0, out
    assert len(got) == len(CALLS)


@pytest.mark.parametrize("i", range(len(CALLS)))
def test_called_party_sees_the_municipalitys_14_number(received, i):
    _, got, _, _ = received
    _, _, number, (name, user) = CALLS[i]
    assert got[i] == (number, name, user)
