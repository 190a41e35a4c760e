"""Grafana dashboards as code: they load as provisioning expects, ask only for exported series."""

import json
import re
from pathlib import Path

import pytest
import yaml

from qnemu.launch.monitoring import (
    MONITORING_DIR,
    PROMETHEUS_SCRAPED_NAMES,
    exported_metric_names,
    metric_names_in,
)

GRAFANA_DIR = MONITORING_DIR / "grafana"
DASHBOARD_FILES = sorted((GRAFANA_DIR / "dashboards").glob("*.json"))
REQUIRED_UIDS = {"qnemu-overview", "qnemu-link", "qnemu-health", "qnemu-qkd"}
LABEL_VALUES = re.compile(r"^\s*label_values\((?:(?P<expr>.*),)?\s*(?P<label>\w+)\s*\)\s*$")
VARIABLE = re.compile(r"\$\{?(\w+)")
GRAFANA_BUILTINS = {"__rate_interval", "__interval", "__range", "__range_s"}


@pytest.fixture(scope="module")
def exported() -> set[str]:
    return exported_metric_names() | PROMETHEUS_SCRAPED_NAMES


def load(path: Path) -> dict:
    return json.loads(path.read_text())


def all_panels(dashboard: dict) -> list[dict]:
    panels = []
    for panel in dashboard["panels"]:
        panels.append(panel)
        panels.extend(panel.get("panels", []))  # collapsed rows keep theirs inside
    return panels


def expressions(dashboard: dict) -> list[tuple[str, str]]:
    """(where, PromQL) for every panel target and every query variable."""
    found = [
        (f"panel {panel['title']!r} {target['refId']}", target["expr"])
        for panel in all_panels(dashboard)
        for target in panel.get("targets", [])
    ]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] != "query":
            continue
        query = variable["query"]
        query = query["query"] if isinstance(query, dict) else query
        match = LABEL_VALUES.match(query)
        assert match, f"variable {variable['name']}: only label_values() queries are used"
        if match["expr"]:
            found.append((f"variable {variable['name']}", match["expr"]))
    return found


def test_dashboards_exist_with_unique_uids_and_titles():
    dashboards = [load(path) for path in DASHBOARD_FILES]
    uids = [d["uid"] for d in dashboards]
    titles = [d["title"] for d in dashboards]
    assert set(uids) >= REQUIRED_UIDS
    assert len(set(uids)) == len(uids) and len(set(titles)) == len(titles)


@pytest.mark.parametrize("path", DASHBOARD_FILES, ids=lambda p: p.name)
def test_dashboard_has_what_grafana_provisioning_expects(path: Path):
    dashboard = load(path)
    for key in ("uid", "title", "panels", "schemaVersion", "templating", "time"):
        assert key in dashboard, f"{path.name}: no {key!r}"
    assert isinstance(dashboard["schemaVersion"], int) and dashboard["schemaVersion"] >= 36
    assert len(dashboard["uid"]) <= 40  # Grafana's limit
    assert "id" not in dashboard or dashboard["id"] is None  # provisioning assigns ids
    panels = all_panels(dashboard)
    ids = [panel["id"] for panel in panels]
    assert len(set(ids)) == len(ids), f"{path.name}: duplicate panel ids"
    for panel in panels:
        position = panel["gridPos"]
        assert position["x"] >= 0 and position["x"] + position["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        targets = panel["targets"]
        assert targets, f"{path.name}: panel {panel['title']!r} has no targets"
        assert len({t["refId"] for t in targets}) == len(targets)
        for target in targets:
            assert target["expr"].strip(), f"{panel['title']!r} {target['refId']}: empty expr"
            assert target["datasource"] == panel["datasource"]


@pytest.mark.parametrize("path", DASHBOARD_FILES, ids=lambda p: p.name)
def test_templating_has_datasource_and_network_and_defines_every_variable_used(path: Path):
    dashboard = load(path)
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert variables["network"]["type"] == "query"
    used = {name for _, expr in expressions(dashboard) for name in VARIABLE.findall(expr)}
    assert used - GRAFANA_BUILTINS <= set(variables), f"{path.name}: undefined variables"
    assert "network" in used  # every dashboard is about one network


@pytest.mark.parametrize("path", DASHBOARD_FILES, ids=lambda p: p.name)
def test_every_expression_uses_only_exported_metrics(path: Path, exported: set[str]):
    dashboard = load(path)
    checked = 0
    for where, expr in expressions(dashboard):
        names = metric_names_in(expr)
        assert names, f"{path.name} {where}: no metric found in {expr!r}"
        unknown = names - exported
        assert not unknown, f"{path.name} {where}: not exported: {sorted(unknown)}"
        checked += 1
    assert checked >= 5


def test_dashboards_cover_the_issue_panels():
    exprs = {
        load(path)["uid"]: " ".join(e for _, e in expressions(load(path)))
        for path in DASHBOARD_FILES
    }
    overview = ["up", "qnemu_link_pairs_generated_total", "qnemu_pair_fidelity_sum"]
    link = [
        "qnemu_link_attempts_total",
        "qnemu_link_success_probability",
        "qnemu_pair_fidelity_bucket",
        "qnemu_memory_qubits_in_use",
    ]
    health = [
        "qnemu_broker_operations_total",
        "qnemu_broker_request_seconds_bucket",
        "qnemu_message_lateness_seconds_bucket",
        "qnemu_wire_rejected_messages_total",
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
    ]
    for uid, wanted in (
        ("qnemu-overview", overview),
        ("qnemu-link", link),
        ("qnemu-health", health),
    ):
        assert set(wanted) <= metric_names_in(exprs[uid]), uid


def test_metric_name_parser_finds_names_and_ignores_labels_functions_and_variables():
    expr = (
        "histogram_quantile(0.99, sum by (le, link) (label_join(rate(qnemu_pair_fidelity_bucket{"
        'network="$network", name=~"a|b"}[$__rate_interval]), "link", "-", "name", "peer")))'
        ' and on (link) qnemu_link_active_requests{link="$link"} offset 5m > 1e-3'
        " or vector(0) unless ignoring (role) up"
    )
    assert metric_names_in(expr) == {
        "qnemu_pair_fidelity_bucket",
        "qnemu_link_active_requests",
        "up",
    }
    assert metric_names_in("sum(rate(qnemu_pairs_deliverd_total[1m])) by (peer)") == {
        "qnemu_pairs_deliverd_total"  # a typo is a name the exported set will not contain
    }


def test_exported_names_include_suffixes_of_counters_and_histograms(exported: set[str]):
    assert {"qnemu_messages_total", "qnemu_link_attempts_total", "qnemu_process_info"} <= exported
    for stem in ("qnemu_pair_fidelity", "qnemu_broker_request_seconds"):
        assert {f"{stem}_bucket", f"{stem}_sum", f"{stem}_count"} <= exported
    assert "qnemu_messages" not in exported  # a counter is only exported with _total
    assert {"process_cpu_seconds_total", "process_resident_memory_bytes"} <= exported


def test_datasource_provisioning():
    files = sorted((GRAFANA_DIR / "provisioning" / "datasources").glob("*.yml"))
    assert files
    config = yaml.safe_load(files[0].read_text())
    assert config["apiVersion"] == 1
    (source,) = config["datasources"]
    assert source["type"] == "prometheus" and source["access"] == "proxy"
    assert source["url"] == "http://localhost:9090"
    assert source["uid"] and source["name"]


def test_dashboard_provisioning_reads_a_folder_of_json():
    files = sorted((GRAFANA_DIR / "provisioning" / "dashboards").glob("*.yml"))
    assert files
    config = yaml.safe_load(files[0].read_text())
    assert config["apiVersion"] == 1
    (provider,) = config["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"].startswith("/")
