"""`bench sweep`: local processes and Ray give the same records; re-runs do nothing; SIGKILL loses nothing."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.results.store import load_records
from bench.sweep import Grid, run_sweep

FAST = {"steps": 40, "eval_every": 20, "eval_episodes": 1, "final_eval_episodes": 2, "batch_size": 16,
        "bc_steps": 30, "warmup_steps": 5}
BC_FAST = {k: v for k, v in FAST.items() if k not in ("bc_steps", "warmup_steps")}


@pytest.fixture
def two_datasets(hopper_minari_dataset):
    """The conftest Hopper dataset and a second one with other random episodes."""
    import gymnasium as gym

    from bench.datasets.generate import _rollout, write_minari

    space = gym.make("Hopper-v5").action_space
    space.seed(1)
    episodes = _rollout("Hopper-v5", lambda _o: space.sample(), seed=1, n_episodes=25)
    write_minari(episodes, "bench/test-hopper/second-v0", "Hopper-v5", -20.0, 3000.0, "test", {})
    return [f"minari:{hopper_minari_dataset[0]}", "minari:bench/test-hopper/second-v0"]


def finals(folder):
    records, bad = load_records([folder])
    assert not bad
    return {(r.env, r.algo, r.seed): (r.status, r.final.get("returns")) for r in records}


def test_an_override_that_no_algorithm_has_is_an_error(two_datasets):
    with pytest.raises(KeyError, match="bc_steps"):
        Grid(two_datasets, ["bc"], [0], FAST).expand()


def test_local_and_ray_give_the_same_records_and_a_rerun_does_nothing(two_datasets, tmp_path):
    configs = Grid(two_datasets, ["bc", "sft"], [0, 1], FAST).expand()
    assert len(configs) == 8
    local = run_sweep(configs, tmp_path / "local", "local", workers=2, log=lambda m: None)
    assert local.ok and len(local.done) == 8
    again = run_sweep(configs, tmp_path / "local", "local", workers=2, log=lambda m: None)
    assert len(again.skipped) == 8 and not again.done
    ray = run_sweep(configs, tmp_path / "ray", "ray", workers=2, log=lambda m: None)
    assert ray.ok and len(ray.done) == 8
    assert finals(tmp_path / "local") == finals(tmp_path / "ray")
    assert all(status == "complete" for status, _ in finals(tmp_path / "local").values())


def test_a_failed_run_is_recorded_and_the_sweep_goes_on(two_datasets, tmp_path):
    configs = Grid(two_datasets[:1], ["bc"], [0, 1], BC_FAST).expand()
    configs[0].algo_config["learning_rate"] = 1e30  # NaN loss
    summary = run_sweep(configs, tmp_path / "out", "local", workers=2, log=lambda m: None)
    assert not summary.ok and len(summary.done) == 1 and len(summary.failed) == 1
    assert "DivergedError" in summary.failed[0]["error"] and "diverged: " in summary.text()
    statuses = sorted(s for s, _ in finals(tmp_path / "out").values())
    assert statuses == ["complete", "diverged"]


def test_sweep_killed_with_sigkill_finishes_with_every_record_exactly_once(two_datasets, tmp_path):
    grid = tmp_path / "grid.yaml"
    grid.write_text(json.dumps({"envs": two_datasets, "algos": ["bc", "bc_10"], "seeds": 3,
                                "set": {**BC_FAST, "steps": 300, "eval_every": 50}}))
    out = tmp_path / "results"
    cmd = [str(Path(sys.executable).parent / "bench"), "sweep", "--grid", str(grid), "--workers", "2",
           "--out", str(out)]
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and len(list(out.glob("*.json"))) < 4:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # the sweep and its workers, mid-run
    proc.wait()
    records, bad = load_records([out])
    assert not bad  # nothing half-written
    assert any(r.status != "complete" for r in records)  # it really was killed midway
    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    records, bad = load_records([out])
    assert not bad and len(records) == 12
    assert len({(r.env, r.algo, r.seed) for r in records}) == 12
    assert all(r.status == "complete" for r in records)
    assert not list(out.glob("checkpoints/*.pt"))  # every resumed run cleaned up after itself
