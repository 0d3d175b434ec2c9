"""Batches of whole trajectories, sampled from a curated (multi)set, and their per-trajectory log-likelihoods.

Loss normalisation (REFERENCE §2) — the paper and the authors' code differ, both are offered by name:
- ``trajectory_mean`` (authors' code, used for the paper's Tables 2/4): each trajectory's mean per-step
  log-likelihood, so every trajectory counts equally whatever its length;
- ``sum`` (paper Eq. 5, log p(tau) sums over steps): every transition counts equally; divided by the constant
  mean trajectory length of the (multi)set so that learning rates stay comparable between the two.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from bench.algorithms.weights import segment_sum
from bench.datasets.curation import Curated
from bench.datasets.trajectories import Trajectories

LOSS_NORMALIZATIONS = ("trajectory_mean", "sum")


@dataclass
class EpisodeTable:
    starts: torch.Tensor  # (K,) first transition of each selected episode
    lengths: torch.Tensor  # (K,) its length
    probs: torch.Tensor  # (K,) sampling probability (multiplicity / total)
    mean_length: float  # expected length of a sampled trajectory

    @classmethod
    def from_curated(cls, trajectories: Trajectories, curated: Curated, device: torch.device) -> EpisodeTable:
        lengths = torch.as_tensor(trajectories.episode_lengths[curated.episode_indices], device=device)
        probs = torch.as_tensor(curated.sampling_probabilities(), dtype=torch.float64)
        return cls(starts=torch.as_tensor(trajectories.episode_starts[curated.episode_indices], device=device),
                   lengths=lengths, probs=probs,
                   mean_length=float((probs * lengths.cpu().double()).sum()))

    def sample(self, batch_size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Draw ``batch_size`` trajectories with replacement: (transition indices, segment ids, lengths)."""
        picks = torch.multinomial(self.probs, batch_size, replacement=True, generator=generator)
        picks = picks.to(self.starts.device)
        return gather(self.starts[picks], self.lengths[picks])

    def sample_unique(self, batch_size: int, generator: torch.Generator):
        """The same draw as ``sample``, each distinct trajectory once with its count in the batch.

        Returns (transition indices, segment ids, lengths, counts); a loss that weights trajectory b by counts[b]
        equals the loss over the ``batch_size`` draws exactly, with the repeated trajectories computed once.
        """
        picks = torch.multinomial(self.probs, batch_size, replacement=True, generator=generator)
        unique, counts = torch.unique(picks.to(self.starts.device), return_counts=True)
        return (*gather(self.starts[unique], self.lengths[unique]), counts)


def gather(starts: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Flat transition indices of the given episodes, each transition's segment (0..B-1), and the lengths."""
    seg = torch.repeat_interleave(torch.arange(len(lengths), device=lengths.device), lengths)
    offsets = torch.arange(len(seg), device=lengths.device) - torch.repeat_interleave(
        torch.cumsum(lengths, 0) - lengths, lengths)
    return starts[seg] + offsets, seg, lengths


def trajectory_log_likelihood(logp: torch.Tensor, seg: torch.Tensor, lengths: torch.Tensor, normalization: str,
                              mean_length: float) -> torch.Tensor:
    """(B,) per-trajectory log-likelihood, normalised as named (see the module docstring)."""
    total = segment_sum(logp, seg, len(lengths))
    if normalization == "trajectory_mean":
        return total / lengths.to(total.dtype)
    if normalization == "sum":
        return total / mean_length
    raise ValueError(f"unknown loss normalisation {normalization!r}; choose one of {', '.join(LOSS_NORMALIZATIONS)}")
