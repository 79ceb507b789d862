"""Aggregate statistics over training seeds (rliable's recipe, in numpy): mean, interquartile mean,
stratified bootstrap confidence intervals, normalized scores and paired differences."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np


def iqm(x: np.ndarray) -> float:
    """Mean of the middle 50% of the values (interquartile mean)."""
    x = np.sort(np.asarray(x, dtype=float).ravel())
    n = len(x)
    if n < 4:
        return float(x.mean())
    lo, hi = int(np.floor(0.25 * n)), int(np.ceil(0.75 * n))
    return float(x[lo:hi].mean())


def bootstrap_ci(x: np.ndarray, stat: Any = np.mean, reps: int = 2000, level: float = 0.95, seed: int = 0
                 ) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of ``stat`` over the first axis (seeds); with a 2-D
    array (seeds x episodes), each resample draws seeds and, within each, episodes (stratified)."""
    rng = np.random.default_rng(seed)
    x = np.asarray(x, dtype=float)
    vals = np.array([stat(resample(x, rng)) for _ in range(reps)])
    a = (1 - level) / 2
    return float(np.quantile(vals, a)), float(np.quantile(vals, 1 - a))


def resample(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One stratified bootstrap resample: seeds with replacement and, for (seeds x episodes), episodes within
    each seed; returns the per-seed values (per-seed means for 2-D input)."""
    s = x[rng.integers(0, len(x), len(x))]
    if s.ndim == 2:
        s = np.take_along_axis(s, rng.integers(0, s.shape[1], s.shape), axis=1).mean(axis=1)
    return s


def bootstrap_diff_ci(a: np.ndarray, b: np.ndarray, reps: int = 2000, level: float = 0.95, seed: int = 0
                      ) -> tuple[float, float]:
    """Percentile bootstrap CI of mean(b) - mean(a) for two independent groups, each resampled as above."""
    rng = np.random.default_rng(seed)
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    vals = np.empty(reps)
    for r in range(reps):
        mean_a = resample(a, rng).mean()  # a first, then b: one fixed order of draws
        vals[r] = resample(b, rng).mean() - mean_a
    q = (1 - level) / 2
    return float(np.quantile(vals, q)), float(np.quantile(vals, 1 - q))


def bootstrap_ratio_ci(num: np.ndarray, den: np.ndarray, reps: int = 2000, level: float = 0.95, seed: int = 0
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The relative difference sum(num) / |sum(den)| - sign(sum(den)) (``num / den - 1`` where ``den`` sums
    positive) of per-episode totals (episodes on the first axis, any cells on the others), with its percentile
    bootstrap CI: episodes resampled with replacement, the same resamples for every cell. Returns (point, lo,
    hi), each shaped like one episode's cells; NaN where ``den`` sums to zero."""
    num, den = np.asarray(num, dtype=float), np.asarray(den, dtype=float)
    if num.shape != den.shape or num.ndim < 1 or len(num) < 1:
        raise ValueError(f"num and den need the same shape with episodes first, got {num.shape} and {den.shape}")
    n = len(num)
    rng = np.random.default_rng(seed)
    # each resample as counts of the episodes it draws, so a resample costs one matrix product
    counts = np.stack([np.bincount(rng.integers(0, n, n), minlength=n) for _ in range(reps)]).astype(float)
    flat_num, flat_den = num.reshape(n, -1), den.reshape(n, -1)

    def rel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(np.abs(b) > 1e-12, (a - b) / np.abs(b), np.nan)

    point = rel(flat_num.sum(axis=0), flat_den.sum(axis=0))
    boot = rel(counts @ flat_num, counts @ flat_den)
    a = (1 - level) / 2
    with warnings.catch_warnings():  # a cell with no offers in any resample: NaN, said by the point itself
        warnings.simplefilter("ignore", RuntimeWarning)
        lo, hi = np.nanquantile(boot, a, axis=0), np.nanquantile(boot, 1 - a, axis=0)
    shape = num.shape[1:]
    return point.reshape(shape), lo.reshape(shape), hi.reshape(shape)


def summarize(per_seed: np.ndarray, reps: int = 2000) -> dict[str, Any]:
    """Mean, IQM and 95% bootstrap CIs of per-seed scores (seeds x episodes, or seeds)."""
    x = np.asarray(per_seed, dtype=float)
    means = x.mean(axis=1) if x.ndim == 2 else x
    return {"mean": float(means.mean()), "iqm": iqm(means), "ci95": bootstrap_ci(x, np.mean, reps),
            "iqm_ci95": bootstrap_ci(x, iqm, reps), "per_seed": means.tolist(), "seeds": len(means)}


def normalized(score: float, best_static: float, oracle: float) -> float:
    """(R - R_best_static) / (R_oracle - R_best_static)."""
    return float((score - best_static) / (oracle - best_static)) if oracle != best_static else float("nan")


def ab_test(a: np.ndarray, b: np.ndarray, alpha: float = 0.05, power: float = 0.8) -> dict[str, Any]:
    """Paired comparison of per-episode returns of B against A on the same seeds."""
    from scipy import stats

    a, b = np.asarray(a, float), np.asarray(b, float)
    if a.shape != b.shape or len(a) < 2:
        raise ValueError("A and B need the same number (>= 2) of paired episodes")
    d = b - a
    n = len(d)
    mean, sd = float(d.mean()), float(d.std(ddof=1))
    se = sd / np.sqrt(n)
    t = stats.t.ppf(1 - alpha / 2, n - 1)
    p = float(stats.ttest_rel(b, a).pvalue) if sd > 0 else (0.0 if mean != 0 else 1.0)
    z = stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)
    needed = float(np.ceil((z * sd / mean) ** 2)) if mean != 0 else float("inf")
    base = float(a.mean())
    return {"episodes": n, "mean_a": base, "mean_b": float(b.mean()), "diff": mean,
            "diff_ci": (mean - t * se, mean + t * se), "lift": mean / base if base else float("nan"),
            "lift_ci": ((mean - t * se) / base, (mean + t * se) / base) if base else (float("nan"),) * 2,
            "p_value": p, "alpha": alpha, "power": power, "episodes_needed": needed,
            "significant": bool(p < alpha)}
