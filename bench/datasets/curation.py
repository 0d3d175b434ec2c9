"""Quality curation (the paper's Algorithm 2): episode returns -> percentile cutoffs -> overlapping bins.

`Curated` is a view on `Trajectories` — episode indices with a multiplicity (how many bins hold each episode) —
never a copy of the data. BC uses every episode; BC-10% and SFT the top 10% (one bin at the 90th percentile);
SFT(Q) and iw-SFT(Q) the union of the bins at [90, 95, 98] as a multiset: an episode above c cutoffs counts c times.

Ties. An episode is kept when its return is >= the cutoff (the authors' code; the paper writes >). With ">=" every
episode tied with the cutoff is kept, so a bin can hold more than its nominal share — on sparse-reward data
(antmaze: returns 0 or 1) the 90th-percentile bin is every success, which is the selection that makes sense there.
With ">" such a bin would be empty whenever the cutoff equals the best return. ``ties="strict"`` gives the paper's
">" and falls back to ">=" for a bin that ">" would leave empty, recording that it did so.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from bench.datasets.trajectories import Trajectories

TIES = ("inclusive", "strict")


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

    def sampling_probabilities(self) -> np.ndarray:
        """Probability of drawing each selected episode when sampling the multiset uniformly."""
        return self.multiplicity / self.multiplicity.sum()


def percentile_cutoffs(returns: np.ndarray, percentiles: Sequence[float]) -> np.ndarray:
    """Return cutoffs at the given percentiles of the episode returns (np.percentile, linear interpolation)."""
    return np.percentile(np.asarray(returns, dtype=np.float64), list(percentiles))


def bin_membership(returns: np.ndarray, cutoffs: np.ndarray, ties: str = "inclusive") -> np.ndarray:
    """(bins, episodes) bool: episode e is in bin c when its return passes cutoff c (see the module's Ties)."""
    if ties not in TIES:
        raise ValueError(f"ties must be one of {TIES}, got {ties!r}")
    r = np.asarray(returns, dtype=np.float64)[None, :]
    c = np.asarray(cutoffs, dtype=np.float64)[:, None]
    inclusive = r >= c
    if ties == "inclusive":
        return inclusive
    strict = r > c
    empty = ~strict.any(axis=1)
    strict[empty] = inclusive[empty]
    return strict


def quality_bins(trajectories: Trajectories, percentiles: Sequence[float], ties: str = "inclusive") -> Curated:
    """The multiset union of the bins above each percentile cutoff, with per-bin counts in the description.

    A concatenation of datasets (``metadata["parts"]``, e.g. kitchen complete + mixed) is curated per part: the
    top 5% of each, not the top 5% of the pool, whose best part would otherwise crowd the other out.
    """
    returns = trajectories.episode_returns
    lengths = trajectories.episode_lengths
    parts = trajectories.metadata.get("parts") or [{"name": trajectories.name, "first_episode": 0,
                                                    "episodes": trajectories.num_episodes}]
    multiplicity = np.zeros(trajectories.num_episodes, dtype=np.int64)
    bins = []
    for part in parts:
        sl = slice(part["first_episode"], part["first_episode"] + part["episodes"])
        r = returns[sl]
        cutoffs = percentile_cutoffs(r, percentiles)
        member = bin_membership(r, cutoffs, ties)
        multiplicity[sl] += member.sum(axis=0)
        for p, c, m in zip(percentiles, cutoffs, member, strict=True):
            bins.append({"part": part["name"], "percentile": float(p), "cutoff_return": float(c),
                         "episodes": int(m.sum()), "transitions": int(lengths[sl][m].sum()),
                         **({"strict_fell_back_to_inclusive": bool(not (r > c).any())} if ties == "strict" else {})})
    keep = np.flatnonzero(multiplicity)
    return Curated(
        episode_indices=keep, multiplicity=multiplicity[keep],
        description={"selection": "quality_bins", "percentiles": [float(p) for p in percentiles], "ties": ties,
                     "bins": bins, "episodes": int(len(keep)), "transitions": int(lengths[keep].sum()),
                     "multiset_episodes": int(multiplicity.sum())},
    )


def all_episodes(trajectories: Trajectories) -> Curated:
    n = trajectories.num_episodes
    return Curated(np.arange(n), np.ones(n, dtype=np.int64),
                   {"selection": "all", "episodes": n, "transitions": trajectories.num_transitions})
