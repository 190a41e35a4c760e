"""`qnemu keys` says plainly why it cannot fetch, before any HTTP."""

import asyncio

import pytest

from qnemu.kme.fetch import KeyFetchError, fetch_key_pairs
from qnemu.launch.plan import make_plan
from qnemu.topology import parse_topology

TOPOLOGY = {
    "name": "fetch-errors",
    "time_scale": 1.0,
    "nodes": {"alice": {"saes": ["alice_app"]}, "bob": {"saes": ["bob_app"]}, "eve": {}},
    "links": [{"nodes": ["alice", "bob"], "model": "perfect"}],
}


@pytest.fixture
def run_dir(tmp_path):
    make_plan(parse_topology(TOPOLOGY, origin="test")).write(tmp_path)
    return tmp_path


@pytest.mark.parametrize(
    "src, dst, problem",
    [
        ("alice", "zed", "unknown node 'zed'"),
        ("alice", "eve", "eve has no SAEs"),
        ("alice", "bob", "KME has not started"),
    ],
)
def test_errors_name_the_problem(run_dir, src, dst, problem):
    with pytest.raises(KeyFetchError, match=problem):
        asyncio.run(fetch_key_pairs(run_dir, src, dst))
