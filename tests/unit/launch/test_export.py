"""Compose/Swarm files and Kubernetes manifests generated for a run, checked as data."""

import itertools
import json
import re

import pytest
import yaml

from qnemu.launch.export import (
    CONTAINER_RUN_DIR,
    METRICS_PORT,
    PLAN_HAS_BIND_FIELDS,
    SECRETS_DIR,
    ZMQ_PORT,
    build_compose,
    export_compose,
    make_container_plan,
    service_host,
)
from qnemu.launch.health import local_endpoint
from qnemu.launch.k8s import RUN_CONFIG_MAP, build_manifests, selector_labels, write_manifests
from qnemu.launch.plan import ProcessPlan, RunPlan, make_plan
from qnemu.topology import load_topology, parse_topology

EPOCH_S = 1_700_000_000.0
MONITORING_SERVICES = {"prometheus", "grafana"}
DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
API_VERSIONS = {"ConfigMap": "v1", "Secret": "v1", "Service": "v1", "Deployment": "apps/v1"}


@pytest.fixture(scope="module")
def topology():
    return load_topology("topologies/metro-ring.yaml")


@pytest.fixture(scope="module")
def compose(topology):
    return build_compose(topology, epoch_wall_s=EPOCH_S, mosquitto=True)


@pytest.fixture(scope="module")
def swarm(topology):
    return build_compose(topology, epoch_wall_s=EPOCH_S, swarm=True)


@pytest.fixture(scope="module")
def plan(topology):
    return make_container_plan(topology, epoch_wall_s=EPOCH_S)


def walk_keys(value):
    if isinstance(value, dict):
        for key, inner in value.items():
            yield key
            yield from walk_keys(inner)
    elif isinstance(value, list):
        for inner in value:
            yield from walk_keys(inner)


# ---- the container plan ------------------------------------------------------------------


def test_container_plan_has_the_local_plans_processes_at_service_names(topology, plan):
    local = make_plan(topology, epoch_wall_s=EPOCH_S)
    assert [(p.name, p.role) for p in plan.processes] == [(p.name, p.role) for p in local.processes]
    assert plan.epoch_wall_s == EPOCH_S
    assert plan.topology == local.topology
    for process in plan.processes:
        assert process.endpoint == f"tcp://{service_host(process.name)}:{ZMQ_PORT}"
        assert process.metrics_port == METRICS_PORT


def test_container_plan_binds_the_wildcard_explicitly(plan):
    for process in plan.processes:
        if PLAN_HAS_BIND_FIELDS:
            assert process.bind_endpoint == f"tcp://0.0.0.0:{ZMQ_PORT}"
            assert process.metrics_bind_host == "0.0.0.0"
            assert process.metrics_host == service_host(process.name)
        else:  # metrics_host is where the metrics server binds until the plan splits them
            assert process.metrics_host == "0.0.0.0"


def test_container_plan_round_trips_through_run_json(plan, tmp_path):
    plan.write(tmp_path)
    assert RunPlan.read(tmp_path) == plan


@pytest.mark.parametrize(
    ("name", "host"),
    [("delft", "delft"), ("node_a", "node-a"), ("7th", "q7th"), ("trail_", "trail")],
)
def test_service_host_makes_dns_labels(name, host):
    assert service_host(name) == host
    assert DNS_LABEL.match(host)


def clashing(nodes: list[str]):
    links = [{"nodes": [a, b], "model": "perfect"} for a, b in itertools.pairwise(nodes)]
    spec = {"name": "clash", "time_scale": 1.0, "nodes": {n: {} for n in nodes}, "links": links}
    return parse_topology(spec, origin="test")


@pytest.mark.parametrize("nodes", [["node_a", "node-a"], ["prometheus", "alice"]])
def test_clashing_host_names_are_refused(nodes):
    topology = clashing(nodes)
    with pytest.raises(ValueError, match="clashing"):
        make_container_plan(topology)


# ---- Compose -----------------------------------------------------------------------------


def test_every_process_has_a_service_running_its_command(compose, plan):
    services = compose.document["services"]
    assert set(services) == {service_host(p.name) for p in plan.processes} | MONITORING_SERVICES | {
        "mosquitto"
    }
    for process in plan.processes:
        service = services[service_host(process.name)]
        assert service["image"] == "qnemu:latest"
        name = [] if process.role == "broker" else [process.name]
        assert service["command"] == ["qnemu", process.role, *name, "--run-dir", CONTAINER_RUN_DIR]
        assert service["environment"]["QNEMU_PROCESS"] == process.name


def test_depends_on_waits_for_healthy_broker_and_stations(compose, topology):
    services = compose.document["services"]
    assert "depends_on" not in services["broker"]
    for station, link in topology.stations():
        assert services[station]["depends_on"] == {"broker": {"condition": "service_healthy"}}
        for node in link.nodes:
            assert services[node]["depends_on"][station] == {"condition": "service_healthy"}
    for node in topology.node_names:
        assert services[node]["depends_on"]["broker"] == {"condition": "service_healthy"}
        assert len(services[node]["depends_on"]) == 1 + len(topology.neighbours(node))
    for name, service in services.items():
        for needed in service.get("depends_on", {}):
            assert needed in services, f"{name} depends on unknown {needed}"
            assert "healthcheck" in services[needed], f"{needed} has no health check"


def test_every_service_has_a_health_check(compose, plan):
    services = compose.document["services"]
    for name, service in services.items():
        check = service["healthcheck"]
        assert check["test"][0] == "CMD" and len(check["test"]) > 1, name
        assert {"interval", "timeout", "retries", "start_period"} <= set(check)
    for process in plan.processes:
        test = services[service_host(process.name)]["healthcheck"]["test"]
        assert test[1:5] == ["python", "-m", "qnemu.launch.health", process.name]


def test_networks_are_named_and_grafana_never_sees_the_emulator(compose, swarm):
    for bundle in (compose, swarm):
        document = bundle.document
        declared = set(document["networks"])
        assert declared == {"qnemu", "monitoring"}
        for name, service in document["services"].items():
            assert service["networks"] and set(service["networks"]) <= declared, name
        assert document["services"]["grafana"]["networks"] == ["monitoring"]
        assert set(document["services"]["prometheus"]["networks"]) == declared


def test_no_container_names_and_one_replica_per_process(compose, swarm):
    for bundle in (compose, swarm):
        assert "container_name" not in set(walk_keys(bundle.document))
        for service in bundle.document["services"].values():
            assert service["deploy"]["replicas"] == 1


def test_compose_publishes_only_on_loopback(compose, swarm):
    published = [
        port
        for service in compose.document["services"].values()
        for port in service.get("ports", [])
    ]
    assert published == ["127.0.0.1:9090:9090", "127.0.0.1:3000:3000"]
    assert not any("ports" in service for service in swarm.document["services"].values())


def test_compose_bind_mounts_run_json_read_only(compose, plan):
    services = compose.document["services"]
    mount = f"./qnemu-config/run.json:{CONTAINER_RUN_DIR}/run.json:ro"
    for process in plan.processes:
        assert mount in services[service_host(process.name)]["volumes"]
    delivered = RunPlan.model_validate(json.loads(compose.files["qnemu-config/run.json"]))
    assert delivered.processes == plan.processes
    assert delivered.secure and delivered.secrets_dir == SECRETS_DIR
    assert set(delivered.public_keys) == {p.name for p in plan.processes} | {"client"}
    for service in services.values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            assert source in compose.document["volumes"] or source[2:] in compose.files, volume


def test_swarm_file_uses_configs_and_plain_depends_on(swarm, plan):
    document = swarm.document
    configs = document["configs"]
    for name, service in document["services"].items():
        assert "volumes" not in service or all(":/" in v and not v.startswith("./")
                                               for v in service["volumes"]), name  # fmt: skip
        for entry in service.get("configs", []):
            assert entry["source"] in configs
            assert entry["mode"] == 0o444
        if "depends_on" in service:
            assert isinstance(service["depends_on"], list)
        assert "restart" not in service  # a Swarm restarts through deploy.restart_policy
    for config in configs.values():
        assert config["file"][2:] in swarm.files
        assert len(config["name"]) <= 64
    broker_configs = document["services"]["broker"]["configs"]
    assert broker_configs == [
        {"source": "run-json", "target": f"{CONTAINER_RUN_DIR}/run.json", "mode": 0o444}
    ]


def test_prometheus_scrapes_every_process_by_service_name(compose, plan):
    targets = json.loads(compose.files["qnemu-config/prometheus/targets.json"])
    assert [group["targets"] for group in targets] == [
        [f"{service_host(p.name)}:{METRICS_PORT}"] for p in plan.processes
    ]
    assert [group["labels"]["name"] for group in targets] == [p.name for p in plan.processes]
    config = yaml.safe_load(compose.files["qnemu-config/prometheus/prometheus.yml"])
    assert config["rule_files"] == ["/etc/prometheus/qnemu/rules/*.yml"]
    sd = config["scrape_configs"][0]["file_sd_configs"][0]["files"]
    assert sd == ["/etc/prometheus/qnemu/targets.json"]
    assert any(path.startswith("qnemu-config/prometheus/rules/") for path in compose.files)


def test_grafana_is_provisioned_with_the_datasource_and_dashboards(compose):
    datasources = yaml.safe_load(compose.files["qnemu-config/grafana/datasources.yml"])
    assert [s["url"] for s in datasources["datasources"]] == ["http://prometheus:9090"]
    boards = [p for p in compose.files if p.startswith("qnemu-config/grafana/dashboards/")]
    assert len(boards) >= 3
    mounts = compose.document["services"]["grafana"]["volumes"]
    for board in boards:
        name = board.rsplit("/", 1)[1]
        assert f"./{board}:/etc/grafana/dashboards/qnemu/{name}:ro" in mounts
    assert compose.document["services"]["grafana"]["depends_on"] == {
        "prometheus": {"condition": "service_healthy"}
    }


def test_mosquitto_only_when_asked(compose, swarm):
    assert "mosquitto" not in swarm.document["services"]
    mosquitto = compose.document["services"]["mosquitto"]
    assert "ports" not in mosquitto
    assert "$$SYS/broker/uptime" in mosquitto["healthcheck"]["test"]  # `$$`: a literal `$`
    assert "listener 1883" in compose.files["qnemu-config/mosquitto/mosquitto.conf"]


def test_export_writes_the_file_and_everything_it_mounts(topology, tmp_path):
    output = export_compose(topology, tmp_path / "deploy" / "compose.yaml", epoch_wall_s=EPOCH_S)
    text = output.read_text()
    assert text.startswith("# qnemu network 'metro-ring'")
    assert "&id" not in text and "*id" not in text  # no YAML anchors
    document = yaml.safe_load(text)
    for service in document["services"].values():
        for volume in service.get("volumes", []):
            if volume.startswith("./"):
                assert (output.parent / volume.split(":")[0]).is_file(), volume
    run = RunPlan.read(output.parent / "compose-config")
    assert run.epoch_wall_s == EPOCH_S


# ---- Kubernetes --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def manifests(topology):
    return build_manifests(topology, epoch_wall_s=EPOCH_S)


def by_kind(manifests, kind):
    return {m["metadata"]["name"]: m for m in manifests if m["kind"] == kind}


def test_manifests_have_kinds_api_versions_and_valid_names(manifests):
    assert manifests[0]["kind"] == "ConfigMap"
    for manifest in manifests:
        assert manifest["apiVersion"] == API_VERSIONS[manifest["kind"]]
        assert DNS_LABEL.match(manifest["metadata"]["name"]), manifest["metadata"]["name"]
        assert "namespace" not in manifest["metadata"]
        for key, value in manifest["metadata"]["labels"].items():
            assert isinstance(value, str) and len(value) <= 63, key
    names = [(m["kind"], m["metadata"]["name"]) for m in manifests]
    assert len(names) == len(set(names))


def test_each_process_has_deployment_service_and_key_secret(manifests, plan):
    hosts = {service_host(p.name) for p in plan.processes}
    assert set(by_kind(manifests, "Deployment")) == hosts
    assert set(by_kind(manifests, "Service")) == hosts
    assert set(by_kind(manifests, "Secret")) == {f"{h}-keys" for h in hosts}


def test_selectors_match_pod_labels_and_ports_match_by_name(manifests, plan):
    deployments = by_kind(manifests, "Deployment")
    services = by_kind(manifests, "Service")
    for process in plan.processes:
        host = service_host(process.name)
        deployment, service = deployments[host], services[host]
        spec = deployment["spec"]
        pod_labels = spec["template"]["metadata"]["labels"]
        selector = spec["selector"]["matchLabels"]
        assert selector == selector_labels(plan, process)
        assert selector.items() <= pod_labels.items()
        assert service["spec"]["selector"].items() <= pod_labels.items()
        assert spec["replicas"] == 1 and spec["strategy"] == {"type": "Recreate"}
        (container,) = spec["template"]["spec"]["containers"]
        container_ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert container_ports == {"zmq": ZMQ_PORT, "metrics": METRICS_PORT}
        for port in service["spec"]["ports"]:
            assert container_ports[port["targetPort"]] == port["port"]
        assert service["spec"]["publishNotReadyAddresses"] is True


def test_pods_are_scraped_probed_and_unprivileged(manifests, plan):
    deployments = by_kind(manifests, "Deployment")
    for process in plan.processes:
        pod = deployments[service_host(process.name)]["spec"]["template"]
        annotations = pod["metadata"]["annotations"]
        assert annotations == {
            "prometheus.io/scrape": "true",
            "prometheus.io/port": str(METRICS_PORT),
            "prometheus.io/path": "/metrics",
        }
        spec = pod["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["hostname"] == service_host(process.name)
        (container,) = spec["containers"]
        assert container["command"][:2] == ["qnemu", process.role]
        assert container["readinessProbe"]["exec"]["command"][3] == process.name
        assert container["livenessProbe"]["exec"]["command"][-1] == "--live"
        assert container["securityContext"]["allowPrivilegeEscalation"] is False


def test_volumes_refer_to_objects_that_exist(manifests):
    config_maps, secrets = by_kind(manifests, "ConfigMap"), by_kind(manifests, "Secret")
    for deployment in by_kind(manifests, "Deployment").values():
        spec = deployment["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in spec["volumes"]}
        for mount in spec["containers"][0]["volumeMounts"]:
            assert mount["name"] in volumes
        assert volumes["run"]["configMap"]["name"] in config_maps
        assert volumes["keys"]["secret"]["secretName"] in secrets
        assert volumes["keys"]["secret"]["defaultMode"] & 0o007 == 0  # nothing for others


def test_config_map_holds_the_run_plan(manifests, plan):
    data = by_kind(manifests, "ConfigMap")[RUN_CONFIG_MAP]["data"]
    delivered = RunPlan.model_validate(json.loads(data["run.json"]))
    assert delivered.processes == plan.processes and delivered.secure
    assert yaml.safe_load(data["topology.yaml"]) == plan.topology


def test_write_manifests_one_file_per_object(manifests, tmp_path):
    paths = write_manifests(manifests, tmp_path / "k8s")
    assert len(paths) == len(manifests)
    assert sorted(paths) == paths
    assert [yaml.safe_load(p.read_text()) for p in paths] == manifests


# ---- health check endpoint ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("endpoint", "local"),
    [
        ("tcp://127.0.0.1:4000", "tcp://127.0.0.1:4000"),
        ("tcp://delft:5555", "tcp://delft:5555"),
    ],
)
def test_health_pings_where_the_process_binds(endpoint, local):
    process = ProcessPlan(
        name="delft", role="node", endpoint=endpoint, metrics_host="x", metrics_port=1
    )
    assert local_endpoint(process) == local


@pytest.mark.skipif(not PLAN_HAS_BIND_FIELDS, reason="ProcessPlan has no bind_endpoint yet")
@pytest.mark.parametrize(
    ("bind", "local"),
    [("tcp://0.0.0.0:5555", "tcp://127.0.0.1:5555"), ("tcp://[::]:5555", "tcp://[::1]:5555")],
)
def test_health_pings_a_wildcard_bind_on_loopback(bind, local):
    process = ProcessPlan(
        name="delft",
        role="node",
        endpoint="tcp://delft:5555",
        bind_endpoint=bind,
        metrics_host="delft",
        metrics_port=1,
    )
    assert local_endpoint(process) == local
