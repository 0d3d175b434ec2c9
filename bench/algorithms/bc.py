"""Behaviour cloning with the Gaussian MLP policy.

Objective (maximum likelihood of the data's actions; Pomerleau 1989, the paper's Eq. 1 with D+ = all data):

    J_BC(theta) = E_{(s, a) ~ D} [ log pi_theta(a | s) ]

Transitions are sampled uniformly (weighted by the curation's multiplicity) in batches; Adam at a constant rate.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from bench.algorithms.base import Algorithm, RunContext
from bench.algorithms.policy import GaussianMLPPolicy
from bench.datasets.curation import Curated, all_episodes
from bench.datasets.trajectories import Trajectories


@dataclass
class BCConfig:
    steps: int = 10_000  # gradient steps (REFERENCE §2: 10,000 for the BC reference policy)
    batch_size: int = 256  # transitions per step
    learning_rate: float = 1e-3  # Adam (REFERENCE §2)
    hidden: int = 256  # units per hidden layer
    layers: int = 3  # hidden layers


class BC(Algorithm):
    name = "bc"
    Config = BCConfig

    def curate(self, trajectories: Trajectories) -> Curated:
        return all_episodes(trajectories)

    def fit(self, trajectories: Trajectories, curated: Curated, ctx: RunContext) -> GaussianMLPPolicy:
        cfg: BCConfig = self.config
        torch.manual_seed(ctx.seed)
        policy = GaussianMLPPolicy(trajectories.obs_dim, trajectories.act_dim, cfg.hidden, cfg.layers).to(ctx.device)
        optim = torch.optim.Adam(policy.parameters(), lr=cfg.learning_rate)
        gen = torch.Generator(device="cpu").manual_seed(ctx.seed)

        idx, weights = curated.transition_indices(trajectories)
        obs = torch.as_tensor(trajectories.observations[idx], device=ctx.device)
        act = torch.as_tensor(trajectories.actions[idx], device=ctx.device)
        uniform = bool(np.all(weights == weights[0]))
        probs = torch.as_tensor(weights / weights.sum())

        start = 0
        if (state := ctx.resume()) is not None:
            policy.load_state_dict(state["policy"])
            optim.load_state_dict(state["optim"])
            gen.set_state(state["generator"])
            start = state["step"]

        def checkpoint() -> dict:
            return {"policy": policy.state_dict(), "optim": optim.state_dict(), "generator": gen.get_state()}

        policy.train()
        for step in range(start + 1, cfg.steps + 1):
            if uniform:
                batch = torch.randint(len(idx), (cfg.batch_size,), generator=gen)
            else:
                batch = torch.multinomial(probs, cfg.batch_size, replacement=True, generator=gen)
            batch = batch.to(ctx.device)
            loss = -policy.log_prob(obs[batch], act[batch]).mean()
            optim.zero_grad(set_to_none=True)
            loss.backward()
            optim.step()
            ctx.step(step, policy, loss.item(), checkpoint)
        policy.eval()
        return policy
