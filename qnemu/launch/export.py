"""One container per process: the container run plan and a Compose/Swarm file for it.

Division of labour: `make_container_plan` says where each process listens inside its
container and how peers reach it (service name as host, fixed ports); `build_compose`
turns that plan into a Compose document plus the files it delivers into containers (the
run.json, Prometheus and Grafana provisioning from `monitoring/`); `export_compose`
writes both. Kubernetes manifests are built from the same plan in `qnemu.launch.k8s`.

The epoch (emulated time zero) is fixed when the file is exported and travels inside
run.json, so every container of a deployment shares it, however late or often any of
them (re)starts. One export is one run: export again for a fresh clock.
"""

import hashlib
import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from string import Template
from typing import Any

import yaml

from qnemu.launch.credentials import Credentials, make_credentials, write_secret
from qnemu.launch.monitoring import JOB_NAME, MONITORING_DIR, SCRAPE_INTERVAL_S, scrape_targets
from qnemu.launch.plan import BROKER_NAME, PLAN_FILE, ProcessPlan, RunPlan, make_plan
from qnemu.topology import Topology

__all__ = [
    "CONTAINER_RUN_DIR",
    "DEFAULT_IMAGE",
    "METRICS_PORT",
    "PLAN_HAS_BIND_FIELDS",
    "ZMQ_PORT",
    "Bundle",
    "build_compose",
    "container_run",
    "container_scrape_targets",
    "dump_yaml",
    "export_compose",
    "health_command",
    "make_container_plan",
    "process_command",
    "service_host",
    "write_bundle",
    "write_secret",
]

DEFAULT_IMAGE = "qnemu:latest"
PROMETHEUS_IMAGE = "prom/prometheus:v2.53.0"
GRAFANA_IMAGE = "grafana/grafana:11.1.0"
MOSQUITTO_IMAGE = "eclipse-mosquitto:2.0.18"
CONTAINER_RUN_DIR = "/run/qnemu"
SECRETS_DIR = "/run/secrets/qnemu"  # each process's own keys, mounted as secrets
STATE_DIR = "/var/lib/qnemu"  # what a process writes (key store): a volume
USER_ID = 10001  # the image's non-root user (docker/Dockerfile)
ZMQ_PORT = 5555
KME_PORT = 8443  # a node's ETSI GS QKD 014 KME (HTTPS), when it declares SAEs
METRICS_PORT = 9100
PROMETHEUS_PORT = 9090
PROMETHEUS_CONFIG_DIR = "/etc/prometheus/qnemu"
GRAFANA_PORT = 3000
MQTT_PORT = 1883
EMULATOR_NETWORK = "qnemu"  # broker, stations, nodes (and Prometheus, to scrape them)
MONITORING_NETWORK = "monitoring"  # Prometheus and Grafana: Grafana never sees the emulator
MONITORING_SERVICES = frozenset({"prometheus", "grafana", "mosquitto"})
# Once ProcessPlan separates where a process binds from where peers connect, containers
# bind the explicit wildcard and peers use the service name. Until then the endpoint is
# the service name and libzmq binds whatever that resolves to: the container's own
# address under Compose, Swarm `dnsrr` and a Kubernetes pod `hostname`.
PLAN_HAS_BIND_FIELDS = {"bind_endpoint", "metrics_bind_host"} <= set(ProcessPlan.model_fields)
_DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")


def service_host(name: str) -> str:
    """The DNS name (Compose service, Kubernetes Service) of process `name`."""
    host = name.replace("_", "-")
    if not host[:1].isalpha():
        host = "q" + host
    host = host.rstrip("-") or "q"
    if not _DNS_LABEL.match(host):
        raise ValueError(f"process name {name!r} cannot be made a DNS name (got {host!r})")
    return host


def make_container_plan(
    topology: Topology,
    *,
    zmq_port: int = ZMQ_PORT,
    metrics_port: int = METRICS_PORT,
    bind_host: str = "0.0.0.0",
    epoch_wall_s: float | None = None,
    public_keys: dict[str, str] | None = None,
) -> RunPlan:
    """The run plan for one process per container: same ports everywhere, service names.

    `bind_host` is the interface each process listens on *inside its own container*;
    the wildcard is the deliberate choice there, since a container's only interfaces
    are its own network's and loopback. With `public_keys` the run is secure (CurveZMQ):
    the keys travel in the plan and each process's own secrets are mounted at
    SECRETS_DIR; without, it is plain text.
    """
    base = make_plan(
        topology,
        epoch_wall_s=time.time() if epoch_wall_s is None else epoch_wall_s,
        secure=public_keys is not None,
    )
    hosts = [service_host(process.name) for process in base.processes]
    clashes = sorted({h for h in hosts if hosts.count(h) > 1} | (set(hosts) & MONITORING_SERVICES))
    if clashes:
        raise ValueError(f"process names give clashing container host names: {clashes}")
    kme_nodes = set(_kme_nodes(topology))
    processes = [
        _container_process(process, host, zmq_port, metrics_port, bind_host)
        | ({"kme_port": KME_PORT} if process.name in kme_nodes else {})
        for process, host in zip(base.processes, hosts, strict=True)
    ]
    layout: dict[str, Any] = {"state_dir": STATE_DIR}
    if public_keys is not None:
        layout |= {"secrets_dir": SECRETS_DIR, "public_keys": public_keys}
    return RunPlan.model_validate(base.model_dump() | {"processes": processes} | layout)


def _kme_nodes(topology: Topology) -> dict[str, str]:
    """The nodes that run a KME (they declare SAEs), with the host name it is reached at."""
    return {name: service_host(name) for name, node in topology.nodes.items() if node.saes}


def container_run(
    topology: Topology, *, secure: bool = True, epoch_wall_s: float | None = None
) -> tuple[RunPlan, Credentials | None]:
    """A container plan and, for a secure run, the fresh credentials it was made with."""
    if not secure:
        return make_container_plan(topology, epoch_wall_s=epoch_wall_s), None
    names = [process.name for process in make_plan(topology, secure=False).processes]
    saes = [sae for node in topology.nodes.values() for sae in node.saes]
    credentials = make_credentials(names, _kme_nodes(topology), saes)
    plan = make_container_plan(
        topology, epoch_wall_s=epoch_wall_s, public_keys=credentials.public_keys
    )
    return plan, credentials


def _container_process(
    process: ProcessPlan, host: str, zmq_port: int, metrics_port: int, bind_host: str
) -> dict[str, Any]:
    """The adapter between export and ProcessPlan's fields (see PLAN_HAS_BIND_FIELDS)."""
    fields: dict[str, Any] = {
        "name": process.name,
        "role": process.role,
        "endpoint": f"tcp://{host}:{zmq_port}",
        "metrics_port": metrics_port,
    }
    if PLAN_HAS_BIND_FIELDS:
        fields |= {
            "metrics_host": host,
            "bind_endpoint": f"tcp://{bind_host}:{zmq_port}",
            "metrics_bind_host": bind_host,
        }
    else:  # metrics_host is only where the HTTP server binds; Prometheus uses service names
        fields["metrics_host"] = bind_host
    return fields


def container_scrape_targets(plan: RunPlan) -> list[dict]:
    """Prometheus file-SD groups for a container plan: each process at service:port."""
    groups = scrape_targets(plan)
    for group, process in zip(groups, plan.processes, strict=True):
        group["targets"] = [f"{service_host(process.name)}:{process.metrics_port}"]
    return groups


def process_command(process: ProcessPlan, run_dir: str = CONTAINER_RUN_DIR) -> list[str]:
    """`qnemu broker | station NAME | node NAME --run-dir DIR`, as a container command."""
    name = [] if process.role == "broker" else [process.name]
    return ["qnemu", process.role, *name, "--run-dir", run_dir]


def health_command(process: ProcessPlan, run_dir: str = CONTAINER_RUN_DIR) -> list[str]:
    return ["python", "-m", "qnemu.launch.health", process.name, "--run-dir", run_dir]


@dataclass
class Bundle:
    """A deployment document and the files it refers to (paths relative to it).

    `secret_files` are written readable by their owner only (0600, folders 0700); those
    under `container_secrets` are what containers mount, and are given to the image's
    user when the exporter may (root), since a plain Compose bind-mounts them as they are.
    """

    document: dict[str, Any]
    files: dict[str, str] = field(default_factory=dict)
    header: str = ""
    secret_files: dict[str, str] = field(default_factory=dict)
    container_secrets: set[str] = field(default_factory=set)


class _Files:
    """Files delivered into containers: Swarm `configs:` (named by content, since a Swarm
    config is immutable), or read-only bind mounts under Compose, whose v1 ignores
    `configs:` outside a Swarm."""

    def __init__(self, network: str, directory: str, swarm: bool):
        self.network = network
        self.directory = directory
        self.swarm = swarm
        self.files: dict[str, str] = {}
        self.configs: dict[str, dict[str, str]] = {}

    def deliver(self, service: dict, key: str, relative: str, text: str, target: str) -> None:
        """Put `text` at `target` inside `service`'s containers."""
        path = f"{self.directory}/{relative}"
        self.files[path] = text
        if not self.swarm:
            service.setdefault("volumes", []).append(f"./{path}:{target}:ro")
            return
        digest = hashlib.sha256(text.encode()).hexdigest()[:10]
        # Swarm object names are at most 64 characters.
        self.configs[key] = {
            "file": f"./{path}",
            "name": f"{self.network[:20]}-{key[:30]}-{digest}",
        }
        service.setdefault("configs", []).append({"source": key, "target": target, "mode": 0o444})


class _Secrets:
    """Each process's own keys, as Compose/Swarm `secrets:` mounted in SECRETS_DIR.

    The files are written in `directory`, one folder per process. A Swarm secret is
    immutable, so it is named by its content, like a config; a plain Compose bind-mounts
    the file (and ignores uid/gid/mode, so those are only set for a Swarm).
    """

    def __init__(self, network: str, directory: str, swarm: bool):
        self.network = network
        self.directory = directory
        self.swarm = swarm
        self.files: dict[str, str] = {}
        self.secrets: dict[str, dict[str, str]] = {}

    def mount(self, service: dict, host: str, file_name: str, text: str) -> None:
        path = f"{self.directory}/{host}/{file_name}"
        self.files[path] = text
        key = f"{host}-{file_name}".replace("_", "-")
        self.secrets[key] = {"file": f"./{path}"}
        target: dict[str, Any] = {"source": key, "target": f"{SECRETS_DIR}/{file_name}"}
        if self.swarm:
            digest = hashlib.sha256(text.encode()).hexdigest()[:10]
            self.secrets[key]["name"] = f"{self.network[:20]}-{key[:30]}-{digest}"
            target |= {"uid": str(USER_ID), "gid": str(USER_ID), "mode": 0o400}
        service.setdefault("secrets", []).append(target)


def build_compose(
    topology: Topology,
    *,
    swarm: bool = False,
    mosquitto: bool = False,
    image: str = DEFAULT_IMAGE,
    config_dir: str = "qnemu-config",
    secrets_dir: str = "qnemu-secrets",
    publish_host: str = "127.0.0.1",
    monitoring_dir: Path | None = None,
    epoch_wall_s: float | None = None,
    secure: bool = True,
) -> Bundle:
    """A Compose document, or with `swarm=True` one for `docker stack deploy`.

    They differ where the two schemas do: Swarm takes `depends_on` as a plain list (and
    ignores it) and delivers files as `configs:`; Compose waits on health conditions and
    bind-mounts the same files read-only. Compose publishes Grafana and Prometheus on
    `publish_host` (loopback by default); a Swarm would publish on every node's
    interfaces whatever host is given, so its file publishes nothing.

    A secure export (the default) generates the run's keys: each process gets its own as
    secrets from `secrets_dir`, the operator's (CA, SAEs, clients) are left in
    `secrets_dir/operator`.
    """
    monitoring_dir = Path(monitoring_dir or MONITORING_DIR)
    plan, credentials = container_run(topology, secure=secure, epoch_wall_s=epoch_wall_s)
    files = _Files(plan.network, config_dir, swarm)
    secrets = _Secrets(plan.network, secrets_dir, swarm)
    run_json = plan.model_dump_json(indent=2) + "\n"
    volumes: dict[str, dict] = {"prometheus-data": {}, "grafana-data": {}}
    stations_of: dict[str, list[str]] = {node: [] for node in topology.node_names}
    for station, link in topology.stations():
        for node in link.nodes:
            stations_of[node].append(station)
    services: dict[str, Any] = {}
    for process in plan.processes:
        needs = [] if process.role == "broker" else [BROKER_NAME]
        needs += stations_of.get(process.name, []) if process.role == "node" else []
        service: dict[str, Any] = {
            "image": image,
            "command": process_command(process),
            "environment": {"QNEMU_PROCESS": process.name, "QNEMU_RUN_DIR": CONTAINER_RUN_DIR},
            "networks": [EMULATOR_NETWORK],
            "healthcheck": _healthcheck(["CMD", *health_command(process)]),
            "stop_grace_period": "10s",
            "labels": {"qnemu.network": plan.network, "qnemu.process": process.name},
            # dnsrr: the name resolves to the task itself, no virtual IP between peers.
            "deploy": {"replicas": 1, "endpoint_mode": "dnsrr", "restart_policy": _RESTART},
        }
        host = service_host(process.name)
        files.deliver(service, "run-json", PLAN_FILE, run_json, f"{CONTAINER_RUN_DIR}/{PLAN_FILE}")
        if credentials is not None:
            for file_name, text in credentials.secrets[process.name].items():
                secrets.mount(service, host, file_name, text)
            for relative, text in credentials.certificates_of(process.name).items():
                key = relative.replace("/", "-").replace("_", "-").replace(".", "-")
                files.deliver(service, key, relative, text, f"{CONTAINER_RUN_DIR}/{relative}")
        if process.role == "node":  # its key store outlives the container
            service["volumes"] = [f"state-{host}:{STATE_DIR}", *service.get("volumes", [])]
            volumes[f"state-{host}"] = {}
        if needs:
            service["depends_on"] = _depends_on([service_host(n) for n in needs], swarm)
        if not swarm:
            service["restart"] = "unless-stopped"
        services[host] = service
    services |= _monitoring_services(plan, files, monitoring_dir, swarm, publish_host)
    if mosquitto:
        services["mosquitto"] = _mosquitto_service(files)
    document: dict[str, Any] = {
        "x-qnemu": {"network": plan.network, "epoch_wall_s": plan.epoch_wall_s},
        "services": services,
        "networks": {EMULATOR_NETWORK: {}, MONITORING_NETWORK: {}},
        "volumes": volumes,
    }
    if swarm:
        document["configs"] = files.configs
    if secrets.secrets:
        document["secrets"] = secrets.secrets
    secret_files = dict(secrets.files)
    if credentials is not None:
        for relative, text in credentials.operator.items():
            secret_files[f"{secrets_dir}/operator/{relative}"] = text
    how = (
        "# Deploy: docker stack deploy -c THIS_FILE NAME\n"
        if swarm
        else f"# Run: docker compose -f THIS_FILE up -d   (Grafana: http://{publish_host}:"
        f"{GRAFANA_PORT})\n"
    )
    header = (
        f"# qnemu network {plan.network!r}, generated by `qnemu export compose`.\n"
        f"# One run: emulated time counts from epoch {plan.epoch_wall_s:.3f} (wall seconds),\n"
        f"# fixed at export. The files it delivers into containers are in ./{config_dir}/,\n"
        f"# their keys in ./{secrets_dir}/ (the CA, SAE and client keys in operator/).\n" + how
    )
    return Bundle(document, files.files, header, secret_files, set(secrets.files))


_RESTART = {"condition": "any", "delay": "2s"}


def _healthcheck(test: list[str], start_period: str = "20s") -> dict[str, Any]:
    return {
        "test": test,
        "interval": "5s",
        "timeout": "3s",
        "retries": 5,
        "start_period": start_period,
    }


def _depends_on(services: list[str], swarm: bool) -> list[str] | dict[str, dict[str, str]]:
    if swarm:
        return services
    return {name: {"condition": "service_healthy"} for name in services}


def _monitoring_services(
    plan: RunPlan, files: _Files, monitoring_dir: Path, swarm: bool, publish_host: str
) -> dict[str, Any]:
    """Prometheus scraping every process, Grafana provisioned from monitoring/grafana."""
    prometheus: dict[str, Any] = {
        "image": PROMETHEUS_IMAGE,
        "command": [
            f"--config.file={PROMETHEUS_CONFIG_DIR}/prometheus.yml",
            "--storage.tsdb.path=/prometheus",
            "--storage.tsdb.retention.time=7d",
            f"--web.listen-address=0.0.0.0:{PROMETHEUS_PORT}",
        ],
        "volumes": ["prometheus-data:/prometheus"],
        "networks": [EMULATOR_NETWORK, MONITORING_NETWORK],
        "healthcheck": _healthcheck(_wget(f"http://127.0.0.1:{PROMETHEUS_PORT}/-/ready")),
        "deploy": {"replicas": 1, "restart_policy": _RESTART},
    }
    template = (monitoring_dir / "prometheus" / "prometheus.yml.template").read_text()
    config = Template(template).substitute(
        scrape_interval=json.dumps(f"{SCRAPE_INTERVAL_S}s"),
        job_name=json.dumps(JOB_NAME),
        targets_file=json.dumps(f"{PROMETHEUS_CONFIG_DIR}/targets.json"),
        rules_glob=json.dumps(f"{PROMETHEUS_CONFIG_DIR}/rules/*.yml"),
    )
    targets = json.dumps(container_scrape_targets(plan), indent=2) + "\n"
    files.deliver(
        prometheus,
        "prometheus-yml",
        "prometheus/prometheus.yml",
        config,
        f"{PROMETHEUS_CONFIG_DIR}/prometheus.yml",
    )
    files.deliver(prometheus, "prometheus-targets", "prometheus/targets.json", targets,
                  f"{PROMETHEUS_CONFIG_DIR}/targets.json")  # fmt: skip
    for rules in sorted((monitoring_dir / "prometheus" / "rules").glob("*.yml")):
        files.deliver(prometheus, f"rules-{rules.stem}", f"prometheus/rules/{rules.name}",
                      rules.read_text(), f"{PROMETHEUS_CONFIG_DIR}/rules/{rules.name}")  # fmt: skip
    grafana: dict[str, Any] = {
        "image": GRAFANA_IMAGE,
        # Anyone who reaches Grafana may look, not edit; Compose publishes it on loopback.
        "environment": {
            "GF_AUTH_ANONYMOUS_ENABLED": "true",
            "GF_AUTH_ANONYMOUS_ORG_ROLE": "Viewer",
        },
        "volumes": ["grafana-data:/var/lib/grafana"],
        "networks": [MONITORING_NETWORK],
        "depends_on": _depends_on(["prometheus"], swarm),
        "healthcheck": _healthcheck(_wget(f"http://127.0.0.1:{GRAFANA_PORT}/api/health")),
        "deploy": {"replicas": 1, "restart_policy": _RESTART},
    }
    provisioning = monitoring_dir / "grafana" / "provisioning"
    datasources = yaml.safe_load((provisioning / "datasources" / "qnemu.yml").read_text())
    for source in datasources["datasources"]:
        source["url"] = f"http://prometheus:{PROMETHEUS_PORT}"
    provider_text = (provisioning / "dashboards" / "qnemu.yml").read_text()
    dashboards_path = yaml.safe_load(provider_text)["providers"][0]["options"]["path"]
    files.deliver(grafana, "grafana-datasources", "grafana/datasources.yml",
                  yaml.safe_dump(datasources, sort_keys=False),
                  "/etc/grafana/provisioning/datasources/qnemu.yml")  # fmt: skip
    files.deliver(grafana, "grafana-dashboards", "grafana/dashboards.yml", provider_text,
                  "/etc/grafana/provisioning/dashboards/qnemu.yml")  # fmt: skip
    for board in sorted((monitoring_dir / "grafana" / "dashboards").glob("*.json")):
        files.deliver(grafana, f"dashboard-{board.stem}", f"grafana/dashboards/{board.name}",
                      board.read_text(), f"{dashboards_path}/{board.name}")  # fmt: skip
    if not swarm:
        prometheus["ports"] = [f"{publish_host}:{PROMETHEUS_PORT}:{PROMETHEUS_PORT}"]
        grafana["ports"] = [f"{publish_host}:{GRAFANA_PORT}:{GRAFANA_PORT}"]
        prometheus["restart"] = grafana["restart"] = "unless-stopped"
    return {"prometheus": prometheus, "grafana": grafana}


def _wget(url: str) -> list[str]:
    """A probe with the busybox wget the Prometheus and Grafana images ship."""
    return ["CMD", "wget", "-q", "-O", "/dev/null", url]


_MOSQUITTO_CONF = """\
# MQTT broker for qnemu's northbound control interface. It listens only on the stack's
# private emulator network (no port is published), where every client is part of the run.
listener 1883
allow_anonymous true
persistence false
log_dest stdout
"""


def _mosquitto_service(files: _Files) -> dict[str, Any]:
    # `$$` is Compose's escape for a literal `$`.
    probe = ["CMD", "mosquitto_sub", "-h", "127.0.0.1", "-p", str(MQTT_PORT)]
    probe += ["-t", "$$SYS/broker/uptime", "-C", "1", "-W", "3"]
    service: dict[str, Any] = {
        "image": MOSQUITTO_IMAGE,
        "networks": [EMULATOR_NETWORK],
        "healthcheck": _healthcheck(probe, start_period="5s"),
        "deploy": {"replicas": 1, "restart_policy": _RESTART},
    }
    if not files.swarm:
        service["restart"] = "unless-stopped"
    files.deliver(service, "mosquitto-conf", "mosquitto/mosquitto.conf", _MOSQUITTO_CONF,
                  "/mosquitto/config/mosquitto.conf")  # fmt: skip
    return service


class _PlainDumper(yaml.SafeDumper):
    """Writes shared sub-dicts out in full: no `&id001` anchors for people to decode."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def dump_yaml(document: Any) -> str:
    """YAML as people write it: keys in the order given, no anchors."""
    return yaml.dump(document, Dumper=_PlainDumper, sort_keys=False, width=100)


def write_bundle(bundle: Bundle, output: Path) -> list[Path]:
    """Write the document to `output` and its files beside it; returns every path written."""
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    written = []
    for relative, text in bundle.files.items():
        path = output.parent / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        written.append(path)
    for relative, text in bundle.secret_files.items():
        path = output.parent / relative
        write_secret(path, text, base=output.parent)
        if relative in bundle.container_secrets and os.geteuid() == 0:
            os.chown(path, USER_ID, USER_ID)  # the image's user reads it in its container
        written.append(path)
    text = bundle.header + dump_yaml(bundle.document)
    output.write_text(text)
    return [output, *written]


def export_compose(topology: Topology, output: Path, **options: Any) -> Path:
    """Write a Compose file for `topology` at `output`, its configs in `<stem>-config/`
    and its keys in `<stem>-secrets/`."""
    output = Path(output)
    bundle = build_compose(
        topology, config_dir=f"{output.stem}-config", secrets_dir=f"{output.stem}-secrets",
        **options,
    )  # fmt: skip
    write_bundle(bundle, output)
    return output
