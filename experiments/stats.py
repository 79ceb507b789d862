"""Aggregate statistics over training seeds (rliable's recipe, in numpy): mean, interquartile mean,
stratified bootstrap confidence intervals, normalized scores and paired differences."""

from __future__ import annotations

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
