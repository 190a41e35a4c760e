"""Node applications through `qnemu app`: the examples, on real processes, against closed forms."""

import json
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
CUTOFF_S = 0.1

# alice - bob - charlie over perfect links (results are exact); charlie discards pairs
# nobody claimed after CUTOFF_S, which must never touch what its app holds.
TOPOLOGY = {
    "name": "apps-line",
    "time_scale": 1.0,
    "seed": 3,
    "defaults": {
        "node": {"qubits": 24, "t1_s": None, "t2_s": None},
        "link": {"model": "perfect", "length_km": 2},
    },
    "nodes": {"alice": {}, "bob": {}, "charlie": {"cutoff_s": CUTOFF_S}},
    "links": [{"nodes": ["alice", "bob"]}, {"nodes": ["bob", "charlie"]}],
}


def qnemu_app(target: Path, apps: dict[str, Path], *options: str, timeout_s: float = 60.0):
    """Run `qnemu app` (as `python -m qnemu.app`); returns (exit code, stdout, stderr)."""
    command = [sys.executable, "-m", "qnemu.app", str(target)]
    command += [f"{node}={path}" for node, path in apps.items()]
    command += ["--json", *options]
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s)
    return done.returncode, done.stdout, done.stderr


def results(target: Path, apps: dict[str, Path], *options: str) -> dict:
    code, out, err = qnemu_app(target, apps, *options)
    assert code == 0, err
    return json.loads(out)


def example(name: str, *nodes: str, files: tuple[str, ...] | None = None) -> dict[str, Path]:
    return {
        node: EXAMPLES / name / f"{file}.py"
        for node, file in zip(nodes, files or nodes, strict=True)
    }


def within_binomial(wins: int, rounds: int, p: float, sigmas: float = 5.0) -> bool:
    return abs(wins - rounds * p) <= sigmas * math.sqrt(rounds * p * (1 - p))


def chsh_win_probability(werner: float) -> float:
    return (1 + werner / math.sqrt(2)) / 2


def test_teleportation_delivers_the_state_exactly_over_a_perfect_link(network):
    out = results(network.run_dir, example("teleportation", "alice", "bob"), "--arg", "theta=2.1")
    assert out["bob"]["fidelity"] == pytest.approx(1.0, abs=1e-9)
    assert out["bob"]["corrections"] == [out["alice"]["m1"], out["alice"]["m2"]]


def test_teleportation_through_a_repeater(network):
    apps = example("teleportation", "alice", "charlie", files=("alice", "bob"))
    out = results(network.run_dir, apps, "--arg", "receiver=charlie", "--arg", "phi=-0.7")
    assert out["charlie"]["fidelity"] == pytest.approx(1.0, abs=1e-9)


def test_three_node_ghz_state(network):
    out = results(network.run_dir, example("ghz", "alice", "bob", "charlie"), "--arg", "rounds=6")
    assert out["bob"]["fidelities"] == pytest.approx([1.0] * 6, abs=1e-9)
    outcomes = [out[node]["outcomes"] for node in ("alice", "bob", "charlie")]
    assert outcomes[0] == outcomes[1] == outcomes[2]


@pytest.mark.parametrize(("control", "target"), [(math.pi / 2, 0.0), (1.1, 0.4)])
def test_distributed_cnot_is_a_cnot(network, control, target):
    apps = example("distributed_cnot", "alice", "bob")
    angles = ("--arg", f"control_angle={control}", "--arg", f"target_angle={target}")
    out = results(network.run_dir, apps, *angles)
    assert out["alice"]["fidelity"] == pytest.approx(1.0, abs=1e-9)


def test_chsh_wins_with_cos2_pi_over_8_on_perfect_links(network):
    rounds = 400
    apps = example("chsh", "alice", "bob")
    out = results(network.run_dir, apps, "--arg", f"rounds={rounds}", "--arg", "batch=20")
    assert out["alice"]["rounds"] == rounds
    assert within_binomial(out["alice"]["wins"], rounds, math.cos(math.pi / 8) ** 2)


def test_measured_pairs_and_cutoff_exempt_app_qubits(network, tmp_path):
    """create_measure/recv_measure see Φ+ correlations; qubits an app holds outlive the
    node's cutoff (charlie's is CUTOFF_S; the apps wait five times as long)."""
    creator = tmp_path / "creator.py"
    creator.write_text(
        textwrap.dedent(
            f"""
            import asyncio

            async def main(node, peer="bob"):
                epr = node.epr_socket(peer)
                z = await epr.create_measure(8, basis="Z")
                x = await epr.create_measure(8, basis="X")
                (kept,) = await epr.create_keep(1)
                mine = await node.qubit()
                await asyncio.sleep({5 * CUTOFF_S})
                await mine.X()
                return {{"z": [r.outcome for r in z], "x": [r.outcome for r in x],
                         "kept": await kept.measure(), "mine": await mine.measure()}}
            """
        )
    )
    receiver = tmp_path / "receiver.py"
    receiver.write_text(
        textwrap.dedent(
            f"""
            import asyncio

            async def main(node, peer="charlie"):
                epr = node.epr_socket(peer)
                z = await epr.recv_measure(8)
                x = await epr.recv_measure(8)
                (kept,) = await epr.recv_keep(1)
                await asyncio.sleep({5 * CUTOFF_S})
                return {{"z": [r.outcome for r in z], "x": [r.outcome for r in x],
                         "kept": await kept.measure(), "bases": [r.basis for r in x]}}
            """
        )
    )
    out = results(network.run_dir, {"charlie": creator, "bob": receiver})
    charlie, bob = out["charlie"], out["bob"]
    assert charlie["z"] == bob["z"] and charlie["x"] == bob["x"]
    assert bob["bases"] == ["X"] * 8
    assert charlie["kept"] == bob["kept"] and charlie["mine"] == 1


def test_a_failing_app_stops_the_run_with_its_own_traceback(network, tmp_path):
    crash = tmp_path / "crash.py"
    crash.write_text(
        "async def main(node):\n"
        "    q = await node.qubit()\n"
        "    await q.measure()\n"
        "    await q.H()  # measured: released\n"
    )
    waits = tmp_path / "waits.py"
    waits.write_text("async def main(node):\n    return await node.socket('alice').recv()\n")
    code, out, err = qnemu_app(network.run_dir, {"alice": crash, "bob": waits})
    assert code == 1 and out == ""
    assert "app alice" in err and "AppError: released" in err
    assert f'File "{crash}", line 4' in err
    assert "qnemu/app/api.py" not in err  # the app's frames only
    code, _, err = qnemu_app(network.run_dir, {"dave": crash})
    assert code == 2 and "unknown node 'dave'" in err


def test_noisy_links_launched_from_a_topology_file(tmp_path):
    """`qnemu app TOPOLOGY`: launches, runs, stops. Over Werner pairs of fidelity F,
    teleportation gives (2F + 1)/3 exactly and CHSH wins with (1 + w/√2)/2, w = (4F − 1)/3."""
    fidelity = 0.7
    werner = (4 * fidelity - 1) / 3
    spec = {
        "name": "apps-noisy",
        "time_scale": 1.0,
        "seed": 8,
        "defaults": {"node": {"qubits": 24}},
        "nodes": {"alice": {}, "bob": {}},
        "links": [
            {
                "nodes": ["alice", "bob"],
                "model": "depolarise",
                "fidelity": fidelity,
                "prob_success": 0.5,
                "length_km": 1,
            }
        ],
    }
    topology = tmp_path / "noisy.yaml"
    topology.write_text(yaml.safe_dump(spec))
    teleported = results(
        topology, example("teleportation", "alice", "bob"), "--run-dir", str(tmp_path / "t")
    )
    assert teleported["bob"]["fidelity"] == pytest.approx((2 * fidelity + 1) / 3, abs=1e-9)
    assert teleported["alice"]["link_fidelity"] == pytest.approx(fidelity, abs=1e-9)
    rounds = 800
    options = ("--arg", f"rounds={rounds}", "--arg", "batch=20", "--run-dir", str(tmp_path / "c"))
    game = results(topology, example("chsh", "alice", "bob"), *options)
    assert within_binomial(game["alice"]["wins"], rounds, chsh_win_probability(werner))
    assert not within_binomial(game["alice"]["wins"], rounds, chsh_win_probability(1.0))
