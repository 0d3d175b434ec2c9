"""Batches of whole trajectories, sampled from a curated (multi)set, and their per-trajectory log-likelihoods.

Loss normalisation (REFERENCE §2) — the paper and the authors' code differ, both are offered by name:
- ``trajectory_mean`` (authors' code, used for the paper's Tables 2/4): each trajectory's mean per-step
  log-likelihood, so every trajectory counts equally whatever its length;
- ``sum`` (paper Eq. 5, log p(tau) sums over steps): every transition counts equally; divided by the constant
  mean trajectory length of the (multi)set so that learning rates stay comparable between the two.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from bench.algorithms.weights import segment_sum
from bench.datasets.curation import Curated
from bench.datasets.trajectories import Trajectories

LOSS_NORMALIZATIONS = ("trajectory_mean", "sum")


@dataclass
class EpisodeTable:
    """The curated episodes to draw whole trajectories from, drawn on the host and handed to ``device``.

    Draws use the run's numpy generator and the index arithmetic runs in numpy, so the host knows every batch's size
    without asking the device; the finished indices travel to the device with a non-blocking copy. A batch of
    trajectories of varying length therefore never makes the training step wait (no ``.item()``, no
    ``repeat_interleave`` that must read its output size back).
    """

    starts: np.ndarray  # (K,) first transition of each selected episode
    lengths: np.ndarray  # (K,) its length
    probs: np.ndarray  # (K,) sampling probability (multiplicity / total)
    mean_length: float  # expected length of a sampled trajectory
    device: torch.device

    @classmethod
    def from_curated(cls, trajectories: Trajectories, curated: Curated, device: torch.device) -> EpisodeTable:
        lengths = trajectories.episode_lengths[curated.episode_indices].astype(np.int64)
        probs = curated.sampling_probabilities()
        return cls(starts=trajectories.episode_starts[curated.episode_indices].astype(np.int64), lengths=lengths,
                   probs=probs, mean_length=float((probs * lengths).sum()),
                   device=torch.device(device))

    def _draw(self, batch_size: int, generator: np.random.Generator) -> np.ndarray:
        return generator.choice(len(self.probs), size=batch_size, replace=True, p=self.probs)

    def sample(self, batch_size: int,
               generator: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Draw ``batch_size`` trajectories with replacement: (transition indices, segment ids, lengths)."""
        picks = self._draw(batch_size, generator)
        return self._to_device(*gather(self.starts[picks], self.lengths[picks]))

    def sample_unique(self, batch_size: int, generator: np.random.Generator):
        """The same draw as ``sample``, each distinct trajectory once with its count in the batch.

        Returns (transition indices, segment ids, lengths, counts); a loss that weights trajectory b by counts[b]
        equals the loss over the ``batch_size`` draws exactly, with the repeated trajectories computed once.
        """
        unique, counts = np.unique(self._draw(batch_size, generator), return_counts=True)
        return self._to_device(*gather(self.starts[unique], self.lengths[unique]), torch.from_numpy(counts))

    def sample_counts(self, batch_size: int, generator: np.random.Generator) -> torch.Tensor:
        """The same draw as ``sample`` as (K,) counts, how often each curated episode was drawn (mostly 0).

        With :meth:`packed` this is the static-shape form of the batch: every step computes every curated transition
        and weights each trajectory by its count, so shapes never change and the loss equals ``sample_unique``'s.
        """
        counts = np.bincount(self._draw(batch_size, generator), minlength=len(self.lengths))
        return self._to_device(torch.from_numpy(counts))[0]

    def sample_seeds(self, batch_size: int, generators: list[np.random.Generator], unique: bool):
        """One draw per generator (seed) — each the draw ``sample`` / ``sample_unique`` makes with it — padded to
        one shape, for K seeds trained as one stacked model.

        Returns rows (K, N): each seed's transition indices, padded with row 0; segment ids (K * N,) into
        K * (B + 1) segments, where segments k * (B + 1) .. k * (B + 1) + B - 1 are seed k's trajectories (B = the
        most any seed has) and the last of each seed's block collects its padding rows; lengths (K * (B + 1),) and
        counts (K, B + 1), with length 1 and count 0 for padding. A loss that weights segment s by counts[s] is each
        seed's own batch loss; padding never counts.
        """
        draws = []
        for gen in generators:
            picks = self._draw(batch_size, gen)
            episodes, counts = np.unique(picks, return_counts=True) if unique else (picks, np.ones_like(picks))
            rows, seg, lengths = (t.numpy() for t in gather(self.starts[episodes], self.lengths[episodes]))
            draws.append((rows, seg, lengths, counts))
        width = max(len(d[0]) for d in draws)
        segments = max(len(d[2]) for d in draws) + 1
        rows = np.zeros((len(draws), width), np.int64)
        seg = np.full((len(draws), width), segments - 1, np.int64)  # padding rows: each seed's last segment
        lengths = np.ones((len(draws), segments), np.int64)
        counts = np.zeros((len(draws), segments), np.int64)
        for k, (r, s, n, c) in enumerate(draws):
            rows[k, :len(r)], seg[k, :len(s)], lengths[k, :len(n)], counts[k, :len(c)] = r, s, n, c
        seg += np.arange(len(draws))[:, None] * segments
        return self._to_device(*(torch.from_numpy(a) for a in (rows, seg.reshape(-1), lengths.reshape(-1), counts)))

    def packed(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(transition indices, segment ids, lengths) of every curated episode, in table order, on the device."""
        return self._to_device(*gather(self.starts, self.lengths))

    def _to_device(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if self.device.type == "cpu":
            return tensors
        return tuple(t.pin_memory().to(self.device, non_blocking=True) for t in tensors)


def transition_sampler(trajectories: Trajectories, curated: Curated,
                       device: torch.device | str) -> Callable[[int, torch.Generator], torch.Tensor]:
    """``sample(n, generator)`` -> n transition rows drawn with the curated multiplicities (uniform draws when all
    are equal, which is cheaper); BC and the batched-seed BC share it so both draw the same rows for a seed. The
    draw happens on ``device`` with ``generator``, which must live there too."""
    idx, weights = curated.transition_indices(trajectories)
    idx = torch.as_tensor(idx, device=device)
    if (weights == weights[0]).all():
        return lambda n, gen: idx[torch.randint(len(idx), (n,), generator=gen, device=device)]
    probs = torch.as_tensor(weights / weights.sum(), device=device)
    return lambda n, gen: idx[torch.multinomial(probs, n, replacement=True, generator=gen)]


def gather(starts, lengths) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Flat transition indices of the given episodes, each transition's segment (0..B-1), and the lengths.

    Host arithmetic (numpy) on CPU arrays or tensors; returns CPU int64 tensors.
    """
    starts, lengths = np.asarray(starts, dtype=np.int64), np.asarray(lengths, dtype=np.int64)
    seg = np.repeat(np.arange(len(lengths)), lengths)
    offsets = np.arange(len(seg)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    return torch.from_numpy(starts[seg] + offsets), torch.from_numpy(seg), torch.from_numpy(lengths)


def trajectory_log_likelihood(logp: torch.Tensor, seg: torch.Tensor, lengths: torch.Tensor, normalization: str,
                              mean_length: float) -> torch.Tensor:
    """(B,) per-trajectory log-likelihood, normalised as named (see the module docstring)."""
    total = segment_sum(logp, seg, len(lengths))
    if normalization == "trajectory_mean":
        return total / lengths.to(total.dtype)
    if normalization == "sum":
        return total / mean_length
    raise ValueError(f"unknown loss normalisation {normalization!r}; choose one of {', '.join(LOSS_NORMALIZATIONS)}")
