"""Off-policy evaluation of display policies (slates) on logs of the uniform display.

The logs' display shows each visitor ``k`` distinct products drawn uniformly from the ``n`` candidates of the browsed
category (``promogym.envs.market.Market.display_propensity``; ``PromoRecommendation-v0`` with every level equal),
so the shown set ``S`` has the exact propensity ``mu(S) = 1 / C(n, k)``. A deterministic target policy shows ``S_pi``
in the same context. Two estimators of its value per visit, from the logged profit ``r`` of each visit:

- **IPS** with slate propensities: ``r x 1[S = S_pi] / mu(S)``: unbiased for any reward, but only visits whose
  logged set is exactly the target's count, so its variance grows with C(n, k);
- **PI**, the pseudo-inverse estimator (Swaminathan et al., 2017, "Off-policy evaluation for slate recommendation")
  for rewards additive over the shown products (``r = sum of phi(x, j) over j in S``): ``r x q_pi' Gamma^+ 1_S``, where
  ``Gamma[j, l] = P(j and l both shown)``. For the uniform k-of-n display ``Gamma = a I + b 1 1'`` with
  ``b = k (k - 1) / (n (n - 1))`` and ``a = k / n - b``, which gives the weight
  ``(|S cap S_pi| - n b) / a`` (k = 1: IPS; k = n: 1, every display is the same set). Unbiased when the reward is
  additive; a multinomial logit's choice is not (products shown together compete), so PI trades that bias for a
  variance that grows with n, not C(n, k).

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
    """The pseudo-inverse weight of a logged set under the uniform ``slots``-of-``pool`` display for a deterministic
    target set of the same size sharing ``overlap`` products with it (see the module docstring)."""
    m = np.asarray(overlap, float)
    k = np.asarray(slots, float)
    n = np.asarray(pool, float)
    if (k > n).any() or (m > k).any() or (k < 0).any():
        raise ValueError("pi_weight needs 0 <= overlap <= slots <= pool")
    full = (k >= n) | (k == 0)
    b = np.where(full | (n < 2), 0.0, k * (k - 1) / np.maximum(n * (n - 1), 1.0))
    a = np.where(full, 1.0, k / np.maximum(n, 1.0) - b)
    return np.where(full, 1.0, (m - n * b) / a)


def target_sets(env: Any, action: np.ndarray) -> np.ndarray:
    """(visitors, width) booleans: the candidates a deterministic display action shows in ``env``'s current state
    (each visitor's ``slots`` candidates of highest level); ValueError when a visitor's set would be left to the
    env's random tie-break (the target is not deterministic there)."""
    from promogym.envs.recommendation import slate_propensity

    e = env.unwrapped
    levels = np.asarray(action, np.int64).reshape(e.candidates.shape)
    valid = e.candidates >= 0
    prob = slate_propensity(levels, valid, e.slots)
    if not np.allclose(prob, 1.0):
        raise ValueError(f"a target display must be deterministic: {(prob < 1).sum()} visitor(s) have ties across "
                         "their last slot (give the shown products a higher level than the rest)")
    key = np.where(valid, levels, -1)
    k = np.minimum(e.slots, valid.sum(axis=1))
    kth = -np.sort(-key, axis=1)[np.arange(len(k)), np.maximum(k - 1, 0)]
    return valid & (key >= kth[:, None]) & (k[:, None] > 0)


def record_slates(env: Any, targets: Mapping[str, Any], seeds: Sequence[int]) -> pd.DataFrame:
    """Per visit of the uniform display's episodes on ``seeds`` (every action level 0): ``episode``, ``t``,
    ``visitor``, ``slots``, ``pool`` (candidates), ``slate_propensity``, ``profit`` (realised) and
    ``expected_profit`` (the world's expectation of the logged set), and per target name ``overlap_<name>`` and
    ``match_<name>`` (its set shares that many products with the logged one / is the logged one). Targets act on the
    same state before the step (a baseline's ``reset`` is called at each episode start)."""
    from promogym.agents.base import EnvPolicy

    e = env.unwrapped
    frames = []
    for seed in seeds:
        obs, _ = env.reset(seed=int(seed))
        for pol in targets.values():
            if isinstance(pol, EnvPolicy):
                pol.reset()
        done, t = False, 0
        while not done:
            sets = {name: target_sets(env, pol.predict(obs, deterministic=True)[0]) for name, pol in targets.items()}
            zero = np.zeros(env.action_space.shape, np.int64)
            candidates, slots = e.candidates.copy(), e.slots.copy()
            pool = (candidates >= 0).sum(axis=1)
            obs, _, terminated, truncated, info = env.step(zero)
            shown = info["shown"]
            logged = (candidates[:, :, None] == shown[:, None, :]).any(axis=2) & (candidates >= 0)  # per visitor
            row = {"episode": int(seed), "t": t, "visitor": np.arange(len(slots)), "slots": np.minimum(slots, pool),
                   "pool": pool, "slate_propensity": info["slate_propensity"], "profit": info["visitor_profit"],
                   "expected_profit": info["visitor_expected_profit_world"]}
            for name, s in sets.items():
                overlap = (s & logged).sum(axis=1)
                row[f"overlap_{name}"] = overlap
                row[f"match_{name}"] = overlap == row["slots"]
            frames.append(pd.DataFrame(row))
            done, t = terminated or truncated, t + 1
    return pd.concat(frames, ignore_index=True)


def slate_estimates(table: pd.DataFrame, target: str, reps: int = 2000, level: float = 0.95,
                    reward: str = "profit") -> dict[str, Any]:
    """The IPS and PI estimates of ``target``'s value per visit from :func:`record_slates`'s table, each with a
    percentile-bootstrap CI over visits, the number of exact matches IPS rests on and each weight's effective
    sample size."""
    for col in (f"match_{target}", f"overlap_{target}", reward, "slate_propensity", "slots", "pool"):
        if col not in table:
            raise ValueError(f"the slate table lacks column {col!r} (record the target {target!r} with the logs)")
    r = table[reward].to_numpy(float)
    w_ips = table[f"match_{target}"].to_numpy(float) / table["slate_propensity"].to_numpy(float)
    w_pi = pi_weight(table[f"overlap_{target}"].to_numpy(), table["slots"].to_numpy(), table["pool"].to_numpy())
    out: dict[str, Any] = {"visits": len(table), "matches": int(table[f"match_{target}"].sum())}
    for name, w in (("ips", w_ips), ("pi", w_pi)):
        x = r * w
        lo, hi = bootstrap_ci(x, reps=reps, level=level)
        ess = float(w.sum() ** 2 / max((w ** 2).sum(), 1e-12))
        out[name] = {"mean": float(x.mean()), "ci95": [lo, hi], "ess": ess}
    return out


def true_visit_values(env: Any, policy: Any, seeds: Sequence[int], reps: int = 2000) -> dict[str, Any]:
    """``policy``'s value per visit in ``env``: the world's expected profit of its displays per visitor, averaged
    over every step of its episodes on ``seeds`` (a bootstrap CI over steps)."""
    from promogym.agents.base import episode_steps

    per_step = [info["expected_profit_world"] / len(info["users"])
                for seed in seeds for _, _, _, info in episode_steps(env, policy, int(seed))]
    x = np.asarray(per_step, float)
    lo, hi = bootstrap_ci(x, reps=reps)
    return {"mean": float(x.mean()), "ci95": [lo, hi], "steps": len(x)}


__all__ = ["pi_weight", "record_slates", "slate_estimates", "target_sets", "true_visit_values"]
