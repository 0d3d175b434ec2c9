"""K seeds trained as one batched model give the same policies as K separate runs."""

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
    batched = train_bc_seeds(traj, cfg, seeds)
    for seed, policy in zip(seeds, batched, strict=True):
        ctx = RunContext(seed=seed, device=torch.device("cpu"), total_steps=cfg.steps, evaluate=None,
                         eval_every=10**9, log=lambda m: None)
        separate = train_bc(traj, all_episodes(traj), cfg, ctx)
        for a, b in zip(policy.parameters(), separate.parameters(), strict=True):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    # different seeds really are different models
    assert not torch.allclose(batched[0].log_std, batched[1].log_std) or not torch.allclose(
        next(batched[0].parameters()), next(batched[1].parameters()))
