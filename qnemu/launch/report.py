"""`qnemu report RUN_DIR`: one self-contained HTML page of a finished run, charts over time.

Made from what the run recorded (RUN_DIR/timeseries.jsonl, summary.json, status.json,
run.json): pair rate and fidelity per link, secret key rate and QBER per QKD link,
message lateness per process and memory use per node, each a hand-drawn inline SVG, so
the page opens anywhere with no script and no network. Rates are per emulated second,
from differences of the recorded cumulative counts; fidelity and QBER are those of the
pairs and samples of each interval.
"""

import html
import itertools
import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from qnemu.launch.record import TIMESERIES_FILE

__all__ = [
    "NothingRecordedError",
    "Series",
    "chart_svg",
    "load_samples",
    "report_series",
    "write_report",
]

REPORT_FILE = "report.html"
COLOURS = (
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd",
    "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
)  # fmt: skip
WIDTH, HEIGHT = 760, 280
LEFT, RIGHT, TOP, BOTTOM = 64, 150, 30, 40  # room for tick labels and the legend
Series = dict[str, list[tuple[float, float | None]]]  # label -> (t_s, value or gap)


class NothingRecordedError(FileNotFoundError):
    """The run directory holds no samples to report on."""


def load_samples(run_dir: Path) -> list[dict[str, Any]]:
    """The recorded samples in time order; a line cut short by a crash is skipped."""
    path = Path(run_dir) / TIMESERIES_FILE
    if not path.is_file():
        return []
    samples = []
    for line in path.read_text().splitlines():
        if line.strip():
            try:
                samples.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return sorted(samples, key=lambda sample: sample["t_s"])


def _names(samples: list[dict[str, Any]], section: str) -> list[str]:
    names: dict[str, None] = {}
    for sample in samples:
        names.update(dict.fromkeys(sample.get(section, {})))
    return list(names)


def _differences(
    samples: list[dict[str, Any]],
    section: str,
    value: Callable[[dict[str, Any], dict[str, Any], float], float | None],
) -> Series:
    """Per entity of `section`, value(before, after, emulated seconds between) at each
    sample after the first; a gap where either sample lacks the entity."""
    series: Series = {}
    for name in _names(samples, section):
        points = []
        for before, after in itertools.pairwise(samples):
            old, new = before.get(section, {}).get(name), after.get(section, {}).get(name)
            dt_s = after["emulated_s"] - before["emulated_s"]
            result = value(old, new, dt_s) if old and new and dt_s > 0 else None
            points.append((after["t_s"], result))
        series[name] = points
    return series


def _rate(key: str) -> Callable[[dict, dict, float], float | None]:
    def rate(old: dict, new: dict, dt_s: float) -> float | None:
        if old.get(key) is None or new.get(key) is None or new[key] < old[key]:
            return None  # unknown, or a restarted process counting from zero again
        return (new[key] - old[key]) / dt_s

    return rate


def _interval_fidelity(old: dict, new: dict, dt_s: float) -> float | None:
    """Mean fidelity of the pairs delivered in the interval, from the cumulative means."""
    counts = (old.get("delivered"), new.get("delivered"))
    if None in counts or counts[1] <= counts[0]:
        return None
    total = [
        (c or 0) * (f.get("mean_fidelity") or 0.0) for c, f in zip(counts, (old, new), strict=True)
    ]
    return (total[1] - total[0]) / (counts[1] - counts[0])


def _interval_qber(old: dict, new: dict, dt_s: float) -> float | None:
    bits = (old.get("sample_bits"), new.get("sample_bits"))
    errors = (old.get("sample_errors"), new.get("sample_errors"))
    if None in bits or None in errors or bits[1] <= bits[0] or errors[1] < errors[0]:
        return None
    return (errors[1] - errors[0]) / (bits[1] - bits[0])


def _levels(samples: list[dict[str, Any]], section: str, key: str) -> Series:
    return {
        name: [(s["t_s"], s.get(section, {}).get(name, {}).get(key)) for s in samples]
        for name in _names(samples, section)
    }


def report_series(samples: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Every chart of the report: id -> title, unit and series (empty charts left out)."""
    links, qkd = "links", "qkd"
    charts = {
        "pair_rate": (
            "Pair rate per link",
            "pairs / s",
            _differences(samples, links, _rate("pairs")),
        ),
        "fidelity": (
            "Fidelity of delivered pairs per link",
            "fidelity",
            _differences(samples, links, _interval_fidelity),
        ),
        "key_rate": (
            "Secret key rate per QKD link",
            "bits / s",
            _differences(samples, qkd, _rate("secret_key_bits")),
        ),
        "qber": ("QBER per QKD link", "QBER", _differences(samples, qkd, _interval_qber)),
        "lateness_p99": (
            "Message lateness p99 per process",
            "s",
            _levels(samples, "lateness", "p99_s"),
        ),
        "memory": ("Memory in use per node", "qubits", _levels(samples, "nodes", "memory_in_use")),
    }
    return {
        key: {"title": title, "unit": unit, "series": series}
        for key, (title, unit, series) in charts.items()
        if any(value is not None for points in series.values() for _, value in points)
    }


def _nice_step(span: float, ticks: int = 5) -> float:
    raw = span / ticks
    magnitude = 10 ** math.floor(math.log10(raw))
    return next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)


def _ticks(low: float, high: float) -> list[float]:
    if high <= low:
        high = low + (abs(low) * 0.1 or 1.0)  # a flat line: a narrow band around it
    step = _nice_step(high - low)
    first = math.floor(low / step) * step
    count = math.ceil((high - first) / step - 1e-9)
    return [first + i * step for i in range(count + 1)]


def _label(value: float) -> str:
    return f"{value:.3g}" if value else "0"


def chart_svg(title: str, unit: str, series: Series, x_unit: str = "s since start") -> str:
    """A line chart as inline SVG: one polyline per series, broken at gaps, with axes,
    ticks and a legend."""
    values = [v for points in series.values() for _, v in points if v is not None]
    times = [t for points in series.values() for t, _ in points]
    y_ticks = _ticks(min(0.0, *values) if unit != "fidelity" else min(values), max(values))
    x_ticks = _ticks(min(times), max(times))
    x0, x1, y0, y1 = x_ticks[0], x_ticks[-1], y_ticks[0], y_ticks[-1]
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x(t: float) -> float:
        return LEFT + (t - x0) / (x1 - x0) * plot_w

    def y(v: float) -> float:
        return TOP + plot_h - (v - y0) / (y1 - y0) * plot_h

    parts = [
        f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" '
        f'height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" role="img">',
        f"<title>{html.escape(title)}</title>",
        f'<text x="{LEFT}" y="18" class="title">{html.escape(title)}</text>',
    ]
    for tick in y_ticks:
        parts.append(
            f'<line x1="{LEFT}" x2="{LEFT + plot_w}" y1="{y(tick):.1f}" y2="{y(tick):.1f}" '
            f'class="grid"/><text x="{LEFT - 6}" y="{y(tick) + 4:.1f}" '
            f'text-anchor="end">{_label(tick)}</text>'
        )
    for tick in x_ticks:
        parts.append(
            f'<text x="{x(tick):.1f}" y="{TOP + plot_h + 16}" text-anchor="middle">'
            f"{_label(tick)}</text>"
        )
    parts.append(
        f'<line x1="{LEFT}" x2="{LEFT}" y1="{TOP}" y2="{TOP + plot_h}" class="axis"/>'
        f'<line x1="{LEFT}" x2="{LEFT + plot_w}" y1="{TOP + plot_h}" y2="{TOP + plot_h}" '
        f'class="axis"/><text x="{LEFT + plot_w / 2}" y="{HEIGHT - 6}" '
        f'text-anchor="middle">{html.escape(x_unit)}</text><text x="14" '
        f'y="{TOP + plot_h / 2}" text-anchor="middle" transform="rotate(-90 14 '
        f'{TOP + plot_h / 2})">{html.escape(unit)}</text>'
    )
    for index, (name, points) in enumerate(series.items()):
        colour = COLOURS[index % len(COLOURS)]
        segments: list[list[tuple[float, float]]] = [[]]
        for t, value in points:
            if value is None:
                segments.append([])
            else:
                segments[-1].append((t, value))
        parts.append(f'<g class="series" data-name="{html.escape(name)}" stroke="{colour}">')
        for segment in segments:
            if len(segment) > 1:
                path = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in segment)
                parts.append(f'<polyline fill="none" stroke-width="1.5" points="{path}"/>')
            elif segment:  # a lone point between gaps: a dot, or it would not show
                (t, v) = segment[0]
                parts.append(f'<circle cx="{x(t):.1f}" cy="{y(v):.1f}" r="2" fill="{colour}"/>')
        parts.append(f"<title>{html.escape(name)}</title></g>")
        legend_y = TOP + 14 * index + 6
        parts.append(
            f'<line x1="{WIDTH - RIGHT + 12}" x2="{WIDTH - RIGHT + 30}" y1="{legend_y}" '
            f'y2="{legend_y}" stroke="{colour}" stroke-width="2"/><text '
            f'x="{WIDTH - RIGHT + 36}" y="{legend_y + 4}">{html.escape(name)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _cell(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return html.escape(str(value))


def _table(columns: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{_cell(v)}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _link_rows(samples: list[dict[str, Any]], summary: dict[str, Any], topology: dict) -> list:
    """Totals per link: from summary.json when the run wrote one, else the last sample."""
    first, last = samples[0], samples[-1]
    span_s = last["emulated_s"] - first["emulated_s"]
    models = {"-".join(link["nodes"]): link for link in topology.get("links", [])}
    rows = []
    for name in _names(samples, "links"):
        recorded = last["links"].get(name, {})
        summed = summary.get("links", {}).get(name, {})
        start = first["links"].get(name, {}).get("pairs")
        rate = None
        if span_s > 0 and start is not None and recorded.get("pairs") is not None:
            rate = (recorded["pairs"] - start) / span_s
        link = models.get(name, {})
        rows.append(
            [
                name,
                link.get("model"),
                link.get("length_km"),
                summed.get("pairs", recorded.get("pairs")),
                summed.get("delivered", recorded.get("delivered")),
                rate,
                recorded.get("expected_rate_hz", summed.get("expected_rate_hz")),
                summed.get("mean_fidelity", recorded.get("mean_fidelity")),
                recorded.get("expected_fidelity", summed.get("expected_fidelity")),
            ]
        )
    return rows


def _topology_svg(topology: dict) -> str:
    """Nodes on a circle, links as lines: enough to see who is linked to whom."""
    nodes = list(topology.get("nodes", {}))
    if not nodes:
        return ""
    size, radius = 320, 120
    angle = {n: 2 * math.pi * i / len(nodes) - math.pi / 2 for i, n in enumerate(nodes)}
    centre = size / 2
    position = {
        n: (centre + radius * math.cos(a), centre + radius * math.sin(a)) for n, a in angle.items()
    }
    parts = [f'<svg class="topology" width="{size}" height="{size}" viewBox="0 0 {size} {size}">']
    for link in topology.get("links", []):
        (ax, ay), (bx, by) = (position[n] for n in link["nodes"])
        parts.append(
            f'<line x1="{ax:.1f}" y1="{ay:.1f}" x2="{bx:.1f}" y2="{by:.1f}" class="link">'
            f"<title>{html.escape('-'.join(link['nodes']))} ({html.escape(link['model'])})"
            "</title></line>"
        )
    for name, (px, py) in position.items():
        parts.append(
            f'<circle cx="{px:.1f}" cy="{py:.1f}" r="7" class="node"/>'
            f'<text x="{px:.1f}" y="{py - 11:.1f}" text-anchor="middle">{html.escape(name)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; max-width: 1100px; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
td, th { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
td:first-child, th:first-child { text-align: left; }
svg text { font-size: 11px; fill: #333; } svg .title { font-size: 13px; font-weight: bold; }
svg .grid { stroke: #e5e5e5; } svg .axis { stroke: #555; }
svg .link { stroke: #888; stroke-width: 2; } svg .node { fill: #1f77b4; }
.chart { display: block; margin-bottom: 1em; }
"""


def write_report(run_dir: Path, output: Path | None = None) -> Path:
    """Write the HTML report of a run (default RUN_DIR/report.html); returns its path."""
    run_dir = Path(run_dir)
    output = Path(output) if output is not None else run_dir / REPORT_FILE
    if output.suffix.lower() not in (".html", ".htm"):
        raise ValueError(f"{output}: the report is HTML only (name it .html)")
    samples = load_samples(run_dir)
    if not samples:
        raise NothingRecordedError(
            f"{run_dir} recorded nothing (no samples in {TIMESERIES_FILE}): record a run with "
            "`qnemu up` (attached) or `qnemu record RUN_DIR` beside a detached one"
        )
    plan = _read_json(run_dir / "run.json")
    status = _read_json(run_dir / "status.json")
    summary = _read_json(run_dir / "summary.json")
    topology = plan.get("topology", {})
    network = plan.get("network") or status.get("network") or run_dir.name
    charts = report_series(samples)
    duration_s = summary.get("duration_s", samples[-1]["t_s"] - samples[0]["t_s"])
    run_rows = [
        ["network", network],
        ["run directory", str(run_dir.resolve())],
        ["state", status.get("state")],
        ["time scale (wall s per emulated s)", plan.get("time_scale")],
        ["seed", plan.get("seed")],
        ["duration (s)", float(duration_s)],
        ["samples", len(samples)],
        ["recorded", time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(samples[0]["wall_time"]))],
    ]
    up_at_end = set(samples[-1].get("up", []))
    processes = [
        [p["name"], p["role"], p.get("pid"), "up" if p["name"] in up_at_end else "down"]
        for p in status.get("processes", [])
    ]
    nodes = [
        [name, (config or {}).get("qubits"), (config or {}).get("saes") or None]
        for name, config in topology.get("nodes", {}).items()
    ]
    body = [
        f"<h1>qnemu run report · {html.escape(network)}</h1>",
        "<h2>Run</h2>",
        _table(["", ""], run_rows),
        "<h2>Links</h2>",
        _table(
            [
                "link",
                "model",
                "length km",
                "pairs",
                "delivered",
                "pairs/s",
                "model pairs/s",
                "fidelity",
                "model F",
            ],
            _link_rows(samples, summary, topology),
        ),
        "<h2>Charts</h2>",
        "<p>Time in wall seconds since the run started; rates per emulated second.</p>",
    ]
    if len(samples) < 2:
        body.append("<p>Only one sample was recorded: rates need two.</p>")
    for chart in charts.values():
        body.append(chart_svg(chart["title"], chart["unit"], chart["series"]))
    body += [
        "<h2>Topology</h2>",
        _topology_svg(topology),
        _table(["node", "qubits", "SAEs"], nodes),
    ]
    if processes:
        body += ["<h2>Processes</h2>", _table(["name", "role", "pid", "at end"], processes)]
    data = json.dumps({key: chart["series"] for key, chart in charts.items()})
    body.append(  # the plotted numbers, for whoever wants them (no script runs)
        '<script type="application/json" id="qnemu-series">'
        + data.replace("</", "<\\/")
        + "</script>"
    )
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>qnemu report · {html.escape(network)}</title><style>{STYLE}</style></head>"
        f"<body>{''.join(body)}</body></html>\n"
    )
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(page)
    return output
