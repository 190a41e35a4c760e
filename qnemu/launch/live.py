"""The live view of a running network and its end-of-run summary."""

import math
import time
from typing import Any

from rich.table import Table

from qnemu.launch.plan import RunPlan

__all__ = ["link_figures", "render", "summary_table"]


def link_figures(  # per-link figures merged from its station and its two nodes
    plan: RunPlan, stats: dict[str, dict[str, Any]], previous: dict[str, Any] | None, dt_s: float
) -> dict[str, dict[str, Any]]:
    topology = plan.topology_model()
    figures: dict[str, dict[str, Any]] = {}
    for station, link in topology.stations():
        a, b = link.nodes
        name = f"{a}-{b}"
        station_stats = stats.get(station, {})
        delivered = 0
        fidelity_weighted = 0.0
        for node, peer in ((a, b), (b, a)):
            per_link = stats.get(node, {}).get("links", {}).get(peer, {})
            count = per_link.get("delivered", 0)
            delivered += count
            if count and not math.isnan(per_link.get("mean_fidelity", math.nan)):
                fidelity_weighted += count * per_link["mean_fidelity"]
        pairs = station_stats.get("pairs", 0)
        before = (previous or {}).get(name, {}).get("pairs", pairs)
        figures[name] = {
            "model": link.model,
            "station_up": station in stats,
            "attempts": station_stats.get("attempts", 0),
            "pairs": pairs,
            "delivered": delivered,
            "rate_hz": (pairs - before) / dt_s if dt_s > 0 else 0.0,
            "mean_fidelity": fidelity_weighted / delivered if delivered else math.nan,
            "expected_fidelity": station_stats.get("expected_fidelity", math.nan),
            "expected_rate_hz": station_stats.get("expected_rate_hz", math.nan),
            "mean_rate_hz": pairs / uptime
            if (uptime := station_stats.get("uptime_s"))
            else math.nan,
            "success_probability": station_stats.get("success_probability", math.nan),
        }
    return figures


def _number(value: float | None, digits: int = 4) -> str:
    if value is None or math.isnan(value):
        return "–"
    return f"{value:.{digits}f}"


def render(
    plan: RunPlan,
    stats: dict[str, dict[str, Any]],
    links: dict[str, dict[str, Any]],
    started: float,
    run_dir: str,
) -> Table:
    elapsed = time.monotonic() - started
    table = Table(
        title=f"qnemu · {plan.network} · {elapsed:5.1f} s · run dir {run_dir}",
        caption="Ctrl-C stops the network",
    )
    columns = (
        "link",
        "model",
        "attempts",
        "pairs",
        "pairs/s",
        "model pairs/s",
        "delivered",
        "fidelity",
        "model F",
    )
    for column in columns:
        table.add_column(column, justify="left" if column in ("link", "model") else "right")
    for name, figures in links.items():
        table.add_row(
            name if figures["station_up"] else f"[red]{name} (station down)",
            figures["model"],
            str(figures["attempts"]),
            str(figures["pairs"]),
            f"{figures['rate_hz']:.1f}",
            _number(figures["expected_rate_hz"], 1),
            str(figures["delivered"]),
            _number(figures["mean_fidelity"]),
            _number(figures["expected_fidelity"]),
        )
    table.add_section()
    for process in plan.processes:
        if process.role != "node":
            continue
        node_stats = stats.get(process.name)
        if node_stats is None:
            table.add_row(f"[red]{process.name} (down)", "node", *[""] * 7)
            continue
        memory = node_stats["memory"]
        table.add_row(
            process.name,
            "node",
            "",
            "",
            "",
            "",
            f"memory {memory['in_use']}/{memory['capacity']}",
            f"requests {node_stats['active_requests']}",
            "",
        )
    return table


def summary_table(links: dict[str, dict[str, Any]], duration_s: float) -> Table:
    table = Table(title=f"summary ({duration_s:.1f} s)")
    columns = ("link", "pairs", "pairs/s", "model pairs/s", "delivered", "fidelity", "model F")
    for column in columns:
        table.add_column(column)
    for name, figures in links.items():
        table.add_row(
            name,
            str(figures["pairs"]),
            _number(figures["mean_rate_hz"], 1),
            _number(figures["expected_rate_hz"], 1),
            str(figures["delivered"]),
            _number(figures["mean_fidelity"]),
            _number(figures["expected_fidelity"]),
        )
    return table
