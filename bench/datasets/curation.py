"""`Curated`: which episodes an algorithm trains on, and how often each counts — a view, never a copy."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from bench.datasets.trajectories import Trajectories


@dataclass(frozen=True)
class Curated:
    episode_indices: np.ndarray  # (K,) indices into the Trajectories' episodes
    multiplicity: np.ndarray  # (K,) how many times each episode counts (overlapping quality bins)
    description: dict = field(default_factory=dict)  # how it was selected (cutoffs, counts) for the record

    def transition_indices(self, trajectories: Trajectories) -> tuple[np.ndarray, np.ndarray]:
        """(indices, weights): every transition of the selected episodes with its episode's multiplicity."""
        lengths = trajectories.episode_lengths[self.episode_indices]
        starts = trajectories.episode_starts[self.episode_indices]
        idx = np.concatenate([np.arange(s, s + n) for s, n in zip(starts, lengths, strict=True)])
        return idx, np.repeat(self.multiplicity, lengths).astype(np.float64)


def all_episodes(trajectories: Trajectories) -> Curated:
    n = trajectories.num_episodes
    return Curated(np.arange(n), np.ones(n, dtype=np.int64),
                   {"selection": "all", "episodes": n, "transitions": trajectories.num_transitions})
