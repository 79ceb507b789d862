"""CouponAllocation on the world's one visit process: cohorts are the logs' visits, choices the logs' MNL."""

import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from promogym import envs  # noqa: F401
from promogym.agents.coupons import UpliftTargeting, _log_visits, level_outcomes
from promogym.envs.coupons import CouponAllocationEnv
from promogym.envs.market import Market, sigmoid
from promogym.envs.market.logs import generate_logs

SMALL = {"market": {"n_customers": 800, "n_products": 100}}


@pytest.fixture(scope="module")
def logs():
    return generate_logs(Market(), 30_000, 0)


def _visit_stats(market, users, categories, n_views):
    fav = (market.customers.favourites[users] == categories[:, None]).any(axis=1)
    return np.asarray(n_views, float), fav.astype(float)


def test_cohorts_view_as_many_products_and_favourites_as_the_logs(logs):
    market = Market()
    per_visit = logs.groupby("visit_id", sort=True).first()
    cats = market.catalog.category_names
    log_views, log_fav = _visit_stats(market, per_visit["user_id"].to_numpy(),
                                      np.array([cats.index(c) for c in per_visit["category"].astype(str)]),
                                      per_visit["views"].to_numpy())
    env = CouponAllocationEnv({"cohort_size": 512, "horizon": 25, "budget": 1e9, "cohorts_per_day": 4})
    env.reset(seed=0)
    views, users = [], []
    for _ in range(25):
        views.append(env.views.copy())
        users.append(env.users.copy())
        env.step(np.zeros(512, np.int64))
    v, u = np.concatenate(views), np.concatenate(users)
    assert (v[:, 0] >= 0).all()  # every visit views something; padding comes last
    env_views, env_fav = _visit_stats(market, u, market.catalog.category[v[:, 0]], (v >= 0).sum(axis=1))
    # every viewed product belongs to the visit's category, each at most once per visit
    same_cat = np.where(v >= 0, market.catalog.category[np.maximum(v, 0)] == market.catalog.category[v[:, :1]], True)
    assert same_cat.all()
    assert all(len(set(row[row >= 0])) == (row >= 0).sum() for row in v[:500])
    for a, b in ((env_views, log_views), (env_fav, log_fav)):
        se = np.sqrt(a.var() / len(a) + b.var() / len(b))
        assert abs(a.mean() - b.mean()) < 4 * se, (a.mean(), b.mean(), se)
    assert 2.0 < env_views.mean() < 3.0 and env_fav.mean() > 0.7  # the comparison is not vacuous


def test_choice_probabilities_are_a_multinomial_logit_over_the_views():
    env = CouponAllocationEnv({**SMALL, "cohort_size": 256, "budget": 1e9, "horizon": 40, "cohorts_per_day": 2})
    env.reset(seed=1)
    u = env.unwrapped
    shown = u.views >= 0
    for lvl in u.levels:
        p = u.choice_proba(float(lvl))
        assert (p >= 0).all() and (p[~shown] == 0).all()
        assert (p.sum(axis=1) <= 1 + 1e-12).all()
    # one viewed product: the sigmoid of its utility, as one-product visits are logged
    one = shown.sum(axis=1) == 1
    assert one.any()
    price = u.market.catalog.list_price[u.views[one, 0]]
    np.testing.assert_allclose(u.choice_proba(0.0)[one, 0],
                               sigmoid(u.market.utility(u.users[one], u.views[one, 0], price, 0.0, u.state)))
    # level_outcomes are the expectations of the step's profit and spend under the same probabilities
    profit, spend = level_outcomes(env, u.backend, u.state)
    p2 = u.choice_proba(float(u.levels[2]))
    items = np.maximum(u.views, 0)
    lp, uc = u.market.catalog.list_price[items], u.market.catalog.unit_cost[items]
    np.testing.assert_allclose(profit[:, 2], (p2 * (lp * (1 - u.levels[2]) - uc)).sum(axis=1))
    np.testing.assert_allclose(spend[:, 2], (p2 * lp * u.levels[2]).sum(axis=1))
    # purchases are drawn from those probabilities
    diffs = []
    for _ in range(40):
        p = u.choice_proba(0.0)
        items = np.maximum(u.views, 0)
        margin = u.market.catalog.list_price[items] - u.market.catalog.unit_cost[items]
        info = env.step(np.zeros(256, np.int64))[4]
        assert info["expected_profit"] == pytest.approx(float((p * margin).sum()))
        chosen = info["chosen"]
        assert ((chosen >= 0) == info["bought"]).all()
        assert all(c in row for c, row in zip(chosen[chosen >= 0], info["views"][chosen >= 0], strict=True))
        diffs.append(info["bought"].sum() - p.sum())
    se = np.sqrt(40 * 256 * 0.25) / 40
    assert abs(np.mean(diffs)) < 4 * se


class DearestFirst:
    """A conversion model under which customers buy nearly surely, and mostly the dearest product they view:
    coupons are redeemed on the most expensive product of the visit whenever they can be."""

    name = "dearest_first"

    def predict_proba(self, batch):
        return sigmoid(6.0 * (np.log(np.asarray(batch["list_price"], float)) - np.log(20.0)) + 3.0)


def test_the_top_level_for_everyone_never_spends_more_than_a_tiny_budget():
    budget = 12.0
    env = gym.make("promogym/CouponAllocation-v1",
                   config={**SMALL, "cohort_size": 32, "budget": budget, "horizon": 60, "min_budget": 0.0,
                           "response": DearestFirst()})
    u = env.unwrapped
    top = np.full(32, len(u.levels) - 1)
    for seed in range(20):  # a budget runs out once per episode: many episodes, many chances to overspend
        env.reset(seed=seed)
        spent = given = clipped = 0.0
        for _ in range(60):
            left = u.budget_left
            dearest = np.where(u.views >= 0, u.market.catalog.list_price[np.maximum(u.views, 0)], 0).max(axis=1)
            np.testing.assert_allclose(u.worst_case_cost()[:, -1], u.levels[-1] * dearest)
            _, _, term, _, info = env.step(top)
            c = info["components"]
            assert c["coupon_spend"] <= left + 1e-9
            spent += c["coupon_spend"]
            given += info["coupons_given"]
            clipped += info["coupons_clipped"]
            assert spent <= budget + 1e-9 and c["budget_left"] == pytest.approx(budget - spent)
            if term:
                break
        assert clipped > 0 and given > 0 and spent > 0  # it tried to overspend, and some coupons were paid


@pytest.mark.parametrize("config", [SMALL, {}])
def test_the_env_checker_is_clean(config):
    env = gym.make("promogym/CouponAllocation-v1", config={**config, "cohort_size": 16, "horizon": 8})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(env.unwrapped)


def test_uplift_learns_one_row_per_logged_visit(logs):
    market = Market()
    v = _log_visits(market, logs)
    per_visit = logs.groupby("visit_id", sort=True)
    assert len(v["users"]) == logs["visit_id"].nunique()
    np.testing.assert_array_equal(v["bought"], per_visit["purchased"].max().to_numpy() > 0)
    np.testing.assert_array_equal((v["views"] >= 0).sum(axis=1), per_visit.size().to_numpy())
    np.testing.assert_array_equal(v["users"], per_visit["user_id"].first().to_numpy())
    np.testing.assert_array_equal(market.catalog.category[v["views"][:, 0]], v["categories"])
    env = gym.make("promogym/CouponAllocation-v1", config={"cohort_size": 32, "horizon": 6, "budget": 60.0})
    policy = UpliftTargeting(env, logs)
    obs, _ = env.reset(seed=0)
    action = policy.predict(obs)[0]
    assert env.action_space.contains(action)


def test_coupon_decisions_reads_probabilities_of_buying_anything(tmp_path, monkeypatch):
    import yaml

    from promogym.agents import train
    from promogym.experiments.analysis import coupon_decisions

    class NoCoupons:
        def __init__(self, run_dir, env):
            self.n = env.unwrapped.config.cohort_size

        def predict(self, obs):
            return np.zeros(self.n, np.int64), None

    monkeypatch.setattr(train, "LearnedPolicy", NoCoupons)
    (tmp_path / "config.yml").write_text(yaml.safe_dump({
        "env_id": "promogym/CouponAllocation-v1",
        "env_config": {**SMALL, "cohort_size": 8, "horizon": 3, "budget": 50.0}}))
    df = coupon_decisions(tmp_path, episodes=2)
    assert list(df.columns) == ["episode", "t", "budget_left", "user", "visit_band", "price_sensitivity",
                                "p_buy_no_coupon", "uplift_top_level", "level_learned", "level_myopic",
                                "coupon_given", "bought"]
    assert len(df) == 2 * 3 * 8
    p0, p1 = df["p_buy_no_coupon"], df["p_buy_no_coupon"] + df["uplift_top_level"]
    assert ((p0 > 0) & (p0 < 1) & (p1 > 0) & (p1 < 1)).all()
    assert (df["coupon_given"] == 0).all()
