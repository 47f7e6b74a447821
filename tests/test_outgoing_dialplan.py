"""The generated ``[from-municipality]`` dialplan (issue 11, item 7), without Asterisk.

Outgoing calls never enter the controller's call flow (they do not dial a 14+ number), so
what decides them is this generated text: which caller ID each municipality's line presents,
chosen from the plan (status and primary area code, override file included).
"""

from __future__ import annotations

import re

from ivr.adapters.asterisk.outgoing_dialplan import CONTEXT, LOOKUP, main, render_outgoing_dialplan
from ivr.plan_files import load_base_plan

PLAN = load_base_plan()


def lookup(text: str) -> dict[str, list[str]]:
    """CBS code -> the lines of its extension in [municipality-cli]."""
    body = text.split(f"[{LOOKUP}]", 1)[1]
    out: dict[str, list[str]] = {}
    current = None
    for line in body.splitlines():
        m = re.match(r"exten => (GM\d{4}),1,(.*)", line)
        if m:
            current = m.group(1)
            out[current] = [m.group(2)]
        elif line.startswith(" same => ") and current:
            out[current].append(line.removeprefix(" same => n,"))
        else:
            current = None
    return out


def test_every_connected_municipality_presents_14_and_its_primary_area_code():
    ext = lookup(render_outgoing_dialplan(PLAN))
    assert set(ext) == set(PLAN.municipalities)
    assert ext["GM1676"][:2] == ["Set(CALLERID(num)=140111)", "Set(CALLERID(name)=Gemeente Schouwen-Duiveland)"]
    assert ext["GM0664"][0] == "Set(CALLERID(num)=140113)"  # Goes shares 0113 with four others
    for cbs, m in PLAN.municipalities.items():
        if m.status.connected:
            assert ext[cbs][0] == f"Set(CALLERID(num)=14{m.area_codes[0]})" and ext[cbs][-1] == "Return(ok)"


def test_a_not_connected_municipality_keeps_its_own_caller_id():
    ext = lookup(render_outgoing_dialplan(PLAN))
    assert not any("CALLERID" in line and line.startswith("Set") for line in ext["GM0394"])  # Haarlemmermeer
    assert ext["GM0394"][-1] == "Return(ok)"


def test_unknown_or_missing_municipality_is_refused_not_dialled():
    text = render_outgoing_dialplan(PLAN)
    context = text.split(f"[{CONTEXT}]", 1)[1].split(f"[{LOOKUP}]", 1)[0]
    assert context.count('GotoIf($["${IVR_MUNICIPALITY}" = ""]?refuse)') == 2  # national and E.164 patterns
    assert context.count('GotoIf($["${GOSUB_RETVAL}" != "ok"]?refuse)') == 2
    assert context.count("Hangup(21)") == 2
    assert "exten => _[A-Z].,1,Return(unknown)" in text


def test_names_cannot_break_the_dialplan():
    from dataclasses import replace
    odd = dict(PLAN.municipalities)
    odd["GM1676"] = replace(odd["GM1676"], name="Schouwen, (Duiveland); $x")
    ext = lookup(render_outgoing_dialplan(PLAN.with_changes(municipalities=odd)))
    assert ext["GM1676"][1] == "Set(CALLERID(name)=Gemeente Schouwen Duiveland x)"


def test_chosen_from_the_override_file(tmp_path):
    plan_file = tmp_path / "plan.toml"
    plan_file.write_text('[municipalities.GM0664]\nstatus = "not_connected"\n')
    out = tmp_path / "outgoing.conf"
    assert main([str(out), str(plan_file)]) == 0
    ext = lookup(out.read_text())
    assert not ext["GM0664"][0].startswith("Set(CALLERID")
    assert ext["GM1676"][0] == "Set(CALLERID(num)=140111)"


def test_a_broken_override_file_writes_nothing(tmp_path, capsys):
    plan_file = tmp_path / "plan.toml"
    plan_file.write_text('[municipalities.GM0664]\nstatus = "sleeping"\n')
    out = tmp_path / "outgoing.conf"
    assert main([str(out), str(plan_file)]) == 1
    assert f"{plan_file}:2" in capsys.readouterr().err
    assert not out.exists()
