"""Behaviour cloning with the Gaussian MLP policy: ``bc`` (all data) and ``bc_10`` (the top 10%, from scratch).

Objective (maximum likelihood of the data's actions; Pomerleau 1989; the paper's Eq. 1 with D+ = the selection):

    J_BC(theta) = E_{(s, a) ~ D+} [ log pi_theta(a | s) ]

Batches are either transitions sampled uniformly (the peers' BC) or whole trajectories (the paper's reference
policy; see ``trajectory_batch`` for the loss normalisation). Adam at a constant rate. ``precision`` selects float32,
TF32 (CUDA) or a bfloat16 forward pass (``bench.algorithms.precision``). Transition rows are drawn on the training
device, whole trajectories on the host (``TrajectoryBatches``), and the loss stays on the device: a step never waits for
it (``SeedGroup.step``). Several seeds train as one stacked model (``native``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from bench.algorithms.base import Algorithm
from bench.algorithms.context import SeedGroup, train
from bench.algorithms.native import StackedLearner, initial_policies
from bench.algorithms.policy import GaussianMLPPolicy
from bench.algorithms.precision import PRECISIONS, step_precision
from bench.algorithms.trajectory_batch import (
    LOSS_NORMALIZATIONS,
    TrajectoryBatch,
    TrajectoryBatches,
    TransitionBatches,
    trajectory_log_likelihood,
)
from bench.configs.domains import bounded, check_domains, choice
from bench.datasets.curation import Curated, all_episodes, quality_bins
from bench.datasets.trajectories import Trajectories

BATCH_UNITS = ("transitions", "trajectories")


@dataclass
class BCConfig:
    steps: int = bounded(10_000, ge=1)  # gradient steps (REFERENCE §2: 10,000 for the BC reference policy)
    batch_size: int = bounded(256, ge=1)  # transitions, or trajectories when batch_unit = "trajectories"
    batch_unit: str = choice("transitions", BATCH_UNITS)  # paper: 32, authors' code: 128 trajectories
    loss_normalization: str = choice("trajectory_mean", LOSS_NORMALIZATIONS)  # trajectory batches: code / Eq. 5
    learning_rate: float = bounded(1e-3, gt=0)  # Adam (REFERENCE §2)
    hidden: int = bounded(256, ge=1)  # units per hidden layer
    layers: int = bounded(3, ge=1)  # hidden layers
    precision: str = choice("float32", PRECISIONS)  # "tf32" (CUDA) or "bfloat16" autocast: precision.py
    # stop as "diverged" when an evaluation window's mean loss exceeds the first update's loss by this many times
    # max(|that loss|, 1) (lr 1e6: ~40,000 vs ~2.7); 0 = only non-finite losses and parameters
    divergence_factor: float = bounded(100.0, ge=0)

    def __post_init__(self):  # a bad --set fails when the config is resolved, before any record is written
        check_domains(self)


@dataclass
class BC10Config(BCConfig):
    top_percentile: float = bounded(90.0, ge=0, le=100)  # keep returns >= this percentile (top 10%)


@dataclass
class BC5Config(BCConfig):
    top_percentile: float = bounded(95.0, ge=0, le=100)  # the top 5% (the paper's kitchen baseline "BC (5%)")


class BCLearner(StackedLearner):
    """Maximum likelihood of the batch's actions, per seed: the mean over transitions, or over trajectories of their
    (normalised) log-likelihoods, each distinct trajectory weighted by how often it was drawn."""

    def __init__(self, policies: list[GaussianMLPPolicy], trajectories: Trajectories, device: torch.device,
                 cfg: BCConfig, mean_length: float):
        super().__init__(policies, trajectories, device, cfg.learning_rate)
        self.cfg, self.mean_length = cfg, mean_length

    def loss(self, batch: torch.Tensor | TrajectoryBatch) -> tuple[torch.Tensor, dict]:
        rows = batch if isinstance(batch, torch.Tensor) else batch.rows
        with step_precision(self.cfg.precision, self.obs.device):
            logp = self.model.log_prob(self.obs[rows], self.act[rows]).float()
        if isinstance(batch, torch.Tensor):  # (K, B) transitions
            return -logp.mean(1), {}
        ll = trajectory_log_likelihood(logp.reshape(-1), batch.sizes, batch.lengths, self.cfg.loss_normalization,
                                       self.mean_length).view_as(batch.counts)
        return -(ll * batch.counts).sum(1) / batch.counts.sum(1), {}  # padding has count 0


def train_bc(trajectories: Trajectories, curated: Curated, cfg: BCConfig, group: SeedGroup) -> list[GaussianMLPPolicy]:
    """Maximum likelihood on the curated episodes from a fresh policy per seed of ``group``: the policy each seed's
    separate run gives (up to float rounding when the group trains several). Resumable through the group."""
    device = group.device
    policies = initial_policies(group.seeds, trajectories.obs_dim, trajectories.act_dim, cfg.hidden, cfg.layers)
    if cfg.batch_unit == "transitions":  # transition rows are drawn on the device, whole trajectories on the host
        batches = TransitionBatches(trajectories, curated, device, group.seeds, cfg.batch_size)
        mean_length = 0.0
    else:
        batches = TrajectoryBatches(trajectories, curated, device, group.seeds, cfg.batch_size)
        mean_length = batches.mean_length
    group.watch(cfg.divergence_factor)
    return train(group, BCLearner(policies, trajectories, device, cfg, mean_length), batches)


class BC(Algorithm):
    name = "bc"
    Config = BCConfig
    display_name = "BC"
    order = 10
    family = "native"
    summary = "behaviour cloning on all episodes (Gaussian MLP, maximum likelihood)"
    learning_rate_fields = ("learning_rate",)
    batches_seeds = True

    def precision(self) -> str:
        return self.config.precision

    def rate_key(self) -> str:
        cfg = self.config
        return f"bc/{cfg.batch_unit}/{cfg.batch_size}/{cfg.precision}"

    def curate(self, trajectories: Trajectories) -> Curated:
        return all_episodes(trajectories)

    def fit(self, trajectories: Trajectories, curated: Curated, group: SeedGroup) -> list[GaussianMLPPolicy]:
        return train_bc(trajectories, curated, self.config, group)


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
