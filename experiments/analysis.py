"""What a learned policy does, state by state, next to the myopic optimizer on the same states.

Used by ``experiments/notebooks/policy_analysis.ipynb``. The learned policy plays episodes in the
world; before each step the myopic baseline is asked what it would do in the very same state (it
only reads the state), so differences are differences of decision, not of circumstance.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pandas as pd
import yaml

from promogym.envs.base import world_config
from promogym.envs.families import family_of, short_name
from promogym.envs.market.customers import SENSITIVITY, VISIT_BANDS, sensitivity_band


def learned_runs(run: str | Path, env_id: str, trained_on: str = "world") -> list[Path]:
    """The training run folders of an experiment for one env and simulator, by seed."""
    folder = Path(run) / "train" / short_name(env_id) / trained_on
    runs = sorted(p for p in folder.glob("*_s*") if (p / "config.yml").is_file())
    if not runs:
        raise FileNotFoundError(f"no finished training runs under {folder}")
    return runs


def _env_for(run_dir: Path) -> tuple[str, gym.Env[Any, Any]]:
    cfg = yaml.safe_load((run_dir / "config.yml").read_text())
    return cfg["env_id"], gym.make(cfg["env_id"], config=world_config(cfg["env_config"]))


def pricing_decisions(run_dir: str | Path, episodes: int = 3, first_seed: int = 1_000_000) -> pd.DataFrame:
    """One row per (episode, day, product): stock, the learned price and the myopic price (x list price)."""
    from promogym.agents.oracle import MyopicGreedy
    from promogym.agents.train import LearnedPolicy

    run_dir = Path(run_dir)
    env_id, env = _env_for(run_dir)
    if family_of(env_id).name != "pricing":
        raise ValueError(f"{run_dir} is not a pricing agent ({env_id}); use coupon_decisions for coupon agents")
    agent, myopic = LearnedPolicy(run_dir, env), MyopicGreedy(env)
    u: Any = env.unwrapped
    rows = []
    for seed in range(first_seed, first_seed + episodes):
        obs, _ = env.reset(seed=seed)
        myopic.reset()
        done = False
        while not done:
            stock = u.state.stock[u.products].copy()
            action = agent.predict(obs)[0]
            mine = u.prices_from_action(action) / u.list_price
            theirs = u.prices_from_action(myopic.predict(obs)[0]) / u.list_price
            day = u.t
            obs, _, terminated, truncated, info = env.step(action)
            done = terminated or truncated
            for j in range(len(u.products)):
                rows.append({"episode": seed, "day": day, "product": j, "stock": int(stock[j]),
                             "stock_share": stock[j] / max(1, u.config.initial_stock),
                             "price_learned": float(mine[j]), "price_myopic": float(theirs[j]),
                             "units": int(info["units"][j])})
    return pd.DataFrame(rows)


def coupon_decisions(run_dir: str | Path, episodes: int = 3, first_seed: int = 1_000_000) -> pd.DataFrame:
    """One row per customer offered: what a marketer sees (visit band), what only the world knows (price
    sensitivity tercile; the true probability of buying any viewed product without a coupon and its uplift
    with the top level), and the learned and myopic levels."""
    from promogym.agents.coupons import MyopicCoupons
    from promogym.agents.train import LearnedPolicy

    run_dir = Path(run_dir)
    env_id, env = _env_for(run_dir)
    if family_of(env_id).name != "coupons":
        raise ValueError(f"{run_dir} is not a coupon agent ({env_id}); use pricing_decisions for pricing agents")
    agent, myopic = LearnedPolicy(run_dir, env), MyopicCoupons(env)
    u: Any = env.unwrapped
    cust = u.market.customers
    rows = []
    for seed in range(first_seed, first_seed + episodes):
        obs, _ = env.reset(seed=seed)
        done = False
        while not done:
            users = u.users.copy()
            # P(buy anything in the visit) by the world's multinomial logit over the customer's viewed products
            p0 = u.choice_proba(0.0, u.world).sum(axis=1)
            top = u.choice_proba(float(u.levels[-1]), u.world).sum(axis=1)
            action = np.asarray(agent.predict(obs)[0]).reshape(-1)
            theirs = np.asarray(myopic.predict(obs)[0]).reshape(-1)
            t, budget = u.t, u.budget_left
            obs, _, terminated, truncated, info = env.step(action)
            done = terminated or truncated
            band = sensitivity_band(cust, users)
            for k in range(len(users)):
                rows.append({"episode": seed, "t": t, "budget_left": budget, "user": int(users[k]),
                             "visit_band": VISIT_BANDS[cust.visit_band[users[k]]],
                             "price_sensitivity": SENSITIVITY[band[k]],
                             "p_buy_no_coupon": float(p0[k]), "uplift_top_level": float(top[k] - p0[k]),
                             "level_learned": float(u.levels[action[k]]), "level_myopic": float(u.levels[theirs[k]]),
                             "coupon_given": float(info["coupon"][k]), "bought": bool(info["bought"][k])})
    return pd.DataFrame(rows)


__all__ = ["coupon_decisions", "learned_runs", "pricing_decisions"]
