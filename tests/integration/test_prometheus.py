"""A real Prometheus scrapes a running network through the per-run targets and config.

Checks through Prometheus's HTTP API that every process is up, that the key series move,
that the alert rules load, and that every dashboard query runs and the overview's
per-link fidelity join gives each link its own fidelity.
"""

import json
import os
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from qnemu.launch.monitoring import (
    MONITORING_DIR,
    find_prometheus,
    start_prometheus,
    stop_prometheus,
    wait_prometheus_ready,
    write_prometheus_files,
)
from qnemu.launch.plan import free_port
from qnemu.launch.rundir import process_alive

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

DEPOLARISE_F = 0.9
WAIT_S = 40.0
RATE_WINDOW = "10s"  # five scrapes at 2 s
# alice-bob: Werner pairs of F = 0.9, initiated by alice (the link's first node).
# bob-carol: perfect pairs, initiated by carol (the link's second node), so the fidelity
# join must find the link in both orders. Memories never decay: fidelities are exact.
TOPOLOGY = {
    "name": "prometheus-lab",
    "time_scale": 1.0,
    "seed": 11,
    "defaults": {"node": {"qubits": 8, "t1_s": None, "t2_s": None}},
    "nodes": {
        "alice": {},
        "bob": {},
        "carol": {"saes": ["carol_app"]},
        "dave": {"saes": ["dave_app"]},
    },
    "links": [
        {
            "nodes": ["alice", "bob"],
            "model": "depolarise",
            "fidelity": DEPOLARISE_F,
            "prob_success": 0.5,
            "t_cycle_s": 1e-4,
        },
        {"nodes": ["bob", "carol"], "model": "perfect", "t_cycle_s": 1e-4},
        # QKD (both ends declare SAEs): BBM92 fast enough for key blocks within seconds.
        {"nodes": ["carol", "dave"], "model": "perfect", "t_cycle_s": 2e-5},
    ],
    "workloads": [
        {"src": "alice", "dst": "bob", "type": "measure", "basis": "Z", "number": 0},
        {"src": "carol", "dst": "bob", "type": "measure", "basis": "Z", "number": 0},
    ],
}
LINKS = {"alice-bob": DEPOLARISE_F, "bob-carol": 1.0, "carol-dave": 1.0}


@pytest.fixture(scope="module")
def prometheus(request: pytest.FixtureRequest) -> str:
    """URL of a Prometheus scraping the module's network; stopped by pid afterwards."""
    binary = find_prometheus()
    if binary is None:
        reason = "prometheus not installed (Debian package `prometheus`)"
        if os.environ.get("QNEMU_REQUIRE_SERVICES") == "1":
            pytest.fail(f"{reason}, but QNEMU_REQUIRE_SERVICES=1")
        pytest.skip(reason)
    network = request.getfixturevalue("network")  # only now: no network to skip
    write_prometheus_files(network.run_dir, network.plan)
    port = free_port()
    process = start_prometheus(network.run_dir, port, binary=binary)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_prometheus_ready(url, timeout_s=30.0, process=process)
        yield url
    finally:
        stop_prometheus(process)
        log = network.run_dir / "logs" / "prometheus.log"
        assert process.returncode is not None, f"prometheus still running; see {log}"


def api(url: str, path: str, **params) -> dict:
    query = f"?{urllib.parse.urlencode(params)}" if params else ""
    with urllib.request.urlopen(f"{url}/api/v1/{path}{query}", timeout=5.0) as response:
        body = json.load(response)
    assert body["status"] == "success", body
    return body["data"]


def query(url: str, expr: str) -> dict[str, float]:
    """Instant query; results keyed by their labels, rendered `k=v,...`."""
    data = api(url, "query", query=expr)
    assert data["resultType"] == "vector", data
    return {
        ",".join(f"{k}={v}" for k, v in sorted(item["metric"].items())): float(item["value"][1])
        for item in data["result"]
    }


def eventually(check, timeout_s: float = WAIT_S, interval_s: float = 0.5):
    """Retry `check` until it stops raising AssertionError; the last failure otherwise."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return check()
        except AssertionError:
            if time.monotonic() > deadline:
                raise
        time.sleep(interval_s)


def test_every_process_is_a_healthy_target(prometheus, network):
    expected = {p.name: p.role for p in network.plan.processes}

    def all_up():
        targets = api(prometheus, "targets", state="active")["activeTargets"]
        health = {t["labels"]["name"]: t["health"] for t in targets}
        assert health == dict.fromkeys(expected, "up"), health
        return targets

    targets = eventually(all_up)
    for target in targets:
        labels = target["labels"]
        assert labels["job"] == "qnemu" and labels["network"] == "prometheus-lab"
        assert labels["role"] == expected[labels["name"]]
    stations = {t["labels"]["name"]: t["labels"].get("link") for t in targets}
    assert stations["station-alice-bob"] == "alice-bob"
    ups = query(prometheus, 'up{job="qnemu", network="prometheus-lab"}')
    assert len(ups) == len(expected) and set(ups.values()) == {1.0}


def test_pair_rate_and_deliveries_move(prometheus):
    def moving():
        rates = query(
            prometheus,
            f"sum by (link) (rate(qnemu_link_pairs_generated_total[{RATE_WINDOW}]))",
        )
        assert set(rates) == {f"link={link}" for link in LINKS}, rates
        assert all(rate > 0 for rate in rates.values()), rates
        delivered = query(
            prometheus, f"sum by (name) (increase(qnemu_pairs_delivered_total[{RATE_WINDOW}]))"
        )
        assert delivered.get("name=alice", 0) > 0 and delivered.get("name=carol", 0) > 0
        attempts = query(
            prometheus, f"sum by (link) (rate(qnemu_link_attempts_total[{RATE_WINDOW}]))"
        )
        assert attempts["link=alice-bob"] > rates["link=alice-bob"]  # p = 0.5: twice as many

    eventually(moving)


def test_alert_rules_load_and_no_link_or_process_alert_fires(prometheus):
    def evaluated():
        groups = api(prometheus, "rules")["groups"]
        rules = [rule for group in groups for rule in group["rules"]]
        assert {"QnemuLinkDown", "QnemuNodeDown", "QnemuQberHigh"} <= {r["name"] for r in rules}
        assert all(rule["health"] == "ok" for rule in rules), [
            (r["name"], r["health"], r.get("lastError")) for r in rules
        ]
        return rules

    eventually(evaluated)
    alerts = api(prometheus, "alerts")["alerts"]
    names = {alert["labels"]["alertname"] for alert in alerts}
    assert not names & {"QnemuLinkDown", "QnemuNodeDown", "QnemuBrokerDown"}, alerts


def dashboard_queries() -> list[tuple[str, str]]:
    found = []
    for path in sorted((MONITORING_DIR / "grafana" / "dashboards").glob("*.json")):
        dashboard = json.loads(Path(path).read_text())
        for panel in dashboard["panels"]:
            for target in panel.get("targets", []):
                found.append((f"{path.name}: {panel['title']}", target["expr"]))
    return found


def grafana_to_promql(expr: str) -> str:
    return (
        expr.replace("$__rate_interval", RATE_WINDOW)
        .replace("$network", "prometheus-lab")
        .replace("$link", "alice-bob")
    )


def test_every_dashboard_query_runs(prometheus):
    queries = dashboard_queries()
    assert len(queries) > 20

    def all_run():
        empty = []
        for where, expr in queries:
            if not api(prometheus, "query", query=grafana_to_promql(expr))["result"]:
                empty.append(where)
        # Only error series may be empty, and request results: the workloads never end;
        # and key delivery and relay, which need an SAE to ask for keys.
        allowed = ("Rejected", "refusals", "request results", "discarded", "KME", "Key requests",
                   "relayed")  # fmt: skip
        assert all(any(word in where for word in allowed) for where in empty), empty

    eventually(all_run)


def test_overview_gives_each_link_its_fidelity(prometheus):
    (expr,) = [
        expr
        for where, expr in dashboard_queries()
        if "Mean fidelity" in where and "qnemu_pair_fidelity_sum" in expr
    ]
    overview_expr = expr.replace('link=~"$link"', 'link=~".+"')

    def fidelities():
        found = query(prometheus, grafana_to_promql(overview_expr))
        assert set(found) == {f"link={link}" for link in LINKS}, found
        return found

    for label, fidelity in eventually(fidelities).items():
        assert fidelity == pytest.approx(LINKS[label.removeprefix("link=")], abs=1e-9)


def test_up_with_monitoring_runs_a_prometheus_that_down_stops(tmp_path):
    """`qnemu up --detach --monitoring` lists Prometheus in status.json; `down` stops it."""
    if find_prometheus() is None:
        reason = "prometheus not installed (Debian package `prometheus`)"
        if os.environ.get("QNEMU_REQUIRE_SERVICES") == "1":
            pytest.fail(f"{reason}, but QNEMU_REQUIRE_SERVICES=1")
        pytest.skip(reason)
    run_dir = tmp_path / "run"
    qnemu = [sys.executable, "-m", "qnemu"]
    up = subprocess.run(
        [*qnemu, "up", "perfect-pair", "--detach", "--monitoring", "--run-dir", str(run_dir)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    try:
        assert up.returncode == 0, up.stderr
        url = next(word for word in up.stderr.split() if word.startswith("http://127.0.0.1:"))
        status = json.loads((run_dir / "status.json").read_text())
        (monitor,) = [p for p in status["processes"] if p["name"] == "prometheus"]

        def all_targets_up() -> None:
            targets = api(url, "targets")["activeTargets"]
            assert len(targets) == 4 and all(t["health"] == "up" for t in targets), targets

        eventually(all_targets_up)
    finally:
        subprocess.run([*qnemu, "down", "--run-dir", str(run_dir)], timeout=60, cwd=tmp_path)
    time.sleep(0.5)
    assert not process_alive(monitor["pid"], run_dir)
