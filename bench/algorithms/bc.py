"""Behaviour cloning with the Gaussian MLP policy: ``bc`` (all data) and ``bc_10`` (the top 10%, from scratch).

Objective (maximum likelihood of the data's actions; Pomerleau 1989; the paper's Eq. 1 with D+ = the selection):

    J_BC(theta) = E_{(s, a) ~ D+} [ log pi_theta(a | s) ]

Batches are either transitions sampled uniformly (the peers' BC) or whole trajectories (the paper's reference
policy; see ``trajectory_batch`` for the loss normalisation). Adam at a constant rate. ``precision="bfloat16"``
runs the forward pass under bf16 autocast (matrix multiplies in bf16 with float32 accumulation; weights, Adam state and
the loss stay float32): steps 1.5x (256 transitions) to 3.2x (128 whole trajectories) faster on a CPU core with bf16
matrix units, a fit within 1% of float32's (tested), not bit-equal — so it is part of the config and the run's hash.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from bench.algorithms.base import Algorithm, RunContext
from bench.algorithms.policy import GaussianMLPPolicy
from bench.algorithms.trajectory_batch import EpisodeTable, trajectory_log_likelihood
from bench.datasets.curation import Curated, all_episodes, quality_bins
from bench.datasets.trajectories import Trajectories


@dataclass
class BCConfig:
    steps: int = 10_000  # gradient steps (REFERENCE §2: 10,000 for the BC reference policy)
    batch_size: int = 256  # transitions, or trajectories when batch_unit = "trajectories"
    batch_unit: str = "transitions"  # "transitions" or "trajectories" (paper: 32, authors' code: 128 trajectories)
    loss_normalization: str = "trajectory_mean"  # with trajectory batches: "trajectory_mean" (code) or "sum" (Eq. 5)
    learning_rate: float = 1e-3  # Adam (REFERENCE §2)
    hidden: int = 256  # units per hidden layer
    layers: int = 3  # hidden layers
    precision: str = "float32"  # "float32", or "bfloat16": matmuls under bf16 autocast (see the module docstring)

    def __post_init__(self):  # a bad --set fails when the config is resolved, before any record is written
        if self.batch_unit not in ("transitions", "trajectories"):
            raise ValueError(f"batch_unit must be 'transitions' or 'trajectories', got {self.batch_unit!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")


PRECISIONS = ("float32", "bfloat16")


def forward_precision(precision: str, device: torch.device):
    """The context the forward pass runs in (every step): nothing for float32, bf16 autocast for bfloat16; the
    value was checked when the config was built."""
    if precision == "float32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


@dataclass
class BC10Config(BCConfig):
    top_percentile: float = 90.0  # keep episodes with return >= this percentile of returns (top 10%)


@dataclass
class BC5Config(BCConfig):
    top_percentile: float = 95.0  # the top 5% (the paper's kitchen baseline "BC (5%)")


def transition_sampler(trajectories: Trajectories, curated: Curated,
                       device: torch.device | str) -> Callable[[int, torch.Generator], torch.Tensor]:
    """``sample(n, generator)`` -> n transition rows drawn with the curated multiplicities (uniform draws when all
    are equal, which is cheaper); BC and the batched-seed BC share it so both draw the same rows for a seed."""
    idx, weights = curated.transition_indices(trajectories)
    idx = torch.as_tensor(idx, device=device)
    if (weights == weights[0]).all():
        return lambda n, gen: idx[torch.randint(len(idx), (n,), generator=gen).to(device)]
    probs = torch.as_tensor(weights / weights.sum())
    return lambda n, gen: idx[torch.multinomial(probs, n, replacement=True, generator=gen).to(device)]


def train_bc(trajectories: Trajectories, curated: Curated, cfg: BCConfig, ctx: RunContext) -> GaussianMLPPolicy:
    """Maximum likelihood on the curated episodes from a fresh policy; resumable through ``ctx``."""
    torch.manual_seed(ctx.seed)
    policy = GaussianMLPPolicy(trajectories.obs_dim, trajectories.act_dim, cfg.hidden, cfg.layers).to(ctx.device)
    # fused: one pass over the parameters instead of ~9; a BC step on 256 transitions is 17% faster on a CPU core
    optim = torch.optim.Adam(policy.parameters(), lr=cfg.learning_rate, fused=True)
    gen = torch.Generator(device="cpu").manual_seed(ctx.seed)
    obs = torch.as_tensor(trajectories.observations, device=ctx.device)
    act = torch.as_tensor(trajectories.actions, device=ctx.device)
    if cfg.batch_unit == "transitions":
        sample = transition_sampler(trajectories, curated, ctx.device)
    else:
        table = EpisodeTable.from_curated(trajectories, curated, ctx.device)

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
        if cfg.batch_unit == "transitions":
            rows = sample(cfg.batch_size, gen)
        else:
            rows, seg, lengths = table.sample(cfg.batch_size, gen)
        with forward_precision(cfg.precision, ctx.device):
            logp = policy.log_prob(obs[rows], act[rows]).float()
        if cfg.batch_unit == "transitions":
            loss = -logp.mean()
        else:
            loss = -trajectory_log_likelihood(logp, seg, lengths, cfg.loss_normalization, table.mean_length).mean()
        optim.zero_grad(set_to_none=True)
        loss.backward()
        optim.step()
        ctx.step(step, policy, loss.item(), checkpoint)
    policy.eval()
    return policy


class BC(Algorithm):
    name = "bc"
    Config = BCConfig

    def curate(self, trajectories: Trajectories) -> Curated:
        return all_episodes(trajectories)

    def fit(self, trajectories: Trajectories, curated: Curated, ctx: RunContext) -> GaussianMLPPolicy:
        return train_bc(trajectories, curated, self.config, ctx)

    def can_batch_seeds(self) -> bool:
        return self.config.batch_unit == "transitions"

    def fit_seeds(self, trajectories: Trajectories, curated: Curated, ctxs: list[RunContext],
                  checkpoint_path: Path | None = None) -> list[GaussianMLPPolicy]:
        from bench.algorithms.batched import train_bc_seeds

        return train_bc_seeds(trajectories, curated, self.config, ctxs, checkpoint_path)


class BC10(BC):
    """BC from a random initialisation on the top 10% of episodes by return (the peers' "10% BC")."""

    name = "bc_10"
    Config = BC10Config

    def curate(self, trajectories: Trajectories) -> Curated:
        return quality_bins(trajectories, [self.config.top_percentile])


class BC5(BC10):
    """BC from a random initialisation on the top 5% of episodes (the kitchen baseline of the paper's Table 3)."""

    name = "bc_5"
    Config = BC5Config
