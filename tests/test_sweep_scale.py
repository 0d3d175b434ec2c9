"""Sweeps at scale: the paper's grids with compute estimates, one GPU per run, an ETA per algorithm."""

from __future__ import annotations

import re

import pytest

from bench.results.store import load_records
from bench.sweep import Grid, _Progress, dry_run, run_sweep

BC_FAST = {"steps": 40, "eval_every": 20, "eval_episodes": 1, "final_eval_episodes": 2, "batch_size": 16}


def test_paper_table2_is_315_runs_with_compute_estimates(tmp_path):
    configs = Grid.from_yaml("paper:table2").expand()
    assert len(configs) == 315  # 7 datasets x 9 algorithms x 5 seeds
    assert {c.algo for c in configs} == {"bc", "bc_10", "awac", "td3_bc", "cql", "iql", "sft", "sft_q", "iw_sft_q"}
    hmr = next(c for c in configs if (c.env, c.algo) == ("hopper-medium-replay", "iw_sft_q"))
    assert hmr.algo_config["learning_rate"] == 1e-4 and hmr.algo_config["normalize_weights"]  # Table 4's row
    text = dry_run(configs, tmp_path)
    assert text.count("\n") == 315 and "315 runs: 0 complete, 315 to run; about" in text and "core-hours" in text
    # the SFT family's reference BC is counted once per (dataset, seed): with the first run that needs it
    assert len(re.findall(r"hopper-medium-replay +sft +seed 0 .* \+ reference 10000 x bc/trajectories", text)) == 1
    assert not re.search(r"hopper-medium-replay +sft_q +seed 0 .*reference", text)
    assert re.search(r"hopper-medium-replay +cql +seed 0 +to run +\d+\.\d min +\(1000000 x cql/256", text)


def test_a_complete_record_shows_in_the_dry_run(hopper_minari_dataset, tmp_path):
    configs = Grid([f"minari:{hopper_minari_dataset[0]}"], ["bc"], [0, 1], BC_FAST).expand()
    run_sweep(configs[:1], tmp_path, "local", workers=1, log=lambda m: None)
    text = dry_run(configs, tmp_path)
    assert "2 runs: 1 complete, 1 to run" in text and " seed 0  complete" in text


def test_paper_table3_and_figure1(tmp_path):
    runs = Grid.from_yaml("paper:table3").expand()
    assert sorted({(c.env, c.algo) for c in runs}) == [
        ("kitchen-complete", "bc"), ("kitchen-complete", "bc_5"), ("kitchen-complete+mixed", "iw_sft_q"),
        ("kitchen-complete+mixed", "sft"), ("kitchen-complete+mixed", "sft_q"), ("kitchen-partial", "bc")]
    assert len(runs) == 18 and all(c.algo_config["reference_dataset"] == "kitchen-partial"
                                   for c in runs if "reference_dataset" in c.algo_config)
    with pytest.raises(ValueError, match="is the toy bandit"):
        Grid.from_yaml("paper:figure1")
    with pytest.raises(ValueError, match="unknown paper grid 'paper:nope'; choose one of paper:figure1"):
        Grid.from_yaml("paper:nope")


def test_each_run_sees_its_own_gpu(hopper_minari_dataset, tmp_path, monkeypatch):
    """With CUDA_VISIBLE_DEVICES=0,1 and 2 workers, the two runs are pinned to different GPUs (round-robin) and
    record it (no GPU here: the runs train on the CPU, but each saw only its own id)."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    configs = Grid([f"minari:{hopper_minari_dataset[0]}"], ["bc", "bc_10"], [0], BC_FAST).expand()
    messages = []
    summary = run_sweep(configs, tmp_path, "local", workers=2, log=messages.append)
    assert summary.ok and any("2 GPUs (0, 1), 1 run(s) per GPU" in m for m in messages)
    records, _ = load_records([tmp_path])
    assert sorted(r.device["cuda_visible_devices"] for r in records) == ["0", "1"]


def test_runs_per_gpu_packs_runs_on_one_gpu(hopper_minari_dataset, tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    configs = Grid([f"minari:{hopper_minari_dataset[0]}"], ["bc", "bc_10"], [0], BC_FAST).expand()
    run_sweep(configs, tmp_path, "local", workers=4, log=lambda m: None, runs_per_gpu=2)
    records, _ = load_records([tmp_path])
    assert [r.device["cuda_visible_devices"] for r in records] == ["3", "3"]


def test_the_eta_uses_each_algorithms_own_run_time():
    lines = []
    progress = _Progress(["cql", "cql", "bc", "bc"], workers=1, log=lines.append)
    progress.tick({"label": "a cql seed 0", "algo": "cql", "status": "complete", "seconds": 100.0})
    assert lines[-1].endswith("ETA 300s")  # 1 cql left at 100 s, 2 bc at the overall mean (100 s)
    progress.tick({"label": "a bc seed 0", "algo": "bc", "status": "complete", "seconds": 10.0})
    assert lines[-1].endswith("ETA 110s")  # 1 cql (100 s) + 1 bc (10 s)
