"""Statistics for reports, as small pure functions over score matrices of shape (runs x tasks).

Definitions follow rliable (Agarwal et al. 2021, "Deep Reinforcement Learning at the Edge of the Statistical
Precipice"; ``rliable.metrics`` and ``rliable.library``), every task weighted equally, extended to tasks with
different numbers of runs so that no run is thrown away: a task with fewer runs than the matrix has rows holds NaN
below its runs. With the same count on every task each function is rliable's.

- Mean: the mean over tasks of the per-task means (``aggregate_mean``); Median: the median of the per-task means
  (``aggregate_median``); optimality gap: gamma - the mean over tasks of the per-task means of min(score, gamma)
  (``aggregate_optimality_gap``, gamma = 100 on D4RL's normalised scale).
- IQM: the 25%-trimmed mean of all run x task scores, each task weighted equally (``aggregate_iqm``). With n_t runs
  on task t, every run of t counts L / n_t times, L the least common multiple of the n_t (so each task holds L
  units); the lowest and highest floor(T L / 4) units are cut, as ``scipy.stats.trim_mean`` cuts
  floor(N / 4) scores, and the rest averaged. Equal counts: L = n, and this is rliable's IQM exactly.
- Intervals: percentile intervals of the stratified bootstrap (``StratifiedBootstrap``): the runs of each task are
  resampled with replacement, each task on its own and with its own count, the tasks kept.
- Probability of improvement P(X > Y): per task the Mann-Whitney U statistic over n_t m_t (ties count one half),
  averaged over tasks (``probability_of_improvement``); its interval resamples X's and Y's runs independently
  within each task (``StratifiedIndependentBootstrap``).
- Performance profile: per threshold tau, the fraction of each task's runs above tau, averaged over tasks, with
  bootstrap bands (``create_performance_profile`` with ``use_score_distribution=True``).
Per-cell tests (the table's bold) use Welch's t-test and Holm's adjustment, both NaN-aware.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np
from scipy import stats

# -- aggregates of a (runs x tasks) matrix; each also takes a stack (replicates x runs x tasks) --------------------


def task_counts(scores: np.ndarray) -> np.ndarray:
    """Runs per task (the last axis) of a matrix or stack whose missing runs are NaN."""
    return (~np.isnan(scores)).sum(axis=-2)


def _task_means(scores: np.ndarray) -> np.ndarray:
    return np.nansum(scores, axis=-2) / task_counts(scores)


def aggregate_mean(scores: np.ndarray) -> np.ndarray | float:
    return np.mean(_task_means(scores), axis=-1)


def aggregate_median(scores: np.ndarray) -> np.ndarray | float:
    return np.median(_task_means(scores), axis=-1)


def aggregate_iqm(scores: np.ndarray) -> np.ndarray | float:
    counts = task_counts(scores).reshape(-1, scores.shape[-1])[0]  # a resample keeps every task's count
    units = math.lcm(*counts.tolist())
    weights = np.where(np.isnan(scores), 0, units // counts).reshape(*scores.shape[:-2], -1)
    flat = scores.reshape(*scores.shape[:-2], -1)
    order = np.argsort(flat, axis=-1)  # NaN (no run) last, with weight 0
    values, weights = np.take_along_axis(flat, order, -1), np.take_along_axis(weights, order, -1)
    values = np.where(weights > 0, values, 0.0)
    total = units * scores.shape[-1]
    cut = int(0.25 * total)
    upper = np.cumsum(weights, axis=-1)
    kept = np.clip(np.minimum(upper, total - cut) - np.maximum(upper - weights, cut), 0, None)
    return np.sum(kept * values, axis=-1) / (total - 2 * cut)


def aggregate_optimality_gap(scores: np.ndarray, gamma: float = 100.0) -> np.ndarray | float:
    return gamma - np.mean(_task_means(np.minimum(scores, gamma)), axis=-1)


AGGREGATES: dict[str, Callable[[np.ndarray], np.ndarray | float]] = {
    "Mean": aggregate_mean, "Median": aggregate_median, "IQM": aggregate_iqm,
    "Optimality gap": aggregate_optimality_gap}


def stratified_resamples(scores: np.ndarray, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """(n_resamples, runs, tasks): each task's runs drawn with replacement from that task's own runs, as many as it
    has; the rows below them stay NaN (``scores`` holds each task's runs in its first rows)."""
    runs, tasks = scores.shape
    counts = task_counts(scores)
    rows = np.arange(runs)[:, None]
    draws = rng.integers(0, counts, size=(n_resamples, runs, tasks))
    return scores[np.where(rows < counts, draws, rows), np.arange(tasks)]


def percentile_interval(replicates: np.ndarray, confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    tail = 100 * (1 - confidence) / 2
    return np.percentile(replicates, tail, axis=0), np.percentile(replicates, 100 - tail, axis=0)


def aggregate_interval(scores: np.ndarray, statistic: Callable[[np.ndarray], np.ndarray | float],
                       n_resamples: int = 2000, seed: int = 0,
                       confidence: float = 0.95) -> tuple[float, float, float]:
    """(point, low, high) of an aggregate of a (runs x tasks) matrix; no interval (nan) without a task of 2 runs."""
    point = float(statistic(scores))
    if task_counts(scores).max() < 2:
        return point, float("nan"), float("nan")
    reps = statistic(stratified_resamples(scores, n_resamples, np.random.default_rng(seed)))
    lo, hi = percentile_interval(reps, confidence)
    return point, float(lo), float(hi)


def probability_of_improvement(x: np.ndarray, y: np.ndarray) -> np.ndarray | float:
    """P(X > Y) of two (runs x tasks) matrices (or stacks of them): per task U / (n_t m_t), averaged over tasks."""
    greater = (x[..., :, None, :] > y[..., None, :, :]).sum(axis=(-3, -2))
    ties = (x[..., :, None, :] == y[..., None, :, :]).sum(axis=(-3, -2))
    return np.mean((greater + 0.5 * ties) / (task_counts(x) * task_counts(y)), axis=-1)


def probability_of_improvement_interval(x: np.ndarray, y: np.ndarray, n_resamples: int = 2000, seed: int = 0,
                                        confidence: float = 0.95) -> tuple[float, float, float]:
    point = float(probability_of_improvement(x, y))
    if task_counts(x).max() < 2 or task_counts(y).max() < 2:
        return point, float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    reps = probability_of_improvement(stratified_resamples(x, n_resamples, rng),
                                      stratified_resamples(y, n_resamples, rng))
    lo, hi = percentile_interval(reps, confidence)
    return point, float(lo), float(hi)


def performance_profile(scores: np.ndarray, taus: np.ndarray) -> np.ndarray:
    """Per tau, the fraction of each task's runs above it, averaged over tasks; shape (..., len(taus))."""
    above = scores[..., None, :, :] > np.asarray(taus, float)[:, None, None]
    return np.mean(above.sum(axis=-2) / task_counts(scores)[..., None, :], axis=-1)


def performance_profile_band(scores: np.ndarray, taus: np.ndarray, n_resamples: int = 2000, seed: int = 0,
                             confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(profile, low, high) at each tau, the band from the stratified bootstrap."""
    profile = performance_profile(scores, taus)
    if task_counts(scores).max() < 2:
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
