"""The monitoring and cluster configs, checked by the real tools without starting anything: promtool on
every Prometheus config (docker/ and the lab cluster's rendered one), ``kamailio -c`` on the Kamailio
config as the lab and the compose entrypoint render it, and the compose file's structure (PyYAML).
The compose stack itself is never run here (no Docker on the test machines)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from ivr_lab.cluster import ASTERISK_JOB, CONTROLLER_JOB, NODES, Cluster

REPO = Path(__file__).resolve().parent.parent
DOCKER = REPO / "docker"
DASHBOARD = DOCKER / "grafana/dashboards/ivr14.json"
CLUSTER_SERVICES = {"kamailio", "asterisk-n2", "controller-n2", "postgres"}
# a metric selector in a PromQL expression: a metric name, optionally with its {label matchers}
SELECTOR = re.compile(r"\b((?:ivr|asterisk)_[a-z_]+|up)\b(\{[^}]*\})?(?!\s*\()")


def tool(name: str) -> str:
    path = shutil.which(name)
    assert path, f"{name} is not installed (scripts/test.sh installs prometheus and kamailio)"
    return path


def promtool_check(path: Path) -> None:
    out = subprocess.run([tool("promtool"), "check", "config", str(path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def kamailio_check(cfg: Path) -> None:
    out = subprocess.run([tool("kamailio"), "-c", "-f", str(cfg)], capture_output=True, text=True)
    assert out.returncode == 0 and "config file ok" in out.stdout + out.stderr, out.stdout + out.stderr


def scrape_targets(config: dict) -> dict[tuple[str, str], str]:
    """``{(job, node): target}`` of a Prometheus config."""
    found = {}
    for job in config["scrape_configs"]:
        for group in job["static_configs"]:
            for target in group["targets"]:
                found[(job["job_name"], group.get("labels", {}).get("node", ""))] = target
    return found


def dashboard_exprs() -> list[tuple[str, str]]:
    """(panel title, PromQL) of every panel query of the Grafana dashboard."""
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [(p["title"], t["expr"]) for p in panels for t in p.get("targets", [])]


# -- Prometheus -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["prometheus.yml", "prometheus-cluster.yml"])
def test_compose_prometheus_configs_pass_promtool_and_label_every_target_with_its_node(name):
    path = DOCKER / name
    promtool_check(path)
    targets = scrape_targets(yaml.safe_load(path.read_text()))
    nodes = {"n1"} if name == "prometheus.yml" else {"n1", "n2"}
    assert set(targets) == {(job, n) for job in (CONTROLLER_JOB, ASTERISK_JOB) for n in nodes}, targets


def test_lab_cluster_prometheus_config_passes_promtool_and_scrapes_every_node(tmp_path):
    cluster = Cluster(dir=tmp_path)
    cluster.run.mkdir()
    path = cluster.render_prometheus()
    promtool_check(path)
    targets = scrape_targets(yaml.safe_load(path.read_text()))
    assert targets == {**{(CONTROLLER_JOB, n.name): f"127.0.0.1:{n.api_port}" for n in NODES},
                       **{(ASTERISK_JOB, n.name): f"127.0.0.1:{n.http_port}" for n in NODES}}


# -- the Grafana dashboard --------------------------------------------------------------------------


def test_every_dashboard_query_selects_the_node_variable():
    exprs = dashboard_exprs()
    assert len(exprs) > 30
    unfiltered = [(title, m.group(0)) for title, expr in exprs for m in SELECTOR.finditer(expr)
                  if 'node=~"$node"' not in (m.group(2) or "")]
    assert unfiltered == []


def test_dashboard_node_variable_and_per_node_row():
    board = json.loads(DASHBOARD.read_text())
    node = next(v for v in board["templating"]["list"] if v["name"] == "node")
    assert node["multi"] and node["includeAll"] and node["allValue"] == ".*"
    assert node["query"]["query"].startswith("label_values(") and node["query"]["query"].endswith(", node)")
    panels = board["panels"]
    row = next(i for i, p in enumerate(panels) if p["type"] == "row" and p["title"] == "Per node")
    following = panels[row + 1:]
    per_node = following[:next((i for i, p in enumerate(following) if p["type"] == "row"), len(following))]
    exprs = " ".join(t["expr"] for p in per_node for t in p["targets"])
    for metric in ("ivr_calls_total", "ivr_records_pending", "ivr_record_save_retries_total", f'up{{job="{CONTROLLER_JOB}"'):
        assert metric in exprs, metric
    # every panel of the row splits by node; the summed panels elsewhere do not
    assert all("by (node" in t["expr"] or t["expr"].startswith("up{") for p in per_node for t in p["targets"])
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))


# -- Kamailio ---------------------------------------------------------------------------------------


def test_lab_kamailio_config_passes_kamailio_check(tmp_path):
    cluster = Cluster(dir=tmp_path)
    cluster.run.mkdir()
    kamailio_check(cluster.render_kamailio())


def test_compose_kamailio_entrypoint_renders_a_config_kamailio_accepts(tmp_path):
    """The container's entrypoint, run here on the template with the compose service's settings; it
    checks the config itself and then runs the command given instead of Kamailio."""
    env = {**os.environ, "IVR_KAM_TEMPLATE": str(REPO / "dialplan/kamailio/kamailio.cfg"), "IVR_KAM_RUN": str(tmp_path),
           "IVR_KAM_LISTEN": "172.28.14.10:5090", "IVR_KAM_NODES": "asterisk:5060 asterisk-n2:5060"}
    out = subprocess.run(["bash", str(DOCKER / "kamailio-entrypoint.sh"), "true"], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    cfg = (tmp_path / "kamailio.cfg").read_text()
    assert "@" + "LISTEN@" not in cfg and "@" + "RUN@" not in cfg
    assert "listen=udp:172.28.14.10:5090" in cfg and f'"unix:{tmp_path}/kamailio_ctl"' in cfg
    kamailio_check(tmp_path / "kamailio.cfg")
    # kamailio -c does not read the node list: its lines are checked here, in the lab's format
    lines = [line for line in (tmp_path / "dispatcher.list").read_text().splitlines() if not line.startswith("#")]
    assert lines == ["1 sip:asterisk:5060 0 0 duid=n1", "1 sip:asterisk-n2:5060 0 0 duid=n2"]


# -- compose ----------------------------------------------------------------------------------------


def compose() -> dict:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())


def dockerfile_sources(dockerfile: Path) -> list[str]:
    """The build-context paths a Dockerfile COPYs (not those from another stage)."""
    sources = []
    for line in dockerfile.read_text().splitlines():
        parts = line.split()
        if parts[:1] == ["COPY"] and not any(p.startswith("--from=") for p in parts):
            sources += [p for p in parts[1:-1] if not p.startswith("--")]
    return sources


def test_compose_cluster_profile_has_its_services_and_every_file_they_use():
    services = compose()["services"]
    assert {name for name, s in services.items() if "cluster" in s.get("profiles", [])} == CLUSTER_SERVICES
    for name, service in services.items():
        if "build" in service:
            dockerfile = DOCKER.parent / service["build"]["dockerfile"]
            assert dockerfile.is_file(), (name, dockerfile)
            for source in dockerfile_sources(dockerfile):
                assert (REPO / source).exists(), (name, dockerfile.name, source)
        for volume in service.get("volumes", []):
            host = volume.split(":")[0]
            if host.startswith("."):
                assert (DOCKER / host).exists(), (name, volume)
        for other in service.get("depends_on", []):
            assert other in services, (name, other)
        mode = service.get("network_mode", "")
        if mode.startswith("service:"):
            assert mode.removeprefix("service:") in services, (name, mode)
    assert os.access(DOCKER / "kamailio-entrypoint.sh", os.X_OK)


def test_compose_cluster_nodes_controllers_and_kamailio_fit_together():
    services = compose()["services"]
    env_file = dict(line.split("=", 1) for line in (DOCKER / "cluster.env").read_text().splitlines()
                    if line and not line.startswith("#"))
    assert env_file["COMPOSE_PROFILES"] == "cluster" and env_file["IVR_NODE_NAME"] == "n1"
    assert (DOCKER / env_file["IVR_PROMETHEUS_CONFIG"]).is_file()
    # both controllers write to the profile's PostgreSQL: n1's through cluster.env, n2's by default
    postgres = services["postgres"]["environment"]
    url = f"postgresql://{postgres['POSTGRES_USER']}:ivr14-lab@postgres:5432/{postgres['POSTGRES_DB']}"
    assert env_file["IVR_DB_URL"] == url
    assert services["controller"]["environment"]["IVR_DB_URL"] == "${IVR_DB_URL:-sqlite:///var/lib/ivr14-records/calls.sqlite}"
    assert services["controller-n2"]["environment"]["IVR_DB_URL"] == "${IVR_DB_URL:-" + url + "}"
    assert services["controller-n2"]["network_mode"] == "service:asterisk-n2"
    # Kamailio's fixed address is in the network and identified as a caller by both nodes
    kamailio = services["kamailio"]
    address = kamailio["networks"]["default"]["ipv4_address"]
    subnet = compose()["networks"]["default"]["ipam"]["config"][0]["subnet"]
    assert address.rsplit(".", 1)[0] == subnet.rsplit(".", 1)[0]
    assert kamailio["environment"]["IVR_KAM_LISTEN"].startswith(address + ":")
    assert all(services[n]["environment"]["IVR_SIP_MATCH"] == address for n in ("asterisk", "asterisk-n2"))
    assert services["asterisk-n2"]["environment"]["IVR_SYSTEM_NAME"] == "n2"
    nodes = kamailio["environment"]["IVR_KAM_NODES"].split()
    assert [n.split(":")[0] for n in nodes] == ["asterisk", "asterisk-n2"]
    # n2's metrics must be reachable from the Prometheus in n1's namespace
    assert services["asterisk-n2"]["environment"]["IVR_HTTP_BIND"] == "0.0.0.0"
    assert services["controller-n2"]["environment"]["IVR_API_HOST"] == "0.0.0.0"


def test_asterisk_entrypoint_edits_find_their_lines_in_the_dialplan():
    """The entrypoint's sed edits for a cluster node match only exact lines: they must still be there."""
    dialplan = REPO / "dialplan"
    assert re.search(r"^\[options\]$", (dialplan / "asterisk.conf").read_text(), re.M)
    identify = (dialplan / "pjsip.conf").read_text().split("[sipp-identify]\n", 1)[1].split("\n\n", 1)[0]
    assert re.search(r"^match = 127\.0\.0\.1$", identify, re.M)
    assert re.search(r"^bindaddr = 127\.0\.0\.1$", (dialplan / "http.conf").read_text(), re.M)
    assert re.search(r"^bind = 127\.0\.0\.1:5060$", (dialplan / "pjsip.conf").read_text(), re.M)


def test_lab_cluster_without_prometheus_warns_and_goes_on(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))  # no prometheus binary on it
    cluster = Cluster(dir=tmp_path)
    cluster.run.mkdir()
    assert cluster.start_prometheus() is False
    assert "prometheus not installed" in capsys.readouterr().err
    assert cluster.prom_targets() == "not running"
