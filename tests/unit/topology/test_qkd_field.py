"""The `qkd:` field of entanglement links: which links run QKD, and its located errors."""

import pytest

from qnemu.keys.relay import qkd_route
from qnemu.node.qkd import qkd_edges, qkd_links
from qnemu.topology import TopologyError, parse_topology


def spec(*links: dict, defaults: dict | None = None) -> dict:
    """Nodes a, b, c with SAEs, d without; links as given."""
    data = {
        "name": "qkd-field",
        "time_scale": 1.0,
        "nodes": {
            "a": {"saes": ["a_app"]},
            "b": {"saes": ["b_app"]},
            "c": {"saes": ["c_app"]},
            "d": {},
        },
        "links": list(links),
    }
    if defaults is not None:
        data["defaults"] = defaults
    return data


def link(a: str, b: str, **fields) -> dict:
    return {"nodes": [a, b], "model": "depolarise", "fidelity": 0.95, "prob_success": 1.0,
            **fields}  # fmt: skip


def problems(data: dict) -> list[str]:
    with pytest.raises(TopologyError) as caught:
        parse_topology(data, "test")
    return caught.value.problems


def test_auto_is_the_default_and_keeps_todays_rule():
    topology = parse_topology(spec(link("a", "b"), link("b", "d")), "test")
    assert [entry.qkd for entry in topology.links] == ["auto", "auto"]
    assert [topology.qkd_protocol(entry) for entry in topology.links] == ["bbm92", None]
    assert qkd_links(topology, "b") == {"a": "a-b"}
    assert qkd_links(topology, "d") == {}
    assert qkd_edges(topology) == [("a", "b")]
    # Not a physics parameter: the station's link model never sees it.
    assert "qkd" not in topology.links[0].physics_params()


def test_none_keeps_a_link_between_sae_nodes_free_of_qkd():
    topology = parse_topology(
        spec(link("a", "b", qkd="none"), link("b", "c"), link("a", "c", qkd="bbm92")), "test"
    )
    assert [topology.qkd_protocol(entry) for entry in topology.links] == [None, "bbm92", "bbm92"]
    assert qkd_links(topology, "a") == {"c": "a-c"}
    assert qkd_links(topology, "b") == {"c": "b-c"}
    assert qkd_edges(topology) == [("b", "c"), ("a", "c")]
    # Key relay routes around the link without QKD: a reaches b through c.
    assert qkd_route(qkd_edges(topology), "a", "b") == ("a", "c", "b")


def test_a_link_default_applies_to_entanglement_links_only():
    data = spec(
        link("a", "b"),
        {"nodes": ["b", "c"], "model": "bb84_decoy", "length_km": 25.0},
        defaults={"link": {"qkd": "none"}},
    )
    topology = parse_topology(data, "test")
    assert topology.links[0].qkd == "none"
    assert qkd_edges(topology) == [("b", "c")]  # the decoy link still makes key


def test_bbm92_on_a_link_without_saes_names_the_link_and_the_nodes():
    found = problems(spec(link("a", "b"), link("d", "a", qkd="bbm92")))
    assert found == [
        "links[1].qkd: link d-a runs bbm92, which needs saes on both nodes; none declared on 'd'"
    ]


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"qkd": "bb84"}, "links[0].qkd:"),
        ({"qkd": True}, "links[0].qkd:"),
    ],
)
def test_unknown_values_are_refused_where_they_are(fields, expected):
    found = problems(spec(link("a", "b", **fields)))
    assert len(found) == 1 and found[0].startswith(expected), found
    assert "auto" in found[0] and "bbm92" in found[0] and "none" in found[0]


def test_qkd_on_a_decoy_link_is_refused():
    decoy = {"nodes": ["a", "b"], "model": "bb84_decoy", "length_km": 25.0, "qkd": "none"}
    found = problems(spec(decoy))
    assert found == [
        "links[0]: qkd does not apply to a bb84_decoy link: it always runs decoy-state"
        " BB84 (qkd: auto | bbm92 | none is for entanglement links)"
    ]
