"""Plan administration: one module validates, applies, swaps, audits, replays and reloads.

Reload is wired: ``POST /v1/plan/reload`` and SIGHUP to ``ivr serve``; a broken override
file is refused, the running plan stays and ``ivr_plan_reload_failing`` says so.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx
import pytest
from fastapi.testclient import TestClient

from ivr.adapters.api import create_app
from ivr.config import Settings
from ivr.adapters.metrics import MetricsObserver, parse_exposition
from ivr.core.plan import RoutingMode
from ivr.plan_files import load_base_plan
from ivr.core.plan_changes import ChangeRefused, UnknownTarget, change_area_code, change_municipality
from ivr.plan_admin import PlanAdmin
from ivr.service import Service
from ivr.adapters.store import CallStore
from e2e import stop_server
from test_api import AUTH, REPO, TOKEN, free_port

GOOD = '[area_codes."0113"]\nmode = "dtmf"\n'
OTHER = '[area_codes."0113"]\nmode = "operator"\n'
BROKEN = '[area_codes."0113"]\nmode = "carrier-pigeon"\n'


def test_apply_validates_swaps_and_audits(tmp_path):
    store = CallStore(tmp_path / "calls.sqlite")
    admin = PlanAdmin(store, None, plan=load_base_plan())
    before = admin.plan
    done = admin.apply("alice@test", "area_code", "0113", change_area_code("0113", RoutingMode.DTMF))
    assert admin.plan.area_codes["0113"].mode is RoutingMode.DTMF and done.plan_version == admin.plan.version
    [entry] = store.audit_entries()
    assert (entry["who"], entry["action"], entry["before"]["plan_version"]) == ("alice@test", "area_code",
                                                                              before.version)
    with pytest.raises(UnknownTarget):
        admin.apply("alice@test", "municipality", "GM9999", change_municipality("GM9999", {"destination": "x"}))
    with pytest.raises(ChangeRefused):  # a shared area code cannot route directly: an invalid plan
        admin.apply("alice@test", "area_code", "0113", change_area_code("0113", RoutingMode.DIRECT))
    assert admin.plan.area_codes["0113"].mode is RoutingMode.DTMF
    assert len(store.audit_entries()) == 1
    # a fresh admin (a restart) replays the audit log on top of the file
    assert PlanAdmin(store, None).plan.area_codes["0113"].mode is RoutingMode.DTMF
    store.close()


def make_service(tmp_path, plan_file):
    settings = Settings(state_dir=tmp_path, db_path=tmp_path / "calls.sqlite", speech_engine="none",
                        admin_token=TOKEN, plan_file=plan_file, ami_secret=None)
    return Service(settings, observer=MetricsObserver(misroute_window_s=settings.misroute_window_s))


def test_reload_endpoint_reads_the_file_again_and_keeps_admin_changes(tmp_path):
    plan_file = tmp_path / "plan.toml"
    plan_file.write_text(GOOD)
    service = make_service(tmp_path, plan_file)
    try:
        with TestClient(create_app(service)) as client:
            assert service.plan.area_codes["0113"].mode is RoutingMode.DTMF
            r = client.put("/v1/calamities/0111", headers=AUTH,
                           json={"target": "0111", "destination": "Local/operator@ivr14-lab"})
            assert r.status_code == 200, r.text
            plan_file.write_text(OTHER)
            assert client.post("/v1/plan/reload").status_code == 401
            r = client.post("/v1/plan/reload", headers=AUTH)
            assert r.status_code == 200, r.text
            assert r.json()["plan_version"] == service.plan.version != r.json()["previous_version"]
            assert service.plan.area_codes["0113"].mode is RoutingMode.OPERATOR
            assert [c.target for c in service.plan.calamities] == ["0111"]  # the audit replays on top
            good = service.plan
            plan_file.write_text(BROKEN)
            r = client.post("/v1/plan/reload", headers=AUTH)
            assert r.status_code == 422 and "plan.toml" in r.json()["detail"]
            assert service.plan is good and "plan.toml" in service.plan_error
            snap = parse_exposition(client.get("/metrics").text)
            assert snap["ivr_plan_reload_failing"] == 1.0
            assert client.get("/readyz").json()["checks"]["plan"]["last_reload_error"]
            plan_file.write_text(GOOD)
            assert client.post("/v1/plan/reload", headers=AUTH).status_code == 200
            assert parse_exposition(client.get("/metrics").text)["ivr_plan_reload_failing"] == 0.0
    finally:
        service.store.close()


def test_sighup_and_the_cli_reload_the_running_service(tmp_path, monkeypatch, capsys):
    plan_file = tmp_path / "plan.toml"
    plan_file.write_text(GOOD)
    api_port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("IVR_")}
    env.update(IVR_STATE_DIR=str(tmp_path), IVR_DB_PATH=str(tmp_path / "calls.sqlite"), IVR_SPEECH_ENGINE="none",
               IVR_API_HOST="127.0.0.1", IVR_API_PORT=str(api_port), IVR_AGI_HOST="127.0.0.1",
               IVR_AGI_PORT=str(free_port()), IVR_ADMIN_TOKEN=TOKEN, IVR_CALLER_SALT="s",
               IVR_PLAN_FILE=str(plan_file))
    proc = subprocess.Popen([sys.executable, "-m", "ivr.cli", "serve"], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{api_port}"

    def mode() -> str | None:
        try:
            return httpx.get(f"{base}/v1/area-codes/0113", timeout=1).json()["mode"]
        except httpx.HTTPError:
            return None

    def wait_for(value: str) -> None:
        deadline = time.monotonic() + 30
        while mode() != value:
            assert proc.poll() is None, proc.stdout.read()
            assert time.monotonic() < deadline, f"mode never became {value}"
            time.sleep(0.1)

    try:
        wait_for("dtmf")
        plan_file.write_text(OTHER)
        proc.send_signal(signal.SIGHUP)
        wait_for("operator")
        plan_file.write_text(BROKEN)
        proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 30
        while parse_exposition(httpx.get(f"{base}/metrics").text).get("ivr_plan_reload_failing") != 1.0:
            assert time.monotonic() < deadline, "the refused reload was not reported"
            time.sleep(0.1)
        assert mode() == "operator" and proc.poll() is None  # the last good plan stays, the service runs
        from ivr.cli import main

        monkeypatch.setenv("IVR_STATE_DIR", str(tmp_path))
        monkeypatch.setenv("IVR_ADMIN_TOKEN", TOKEN)
        assert main(["plan", "reload", "--url", base]) == 1  # still broken: refused, said why
        assert "plan.toml" in capsys.readouterr().err
        plan_file.write_text(GOOD)
        assert main(["plan", "reload", "--url", base]) == 0
        assert mode() == "dtmf"
    finally:
        out = stop_server(proc)
    assert proc.returncode == 0, out
