"""Statistics for reports, as small pure functions over arrays of per-run scores.

Definitions follow rliable (Agarwal et al. 2021, "Deep RL at the Edge of the Statistical Precipice"): IQM is the
25%-trimmed mean of all runs pooled over tasks; intervals are percentile intervals of a stratified bootstrap
(runs are resampled within each task, tasks are kept); the probability of improvement P(X > Y) is the
Mann-Whitney statistic per task, averaged over tasks. Bootstraps use scipy.stats.bootstrap: given one sample per
task it resamples each independently, which is exactly the stratified bootstrap.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
from scipy import stats


def welch_pvalue_worse(x: Sequence[float], best: Sequence[float]) -> float:
    """One-sided Welch t-test p-value for H1: mean(x) < mean(best)."""
    return float(stats.ttest_ind(x, best, equal_var=False, alternative="less").pvalue)


def holm_adjust(pvalues: Sequence[float]) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (step-down, monotone, capped at 1)."""
    p = np.asarray(pvalues, dtype=float)
    order = np.argsort(p)
    m = len(p)
    adjusted = np.empty(m)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, (m - rank) * p[i])
        adjusted[i] = min(running, 1.0)
    return adjusted


def bold_set(cells: Mapping[str, Sequence[float]], alpha: float = 0.05, holm: bool = False,
             min_runs: int = 2) -> tuple[set[str], dict[str, float]]:
    """(bold algorithms, p-value of each vs. the best): the best mean and every entry not significantly worse.

    Entries with fewer than ``min_runs`` runs are never bold and never the best.
    """
    eligible = {k: np.asarray(v, float) for k, v in cells.items() if len(v) >= min_runs}
    if not eligible:
        return set(), {}
    best = max(eligible, key=lambda k: eligible[k].mean())
    others = [k for k in eligible if k != best]
    raw = [welch_pvalue_worse(eligible[k], eligible[best]) for k in others]
    pvals = dict(zip(others, holm_adjust(raw) if holm and raw else raw, strict=True))
    # nan (both constant and equal) means no evidence of a difference: tied
    bold = {best} | {k for k, p in pvals.items() if not p < alpha}
    return bold, pvals


def iqm(scores: np.ndarray) -> float:
    """Interquartile mean: the 25%-trimmed mean of all scores pooled."""
    return float(stats.trim_mean(np.ravel(scores), 0.25))


def mean(scores: np.ndarray) -> float:
    return float(np.mean(np.ravel(scores)))


def median(scores: np.ndarray) -> float:
    return float(np.median(np.ravel(scores)))


AGGREGATES: dict[str, Callable[[np.ndarray], float]] = {"Mean": mean, "Median": median, "IQM": iqm}


def stratified_interval(scores_by_task: Sequence[Sequence[float]], statistic: Callable[[np.ndarray], float],
                        confidence: float = 0.95, n_resamples: int = 2000,
                        seed: int = 0) -> tuple[float, float, float]:
    """(point, low, high): ``statistic`` of the pooled runs with a stratified-bootstrap percentile interval.

    Tasks with a single run enter the point estimate and are held fixed in the bootstrap.
    """
    samples = [np.asarray(s, float) for s in scores_by_task]
    point = statistic(np.concatenate(samples))
    varied = [s for s in samples if len(s) >= 2]
    fixed = [s for s in samples if len(s) < 2]
    if not varied:
        return point, float("nan"), float("nan")

    def pooled(*resampled, axis=-1):
        return statistic(np.concatenate([*resampled, *fixed]))

    res = stats.bootstrap(tuple(varied), pooled, vectorized=False, paired=False, n_resamples=n_resamples,
                          confidence_level=confidence, method="percentile", random_state=seed)
    return point, float(res.confidence_interval.low), float(res.confidence_interval.high)


def probability_of_improvement(x: np.ndarray, y: np.ndarray) -> float:
    """P(X > Y) + 0.5 P(X = Y) over all pairs of runs (the Mann-Whitney U statistic divided by n m)."""
    x, y = np.asarray(x, float)[:, None], np.asarray(y, float)[None, :]
    return float(((x > y) + 0.5 * (x == y)).mean())


def probability_of_improvement_interval(x_by_task: Sequence[Sequence[float]], y_by_task: Sequence[Sequence[float]],
                                        confidence: float = 0.95, n_resamples: int = 2000,
                                        seed: int = 0) -> tuple[float, float, float]:
    """Average over tasks of P(X > Y), with a stratified bootstrap over both algorithms' runs in each task."""
    pairs = list(zip(x_by_task, y_by_task, strict=True))
    point = float(np.mean([probability_of_improvement(x, y) for x, y in pairs]))
    if any(len(x) < 2 or len(y) < 2 for x, y in pairs):
        return point, float("nan"), float("nan")
    flat = tuple(np.asarray(s, float) for pair in pairs for s in pair)

    def average(*resampled, axis=-1):
        return np.mean([probability_of_improvement(resampled[2 * i], resampled[2 * i + 1])
                        for i in range(len(pairs))])

    res = stats.bootstrap(flat, average, vectorized=False, paired=False, n_resamples=n_resamples,
                          confidence_level=confidence, method="percentile", random_state=seed)
    return point, float(res.confidence_interval.low), float(res.confidence_interval.high)


def performance_profile(scores: np.ndarray, taus: np.ndarray) -> np.ndarray:
    """Fraction of runs whose score exceeds each threshold tau."""
    s = np.ravel(np.asarray(scores, float))
    return (s[None, :] > np.asarray(taus, float)[:, None]).mean(axis=1)


def mean_confidence_interval(x: Sequence[float], confidence: float = 0.95) -> tuple[float, float]:
    """Student-t interval for the mean of ``x`` (needs 2 or more runs)."""
    x = np.asarray(x, float)
    half = stats.t.ppf(0.5 + confidence / 2, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x))
    return float(x.mean() - half), float(x.mean() + half)
