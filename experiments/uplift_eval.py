"""Uplift metrics and off-policy evaluation on randomized-trial rows.

Uplift curves follow scikit-uplift's definitions. Rows are sorted by predicted uplift, descending;
after the top k rows, with n_t / n_c treated / control rows and y_t / y_c their summed outcomes:

* Qini curve: y_t - y_c n_t / n_c;  uplift curve: (y_t / n_t - y_c / n_c)(n_t + n_c).
* Qini coefficient and AUUC: (area under the model's curve - area under the random line) /
  (area under the perfect ordering's curve - area under the random line), so 0 is random targeting
  and 1 the perfect ordering (the perfect Qini ordering lets negative effects show, as scikit-uplift's
  default does).
* uplift@k: among the top k share of all rows, the treated rows' mean outcome minus the control rows'.

Off-policy evaluation of a deterministic policy pi on rows (x_i, a_i, r_i) logged with propensity
e = P(a_i | x_i) (1/3 in the trial), with w_i = 1[pi(x_i) = a_i] / e:

* IPS: mean(w_i r_i); SNIPS: sum(w_i r_i) / sum(w_i);
* DR: mean(q(x_i, pi(x_i)) + w_i (r_i - q(x_i, a_i))) with an outcome model q fitted on other rows.

Confidence intervals are percentile bootstraps over rows, all estimators on the same resamples.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from promogym.experiments.stats import bootstrap_ci


# ---------------------------------------------------------------------------------------- curves
def _cumulative(y: np.ndarray, score: np.ndarray, treated: np.ndarray) -> tuple[np.ndarray, ...]:
    order = np.argsort(-np.asarray(score, float), kind="mergesort")
    y, t = np.asarray(y, float)[order], np.asarray(treated, bool)[order]
    n_t, n_c = np.cumsum(t), np.cumsum(~t)
    y_t, y_c = np.cumsum(y * t), np.cumsum(y * ~t)
    return n_t.astype(float), n_c.astype(float), y_t, y_c


def qini_curve(y: np.ndarray, score: np.ndarray, treated: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rows targeted 0..n, Qini value)."""
    n_t, n_c, y_t, y_c = _cumulative(y, score, treated)
    q = y_t - y_c * np.divide(n_t, n_c, out=np.zeros_like(n_t), where=n_c > 0)
    return np.arange(len(q) + 1, dtype=float), np.r_[0.0, q]


def uplift_curve(y: np.ndarray, score: np.ndarray, treated: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rows targeted 0..n, cumulative uplift)."""
    n_t, n_c, y_t, y_c = _cumulative(y, score, treated)
    rate_t = np.divide(y_t, n_t, out=np.zeros_like(y_t), where=n_t > 0)
    rate_c = np.divide(y_c, n_c, out=np.zeros_like(y_c), where=n_c > 0)
    u = (rate_t - rate_c) * (n_t + n_c)
    return np.arange(len(u) + 1, dtype=float), np.r_[0.0, u]


def _perfect_qini_score(y: np.ndarray, treated: np.ndarray) -> np.ndarray:
    t = np.asarray(treated, float)
    return np.asarray(y, float) * t - np.asarray(y, float) * (1 - t)


def _perfect_uplift_score(y: np.ndarray, treated: np.ndarray) -> np.ndarray:
    y, t = np.asarray(y, float), np.asarray(treated, float)
    control_responders = ((y == 1) & (t == 0)).sum()
    treated_non = ((y == 0) & (t == 1)).sum()
    summand = y if control_responders > treated_non else t
    return 2 * (y == t) + summand


def _normalized_area(curve: Any, perfect: Any, y: np.ndarray, score: np.ndarray, treated: np.ndarray) -> float:
    x, v = curve(y, score, treated)
    xp, vp = curve(y, perfect(y, treated), treated)
    random = 0.5 * x[-1] * v[-1]  # the straight line from (0, 0) to (n, overall effect)
    area, best = np.trapezoid(v, x), np.trapezoid(vp, xp)
    return float((area - random) / (best - random)) if best != random else float("nan")


def qini_coefficient(y: np.ndarray, score: np.ndarray, treated: np.ndarray) -> float:
    """Area between the Qini curve of ``score`` and random targeting, as a share of the perfect ordering's (0: random,
    1: perfect; NaN when the perfect one is no better than random). ``y``: outcomes, ``treated``: 0/1."""
    return _normalized_area(qini_curve, _perfect_qini_score, y, score, treated)


def auuc(y: np.ndarray, score: np.ndarray, treated: np.ndarray) -> float:
    """Area under the uplift curve of ``score``, normalized like :func:`qini_coefficient`."""
    return _normalized_area(uplift_curve, _perfect_uplift_score, y, score, treated)


def uplift_at_k(y: np.ndarray, score: np.ndarray, treated: np.ndarray, k: float = 0.3) -> float:
    """Treated minus control outcome rate among the top ``k`` share of rows by ``score`` (NaN when that share holds one
    arm only); ValueError unless 0 < ``k`` < 1."""
    if not 0 < k < 1:
        raise ValueError(f"k must be in (0, 1), got {k}")
    order = np.argsort(-np.asarray(score, float), kind="mergesort")[: int(np.ceil(k * len(score)))]
    y, t = np.asarray(y, float)[order], np.asarray(treated, bool)[order]
    if t.all() or (~t).all():
        return float("nan")
    return float(y[t].mean() - y[~t].mean())


def uplift_scores(y: np.ndarray, score: np.ndarray, treated: np.ndarray, k: float = 0.3) -> dict[str, float]:
    """:func:`qini_coefficient`, :func:`auuc` and :func:`uplift_at_k` of one score, keyed ``qini``, ``auuc``,
    ``uplift_at_<k%>``."""
    return {"qini": qini_coefficient(y, score, treated), "auuc": auuc(y, score, treated),
            f"uplift_at_{round(k * 100)}": uplift_at_k(y, score, treated, k)}


# ---------------------------------------------------------------------------------------- off-policy evaluation
def dr_terms(policy_arms: np.ndarray, logged_arms: np.ndarray, rewards: np.ndarray, propensity: float | np.ndarray,
             q_hat: np.ndarray) -> np.ndarray:
    """Each logged row's doubly robust term for a deterministic policy: q(x, pi(x)) + 1[a = pi(x)] / e x (r -
    q(x, a)); their mean is the DR estimate of the policy's mean reward per customer (see :func:`ope`)."""
    pi = np.asarray(policy_arms, int)
    a = np.asarray(logged_arms, int)
    q = np.asarray(q_hat, float)
    rows = np.arange(len(pi))
    e = np.broadcast_to(np.asarray(propensity, float), pi.shape)
    return q[rows, pi] + (pi == a) / e * (np.asarray(rewards, float) - q[rows, a])


def paired_dr_difference(terms_a: np.ndarray, terms_b: np.ndarray, reps: int = 1000, seed: int = 0,
                         level: float = 0.95) -> tuple[float, tuple[float, float]]:
    """The DR difference (a − b) of two policies on the same logged rows and its percentile bootstrap CI, rows
    resampled jointly (paired: the rows' shared noise cancels)."""
    d = np.asarray(terms_a, float) - np.asarray(terms_b, float)
    return float(d.mean()), bootstrap_ci(d, reps=reps, level=level, seed=seed)


def ope(policy_arms: np.ndarray, logged_arms: np.ndarray, rewards: np.ndarray, propensity: float | np.ndarray,
        q_hat: np.ndarray, reps: int = 1000, seed: int = 0, level: float = 0.95) -> dict[str, Any]:
    """IPS, SNIPS and DR estimates of a deterministic policy's mean reward per customer, with percentile
    bootstrap CIs. ``rewards``: the logged rows' rewards under their logged arm; ``q_hat`` (rows, arms):
    an outcome model's expected reward per arm, fitted on other rows; ``propensity``: P(logged arm)."""
    pi = np.asarray(policy_arms, int)
    a = np.asarray(logged_arms, int)
    r = np.asarray(rewards, float)
    q = np.asarray(q_hat, float)
    if not (len(pi) == len(a) == len(r) == len(q)):
        raise ValueError("policy_arms, logged_arms, rewards and q_hat need one entry per row")
    e = np.broadcast_to(np.asarray(propensity, float), r.shape)
    rows = np.arange(len(r))
    w = (pi == a) / e
    dm = q[rows, pi]
    terms = dr_terms(pi, a, r, e, q)

    def estimates(idx: np.ndarray) -> np.ndarray:
        ww, rr = w[idx], r[idx]
        return np.array([np.mean(ww * rr), np.sum(ww * rr) / max(np.sum(ww), 1e-12), np.mean(terms[idx]),
                         np.mean(dm[idx])])

    point = estimates(rows)
    rng = np.random.default_rng(seed)
    boots = np.stack([estimates(rng.integers(0, len(r), len(r))) for _ in range(reps)])
    lo, hi = np.quantile(boots, [(1 - level) / 2, 1 - (1 - level) / 2], axis=0)
    names = ("ips", "snips", "dr", "direct")
    out: dict[str, Any] = {n: float(point[k]) for k, n in enumerate(names)}
    out.update({f"{n}_ci95": (float(lo[k]), float(hi[k])) for k, n in enumerate(names)})
    out["match_share"] = float((pi == a).mean())
    out["emails_share"] = float((pi > 0).mean())
    return out


def budgeted_best_arm(values: np.ndarray, budget_share: float, threshold: float | None = None) -> np.ndarray:
    """Uplift targeting: each customer's best e-mail by predicted value over no e-mail (``values``: rows x
    arms, arm 0 = none); e-mail the customers whose best gain is positive and above ``threshold`` (by
    default the (1 - budget_share) quantile of the gains, so about ``budget_share`` of them get one), never
    more than ``floor(budget_share x rows)`` of them: a threshold taken on other rows (the training split)
    can let more through, and then only the largest gains are e-mailed, so the budget always holds."""
    v = np.asarray(values, float)
    gain = v[:, 1:].max(axis=1) - v[:, 0]
    best = 1 + v[:, 1:].argmax(axis=1)
    if threshold is None:
        threshold = float(np.quantile(gain, 1 - budget_share)) if budget_share < 1 else -np.inf
    chosen = (gain > 0) & (gain >= threshold) & (budget_share > 0)
    cap = int(np.floor(budget_share * len(gain) + 1e-9))
    if chosen.sum() > cap:
        keep = np.flatnonzero(chosen)[np.argsort(-gain[chosen], kind="stable")[:cap]]
        chosen = np.zeros_like(chosen)
        chosen[keep] = True
    return np.where(chosen, best, 0)
