"""Keys in exported deployments: each container gets its own secrets and nothing else."""

import base64
import json
import stat

import pytest
import yaml
import zmq.auth

from qnemu.launch.export import (
    CONTAINER_RUN_DIR,
    KME_PORT,
    SECRETS_DIR,
    STATE_DIR,
    build_compose,
    export_compose,
    service_host,
)
from qnemu.launch.k8s import RUN_CONFIG_MAP, build_manifests, export_k8s
from qnemu.launch.plan import RunPlan
from qnemu.topology import load_topology

EPOCH_S = 1_700_000_000.0
SAE_NODES = {"alice", "bob", "carol"}


@pytest.fixture(scope="module")
def topology():
    return load_topology("topologies/qkd-metro.yaml")


@pytest.fixture(scope="module")
def compose(topology):
    return build_compose(topology, epoch_wall_s=EPOCH_S)


@pytest.fixture(scope="module")
def swarm(topology):
    return build_compose(topology, epoch_wall_s=EPOCH_S, swarm=True)


def delivered_plan(bundle) -> RunPlan:
    return RunPlan.model_validate(json.loads(bundle.files["qnemu-config/run.json"]))


def secret_values(bundle) -> list[str]:
    """The secret parts of every secret file: Curve secret keys and private-key PEM lines."""
    values = []
    for path, text in bundle.secret_files.items():
        if path.endswith(".key_secret"):
            values += [line.split('"')[1] for line in text.splitlines() if "secret-key" in line]
        elif path.endswith(".key"):
            values += [line for line in text.splitlines() if not line.startswith("-----")]
    return values


def test_the_plan_carries_public_keys_and_points_at_mounted_secrets(compose):
    plan = delivered_plan(compose)
    assert plan.secure and plan.secrets_dir == SECRETS_DIR and plan.state_dir == STATE_DIR
    for name, public in plan.public_keys.items():
        assert len(public) == 40, name  # z85 of 32 bytes
    kme_ports = {p.name: p.kme_port for p in plan.processes if p.kme_port}
    assert kme_ports == dict.fromkeys(SAE_NODES, KME_PORT)


def test_each_process_mounts_exactly_its_own_key_pair(compose, topology):
    plan = delivered_plan(compose)
    services = compose.document["services"]
    declared = compose.document["secrets"]
    for process in plan.processes:
        host = service_host(process.name)
        mounts = services[host]["secrets"]
        targets = {m["target"] for m in mounts}
        expected = {f"{SECRETS_DIR}/{process.name}.key_secret"}
        if process.name in SAE_NODES:
            expected.add(f"{SECRETS_DIR}/kme-{process.name}.key")
        assert targets == expected, host
        for mount in mounts:
            path = declared[mount["source"]]["file"][2:]
            assert path.startswith(f"qnemu-secrets/{host}/")
            assert path in compose.container_secrets
        # The key pair is the one whose public half the plan gives everyone else.
        secret_path = f"qnemu-secrets/{host}/{process.name}.key_secret"
        text = compose.secret_files[secret_path]
        public = next(line for line in text.splitlines() if "public-key" in line)
        assert plan.public_keys[process.name] in public


def test_no_secret_reaches_a_config_the_document_or_the_environment(compose, swarm):
    for bundle in (compose, swarm):
        everything = yaml.safe_dump(bundle.document) + "".join(bundle.files.values())
        values = secret_values(bundle)
        assert len(values) > 10
        for value in values:
            assert value not in everything
        for service in bundle.document["services"].values():
            assert not any("KEY" in k or "SECRET" in k for k in service.get("environment", {}))


def test_kme_nodes_get_the_ca_and_their_own_certificate_as_configs(compose):
    services = compose.document["services"]
    for node in SAE_NODES:
        mounts = services[node]["volumes"]
        assert f"./qnemu-config/pki/ca.crt:{CONTAINER_RUN_DIR}/pki/ca.crt:ro" in mounts
        own = f"./qnemu-config/pki/kme-{node}.crt:{CONTAINER_RUN_DIR}/pki/kme-{node}.crt:ro"
        assert own in mounts
        assert not any(f"kme-{other}.crt" in m for m in mounts for other in SAE_NODES - {node})
    assert "pki" not in " ".join(services["broker"].get("volumes", []))


def test_the_operator_keeps_the_ca_sae_and_client_keys(compose):
    operator = {p.removeprefix("qnemu-secrets/operator/") for p in compose.secret_files
                if p.startswith("qnemu-secrets/operator/")}  # fmt: skip
    assert {"pki/ca.crt", "pki/ca.key", "zmq/client.key_secret"} <= operator
    assert {"pki/alice_app.crt", "pki/alice_app.key", "pki/carol_app.key"} <= operator
    assert not operator & compose.container_secrets


def test_nodes_keep_their_key_store_on_a_named_volume(compose):
    for node in ("alice", "bob", "carol"):
        assert f"state-{node}:{STATE_DIR}" in compose.document["services"][node]["volumes"]
        assert f"state-{node}" in compose.document["volumes"]


def test_swarm_secrets_are_named_by_content_and_readable_by_the_image_user(swarm):
    for secret in swarm.document["secrets"].values():
        assert len(secret["name"]) <= 64 and secret["file"].startswith("./qnemu-secrets/")
    for service in swarm.document["services"].values():
        for mount in service.get("secrets", []):
            assert mount["uid"] == "10001" and mount["mode"] == 0o400


def test_written_secrets_are_owner_only(topology, tmp_path):
    output = export_compose(topology, tmp_path / "deploy" / "compose.yaml", epoch_wall_s=EPOCH_S)
    secrets = output.parent / "compose-secrets"
    files = [p for p in secrets.rglob("*") if p.is_file()]
    assert len(files) > 10
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    for folder in [secrets, *(p for p in secrets.rglob("*") if p.is_dir())]:
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
    document = yaml.safe_load(output.read_text())
    for secret in document["secrets"].values():
        assert (output.parent / secret["file"]).is_file()
    # What a container mounts is a key pair zmq can load.
    public, secret = zmq.auth.load_certificate(secrets / "broker" / "broker.key_secret")
    assert public and secret


def test_insecure_export_has_no_keys(topology):
    bundle = build_compose(topology, epoch_wall_s=EPOCH_S, secure=False)
    plan = delivered_plan(bundle)
    assert not plan.secure and plan.secrets_dir is None and plan.public_keys is None
    assert not bundle.secret_files and "secrets" not in bundle.document


# ---- Kubernetes --------------------------------------------------------------------------


def test_k8s_secrets_hold_each_process_own_keys(topology):
    manifests = build_manifests(topology, epoch_wall_s=EPOCH_S)
    secrets = {m["metadata"]["name"]: m for m in manifests if m["kind"] == "Secret"}
    config = next(m for m in manifests if m["kind"] == "ConfigMap")
    plan = RunPlan.model_validate(json.loads(config["data"]["run.json"]))
    for process in plan.processes:
        data = secrets[f"{service_host(process.name)}-keys"]["data"]
        expected = {f"{process.name}.key_secret"}
        expected |= {f"kme-{process.name}.key"} if process.name in SAE_NODES else set()
        assert set(data) == expected
        decoded = base64.b64decode(data[f"{process.name}.key_secret"]).decode()
        assert plan.public_keys[process.name] in decoded
    assert "pki--ca.crt" in config["data"] and "pki--kme-alice.crt" in config["data"]
    for deployment in (m for m in manifests if m["kind"] == "Deployment"):
        volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
        items = volumes["run"]["configMap"]["items"]
        assert volumes["run"]["configMap"]["name"] == RUN_CONFIG_MAP
        assert {"key": "pki--ca.crt", "path": "pki/ca.crt"} in items
        assert {"key": "run.json", "path": "run.json"} in items
        assert "emptyDir" in volumes["state"]


def test_k8s_kme_port_is_served_for_sae_nodes(topology):
    manifests = build_manifests(topology, epoch_wall_s=EPOCH_S)
    services = {m["metadata"]["name"]: m for m in manifests if m["kind"] == "Service"}
    assert {"name": "kme", "port": KME_PORT, "targetPort": "kme", "protocol": "TCP"} in services[
        "alice"
    ]["spec"]["ports"]
    assert all(p["name"] != "kme" for p in services["broker"]["spec"]["ports"])


def test_k8s_export_writes_secrets_owner_only_and_the_operator_keys_outside(topology, tmp_path):
    paths = export_k8s(topology, tmp_path / "k8s", epoch_wall_s=EPOCH_S)
    for path in paths:
        mode = stat.S_IMODE(path.stat().st_mode)
        if "-secret-" in path.name:
            assert mode == 0o600, path
    operator = tmp_path / "k8s-secrets" / "operator"
    assert (operator / "pki" / "ca.key").is_file() and (operator / "pki" / "bob_app.key").is_file()
    manifests = (tmp_path / "k8s").iterdir()
    assert not any(p.suffix in {".key", ".crt", ".key_secret"} for p in manifests)
