"""Run directories: where a run's plan, logs, status and summary live."""

import json
import os
import time
from pathlib import Path
from typing import Any

__all__ = [
    "DEFAULT_RUNS_DIR",
    "STATUS_FILE",
    "new_run_dir",
    "process_alive",
    "read_status",
    "resolve_run_dir",
    "write_json",
]

DEFAULT_RUNS_DIR = Path("qnemu-runs")
STATUS_FILE = "status.json"
LATEST = "latest"


def new_run_dir(network: str, root: Path = DEFAULT_RUNS_DIR) -> Path:
    """A fresh directory `root/<network>-<timestamp>`, pointed to by `root/latest`."""
    root.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    run_dir = root / f"{network}-{stamp}"
    suffix = 1
    while run_dir.exists():
        suffix += 1
        run_dir = root / f"{network}-{stamp}-{suffix}"
    run_dir.mkdir()
    latest = root / LATEST
    if latest.is_symlink() or latest.exists():
        latest.unlink()
    latest.symlink_to(run_dir.name)
    return run_dir


def resolve_run_dir(run_dir: str | Path | None) -> Path:
    """The run directory a command means: the flag, $QNEMU_RUN_DIR, or the latest run."""
    chosen = run_dir or os.environ.get("QNEMU_RUN_DIR") or DEFAULT_RUNS_DIR / LATEST
    path = Path(chosen)
    if not (path / "run.json").is_file():
        raise FileNotFoundError(
            f"no running network found at {path} (start one with `qnemu up TOPOLOGY`, "
            "or pass --run-dir)"
        )
    return path.resolve()


def write_json(path: Path, data: Any) -> None:
    """Write atomically, so a reader never sees half a file."""
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(data, indent=2, default=str))
    temporary.replace(path)


def read_status(run_dir: Path) -> dict[str, Any]:
    path = run_dir / STATUS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} has no {STATUS_FILE}: was it started by `qnemu up`?")
    return json.loads(path.read_text())


def process_alive(pid: int, run_dir: Path) -> bool:
    """True if pid runs and is one of this run's processes (guards against pid reuse)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "Z":  # a zombie is not running
            return False
    except (OSError, IndexError):
        return False
    return str(run_dir) in cmdline
