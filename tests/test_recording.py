"""Recording a deployed policy as logs: exact propensities of the exploration kernel, a world untouched by the
exploration draws, and rows that agree with the env and load as training logs."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pandas as pd
import pytest
from scipy import stats

from promogym import envs  # noqa: F401
from promogym.envs.market.logs import LOG_COLUMNS
from promogym.envs.recording import (
    EXTRA_COLUMNS,
    Exploration,
    ExploreWrapper,
    day_observations,
    offers_to_rows,
    record_episode,
)
from promogym.experiments.data import write_logs
from promogym.predictors.data import load_logs

DP = "promogym/DynamicPricing-v1"
PP = "promogym/PricePromo-v1"
CFG = {"market": {"n_customers": 600, "n_products": 60}, "n_products": 2, "horizon": 4, "daily_customers": 40}
PROMO = {**CFG, "budget": 30.0}
# scarce stock and busy days: stock-outs happen within the episode
SCARCE = {**PROMO, "initial_stock": 2, "daily_customers": 80}


class Constant:
    """A policy with SB3's predict: always the same action."""

    def __init__(self, action: np.ndarray) -> None:
        self.action = np.asarray(action, np.float32)

    def predict(self, obs, state=None, episode_start=None, deterministic=True):
        return self.action, None


def _wrapper(env_id: str = PP, cfg: dict | None = None, **exploration) -> ExploreWrapper:
    w = ExploreWrapper(gym.make(env_id, config=cfg or PROMO), Exploration(**exploration))
    w.reset(seed=0)
    return w


def test_propensities_sum_to_one_and_match_the_frequencies_of_the_draws():
    w = _wrapper(epsilon=0.3, coupon_epsilon=0.5)
    grid, levels = w.price_grid, w.coupon_levels
    assert grid[0] == pytest.approx(0.6) and grid[-1] == pytest.approx(1.4) and len(grid) == 9
    for m in (0.5, 0.6, 0.93, 1.14, 2.0):  # out of the band too: clipped, then snapped
        p = w.propensity_of(np.full(len(grid), m), grid)
        assert p.sum() == pytest.approx(1.0) and p.min() == pytest.approx(0.3 / 9)
    assert w.coupon_propensity_of(np.full(len(levels), 0.1), levels).sum() == pytest.approx(1.0)
    action = np.array([-0.5, 0.7, -1.0, 0.1, 1.0], np.float32)  # wanted: 0.8 x list, 1.28 -> 1.3; levels 0, 2, 3
    draws = [w.explore(action) for _ in range(4000)]
    played = np.stack([d.played_index for d in draws])
    c_played = np.stack([d.coupon_played_index for d in draws])
    wanted, c_wanted = draws[0].wanted_index, draws[0].coupon_wanted_index
    assert list(grid[wanted]) == pytest.approx([0.8, 1.3]) and list(c_wanted) == [0, 2, 3]
    for j in range(2):
        expected = w.propensity_of(np.full(len(grid), grid[wanted[j]]), grid)
        assert stats.chisquare(np.bincount(played[:, j], minlength=len(grid)), 4000 * expected).pvalue > 1e-3
    for s in range(3):
        expected = w.coupon_propensity_of(np.full(len(levels), levels[c_wanted[s]]), levels)
        assert stats.chisquare(np.bincount(c_played[:, s], minlength=len(levels)), 4000 * expected).pvalue > 1e-3
    # the recorded propensity is the kernel's probability of what was played
    for d in draws[:50]:
        np.testing.assert_allclose(d.price_propensity, w.propensity_of(grid[d.wanted_index], grid[d.played_index]))
        np.testing.assert_allclose(d.coupon_propensity,
                                   w.coupon_propensity_of(levels[d.coupon_wanted_index], levels[d.coupon_played_index]))


def test_epsilon_one_plays_the_grid_uniformly_whatever_the_policy_wants():
    w = _wrapper(DP, CFG, epsilon=1.0)
    n = len(w.price_grid)
    np.testing.assert_allclose(w.propensity_of(np.full(n, 0.7), w.price_grid), 1.0 / n)
    played = np.stack([w.explore(np.array([1.0, 1.0])).played_index for _ in range(3000)])
    assert stats.chisquare(np.bincount(played.ravel(), minlength=n)).pvalue > 1e-3


@pytest.mark.parametrize("key", ["epsilon", "coupon_epsilon"])
def test_zero_exploration_is_refused(key):
    with pytest.raises(ValueError, match=f"Exploration.{key}.*exploration 0 gives no propensities"):
        Exploration(**{key: 0.0})
    with pytest.raises(ValueError, match="exploration 0"):
        record_episode(gym.make(DP, config=CFG), Constant(np.zeros(2)), seed=0, exploration={key: 0.0})


def test_price_constraints_and_other_envs_are_refused():
    env = gym.make(DP, config={**CFG, "constraints": {"max_daily_change": 0.1}})
    with pytest.raises(ValueError, match=r"constraints\.max_daily_change"):
        ExploreWrapper(env)
    ExploreWrapper(gym.make(PP, config={**PROMO, "constraints": {"coupon_cap": 2}}))  # a cap leaves levels exact
    with pytest.raises(ValueError, match="pricing envs"):
        ExploreWrapper(gym.make("promogym/CouponAllocation-v1",
                                config={"market": CFG["market"], "cohort_size": 8, "horizon": 2}))


def test_the_same_seed_gives_the_same_rows():
    policy = Constant([0.2, -0.4, 0.0, 0.5, -1.0])
    a = record_episode(gym.make(PP, config=PROMO), policy, seed=4, exploration={"epsilon": 0.5})
    b = record_episode(gym.make(PP, config=PROMO), policy, seed=4, exploration={"epsilon": 0.5})
    c = record_episode(gym.make(PP, config=PROMO), policy, seed=5, exploration={"epsilon": 0.5})
    assert len(a) > 50
    pd.testing.assert_frame_equal(a.drop(columns="observation"), b.drop(columns="observation"))
    np.testing.assert_array_equal(np.stack(list(a["observation"])), np.stack(list(b["observation"])))
    assert not a.drop(columns="observation").equals(c.drop(columns="observation"))


def _play(seed: int) -> tuple[list, list, list, pd.DataFrame, int]:
    """A PricePromo episode through the wrapper: played actions, rewards, step infos, rows and stock-outs; checks
    each day's rows against the step's info."""
    w = ExploreWrapper(gym.make(PP, config=SCARCE), {"epsilon": 0.5})
    w.reset(seed=seed)
    actions, rewards, infos, frames, visits, done, stockouts = [], [], [], [], 0, False, 0
    while not done:
        _, reward, terminated, truncated, info = w.step(np.array([-1.0, -0.6, 1.0, 0.0, 1.0], np.float32))
        o = w.unwrapped.last_offers
        rows = offers_to_rows(w, o, info["exploration"], episode=7, visit_offset=visits)
        comp, u = info["components"], w.unwrapped
        assert rows["revenue"].sum() == pytest.approx(comp["revenue"])
        assert rows["coupon_cost"].sum() == pytest.approx(comp["coupon_spend"])
        assert rows["profit"].sum() == pytest.approx(reward)
        product = u.env_index[rows["item_id"].to_numpy()]
        np.testing.assert_array_equal(np.bincount(product, weights=rows["purchased"], minlength=2), info["units"])
        np.testing.assert_allclose(rows["price"], info["prices"][product])
        assert int(rows["stocked_out"].sum()) == comp["stockouts"]
        np.testing.assert_allclose(rows["price_propensity"], info["exploration"].price_propensity[product])
        per_visit = rows.groupby("visit_id")[["true_proba", "revealed_proba", "purchased", "stocked_out"]].sum()
        assert (per_visit["true_proba"] < 1).all() and (per_visit["revealed_proba"] < 1).all()
        assert ((per_visit["purchased"] + per_visit["stocked_out"]) <= 1).all()
        assert (rows["views"] == rows.groupby("visit_id")["item_id"].transform("size")).all()
        assert (rows["season_day"] == len(actions)).all() and (rows["day"] == info["day"]).all()
        stockouts += comp["stockouts"]
        actions.append(info["exploration"].action)
        rewards.append(reward)
        infos.append(info)
        frames.append(rows)
        visits += info["visitors"]
        done = terminated or truncated
    return actions, rewards, infos, pd.concat(frames, ignore_index=True), stockouts


def test_rows_agree_with_the_env_and_the_world_is_the_plain_envs_for_the_played_prices():
    actions, rewards, infos, rows, stockouts = _play(seed=1)
    assert stockouts > 0 and rows["stocked_out"].sum() == stockouts  # the stock-out path is exercised
    assert list(rows.columns) == [*LOG_COLUMNS, *EXTRA_COLUMNS]
    assert rows["visit_id"].min() >= 7 * 10**9
    # replaying the played actions in a plain env on the same seed gives the same days
    env = gym.make(PP, config=SCARCE)
    env.reset(seed=1)
    for action, reward, info in zip(actions, rewards, infos, strict=True):
        _, plain_reward, _, _, plain = env.step(action)
        assert plain_reward == reward
        assert plain["components"] == info["components"]
        np.testing.assert_array_equal(plain["prices"], info["prices"])
        np.testing.assert_array_equal(plain["units"], info["units"])


def test_recorded_rows_load_as_training_logs(tmp_path):
    env = gym.make(DP, config=CFG)
    rows = pd.concat([record_episode(env, Constant([0.0, 0.5]), seed=s, exploration={"epsilon": 0.2})
                      for s in (0, 1)], ignore_index=True)
    out = tmp_path / "closed_loop.parquet"
    write_logs(rows, out, {"kind": "promogym-logs", "world": env.unwrapped.market.config.to_dict()})
    logs = load_logs(out)
    assert len(logs) == len(rows) and logs["visit_id"].nunique() == rows["visit_id"].nunique()
    assert list(logs.columns) == [*LOG_COLUMNS, *EXTRA_COLUMNS, "observation"]
    days, obs = day_observations(logs)
    assert len(days) == 8 and obs.shape == (8, env.observation_space.shape[0])
    first = days.index[(days["episode"] == 1) & (days["season_day"] == 0)][0]
    np.testing.assert_allclose(obs[first], env.reset(seed=1)[0])
