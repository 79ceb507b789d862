"""Every env rejects a bad action (wrong shape, NaN/inf, out of range) with a one-line ValueError before
anything changes, and plays every valid action (Box: any finite value, clipped) exactly as before."""

import functools
import tempfile
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from promogym import envs
from promogym.envs.pricing import DynamicPricingEnv

SMALL = {"market": {"n_customers": 600, "n_products": 60}}
SEASON = {**SMALL, "n_products": 2, "horizon": 4, "daily_customers": 40, "initial_stock": 30}
CONFIGS = {
    "promogym/DynamicPricing-v1": SEASON,
    "promogym/DynamicPricing-v2": {**SEASON, "phase_days": [1, 1, 1, 1], "daily_customers": 60},
    "promogym/PricePromo-v1": {**SEASON, "budget": 80.0},
    "promogym/CouponAllocation-v1": {**SMALL, "horizon": 12, "cohort_size": 16, "budget": 60.0, "cohorts_per_day": 3},
    "promogym/CouponAllocation-v2": {**SMALL, "horizon": 12, "cohort_size": 16, "budget": 20.0, "cohorts_per_day": 3},
    "promogym/HillstromTargeting-v0": {"batch_size": 8, "horizon": 10, "budget_share": 0.25},
    "promogym/PromoRecommendation-v0": {**SMALL, "visitors": 4, "horizon": 3, "steps_per_day": 2,
                                        "new_products_day": 1, "initial_stock": 5},
}
SHOP = "promogym/ShopPricing-v0"
CONFIGS[SHOP] = {"occasions_per_week": 40, "horizon": 3}  # and a tiny imported shop with its model (config_of)
IDS = list(envs.ENV_IDS)
FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def test_every_env_is_covered():
    assert set(CONFIGS) == set(IDS)


@functools.cache
def config_of(env_id):
    """``CONFIGS[env_id]``; the world-free shop env also gets a simulated shop and the model fitted on it."""
    if env_id != SHOP:
        return CONFIGS[env_id]
    from test_shop_env import build_shop

    folder = tempfile.TemporaryDirectory(prefix="actions-shop-")  # removed when the session ends
    _KEEP.append(folder)
    return {**build_shop(Path(folder.name)), **CONFIGS[SHOP]}


_KEEP: list = []


@functools.cache
def pair(env_id):
    """Two envs of ``env_id``: one is shown bad actions, the other never."""
    return gym.make(env_id, config=config_of(env_id)), gym.make(env_id, config=config_of(env_id))


def is_box(env):
    return isinstance(env.action_space, gym.spaces.Box)


def outcome(result):
    obs, reward, terminated, truncated, info = result
    return obs, reward, terminated, truncated, info["components"]


def assert_same(x, y):
    np.testing.assert_array_equal(x[0], y[0])
    assert x[1:] == y[1:]


@st.composite
def valid_actions(draw, env, wide=True):
    """A valid action of ``env``: Box values (any finite value when ``wide``: the envs clip) or MultiDiscrete
    indices, as float32/float64/int arrays or a list."""
    n = env.action_space.shape[0]
    if is_box(env):
        values = st.floats(-1e6, 1e6) if wide else st.floats(-1, 1)
        a = np.array(draw(st.lists(values, min_size=n, max_size=n)))
        return draw(st.sampled_from([a, a.astype(np.float32), a.tolist()]))
    k = int(env.action_space.nvec[0])
    a = np.array(draw(st.lists(st.integers(0, k - 1), min_size=n, max_size=n)), dtype=np.int64)
    return draw(st.sampled_from([a, a.astype(np.int32), a.astype(np.float64), a.tolist()]))


def positions(n):
    return st.lists(st.integers(0, n - 1), min_size=1, max_size=n, unique=True)


@st.composite
def non_finite_actions(draw, env):
    a = np.array(draw(valid_actions(env)), dtype=np.float64)
    for i in draw(positions(len(a))):
        a[i] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
    return draw(st.sampled_from([a, a.astype(np.float32), a.tolist()]))


@st.composite
def misshapen_actions(draw, env):
    n = env.action_space.shape[0]
    shape = draw(st.one_of(st.just(()), st.integers(0, n - 1).map(lambda k: (k,)),
                           st.integers(n + 1, n + 60).map(lambda k: (k,)),
                           st.sampled_from([(1, n), (n, 1), (2, n), (n, 2)])))
    a = np.zeros(shape, dtype=np.float32 if is_box(env) else np.int64)
    return draw(st.sampled_from([a, a.tolist()])) if a.ndim else draw(st.sampled_from([a, a.item()]))


@st.composite
def out_of_range_actions(draw, env):
    """MultiDiscrete: integers outside [0, nvec) or non-integer floats (in range or not) at random positions."""
    a = np.array(draw(valid_actions(env)), dtype=np.int64)
    k = int(env.action_space.nvec[0])
    bad = st.one_of(st.integers(-(2**40), -1), st.integers(k, 2**40))
    if draw(st.booleans()):
        for i in draw(positions(len(a))):
            a[i] = draw(bad)
        return draw(st.sampled_from([a, a.tolist()]))
    f = a.astype(np.float64)
    for i in draw(positions(len(a))):
        f[i] = draw(st.one_of(bad.map(float), st.floats(-2.0 * k, 2.0 * k).filter(lambda x: x != int(x))))
    return draw(st.sampled_from([f, f.tolist()]))


def check_rejected(env_id, data, bad_actions):
    """A bad action raises a one-line ValueError naming the env, the expected shape and what was given,
    and leaves the env exactly as an env that never saw it (same seed, same next steps)."""
    env, ref = pair(env_id)
    seed = data.draw(st.integers(0, 2**16), label="seed")
    env.reset(seed=seed)
    ref.reset(seed=seed)
    env.action_space.seed(seed)
    if data.draw(st.booleans(), label="mid-episode"):
        first = env.action_space.sample()
        assert_same(outcome(env.step(first)), outcome(ref.step(first)))
    bad = data.draw(bad_actions(env.unwrapped), label="bad action")
    with pytest.raises(ValueError) as err:
        env.step(bad)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(f"{env_id}: action must be")
    assert str(env.action_space.shape) in msg and "got " in msg
    for _ in range(2):
        a = env.action_space.sample()
        assert_same(outcome(env.step(a)), outcome(ref.step(a)))


@pytest.mark.parametrize("env_id", IDS)
@FAST
@given(data=st.data())
def test_non_finite_actions_are_rejected(env_id, data):
    check_rejected(env_id, data, non_finite_actions)


@pytest.mark.parametrize("env_id", IDS)
@FAST
@given(data=st.data())
def test_misshapen_actions_are_rejected(env_id, data):
    check_rejected(env_id, data, misshapen_actions)


@pytest.mark.parametrize("env_id", ["promogym/CouponAllocation-v1", "promogym/HillstromTargeting-v0"])
@FAST
@given(data=st.data())
def test_out_of_range_indices_are_rejected(env_id, data):
    check_rejected(env_id, data, out_of_range_actions)


@pytest.mark.parametrize("env_id", IDS)
@FAST
@given(data=st.data())
def test_valid_actions_play_as_documented(env_id, data):
    """Valid actions never raise; a Box action plays exactly as its clip into [-1, 1], a MultiDiscrete one
    as its int64 array, whatever the array type."""
    env, ref = pair(env_id)
    seed = data.draw(st.integers(0, 2**16), label="seed")
    env.reset(seed=seed)
    ref.reset(seed=seed)
    for _ in range(2):
        a = data.draw(valid_actions(env.unwrapped), label="action")
        canonical = np.clip(np.asarray(a, dtype=np.float64), -1, 1) if is_box(env) else np.asarray(a, np.int64)
        assert_same(outcome(env.step(a)), outcome(ref.step(canonical)))


def test_messages_and_corner_cases():
    env = DynamicPricingEnv(SEASON)  # not made by gym.make: still named by its id
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"^promogym/DynamicPricing-v1: action must be a finite array of shape "
                                         r"\(2,\) \(values outside \[-1.0, 1.0\] are clipped\), got nan at index 1"):
        env.step([0.5, np.nan])
    with pytest.raises(ValueError, match=r"got shape \(1,\)$"):
        env.step([0.5])  # not broadcast
    with pytest.raises(ValueError, match=r"got dtype <U"):
        env.step(["a", "b"])
    with pytest.raises(ValueError, match="not convertible to an array"):
        env.step([[0.1, 0.2], [0.3]])
    coupons, _ = pair("promogym/CouponAllocation-v1")
    coupons.reset(seed=0)
    with pytest.raises(ValueError, match=r"values in \[0, 4\), got 4 at index 2 \(dtype int64; 1 more bad entries\)"):
        coupons.step([0, 0, 4] + [0] * 12 + [9])
    # a one-product season takes a scalar as well as a one-element action
    one, one_ref = (DynamicPricingEnv({**SEASON, "n_products": 1, "categories": (0,)}) for _ in range(2))
    one.reset(seed=5)
    one_ref.reset(seed=5)
    assert_same(outcome(one.step(0.25)), outcome(one_ref.step(np.array([0.25], np.float32))))
