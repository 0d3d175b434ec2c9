"""K seeds trained as one batched model give the same policies as K separate runs."""

import numpy as np
import torch
from conftest import marked_episodes

from bench.algorithms.base import RunContext
from bench.algorithms.batched import train_bc_seeds
from bench.algorithms.bc import BCConfig, train_bc
from bench.datasets.curation import all_episodes
from bench.datasets.trajectories import Trajectories


def test_batched_seeds_equal_separate_runs():
    eps = marked_episodes([30, 25, 40], obs_dim=5, act_dim=2)
    for e in eps:  # actions inside [-1, 1] so the tanh mean can fit them
        e["actions"] = torch.tanh(torch.as_tensor(e["actions"]) / 10).numpy()
        e["observations"] = e["observations"] / 100
    traj = Trajectories.from_episodes(eps)
    cfg = BCConfig(steps=30, batch_size=16, hidden=32)
    seeds = [3, 7, 11]
    def ctx(seed):
        return RunContext(seed=seed, device=torch.device("cpu"), total_steps=cfg.steps, evaluate=None,
                          eval_every=10**9, log=lambda m: None)

    batched = train_bc_seeds(traj, all_episodes(traj), cfg, [ctx(s) for s in seeds])
    for seed, policy in zip(seeds, batched, strict=True):
        separate = train_bc(traj, all_episodes(traj), cfg, ctx(seed))
        for a, b in zip(policy.parameters(), separate.parameters(), strict=True):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    # different seeds really are different models
    assert not torch.allclose(batched[0].log_std, batched[1].log_std) or not torch.allclose(
        next(batched[0].parameters()), next(batched[1].parameters()))


def _bc_cfgs(dataset_id, seeds, algo="bc", **over):
    from bench.run import resolve_config

    fast = {"steps": 200, "eval_every": 100, "eval_episodes": 2, "final_eval_episodes": 3, "batch_size": 64, **over}
    return [resolve_config(f"minari:{dataset_id}", algo, seed=s, overrides=fast) for s in seeds]


def test_run_seeds_batches_bc_and_writes_the_records_of_separate_runs(hopper_minari_dataset, tmp_path):
    from bench.results.store import read_record
    from bench.run import run, run_seeds

    dataset_id, _ = hopper_minari_dataset
    cfgs = _bc_cfgs(dataset_id, [0, 1, 2])
    batched = run_seeds(cfgs, tmp_path / "batched", log=lambda m: None)
    separate = [run(c, tmp_path / "separate", log=lambda m: None) for c in cfgs]
    for b, s in zip(batched, separate, strict=True):
        assert b.filename == s.filename and b.train_info["batched_seeds"] == [0, 1, 2]
        assert read_record(tmp_path / "batched" / b.filename).status == "complete"
        assert [p["step"] for p in b.curve] == [p["step"] for p in s.curve] == [100, 200]
        np.testing.assert_allclose([p["loss"] for p in b.curve], [p["loss"] for p in s.curve], rtol=1e-4)
        assert len(b.final["returns"]) == 3
    assert not (tmp_path / "batched" / "checkpoints").exists()
    # a second call skips what is complete
    again = run_seeds(cfgs, tmp_path / "batched", log=lambda m: None)
    assert [r.filename for r in again] == [r.filename for r in batched]


def test_an_interrupted_batched_group_resumes_to_the_same_result(hopper_minari_dataset, tmp_path, monkeypatch):
    import pytest

    from bench.algorithms import batched as batched_module
    from bench.results.store import read_record
    from bench.run import run_seeds

    dataset_id, _ = hopper_minari_dataset
    cfgs = _bc_cfgs(dataset_id, [4, 5])
    reference = run_seeds(cfgs, tmp_path / "ref", log=lambda m: None)
    original = batched_module._save_group

    def save_then_die(path, state):
        original(path, state)
        raise KeyboardInterrupt

    monkeypatch.setattr(batched_module, "_save_group", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        run_seeds(cfgs, tmp_path / "out", log=lambda m: None)
    monkeypatch.setattr(batched_module, "_save_group", original)
    assert all(read_record(tmp_path / "out" / r.filename).status == "interrupted" for r in reference)
    messages = []
    resumed = run_seeds(cfgs, tmp_path / "out", log=messages.append)
    assert any("resumed 2 batched seeds" in m and "step 100" in m for m in messages)
    for a, b in zip(resumed, reference, strict=True):
        assert a.status == "complete" and [p["loss"] for p in a.curve] == [p["loss"] for p in b.curve]
        assert a.final["returns"] == b.final["returns"]


def test_plan_jobs_groups_bc_seeds_and_keeps_cores_busy(hopper_minari_dataset):
    from bench.sweep import plan_jobs

    dataset_id, _ = hopper_minari_dataset
    bc = _bc_cfgs(dataset_id, range(6))
    bc_traj = _bc_cfgs(dataset_id, range(2), batch_unit="trajectories")
    iql = _bc_cfgs(dataset_id, range(2), algo="iql")
    jobs = plan_jobs(bc + bc_traj + iql, workers=2)
    assert sorted(len(j) for j in jobs) == [1, 1, 1, 1, 6]  # trajectory batches and IQL run one seed per job
    assert [c.seed for c in max(jobs, key=len)] == list(range(6))
    split = plan_jobs(bc, workers=2)  # one cell, two cores: two batched halves
    assert sorted([c.seed for c in j] for j in split) == [[0, 1, 2], [3, 4, 5]]
    assert len(plan_jobs(bc, workers=16)) == 6
