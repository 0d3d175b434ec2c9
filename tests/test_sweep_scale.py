"""Sweeps at scale: the paper's grids with compute estimates, one GPU per run, an ETA per algorithm."""

from __future__ import annotations

import re

import pytest
import yaml

from bench.results.store import load_records
from bench.sweep import MEMORY, Grid, _Progress, dry_run, job_memory_gb, memory_summary, run_sweep

BC_FAST = {"steps": 40, "eval_every": 20, "eval_episodes": 1, "final_eval_episodes": 2, "batch_size": 16}


def test_paper_table2_is_315_runs_with_compute_estimates(tmp_path):
    configs = Grid.from_yaml("paper:table2").expand()
    assert len(configs) == 315  # 7 datasets x 9 algorithms x 5 seeds
    assert {c.algo for c in configs} == {"bc", "bc_10", "awac", "td3_bc", "cql", "iql", "sft", "sft_q", "iw_sft_q"}
    hmr = next(c for c in configs if (c.env, c.algo) == ("hopper-medium-replay", "iw_sft_q"))
    assert hmr.algo_config["learning_rate"] == 1e-4 and hmr.algo_config["normalize_weights"]  # Table 4's row
    text = dry_run(configs, tmp_path, workers=2)
    assert len(re.findall(r" seed \d  to run ", text)) == 315
    assert "315 runs: 0 complete, 315 to run; about" in text and "core-hours" in text
    # memory: the largest job is a batched group of 5 SFT-family seeds; 2 workers hold the two largest at once
    five = job_memory_gb("iw_sft_q", 5, yaml.safe_load(MEMORY.read_text()))
    assert re.search(rf"memory: up to {five:.1f} GB per job on data up to 2M transitions .*2 workers: up to "
                     rf"{2 * five:.1f} GB at once, this machine has \d+\.\d GB", text)
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


FT_FAST = {**BC_FAST, "bc_steps": 30, "warmup_steps": 5}


def test_ray_requests_gpus_pins_each_run_trains_pi_ref_once_and_the_driver_writes_every_record(
        hopper_minari_dataset, tmp_path):
    """A local Ray cluster with two fake GPUs: GPUs are requested without --gpus-per-run, each run records the one
    GPU id Ray gave it, pi_ref of each (dataset, seed) is trained once by an upstream task and handed to both
    fine-tuning algorithms, and the records under --out are the driver's (each run worked in a scratch folder of
    its own, gone afterwards)."""
    import json
    from pathlib import Path

    import ray

    configs = Grid([f"minari:{hopper_minari_dataset[0]}"], ["sft", "iw_sft"], [0, 1], FT_FAST).expand()
    out, messages = tmp_path / "out", []
    ray.init(num_cpus=4, num_gpus=2, include_dashboard=False, log_to_driver=False)
    try:
        summary = run_sweep(configs, out, "ray", workers=4, log=messages.append)
    finally:
        ray.shutdown()
    assert summary.ok and len(summary.done) == 4, summary.text()
    assert any("Ray: 1 GPU and 1 CPU per run" in m for m in messages)
    records, bad = load_records([out])
    assert not bad and len(records) == 4 and all(r.status == "complete" for r in records)
    assert all(r.device["cuda_visible_devices"] in ("0", "1") for r in records)  # one GPU each, Ray's ids
    worker_dirs = {row["worker_dir"] for row in summary.done}
    assert len(worker_dirs) == 4 and not any(Path(d).exists() or d.startswith(str(out)) for d in worker_dirs)
    # pi_ref: one upstream training per (dataset, seed); every fine-tuning run loaded it, none trained its own
    index = json.loads((out / "references" / "index.refs.json").read_text())
    (group,) = index.values()
    assert sorted(group) == ["0", "1"] and not any(e["info"]["cached"] for e in group.values())
    assert sorted(p.name for p in (out / "references").glob("*.pt")) == sorted(f"{e['key']}.pt"
                                                                               for e in group.values())
    assert all(r.train_info["reference"]["cached"] for r in records)
    assert {r.train_info["reference"]["key"] for r in records if r.seed == 0} == {group["0"]["key"]}
    assert sum("training the reference policies" in m for m in messages) == 1

    # a second sweep of a new algorithm on the same data takes pi_ref from <out>/references: no upstream training
    more = Grid([f"minari:{hopper_minari_dataset[0]}"], ["sft_q"], [0, 1], FT_FAST).expand()
    messages.clear()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        assert run_sweep(more, out, "ray", workers=2, log=messages.append).ok
    finally:
        ray.shutdown()
    assert any("Ray: 0 GPU" in m for m in messages) and not any("training the reference" in m for m in messages)


def test_a_run_that_asks_for_a_gpu_where_none_is_visible_says_what_to_do(monkeypatch):
    from bench.run import resolve_device

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with pytest.raises(ValueError, match=r"device cuda was asked for but this process sees no GPU "
                                         r"\(CUDA_VISIBLE_DEVICES=''.*--gpus-per-run"):
        resolve_device("cuda")


def test_a_ray_run_resumes_from_a_checkpoint_in_the_shared_checkpoint_dir(hopper_minari_dataset, tmp_path,
                                                                           monkeypatch):
    """What a retried Ray task does when its worker died: with --checkpoint-dir on storage every node reaches, the
    new attempt (another process, another scratch folder, another --out) resumes where the dead one stopped and
    ends with the record an uninterrupted run writes."""
    import ray
    from conftest import kill_after_first_checkpoint

    from bench.run import run

    cfg = Grid([f"minari:{hopper_minari_dataset[0]}"], ["td3_bc"], [0],
               {**BC_FAST, "steps": 60, "eval_every": 30}).expand()[0]
    shared = tmp_path / "shared-checkpoints"
    reference = run(cfg, tmp_path / "reference", log=lambda m: None)
    kill_after_first_checkpoint(monkeypatch, lambda: run(cfg, tmp_path / "died", log=lambda m: None,
                                                         checkpoint_dir=shared))
    assert list(shared.glob("*.pt"))
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        summary = run_sweep([cfg], tmp_path / "out", "ray", workers=1, log=lambda m: None, checkpoint_dir=shared)
    finally:
        ray.shutdown()
    assert summary.ok
    (record,), _ = load_records([tmp_path / "out"])
    assert record.train_info["resumed_from_step"] == 30
    assert [p["loss"] for p in record.curve] == [p["loss"] for p in reference.curve]
    assert record.final["returns"] == reference.final["returns"] and not list(shared.glob("*.pt"))


def test_job_memory_and_the_dry_runs_warning_by_hand():
    from types import SimpleNamespace

    table = {"transitions": [100_000, 1_000_000, 2_000_000], "machine": "m",
             "peak_gb": {"bc": [0.3, 0.4, 0.5], "iw_sft_q": [0.5, 1.0, 1.2], "iw_sft_q*5": [1.0, 2.0, 3.2]}}
    assert job_memory_gb("iw_sft_q", 1, table) == 1.2
    assert job_memory_gb("iw_sft_q", 3, table) == pytest.approx(1.2 + 2.0 * 2 / 4)  # between 1 and 5 seeds
    assert job_memory_gb("bc", 2, table) is None and job_memory_gb("cql", 1, table) is None  # not measured
    jobs = [[SimpleNamespace(algo="iw_sft_q")] * 5, [SimpleNamespace(algo="bc")], [SimpleNamespace(algo="bc")]]
    fine = memory_summary(jobs, 2, table, machine_gb=16.0)
    assert fine == ["memory: up to 3.2 GB per job on data up to 2M transitions (memory.yaml, m); 2 workers: up to "
                    "3.7 GB at once, this machine has 16.0 GB"]
    tight = memory_summary(jobs, 3, table, machine_gb=4.0)  # 4.2 GB at once > 90% of 4 GB; 3.7 GB too
    assert tight[1] == "warning: 3 workers may run out of memory: use --workers 1"


def test_every_algorithm_of_the_paper_grids_has_a_memory_estimate_single_and_batched():
    table = yaml.safe_load(MEMORY.read_text())
    algos = {c.algo for grid in ("paper:table2", "paper:table3") for c in Grid.from_yaml(grid).expand()}
    for algo in sorted(algos):
        assert job_memory_gb(algo, 1, table) is not None, algo
        assert job_memory_gb(algo, 5, table) is not None or algo in ("td3_bc", "iql", "cql", "awac"), algo
    assert job_memory_gb("sft_q", 5, table) == table["peak_gb"]["iw_sft_q*5"][-1]  # likened: an upper bound
