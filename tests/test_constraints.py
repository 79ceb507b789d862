"""Business constraints: every price set obeys them whatever the policy asks, coupons respect the cap, planners
plan within them, and a bad constraint is refused naming the key."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import promogym.envs  # noqa: F401  (registers the envs)
from promogym.agents.baselines import StaticPrice
from promogym.agents.coupons import CouponOracle, MyopicCoupons
from promogym.agents.oracle import MPCOracle, MyopicGreedy
from promogym.envs.constraints import BusinessConstraints, PriceRules, capped

SMALL = {"n_products": 4, "horizon": 21, "daily_customers": 120.0}
ALL = {"max_daily_change": 0.1, "max_weekly_changes": 2, "margin_floor": 0.35, "price_endings": [0.99, 0.49],
       "no_discount": [1]}


def _play(env: gym.Env, actions) -> list[dict]:
    env.reset(seed=3)
    infos = []
    for a in actions:
        *_, term, trunc, info = env.step(a)
        infos.append(info)
        if term or trunc:
            break
    return infos


def _check_prices(env: gym.Env, infos: list[dict], c: dict) -> None:
    u = env.unwrapped
    cost = u.market.catalog.unit_cost[u.products]
    prev = u.list_price.copy()
    changed = []
    for info in infos:
        p = info["prices"]
        assert (p >= cost / (1 - c["margin_floor"]) - 0.005).all(), "margin floor broken"
        assert (p[c["no_discount"]] >= u.list_price[c["no_discount"]] - 0.005).all(), "no-discount product discounted"
        ch = np.abs(p - prev) > 0.005
        assert (np.abs(p / prev - 1) <= c["max_daily_change"] + 0.01 / prev.min() + 1e-9)[ch].all(), "daily change"
        cents = np.round(p * 100) % 100
        assert np.isin(cents[ch], [99, 49]).all(), f"a changed price has another ending: {p[ch]}"
        changed.append(ch)
        window = np.array(changed[-7:])
        assert (window.sum(axis=0) <= c["max_weekly_changes"]).all(), "too many changes in 7 days"
        prev = p


def test_prices_obey_every_constraint_whatever_the_policy_asks() -> None:
    env = gym.make("promogym/DynamicPricing-v1", config={**SMALL, "constraints": ALL})
    rng = np.random.default_rng(0)
    # a policy that tries to break every rule: jumps between the band's ends and random prices every day
    actions = [np.where(rng.random(4) < 0.5, -1.0, 1.0) if t % 2 else rng.uniform(-1, 1, 4) for t in range(21)]
    infos = _play(env, actions)
    assert len(infos) == 21
    _check_prices(env, infos, ALL)
    adjusted = sum(i["constraint_adjusted"] for i in infos)
    assert adjusted > 21, "the projection was never counted: the policy asked for infeasible prices every day"
    requested = np.array([i["prices_requested"] for i in infos])
    assert (np.abs(requested - np.array([i["prices"] for i in infos])) > 0.005).sum() == adjusted


def test_price_promo_prices_and_coupon_cap() -> None:
    c = {**ALL, "coupon_cap": 1}
    env = gym.make("promogym/PricePromo-v1", config={**SMALL, "budget": 1e6, "constraints": c})
    infos = _play(env, [np.ones(7, np.float32)] * 21)  # top price asked, the most generous coupon for everybody
    _check_prices(env, infos, ALL)
    u = env.unwrapped
    assert u.coupons_received.max() == 1
    assert sum(i["coupons_capped"] for i in infos) > 0
    assert sum(i["coupons_given"] for i in infos) == u.coupons_received.sum()


def test_loose_constraints_change_nothing() -> None:
    """Constraints that never bind leave the trajectory exactly as without any (same rewards, same prices)."""
    loose = {"max_daily_change": 10.0, "max_weekly_changes": 7, "margin_floor": 0.0}
    rng = np.random.default_rng(1)
    actions = [rng.uniform(-1, 1, 4) for _ in range(10)]
    a = _play(gym.make("promogym/DynamicPricing-v1", config=SMALL), actions)
    b = _play(gym.make("promogym/DynamicPricing-v1", config={**SMALL, "constraints": loose}), actions)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x["prices"], y["prices"])
        assert x["components"] == y["components"]
        assert y["constraint_adjusted"] == 0


def test_projection_is_idempotent_and_stays_in_the_band() -> None:
    rng = np.random.default_rng(2)
    lp = rng.uniform(5, 80, 50).round(2)
    cost = lp * rng.uniform(0.3, 0.7, 50)
    c = BusinessConstraints(max_daily_change=0.05, margin_floor=0.2, price_endings=(0.99, 0.49, 0.95),
                            no_discount=(0, 7))
    rules = PriceRules(c, lp, cost, 0.6, 1.4)
    prev = lp.copy()
    for _ in range(30):
        p = rules.project(lp * rng.uniform(0.3, 2.0, 50), prev)
        np.testing.assert_array_equal(rules.project(p, prev), p)
        assert (p >= rules.floor - 1e-9).all() and (p <= np.maximum(rules.ceiling, rules.floor + 1.0)).all()
        rules.record(p, prev)
        prev = p


def test_coupon_allocation_cap_masks_and_counts() -> None:
    env = gym.make("promogym/CouponAllocation-v1",
                   config={"cohort_size": 32, "horizon": 40, "budget": 1e6, "constraints": {"coupon_cap": 1}})
    env.reset(seed=0)
    u = env.unwrapped
    capped_total = 0
    masked_seen = False
    for _ in range(40):
        mask = u.action_masks().reshape(32, -1)
        allowed = u.coupon_allowed()
        assert (mask[:, 1:].any(axis=1) <= allowed).all()
        masked_seen |= not allowed.all()
        *_, term, _, info = env.step(np.full(32, 3))  # the top level for everybody, capped or not
        capped_total += info["coupons_capped"]
        if term:
            break
    assert masked_seen and capped_total > 0
    assert u.coupons_received.max() == 1


@pytest.mark.parametrize("policy", [MyopicCoupons, CouponOracle])
def test_coupon_rules_never_offer_over_the_cap(policy) -> None:
    env = gym.make("promogym/CouponAllocation-v1",
                   config={"cohort_size": 32, "horizon": 24, "budget": 1e6, "constraints": {"coupon_cap": 1}})
    obs, _ = env.reset(seed=1)
    pol = policy(env)
    given = 0
    for _ in range(24):
        a = pol.predict(obs)[0]
        assert (a[~env.unwrapped.coupon_allowed()] == 0).all()
        obs, _, term, _, info = env.step(a)
        assert info["coupons_capped"] == 0
        given += info["coupons_given"]
        if term:
            break
    assert given > 0


@pytest.mark.parametrize("planner", [MyopicGreedy, MPCOracle])
def test_planners_plan_within_the_constraints(planner) -> None:
    """A planner's action is already feasible: the env never has to move its prices."""
    env = gym.make("promogym/DynamicPricing-v1", config={**SMALL, "horizon": 8, "constraints": ALL})
    obs, _ = env.reset(seed=0)
    pol = planner(env, n_visitors=200)
    infos = []
    for _ in range(8):
        obs, _, term, _, info = env.step(pol.predict(obs)[0])
        infos.append(info)
        assert info["constraint_adjusted"] == 0, (info["prices"], info["prices_requested"])
        if term:
            break
    _check_prices(env, infos, ALL)


def test_static_rule_is_held_within_the_constraints() -> None:
    env = gym.make("promogym/DynamicPricing-v1", config={**SMALL, "horizon": 10, "constraints": ALL})
    obs, _ = env.reset(seed=0)
    pol = StaticPrice(env, 0.6)  # below every margin floor here: the env keeps the floor
    infos = []
    for _ in range(10):
        obs, _, _, _, info = env.step(pol.predict(obs)[0])
        infos.append(info)
    _check_prices(env, infos, ALL)
    assert infos[0]["constraint_adjusted"] > 0


def test_capped_counts_repeat_visits_in_one_batch() -> None:
    received = np.array([0, 1, 0])
    users = np.array([0, 0, 1, 2, 0])
    wanted = np.array([0.1, 0.1, 0.1, 0.0, 0.1])
    np.testing.assert_array_equal(capped(received, users, wanted, 1), [False, True, True, False, True])
    np.testing.assert_array_equal(capped(received, users, wanted, None), [False] * 5)


@pytest.mark.parametrize(("env_id", "constraints", "match"), [
    ("promogym/DynamicPricing-v1", {"coupon_cap": 1}, "coupon_cap constrains coupons"),
    ("promogym/DynamicPricing-v1", {"max_daily_cange": 0.1}, "unknown BusinessConstraints key"),
    ("promogym/DynamicPricing-v1", {"max_daily_change": -0.1}, "max_daily_change must be between"),
    ("promogym/DynamicPricing-v1", {"max_weekly_changes": 1.5}, "max_weekly_changes must be an integer"),
    ("promogym/DynamicPricing-v1", {"no_discount": [99]}, "no_discount names products"),
    ("promogym/DynamicPricing-v1", {"margin_floor": 0.9}, "no feasible price"),
    ("promogym/DynamicPricing-v1", {"price_endings": [0.495]}, "whole cents"),
    ("promogym/DynamicPricing-v1", [0.1], "must be a mapping"),
    ("promogym/CouponAllocation-v1", {"max_daily_change": 0.1}, "this env sets no prices"),
])
def test_bad_constraints_are_refused_naming_the_key(env_id, constraints, match) -> None:
    with pytest.raises(ValueError, match=match):
        gym.make(env_id, config={"constraints": constraints})


def test_a_refused_constraint_names_only_the_keys_that_are_set() -> None:
    with pytest.raises(ValueError) as e:
        gym.make("promogym/CouponAllocation-v1", config={"constraints": {"max_daily_change": 0.1}})
    assert "constraints: max_daily_change constrain prices" in str(e.value)
    assert BusinessConstraints(margin_floor=0.2).active() == {"margin_floor": 0.2}
    assert BusinessConstraints().active() == {}


def test_constrained_env_passes_the_checker() -> None:
    from gymnasium.utils.env_checker import check_env

    check_env(gym.make("promogym/PricePromo-v1", config={**SMALL, "constraints": {**ALL, "coupon_cap": 2}}).unwrapped,
              skip_render_check=True)


def test_episode_tables_count_what_the_env_refused_or_moved() -> None:
    from promogym.agents.base import episode_table
    from promogym.agents.baselines import UniformCoupon

    env = gym.make("promogym/DynamicPricing-v1", config={**SMALL, "horizon": 5, "constraints": ALL})
    df = episode_table(env, StaticPrice(env, 0.6), [0, 1])
    assert (df["prices_adjusted"] > 0).all() and (df["offers_refused"] == 0).all()
    coupons = gym.make("promogym/CouponAllocation-v1", config={"cohort_size": 16, "horizon": 30, "budget": 20.0,
                                                              "constraints": {"coupon_cap": 1}})
    df = episode_table(coupons, UniformCoupon(coupons, 3), [0])
    assert df["offers_refused"].iloc[0] > 0 and df["coupon_spend"].iloc[0] <= 20.0 + 1e-9
    loose = gym.make("promogym/CouponAllocation-v1", config={"cohort_size": 16, "horizon": 30, "budget": 1e6,
                                                             "constraints": {"coupon_cap": 1}})
    df = episode_table(loose, UniformCoupon(loose, 3), [0])
    assert df["coupons_capped"].iloc[0] > 0 and df["offers_refused"].iloc[0] == 0


def test_the_exact_dp_oracle_refuses_constraints_it_does_not_model() -> None:
    from promogym.agents.oracle import StockDPOracle

    env = gym.make("promogym/DynamicPricing-v1", config={"n_products": 1, "categories": [0], "horizon": 5,
                                                         "market": {"reference_adaptation": 0.0},
                                                         "constraints": {"max_daily_change": 0.1}})
    with pytest.raises(ValueError, match="business constraints"):
        StockDPOracle(env, n_visitors=100)
