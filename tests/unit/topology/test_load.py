"""Loading topology files: defaults, shipped files, and one clear line per problem."""

from pathlib import Path

import pytest
import yaml

from qnemu.topology import TopologyError, load_topology, parse_topology, validate_file
from qnemu.topology.load import SHIPPED_TOPOLOGIES_DIR, shipped_topologies

EXAMPLE = """\
name: two-node-metro
time_scale: 1.0
seed: 1
defaults:
  node: {qubits: 4, t1_s: null, t2_s: 1.0}
  link: {model: heralded_single_click, attenuation_db_per_km: 0.2}
nodes:
  delft: {}
  hague: {t2_s: 0.5}
links:
  - nodes: [delft, hague]
    length_km: 10
    node_efficiency: 0.1
    bright_state_alpha: 0.05
workloads:
  - {src: delft, dst: hague, type: measure, basis: random, number: 0, minimum_fidelity: 0.0}
"""


def _data() -> dict:
    return yaml.safe_load(EXAMPLE)


def _problems(data) -> list[str]:
    with pytest.raises(TopologyError) as caught:
        parse_topology(data, "test.yaml")
    error = caught.value
    assert error.origin == "test.yaml"
    for problem in error.problems:
        assert problem in str(error)
    return error.problems


def test_example_from_the_issue():
    topology = parse_topology(_data(), "example")
    assert topology.nodes["delft"].t2_s == 1.0
    assert topology.nodes["hague"].t2_s == 0.5  # the item wins over defaults
    assert topology.nodes["hague"].qubits == 4
    link = topology.links[0]
    assert link.model == "heralded_single_click"
    assert link.attenuation_db_per_km == 0.2
    assert topology.workloads[0].number == 0


def test_link_defaults_skip_parameters_the_model_lacks():
    data = _data()
    data["links"][0] = {"nodes": ["delft", "hague"], "model": "perfect"}
    link = parse_topology(data, "t").links[0]
    assert link.model == "perfect"
    assert not hasattr(link, "attenuation_db_per_km")


def test_empty_node_entry_is_a_default_node():
    data = _data()
    data["nodes"]["delft"] = None
    assert parse_topology(data, "t").nodes["delft"].t2_s == 1.0
    del data["defaults"]["node"]
    assert parse_topology(data, "t").nodes["delft"].t2_s is None


def test_shipped_topologies_all_load():
    files = sorted(SHIPPED_TOPOLOGIES_DIR.glob("*.yaml"))
    assert {path.stem for path in files} >= {"two-node-metro", "metro-ring", "perfect-pair"}
    for path in files:
        assert validate_file(path) == [], path
        topology = load_topology(path)
        assert topology.name == path.stem
        assert parse_topology(topology.to_dict(), "round trip") == topology


def test_shipped_topology_by_name():
    assert "perfect-pair" in shipped_topologies()
    topology = load_topology("perfect-pair")
    assert topology.node_names == ("alice", "bob")
    assert topology.links[0].model == "perfect"
    assert topology.nodes["alice"].qubits == 64
    assert topology.workloads == ()


def test_two_node_metro_shows_traffic_within_seconds():
    pytest.importorskip("qnemu.physics.links")
    topology = load_topology("two-node-metro")
    rate_hz = topology.links[0].physics().expected_rate_hz
    assert rate_hz > 5.0
    assert any(w.number == 0 and w.type == "measure" for w in topology.workloads)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            lambda d: d["links"][0].update(nodes=["delft", "hauge"]),
            "links[0].nodes[1]: unknown node 'hauge' (known: delft, hague)",
        ),
        (
            lambda d: d["links"][0].update(nodes=["delft", "delft"]),
            "links[0].nodes: a link joins two different nodes (got 'delft' twice)",
        ),
        (
            lambda d: d["links"].append({**d["links"][0], "nodes": ["hague", "delft"]}),
            "links[1]: duplicate link between hague and delft (first at links[0])",
        ),
        (lambda d: d["nodes"]["hague"].update(t2_s=-1), "nodes.hague.t2_s: must be > 0 (got -1)"),
        (lambda d: d.pop("time_scale"), "time_scale: field required"),
        (lambda d: d.update(time_scale=0), "time_scale: must be > 0 (got 0)"),
        (lambda d: d.update(time_scale="fast"), "time_scale: must be a number (got 'fast')"),
        (
            lambda d: d["nodes"]["hague"].update(qubits="four"),
            "nodes.hague.qubits: must be an integer (got 'four')",
        ),
        (
            lambda d: d["nodes"]["hague"].update(qubits=0),
            "nodes.hague.qubits: must be >= 1 (got 0)",
        ),
        (
            lambda d: d["nodes"]["hague"].update(readout_error=[0.1, 1.5]),
            "nodes.hague.readout_error[1]: must be <= 1 (got 1.5)",
        ),
        (
            lambda d: d["nodes"]["hague"].update(t1_s=0.1, t2_s=0.5),
            "nodes.hague: t2_s (0.5) must be <= 2 * t1_s (0.2)",
        ),
        (
            lambda d: d["links"][0].update(length_km=-3),
            "links[0].length_km: must be >= 0 (got -3)",
        ),
        (
            lambda d: d["links"][0].update(brigt_state_alpha=0.1),
            "links[0]: unknown parameter 'brigt_state_alpha' for model heralded_single_click"
            " (known: ",
        ),
        (
            lambda d: d["links"][0].update(model="perfect"),
            "links[0]: unknown parameter 'node_efficiency' for model perfect",
        ),
        (
            lambda d: d["links"][0].update(model="perfekt"),
            "links[0].model: unknown link model 'perfekt' (known: perfect, depolarise,",
        ),
        (lambda d: d.pop("defaults"), "links[0].model: field required"),
        (
            lambda d: d.update(metrix={}),
            "top level: unknown key 'metrix' (known: name, time_scale, seed,",
        ),
        (lambda d: d["nodes"]["hague"].update(t3_s=1), "nodes.hague: unknown key 't3_s'"),
        (lambda d: d.update(name="Two Nodes"), "name: must be lower-case letters"),
        (lambda d: d["nodes"].update({"The Hague": {}}), "nodes['The Hague']: invalid name"),
        (lambda d: d.update(nodes=[]), "nodes: must be a mapping (got a list)"),
        (lambda d: d.update(nodes={}), "nodes: must have at least 1 item(s) (got 0)"),
        (lambda d: d["links"].append("x"), "links[1]: must be a mapping (got the text 'x')"),
        (
            lambda d: d["workloads"][0].update(dst="leiden"),
            "workloads[0].dst: unknown node 'leiden' (known: delft, hague)",
        ),
        (lambda d: d["workloads"][0].update(type="kept"), "workloads[0].type: must be 'keep' or"),
        (lambda d: d["workloads"][0].update(number=-1), "workloads[0].number: must be >= 0"),
        (
            lambda d: d["workloads"][0].update(purify="pumping"),
            "workloads[0].purify: must be 'dejmps', 'bbpssw' or 'none'",
        ),
        (lambda d: d["workloads"][0].update(dst="delft"), "workloads[0]: src and dst are the same"),
        (
            lambda d: d["workloads"][0].update(type="keep"),
            "workloads[0]: basis applies only to type measure",
        ),
        (lambda d: d.update(defaults=[1]), "defaults: must be a mapping with keys link, node"),
        (lambda d: d["defaults"].update(nodes={}), "defaults: unknown key 'nodes'"),
        (
            lambda d: d["defaults"]["link"].update(bright_alpha=0.1),
            "defaults.link: unknown parameter 'bright_alpha'",
        ),
        (
            lambda d: d["defaults"]["link"].update(nodes=["delft", "hague"]),
            "defaults.link.nodes: cannot be a default",
        ),
        (
            lambda d: d["defaults"]["node"].update(t2_s=-2),
            "defaults.node.t2_s: must be > 0 (got -2)",
        ),
    ],
)
def test_each_problem_is_named_with_its_place(change, expected):
    data = _data()
    change(data)
    problems = _problems(data)
    assert any(problem.startswith(expected) for problem in problems), problems


def test_every_problem_is_listed_one_per_line():
    data = _data()
    data["nodes"]["hague"]["t2_s"] = -1
    data["links"][0]["nodes"] = ["delft", "hauge"]
    data.pop("time_scale")
    with pytest.raises(TopologyError) as caught:
        parse_topology(data, "bad.yaml")
    lines = str(caught.value).splitlines()
    assert lines[0] == "bad.yaml: 3 problems"
    assert [line.strip() for line in lines[1:]] == [
        "time_scale: field required",
        "nodes.hague.t2_s: must be > 0 (got -1)",
        "links[0].nodes[1]: unknown node 'hauge' (known: delft, hague)",
    ]


def test_a_problem_from_defaults_is_reported_once():
    data = _data()
    data["defaults"]["node"]["qubits"] = -4
    assert _problems(data) == ["defaults.node.qubits: must be >= 1 (got -4)"]


def test_suggests_the_closest_name():
    data = _data()
    data["links"][0]["brigt_state_alpha"] = data["links"][0].pop("bright_state_alpha")
    problems = _problems(data)
    assert any("did you mean 'bright_state_alpha'?" in problem for problem in problems)


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "topology.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_yaml_syntax_error_gives_file_line_and_column(tmp_path):
    path = _write(tmp_path, "name: x\nnodes:\n  a: [1, 2\n  b: {}\n")
    with pytest.raises(TopologyError) as caught:
        load_topology(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: line ")
    assert "column" in message
    assert "YAML syntax error" in message
    assert "Traceback" not in message


def test_yaml_syntax_error_line_is_where_the_problem_is(tmp_path):
    path = _write(tmp_path, "name: x\ntime_scale: 1\nnodes: {a: {}}\nlinks: : bad\n")
    assert validate_file(path)[0].startswith("line 4, column ")


def test_duplicate_yaml_key_is_an_error(tmp_path):
    text = EXAMPLE.replace("  hague: {t2_s: 0.5}\n", "  hague: {t2_s: 0.5}\n  delft: {}\n")
    problems = validate_file(_write(tmp_path, text))
    assert problems == ["line 10, column 3: YAML syntax error: duplicate key 'delft'"]


def test_yaml_merge_keys_still_override(tmp_path):
    text = EXAMPLE.replace(
        "  hague: {t2_s: 0.5}\n", "  hague: &h {t2_s: 0.5}\n  leiden: {<<: *h, t2_s: 0.25}\n"
    )
    assert load_topology(_write(tmp_path, text)).nodes["leiden"].t2_s == 0.25


def test_yaml_is_never_executed(tmp_path):
    path = _write(tmp_path, "!!python/object/apply:os.system ['echo pwned']\n")
    problems = validate_file(path)
    assert len(problems) == 1
    assert "YAML syntax error" in problems[0]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "file is empty"),
        ("# only a comment\n", "file is empty"),
        ("- a\n- b\n", "must be a mapping with keys name, time_scale, nodes, links (got a list)"),
        ("just text\n", "must be a mapping with keys name, time_scale, nodes, links (got the text"),
    ],
)
def test_file_that_is_not_a_topology(tmp_path, text, expected):
    problems = validate_file(_write(tmp_path, text))
    assert len(problems) == 1
    assert problems[0].startswith(expected)


def test_missing_file(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(TopologyError, match="no such file") as caught:
        load_topology(missing)
    assert str(caught.value).startswith(str(missing))
    assert validate_file(missing) == [
        "no such file (give a YAML file, a shipped topology name or a builder spec such as line,5)"
    ]


def test_directory_and_binary_files(tmp_path):
    assert validate_file(tmp_path) == ["is a directory, not a topology file"]
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"\xff\xfe\x00")
    assert validate_file(binary) == ["not UTF-8 text"]


def test_valid_file_has_no_problems(tmp_path):
    assert validate_file(_write(tmp_path, EXAMPLE)) == []
    assert load_topology(str(_write(tmp_path, EXAMPLE))).name == "two-node-metro"
