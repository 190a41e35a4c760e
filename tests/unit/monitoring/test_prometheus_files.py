"""Prometheus as code: alert rules, their promtool tests, per-run targets and config, docs."""

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from qnemu.launch.monitoring import (
    JOB_NAME,
    MONITORING_DIR,
    PROMETHEUS_SCRAPED_NAMES,
    exported_metric_names,
    metric_names_in,
    scrape_targets,
    write_prometheus_files,
)
from qnemu.launch.plan import make_plan
from qnemu.topology import parse_topology

PROMETHEUS_DIR = MONITORING_DIR / "prometheus"
RULE_FILES = sorted((PROMETHEUS_DIR / "rules").glob("*.yml"))
RULE_TEST_FILES = sorted((PROMETHEUS_DIR / "tests").glob("*.yml"))
METRICS_DOC = Path(__file__).resolve().parents[3] / "docs" / "metrics.md"
# Used by rules before any process exports them (docs/metrics.md, "Planned"): none now.
PLANNED_METRICS: set[str] = set()
REQUIRED_ALERTS = {
    "QnemuLinkDown",
    "QnemuLinkNoPairs",
    "QnemuQberHigh",
    "QnemuKeyPoolLow",
    "QnemuNodeDown",
    "QnemuMessageLatenessHigh",
    "QnemuRejectedMessages",
    "QnemuBrokerLatencyHigh",
}
TOPOLOGY = {
    "name": "files-lab",
    "time_scale": 1.0,
    "nodes": {"alice": {}, "bob": {}, "carol": {}},
    "links": [
        {"nodes": ["alice", "bob"], "model": "perfect"},
        {"nodes": ["bob", "carol"], "model": "perfect", "station": "midpoint"},
    ],
}


@pytest.fixture(scope="module")
def exported() -> set[str]:
    return exported_metric_names() | PROMETHEUS_SCRAPED_NAMES


def rules() -> list[dict]:
    return [
        rule
        for path in RULE_FILES
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
    ]


def promtool() -> str:
    """The promtool binary, or skip (fail under QNEMU_REQUIRE_SERVICES=1, as in CI)."""
    binary = shutil.which("promtool")
    if binary is None:
        reason = "promtool not installed (Debian package `prometheus`)"
        if os.environ.get("QNEMU_REQUIRE_SERVICES") == "1":
            pytest.fail(f"{reason}, but QNEMU_REQUIRE_SERVICES=1")
        pytest.skip(reason)
    return binary


def run(command: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=60)


# ---- rules ---------------------------------------------------------------------------


def test_rules_parse_and_every_alert_is_complete():
    assert RULE_FILES
    alerts = [rule for rule in rules() if "alert" in rule]
    names = [rule["alert"] for rule in alerts]
    assert len(set(names)) == len(names)
    assert set(names) >= REQUIRED_ALERTS
    for rule in alerts:
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]


def test_rule_expressions_use_only_exported_or_planned_metrics(exported: set[str]):
    used: set[str] = set()
    for rule in rules():
        names = metric_names_in(rule["expr"])
        assert names, f"{rule.get('alert')}: no metric in {rule['expr']!r}"
        unknown = names - exported - PLANNED_METRICS
        assert not unknown, f"{rule.get('alert')}: not exported: {sorted(unknown)}"
        used |= names
    assert used >= PLANNED_METRICS
    assert not PLANNED_METRICS & exported, "exported now: move it out of PLANNED_METRICS"


def test_every_alert_has_promtool_tests_firing_and_not_firing():
    assert RULE_TEST_FILES
    firing: set[str] = set()
    quiet: set[str] = set()
    for path in RULE_TEST_FILES:
        spec = yaml.safe_load(path.read_text())
        for rule_file in spec["rule_files"]:
            assert (path.parent / rule_file).resolve() in {p.resolve() for p in RULE_FILES}
        for group in spec["tests"]:
            for case in group["alert_rule_test"]:
                (firing if case["exp_alerts"] else quiet).add(case["alertname"])
    alerts = {rule["alert"] for rule in rules() if "alert" in rule}
    assert alerts <= firing, f"never tested firing: {sorted(alerts - firing)}"
    assert alerts <= quiet, f"never tested quiet: {sorted(alerts - quiet)}"


def test_promtool_check_rules():
    result = run([promtool(), "check", "rules", *map(str, RULE_FILES)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_test_rules():
    result = run(
        [promtool(), "test", "rules", *(p.name for p in RULE_TEST_FILES)],
        cwd=PROMETHEUS_DIR / "tests",
    )
    assert result.returncode == 0, result.stdout + result.stderr


# ---- per-run files ---------------------------------------------------------------------


@pytest.fixture
def plan():
    return make_plan(parse_topology(TOPOLOGY, origin="test"))


def test_targets_one_group_per_process_with_labels(plan):
    groups = scrape_targets(plan)
    assert len(groups) == len(plan.processes) == 6  # broker, 2 stations, 3 nodes
    by_name = {group["labels"]["name"]: group for group in groups}
    for process in plan.processes:
        group = by_name[process.name]
        assert group["targets"] == [f"{process.metrics_host}:{process.metrics_port}"]
        assert group["labels"]["network"] == "files-lab"
        assert group["labels"]["role"] == process.role
        assert "__metrics_path__" not in group["labels"]  # /metrics, Prometheus's default
    assert by_name["station-alice-bob"]["labels"]["link"] == "alice-bob"
    assert by_name["midpoint"]["labels"]["link"] == "bob-carol"
    assert "link" not in by_name["alice"]["labels"]


def test_write_prometheus_files(plan, tmp_path: Path):
    config_path = write_prometheus_files(tmp_path, plan)
    directory = tmp_path.resolve() / "prometheus"
    assert config_path == directory / "prometheus.yml"
    targets = json.loads((directory / "targets.json").read_text())
    assert targets == scrape_targets(plan)
    config = yaml.safe_load(config_path.read_text())
    interval = config["global"]["scrape_interval"]
    assert re.fullmatch(r"[1-5]s", interval)
    assert config["global"]["scrape_timeout"] == interval  # never longer than the interval
    (job,) = config["scrape_configs"]
    assert job["job_name"] == JOB_NAME
    assert job["file_sd_configs"][0]["files"] == [str(directory / "targets.json")]
    (rules_glob,) = config["rule_files"]
    assert sorted(Path(rules_glob).parent.glob(Path(rules_glob).name)) == RULE_FILES
    assert not list(directory.glob("*.tmp"))


def test_rewriting_keeps_the_files_whole(plan, tmp_path: Path):
    write_prometheus_files(tmp_path, plan, scrape_interval_s=5)
    write_prometheus_files(tmp_path, plan, scrape_interval_s=1)
    config = yaml.safe_load((tmp_path / "prometheus" / "prometheus.yml").read_text())
    assert config["global"]["scrape_interval"] == "1s"


def test_promtool_check_config(plan, tmp_path: Path):
    binary = promtool()
    config_path = write_prometheus_files(tmp_path, plan)
    result = run([binary, "check", "config", str(config_path)])
    assert result.returncode == 0, result.stdout + result.stderr


# ---- docs ------------------------------------------------------------------------------


def documented_names() -> set[str]:
    return set(re.findall(r"`([a-z_:]+)`", METRICS_DOC.read_text()))


def test_every_exported_metric_is_documented(exported: set[str]):
    documented = documented_names()
    missing = set()
    for name in exported - PROMETHEUS_SCRAPED_NAMES:
        if name.endswith("_created"):
            continue  # prometheus-client's creation timestamps, described once
        stem = re.sub(r"_(bucket|sum|count)$", "", name)
        if name not in documented and stem not in documented:
            missing.add(name)
    assert not missing, f"not in docs/metrics.md: {sorted(missing)}"


def test_planned_metrics_are_documented_as_planned():
    text = METRICS_DOC.read_text()
    planned = text[text.index("## Planned") :]
    for name in PLANNED_METRICS:
        assert f"`{name}`" in planned
