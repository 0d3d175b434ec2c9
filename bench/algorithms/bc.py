"""Behaviour cloning with the Gaussian MLP policy: ``bc`` (all data) and ``bc_10`` (the top 10%, from scratch).

Objective (maximum likelihood of the data's actions; Pomerleau 1989; the paper's Eq. 1 with D+ = the selection):

    J_BC(theta) = E_{(s, a) ~ D+} [ log pi_theta(a | s) ]

Batches are either transitions sampled uniformly (the peers' BC) or whole trajectories (the paper's reference
policy; see ``trajectory_batch`` for the loss normalisation). Adam at a constant rate. ``precision`` selects float32,
TF32 (CUDA) or a bfloat16 forward pass (``bench.algorithms.precision``). Transition rows are drawn on the training
device, whole trajectories on the host (``EpisodeTable``), and the loss stays on the device: a step never waits for
it (``RunContext.step``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from bench.algorithms.base import Algorithm, RunContext
from bench.algorithms.batched import StackedGaussianMLP, resume_group
from bench.algorithms.policy import GaussianMLPPolicy
from bench.algorithms.precision import check_precision, step_precision
from bench.algorithms.trajectory_batch import EpisodeTable, trajectory_log_likelihood, transition_sampler
from bench.configs.domains import bounded, check_domains
from bench.datasets.curation import Curated, all_episodes, quality_bins
from bench.datasets.trajectories import Trajectories


@dataclass
class BCConfig:
    steps: int = bounded(10_000, ge=1)  # gradient steps (REFERENCE §2: 10,000 for the BC reference policy)
    batch_size: int = bounded(256, ge=1)  # transitions, or trajectories when batch_unit = "trajectories"
    batch_unit: str = "transitions"  # "transitions" or "trajectories" (paper: 32, authors' code: 128 trajectories)
    loss_normalization: str = "trajectory_mean"  # with trajectory batches: "trajectory_mean" (code) or "sum" (Eq. 5)
    learning_rate: float = bounded(1e-3, gt=0)  # Adam (REFERENCE §2)
    hidden: int = bounded(256, ge=1)  # units per hidden layer
    layers: int = bounded(3, ge=1)  # hidden layers
    precision: str = "float32"  # "float32", "tf32" (CUDA) or "bfloat16" autocast (bench/algorithms/precision.py)
    # stop as "diverged" when an evaluation window's mean loss exceeds the first update's loss by this many times
    # max(|that loss|, 1) (lr 1e6: ~40,000 vs ~2.7); 0 = only non-finite losses and parameters
    divergence_factor: float = bounded(100.0, ge=0)

    def __post_init__(self):  # a bad --set fails when the config is resolved, before any record is written
        if self.batch_unit not in ("transitions", "trajectories"):
            raise ValueError(f"batch_unit must be 'transitions' or 'trajectories', got {self.batch_unit!r}")
        check_precision("precision", self.precision)
        check_domains(self)


@dataclass
class BC10Config(BCConfig):
    top_percentile: float = bounded(90.0, ge=0, le=100)  # keep returns >= this percentile (top 10%)


@dataclass
class BC5Config(BCConfig):
    top_percentile: float = bounded(95.0, ge=0, le=100)  # the top 5% (the paper's kitchen baseline "BC (5%)")


def train_bc(trajectories: Trajectories, curated: Curated, cfg: BCConfig, ctx: RunContext) -> GaussianMLPPolicy:
    """Maximum likelihood on the curated episodes from a fresh policy; resumable through ``ctx``."""
    torch.manual_seed(ctx.seed)
    policy = GaussianMLPPolicy(trajectories.obs_dim, trajectories.act_dim, cfg.hidden, cfg.layers).to(ctx.device)
    # fused: one pass over the parameters instead of ~9; a BC step on 256 transitions is 17% faster on a CPU core
    optim = torch.optim.Adam(policy.parameters(), lr=cfg.learning_rate, fused=True)
    obs = torch.as_tensor(trajectories.observations, device=ctx.device)
    act = torch.as_tensor(trajectories.actions, device=ctx.device)
    if cfg.batch_unit == "transitions":  # transition rows are drawn on the device, whole trajectories on the host
        sample = transition_sampler(trajectories, curated, ctx.device)
        gen = torch.Generator(device=ctx.device).manual_seed(ctx.seed)
    else:
        table = EpisodeTable.from_curated(trajectories, curated, ctx.device)
        gen = np.random.default_rng(ctx.seed)

    ctx.watch(cfg.divergence_factor)
    start = ctx.resume(policy=policy, optim=optim, generator=gen)
    policy.train()
    for step in range(start + 1, cfg.steps + 1):
        if cfg.batch_unit == "transitions":
            rows = sample(cfg.batch_size, gen)
        else:
            rows, seg, lengths = table.sample(cfg.batch_size, gen)
        with step_precision(cfg.precision, ctx.device):
            logp = policy.log_prob(obs[rows], act[rows]).float()
        if cfg.batch_unit == "transitions":
            loss = -logp.mean()
        else:
            loss = -trajectory_log_likelihood(logp, seg, lengths, cfg.loss_normalization, table.mean_length).mean()
        optim.zero_grad(set_to_none=True)
        loss.backward()
        optim.step()
        ctx.step(step, policy, {"loss": loss})
    policy.eval()
    return policy


def train_bc_seeds(trajectories: Trajectories, curated: Curated, cfg: BCConfig, ctxs: Sequence[RunContext],
                   checkpoint_path: Path | None = None) -> list[GaussianMLPPolicy]:
    """BC on the curated data for every context's seed at once: the policies ``train_bc`` gives each seed.

    Each seed draws its own batches with its own generator, exactly as its separate run would (transitions on the
    device; whole trajectories on the host, padded to one shape: ``EpisodeTable.sample_seeds``). Each context gets
    its own progress, evaluations and learning curve (``ctx.step``) as in a separate run; the group checkpoints as
    one file (stacked weights, Adam state, every seed's generator and curve) at the evaluation steps and resumes
    from it.
    """
    device = ctxs[0].device
    policies = []
    for ctx in ctxs:
        torch.manual_seed(ctx.seed)  # the same initialisation a separate run of this seed gets
        policies.append(GaussianMLPPolicy(trajectories.obs_dim, trajectories.act_dim, cfg.hidden, cfg.layers))
    stacked = StackedGaussianMLP(policies).to(device)
    optim = torch.optim.Adam(stacked.parameters(), lr=cfg.learning_rate, fused=True)  # as train_bc's
    obs = torch.as_tensor(trajectories.observations, device=device)
    act = torch.as_tensor(trajectories.actions, device=device)
    if cfg.batch_unit == "transitions":  # the draws of train_bc, seed by seed
        sample = transition_sampler(trajectories, curated, device)
        gens = [torch.Generator(device=device).manual_seed(ctx.seed) for ctx in ctxs]
    else:
        table = EpisodeTable.from_curated(trajectories, curated, device)
        gens = [np.random.default_rng(ctx.seed) for ctx in ctxs]

    for ctx in ctxs:
        ctx.watch(cfg.divergence_factor)
    group, start = resume_group(checkpoint_path, ctxs, {"stacked": stacked, "optim": optim,
                                                        **{f"generator{k}": g for k, g in enumerate(gens)}})

    stacked.train()
    for step in range(start + 1, cfg.steps + 1):
        if cfg.batch_unit == "transitions":
            rows = torch.stack([sample(cfg.batch_size, g) for g in gens])
            with step_precision(cfg.precision, device):
                per_seed = -stacked.log_prob(obs[rows], act[rows]).float().mean(dim=1)
        else:
            rows, seg, lengths, counts = table.sample_seeds(cfg.batch_size, gens, unique=False)
            with step_precision(cfg.precision, device):
                logp = stacked.log_prob(obs[rows], act[rows]).float().reshape(-1)
            ll = trajectory_log_likelihood(logp, seg, lengths, cfg.loss_normalization, table.mean_length)
            per_seed = -(ll.view_as(counts) * counts).sum(1) / counts.sum(1)  # padding has count 0
        optim.zero_grad(set_to_none=True)
        per_seed.sum().backward()  # seed k's weights get exactly seed k's gradient
        optim.step()
        due = ctxs[0].due(step)
        for k, ctx in enumerate(ctxs):
            # a real policy only when an evaluation is due; otherwise ctx.step just adds up the statistics
            ctx.step(step, stacked.unstack(k, policies[0]) if due else None, {"loss": per_seed[k]})
        if due and step != cfg.steps:
            group.save(step)
    return [stacked.unstack(k, policies[0]) for k in range(len(ctxs))]


class BC(Algorithm):
    name = "bc"
    Config = BCConfig
    display_name = "BC"
    order = 10
    family = "native"
    summary = "behaviour cloning on all episodes (Gaussian MLP, maximum likelihood)"

    def curate(self, trajectories: Trajectories) -> Curated:
        return all_episodes(trajectories)

    def fit(self, trajectories: Trajectories, curated: Curated, ctx: RunContext) -> GaussianMLPPolicy:
        return train_bc(trajectories, curated, self.config, ctx)

    def can_batch_seeds(self) -> bool:
        return True

    def fit_seeds(self, trajectories: Trajectories, curated: Curated, ctxs: list[RunContext],
                  checkpoint_path: Path | None = None) -> list[GaussianMLPPolicy]:
        return train_bc_seeds(trajectories, curated, self.config, ctxs, checkpoint_path)


class BC10(BC):
    """BC from a random initialisation on the top 10% of episodes by return (the peers' "10% BC")."""

    name = "bc_10"
    Config = BC10Config
    display_name = "BC 10%"
    order = 20
    summary = "behaviour cloning from scratch on the top 10% of episodes by return"

    def curate(self, trajectories: Trajectories) -> Curated:
        return quality_bins(trajectories, [self.config.top_percentile])


class BC5(BC10):
    """BC from a random initialisation on the top 5% of episodes (the kitchen baseline of the paper's Table 3)."""

    name = "bc_5"
    Config = BC5Config
    display_name = "BC 5%"
    order = 30
    summary = "behaviour cloning from scratch on the top 5% of episodes (the kitchen baseline, Table 3)"
