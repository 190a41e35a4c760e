"""Loading apps and their arguments, and turning their results into JSON."""

import json
from pathlib import Path

import numpy as np
import pytest

from qnemu.app.runner import (
    AppFailed,
    AppLoadError,
    app_traceback,
    call_kwargs,
    load_app,
    parse_app_args,
    parse_app_specs,
    to_json,
)


def test_app_specs_name_a_node_and_a_file():
    assert parse_app_specs(["alice=a.py", "bob=dir/b.py"]) == {
        "alice": Path("a.py"),
        "bob": Path("dir/b.py"),
    }
    for bad in (["alice"], ["=a.py"], ["alice=a.py", "alice=b.py"], []):
        with pytest.raises(AppLoadError):
            parse_app_specs(bad)


def test_arguments_are_json_when_they_parse_and_strings_otherwise():
    args = parse_app_args(["rounds=5", "theta=0.25", "flag=true", "peer=bob", "xs=[1,2]"])
    assert args == {"rounds": 5, "theta": 0.25, "flag": True, "peer": "bob", "xs": [1, 2]}
    with pytest.raises(AppLoadError, match="NAME=VALUE"):
        parse_app_args(["1x=3"])


def test_a_main_gets_the_arguments_it_names_or_all_with_kwargs():
    async def named(node, rounds=1, *, seed=0): ...

    async def everything(node, **options): ...

    args = {"rounds": 3, "seed": 7, "other": "x"}
    assert call_kwargs(named, args) == {"rounds": 3, "seed": 7}
    assert call_kwargs(everything, args) == args


def test_loading_finds_async_main_and_says_what_is_wrong(tmp_path):
    good = tmp_path / "good.py"
    good.write_text("async def main(node, x=1):\n    return x\n")
    app = load_app("alice", good)
    assert app.node == "alice" and app.main.__name__ == "main"
    sync = tmp_path / "sync.py"
    sync.write_text("def main(node):\n    return 1\n")
    with pytest.raises(AppLoadError, match="async def main"):
        load_app("alice", sync)
    with pytest.raises(AppLoadError, match="does not exist"):
        load_app("alice", tmp_path / "missing.py")
    broken = tmp_path / "broken.py"
    broken.write_text("import nothing_of_that_name\n")
    with pytest.raises(AppFailed, match="import failed") as failure:
        load_app("alice", broken)
    assert "broken.py" in failure.value.details


def test_an_app_traceback_shows_the_app_frames_only(tmp_path):
    source = tmp_path / "crash.py"
    source.write_text("def inner():\n    raise ValueError('bad angle')\n")
    namespace: dict = {}
    exec(compile(source.read_text(), str(source), "exec"), namespace)
    with pytest.raises(ValueError) as caught:  # raised from inside the stdlib's json decoder
        json.loads('{"a": 1}', object_hook=lambda _: namespace["inner"]())
    text = app_traceback(caught.value)
    assert "crash.py" in text and "ValueError: bad angle" in text
    assert "json/decoder.py" not in text and "qnemu/" not in text


def test_results_become_plain_json():
    value = {"rho": np.eye(2) * 0.5, "n": np.int64(3), "z": 1 + 2j, "t": (1, 2), "o": object}
    plain = to_json(value)
    assert plain["rho"] == [[0.5, 0.0], [0.0, 0.5]]
    assert plain["n"] == 3 and plain["z"] == [1.0, 2.0] and plain["t"] == [1, 2]
    assert isinstance(plain["o"], str)
    json.dumps(plain)
