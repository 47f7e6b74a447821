"""The lab cluster's Prometheus, for real: DTMF calls through Kamailio onto both nodes, then the
Prometheus HTTP API - both controllers scraped with their node label, the calls counter summed over
the nodes equal to the calls placed (and per node to the records), and every query of the Grafana
dashboard accepted by Prometheus. Speech is off (the DTMF path is enough, and the controllers start
in seconds). Run under flock /tmp/ivr-asterisk.lock, like tests/test_cluster.py."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from cluster_lab import running_cluster
from ivr_lab.cluster import ASTERISK_JOB, CONTROLLER_JOB, Cluster
from ivr_lab.sipp import run_sipp
from test_cluster import SALT, dtmf_script, wait_records

pytestmark = pytest.mark.asterisk

DASHBOARD = Path(__file__).resolve().parent.parent / "docker/grafana/dashboards/ivr14.json"
# what Grafana puts in for the dashboard's variables: every node, every area code, a range and a rate window
GRAFANA_VARIABLES = {"$node": ".*", "$area_code": ".*", "$__rate_interval": "1m", "$__range": "10m"}


@pytest.fixture(scope="module")
def cluster(asterisk):
    with running_cluster(asterisk.root, {"IVR_CALLER_SALT": SALT, "IVR_SPEECH_ENGINE": "none"}) as c:
        assert c.prom_pid(), "the cluster's Prometheus did not start (apt-get install prometheus)"
        yield c


def wait_query(cluster: Cluster, expr: str, done, timeout_s: float = 20) -> list[dict]:
    """Query until ``done(result)`` or the timeout (scrapes run every second); the last result."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = cluster.prom_query(expr)
        if done(result) or time.monotonic() > deadline:
            return result
        time.sleep(0.5)


def by_node(result: list[dict]) -> dict[str, float]:
    return {r["metric"]["node"]: float(r["value"][1]) for r in result}


def test_prometheus_scrapes_both_controllers_and_asterisks_by_node(cluster):
    for job in (CONTROLLER_JOB, ASTERISK_JOB):
        up = wait_query(cluster, f'up{{job="{job}"}}', lambda r: by_node(r) == {"n1": 1.0, "n2": 1.0})
        assert by_node(up) == {"n1": 1.0, "n2": 1.0}, (job, up)
    # and the node label names the right process: each controller's own listening port
    up = cluster.prom_query(f'up{{job="{CONTROLLER_JOB}"}}')
    assert {r["metric"]["node"]: r["metric"]["instance"] for r in up} == \
        {n.name: f"127.0.0.1:{n.api_port}" for n in cluster.nodes}
    assert cluster.status()["prometheus"]["targets"] == {
        CONTROLLER_JOB: {"n1": "up", "n2": "up"}, ASTERISK_JOB: {"n1": "up", "n2": "up"}}


def test_calls_counter_summed_over_nodes_equals_the_calls_placed(cluster):
    placed = 6
    result = run_sipp(dtmf_script("0671"), calls=placed, rate=3, target=cluster.sip_target)
    assert result.ok and result.successful == placed, result.describe()
    done = wait_records(cluster, "0671", placed, placed)
    assert sorted(done) == list(range(1, placed + 1))
    total = wait_query(cluster, "sum(ivr_calls_total)", lambda r: r and float(r[0]["value"][1]) >= placed)
    assert float(total[0]["value"][1]) == placed
    # per node, as the records say (a record's call id starts with the node that took the call)
    per_node_records = {n.name: sum(1 for r in done.values() if r.call_id.startswith(n.name + "-")) for n in cluster.nodes}
    per_node = by_node(cluster.prom_query('sum by (node) (ivr_calls_total{outcome="routed"})'))
    assert per_node == {name: float(count) for name, count in per_node_records.items() if count}, per_node_records
    assert len(per_node) == 2  # round robin put calls on both nodes
    # the dashboard's per-node outcome panel splits them by node too
    outcome_expr = next(t["expr"] for p in json.loads(DASHBOARD.read_text())["panels"]
                        if p["title"] == "Route outcomes per node (range)" for t in p["targets"])
    outcomes = cluster.prom_query(substitute(outcome_expr))
    assert {r["metric"]["node"] for r in outcomes} == {"n1", "n2"}
    assert {r["metric"]["outcome"] for r in outcomes} == {"routed"}


def substitute(expr: str) -> str:
    for name, value in sorted(GRAFANA_VARIABLES.items(), key=lambda kv: -len(kv[0])):
        expr = expr.replace(name, value)
    assert "$" not in expr, expr
    return expr


def test_every_dashboard_query_is_accepted_by_prometheus(cluster):
    panels = json.loads(DASHBOARD.read_text())["panels"]
    exprs = [(p["title"], t["expr"]) for p in panels for t in p.get("targets", [])]
    refused = []
    for title, expr in exprs:
        try:
            cluster.prom_query(substitute(expr))
        except ValueError as exc:
            refused.append((title, str(exc)))
    assert refused == []
    assert len(exprs) > 30


def test_per_node_queries_of_the_docs_are_accepted_and_name_both_nodes(cluster):
    """The PromQL block under "Per node" in docs/metrics.md, run as written (after the calls above)."""
    docs = (DASHBOARD.parents[3] / "docs/metrics.md").read_text()
    section = docs.split("### Per node (the cluster)", 1)[1].split("\n## ", 1)[0]
    queries = [line.split("  #", 1)[0].strip() for line in section.splitlines() if line.startswith("    ")]
    assert len(queries) >= 5
    for expr in queries:
        result = cluster.prom_query(expr)
        if "by (node" in expr:
            assert {r["metric"]["node"] for r in result} == {"n1", "n2"}, (expr, result)
