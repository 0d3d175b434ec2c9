"""The Gaussian MLP policy shared by the native algorithms (REFERENCE §2; the paper's authors' control code).

3 hidden layers of 256 with ReLU; mean = tanh(output); a state-independent learned log-std clamped to [-5, 2];
a Normal (not tanh-squashed) distribution whose log-prob is summed over action dimensions. Evaluation acts with
the mean.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import torch
from torch import nn

LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0


class GaussianMLPPolicy(nn.Module):
    def __init__(self, obs_dim: int, act_dim: int, hidden: int = 256, layers: int = 3):
        super().__init__()
        dims = [obs_dim] + [hidden] * layers
        body: list[nn.Module] = []
        for i, o in zip(dims[:-1], dims[1:], strict=True):
            body += [nn.Linear(i, o), nn.ReLU()]
        self.net = nn.Sequential(*body, nn.Linear(dims[-1], act_dim))
        self.log_std = nn.Parameter(torch.zeros(act_dim))
        self.obs_dim, self.act_dim = obs_dim, act_dim

    def mean(self, obs: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.net(obs))

    def log_prob(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """log pi(a|s), summed over action dimensions: shape (batch,)."""
        mu = self.mean(obs)
        log_std = self.log_std.clamp(LOG_STD_MIN, LOG_STD_MAX)
        z = (actions - mu) * torch.exp(-log_std)
        return (-0.5 * z.pow(2) - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)

    def cpu_copy(self) -> GaussianMLPPolicy:
        """A copy on the CPU, for evaluation processes spawned while this one uses CUDA."""
        return copy.deepcopy(self).cpu()

    @torch.no_grad()
    def act(self, observations: np.ndarray) -> np.ndarray:
        """Deterministic actions (the mean) for a batch of observations."""
        device = self.log_std.device
        obs = torch.as_tensor(np.asarray(observations, np.float32), device=device)
        return self.mean(obs).cpu().numpy()
