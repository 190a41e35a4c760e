"""Kubernetes manifests for a run: a Deployment and a Service per process, one ConfigMap.

Every process is a one-replica Deployment (`Recreate`: two copies of one emulated node
must never run side by side) behind a Service of the same name, so peers reach
`tcp://delft:5555` exactly as under Compose. The run plan and topology travel in the
ConfigMap `qnemu-run` (with the KMEs' certificates), mounted read-only at the run
directory; each process's own keys (its Curve key pair, a KME's TLS key) are its Secret
`<name>-keys`, mounted at /run/secrets/qnemu; what a node writes (its key store) goes to
an emptyDir at /var/lib/qnemu. Pods carry `prometheus.io/*` annotations for
annotation-based scraping. Objects carry no namespace: apply them into the one you
choose (`kubectl apply -n`). The operator's keys (CA, SAEs, clients) are written beside
the manifests, in `<directory>-secrets/operator/`, never into the cluster.
"""

import base64
from pathlib import Path
from typing import Any

import yaml

from qnemu.launch.credentials import Credentials
from qnemu.launch.export import (
    CONTAINER_RUN_DIR,
    DEFAULT_IMAGE,
    SECRETS_DIR,
    STATE_DIR,
    USER_ID,
    container_run,
    dump_yaml,
    health_command,
    process_command,
    service_host,
    write_secret,
)
from qnemu.launch.plan import PLAN_FILE, ProcessPlan, RunPlan
from qnemu.topology import Topology

__all__ = [
    "KEYS_DIR",
    "RUN_CONFIG_MAP",
    "build_manifests",
    "export_k8s",
    "selector_labels",
    "write_manifests",
]

RUN_CONFIG_MAP = "qnemu-run"
KEYS_DIR = SECRETS_DIR
CONTAINER = "qnemu"


def selector_labels(plan: RunPlan, process: ProcessPlan) -> dict[str, str]:
    """The labels a process's Service and Deployment select its pod by."""
    return {"app.kubernetes.io/instance": plan.network, "qnemu/process": service_host(process.name)}


def _labels(plan: RunPlan, process: ProcessPlan | None = None) -> dict[str, str]:
    labels = {"app.kubernetes.io/name": "qnemu", "app.kubernetes.io/instance": plan.network}
    if process is not None:
        labels |= {"app.kubernetes.io/component": process.role} | selector_labels(plan, process)
    return labels


def _metadata(name: str, labels: dict[str, str], **extra: Any) -> dict[str, Any]:
    return {"name": name, "labels": labels, **extra}


def build_manifests(
    topology: Topology,
    *,
    image: str = DEFAULT_IMAGE,
    image_pull_policy: str = "IfNotPresent",
    epoch_wall_s: float | None = None,
    secure: bool = True,
    credentials_out: list[Credentials] | None = None,
) -> list[dict[str, Any]]:
    """Every object of the run, ConfigMap first, then Secret, Service, Deployment per process.
    A secure run's credentials are also appended to `credentials_out`, when given."""
    plan, credentials = container_run(topology, secure=secure, epoch_wall_s=epoch_wall_s)
    if credentials is not None and credentials_out is not None:
        credentials_out.append(credentials)
    certificates = credentials.certificates if credentials is not None else {}
    config_map = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(
            RUN_CONFIG_MAP,
            _labels(plan),
            annotations={"qnemu/epoch-wall-s": repr(plan.epoch_wall_s)},
        ),
        "data": {
            PLAN_FILE: plan.model_dump_json(indent=2) + "\n",
            "topology.yaml": yaml.safe_dump(plan.topology, sort_keys=False),
        }
        | {_config_key(path): text for path, text in certificates.items()},
    }
    run_items = [{"key": key, "path": _config_path(key)} for key in config_map["data"]]
    objects: list[dict[str, Any]] = [config_map]
    for process in plan.processes:
        own = credentials.secrets[process.name] if credentials is not None else {}
        objects += [
            _secret(plan, process, own),
            _service(plan, process),
            _deployment(plan, process, image, image_pull_policy, run_items),
        ]
    return objects


def _config_key(relative: str) -> str:
    """A ConfigMap key (no `/`) for a file at `relative` in the run directory."""
    return relative.replace("/", "--")


def _config_path(key: str) -> str:
    return key.replace("--", "/")


def _ports(process: ProcessPlan) -> list[tuple[str, int]]:
    ports = [("zmq", int(process.endpoint.rsplit(":", 1)[1])), ("metrics", process.metrics_port)]
    return ports + ([("kme", process.kme_port)] if process.kme_port else [])


def _secret(plan: RunPlan, process: ProcessPlan, files: dict[str, str]) -> dict[str, Any]:
    """The process's own keys; empty for an insecure run."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": _metadata(f"{service_host(process.name)}-keys", _labels(plan, process)),
        "data": {name: base64.b64encode(text.encode()).decode() for name, text in files.items()},
    }


def _service(plan: RunPlan, process: ProcessPlan) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(service_host(process.name), _labels(plan, process)),
        "spec": {
            "type": "ClusterIP",
            "selector": selector_labels(plan, process),
            # Peers must reach a process before it reports ready, as under Compose.
            "publishNotReadyAddresses": True,
            "ports": [
                {"name": name, "port": port, "targetPort": name, "protocol": "TCP"}
                for name, port in _ports(process)
            ],
        },
    }


def _deployment(
    plan: RunPlan,
    process: ProcessPlan,
    image: str,
    image_pull_policy: str,
    run_items: list[dict[str, str]],
) -> dict[str, Any]:
    host = service_host(process.name)
    probe = {"exec": {"command": health_command(process)}, "timeoutSeconds": 3}
    container = {
        "name": CONTAINER,
        "image": image,
        "imagePullPolicy": image_pull_policy,
        "command": process_command(process),
        "env": [
            {"name": "QNEMU_PROCESS", "value": process.name},
            {"name": "QNEMU_RUN_DIR", "value": CONTAINER_RUN_DIR},
        ],
        "ports": [
            {"name": name, "containerPort": port, "protocol": "TCP"}
            for name, port in _ports(process)
        ],
        "readinessProbe": probe | {"periodSeconds": 5, "failureThreshold": 3},
        "livenessProbe": {"exec": {"command": [*health_command(process), "--live"]}}
        | {"timeoutSeconds": 3, "initialDelaySeconds": 20, "periodSeconds": 10}
        | {"failureThreshold": 6},
        "resources": {"requests": {"cpu": "50m", "memory": "128Mi"}},
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [
            {"name": "run", "mountPath": CONTAINER_RUN_DIR, "readOnly": True},
            {"name": "keys", "mountPath": KEYS_DIR, "readOnly": True},
            # A node's key store: it outlives container restarts, not the pod (use a
            # PersistentVolumeClaim here for keys that must outlive the pod).
            {"name": "state", "mountPath": STATE_DIR},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
    }
    pod = {
        "metadata": {
            "labels": _labels(plan, process),
            "annotations": {
                "prometheus.io/scrape": "true",
                "prometheus.io/port": str(process.metrics_port),
                "prometheus.io/path": "/metrics",
            },
        },
        "spec": {
            # The pod's own name resolves to its own address (/etc/hosts), so a plan
            # whose endpoint is `tcp://delft:5555` can bind it inside the pod.
            "hostname": host,
            "enableServiceLinks": False,
            "automountServiceAccountToken": False,
            "terminationGracePeriodSeconds": 10,
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": USER_ID,
                "runAsGroup": USER_ID,
                "fsGroup": USER_ID,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [container],
            "volumes": [
                {"name": "run", "configMap": {"name": RUN_CONFIG_MAP, "items": run_items}},
                {
                    "name": "keys",
                    # Group-readable by fsGroup (the process's group), by nobody else.
                    "secret": {"secretName": f"{host}-keys", "defaultMode": 0o440},
                },
                {"name": "state", "emptyDir": {"sizeLimit": "256Mi"}},
                {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}},
            ],
        },
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(host, _labels(plan, process)),
        "spec": {
            "replicas": 1,
            "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": selector_labels(plan, process)},
            "template": pod,
        },
    }


def write_manifests(objects: list[dict[str, Any]], directory: Path) -> list[Path]:
    """One file per object, numbered in apply order; returns the paths written."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, manifest in enumerate(objects):
        name = manifest["metadata"]["name"]
        path = directory / f"{index:03d}-{manifest['kind'].lower()}-{name}.yaml"
        if manifest["kind"] == "Secret":
            write_secret(path, dump_yaml(manifest), base=directory)
        else:
            path.write_text(dump_yaml(manifest))
        paths.append(path)
    return paths


def export_k8s(topology: Topology, directory: Path, **options: Any) -> list[Path]:
    """Write the run's manifests into `directory` (`kubectl apply -f DIRECTORY`), and a
    secure run's operator keys into `<directory>-secrets/operator/`."""
    directory = Path(directory)
    credentials: list[Credentials] = []
    written = write_manifests(
        build_manifests(topology, credentials_out=credentials, **options), directory
    )
    for run in credentials:
        base = directory.parent / f"{directory.name}-secrets"
        for relative, text in run.operator.items():
            write_secret(base / "operator" / relative, text, base=directory.parent)
    return written
