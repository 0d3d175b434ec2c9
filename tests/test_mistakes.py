"""Ordinary mistakes end in one line that names the problem and the fix: exit 2, no traceback, nothing written."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from bench.cli import app


def _bench(*args):
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.output  # stdout and stderr, as a terminal shows them


GRIDS = {
    "missing.yaml": None,
    "not_yaml.yaml": "envs: [a\nalgos: b: c",
    "a_list.yaml": "- hopper-mini-replay\n",
    "envs_text.yaml": "envs: hopper-mini-replay\nalgos: [bcc]\nseeds: 1\n",
    "set_list.yaml": "envs: [hopper-mini-replay]\nalgos: [bc]\nseeds: 1\nset: [1, 2]\n",
    "blocks_int.yaml": "blocks: 5\nseeds: 1\n",
    "seeds_text.yaml": "envs: [hopper-mini-replay]\nalgos: [bc]\nseeds: [a]\n",
    "seeds_zero.yaml": "envs: [hopper-mini-replay]\nalgos: [bc]\nseeds: 0\n",
}


@pytest.mark.parametrize("args, message", [
    (["run", "--env", "hopper-mini-replay", "--algo", "bc", "--device", "banana"],
     "device='banana' is no device: give auto (CUDA when present), cpu, cuda or cuda:N"),
    (["run", "--env", "hopper-mini-replay", "--algo", "bc", "--seed", str(2**63)],
     "seed=9223372036854775808 is outside its domain: seed must be >= 0 and < 9.22337e+18"),
    (["run", "--env", "hopper-mini-replay", "--algo", "bc", "--seeds", "0"], "--seeds 0: that is no seed at all"),
    (["run", "--env", "hopper-mini-replay", "--algo", "bc", "--seeds", "-2"], "--seeds -2: that is no seed at all"),
    (["sweep", "--envs", "hopper-mini-replay", "--algos", "bc", "--seeds", "0"], "--seeds 0: that is no seed at all"),
    (["run", "--env", "hopper-mini-replay", "--algo", "bc", "--out", "{file}"], "is a file; give a folder"),
    (["sweep", "--envs", "hopper-mini-replay", "--algos", "bc", "--out", "{file}"], "is a file; give a folder"),
    (["report", "{tmp}/nowhere"], "nowhere: no such folder or file of run records"),
    (["report", "{tmp}", "--out", "{file}"], "--out {file} is a file; give a folder"),
    (["sweep", "--grid", "{tmp}/missing.yaml"], "missing.yaml: cannot read it (No such file or directory)"),
    (["sweep", "--grid", "{tmp}/not_yaml.yaml"], "not_yaml.yaml: not YAML"),
    (["sweep", "--grid", "{tmp}/a_list.yaml"], "a grid file is a YAML mapping (envs, algos, seeds, set), not list"),
    (["sweep", "--grid", "{tmp}/envs_text.yaml", "--dry-run"], "unknown algorithm 'bcc'"),
    (["sweep", "--grid", "{tmp}/set_list.yaml"], "set: [1, 2] is not a mapping of field: value"),
    (["sweep", "--grid", "{tmp}/blocks_int.yaml"], "blocks: 5 is not a list of {envs: [...], algos: [...]}"),
    (["sweep", "--grid", "{tmp}/seeds_text.yaml"], "seeds: ['a'] is neither a count (at least 1) nor a list of"),
    (["sweep", "--grid", "{tmp}/seeds_zero.yaml"], "seeds: 0 is neither a count (at least 1)"),
])
def test_an_ordinary_mistake_is_one_line_naming_the_problem_and_the_fix(tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    for name, text in GRIDS.items():
        if text is not None:
            (tmp_path / name).write_text(text)
    file = tmp_path / "a_file.txt"
    file.write_text("not a folder")
    subs = {"{tmp}": str(tmp_path), "{file}": str(file)}
    args = [next((a.replace(k, v) for k, v in subs.items() if k in a), a) for a in args]
    for k, v in subs.items():
        message = message.replace(k, v)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    code, output = _bench(*args)
    assert code == 2 and message in output and "Traceback" not in output, output
    assert output.count("error:") == 1
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before  # nothing written, no lock


@pytest.mark.parametrize("variable, args, message", [
    ("BENCH_DATA_DIR", ["run", "--env", "hopper-medium-replay", "--algo", "bc"],
     "dataset hopper-medium-replay is not in the cache ({file}/d4rl/hopper_medium_replay-v2.hdf5) and cannot be "
     "downloaded there: BENCH_DATA_DIR={file}/d4rl: cannot write there (Not a directory); set BENCH_DATA_DIR to a "
     "folder you can write, or pass --data PATH to a copy of hopper_medium_replay-v2.hdf5"),
    ("BENCH_CACHE_DIR", ["run", "--env", "hopper-mini-replay", "--algo", "sft", "--set", "steps=10",
                         "--set", "bc_steps=10", "--set", "eval_every=10"],
     "the reference-policy cache {file}/d4rl/reference: cannot write there (Not a directory); set BENCH_CACHE_DIR "
     "to a folder you can write"),
])
def test_a_cache_folder_that_cannot_be_written_is_one_line_naming_its_variable(tmp_path, monkeypatch, variable, args,
                                                                              message):
    """Offline, BENCH_DATA_DIR under a file still says the dataset is not in the cache and how to give it."""
    file = tmp_path / "a_file.txt"
    file.write_text("not a folder")
    monkeypatch.setenv(variable, f"{file}/d4rl")
    out = tmp_path / "out"
    code, output = _bench(*args, "--out", str(out))
    assert code == 2 and message.replace("{file}", str(file)) in output and "Traceback" not in output, output
    assert output.count("error:") == 1
    assert not list(out.rglob("*.json")) and not list(out.rglob("*.lock"))
