"""Baseline policies: SB3's predict() signature, the actions they mean, and the static-price search."""

import gymnasium as gym
import numpy as np
import pytest

from promogym import envs  # noqa: F401  (registers the ids)
from promogym.agents.base import Policy, episode_table, run_episode
from promogym.agents.baselines import (
    CostPlus,
    ListPrice,
    Markdown,
    RandomPolicy,
    StaticPrice,
    ThompsonPricing,
    UniformCoupon,
    UniformDiscount,
    search_static_prices,
)

SMALL = {"market": {"n_customers": 800, "n_products": 100}, "horizon": 12, "daily_customers": 120,
         "initial_stock": 25}
PRICING = [("promogym/DynamicPricing-v1", SMALL), ("promogym/PricePromo-v1", SMALL)]
POLICIES = [ListPrice, UniformDiscount, CostPlus, Markdown, ThompsonPricing, RandomPolicy]


@pytest.mark.parametrize(("env_id", "cfg"), PRICING)
@pytest.mark.parametrize("cls", POLICIES)
def test_pricing_baselines_run_with_the_sb3_signature(env_id, cfg, cls):
    env = gym.make(env_id, config=cfg)
    policy = cls(env)
    assert isinstance(policy, Policy)
    obs, _ = env.reset(seed=0)
    action, state = policy.predict(obs, state=None, episode_start=np.array([True]), deterministic=True)
    assert env.action_space.contains(action) and state is None
    row = run_episode(env, policy, seed=1)
    assert row["steps"] >= 1 and np.isfinite(row["return"])
    if env_id.endswith("PricePromo-v1") and cls is not RandomPolicy:
        assert row["coupon_spend"] == 0  # pricing baselines give no coupons


def test_price_baselines_set_the_prices_they_promise():
    env = gym.make("promogym/DynamicPricing-v1", config=SMALL)
    obs, _ = env.reset(seed=0)
    lp = env.unwrapped.list_price
    for policy, expected in [(ListPrice(env), lp), (UniformDiscount(env, 0.2), lp * 0.8),
                             (StaticPrice(env, 1.3), lp * 1.3)]:
        info = env.step(policy.predict(obs)[0])[4]
        np.testing.assert_allclose(info["prices"], np.round(expected, 2), atol=0.011)
    cost = env.unwrapped.market.catalog.unit_cost[env.unwrapped.products]
    info = env.step(CostPlus(env, 1.0).predict(obs)[0])[4]
    band = np.clip(2 * cost, 0.6 * lp, 1.4 * lp)
    np.testing.assert_allclose(info["prices"], np.round(band, 2), atol=0.011)


def test_markdown_cuts_prices_late_when_stock_is_high():
    env = gym.make("promogym/DynamicPricing-v1", config={**SMALL, "daily_customers": 5, "initial_stock": 200})
    policy = Markdown(env, after=0.4, step=0.1, floor=0.6)
    obs, _ = env.reset(seed=0)
    prices = []
    for _ in range(12):
        obs, _, term, trunc, info = env.step(policy.predict(obs)[0])
        prices.append(info["prices"] / env.unwrapped.list_price)
        if term or trunc:
            break
    prices = np.array(prices)
    assert np.allclose(prices[:4], 1.0, atol=0.01)  # the first 40% of the season at list price
    assert np.allclose(prices[-1], 0.6, atol=0.01)  # unsold stock: marked down to the floor


def test_thompson_prefers_the_profitable_arm_within_an_episode():
    # one product: no substitute takes the demand a lower price would steal, so the arm's own profit is the
    # env's (with several products viewed together, a product's own profit can favour the lower price)
    env = gym.make("promogym/DynamicPricing-v1", config={**SMALL, "horizon": 60, "initial_stock": 10_000,
                                                         "n_products": 1, "categories": [0]})
    policy = ThompsonPricing(env, ladder=(0.6, 1.4), seed=0)
    obs, _ = env.reset(seed=0)
    arms = []
    for _ in range(60):
        obs, *_ = env.step(policy.predict(obs)[0])
        arms.append(policy.last_arm.copy())
    late = np.array(arms[-20:])
    assert late.mean() > 0.6  # mostly the higher price, which earns more here


def test_static_price_search_and_common_random_numbers():
    make = lambda: gym.make("promogym/DynamicPricing-v1", config=SMALL)  # noqa: E731
    best, score = search_static_prices(make, seeds=range(3), grid=(0.8, 1.0, 1.2), rounds=1)
    env = make()
    at_list = episode_table(env, ListPrice(env), range(3))["return"].mean()
    assert score >= at_list - 1e-9
    again = episode_table(env, StaticPrice(env, best), range(3))
    assert again["return"].mean() == pytest.approx(score)
    assert list(again.columns[:3]) == ["policy", "seed", "return"]


def test_coupon_baselines():
    env = gym.make("promogym/CouponAllocation-v1",
                   config={"market": SMALL["market"], "cohort_size": 16, "horizon": 8, "budget": 50.0})
    none = run_episode(env, UniformCoupon(env, 0), seed=0)
    some = run_episode(env, UniformCoupon(env, 3), seed=0)
    assert none["coupon_spend"] == 0 and 0 < some["coupon_spend"] <= 50.0
    assert run_episode(env, RandomPolicy(env), seed=0)["steps"] >= 1
