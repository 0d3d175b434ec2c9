"""K seeds trained as one batched model (BC: ``bc.train_bc_seeds``; the SFT family: ``SFT.fit_seeds``): stacked
weights, one batched matmul per layer, and the group's checkpoint.

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

import torch
from torch import nn

from bench.algorithms.base import RunContext
from bench.algorithms.checkpoint import Checkpoint
from bench.algorithms.policy import LOG_STD_MAX, LOG_STD_MIN, GaussianMLPPolicy


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
