"""DynamicPricing-v2 (the seasonal calendar, hit-or-flop demand, salvage) and CouponAllocation-v2 (a budget that
binds, weekday traffic, a campaign that outlives its budget)."""

import gymnasium as gym
import numpy as np
import pytest

import promogym.envs  # noqa: F401
from promogym.agents.base import episode_table
from promogym.agents.baselines import StaticPrice
from promogym.agents.coupons import CouponOracle, MyopicCoupons
from promogym.agents.train import ExpectedReward
from promogym.envs.market.customers import PRICE_SENS
from promogym.envs.pricing import capped_poisson_mean

SMALL = {"market": {"n_customers": 2000}}


def _season(**kw):
    cfg = {**SMALL, "n_products": 4, "daily_customers": 150, **kw}
    return gym.make("promogym/DynamicPricing-v2", config=cfg).unwrapped


def _mean_eta(env, users):
    cus = env.market.customers
    return float((PRICE_SENS[cus.ctype] * (1 + cus.price_dev))[users].mean())


def test_calendar_defaults_and_observation():
    env = _season()
    assert env.has_calendar and list(env.phase_of_day[[0, 7, 14, 21, 27]]) == [0, 1, 2, 3, 3]
    obs, _ = env.reset(seed=0)
    cal = env.decode_observation(obs)["calendar"]
    assert cal[0] == pytest.approx(0.8 - 1.0) and cal[1] == pytest.approx(0.5)
    assert obs.shape == env.observation_space.shape == (12 + 4 * 4,)


def test_shopper_tilt_changes_who_visits_and_how_many():
    """The holiday phase (tilt +1, 2x traffic) brings more and less price-sensitive visitors than the clearance
    phase (tilt -1, 0.8x): a thinning of the visit process that visit_scale predicts."""
    env = _season(demand_level_sd=0.0)
    env.reset(seed=1)
    by_phase = {}
    for day in (15, 22):  # holiday, clearance
        env.state.day = day
        users = np.concatenate([env._visits()[0] for _ in range(40)])
        by_phase[day] = (len(users) / 40, _mean_eta(env, users))
        sample, _ = env.visitor_sample(20_000, seed=3)
        predicted = env.config.daily_customers * env.visit_scale(sample, day).mean()
        assert by_phase[day][0] == pytest.approx(predicted, rel=0.12)
    assert by_phase[15][0] > 2.0 * by_phase[22][0]
    assert by_phase[15][1] < by_phase[22][1] - 0.15


def test_demand_level_is_drawn_per_season_and_scales_traffic():
    env = _season()
    levels = []
    for s in range(30):
        env.reset(seed=s)
        levels.append(env.demand_level)
    assert np.std(np.log(levels)) == pytest.approx(1.0, rel=0.35)
    flat = _season(demand_level_sd=0.0)
    flat.reset(seed=0)
    assert flat.demand_level == 1.0


def test_salvage_is_paid_on_the_stock_left_at_the_end():
    env = _season(horizon=3, initial_stock=500, demand_level_sd=0.0)
    env.reset(seed=0)
    for _ in range(3):
        _, reward, term, _, info = env.step(np.ones(4, np.float32))  # the top price: little sells
    assert term
    left = env.state.stock[env.products]
    expected = 0.5 * float((env.market.catalog.unit_cost[env.products] * left).sum())
    assert info["components"]["salvage"] == pytest.approx(expected) and expected > 0
    day_profit = info["components"]["revenue"] - info["components"]["cost"]
    assert reward == pytest.approx(day_profit + expected)


def test_v1_is_unchanged_by_the_calendar_code():
    """DynamicPricing-v1 has no calendar, no demand level and no salvage: its returns are those of a
    constant-traffic season (same seed, same returns as v2 with the calendar, level and salvage switched off)."""
    v1 = gym.make("promogym/DynamicPricing-v1", config={**SMALL, "n_products": 4, "horizon": 6,
                                                         "daily_customers": 150, "price_high": 1.8,
                                                         "initial_stock": 45}).unwrapped
    v2 = _season(horizon=6, phase_days=[], phase_traffic=[], phase_tilt=[], salvage_share=0.0, demand_level_sd=0.0,
                 initial_stock=45)
    a = episode_table(v1, StaticPrice(v1, 1.1), range(3))["return"].to_numpy()
    b = episode_table(v2, StaticPrice(v2, 1.1), range(3))["return"].to_numpy()
    np.testing.assert_allclose(a, b)


def test_calendar_config_errors_name_the_keys():
    with pytest.raises(ValueError, match="phase_days, phase_traffic and phase_tilt"):
        _season(phase_days=[7, 7], phase_traffic=[1.0], phase_tilt=[0.0, 0.0])


def _coupons(**kw):
    cfg = {**SMALL, "cohort_size": 16, **kw}
    return gym.make("promogym/CouponAllocation-v2", config=cfg).unwrapped


def test_weekday_traffic_serves_more_cohorts_at_weekends():
    env = _coupons(horizon=80, cohorts_per_day=8)
    env.reset(seed=0)
    assert env.cohorts_on(5) > env.cohorts_on(2)  # Saturday over Wednesday
    days = []
    for _ in range(80):
        _, _, _, _, info = env.step(np.zeros(16, np.int64))
        days.append(info["day"])
    counts = np.bincount(days)
    assert counts[0] == env.cohorts_on(0) and counts[5] == env.cohorts_on(5)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (13 * 16 + 9,) and obs[-7:].argmax() == 0  # the weekday one-hot: Monday


def test_campaign_outlives_its_budget_and_the_paced_oracle_beats_myopic():
    """A budget that binds: the myopic rule spends it early and the campaign goes on without coupons (the episode
    does not end); pacing wins."""
    env = _coupons(horizon=48, cohorts_per_day=4, budget=40.0)
    myopic = episode_table(env, MyopicCoupons(env), range(6))
    oracle = episode_table(env, CouponOracle(env), range(6))
    assert (myopic["steps"] == 48).all()
    assert oracle["return"].mean() > myopic["return"].mean()


def test_capped_poisson_mean_matches_simulation_and_its_limits():
    lam = np.array([0.0, 0.5, 3.0, 10.0, 30.0, 2.0, 4.0])
    cap = np.array([5, 0, 2, 10, 1000, 1, 4])
    got = capped_poisson_mean(lam, cap)
    draws = np.minimum(np.random.default_rng(0).poisson(lam, (400_000, len(lam))), cap).mean(axis=0)
    np.testing.assert_allclose(got, draws, atol=0.02)
    assert got[0] == 0.0 and got[1] == 0.0 and got[4] == pytest.approx(30.0)  # no buyers; no stock; out of reach
    assert got[5] == pytest.approx(1 - np.exp(-2.0))  # P(at least one buyer)


def test_expected_training_reward_counts_only_what_the_stock_can_serve():
    """Priced low with little stock, the uncapped expectation runs far above what is sold; the served expectation
    tracks the realized profit over many seasons (the Poisson cap, not the uncapped sum), and the training wrapper
    rewards it."""
    sums = np.zeros(3)
    for seed in range(12):
        env = _season(initial_stock=6, demand_level_sd=0.0, horizon=10)
        env.reset(seed=seed)
        for _ in range(10):
            _, _, term, _, info = env.step(np.full(4, -0.8, np.float32))
            c = info["components"]
            sums += (info["expected_profit"], info["expected_profit_served"], c["revenue"] - c["cost"])
            if term:
                break
    uncapped, served, realized = sums
    assert uncapped > 1.2 * realized
    assert served == pytest.approx(realized, rel=0.05)
    wrapped = ExpectedReward(_season(initial_stock=6, horizon=10))
    wrapped.reset(seed=0)
    _, reward, _, _, info = wrapped.step(np.full(4, -0.8, np.float32))
    assert reward == pytest.approx(info["expected_profit_served"])
