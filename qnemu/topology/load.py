"""Topology files: YAML in, a validated `Topology` out, or every problem with its place."""

import difflib
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from qnemu.topology.models import (
    LINK_MODELS,
    NAME_PATTERN,
    NETWORK_NAME_PATTERN,
    NodeConfig,
    Topology,
    WorkloadConfig,
    reference_problems,
)

__all__ = [
    "SHIPPED_TOPOLOGIES_DIR",
    "TopologyError",
    "load_topology",
    "parse_topology",
    "read_yaml",
    "shipped_topologies",
    "validate_file",
]

# The repository's topologies/ directory (data, not part of the import package).
SHIPPED_TOPOLOGIES_DIR = Path(__file__).resolve().parents[2] / "topologies"

_DEFAULT_SECTIONS = ("link", "node")
_TOP_LEVEL_KEYS = (*Topology.model_fields, "defaults")
_ALL_LINK_KEYS = tuple(
    dict.fromkeys(key for cls in LINK_MODELS.values() for key in cls.model_fields)
)
_PATTERN_WORDS = {
    NETWORK_NAME_PATTERN: "lower-case letters, digits and '-'",
    NAME_PATTERN: "lower-case letters, digits, '-' and '_', starting with a letter or digit",
}


class TopologyError(ValueError):
    """A topology that cannot be used; `problems` holds one `<location>: <problem>` per entry."""

    def __init__(self, origin: str, problems: list[str]) -> None:
        self.origin = origin
        self.problems = list(problems)
        if len(self.problems) == 1:
            message = f"{origin}: {self.problems[0]}"
        else:
            lines = "\n".join(f"  {problem}" for problem in self.problems)
            message = f"{origin}: {len(self.problems)} problems\n{lines}"
        super().__init__(message)


class _SafeLoaderWithoutDuplicateKeys(yaml.SafeLoader):
    """yaml.SafeLoader (plain data only, nothing executed) that refuses duplicate keys.

    A repeated node name or a second `links:` would otherwise silently replace the first.
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *anchor` merges are meant to be overridden
            key = self.construct_object(key_node, deep=deep)
            try:
                duplicate = key in seen
            except TypeError:
                continue  # unhashable: the base class reports it
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    "while reading a mapping",
                    node.start_mark,
                    f"duplicate key {key!r}",
                    key_node.start_mark,
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def read_yaml(text: str, origin: str) -> Any:
    """Plain data from YAML text; a syntax error becomes a TopologyError with line and column."""
    try:
        return yaml.load(text, Loader=_SafeLoaderWithoutDuplicateKeys)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        what = error.problem or error.context or "invalid YAML"
        raise TopologyError(origin, [f"{where}YAML syntax error: {what}"]) from None
    except yaml.YAMLError as error:
        raise TopologyError(origin, [f"YAML syntax error: {error}"]) from None


def shipped_topologies() -> dict[str, Path]:
    """The topology files shipped in the repository's topologies/ directory, by name."""
    if not SHIPPED_TOPOLOGIES_DIR.is_dir():
        return {}
    return {path.stem: path for path in sorted(SHIPPED_TOPOLOGIES_DIR.glob("*.yaml"))}


def load_topology(source: str | Path) -> Topology:
    """A topology from a YAML file, a shipped topology's name, or a builder spec (`line,5`).

    Raises:
        TopologyError: the file is missing, unreadable, not YAML or not a valid topology.
    """
    path = Path(source)
    if not path.exists() and isinstance(source, str):
        # Imported here: builders import this module.
        from qnemu.topology.builders import BUILDERS, build_topology

        if "," in source or source in BUILDERS:
            return build_topology(source)
        if source in shipped_topologies():
            path = shipped_topologies()[source]
    origin = str(source)
    if not path.exists():
        raise TopologyError(
            origin,
            [
                "no such file (give a YAML file, a shipped topology name"
                " or a builder spec such as line,5)"
            ],
        )
    if path.is_dir():
        raise TopologyError(origin, ["is a directory, not a topology file"])
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise TopologyError(origin, ["not UTF-8 text"]) from None
    except OSError as error:
        raise TopologyError(origin, [f"cannot read: {error.strerror or error}"]) from None
    return parse_topology(read_yaml(text, origin), origin)


def validate_file(path: str | Path) -> list[str]:
    """Every problem in a topology file (empty when it is valid)."""
    try:
        load_topology(Path(path))
    except TopologyError as error:
        return error.problems
    return []


def parse_topology(data: Any, origin: str) -> Topology:
    """A validated Topology from plain data (as read from YAML), `defaults` applied first.

    Raises:
        TopologyError: listing every problem found, one `<location>: <problem>` each.
    """
    if data is None:
        raise TopologyError(origin, ["file is empty"])
    if not isinstance(data, dict):
        raise TopologyError(
            origin,
            [f"must be a mapping with keys name, time_scale, nodes, links (got {_kind(data)})"],
        )
    problems: list[str] = []
    merged, from_defaults = _apply_defaults(data, problems)
    try:
        topology = Topology.model_validate(merged)
    except ValidationError as error:
        for detail in error.errors(include_url=False):
            if detail["type"] != "topology_references":
                problems.append(_describe(detail, from_defaults))
        nodes = merged.get("nodes")
        links = merged.get("links")
        workloads = merged.get("workloads")
        key_managers = None  # unknown when the nodes are malformed: not checked then
        if isinstance(nodes, dict) and all(isinstance(node, dict) for node in nodes.values()):
            key_managers = [name for name, node in nodes.items() if node.get("saes")]
        problems.extend(
            f"{where}: {what}"
            for where, what in reference_problems(
                list(nodes) if isinstance(nodes, dict) else [],
                links if isinstance(links, list) else [],
                workloads if isinstance(workloads, list) else [],
                key_managers,
            )
        )
    else:
        if not problems:
            return topology
    raise TopologyError(origin, list(dict.fromkeys(problems)))


# --- defaults -----------------------------------------------------------------------------


def _apply_defaults(
    data: dict[str, Any], problems: list[str]
) -> tuple[dict[str, Any], dict[tuple[Any, ...], set[str]]]:
    """`data` without `defaults`, its node and link defaults merged in (the item's value wins).

    Returns the merged data and, per item location, the keys that came from defaults.
    A link default applies only to links whose model has that parameter, so one
    `attenuation_db_per_km` default does not break a `perfect` link.
    """
    merged = {key: value for key, value in data.items() if key != "defaults"}
    defaults = data.get("defaults")
    from_defaults: dict[tuple[Any, ...], set[str]] = {}
    node_defaults: dict[str, Any] = {}
    link_defaults: dict[str, Any] = {}
    if isinstance(defaults, dict):
        for key in defaults:
            if key not in _DEFAULT_SECTIONS:
                problems.append(f"defaults: {_unknown('key', key, _DEFAULT_SECTIONS)}")
        node_defaults = _section(defaults, "node", NodeConfig.model_fields, problems)
        link_defaults = _section(defaults, "link", _ALL_LINK_KEYS, problems)
        for wiring in ("nodes", "station"):
            if link_defaults.pop(wiring, None) is not None:
                problems.append(
                    f"defaults.link.{wiring}: cannot be a default (each link names its own)"
                )
    elif defaults is not None:
        problems.append(f"defaults: must be a mapping with keys link, node (got {_kind(defaults)})")

    nodes = merged.get("nodes")
    if isinstance(nodes, dict):
        merged["nodes"] = {}
        for name, node in nodes.items():
            node = {} if node is None else node  # `delft:` with nothing after it
            if isinstance(node, dict):
                from_defaults[("nodes", name)] = set(node_defaults) - set(node)
                node = {**node_defaults, **node}
            merged["nodes"][name] = node

    links = merged.get("links")
    if link_defaults and isinstance(links, list):
        merged["links"] = []
        for index, link in enumerate(links):
            if isinstance(link, dict):
                model = link.get("model", link_defaults.get("model"))
                known = LINK_MODELS[model].model_fields if model in LINK_MODELS else ("model",)
                applied = {k: v for k, v in link_defaults.items() if k in known and k not in link}
                from_defaults[("links", index)] = set(applied)
                link = {**applied, **link}
            merged["links"].append(link)
    return merged, from_defaults


def _section(defaults: dict[str, Any], key: str, known: Any, problems: list[str]) -> dict[str, Any]:
    section = defaults.get(key)
    if section is None:
        return {}
    if not isinstance(section, dict):
        problems.append(f"defaults.{key}: must be a mapping (got {_kind(section)})")
        return {}
    kept = {}
    for name, value in section.items():
        if name in known:
            kept[name] = value
        else:
            what = "parameter" if key == "link" else "key"
            problems.append(f"defaults.{key}: {_unknown(what, name, tuple(known))}")
    return kept


# --- error messages -----------------------------------------------------------------------


def _describe(detail: dict[str, Any], from_defaults: dict[tuple[Any, ...], set[str]]) -> str:
    """One pydantic error as `<location>: <problem>` in the file's own terms."""
    loc = list(detail["loc"])
    kind = detail["type"]
    value = detail.get("input")
    ctx = detail.get("ctx") or {}
    # A discriminated union puts the chosen model into the location: links[0].perfect.x.
    model = None
    if len(loc) >= 3 and loc[0] == "links" and loc[2] in LINK_MODELS:
        model = loc.pop(2)
    # A field whose value came from `defaults` is reported once, at the default.
    if len(loc) >= 3 and loc[2] in from_defaults.get((loc[0], loc[1]), ()):
        loc = ["defaults", "node" if loc[0] == "nodes" else "link", *loc[2:]]

    if kind == "extra_forbidden":
        *container, key = loc
        if model == "bb84_decoy" and key == "qkd":
            problem = (
                "qkd does not apply to a bb84_decoy link: it always runs decoy-state BB84"
                " (qkd: auto | bbm92 | none is for entanglement links)"
            )
        elif model is not None:
            known = tuple(LINK_MODELS[model].model_fields)
            problem = _unknown("parameter", key, known, f" for model {model}")
        else:
            problem = _unknown("key", key, _known_keys(container))
        return f"{_location(container)}: {problem}"
    if kind == "union_tag_not_found":
        return f"{_location([*loc, 'model'])}: field required (one of: {', '.join(LINK_MODELS)})"
    if kind == "union_tag_invalid":
        problem = _unknown("link model", ctx.get("tag"), tuple(LINK_MODELS))
        return f"{_location([*loc, 'model'])}: {problem}"
    if loc and loc[-1] == "[key]":
        loc.pop()
        return f"{_location(loc)}: invalid name: {_problem(kind, value, ctx, detail['msg'])}"
    return f"{_location(loc)}: {_problem(kind, value, ctx, detail['msg'])}"


def _problem(kind: str, value: Any, ctx: dict[str, Any], message: str) -> str:
    got = f" (got {_show(value)})"
    bounds = {
        "greater_than": ">",
        "greater_than_equal": ">=",
        "less_than": "<",
        "less_than_equal": "<=",
    }
    if kind in bounds:
        limit = next(iter(ctx.values()))
        return f"must be {bounds[kind]} {limit:g}{got}"
    simple = {
        "missing": "field required",
        "int_type": "must be an integer" + got,
        "int_parsing": "must be an integer" + got,
        "int_from_float": "must be an integer" + got,
        "float_type": "must be a number" + got,
        "float_parsing": "must be a number" + got,
        "finite_number": "must be a finite number" + got,
        "string_type": "must be a string" + got,
        "model_type": "must be a mapping" + f" (got {_kind(value)})",
        "model_attributes_type": "must be a mapping" + f" (got {_kind(value)})",
        "dict_type": "must be a mapping" + f" (got {_kind(value)})",
        "tuple_type": "must be a list" + got,
        "list_type": "must be a list" + got,
    }
    if kind in simple:
        return simple[kind]
    if kind == "string_pattern_mismatch":
        words = _PATTERN_WORDS.get(ctx.get("pattern"), f"match {ctx.get('pattern')}")
        return f"must be {words}{got}"
    if kind == "string_too_long":
        return f"must be at most {ctx.get('max_length')} characters{got}"
    if kind in ("too_short", "too_long"):
        if ctx.get("field_type") == "Tuple":
            return f"must be a list of 2 items (got {ctx.get('actual_length')})"
        return (
            f"must have at least {ctx.get('min_length')} item(s) (got {ctx.get('actual_length')})"
        )
    if kind == "literal_error":
        return f"must be {ctx.get('expected')}{got}"
    if kind == "value_error":
        return message.removeprefix("Value error, ")
    return message[0].lower() + message[1:] + got


def _known_keys(container: list[Any]) -> tuple[str, ...]:
    if not container:
        return _TOP_LEVEL_KEYS
    if container[0] == "nodes" or container[:2] == ["defaults", "node"]:
        return tuple(NodeConfig.model_fields)
    if container[0] == "workloads":
        return tuple(WorkloadConfig.model_fields)
    return ()


def _unknown(what: str, name: Any, known: tuple[str, ...], qualifier: str = "") -> str:
    message = f"unknown {what} {_show(name)}{qualifier} (known: {', '.join(known)})"
    close = difflib.get_close_matches(str(name), known, n=1)
    return f"{message}; did you mean {close[0]!r}?" if close else message


def _location(loc: list[Any]) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        elif re.fullmatch(r"[A-Za-z0-9_-]+", str(part)):
            text += f".{part}" if text else str(part)
        else:
            text += f"[{part!r}]"
    return text or "top level"


def _show(value: Any) -> str:
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, bool):
        return "true" if value else "false"  # as YAML spells it
    if isinstance(value, int | float):
        return f"{value:g}" if isinstance(value, float) else str(value)
    if value is None:
        return "null"
    return _kind(value)


def _kind(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, str):
        return f"the text {value!r}"
    if value is None:
        return "nothing"
    return f"{type(value).__name__} {value!r}"
