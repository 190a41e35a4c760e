"""Grafana for a run (`qnemu up --monitoring`, when Grafana is installed).

Grafana is not a Debian package, so it is optional: `find_grafana` looks for the
`grafana` (Grafana ≥ 10: `grafana server`) or `grafana-server` binary on PATH, and its
home (the `public/` and `conf/` folders) in `$QNEMU_GRAFANA_HOME`, `/usr/share/grafana` or
next to the binary. `write_grafana_files` gives the run a `grafana.ini` (loopback only,
anonymous viewers, no phoning home, data and logs inside the run directory) and
provisioning: the run's Prometheus as the default datasource and the dashboards of
`monitoring/grafana/dashboards/`, read in place.
"""

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import yaml

from qnemu.launch.monitoring import MONITORING_DIR, start_logged, wait_http_ready

__all__ = [
    "GRAFANA_DIR",
    "GrafanaInstall",
    "find_grafana",
    "start_grafana",
    "wait_grafana_ready",
    "write_grafana_files",
]

GRAFANA_DIR = "grafana"
HOME_CANDIDATES = ("/usr/share/grafana", "/usr/local/share/grafana", "/opt/grafana")


@dataclass(frozen=True)
class GrafanaInstall:
    command: list[str]  # the server command without its flags
    home: Path


def find_grafana() -> GrafanaInstall | None:
    """The installed Grafana server, or None."""
    binary = shutil.which("grafana")
    command = [binary, "server"] if binary else None
    if command is None:
        binary = shutil.which("grafana-server")
        command = [binary] if binary else None
    if command is None or binary is None:
        return None
    candidates = [os.environ.get("QNEMU_GRAFANA_HOME", ""), *HOME_CANDIDATES]
    candidates.append(str(Path(binary).resolve().parent.parent))  # a tarball: bin/ in home
    for candidate in candidates:
        if candidate and (Path(candidate) / "conf" / "defaults.ini").is_file():
            return GrafanaInstall(command, Path(candidate))
    return None


def write_grafana_files(
    run_dir: Path, prometheus_url: str, port: int, *, host: str = "127.0.0.1"
) -> Path:
    """The run's grafana.ini and provisioning; returns the ini's path."""
    directory = Path(run_dir).resolve() / GRAFANA_DIR
    provisioning = directory / "provisioning"
    for folder in ("datasources", "dashboards", "plugins", "alerting", "notifiers"):
        (provisioning / folder).mkdir(parents=True, exist_ok=True)
    shipped = MONITORING_DIR / "grafana" / "provisioning"
    datasources = yaml.safe_load((shipped / "datasources" / "qnemu.yml").read_text())
    for source in datasources["datasources"]:
        source["url"] = prometheus_url
    (provisioning / "datasources" / "qnemu.yml").write_text(
        yaml.safe_dump(datasources, sort_keys=False)
    )
    providers = yaml.safe_load((shipped / "dashboards" / "qnemu.yml").read_text())
    for provider in providers["providers"]:
        provider["options"]["path"] = str((MONITORING_DIR / "grafana" / "dashboards").resolve())
    (provisioning / "dashboards" / "qnemu.yml").write_text(
        yaml.safe_dump(providers, sort_keys=False)
    )
    ini = directory / "grafana.ini"
    ini.write_text(
        "# Written by qnemu for this run: loopback only, anyone who reaches it may look.\n"
        f"[server]\nhttp_addr = {host}\nhttp_port = {port}\n\n"
        f"[paths]\ndata = {directory / 'data'}\nlogs = {directory / 'logs'}\n"
        f"plugins = {directory / 'plugins'}\nprovisioning = {provisioning}\n\n"
        "[auth.anonymous]\nenabled = true\norg_role = Viewer\n\n"
        "[analytics]\nreporting_enabled = false\ncheck_for_updates = false\n"
        "check_for_plugin_updates = false\n\n"
        "[news]\nnews_feed_enabled = false\n\n"
        "[log]\nmode = console\n"
    )
    return ini


def start_grafana(run_dir: Path, install: GrafanaInstall, ini: Path) -> subprocess.Popen:
    command = [*install.command, f"--homepath={install.home}", f"--config={ini}"]
    return start_logged(command, run_dir, "grafana")


def wait_grafana_ready(
    url: str, timeout_s: float = 60.0, process: subprocess.Popen | None = None
) -> None:
    """Wait until Grafana at `url` says its database is ok (/api/health)."""

    def database_ok(body: bytes) -> bool:
        return json.loads(body).get("database") == "ok"

    wait_http_ready("grafana", f"{url}/api/health", database_ok, timeout_s, process)
