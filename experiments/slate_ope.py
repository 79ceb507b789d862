"""Off-policy evaluation of display policies (slates) on logs of the uniform display.

The logs' display shows each visitor ``k`` distinct products drawn uniformly from the ``n`` candidates of the browsed
category (``promogym.envs.market.Market.display_propensity``; ``PromoRecommendation-v0`` with every level equal),
so the shown set ``S`` has the exact propensity ``mu(S) = 1 / C(n, k)``. A target policy shows ``S_pi`` in the same
context (a display action leaves ties at the last slot to the env's uniform draw, so a target may be random too: its
probability ``pi(S)`` of each set is known). Two estimators of its value per visit, from the logged profit ``r`` of
each visit:

- **IPS** with slate propensities: ``r x pi(S) / mu(S)``: unbiased for any reward, but only visits whose logged set
  is one the target shows count, so its variance grows with C(n, k);
- **PI**, the pseudo-inverse estimator (Swaminathan et al., 2017, "Off-policy evaluation for slate recommendation")
  for rewards additive over the shown products (``r = sum of phi(x, j) over j in S``): ``r x q_pi' Gamma^+ 1_S``, where
  ``Gamma[j, l] = P(j and l both shown)``. For the uniform k-of-n display ``Gamma = a I + b 1 1'`` with
  ``b = k (k - 1) / (n (n - 1))`` and ``a = k / n - b``, which gives the weight
  ``(q_pi' 1_S - n b) / a`` with ``q_pi`` the target's probabilities of showing each product (a deterministic
  target: ``|S cap S_pi|``; k = 1: IPS; k = n: 1, every display is the same set; the logging display itself: 1).
  Unbiased when the reward is additive; a multinomial logit's choice is not (products shown together compete), so
  PI trades that bias for a variance that grows with n, not C(n, k).

:func:`record_slates` plays the uniform display in an env and, at every step, asks each target policy what it
would show in the same state (the visitors, their candidates, the shop's records), so the table holds per visit
the logged set's profit and propensity and each target's overlap with it; :func:`slate_estimates` turns a target's
columns into both estimates with bootstrap CIs over visits; :func:`true_visit_values` plays a target itself for the
value they estimate (the world's expected profit per visit).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from promogym.experiments.stats import bootstrap_ci


def pi_weight(overlap: np.ndarray, slots: np.ndarray, pool: np.ndarray) -> np.ndarray:
    """The pseudo-inverse weight of a logged set under the uniform ``slots``-of-``pool`` display for a target that
    shows ``slots`` products, ``overlap`` being the sum over the logged set of the target's probability of showing
    each product (a deterministic target: the products the two sets share); see the module docstring."""
    m = np.asarray(overlap, float)
    k = np.asarray(slots, float)
    n = np.asarray(pool, float)
    if (k > n).any() or (m > k).any() or (k < 0).any():
        raise ValueError("pi_weight needs 0 <= overlap <= slots <= pool")
    full = (k >= n) | (k == 0)
    b = np.where(full | (n < 2), 0.0, k * (k - 1) / np.maximum(n * (n - 1), 1.0))
    a = np.where(full, 1.0, k / np.maximum(n, 1.0) - b)
    return np.where(full, 1.0, (m - n * b) / a)


def target_display(env: Any, action: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """What a display action shows in ``env``'s current state, as the env draws it
    (:func:`~promogym.envs.recommendation.display_groups`): ``(sure, tied, open)``, the candidates shown for certain,
    the tied group at the last slot's level and the slots the env's tie-break fills from it uniformly."""
    from promogym.envs.recommendation import display_groups

    e = env.unwrapped
    return display_groups(np.asarray(action, np.int64).reshape(e.candidates.shape), e.candidates >= 0, e.slots)


def _target_terms(sure: np.ndarray, tied: np.ndarray, open_: np.ndarray, logged: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Per visitor, the target's probability of the logged set and the sum over the logged set of the target's
    inclusion probabilities (sure: 1; tied: the open slots over the tied group's size)."""
    from promogym.envs.market.world import log_comb

    n_tied = tied.sum(axis=1)
    q = np.where(sure, 1.0, np.where(tied, open_[:, None] / np.maximum(n_tied, 1)[:, None], 0.0))
    consistent = (sure <= logged).all(axis=1) & (logged <= (sure | tied)).all(axis=1)
    return np.where(consistent, np.exp(-log_comb(n_tied, open_)), 0.0), (q * logged).sum(axis=1)


def record_slates(env: Any, targets: Mapping[str, Any], seeds: Sequence[int]) -> pd.DataFrame:
    """Per visit of the uniform display's episodes on ``seeds`` (every action level 0): ``episode``, ``t``,
    ``visitor``, ``slots``, ``pool`` (candidates), ``slate_propensity``, ``profit`` (realised) and
    ``expected_profit`` (the world's expectation of the logged set), and per target name ``prob_<name>`` (the
    probability that the target shows the logged set: 0 or 1 for a deterministic display, the tie-break's
    probability where it leaves slots to the env) and ``overlap_<name>`` (the sum over the logged set of the target's
    probability of showing each product: the shared products of a deterministic display). Targets act on the same
    state before the step (a baseline's ``reset`` is called at each episode start)."""
    from promogym.agents.base import EnvPolicy

    e = env.unwrapped
    zero = np.zeros(env.action_space.shape, np.int64)  # every level equal: the uniform display
    frames = []
    for seed in seeds:
        obs, _ = env.reset(seed=int(seed))
        for pol in targets.values():
            if isinstance(pol, EnvPolicy):
                pol.reset()
        done, t = False, 0
        while not done:
            plans = {name: target_display(env, pol.predict(obs, deterministic=True)[0])
                     for name, pol in targets.items()}
            candidates, slots = e.candidates.copy(), e.slots.copy()
            pool = (candidates >= 0).sum(axis=1)
            obs, _, terminated, truncated, info = env.step(zero)
            shown = info["shown"]
            logged = (candidates[:, :, None] == shown[:, None, :]).any(axis=2) & (candidates >= 0)  # per visitor
            row = {"episode": int(seed), "t": t, "visitor": np.arange(len(slots)), "slots": np.minimum(slots, pool),
                   "pool": pool, "slate_propensity": info["slate_propensity"], "profit": info["visitor_profit"],
                   "expected_profit": info["visitor_expected_profit_world"]}
            for name, (sure, tied, open_) in plans.items():
                row[f"prob_{name}"], row[f"overlap_{name}"] = _target_terms(sure, tied, open_, logged)
            frames.append(pd.DataFrame(row))
            done, t = terminated or truncated, t + 1
    return pd.concat(frames, ignore_index=True)


def slate_estimates(table: pd.DataFrame, target: str, reps: int = 2000, level: float = 0.95,
                    reward: str = "profit") -> dict[str, Any]:
    """The IPS and PI estimates of ``target``'s value per visit from :func:`record_slates`'s table, each with a
    percentile-bootstrap CI over visits, the number of exact matches IPS rests on and each weight's effective
    sample size."""
    for col in (f"prob_{target}", f"overlap_{target}", reward, "slate_propensity", "slots", "pool"):
        if col not in table:
            raise ValueError(f"the slate table lacks column {col!r} (record the target {target!r} with the logs)")
    r = table[reward].to_numpy(float)
    w_ips = table[f"prob_{target}"].to_numpy(float) / table["slate_propensity"].to_numpy(float)
    w_pi = pi_weight(table[f"overlap_{target}"].to_numpy(), table["slots"].to_numpy(), table["pool"].to_numpy())
    out: dict[str, Any] = {"visits": len(table), "matches": int((table[f"prob_{target}"] > 0).sum())}
    for name, w in (("ips", w_ips), ("pi", w_pi)):
        x = r * w
        lo, hi = bootstrap_ci(x, reps=reps, level=level)
        ess = float(w.sum() ** 2 / max((w ** 2).sum(), 1e-12))
        out[name] = {"mean": float(x.mean()), "ci95": [lo, hi], "ess": ess}
    return out


def true_visit_values(env: Any, policy: Any, seeds: Sequence[int], reps: int = 2000) -> dict[str, Any]:
    """``policy``'s value per visit in ``env``: the world's expected profit of each visitor's display, over every
    visit of its episodes on ``seeds`` (``mean`` with a bootstrap CI over visits), and the same on the visitors shown
    at least one of the catalog's new products (``new_products``: cold start) with their share of the visits."""
    from promogym.agents.base import episode_steps

    values, new = [], []
    for seed in seeds:
        for _, _, _, info in episode_steps(env, policy, int(seed)):
            values.append(np.asarray(info["visitor_expected_profit_world"], float))
            new.append(np.asarray(info["saw_new"], bool))
    x, saw = np.concatenate(values), np.concatenate(new)
    lo, hi = bootstrap_ci(x, reps=reps)
    out: dict[str, Any] = {"mean": float(x.mean()), "ci95": [lo, hi], "visits": len(x),
                           "new_products": {"share": float(saw.mean()), "mean": None, "ci95": [None, None]}}
    if saw.any():
        lo_n, hi_n = bootstrap_ci(x[saw], reps=reps)
        out["new_products"].update(mean=float(x[saw].mean()), ci95=[lo_n, hi_n])
    return out


__all__ = ["pi_weight", "record_slates", "slate_estimates", "target_display", "true_visit_values"]
