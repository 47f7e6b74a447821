"""The numbering plan, operator overrides and routing decisions (pure, no I/O)."""

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from ivr.adapters.overrides import load_plan, read_overrides
from ivr.core.plan import PlanError, RoutingMode, Status
from ivr.plan_files import load_base_plan
from ivr.core.routing import Verdict, menu_has_more, menu_page, route


@pytest.fixture(scope="module")
def plan():
    return load_base_plan()


def test_plan_has_the_shipped_data(plan):
    assert len(plan.municipalities) == 342
    assert len(plan.area_codes) == 141
    direct = [a for a in plan.area_codes.values() if a.mode is RoutingMode.DIRECT]
    assert len(direct) == 15
    assert all(len(a.municipalities) == 1 for a in direct)
    assert plan.municipalities["GM0394"].status is Status.NOT_CONNECTED  # Haarlemmermeer
    assert plan.municipalities["GM0394"].alt_number
    assert sum(m.status is Status.ACTIVE for m in plan.municipalities.values()) > 50


def test_every_area_code_routes(plan):
    for code in plan.area_codes:
        decision = route(plan, "14" + code)
        assert decision.verdict in (Verdict.TRANSFER, Verdict.ASK, Verdict.NOT_CONNECTED), code
        assert decision.area_code == code


@pytest.mark.parametrize("number,verdict,problem", [
    ("14", Verdict.INVALID_NUMBER, "area code missing"),
    ("1401", Verdict.INVALID_NUMBER, "incomplete"),
    ("14abc", Verdict.INVALID_NUMBER, "characters other than digits"),
    ("140999", Verdict.UNKNOWN_AREA_CODE, "unknown area code 0999"),
    ("1401131", Verdict.INVALID_NUMBER, "too many"),
    ("14" + "0" * 40, Verdict.INVALID_NUMBER, "longer than"),
    ("0113", Verdict.INVALID_NUMBER, "not a 14+ number"),
    ("", Verdict.INVALID_NUMBER, "no number dialled"),
    ("141113", Verdict.INVALID_NUMBER, "must start with 0"),
])
def test_malformed_numbers_get_a_clear_decision(plan, number, verdict, problem):
    decision = route(plan, number)
    assert decision.verdict is verdict
    assert problem in decision.reason


@pytest.mark.parametrize("number", ["+31140113", "0031140113", "31140113", "14 0113", "14-0113"])
def test_prefixes_and_separators_are_normalised(plan, number):
    decision = route(plan, number)
    assert decision.verdict is Verdict.ASK and decision.area_code == "0113"


def test_unique_code_goes_straight_through(plan):
    decision = route(plan, "140111")
    assert decision.verdict is Verdict.TRANSFER
    assert decision.municipality.name == "Schouwen-Duiveland"
    assert decision.destination == "Local/GM1676@ivr14-lab"


def test_shared_code_asks_and_falls_back_to_dtmf_without_speech(plan):
    decision = route(plan, "140113")
    assert decision.verdict is Verdict.ASK and decision.mode is RoutingMode.SPEECH
    assert {m.name for m in decision.candidates} == {"Goes", "Reimerswaal", "Borsele", "Kapelle", "Noord-Beveland"}
    assert route(plan, "140113", speech_available=False).mode is RoutingMode.DTMF


def test_menu_pages_for_codes_with_many_municipalities(plan):
    candidates = plan.candidates("071")
    assert len(candidates) == 11
    first = menu_page(candidates, 0)
    assert [d for d, _ in first] == [str(i) for i in range(1, 9)]
    assert menu_has_more(candidates, 0) and not menu_has_more(candidates, 1)
    assert [m for _, m in first] + [m for _, m in menu_page(candidates, 1)] == list(candidates)
    five = plan.candidates("0113")
    assert len(menu_page(five, 0)) == 5 and not menu_has_more(five, 0)


def test_overrides_apply(tmp_path: Path, plan):
    f = tmp_path / "plan.toml"
    f.write_text('''
operator_destination = "PJSIP/operator@trunk"
[municipalities.GM0664]
destination = "PJSIP/+31113249249@trunk"
[municipalities.GM0394]
status = "active"
[area_codes."0113"]
mode = "dtmf"
[[calamities]]
target = "0111"
destination = "Local/operator@ivr14-lab"
message = "storing"
expires = 2099-01-01T00:00:00Z
''')
    changed = load_plan(f, base=plan)
    assert changed.version != plan.version
    assert changed.municipalities["GM0664"].destination == "PJSIP/+31113249249@trunk"
    assert changed.municipalities["GM0394"].status is Status.ACTIVE
    assert changed.area_codes["0113"].mode is RoutingMode.DTMF
    calamity = route(changed, "140111")
    assert calamity.destination == "Local/operator@ivr14-lab" and calamity.message == "storing"
    after_expiry = route(changed, "140111", now=datetime(2099, 1, 1, tzinfo=timezone.utc) + timedelta(seconds=1))
    assert after_expiry.destination == "Local/GM1676@ivr14-lab"
    assert plan.municipalities["GM0664"].destination == "Local/GM0664@ivr14-lab"  # base untouched


@pytest.mark.parametrize("text,where", [
    ('[municipalities.GM0664]\nstatus = "sometimes"\n', ":2: municipalities.GM0664.status"),
    ('[area_codes."0113"]\nmode = "telepathy"\n', ":2: area_codes.0113.mode"),
    ('[municipalities.GM0664\nstatus = "active"\n', "line 1"),
    ('[municipalities.GM0664]\ncolour = "blue"\n', ":2: municipalities.GM0664.colour"),
    ('[[calamities]]\ntarget = "0113"\ndestination = "no spaces allowed"\n', ":3: calamities.0.destination"),
])
def test_broken_override_files_name_file_line_and_reason(tmp_path: Path, plan, text, where):
    f = tmp_path / "plan.toml"
    f.write_text(text)
    with pytest.raises(PlanError) as err:
        load_plan(f, base=plan)
    assert str(f) in str(err.value)
    assert where in str(err.value)


def test_override_naming_unknown_things_is_refused(tmp_path: Path, plan):
    f = tmp_path / "plan.toml"
    f.write_text('[municipalities.GM9999]\nstatus = "active"\n')
    with pytest.raises(PlanError, match="GM9999: unknown CBS code"):
        load_plan(f, base=plan)
    f.write_text('[[calamities]]\ntarget = "0999"\ndestination = "Local/x@y"\n')
    with pytest.raises(PlanError, match="calamity target"):
        load_plan(f, base=plan)


def test_missing_override_file_is_an_error(tmp_path: Path):
    with pytest.raises(PlanError, match="cannot read"):
        read_overrides(tmp_path / "absent.toml")


def test_broken_data_file_is_rejected_with_file_and_line(tmp_path: Path):
    import shutil

    from ivr.plan_files import DATA_DIR

    for f in DATA_DIR.glob("*.csv"):
        shutil.copy(f, tmp_path / f.name)
    lines = (tmp_path / "municipalities.csv").read_text().splitlines()
    lines[5] = ",".join([""] + lines[5].split(",")[1:])  # drop a CBS code
    (tmp_path / "municipalities.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(PlanError, match=r"municipalities.csv:6: missing value for column 'cbs_code'"):
        load_base_plan(tmp_path)


def test_admin_changes_replay_from_the_audit_log(plan):
    from ivr.adapters.overrides import layer
    from ivr.plan_admin import overrides_from_audit

    entries = [
        {"action": "municipality", "target": "GM0664", "after": {"status": "not_connected", "destination":
         "Local/GM0664@ivr14-lab", "alt_number": "0113 249 249", "aliases": ["Goes stad"]}},
        {"action": "area_code", "target": "0113", "after": {"mode": "dtmf"}},
        {"action": "calamity", "target": "0111", "after": {"target": "0111", "destination": "Local/operator@x",
                                                            "message": "storing", "expires": None}},
        {"action": "calamity", "target": "0113", "after": {"target": "0113", "destination": "Local/operator@x",
                                                            "message": "", "expires": None}},
        {"action": "calamity_clear", "target": "0113", "after": None},
    ]
    replayed = layer(plan, overrides_from_audit(entries))
    goes = replayed.municipalities["GM0664"]
    assert (goes.status, goes.alt_number, goes.aliases) == (Status.NOT_CONNECTED, "0113 249 249", ("Goes stad",))
    assert replayed.area_codes["0113"].mode is RoutingMode.DTMF
    assert [c.target for c in replayed.calamities] == ["0111"]


def test_cli_route_and_the_api_show_the_same_decision(capsys):
    import json

    from ivr.cli import main

    assert main(["route", "140113", "--dtmf", "2", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["verdict"], out["municipality"], out["municipality_name"]) == ("transfer", "GM0703", "Reimerswaal")
    assert out["destination"] == "Local/GM0703@ivr14-lab"
    assert main(["route", "14abc", "--json"]) == 0
    bad = json.loads(capsys.readouterr().out)
    assert bad["verdict"] == "invalid_number" and "other than digits" in bad["reason"]
    assert set(bad) == {"number"} | set(route(load_base_plan(), "14abc").to_dict())


def _tables(municipality_rows):
    from ivr.core.plan import PlanTables

    return PlanTables(
        municipalities=municipality_rows,
        area_codes=[{"area_code": "0113", "main_place": "Goes", "residents_2021_est": "100"}],
        municipality_area_codes=[
            {"area_code": "0113", "cbs_code": "GM0678", "significant": "True", "share_of_area_code": "0.2"},
            {"area_code": "0113", "cbs_code": "GM0664", "significant": "True", "share_of_area_code": "0.7"},
            {"area_code": "0113", "cbs_code": "GM0654", "significant": "False", "share_of_area_code": "0.1"},
        ],
        name_lookup=[{"alias": "Kloetinge", "cbs_code": "GM0664", "kind": "woonplaats"}],
        snapshot_2014=[{"cbs_code": "GM0664", "main_number_was_14plus_2014": "yes"}],
    )


def test_the_core_builds_the_plan_from_rows_without_files():
    # the pure core gets rows (here: written inline), never a path; ivr.plan_files reads the CSVs
    from ivr.core.plan import base_plan_from_tables

    rows = [{"cbs_code": "GM0664", "name": "Goes", "primary_area_code": "0113", "area_codes": "0113"},
            {"cbs_code": "GM0678", "name": "Kapelle", "primary_area_code": "0113", "area_codes": "0113"}]
    plan = base_plan_from_tables(_tables(rows))
    assert [m.cbs_code for m in plan.candidates("0113")] == ["GM0664", "GM0678"]  # largest share first
    assert plan.area_codes["0113"].mode is RoutingMode.SPEECH
    assert plan.municipalities["GM0664"].status is Status.ACTIVE
    assert plan.municipalities["GM0678"].status is Status.TECHNICAL
    assert plan.municipalities["GM0664"].places == ("Kloetinge",)
    bad = [rows[0], {"cbs_code": "GM0678", "name": " ", "primary_area_code": "0113"}]
    with pytest.raises(PlanError, match=r"municipalities.csv:3: missing value for column 'name'"):
        base_plan_from_tables(_tables(bad))
