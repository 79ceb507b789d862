"""The Gymnasium environments: API contract, determinism, invariants under random actions, configs."""

import pickle
import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from promogym import envs
from promogym.envs.coupons import CouponAllocationEnv
from promogym.envs.pricing import DynamicPricingEnv, PricePromoEnv

IDS = list(envs.MARKET_ENV_IDS)
SMALL = {"market": {"n_customers": 800, "n_products": 100}}
FAST = {
    "promogym/DynamicPricing-v1": {**SMALL, "horizon": 10, "daily_customers": 80, "initial_stock": 15},
    "promogym/CouponAllocation-v1": {**SMALL, "horizon": 12, "cohort_size": 16, "budget": 60.0, "cohorts_per_day": 3},
    "promogym/PricePromo-v1": {**SMALL, "horizon": 10, "daily_customers": 80, "initial_stock": 15, "budget": 80.0},
    "promogym/DynamicPricing-v2": {**SMALL, "horizon": 10, "daily_customers": 80, "initial_stock": 15,
                                   "phase_days": [3, 3, 2, 2]},
    "promogym/CouponAllocation-v2": {**SMALL, "horizon": 12, "cohort_size": 16, "budget": 20.0, "cohorts_per_day": 3},
    "promogym/PromoRecommendation-v0": {**SMALL, "horizon": 4, "visitors": 6, "steps_per_day": 3, "initial_stock": 3,
                                        "new_products_day": 2},
}


def rollout(env, seed, actions=None, n=1000):
    obs, _ = env.reset(seed=seed)
    env.action_space.seed(seed)
    traj = [obs]
    for k in range(n):
        a = actions[k % len(actions)] if actions is not None else env.action_space.sample()
        obs, r, term, trunc, info = env.step(a)
        traj.append((obs, r, term, trunc, info["components"]))
        if term or trunc:
            break
    return traj


@pytest.mark.parametrize("env_id", IDS)
def test_registered_and_pass_the_env_checker(env_id):
    assert env_id in gym.registry
    import importlib

    importlib.reload(envs)  # registration is idempotent
    env = gym.make(env_id, config=FAST[env_id])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(env.unwrapped)


@pytest.mark.parametrize("env_id", IDS)
def test_same_seed_same_trajectory(env_id):
    a = rollout(gym.make(env_id, config=FAST[env_id]), seed=3)
    b = rollout(gym.make(env_id, config=FAST[env_id]), seed=3)
    c = rollout(gym.make(env_id, config=FAST[env_id]), seed=4)
    assert len(a) == len(b)
    np.testing.assert_array_equal(a[0], b[0])
    for x, y in zip(a[1:], b[1:], strict=True):
        np.testing.assert_array_equal(x[0], y[0])
        assert x[1:] == y[1:]
    assert any(not np.array_equal(x[0], y[0]) for x, y in zip(a[1:], c[1:], strict=False))


@pytest.mark.parametrize("env_id", IDS)
def test_envs_pickle_mid_episode(env_id):
    env = gym.make(env_id, config=FAST[env_id]).unwrapped
    env.reset(seed=1)
    env.step(env.action_space.sample())
    clone = pickle.loads(pickle.dumps(env))
    action = env.action_space.sample()
    o1, r1, *_ = env.step(action)
    o2, r2, *_ = clone.step(action)
    np.testing.assert_array_equal(o1, o2)
    assert r1 == r2


@pytest.mark.parametrize("env_id", IDS)
def test_sync_and_async_vector_envs_agree(env_id):
    kw = {"config": FAST[env_id]}
    sync = gym.make_vec(env_id, num_envs=2, vectorization_mode="sync", **kw)
    asyn = gym.make_vec(env_id, num_envs=2, vectorization_mode="async", **kw)
    try:
        o1, _ = sync.reset(seed=7)
        o2, _ = asyn.reset(seed=7)
        np.testing.assert_array_equal(o1, o2)
        sync.action_space.seed(0)
        for _ in range(5):
            a = sync.action_space.sample()
            s = sync.step(a)
            t = asyn.step(a)
            np.testing.assert_array_equal(s[0], t[0])
            np.testing.assert_array_equal(s[1], t[1])
    finally:
        sync.close()
        asyn.close()


def _check_invariants(env, actions):
    obs, _ = env.reset(seed=0)
    budget = getattr(env.config, "budget", None)
    spent = 0.0
    for a in actions:
        if isinstance(env, CouponAllocationEnv):
            masks = env.action_masks().reshape(env.config.cohort_size, -1)
            affordable = env.worst_case_cost() <= env.budget_left + 1e-9
            np.testing.assert_array_equal(masks, affordable)
        obs, r, term, trunc, info = env.step(a)
        c = info["components"]
        assert (env.state.stock >= 0).all()
        expected = c["revenue"] - c["cost"] - c["coupon_spend"]
        assert r == pytest.approx(expected, abs=1e-6)
        spent += c["coupon_spend"]
        if budget is not None:
            assert spent <= budget + 1e-6 and c["budget_left"] >= 0
            assert c["budget_left"] == pytest.approx(budget - spent, abs=1e-6)
        assert env.observation_space.contains(obs)
        if term or trunc:
            break


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.lists(st.floats(-1, 1), min_size=13, max_size=13), min_size=1, max_size=12))
def test_pricing_invariants_under_random_actions(actions):
    for cls, cfg in [(DynamicPricingEnv, FAST["promogym/DynamicPricing-v1"]),
                     (PricePromoEnv, FAST["promogym/PricePromo-v1"])]:
        env = cls(cfg)
        n = env.action_space.shape[0]
        _check_invariants(env, [np.asarray(a[:n], dtype=np.float32) for a in actions])


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.lists(st.integers(0, 3), min_size=16, max_size=16), min_size=1, max_size=14))
def test_coupon_invariants_under_random_actions(actions):
    env = CouponAllocationEnv(FAST["promogym/CouponAllocation-v1"])
    _check_invariants(env, [np.asarray(a) for a in actions])


def test_greedy_coupons_never_overspend_and_terminate_on_budget():
    env = CouponAllocationEnv({**FAST["promogym/CouponAllocation-v1"], "budget": 30.0, "horizon": 200})
    env.reset(seed=0)
    spent, clipped = 0.0, 0
    for _ in range(200):
        _, _, term, trunc, info = env.step(np.full(16, 3))
        spent += info["components"]["coupon_spend"]
        clipped += info["coupons_clipped"]
        if term or trunc:
            break
    assert spent <= 30.0 + 1e-9 and clipped > 0


def test_coupons_sell_to_persuadable_customers_and_fatigue():
    env = CouponAllocationEnv({**SMALL, "cohort_size": 256, "budget": 1e9, "horizon": 40, "cohorts_per_day": 1})
    env.reset(seed=0)
    info0 = env.step(np.zeros(256, int))[4]
    env.reset(seed=0)
    info1 = env.step(np.full(256, 3))[4]
    assert info1["components"]["units"] >= info0["components"]["units"]
    assert info1["components"]["coupon_spend"] > 0 and info0["components"]["coupon_spend"] == 0


def test_dynamics_reward_components_and_world_expectation():
    env = DynamicPricingEnv(FAST["promogym/DynamicPricing-v1"])
    env.reset(seed=0)
    _, _, _, _, info = env.step(np.zeros(10, np.float32))
    assert info["expected_profit"] == info["expected_profit_world"]  # world backend
    np.testing.assert_allclose(info["prices"], np.round(env.list_price, 2))
    high = env.step(np.ones(10, np.float32))[4]
    np.testing.assert_allclose(high["prices"], np.round(env.list_price * 1.4, 2))
    np.testing.assert_allclose(env.action_from_prices(high["prices"]), 1.0, atol=1e-3)


@pytest.mark.parametrize(("env_id", "bad", "needle"), [
    ("promogym/DynamicPricing-v1", {"horizn": 5}, "horizn"),
    ("promogym/DynamicPricing-v1", {"horizon": 0}, "DynamicPricingConfig.horizon must be"),
    ("promogym/DynamicPricing-v1", {"price_low": 1.5}, "price_low"),
    ("promogym/DynamicPricing-v1", {"n_products": 50}, "n_products"),
    ("promogym/DynamicPricing-v1", {"response": "forest:x"}, "response"),
    ("promogym/DynamicPricing-v1", {"market": {"n_custmers": 5}}, "n_custmers"),
    ("promogym/CouponAllocation-v1", {"coupon_levels": [0.1, 0.2]}, "coupon_levels"),
    ("promogym/CouponAllocation-v1", {"budget": -1}, "budget"),
    ("promogym/CouponAllocation-v1", {"response": "bert:/nonexistent"}, "checkpoint folder not found"),
    ("promogym/PricePromo-v1", {"reward": "margin"}, "reward"),
])
def test_bad_config_names_the_key(env_id, bad, needle):
    with pytest.raises(ValueError, match=needle):
        gym.make(env_id, config=bad)


@pytest.mark.parametrize("env_id", IDS)
def test_render_modes(env_id):
    env = gym.make(env_id, config=FAST[env_id], render_mode="ansi")
    env.reset(seed=0)
    env.step(env.action_space.sample())
    assert isinstance(env.render(), str)
    env = gym.make(env_id, config=FAST[env_id], render_mode="rgb_array")
    env.reset(seed=0)
    env.step(env.action_space.sample())
    img = env.render()
    assert img.ndim == 3 and img.shape[2] == 3 and img.dtype == np.uint8


BERT_CFG = {
    "promogym/DynamicPricing-v1": {"n_products": 4, "horizon": 5, "daily_customers": 60, "initial_stock": 10},
    "promogym/CouponAllocation-v1": {"horizon": 6, "cohort_size": 16, "budget": 40.0, "cohorts_per_day": 3},
    "promogym/PricePromo-v1": {"n_products": 4, "horizon": 5, "daily_customers": 60, "initial_stock": 10,
                               "budget": 40.0},
    "promogym/DynamicPricing-v2": {"n_products": 4, "horizon": 5, "daily_customers": 60, "initial_stock": 10,
                                   "phase_days": [2, 1, 1, 1]},
    "promogym/CouponAllocation-v2": {"horizon": 6, "cohort_size": 16, "budget": 20.0, "cohorts_per_day": 3},
    "promogym/PromoRecommendation-v0": {"horizon": 3, "visitors": 8, "steps_per_day": 2},
}


@pytest.mark.parametrize("env_id", IDS)
def test_bert_backend_passes_the_checker_and_reports_world_truth(env_id, tiny_model):
    from conftest import SMALL_WORLD

    _, ckpt = tiny_model
    cfg = {**BERT_CFG[env_id], "market": SMALL_WORLD, "response": f"bert:{ckpt}"}
    env = gym.make(env_id, config=cfg)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(env.unwrapped)
    assert env.unwrapped.backend.name.startswith("bert:")
    obs, _ = env.reset(seed=0)
    gaps = []
    for _ in range(4):
        _, r, term, trunc, info = env.step(env.action_space.sample())
        gaps.append(info["expected_profit"] - info["expected_profit_world"])
        c = info["components"]
        assert r == pytest.approx(c["revenue"] - c["cost"] - c["coupon_spend"])
        if term or trunc:
            break
    assert np.isfinite(gaps).all() and any(abs(g) > 1e-9 for g in gaps)  # the simulator's bias is visible
    # a ConversionModel object works as the backend too
    obj = gym.make(env_id, config={**cfg, "response": tiny_model[0]})
    o1, _ = obj.reset(seed=0)
    np.testing.assert_array_equal(o1, obs)
