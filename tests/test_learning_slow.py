"""Agents learn (slow: `make test-slow`)."""

import gymnasium as gym
import numpy as np
import pytest
from budget_checks import MostGenerous, play_within_budget, unconstrained_spend

from promogym import envs  # noqa: F401
from promogym.agents.base import episode_table
from promogym.agents.baselines import StaticPrice
from promogym.agents.oracle import StockDPOracle
from promogym.agents.train import LearnedPolicy, TrainSpec, train
from promogym.envs.market import mnl_from_utility

ONE_PRODUCT = {"market": {"n_customers": 2000, "n_products": 100, "reference_adaptation": 0.0},
               "n_products": 1, "categories": [0], "horizon": 14, "daily_customers": 200,
               "initial_stock": 100_000, "price_low": 0.6, "price_high": 1.6}


# scarce stock: 8 units for a season whose demand at list price is ~28 units. The optimal policy prices
# by units left and days left; a constant price leaves ~4% on the table (known exactly by backward induction)
SCARCE = {**ONE_PRODUCT, "initial_stock": 8}


def optimal_multiplier(env) -> float:
    """The profit-maximising price of the single product, from the true utilities of a large sample of
    visitors (no stock limit, fixed reference price: the optimum is one static price)."""
    e = env.unwrapped
    users, _ = e.visitor_sample(20_000, seed=1)
    state = e.market.initial_state()
    grid = np.arange(0.6, 1.6001, 0.01)
    item, cost, lp = e.products[0], e.market.catalog.unit_cost[e.products[0]], e.list_price[0]
    profit = []
    for m in grid:
        u = e.market.utility(users, np.full(len(users), item), np.full(len(users), lp * m), np.zeros(len(users)),
                             state)
        p = mnl_from_utility(u[:, None])[:, 0]
        profit.append(p.mean() * (lp * m - cost))
    return float(grid[int(np.argmax(profit))])


@pytest.mark.slow
def test_ppo_gets_within_5_percent_of_the_known_optimum(tmp_path):
    env = gym.make("promogym/DynamicPricing-v1", config=ONE_PRODUCT)
    m_star = optimal_multiplier(env)
    assert 0.6 < m_star < 1.6  # an interior optimum
    spec = TrainSpec("promogym/DynamicPricing-v1", "ppo", seed=0, timesteps=30_000, env_config=ONE_PRODUCT,
                     eval_freq=5000, hyperparams={"n_steps": 512, "batch_size": 128})
    train(spec, tmp_path / "ppo")
    seeds = range(500, 540)
    learned = episode_table(env, LearnedPolicy(tmp_path / "ppo", env), seeds)["return"].mean()
    optimum = episode_table(env, StaticPrice(env, m_star), seeds)["return"].mean()
    assert learned >= 0.95 * optimum, (learned, optimum, m_star)


@pytest.mark.slow
def test_ppo_beats_the_best_static_price_when_stock_is_scarce(tmp_path):
    env = gym.make("promogym/DynamicPricing-v1", config=SCARCE)
    dp = StockDPOracle(env)
    statics = dp.static_values()
    assert dp.value > 1.02 * statics.max()  # dynamics matter here
    spec = TrainSpec("promogym/DynamicPricing-v1", "ppo", seed=0, timesteps=60_000, env_config=SCARCE,
                     eval_freq=5000, eval_episodes=20,
                     hyperparams={"n_steps": 1024, "batch_size": 128, "learning_rate": 3e-4, "gamma": 1.0})
    train(spec, tmp_path / "ppo")
    seeds = range(500, 800)  # common random numbers for the three policies
    learned = episode_table(env, LearnedPolicy(tmp_path / "ppo", env), seeds)["return"].mean()
    best_static = StaticPrice(env, dp.prices[int(np.argmax(statics))] / env.unwrapped.list_price[0])
    static = episode_table(env, best_static, seeds)["return"].mean()
    optimum = episode_table(env, dp, seeds)["return"].mean()
    assert learned > static, (learned, static, optimum)
    assert learned >= 0.95 * optimum, (learned, static, optimum)


@pytest.mark.slow
def test_maskable_ppo_never_overspends(tmp_path):
    """A budget of 40 binds over these 20 campaigns (the top coupon for everyone would spend more): the learned
    policy asks only for levels its mask allows, is given exactly what the budget can pay of what it asked for,
    and never overspends; a rule asking for the top coupon for everyone is refused, and the refusals counted."""
    cfg = {"market": {"n_customers": 2000, "n_products": 100}, "cohort_size": 16, "horizon": 30, "budget": 40.0}
    spec = TrainSpec("promogym/CouponAllocation-v1", "maskable_ppo", seed=0, timesteps=8_000, env_config=cfg,
                     eval_freq=4000, hyperparams={"n_steps": 256, "batch_size": 64})
    train(spec, tmp_path / "mppo")
    env = gym.make("promogym/CouponAllocation-v1", config=cfg)
    seeds = range(20)
    assert unconstrained_spend("promogym/CouponAllocation-v1", cfg, seeds) > 40.0
    generous = play_within_budget(env, MostGenerous(env), seeds)
    assert generous.clipped > 0 and max(generous.spend) <= 40.0 + 1e-9
    learned = play_within_budget(env, LearnedPolicy(tmp_path / "mppo", env), seeds)
    assert learned.masked_requests == 0 and learned.given + learned.clipped == learned.requested
    assert max(learned.spend) <= 40.0 + 1e-9


SEASON = {"market": {"n_customers": 2000, "n_products": 100}, "n_products": 2, "categories": [0], "horizon": 14,
          "daily_customers": 120, "initial_stock": 25, "phase_days": [4, 3, 4, 3]}


@pytest.mark.slow
def test_ppo_beats_the_best_constant_price_on_the_seasonal_env(tmp_path):
    """DynamicPricing-v2 on a small season: the calendar, the hit-or-flop demand level and scarce stock give a
    policy that reads the sales something a constant price cannot do."""
    from promogym.agents.baselines import search_static_prices

    env_id = "promogym/DynamicPricing-v2"
    make = lambda: gym.make(env_id, config=SEASON)  # noqa: E731
    best, _ = search_static_prices(make, seeds=range(20))
    spec = TrainSpec(env_id, "ppo", seed=0, timesteps=60_000, env_config=SEASON, eval_freq=5000, eval_episodes=20,
                     hyperparams={"n_steps": 1024, "batch_size": 128, "learning_rate": 3e-4})
    train(spec, tmp_path / "ppo")
    env = make()
    seeds = range(500, 700)  # common random numbers
    learned = episode_table(env, LearnedPolicy(tmp_path / "ppo", env), seeds)["return"].to_numpy()
    static = episode_table(env, StaticPrice(env, best), seeds)["return"].to_numpy()
    diff = learned - static
    assert diff.mean() - 2 * diff.std(ddof=1) / np.sqrt(len(diff)) > 0, (learned.mean(), static.mean())


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="not reached yet: at 60k steps the per-customer MaskablePPO scores 1,122 per "
                   "campaign against 1,168 for a 5% coupon for everyone (paired -46, 100 common episodes); the full "
                   "CouponAllocation-v2 report shows the same gap. Strict: a pass fails the run, so it is noticed")
def test_per_customer_maskable_ppo_beats_every_uniform_coupon_rule_under_a_binding_budget(tmp_path):
    """CouponAllocation-v2 on a small campaign: the per-customer policy learns whom to give the scarce budget to
    and beats the best coupon-for-everyone rule on common episodes."""
    from promogym.agents.baselines import UniformCoupon

    env_id = "promogym/CouponAllocation-v2"
    cfg = {"market": {"n_customers": 2000, "n_products": 100}, "cohort_size": 16, "horizon": 48,
           "cohorts_per_day": 4, "budget": 40.0}
    spec = TrainSpec(env_id, "maskable_ppo", seed=0, timesteps=60_000, env_config=cfg, eval_freq=10_000,
                     eval_episodes=10)
    train(spec, tmp_path / "mppo")
    env = gym.make(env_id, config=cfg)
    seeds = range(500, 600)
    learned = episode_table(env, LearnedPolicy(tmp_path / "mppo", env), seeds)["return"].to_numpy()
    rules = {k: episode_table(env, UniformCoupon(env, k), seeds)["return"].to_numpy() for k in range(4)}
    best = max(rules, key=lambda k: rules[k].mean())
    diff = learned - rules[best]
    assert diff.mean() - 2 * diff.std(ddof=1) / np.sqrt(len(diff)) > 0, (learned.mean(), best, rules[best].mean())
