"""K seeds of BC trained as one batched model: stacked weights, one batched matmul per layer.

Each seed keeps its own initialisation (the same as ``GaussianMLPPolicy`` under ``torch.manual_seed(seed)``), its
own data order (its own generator) and its own Adam state: the loss is the sum of the K per-seed losses, so the
gradient of seed k's weights is exactly seed k's own gradient, and Adam is element-wise. The result equals K
separate runs up to float rounding; it is faster because K small matmuls become one batched one (fewer kernel
launches and better use of the cores' vector units).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from bench.algorithms.base import RunContext
from bench.algorithms.bc import BCConfig, transition_sampler
from bench.algorithms.checkpoint import Checkpoint
from bench.algorithms.policy import LOG_STD_MAX, LOG_STD_MIN, GaussianMLPPolicy
from bench.algorithms.precision import step_precision
from bench.algorithms.trajectory_batch import EpisodeTable, trajectory_log_likelihood
from bench.datasets.curation import Curated
from bench.datasets.trajectories import Trajectories


class StackedGaussianMLP(nn.Module):
    """K Gaussian MLP policies with stacked parameters: weights (K, in, out), biases (K, 1, out)."""

    def __init__(self, policies: Sequence[GaussianMLPPolicy]):
        super().__init__()
        linears = [[m for m in p.net if isinstance(m, nn.Linear)] for p in policies]
        self.weights = nn.ParameterList(
            [nn.Parameter(torch.stack([ls[i].weight.detach().T for ls in linears])) for i in range(len(linears[0]))])
        self.biases = nn.ParameterList(
            [nn.Parameter(torch.stack([ls[i].bias.detach()[None] for ls in linears])) for i in range(len(linears[0]))])
        self.log_std = nn.Parameter(torch.stack([p.log_std.detach() for p in policies])[:, None, :])

    def mean(self, obs: torch.Tensor) -> torch.Tensor:
        """obs (K, B, obs_dim) -> tanh-bounded means (K, B, act_dim)."""
        h = obs
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            h = torch.baddbmm(b, h, w)
            if i < len(self.weights) - 1:
                h = torch.relu_(h)  # in place: one activation tensor less per layer to allocate and stream
        return torch.tanh(h)

    def log_prob(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """(K, B) log-probabilities, summed over action dimensions."""
        log_std = self.log_std.clamp(LOG_STD_MIN, LOG_STD_MAX)
        z = (actions - self.mean(obs)) * torch.exp(-log_std)
        return (-0.5 * z.pow(2) - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)

    def unstack(self, k: int, template: GaussianMLPPolicy) -> GaussianMLPPolicy:
        """Seed k as an ordinary policy."""
        policy = copy.deepcopy(template)
        linears = [m for m in policy.net if isinstance(m, nn.Linear)]
        with torch.no_grad():
            for lin, w, b in zip(linears, self.weights, self.biases, strict=True):
                lin.weight.copy_(w[k].T)
                lin.bias.copy_(b[k, 0])
            policy.log_std.copy_(self.log_std[k, 0])
        return policy.eval()


def resume_group(checkpoint_path: Path | None, ctxs: Sequence[RunContext],
                 components: dict) -> tuple[Checkpoint, int]:
    """The checkpoint of K seeds trained together — ``components`` plus every seed's run context (curve) — restored;
    returns it and the step to continue after. The seeds' own contexts do not checkpoint: the group does."""
    group = Checkpoint(checkpoint_path, {**components, **{f"run{k}": ctx for k, ctx in enumerate(ctxs)}})
    start = group.restore()
    if start:
        ctxs[0].log(f"resumed {len(ctxs)} batched seeds from {checkpoint_path} at step {start}")
    for ctx in ctxs:
        ctx.begin(start)
    return group, start


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
