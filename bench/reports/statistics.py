"""Statistics for reports, as small pure functions over score matrices of shape (runs x tasks).

Definitions follow rliable (Agarwal et al. 2021, "Deep Reinforcement Learning at the Edge of the Statistical
Precipice"; ``rliable.metrics`` and ``rliable.library``), every task weighted equally:

- Mean: the mean of the matrix (``aggregate_mean``); Median: the median of the per-task means
  (``aggregate_median``); IQM: the 25%-trimmed mean of all run x task scores (``aggregate_iqm``); optimality gap:
  gamma - mean(min(score, gamma)) (``aggregate_optimality_gap``, gamma = 100 on D4RL's normalised scale).
- Intervals: percentile intervals of the stratified bootstrap (``StratifiedBootstrap``): the runs of each task are
  resampled with replacement, each task on its own, the tasks kept.
- Probability of improvement P(X > Y): per task the Mann-Whitney U statistic over n m (ties count one half),
  averaged over tasks (``probability_of_improvement``); its interval resamples X's and Y's runs independently
  within each task (``StratifiedIndependentBootstrap``).
- Performance profile: the fraction of run x task scores above each threshold tau, with bootstrap bands
  (``create_performance_profile`` with ``use_score_distribution=True``).
Per-cell tests (the table's bold) use Welch's t-test and Holm's adjustment, both NaN-aware.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
from scipy import stats

# -- aggregates of a (runs x tasks) matrix; each also takes a stack (replicates x runs x tasks) --------------------


def aggregate_mean(scores: np.ndarray) -> np.ndarray | float:
    return np.mean(scores, axis=(-2, -1))


def aggregate_median(scores: np.ndarray) -> np.ndarray | float:
    return np.median(np.mean(scores, axis=-2), axis=-1)


def aggregate_iqm(scores: np.ndarray) -> np.ndarray | float:
    flat = scores.reshape(*scores.shape[:-2], -1)
    return stats.trim_mean(flat, 0.25, axis=-1)


def aggregate_optimality_gap(scores: np.ndarray, gamma: float = 100.0) -> np.ndarray | float:
    return gamma - np.mean(np.minimum(scores, gamma), axis=(-2, -1))


AGGREGATES: dict[str, Callable[[np.ndarray], np.ndarray | float]] = {
    "Mean": aggregate_mean, "Median": aggregate_median, "IQM": aggregate_iqm,
    "Optimality gap": aggregate_optimality_gap}


def stratified_resamples(scores: np.ndarray, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """(n_resamples, runs, tasks): each task's runs drawn with replacement from that task's runs."""
    runs, tasks = scores.shape
    idx = rng.integers(0, runs, size=(n_resamples, runs, tasks))
    return scores[idx, np.arange(tasks)]


def percentile_interval(replicates: np.ndarray, confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    tail = 100 * (1 - confidence) / 2
    return np.percentile(replicates, tail, axis=0), np.percentile(replicates, 100 - tail, axis=0)


def aggregate_interval(scores: np.ndarray, statistic: Callable[[np.ndarray], np.ndarray | float],
                       n_resamples: int = 2000, seed: int = 0,
                       confidence: float = 0.95) -> tuple[float, float, float]:
    """(point, low, high) of an aggregate of a (runs x tasks) matrix; no interval (nan) with a single run."""
    point = float(statistic(scores))
    if scores.shape[0] < 2:
        return point, float("nan"), float("nan")
    reps = statistic(stratified_resamples(scores, n_resamples, np.random.default_rng(seed)))
    lo, hi = percentile_interval(reps, confidence)
    return point, float(lo), float(hi)


def probability_of_improvement(x: np.ndarray, y: np.ndarray) -> np.ndarray | float:
    """P(X > Y) of two (runs x tasks) matrices (or stacks of them): per task U / (n m), averaged over tasks."""
    greater = (x[..., :, None, :] > y[..., None, :, :]).mean(axis=(-3, -2))
    ties = (x[..., :, None, :] == y[..., None, :, :]).mean(axis=(-3, -2))
    return np.mean(greater + 0.5 * ties, axis=-1)


def probability_of_improvement_interval(x: np.ndarray, y: np.ndarray, n_resamples: int = 2000, seed: int = 0,
                                        confidence: float = 0.95) -> tuple[float, float, float]:
    point = float(probability_of_improvement(x, y))
    if x.shape[0] < 2 or y.shape[0] < 2:
        return point, float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    reps = probability_of_improvement(stratified_resamples(x, n_resamples, rng),
                                      stratified_resamples(y, n_resamples, rng))
    lo, hi = percentile_interval(reps, confidence)
    return point, float(lo), float(hi)


def performance_profile(scores: np.ndarray, taus: np.ndarray) -> np.ndarray:
    """Fraction of run x task scores above each tau (the last axes of ``scores``); shape (..., len(taus))."""
    flat = scores.reshape(*scores.shape[:-2], 1, -1)
    return (flat > np.asarray(taus, float)[:, None]).mean(axis=-1)


def performance_profile_band(scores: np.ndarray, taus: np.ndarray, n_resamples: int = 2000, seed: int = 0,
                             confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(profile, low, high) at each tau, the band from the stratified bootstrap."""
    profile = performance_profile(scores, taus)
    if scores.shape[0] < 2:
        return profile, np.full_like(profile, np.nan), np.full_like(profile, np.nan)
    reps = performance_profile(stratified_resamples(scores, n_resamples, np.random.default_rng(seed)), taus)
    lo, hi = percentile_interval(reps, confidence)
    return profile, lo, hi


# -- per-cell tests (the main table's bold) ------------------------------------------------------------------------
def welch_pvalue_worse(x: Sequence[float], best: Sequence[float]) -> float:
    """One-sided Welch t-test p-value for H1: mean(x) < mean(best); nan when both are constant."""
    return float(stats.ttest_ind(x, best, equal_var=False, alternative="less").pvalue)


def holm_adjust(pvalues: Sequence[float]) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (step-down, monotone, capped at 1). NaN p-values (no evidence either
    way, e.g. an exact tie) stay NaN and do not count among the tests."""
    p = np.asarray(pvalues, dtype=float)
    adjusted = np.full(len(p), np.nan)
    valid = np.flatnonzero(~np.isnan(p))
    running = 0.0
    for rank, i in enumerate(valid[np.argsort(p[valid])]):
        running = max(running, (len(valid) - rank) * p[i])
        adjusted[i] = min(running, 1.0)
    return adjusted


def bold_set(cells: Mapping[str, Sequence[float]], alpha: float = 0.05, holm: bool = False,
             min_runs: int = 2) -> tuple[set[str], dict[str, float]]:
    """(bold algorithms, p-value of each vs. the best): the best mean and every entry not significantly worse.

    Entries with fewer than ``min_runs`` runs are never bold and never the best; a NaN p-value (both constant
    and equal) means no evidence of a difference: tied, so bold. Scores must be finite (the report drops others).
    """
    eligible = {k: np.asarray(v, float) for k, v in cells.items() if len(v) >= min_runs}
    if not eligible:
        return set(), {}
    best = max(eligible, key=lambda k: eligible[k].mean())
    others = [k for k in eligible if k != best]
    raw = [welch_pvalue_worse(eligible[k], eligible[best]) for k in others]
    pvals = dict(zip(others, holm_adjust(raw) if holm and raw else raw, strict=True))
    bold = {best} | {k for k, p in pvals.items() if not p < alpha}
    return bold, pvals


def mean_confidence_interval(x: Sequence[float], confidence: float = 0.95) -> tuple[float, float]:
    """Student-t interval for the mean of ``x`` (needs 2 or more runs)."""
    x = np.asarray(x, float)
    half = stats.t.ppf(0.5 + confidence / 2, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x))
    return float(x.mean() - half), float(x.mean() + half)
