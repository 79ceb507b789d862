"""The myopic greedy baseline and the MPC oracle on the season environments."""

import gymnasium as gym
import numpy as np
import pytest

from promogym import envs  # noqa: F401
from promogym.agents.base import episode_table, run_episode
from promogym.agents.baselines import ListPrice, StaticPrice
from promogym.agents.oracle import MPCOracle, MyopicGreedy, StockDPOracle

ONE = {"market": {"n_customers": 800, "n_products": 100, "reference_adaptation": 0.0}, "n_products": 1,
       "categories": [0], "horizon": 10, "daily_customers": 200, "initial_stock": 6, "price_low": 0.6,
       "price_high": 1.6}
SMALL = {"market": {"n_customers": 800, "n_products": 100}, "n_products": 4, "horizon": 10,
         "daily_customers": 150, "initial_stock": 30}


def test_oracle_beats_list_and_static_prices_on_common_seeds():
    env = gym.make("promogym/DynamicPricing-v1", config=SMALL)
    seeds = range(6)
    oracle = episode_table(env, MPCOracle(env), seeds)["return"].mean()
    at_list = episode_table(env, ListPrice(env), seeds)["return"].mean()
    static = max(episode_table(env, StaticPrice(env, m), seeds)["return"].mean() for m in (0.9, 1.1, 1.3))
    assert oracle > at_list and oracle > 0.97 * static


def test_myopic_is_blind_to_stock():
    cfg = {**SMALL, "initial_stock": 3}  # stock runs out fast; the myopic price ignores it
    env = gym.make("promogym/DynamicPricing-v1", config=cfg)
    policy = MyopicGreedy(env, n_visitors=200)
    obs, _ = env.reset(seed=0)
    first = policy.predict(obs)[0]
    env.step(first)
    env.unwrapped.state.stock[env.unwrapped.products] = 1
    second = policy.predict(env.unwrapped._obs())[0]
    np.testing.assert_allclose(first, second)  # same weekday pattern, same prices whatever the stock


def test_oracle_on_price_promo_stays_within_budget():
    env = gym.make("promogym/PricePromo-v1", config={**SMALL, "budget": 40.0})
    row = run_episode(env, MPCOracle(env, n_visitors=150), seed=0)
    assert row["coupon_spend"] <= 40.0 + 1e-9 and np.isfinite(row["return"])


def test_stock_dp_oracle_is_an_upper_bound_it_attains():
    env = gym.make("promogym/DynamicPricing-v1", config=ONE)
    dp = StockDPOracle(env, n_visitors=4000, n_prices=41)
    statics = dp.static_values()
    assert dp.value >= statics.max() - 1e-9          # the optimum over policies includes every constant price
    # more stock left -> never a higher price (the value of a unit falls as units pile up)
    assert (np.diff(dp.policy[: ONE["horizon"] - 1, 1:], axis=1) <= 0).all()
    simulated = episode_table(env, dp, range(300))["return"]
    assert abs(simulated.mean() - dp.value) < 3 * simulated.std() / np.sqrt(len(simulated)) + 0.02 * dp.value


def test_stock_dp_oracle_refuses_envs_it_cannot_solve():
    env = gym.make("promogym/DynamicPricing-v1", config=SMALL)
    with pytest.raises(ValueError, match="one-product"):
        StockDPOracle(env)
