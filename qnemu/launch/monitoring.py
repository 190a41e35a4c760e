"""Prometheus for a run: scrape targets and config written per run, and a local server.

Each run gets `RUN_DIR/prometheus/targets.json` (file-based service discovery: one
target group per process, labelled network, name, role, and link for stations) and a
ready `RUN_DIR/prometheus/prometheus.yml` rendered from
`monitoring/prometheus/prometheus.yml.template`, with the alert rules of
`monitoring/prometheus/rules/`. `start_prometheus` runs a server on that config with
its storage inside the run directory. The metric-name helpers let tests check that
dashboards and rules only ask for series the emulator exports.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from string import Template

from qnemu.launch.plan import RunPlan

__all__ = [
    "JOB_NAME",
    "MONITORING_DIR",
    "PROMETHEUS_SCRAPED_NAMES",
    "SCRAPE_INTERVAL_S",
    "exported_metric_names",
    "find_prometheus",
    "metric_names_in",
    "scrape_targets",
    "start_logged",
    "start_prometheus",
    "stop_prometheus",
    "wait_http_ready",
    "wait_prometheus_ready",
    "write_prometheus_files",
]

JOB_NAME = "qnemu"
SCRAPE_INTERVAL_S = 2
PROMETHEUS_DIR = "prometheus"
TARGETS_FILE = "targets.json"
CONFIG_FILE = "prometheus.yml"
STOP_GRACE_S = 5.0
# The repository's monitoring/ folder (the package is installed editable); overridable
# for installs that keep it elsewhere.
MONITORING_DIR = Path(
    os.environ.get("QNEMU_MONITORING_DIR", Path(__file__).resolve().parents[2] / "monitoring")
)
# Series Prometheus makes itself for every target; dashboards and rules may use them.
PROMETHEUS_SCRAPED_NAMES = frozenset(
    {"up", "scrape_duration_seconds", "scrape_samples_scraped", "scrape_series_added"}
)


def scrape_targets(plan: RunPlan) -> list[dict]:
    """File-SD target groups: one per process, labelled with what it is in the network."""
    link_of_station = {
        station: f"{link.nodes[0]}-{link.nodes[1]}"
        for station, link in plan.topology_model().stations()
    }
    groups = []
    for process in plan.processes:
        labels = {"network": plan.network, "name": process.name, "role": process.role}
        if process.name in link_of_station:
            labels["link"] = link_of_station[process.name]
        groups.append(
            {"targets": [f"{process.metrics_host}:{process.metrics_port}"], "labels": labels}
        )
    return groups


def write_prometheus_files(
    run_dir: Path,
    plan: RunPlan,
    *,
    scrape_interval_s: int = SCRAPE_INTERVAL_S,
    monitoring_dir: Path | None = None,
) -> Path:
    """Write RUN_DIR/prometheus/{targets.json,prometheus.yml}; returns the config's path."""
    monitoring_dir = Path(monitoring_dir or MONITORING_DIR)
    directory = Path(run_dir).resolve() / PROMETHEUS_DIR
    directory.mkdir(parents=True, exist_ok=True)
    targets = directory / TARGETS_FILE
    _write_atomically(targets, json.dumps(scrape_targets(plan), indent=2))
    template = monitoring_dir / "prometheus" / "prometheus.yml.template"
    # json.dumps quotes strings the way YAML reads them, whatever the path holds.
    config = Template(template.read_text()).substitute(
        scrape_interval=json.dumps(f"{scrape_interval_s}s"),
        job_name=json.dumps(JOB_NAME),
        targets_file=json.dumps(str(targets)),
        rules_glob=json.dumps(str((monitoring_dir / "prometheus" / "rules").resolve() / "*.yml")),
    )
    path = directory / CONFIG_FILE
    _write_atomically(path, config)
    return path


def _write_atomically(path: Path, text: str) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text)
    temporary.replace(path)  # Prometheus re-reads targets.json on change: never half a file


def find_prometheus() -> str | None:
    """Path of the `prometheus` server binary (Debian package `prometheus`), if installed."""
    return shutil.which("prometheus")


def start_prometheus(
    run_dir: Path, port: int, *, binary: str | None = None, host: str = "127.0.0.1"
) -> subprocess.Popen:
    """Start a Prometheus on the run's config, storing its data inside the run directory."""
    binary = binary or find_prometheus()
    if binary is None:
        raise FileNotFoundError("prometheus is not installed (Debian: apt-get install prometheus)")
    directory = Path(run_dir).resolve() / PROMETHEUS_DIR
    config = directory / CONFIG_FILE
    if not config.is_file():
        raise FileNotFoundError(f"{config} missing: call write_prometheus_files first")
    (directory / "data").mkdir(exist_ok=True)
    command = [
        binary,
        f"--config.file={config}",
        f"--storage.tsdb.path={directory / 'data'}",
        f"--web.listen-address={host}:{port}",
        "--storage.tsdb.retention.time=1d",
    ]
    return start_logged(command, run_dir, "prometheus")


def wait_prometheus_ready(
    url: str, timeout_s: float = 30.0, process: subprocess.Popen | None = None
) -> None:
    """Wait until Prometheus at `url` (http://host:port) answers /-/ready."""
    wait_http_ready("prometheus", f"{url}/-/ready", lambda body: True, timeout_s, process)


def wait_http_ready(
    name: str,
    url: str,
    ready: Callable[[bytes], bool],
    timeout_s: float,
    process: subprocess.Popen | None = None,
) -> None:
    """Poll `url` until it answers 200 with a body `ready` accepts; fail fast if the
    server's `process` exits meanwhile."""
    deadline = time.monotonic() + timeout_s
    while True:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{name} exited with code {process.returncode} while starting")
        try:
            with urllib.request.urlopen(url, timeout=1.0) as response:
                if response.status == 200 and ready(response.read()):
                    return
        except (OSError, ValueError):
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{name} at {url} not ready after {timeout_s} s")
        time.sleep(0.1)


def start_logged(command: list[str], run_dir: Path, log_name: str) -> subprocess.Popen:
    """Start `command` in a session of its own (Ctrl-C reaches the launcher only, which
    stops it), its output appended to RUN_DIR/logs/<log_name>.log."""
    logs = Path(run_dir).resolve() / "logs"
    logs.mkdir(exist_ok=True)
    with open(logs / f"{log_name}.log", "ab") as log:
        return subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


def stop_prometheus(process: subprocess.Popen, grace_s: float = STOP_GRACE_S) -> int:
    """SIGTERM (Prometheus flushes its head block), SIGKILL after the grace; the exit code."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            return process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            process.kill()
    return process.wait(timeout=5)


# ---- metric names, for checking dashboards and rules ---------------------------------

_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
    "info": ("_info",),
}
_PROBE_TOPOLOGY = {
    "name": "metric-names",
    "time_scale": 1.0,
    "nodes": {"alice": {}, "bob": {}},
    "links": [{"nodes": ["alice", "bob"], "model": "perfect"}],
}


def exported_metric_names() -> set[str]:
    """Every series name a broker, station or node exports, from services built unstarted."""
    from qnemu.launch.plan import make_plan  # late: builds every service kind
    from qnemu.launch.processes import build_service
    from qnemu.topology import parse_topology

    plan = make_plan(parse_topology(_PROBE_TOPOLOGY, origin="metric-name probe"), secure=False)
    names: set[str] = set()
    for process in plan.processes:
        service = build_service(plan, process.name)
        for family in service.registry.collect():
            if family.samples:
                names.update(sample.name for sample in family.samples)
            else:  # labelled, no child yet: the names its children will have
                names.update(family.name + suffix for suffix in _SUFFIXES.get(family.type, ("",)))
    return names


_STRING = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`')
_BRACES = re.compile(r"\{[^{}]*\}|\[[^\[\]]*\]")
_GRAFANA_VARIABLE = re.compile(r"\$\{[^}]*\}|\$\w+")
_GROUPING = re.compile(
    r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", re.IGNORECASE
)
_IDENTIFIER = re.compile(r"(?<![\w:.])([a-zA-Z_:][\w:]*)(\s*\()?")
_KEYWORDS = frozenset(
    {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "inf", "nan"}
    | {"group_left", "group_right", "atan2"}
)


def metric_names_in(expr: str) -> set[str]:
    """Metric names a PromQL expression (Grafana variables allowed) selects."""
    text = _STRING.sub(" ", expr)
    text = _GRAFANA_VARIABLE.sub(" ", text)
    text = _GROUPING.sub(" ", text)
    while _BRACES.search(text):  # label matchers and range/subquery selectors
        text = _BRACES.sub(" ", text)
    names = set()
    for match in _IDENTIFIER.finditer(text):
        name, call = match.group(1), match.group(2)
        if call is None and name.lower() not in _KEYWORDS:
            names.add(name)
    return names
