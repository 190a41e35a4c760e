"""`qnemu up --monitoring` starts Grafana on the run's Prometheus when Grafana is installed.

Grafana is no Debian package, so this machine has none: a stand-in `grafana` on PATH
plays the server's part of the contract (the `grafana server --homepath --config`
command line, the ini, the provisioning folders, `/api/health`) and records what it
was given. The Prometheus is the real one.
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from qnemu.launch.monitoring import MONITORING_DIR, find_prometheus

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

FAKE_GRAFANA = """#!{python}
import configparser, json, sys
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

args = sys.argv[1:]
assert args[0] == "server", args
flags = dict(arg[2:].split("=", 1) for arg in args[1:])
ini = configparser.ConfigParser()
ini.read(flags["config"])
provisioning = Path(ini["paths"]["provisioning"])
seen = {{
    "homepath": flags["homepath"],
    "http_addr": ini["server"]["http_addr"],
    "http_port": int(ini["server"]["http_port"]),
    "anonymous": ini["auth.anonymous"]["enabled"],
    "reporting": ini["analytics"]["reporting_enabled"],
    "datasources": (provisioning / "datasources" / "qnemu.yml").read_text(),
    "dashboards": (provisioning / "dashboards" / "qnemu.yml").read_text(),
}}
Path({record!r}).write_text(json.dumps(seen))


class Health(BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({{"database": "ok"}}).encode()
        self.send_response(200 if self.path == "/api/health" else 404)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


HTTPServer((seen["http_addr"], seen["http_port"]), Health).serve_forever()
"""


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    return state != "Z"


def test_up_monitoring_starts_grafana_on_the_run_prometheus(tmp_path):
    if find_prometheus() is None:
        reason = "prometheus not installed (Debian package `prometheus`)"
        if os.environ.get("QNEMU_REQUIRE_SERVICES") == "1":
            pytest.fail(f"{reason}, but QNEMU_REQUIRE_SERVICES=1")
        pytest.skip(reason)
    bin_dir, home, record = tmp_path / "bin", tmp_path / "grafana-home", tmp_path / "seen.json"
    bin_dir.mkdir()
    (home / "conf").mkdir(parents=True)
    (home / "conf" / "defaults.ini").write_text("")
    fake = bin_dir / "grafana"
    fake.write_text(FAKE_GRAFANA.format(python=sys.executable, record=str(record)))
    fake.chmod(0o755)
    env = os.environ | {"PATH": f"{bin_dir}:{os.environ['PATH']}", "QNEMU_GRAFANA_HOME": str(home)}
    run_dir = tmp_path / "run"
    qnemu = [sys.executable, "-m", "qnemu"]
    up = subprocess.run(
        [*qnemu, "up", "perfect-pair", "--detach", "--monitoring", "--run-dir", str(run_dir)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env=env,
    )
    grafana_pid = None
    try:
        assert up.returncode == 0, up.stderr
        words = up.stderr.split()
        prometheus_url = words[words.index("prometheus:") + 1]
        grafana_url = words[words.index("grafana:") + 1]
        assert grafana_url.startswith("http://127.0.0.1:")
        status = json.loads((run_dir / "status.json").read_text())
        (grafana,) = [p for p in status["processes"] if p["name"] == "grafana"]
        grafana_pid = grafana["pid"]
        seen = json.loads(record.read_text())
        assert seen["homepath"] == str(home)
        assert seen["http_addr"] == "127.0.0.1"  # loopback only
        assert f"http://127.0.0.1:{seen['http_port']}" == grafana_url
        assert seen["anonymous"] == "true" and seen["reporting"] == "false"
        (source,) = yaml.safe_load(seen["datasources"])["datasources"]
        assert source["url"] == prometheus_url and source["uid"] == "qnemu-prometheus"
        (provider,) = yaml.safe_load(seen["dashboards"])["providers"]
        boards = {p.name for p in Path(provider["options"]["path"]).glob("*.json")}
        shipped = {p.name for p in (MONITORING_DIR / "grafana" / "dashboards").glob("*.json")}
        assert boards == shipped and "qkd.json" in boards
    finally:
        subprocess.run(
            [*qnemu, "down", "--run-dir", str(run_dir)], timeout=60, cwd=tmp_path, env=env
        )
    deadline = time.monotonic() + 5
    while grafana_pid and process_alive(grafana_pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert grafana_pid is None or not process_alive(grafana_pid)
