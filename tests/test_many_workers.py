"""Many workers, one folder, one cluster: a failed upstream task becomes the records it should, results folders hold
records and nothing else, and another tool's JSON beside the records is passed over."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.results.store import load_records
from bench.run import resolve_config, run
from bench.sweep import Grid, run_sweep

BC = {"steps": 40, "eval_every": 20, "eval_episodes": 1, "final_eval_episodes": 2, "batch_size": 16}
FAST = {**BC, "warmup_steps": 5, "bc_steps": 30, "bc_batch_size": 16}  # a grid applies each where it fits


def _outcome(out: Path) -> dict[tuple[str, int], str]:
    records, bad = load_records([out])
    assert not bad
    return {(r.algo, r.seed): r.status for r in records}


def test_a_ray_sweep_whose_reference_bc_diverges_ends_as_the_local_one(hopper_minari_dataset, tmp_path):
    """bc trains; sft's reference BC (bc_learning_rate 1e6) diverges. Both executors finish the grid with the same
    statuses; the Ray driver writes the fine-tuning runs' records, saying why, instead of dying."""
    import ray

    grid = Grid([f"minari:{hopper_minari_dataset[0]}"], ["bc", "sft"], [0, 1], {**FAST, "bc_learning_rate": 1e6})
    local = run_sweep(grid.expand(), tmp_path / "local", "local", workers=2, log=lambda m: None)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        remote = run_sweep(grid.expand(), tmp_path / "ray", "ray", workers=2, log=lambda m: None)
    finally:
        ray.shutdown()
    expected = {("bc", 0): "complete", ("bc", 1): "complete", ("sft", 0): "diverged", ("sft", 1): "diverged"}
    assert _outcome(tmp_path / "local") == _outcome(tmp_path / "ray") == expected
    for summary in (local, remote):
        assert len(summary.done) == 2 and sorted(f["status"] for f in summary.failed) == ["diverged"] * 2
    records, _ = load_records([tmp_path / "ray"])
    for r in records:
        if r.algo == "sft":
            assert r.error.startswith("the reference policy it fine-tunes from could not be trained (upstream "
                                      "task): DivergedError: diverged at step")
            assert "lower" in r.error and "bc_learning_rate" in r.error
    assert not (tmp_path / "ray" / "references").exists()  # nothing of the failed upstream task is kept


def test_results_folders_hold_no_lock_files_after_runs_sweeps_and_failures(hopper_minari_dataset, tmp_path):
    env = f"minari:{hopper_minari_dataset[0]}"
    run(resolve_config(env, "bc", 0, BC), tmp_path / "run", log=lambda m: None)
    run_sweep(Grid([env], ["bc"], [1, 2], BC).expand(), tmp_path / "sweep", workers=2, log=lambda m: None)
    bench = str(Path(sys.executable).parent / "bench")
    failed = subprocess.run([bench, "run", "--env", "hopper-medium-replay", "--algo", "bc", "--out",
                             str(tmp_path / "failed")], capture_output=True, text=True, timeout=300)
    assert failed.returncode != 0 and "not in the cache" in failed.stderr  # offline, no such file
    for folder in ("run", "sweep", "failed"):
        assert not list((tmp_path / folder).rglob("*.lock")), folder
    assert len(list((tmp_path / "sweep").glob("*.json"))) == 2 and not list((tmp_path / "failed").glob("*.json"))


def test_report_discovery_passes_over_another_tools_json(hopper_minari_dataset, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    rec = run(resolve_config(f"minari:{hopper_minari_dataset[0]}", "bc", 0, {**BC, "loggers": ["wandb"]}),
              tmp_path, log=lambda m: None)
    others = [p for p in tmp_path.rglob("*.json") if p != tmp_path / rec.filename]
    assert any("wandb" in p.parts for p in others)  # the W&B logger's run marker, named like the record
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "list.json").write_text(json.dumps([1, 2]))
    damaged = tmp_path / rec.filename.replace("seed0", "seed7")
    damaged.write_text(json.dumps(rec.to_dict())[:200])  # a record cut short: reported, never passed over
    records, bad = load_records([tmp_path])
    assert [r.filename for r in records] == [rec.filename]
    assert [p for p, _ in bad] == [damaged]


@pytest.mark.parametrize("holders", [2])
def test_a_lock_file_is_removed_by_its_holder_and_never_held_twice(tmp_path, holders):
    """Processes that each take the lock, append their pid to a log inside it, and release it: every pair of
    entries is one process's enter and exit, and the lock file is gone at the end."""
    script = (
        "import os, sys, time; from pathlib import Path; from bench.locks import file_lock\n"
        "for _ in range(30):\n"
        "    with file_lock(Path(sys.argv[1])):\n"
        "        with open(sys.argv[2], 'a') as f: f.write(f'in {os.getpid()}\\n')\n"
        "        time.sleep(0.002)\n"
        "        with open(sys.argv[2], 'a') as f: f.write(f'out {os.getpid()}\\n')\n")
    lock, log = tmp_path / "x.lock", tmp_path / "log.txt"
    procs = [subprocess.Popen([sys.executable, "-c", script, str(lock), str(log)]) for _ in range(holders + 1)]
    assert [p.wait(timeout=120) for p in procs] == [0] * len(procs)
    lines = log.read_text().split()
    pairs = list(zip(lines[0::4], lines[1::4], lines[2::4], lines[3::4], strict=True))
    assert len(pairs) == 30 * len(procs)
    assert all(a == "in" and c == "out" and b == d for a, b, c, d in pairs)  # never two holders at once
    assert not lock.exists()
