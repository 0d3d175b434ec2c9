import numpy as np
import pytest

from bench.datasets.curation import bin_membership, percentile_cutoffs, quality_bins
from bench.datasets.trajectories import Trajectories


def trajectories_with_returns(returns, lengths=None):
    """One episode per return; each episode's reward sits on its first step."""
    lengths = lengths or [2] * len(returns)
    eps = []
    for r, n in zip(returns, lengths, strict=True):
        rew = np.zeros(n, np.float32)
        rew[0] = r
        term = np.zeros(n, bool)
        term[-1] = True
        eps.append({"observations": np.zeros((n + 1, 1)), "actions": np.zeros((n, 1)), "rewards": rew,
                    "terminations": term, "truncations": np.zeros(n, bool)})
    return Trajectories.from_episodes(eps)


def test_cutoffs_bins_and_multiplicity_by_hand():
    traj = trajectories_with_returns(list(range(20)), lengths=[1 + i % 3 for i in range(20)])
    np.testing.assert_allclose(percentile_cutoffs(traj.episode_returns, [90, 95, 98]), [17.1, 18.05, 18.62])
    cur = quality_bins(traj, [90, 95, 98])
    assert cur.episode_indices.tolist() == [18, 19]  # returns 18 and 19 pass 17.1; only 19 passes 18.05, 18.62
    assert cur.multiplicity.tolist() == [1, 3]
    np.testing.assert_allclose(cur.sampling_probabilities(), [0.25, 0.75])
    bins = cur.description["bins"]
    assert [b["episodes"] for b in bins] == [2, 1, 1]
    assert [b["transitions"] for b in bins] == [1 + 2, 2, 2]  # lengths 1 + 18 % 3 = 1 and 1 + 19 % 3 = 2
    assert cur.description["multiset_episodes"] == 4


def test_top_ten_percent():
    traj = trajectories_with_returns(list(range(100)))
    cur = quality_bins(traj, [90])
    # p90 of 0..99 = 89.1: returns 90..99 are kept, exactly 10% of the episodes
    assert cur.episode_indices.tolist() == list(range(90, 100)) and set(cur.multiplicity) == {1}


def test_ties_on_sparse_returns():
    # antmaze-like: 3 successes out of 10; every cutoff equals 1, the best return
    returns = np.array([0, 0, 0, 0, 0, 0, 0, 1, 1, 1], float)
    cutoffs = percentile_cutoffs(returns, [90, 95, 98])
    np.testing.assert_allclose(cutoffs, [1, 1, 1])
    inclusive = bin_membership(returns, cutoffs, "inclusive")
    assert inclusive.sum(axis=1).tolist() == [3, 3, 3]  # every success, in every bin
    strict = bin_membership(returns, cutoffs, "strict")  # ">" would be empty: falls back to ">="
    np.testing.assert_array_equal(strict, inclusive)
    cur = quality_bins(trajectories_with_returns(returns.tolist()), [90, 95, 98], ties="strict")
    assert all(b["strict_fell_back_to_inclusive"] for b in cur.description["bins"])
    assert cur.multiplicity.tolist() == [3, 3, 3]


def test_strict_and_inclusive_differ_on_an_interior_tie():
    returns = np.array([1, 2, 2, 2, 3], float)
    cutoff = percentile_cutoffs(returns, [50])  # = 2
    assert bin_membership(returns, cutoff, "inclusive")[0].tolist() == [False, True, True, True, True]
    assert bin_membership(returns, cutoff, "strict")[0].tolist() == [False, False, False, False, True]
    with pytest.raises(ValueError, match="ties"):
        bin_membership(returns, cutoff, "loose")
