"""Batches of whole trajectories, sampled from a curated (multi)set, and their per-trajectory log-likelihoods.

Loss normalisation (REFERENCE §2) — the paper and the authors' code differ, both are offered by name:
- ``trajectory_mean`` (authors' code, used for the paper's Tables 2/4): each trajectory's mean per-step
  log-likelihood, so every trajectory counts equally whatever its length;
- ``sum`` (paper Eq. 5, log p(tau) sums over steps): every transition counts equally; divided by the constant
  mean trajectory length of the (multi)set so that learning rates stay comparable between the two.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from bench.algorithms.weights import segment_sum
from bench.datasets.curation import Curated
from bench.datasets.trajectories import Trajectories

LOSS_NORMALIZATIONS = ("trajectory_mean", "sum")


@dataclass
class TrajectoryBatch:
    """Whole trajectories for K seeds (see :class:`TrajectoryBatches` for the layouts)."""

    rows: torch.Tensor  # (K, N) transition indices, segment after segment: seed k's are k * S .. k * S + S - 1
    sizes: torch.Tensor  # (K * S,) rows in each segment (padding included; 0 for a segment a seed does not use)
    lengths: torch.Tensor  # (K * S,) trajectory length of each segment (1 for padding and unused ones)
    counts: torch.Tensor  # (K, S) how often each segment was drawn (0: padding, or not drawn)


class TrajectoryBatches:
    """``batch_size`` whole trajectories per seed and step, drawn with replacement from the curated (multi)set with
    each seed's numpy generator, in one of two layouts with the same loss and gradient (tested):

    - ``static=False``: each distinct drawn trajectory once with its draw count, the seeds' batches padded to one
      shape (row 0, in a last segment per seed with count 0) — the least work, but the shapes change every step;
    - ``static=True``: every curated transition every step, each trajectory weighted by its draw count (0 for most)
      — fixed shapes, so a compiled step (and CUDA graphs) can capture it; more work when the curated set is much
      larger than what a batch draws.

    Draws and index arithmetic run in numpy on the host, so the host knows every batch's size without asking the
    device; the finished indices travel to the device with a non-blocking copy. A batch of trajectories of varying
    length therefore never makes the training step wait (no ``.item()``, no ``repeat_interleave`` that must read its
    output size back). A loss weighting segment s by ``counts`` is each seed's loss over its ``batch_size`` draws.
    """

    def __init__(self, trajectories: Trajectories, curated: Curated, device: torch.device, seeds: list[int],
                 batch_size: int, static: bool = False):
        self.starts = trajectories.episode_starts[curated.episode_indices].astype(np.int64)  # (E,) curated episodes
        self.lengths = trajectories.episode_lengths[curated.episode_indices].astype(np.int64)
        self.probs = curated.sampling_probabilities()  # multiplicity / total
        self.mean_length = float((self.probs * self.lengths).sum())  # expected length of a drawn trajectory
        self.device, self.batch_size = torch.device(device), batch_size
        self.generators = [np.random.default_rng(seed) for seed in seeds]
        self.static = None
        if static:  # every curated transition, in table order, for every seed: fixed tensors
            k, (rows, lengths) = len(seeds), self._to_device(*map(torch.from_numpy,
                                                                 gather(self.starts, self.lengths)))
            self.static = (rows.expand(k, -1), lengths.repeat(k), lengths.repeat(k))

    def components(self) -> dict[str, np.random.Generator]:
        return {f"generator{k}": g for k, g in enumerate(self.generators)}

    def _draw(self, generator: np.random.Generator) -> np.ndarray:
        return generator.choice(len(self.probs), size=self.batch_size, replace=True, p=self.probs)

    def sample(self) -> TrajectoryBatch:
        if self.static is not None:
            counts = np.stack([np.bincount(self._draw(g), minlength=len(self.lengths)) for g in self.generators])
            return TrajectoryBatch(*self.static, *self._to_device(torch.from_numpy(counts)))
        draws = []
        for gen in self.generators:
            episodes, counts = np.unique(self._draw(gen), return_counts=True)
            draws.append((*gather(self.starts[episodes], self.lengths[episodes]), counts))
        width = max(len(d[0]) for d in draws)
        segments = max(len(d[1]) for d in draws) + 1
        rows = np.zeros((len(draws), width), np.int64)
        sizes = np.zeros((len(draws), segments), np.int64)
        lengths = np.ones((len(draws), segments), np.int64)
        counts = np.zeros((len(draws), segments), np.int64)
        for k, (r, n, c) in enumerate(draws):
            rows[k, :len(r)], sizes[k, :len(n)], lengths[k, :len(n)], counts[k, :len(c)] = r, n, n, c
            sizes[k, -1] = width - len(r)  # padding rows (row 0): each seed's last segment, count 0
        return TrajectoryBatch(*self._to_device(*(torch.from_numpy(a) for a in (rows, sizes.reshape(-1),
                                                                                 lengths.reshape(-1), counts))))

    def _to_device(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if self.device.type == "cpu":
            return tensors
        return tuple(t.pin_memory().to(self.device, non_blocking=True) for t in tensors)


class TransitionBatches:
    """Batches of ``batch_size`` transition rows per seed, (K, B), drawn on ``device`` with each seed's generator
    there, with the curated multiplicities (uniform draws when all are equal, which is cheaper)."""

    def __init__(self, trajectories: Trajectories, curated: Curated, device: torch.device, seeds: list[int],
                 batch_size: int):
        idx, weights = curated.transition_indices(trajectories)
        self.idx, self.batch_size, self.device = torch.as_tensor(idx, device=device), batch_size, device
        self.probs = None if (weights == weights[0]).all() else torch.as_tensor(weights / weights.sum(),
                                                                               device=device)
        self.generators = [torch.Generator(device=device).manual_seed(seed) for seed in seeds]

    def components(self) -> dict[str, torch.Generator]:
        return {f"generator{k}": g for k, g in enumerate(self.generators)}

    def _draw(self, gen: torch.Generator) -> torch.Tensor:
        if self.probs is None:
            return torch.randint(len(self.idx), (self.batch_size,), generator=gen, device=self.device)
        return torch.multinomial(self.probs, self.batch_size, replacement=True, generator=gen)

    def sample(self) -> torch.Tensor:
        return self.idx[torch.stack([self._draw(g) for g in self.generators])]


def gather(starts, lengths) -> tuple[np.ndarray, np.ndarray]:
    """Flat transition indices of the given episodes, episode after episode, and their lengths: int64 arrays, by host
    arithmetic (numpy), so a batch's size is known without asking the device."""
    starts, lengths = np.asarray(starts, dtype=np.int64), np.asarray(lengths, dtype=np.int64)
    seg = np.repeat(np.arange(len(lengths)), lengths)
    offsets = np.arange(len(seg)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    return starts[seg] + offsets, lengths


def trajectory_log_likelihood(logp: torch.Tensor, sizes: torch.Tensor, lengths: torch.Tensor, normalization: str,
                              mean_length: float) -> torch.Tensor:
    """(B,) per-trajectory log-likelihood of ``logp`` in consecutive runs of ``sizes``, normalised as named (see the
    module docstring)."""
    total = segment_sum(logp, sizes)
    if normalization == "trajectory_mean":
        return total / lengths.to(total.dtype)
    if normalization == "sum":
        return total / mean_length
    raise ValueError(f"unknown loss normalisation {normalization!r}; choose one of {', '.join(LOSS_NORMALIZATIONS)}")
