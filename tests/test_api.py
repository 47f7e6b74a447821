"""The HTTP API over real HTTP: reads, report, admin auth and audit, live effect on routing; and one
``ivr serve`` process (real uvicorn on a free loopback port) taking a FastAGI call end to end."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from fastapi.testclient import TestClient

from ivr.adapters.api import create_app
from ivr.config import Settings
from ivr.adapters.metrics import MetricsObserver, metrics_snapshot, parse_exposition, reconcile, total
from ivr.adapters.overrides import load_plan
from ivr.core.report import compute_kpis
from ivr.service import Service
from ivr.adapters.store import CallStore
from e2e import stop_server
from kpi_records import EXPECTED, T0, fixed_records

TOKEN = "test-admin-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
BASE_PLAN = load_plan(None)
REPO = Path(__file__).resolve().parent.parent


def make_service(tmp_path, token: str | None = TOKEN) -> Service:
    settings = Settings(state_dir=tmp_path, db_path=tmp_path / "calls.sqlite", speech_engine="none",
                        admin_token=token, plan_file=None, ami_secret=None)
    return Service(settings, plan=BASE_PLAN, observer=MetricsObserver(misroute_window_s=settings.misroute_window_s))


@pytest.fixture
def service(tmp_path):
    svc = make_service(tmp_path)
    svc.store.save_many(fixed_records())
    yield svc
    svc.store.close()


@pytest.fixture
def client(service):
    with TestClient(create_app(service)) as c:
        yield c


# --- health --------------------------------------------------------------------------------


def test_health_and_readiness(client, service):
    assert client.get("/healthz").json() == {"status": "ok"}
    r = client.get("/readyz")
    assert r.status_code == 503
    body = r.json()
    assert body["ready"] is False and body["checks"]["ami"]["reason"] == "AMI not configured"
    assert body["checks"]["plan"]["version"] == BASE_PLAN.version
    service.ami = SimpleNamespace(connected=True, last_error="", reconnects=0)
    r = client.get("/readyz")
    assert r.status_code == 200 and r.json()["ready"] is True


def test_openapi_is_served(client):
    spec = client.get("/openapi.json").json()
    assert "/v1/report" in spec["paths"] and "patch" in spec["paths"]["/v1/municipalities/{cbs}"]
    assert client.get("/docs").status_code == 200


# --- calls and report --------------------------------------------------------------------------


def test_calls_filters_and_pagination(client):
    page = client.get("/v1/calls", params={"limit": 5}).json()
    assert page["total"] == 15 and len(page["items"]) == 5 and page["items"][0]["call_id"] == "r1"
    page2 = client.get("/v1/calls", params={"limit": 5, "offset": 5}).json()
    assert [c["call_id"] for c in page2["items"]] == ["r6", "r7", "r8", "r9", "d1"]
    assert client.get("/v1/calls", params={"area_code": "115"}).json()["total"] == 2
    assert client.get("/v1/calls", params={"outcome": "caller_hangup"}).json()["total"] == 3
    assert client.get("/v1/calls", params={"municipality": "GM0654"}).json()["total"] == 3
    iso = "2023-11-14T22:36:40Z"  # T0 + 1400
    assert client.get("/v1/calls", params={"since": iso}).json()["total"] == 6
    assert client.get("/v1/calls", params={"until": str(T0 + 200)}).json()["total"] == 1
    assert client.get("/v1/calls", params={"since": "soon"}).status_code == 422
    assert client.get("/v1/calls", params={"limit": 0}).status_code == 422
    assert client.get("/v1/calls", params={"outcome": "exploded"}).status_code == 422
    call = client.get("/v1/calls/r1").json()
    assert call["attempts"][0]["recogniser_ms"] == 300.0 and call["caller"] == "h-r1"
    assert client.get("/v1/calls/nope").status_code == 404


def test_report_equals_compute_kpis(client, service):
    data = client.get("/v1/report").json()
    expected = compute_kpis(service.store.iter_query()).to_dict()
    data.pop("generated_at"), expected.pop("generated_at")
    assert data == expected
    assert data["overall"]["calls"] == EXPECTED["calls"]
    assert data["overall"]["headline"]["right_municipality"] == pytest.approx(EXPECTED["right_municipality"],
                                                                              abs=1e-6)
    one = client.get("/v1/report", params={"area_code": "0115"}).json()
    assert one["overall"]["calls"] == 2 and one["filters"] == {"area_code": "0115"}


# --- plan reads ----------------------------------------------------------------------------------


def test_plan_area_code_and_route(client):
    plan = client.get("/v1/plan").json()
    assert plan["version"] == BASE_PLAN.version and plan["municipalities"] == 342
    area = client.get("/v1/area-codes/113").json()
    assert area["code"] == "0113" and area["shared"] and area["municipalities"][0]["name"] == "Goes"
    assert client.get("/v1/area-codes/0999").status_code == 404
    assert client.get("/v1/area-codes/abc").status_code == 422
    r = client.get("/v1/route", params={"number": "140115"}).json()
    assert (r["verdict"], r["municipality"], r["destination"]) == ("transfer", "GM0715", "Local/GM0715@ivr14-lab")
    r = client.get("/v1/route", params={"number": "140113"}).json()
    assert r["verdict"] == "ask" and r["mode"] == "dtmf" and "GM0664" in r["candidates"]  # no recogniser here
    assert client.get("/v1/route", params={"number": "banana"}).json()["verdict"] == "invalid_number"
    assert client.get("/v1/route", params={"number": "1" * 40}).status_code == 422
    assert client.get("/v1/municipalities/GM0664").json()["name"] == "Goes"


# --- admin writes ----------------------------------------------------------------------------------


def test_admin_writes_are_refused_without_a_configured_token(tmp_path):
    svc = make_service(tmp_path, token=None)
    with TestClient(create_app(svc)) as c:
        r = c.patch("/v1/area-codes/0113", json={"mode": "dtmf"}, headers=AUTH)
        assert r.status_code == 503 and "IVR_ADMIN_TOKEN" in r.json()["detail"]
        assert c.patch("/v1/area-codes/0113", json={"mode": "dtmf"},
                       headers={"Authorization": "Bearer "}).status_code == 503
        assert c.get("/v1/audit").status_code == 503
    assert svc.plan is BASE_PLAN and svc.store.audit_log() == []


def test_admin_auth(client, service):
    body = {"mode": "dtmf"}
    r = client.patch("/v1/area-codes/0113", json=body)
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    assert client.patch("/v1/area-codes/0113", json=body, headers={"Authorization": "Basic abc"}).status_code == 401
    assert client.patch("/v1/area-codes/0113", json=body,
                        headers={"Authorization": "Bearer wrong"}).status_code == 403
    assert client.get("/v1/audit", headers={"Authorization": "Bearer wrong"}).status_code == 403
    assert service.plan is BASE_PLAN and service.store.audit_log() == []
    snap = metrics_snapshot(service.observer.registry)
    assert total(snap, "ivr_admin_changes_total", result="unauthorized") == 4


def test_area_code_mode_change_is_audited_and_live(client, service):
    r = client.patch("/v1/area-codes/113", json={"mode": "operator"}, headers=AUTH | {"X-Admin-User": "alice"})
    assert r.status_code == 200, r.text
    change = r.json()
    assert change["before"] == {"mode": "speech"} and change["after"] == {"mode": "operator"}
    assert service.plan.version == change["plan_version"] != BASE_PLAN.version
    assert service.new_flow().plan is service.plan  # the next call uses it
    route = client.get("/v1/route", params={"number": "140113"}).json()
    assert route["verdict"] == "operator" and route["plan_version"] == change["plan_version"]
    audit = client.get("/v1/audit", headers=AUTH).json()
    assert len(audit) == 1
    entry = audit[0]
    assert entry["who"] == "alice@testclient" and entry["action"] == "area_code" and entry["target"] == "0113"
    assert entry["before"] == {"plan_version": BASE_PLAN.version, "mode": "speech"}
    assert entry["after"]["mode"] == "operator" and abs(entry["at"] - time.time()) < 60


def test_municipality_change_takes_effect_on_the_next_route(client, service):
    r = client.patch("/v1/municipalities/GM0715", headers=AUTH,
                     json={"status": "not_connected", "alt_number": "0115 455 000", "aliases": [" Terneuze ", ""]})
    assert r.status_code == 200, r.text
    assert r.json()["after"] == {"status": "not_connected", "destination": "Local/GM0715@ivr14-lab",
                                 "alt_number": "0115 455 000", "aliases": ["Terneuze"], "overflow": None,
                                 "ring_timeout_s": None}
    route = client.get("/v1/route", params={"number": "140115"}).json()
    assert route["verdict"] == "not_connected" and "0115 455 000" in route["reason"]
    r = client.patch("/v1/municipalities/GM0715", headers=AUTH,
                     json={"status": "active", "destination": "PJSIP/+31115455000@trunk"})
    assert r.status_code == 200
    assert client.get("/v1/route", params={"number": "140115"}).json()["destination"] == "PJSIP/+31115455000@trunk"
    assert [e["action"] for e in service.store.audit_log()] == ["municipality", "municipality"]


@pytest.mark.parametrize("path, body, status", [
    ("/v1/municipalities/GM0715", {"status": "sleeping"}, 422),
    ("/v1/municipalities/GM0715", {"destination": "no dial string"}, 422),
    ("/v1/municipalities/GM0715", {"destination": "Local/x,y@ctx"}, 422),  # no Dial option injection
    ("/v1/municipalities/GM0715", {"colour": "blue"}, 422),
    ("/v1/municipalities/GM0715", {}, 422),
    ("/v1/municipalities/GM0715", {"aliases": ["x" * 101]}, 422),
    ("/v1/municipalities/GM9999", {"status": "active"}, 404),
    ("/v1/municipalities/Goes", {"status": "active"}, 422),
    ("/v1/area-codes/0113", {"mode": "direct"}, 422),  # shared code cannot be direct: plan refuses
    ("/v1/area-codes/0999", {"mode": "dtmf"}, 404),
    ("/v1/area-codes/0113", None, 422),
])
def test_bad_admin_payloads_are_refused_and_leave_the_plan(client, service, path, body, status):
    r = client.patch(path, json=body, headers=AUTH) if body is not None else \
        client.patch(path, content=b"{not json", headers=AUTH | {"Content-Type": "application/json"})
    assert r.status_code == status, r.text
    assert r.json()["detail"]
    assert service.plan is BASE_PLAN and service.store.audit_log() == []


def test_calamity_set_route_and_clear(client, service):
    body = {"target": "0113", "destination": "Local/operator@ivr14-lab", "message": "Storing",
            "expires": "2099-01-01T00:00:00Z"}
    r = client.put("/v1/calamities/0113", json=body, headers=AUTH)
    assert r.status_code == 200, r.text
    route = client.get("/v1/route", params={"number": "140113"}).json()
    assert route["verdict"] == "transfer" and route["destination"] == "Local/operator@ivr14-lab"
    assert route["message"] == "Storing"
    assert client.get("/v1/calamities").json()[0]["in_force"] is True
    # replaced, not added
    r = client.put("/v1/calamities/0113", json=body | {"message": "Nog steeds"}, headers=AUTH)
    assert r.json()["before"]["message"] == "Storing" and len(service.plan.calamities) == 1
    # a municipality as target
    r = client.put("/v1/calamities/GM0715", json=body | {"target": "GM0715"}, headers=AUTH)
    assert r.status_code == 200
    assert client.get("/v1/route", params={"number": "140115"}).json()["destination"] == "Local/operator@ivr14-lab"
    # refused ones
    assert client.put("/v1/calamities/0113", json=body | {"target": "0118"}, headers=AUTH).status_code == 422
    assert client.put("/v1/calamities/0113", json=body | {"expires": "2001-01-01T00:00:00Z"},
                      headers=AUTH).status_code == 422
    assert client.put("/v1/calamities/0999", json=body | {"target": "0999"}, headers=AUTH).status_code == 422
    # clear
    assert client.delete("/v1/calamities/0113", headers=AUTH).status_code == 200
    assert client.delete("/v1/calamities/0113", headers=AUTH).status_code == 404
    assert client.get("/v1/route", params={"number": "140113"}).json()["verdict"] == "ask"
    actions = [e["action"] for e in service.store.audit_log()]
    assert actions == ["calamity_clear", "calamity", "calamity", "calamity"]


def test_metrics_endpoint(client, service):
    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    snap = parse_exposition(r.text)
    assert snap[f'ivr_plan_info{{version="{BASE_PLAN.version}"}}'] == 1
    assert snap["ivr_ami_connected"] == 0


# --- one real process ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


AGI_ANSWERS = {
    "GET VARIABLE DIALSTATUS": "200 result=1 (ANSWER)",
    "GET VARIABLE ANSWEREDTIME_MS": "200 result=1 (4000)",
    "GET VARIABLE DIALEDTIME_MS": "200 result=1 (5500)",
}


async def fake_asterisk_call(port: int, call_id: str, extension: str) -> list[str]:
    """Play Asterisk's side of one FastAGI session: the municipality answers."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    headers = {"agi_network": "yes", "agi_request": f"agi://127.0.0.1:{port}/call", "agi_uniqueid": call_id,
               "agi_extension": extension, "agi_callerid": "0612345678"}
    writer.write("".join(f"{k}: {v}\n" for k, v in headers.items()).encode() + b"\n")
    await writer.drain()
    commands = []
    while True:
        line = await asyncio.wait_for(reader.readline(), 10)
        if not line:
            break
        command = line.decode().strip()
        commands.append(command)
        answer = AGI_ANSWERS.get(command)
        if answer is None:
            answer = "200 result=0" if command.startswith("GET VARIABLE") else "200 result=1"
        writer.write(answer.encode() + b"\n")
        await writer.drain()
    writer.close()
    return commands


def test_ivr_serve_runs_the_api_and_counts_a_real_agi_call(tmp_path):
    api_port, agi_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("IVR_")}
    env.update(IVR_STATE_DIR=str(tmp_path), IVR_DB_PATH=str(tmp_path / "calls.sqlite"), IVR_SPEECH_ENGINE="none",
               IVR_API_HOST="127.0.0.1", IVR_API_PORT=str(api_port), IVR_AGI_HOST="127.0.0.1",
               IVR_AGI_PORT=str(agi_port), IVR_ADMIN_TOKEN=TOKEN, IVR_CALLER_SALT="s")
    proc = subprocess.Popen([sys.executable, "-m", "ivr.cli", "serve"], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{api_port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, proc.stdout.read()
            assert time.monotonic() < deadline, "API did not come up"
            time.sleep(0.1)
        assert httpx.get(f"{base}/readyz").status_code == 503  # no AMI here
        commands = asyncio.run(fake_asterisk_call(agi_port, "e2e-1", "140115"))
        assert any(c.startswith("EXEC Dial Local/GM0715@ivr14-lab") for c in commands), commands
        call = httpx.get(f"{base}/v1/calls/e2e-1").json()
        assert call["outcome"] == "routed" and call["transfer_setup_ms"] is not None
        assert call["caller"] and "0612345678" not in json.dumps(call)
        # the change takes effect on the next call, without restart
        r = httpx.patch(f"{base}/v1/municipalities/GM0715", json={"destination": "Local/operator@ivr14-lab"},
                        headers=AUTH)
        assert r.status_code == 200
        commands = asyncio.run(fake_asterisk_call(agi_port, "e2e-2", "140115"))
        assert any(c.startswith("EXEC Dial Local/operator@ivr14-lab") for c in commands), commands
        # /metrics, /v1/report and the records agree exactly
        snap = parse_exposition(httpx.get(f"{base}/metrics").text)
        report = httpx.get(f"{base}/v1/report").json()
        store = CallStore(tmp_path / "calls.sqlite")
        kpis = compute_kpis(store.iter_query())
        store.close()
        assert reconcile(snap, kpis) == []
        assert report["overall"] == kpis.to_dict()["overall"]
        assert total(snap, "ivr_calls_total", area_code="0115", mode="direct", outcome="routed") == 2
        assert snap["ivr_transfer_setup_seconds_count"] == 2
        assert snap["ivr_transfer_setup_seconds_sum"] == pytest.approx(kpis.overall.latency["transfer_setup_seconds"].sum)
        assert snap["ivr_agi_sessions_in_progress"] == 0
    finally:
        out = stop_server(proc)
    assert proc.returncode == 0, out


def test_admin_changes_survive_a_restart(client, service, tmp_path):
    r = client.patch("/v1/area-codes/0113", json={"mode": "dtmf"}, headers=AUTH)
    assert r.status_code == 200, r.text
    r = client.put("/v1/calamities/0111", headers=AUTH,
                   json={"target": "0111", "destination": "Local/operator@ivr14-lab", "message": "storing"})
    assert r.status_code == 200, r.text
    restarted = Service(Settings(state_dir=tmp_path, db_path=tmp_path / "calls.sqlite", speech_engine="none"))
    try:
        assert restarted.plan.area_codes["0113"].mode.value == "dtmf"
        assert [c.target for c in restarted.plan.calamities] == ["0111"]
        assert restarted.plan.version == service.plan.version
    finally:
        restarted.store.close()


def test_learning_candidates_need_the_token_and_every_decision_is_audited(client, service):
    from test_learning import FixedFeatures, confirmed_call, collect
    service.learning.engine = FixedFeatures()
    service.learning.plan = None  # the stand-in has no spoken references: the check reads the kept answers only
    service.learning.settings = service.settings.model_copy(update={"learn_agreement": 0})
    first, = collect(service.learning, confirmed_call("aa11"), b"\x05one")
    second, = collect(service.learning, confirmed_call("bb22"), b"\x06two")
    assert client.get("/v1/learning").status_code == 401
    assert client.post(f"/v1/learning/{first}/approve", headers={"Authorization": "Bearer wrong"}).status_code == 403
    rows = client.get("/v1/learning", headers=AUTH).json()
    assert [r["id"] for r in rows] == [first, second] and "features" not in rows[0]
    r = client.post(f"/v1/learning/{first}/approve", headers={**AUTH, "X-Admin-User": "ops"})
    assert r.status_code == 200 and r.json()["status"] == "active" and len(service.learning.engine.learned) == 1
    assert client.post(f"/v1/learning/{first}/approve", headers=AUTH).status_code == 422  # already active
    assert client.post("/v1/learning/999/approve", headers=AUTH).status_code == 404
    assert client.post(f"/v1/learning/{second}/reject", headers=AUTH).json()["status"] == "rejected"
    assert client.delete("/v1/learning/callers/aa11", headers=AUTH).json() == {"deleted": 1}
    assert service.learning.engine.learned == []
    actions = [(e["action"], e["who"].split("@")[0]) for e in client.get("/v1/audit", headers=AUTH).json()]
    assert actions[:3] == [("learn_purge", "admin"), ("learn_reject", "admin"), ("learn_approve", "ops")]
