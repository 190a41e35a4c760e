"""Topology families (line, ring, star, grid) built from a Mininet-style spec such as `line,5`."""

import itertools
from collections.abc import Callable, Mapping
from typing import Any

from qnemu.topology.load import TopologyError, parse_topology
from qnemu.topology.models import Topology

__all__ = ["BUILDERS", "build_topology", "grid", "line", "ring", "star"]

# A family's link unless the caller overrides it: instant pairs over a 10 km metro fibre.
DEFAULT_LINK: dict[str, Any] = {"model": "perfect", "length_km": 10.0}

Overrides = Mapping[str, Any] | None


def _topology(
    name: str,
    node_names: list[str],
    pairs: list[tuple[str, str]],
    *,
    node: Overrides,
    link: Overrides,
    time_scale: float,
    seed: int | None,
) -> Topology:
    # Through the file parser, so that overrides get the same defaults and errors as YAML.
    data = {
        "name": name,
        "time_scale": time_scale,
        "seed": seed,
        "defaults": {"node": dict(node or {}), "link": {**DEFAULT_LINK, **(link or {})}},
        "nodes": {node_name: {} for node_name in node_names},
        "links": [{"nodes": [a, b]} for a, b in pairs],
    }
    return parse_topology(data, f"builder {name}")


def _at_least(family: str, argument: str, value: int, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise TopologyError(
            f"builder {family}", [f"{argument} must be an integer >= {minimum} (got {value!r})"]
        )


def line(
    n: int,
    *,
    node: Overrides = None,
    link: Overrides = None,
    time_scale: float = 1.0,
    seed: int | None = None,
) -> Topology:
    """`n` nodes n0 … n(n−1) in a chain."""
    _at_least("line", "n", n, 2)
    names = [f"n{i}" for i in range(n)]
    pairs = list(itertools.pairwise(names))
    return _topology(
        f"line-{n}", names, pairs, node=node, link=link, time_scale=time_scale, seed=seed
    )


def ring(
    n: int,
    *,
    node: Overrides = None,
    link: Overrides = None,
    time_scale: float = 1.0,
    seed: int | None = None,
) -> Topology:
    """`n` nodes n0 … n(n−1) in a closed ring."""
    _at_least("ring", "n", n, 3)
    names = [f"n{i}" for i in range(n)]
    pairs = [(names[i], names[(i + 1) % n]) for i in range(n)]
    return _topology(
        f"ring-{n}", names, pairs, node=node, link=link, time_scale=time_scale, seed=seed
    )


def star(
    n: int,
    *,
    node: Overrides = None,
    link: Overrides = None,
    time_scale: float = 1.0,
    seed: int | None = None,
) -> Topology:
    """A `hub` linked to `n` leaves leaf0 … leaf(n−1)."""
    _at_least("star", "n", n, 1)
    leaves = [f"leaf{i}" for i in range(n)]
    pairs = [("hub", leaf) for leaf in leaves]
    return _topology(
        f"star-{n}", ["hub", *leaves], pairs, node=node, link=link, time_scale=time_scale, seed=seed
    )


def grid(
    rows: int,
    cols: int,
    *,
    node: Overrides = None,
    link: Overrides = None,
    time_scale: float = 1.0,
    seed: int | None = None,
) -> Topology:
    """`rows` × `cols` nodes, row by row n0 … n(rows·cols−1), each linked to its 4-neighbours."""
    _at_least("grid", "rows", rows, 1)
    _at_least("grid", "cols", cols, 1)
    if rows * cols < 2:
        raise TopologyError("builder grid", ["a grid needs at least 2 nodes (got 1,1)"])
    names = [f"n{r * cols + c}" for r in range(rows) for c in range(cols)]
    pairs = []
    for r in range(rows):
        for c in range(cols):
            here = names[r * cols + c]
            if c + 1 < cols:
                pairs.append((here, names[r * cols + c + 1]))
            if r + 1 < rows:
                pairs.append((here, names[(r + 1) * cols + c]))
    return _topology(
        f"grid-{rows}x{cols}", names, pairs, node=node, link=link, time_scale=time_scale, seed=seed
    )


BUILDERS: dict[str, Callable[..., Topology]] = {
    "line": line,
    "ring": ring,
    "star": star,
    "grid": grid,
}
_USAGE = {"line": "line,N", "ring": "ring,N", "star": "star,LEAVES", "grid": "grid,ROWS,COLS"}
_ARITY = {"line": 1, "ring": 1, "star": 1, "grid": 2}


def build_topology(spec: str, **overrides: Any) -> Topology:
    """A topology from a spec such as `line,5`, `ring,6`, `star,4` or `grid,2,3`.

    Args:
        spec: builder name and its integer arguments, comma-separated.
        **overrides: `node` and `link` parameter mappings, `time_scale`, `seed`.

    Raises:
        TopologyError: unknown builder, wrong arguments, or invalid link/node parameters.
    """
    usage = "known builders: " + "; ".join(_USAGE.values())
    family, *arguments = [part.strip() for part in spec.split(",")]
    if family not in BUILDERS:
        raise TopologyError(spec, [f"unknown builder {family!r} ({usage})"])
    if len(arguments) != _ARITY[family] or not all(arg.isdigit() for arg in arguments):
        raise TopologyError(spec, [f"{family} takes {_USAGE[family]} with whole numbers ({usage})"])
    return BUILDERS[family](*(int(arg) for arg in arguments), **overrides)
