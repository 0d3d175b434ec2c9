"""The native algorithms' model and optimiser: K Gaussian MLP policies as one stacked model (K = 1: a single run).

Each seed keeps its own initialisation (``GaussianMLPPolicy`` under ``torch.manual_seed(seed)``), its own data order
(its own generator) and its own Adam state; the loss is the sum of the per-seed losses, so seed k's weights get
exactly seed k's gradient. K seeds trained together equal K separate runs up to float rounding, faster: K small
matmuls become one batched one. :class:`StackedLearner` is what BC and the SFT family share; each adds its loss.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from bench.algorithms.checkpoint import Component
from bench.algorithms.policy import LOG_STD_MAX, LOG_STD_MIN, GaussianMLPPolicy
from bench.datasets.trajectories import Trajectories


def initial_policies(seeds: Sequence[int], obs_dim: int, act_dim: int, hidden: int,
                     layers: int) -> list[GaussianMLPPolicy]:
    """Each seed's fresh policy: the initialisation a run of that seed alone gets."""
    policies = []
    for seed in seeds:
        torch.manual_seed(seed)
        policies.append(GaussianMLPPolicy(obs_dim, act_dim, hidden, layers))
    return policies


MAX_ROWS = 1 << 18  # rows (all seeds together) one forward pass holds: ~268 MB per 256-wide float32 activation


class StackedGaussianMLP(nn.Module):
    """K Gaussian MLP policies with stacked parameters: weights (K, in, out), biases (K, 1, out)."""

    def __init__(self, policies: Sequence[GaussianMLPPolicy], max_rows: int = MAX_ROWS):
        super().__init__()
        self.max_rows = max_rows
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
        """(K, B) log-probabilities, summed over action dimensions. More than ``max_rows`` rows (K B) are computed in
        chunks of rows; with gradients each chunk keeps only its inputs and recomputes its activations in the
        backward (activation checkpointing), so a step's memory is one chunk's whatever its batch (whole 1000-step
        trajectories of 5 seeds: 0.6-1.3M rows) — the same values, one more forward pass of work."""
        chunk = max(1, self.max_rows // obs.shape[0])
        if obs.shape[1] <= chunk:
            return self._log_prob(obs, actions)
        parts = zip(obs.split(chunk, dim=1), actions.split(chunk, dim=1), strict=True)
        if torch.is_grad_enabled():
            return torch.cat([checkpoint(self._log_prob, o, a, use_reentrant=False) for o, a in parts], dim=1)
        return torch.cat([self._log_prob(o, a) for o, a in parts], dim=1)

    def _log_prob(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        log_std = self.log_std.clamp(LOG_STD_MIN, LOG_STD_MAX)
        z = (actions - self.mean(obs)) * torch.exp(-log_std)
        return (-0.5 * z.pow(2) - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)

    def unstack(self, k: int, template: GaussianMLPPolicy) -> GaussianMLPPolicy:
        """Seed k as an ordinary policy (on the stacked model's device)."""
        policy = copy.deepcopy(template).to(self.log_std.device)
        linears = [m for m in policy.net if isinstance(m, nn.Linear)]
        with torch.no_grad():
            for lin, w, b in zip(linears, self.weights, self.biases, strict=True):
                lin.weight.copy_(w[k].T)
                lin.bias.copy_(b[k, 0])
            policy.log_std.copy_(self.log_std[k, 0])
        return policy.eval()


class StackedLearner:
    """K policies trained by Adam on the sum of their per-seed losses: subclasses define :meth:`loss`.

    ``obs`` / ``act``: the dataset's arrays on ``device``, indexed by the batches' transition rows.
    ``lr_lambda``: a learning-rate multiplier per update (``LambdaLR``); None keeps the rate constant.
    """

    def __init__(self, policies: Sequence[GaussianMLPPolicy], trajectories: Trajectories, device: torch.device,
                 learning_rate: float, lr_lambda: Callable[[int], float] | None = None):
        self.template = copy.deepcopy(policies[0]).cpu()
        self.model = StackedGaussianMLP(policies).to(device).train()
        self.obs = torch.as_tensor(trajectories.observations, device=device)
        self.act = torch.as_tensor(trajectories.actions, device=device)
        # fused: one kernel over all parameters; on a GPU its step counters stay on the device (no host sync)
        self.optim = torch.optim.Adam(self.model.parameters(), lr=learning_rate, fused=True)
        self.sched = None if lr_lambda is None else torch.optim.lr_scheduler.LambdaLR(self.optim, lr_lambda)

    def loss(self, batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(K,) per-seed losses of ``batch`` and (K,) statistics."""
        raise NotImplementedError

    def after_step(self) -> None:
        """What follows the optimiser step (the SFT family's EMA of q)."""

    def update(self, batch) -> dict[str, torch.Tensor | float]:
        per_seed, stats = self.loss(batch)
        self.optim.zero_grad(set_to_none=True)
        per_seed.sum().backward()  # seed k's weights get exactly seed k's gradient
        self.optim.step()
        rate = {}
        if self.sched is not None:
            self.sched.step()
            rate = {"learning_rate": self.sched.get_last_lr()[0]}
        self.after_step()
        return {"loss": per_seed.detach(), **rate, **stats}

    def components(self) -> dict[str, Component]:
        return {"model": self.model, "optim": self.optim, **({"sched": self.sched} if self.sched else {})}

    def policy(self, k: int) -> GaussianMLPPolicy:
        return self.model.unstack(k, self.template)
