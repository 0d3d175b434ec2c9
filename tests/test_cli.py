"""The `bench` console script as a user runs it (a real subprocess, offline)."""

import json
import subprocess
import sys
from pathlib import Path

BENCH = [str(Path(sys.executable).parent / "bench")]


def bench(*args, check=True):
    proc = subprocess.run(BENCH + list(args), capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"bench {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def test_help_explains_every_command_and_flag():
    out = bench("--help").stdout
    assert "run" in out and "datasets" in out
    run_help = bench("run", "--help").stdout
    for flag in ("--env", "--algo", "--seed", "--set", "--out", "--data", "--device", "--force"):
        assert flag in run_help
    assert "results" in run_help  # defaults are shown


def test_unknown_names_list_what_exists():
    proc = bench("run", "--env", "hopper-medium-replai", "--algo", "bc", check=False)
    assert proc.returncode == 2 and "Did you mean hopper-medium-replay" in proc.stderr
    proc = bench("run", "--env", "hopper-mini-replay", "--algo", "sft_qq", check=False)
    assert proc.returncode == 2 and "Available: bc" in proc.stderr


def test_missing_dataset_offline_says_what_to_do(tmp_path):
    proc = bench("run", "--env", "hopper-expert", "--algo", "bc", "--out", str(tmp_path / "r"), check=False)
    assert proc.returncode == 2
    assert "hopper_expert-v2.hdf5" in proc.stderr and "--env hopper-mini-replay" in proc.stderr
    assert not (tmp_path / "r").exists() or not list((tmp_path / "r").glob("*.json"))


def test_datasets_list_and_info_of_the_embedded_dataset():
    listing = bench("datasets", "list").stdout
    assert "hopper-mini-replay" in listing and "hopper-medium-replay" in listing
    info = json.loads(bench("datasets", "info", "hopper-mini-replay", "--json").stdout)
    assert info["eval_env"] == "Hopper-v5" and info["episodes"] > 100
    assert info["return_quantiles"]["min"] < 100 < 1000 < info["return_quantiles"]["max"]


def test_bench_run_on_the_embedded_dataset_writes_a_record(tmp_path):
    out = tmp_path / "results"
    proc = bench("run", "--env", "hopper-mini-replay", "--algo", "bc", "--seed", "0", "--out", str(out),
                 "--set", "steps=300", "--set", "eval_every=150", "--set", "eval_episodes=2",
                 "--set", "final_eval_episodes=5")
    record_path = Path(proc.stdout.strip().splitlines()[-1])
    rec = json.loads(record_path.read_text())
    assert rec["status"] == "complete" and isinstance(rec["final"]["normalized_mean"], float)
    assert "steps/s" in proc.stderr and "final: return" in proc.stderr


def test_a_full_disk_gives_a_clear_message(monkeypatch, capsys):
    import errno

    import pytest

    from bench import cli
    from bench.results import store

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", "results/x.json")

    monkeypatch.setattr(store.tempfile, "mkstemp", full)
    monkeypatch.setattr(sys, "argv", ["bench", "run", "--env", "hopper-mini-replay", "--algo", "bc",
                                      "--set", "steps=1"])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "no space left" in err and "results/x.json" in err and "resume" in err
