"""Off-policy evaluation of pricing policies on recorded rows: weights with mean 1, a direct method that is the
world's expectation when the world is the model, IPS and DR that recover a target's value on the logged
states, a paired gate, and inputs of another env or exploration refused."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import pandas as pd
import pytest

from promogym import envs  # noqa: F401
from promogym.agents.base import episode_table
from promogym.envs.backends import ModelBackend, WorldBackend
from promogym.envs.market.world import PRICE_HISTORY_NAMES, sigmoid
from promogym.envs.recording import Exploration, ExploreWrapper, record_episode
from promogym.experiments.ope import (
    VisitTerms,
    decide,
    gate,
    ope_estimate,
    ope_terms,
    paired_difference,
    season_difference,
    target_multiples,
)
from promogym.experiments.stats import bootstrap_ci
from promogym.predictors.choice import visit_choice_proba

DP = "promogym/DynamicPricing-v1"
PP = "promogym/PricePromo-v1"
# 4 products, 2 per category: most visits view two products; a price band with three grid points, 0.6 (about
# unit cost), 0.8 and 1.0 x list price, and heavy exploration, so that the statistical checks have support
LOW, HIGH, HORIZON = 0.6, 1.0, 4
CFG = {"market": {"n_customers": 600, "n_products": 60}, "n_products": 4, "horizon": HORIZON, "daily_customers": 60,
       "price_low": LOW, "price_high": HIGH}
PROMO = {**CFG, "budget": 200.0}  # spent before the season ends: some coupons withheld
EXP = Exploration(epsilon=0.8, grid_step=0.2)
EPISODES = 50


class Constant:
    """A policy with SB3's predict: always the same action (for one observation or a batch)."""

    def __init__(self, action: Any) -> None:
        self.action = np.asarray(action, np.float32)

    def predict(self, obs, state=None, episode_start=None, deterministic=True):
        obs = np.asarray(obs)
        return (np.broadcast_to(self.action, (*obs.shape[:-1], len(self.action))).copy(), None)


class PerObservation(Constant):
    """A policy that only takes one observation at a time (a batch gives one action)."""

    def predict(self, obs, state=None, episode_start=None, deterministic=True):
        return self.action.copy(), None


def at(*multiples: float) -> np.ndarray:
    """The DynamicPricing action that asks for these price multiples of list."""
    return (2.0 * (np.asarray(multiples, float) - LOW) / (HIGH - LOW) - 1.0).astype(np.float32)


LOGGER = at(1.0, 1.0, 1.0, 1.0)


@pytest.fixture(scope="module")
def logged() -> tuple[pd.DataFrame, ExploreWrapper]:
    env = gym.make(DP, config=CFG)
    rows = pd.concat([record_episode(env, Constant(LOGGER), seed=s, exploration=EXP) for s in range(EPISODES)],
                     ignore_index=True)
    return rows, ExploreWrapper(gym.make(DP, config=CFG), EXP)


@pytest.fixture(scope="module")
def world(logged) -> WorldBackend:
    return WorldBackend(logged[1].unwrapped.market)


def covers(ci: tuple[float, float], value: float) -> bool:
    return ci[0] <= value <= ci[1]


def ci99(x: np.ndarray) -> tuple[float, float]:
    """A 99% bootstrap CI over days: the statistical checks below are many, on one fixed set of episodes."""
    return bootstrap_ci(x, level=0.99)


# ---------------------------------------------------------------------------------------- backends
def test_row_logits_read_the_offers_logits_builds_from_a_state(logged, world):
    rows, w = logged
    market = w.unwrapped.market
    rng = np.random.default_rng(0)
    state = market.initial_state(day=12)
    state.reference_price *= rng.uniform(0.8, 1.2, market.n_products)
    state.fatigue = rng.uniform(0, 2, market.n_customers)
    state.coupon_days = rng.integers(0, 2, state.coupon_days.shape).astype(float)
    state.price_history = rng.uniform(0.7, 1.3, state.price_history.shape)
    users, items = rng.integers(0, market.n_customers, 50), rng.integers(0, market.n_products, 50)
    price = market.catalog.list_price[items] * rng.uniform(0.6, 1.4, 50)
    coupon = rng.choice([0.0, 0.1], 50)
    table = pd.DataFrame({"user_id": users, "item_id": items, "price": 1.0, "coupon": 0.0, "day": state.day,
                          "coupons_last_7d": state.coupons_last_7d()[users],
                          "reference_price": state.reference_price[items], "fatigue": state.fatigue[users],
                          **state.price_features(items)})
    np.testing.assert_allclose(world.row_logits(table, price, coupon),
                               world.logits(users, items, price, coupon, state))

    class Model:  # a conversion model of the offer's columns
        def __init__(self) -> None:
            self.seen: list[set[str]] = []

        def predict_proba(self, o: dict[str, Any]) -> np.ndarray:
            self.seen.append(set(o))
            z = (1.0 - 2.0 * np.log(o["price"] * (1 - o["coupon"]) / o["list_price"]) + 0.1 * (o["day"] % 7)
                 - 0.3 * o["coupons_last_7d"] + sum(k * o[n] for k, n in enumerate(PRICE_HISTORY_NAMES))
                 + 0.01 * (o["user_id"] % 5) - 0.02 * (o["item_id"] % 3))
            return sigmoid(z)

    model = ModelBackend(Model(), market)
    np.testing.assert_allclose(model.row_logits(table, price, coupon),
                               model.logits(users, items, price, coupon, state), rtol=1e-9)
    assert model.model.seen[0] == model.model.seen[1]

    class Hybrid(Model):  # scored by customer and product id, as a bound hybrid BERT model is
        mode = "hybrid"

        def bind(self, *texts: Any) -> None:
            pass

        def predict_logits_ids(self, u: np.ndarray, i: np.ndarray, o: dict[str, Any]) -> np.ndarray:
            assert np.array_equal(u, o["user_id"]) and np.array_equal(i, o["item_id"])
            p = self.predict_proba(o)
            return np.log(p) - np.log1p(-p)

    hybrid = ModelBackend(Hybrid(), market)
    np.testing.assert_allclose(hybrid.row_logits(table, price, coupon),
                               hybrid.logits(users, items, price, coupon, state), rtol=1e-9)
    np.testing.assert_allclose(hybrid.row_logits(table, price, coupon), model.row_logits(table, price, coupon),
                               rtol=1e-6)
    # the logged prices by default; the world's MNL over a visit's rows is the recorded choice probability
    part = rows.iloc[:400]
    np.testing.assert_allclose(visit_choice_proba(world.row_logits(part), part["visit_id"]), part["true_proba"],
                               rtol=1e-9)
    with pytest.raises(ValueError, match=r"lack the column.*reference_price"):
        world.row_logits(part.drop(columns="reference_price"))
    with pytest.raises(ValueError, match="price needs one value per row"):
        model.row_logits(part, np.ones(3))


# ---------------------------------------------------------------------------------------- weights
def test_weights_have_mean_one_and_vanish_off_the_target(logged, world):
    rows, w = logged
    for target in (LOGGER, at(0.8, 1.0, 1.0, 0.6)):
        terms = ope_terms(Constant(target), rows, w, world)
        per_day_mean = np.bincount(terms.cluster, weights=terms.weight) / np.bincount(terms.cluster)
        assert covers(ci99(per_day_mean), 1.0), per_day_mean.mean()
        plan = target_multiples(Constant(target), rows, w)
        assert plan.prices.shape == (len(terms.days), 4)
        np.testing.assert_allclose(plan.multiples, np.broadcast_to(np.round(LOW + (target + 1) / 2 * (HIGH - LOW), 6),
                                                                   plan.multiples.shape))
        # a visit weighs 1 / prod(propensities) when every product it viewed was played at the target's price
        played = np.round(rows["price"] / rows["list_price"], 1).to_numpy()
        wanted = plan.multiples[0][w.unwrapped.env_index[rows["item_id"].to_numpy()]]
        hit = pd.Series(np.isclose(played, wanted)).groupby(rows["visit_id"].to_numpy(), sort=False).all()
        inv = (1.0 / rows["price_propensity"]).groupby(rows["visit_id"], sort=False).prod()
        np.testing.assert_array_equal(hit.index, terms.visit_id)
        np.testing.assert_allclose(terms.weight, np.where(hit, inv, 0.0))


def test_the_exploring_logger_is_the_mixture_of_grid_targets_and_ips_gives_its_realized_profit(logged, world):
    """Exploration plays each product's grid point g with probability P(g); the exploring logger is the mixture of
    the deterministic targets over the grid with weights prod_j P(g_j). Over them, every visit's weights average
    to exactly 1 and its IPS terms to exactly its realized profit (a visit views products of one category: the
    targets (a, b, a, b) cover every pair of a category's two products)."""
    rows, w = logged
    part = rows[rows["episode"] < 6]
    grid = w.price_grid
    p = w.propensity_of(np.full(len(grid), 1.0), grid)  # P(g) when the logger wants list price
    mix_w = mix_ips = 0.0
    for a, b in np.ndindex(len(grid), len(grid)):
        terms = ope_terms(Constant(at(grid[a], grid[b], grid[a], grid[b])), part, w, world)
        mix_w = mix_w + p[a] * p[b] * terms.weight
        mix_ips = mix_ips + p[a] * p[b] * terms.terms("ips")
    np.testing.assert_allclose(mix_w, 1.0, rtol=1e-9)
    np.testing.assert_allclose(mix_ips, terms.reward, rtol=1e-9, atol=1e-9)
    assert terms.reward.sum() == pytest.approx(part["profit"].sum())


def test_the_logging_policy_as_target(logged, world):
    rows, w = logged
    terms = ope_terms(Constant(LOGGER), rows, w, world)
    est = ope_estimate(terms, level=0.99)
    assert est["logged"] == pytest.approx(rows["profit"].sum() / est["days"])
    assert est["days"] == EPISODES * HORIZON and est["episodes"] == EPISODES
    assert est["dr_per_episode"] == pytest.approx(est["dr"] * HORIZON)
    # where the visit was played as the logger wanted, the target's prices are the logged ones to the cent
    on = terms.weight > 0
    np.testing.assert_allclose(terms.q_target[on], terms.q_logged[on], rtol=1e-12)
    # the realized profit is the world's expectation at the logged prices; IPS and DR find the world's value of
    # the logger without exploration (the prices it wants on every product)
    expected_logged = np.bincount(terms.cluster, weights=terms.q_logged)
    assert covers(ci99(terms.per_day("logged") - expected_logged), 0.0)
    for name in ("ips", "dr"):
        assert covers(ci99(terms.per_day(name) - terms.per_day("dm")), 0.0), name
        assert covers(est[f"{name}_ci"], est["dm"])


# ---------------------------------------------------------------------------------------- the direct method
def test_with_the_world_as_model_dm_is_the_worlds_expected_profit(logged, world):
    rows, w = logged
    logger = ope_terms(Constant(LOGGER), rows, w, world)
    margin = rows["price"] * (1 - rows["coupon"]) - rows["unit_cost"]
    direct = (rows["true_proba"] * margin).groupby(rows["visit_id"], sort=False).sum()
    np.testing.assert_allclose(logger.q_logged, direct.to_numpy(), rtol=1e-9)
    # a target's first day is the plain env's first day at the target's prices (same visitors, same state)
    target = at(0.8, 0.6, 1.0, 0.6)
    terms = ope_terms(Constant(target), rows, w, world)
    first = np.flatnonzero(terms.days["season_day"].to_numpy() == 0)[:8]
    env = gym.make(DP, config=CFG)
    for k in first:
        env.reset(seed=int(terms.days["episode"].iloc[k]))
        info = env.step(target)[4]
        assert terms.per_day("dm")[k] == pytest.approx(info["expected_profit_world"], rel=1e-9)
    # DR's correction has mean 0 when the model is the truth
    for t in (terms, logger):
        assert covers(ci99(t.per_day("correction")), 0.0)


# ---------------------------------------------------------------------------------------- unbiasedness
@pytest.mark.parametrize("target", [at(0.8, 1.0, 0.6, 1.0), at(0.6, 0.8, 0.8, 0.6)])
def test_ips_and_dr_recover_a_targets_value_on_the_logged_states(logged, world, target):
    rows, w = logged
    truth = ope_terms(Constant(target), rows, w, world)
    value = truth.per_day("dm")  # the world's expected profit of the target on each logged day
    logger_value = ope_terms(Constant(LOGGER), rows, w, world).per_day("dm").mean()
    assert value.mean() < 0.9 * logger_value  # a target clearly worth less than the logger: not a vacuous check
    # a wrong model: the same purchase probability for everything
    flat = ModelBackend(type("Flat", (), {"predict_proba": lambda self, o: np.full(len(o["price"]), 0.05)})(),
                        w.unwrapped.market)
    wrong = ope_terms(Constant(target), rows, w, flat)
    est = ope_estimate(wrong, level=0.99)
    assert covers(est["ips_ci"], value.mean()) and covers(est["dr_ci"], value.mean())
    assert not covers(est["dm_ci"], value.mean())  # the wrong model alone is off; DR corrects it
    for name in ("ips", "dr"):
        assert covers(ci99(wrong.per_day(name) - value), 0.0), name  # paired with the truth: tighter
    assert covers(ci99(truth.per_day("ips") - value), 0.0)


def test_coupon_levels_weigh_by_the_segments_played_level():
    env = gym.make(PP, config=PROMO)
    logger = np.r_[at(1.0, 1.0, 1.0, 1.0), -0.9, -0.1, 0.4]  # levels 0, 0.05, 0.1
    rows = pd.concat([record_episode(env, Constant(logger), seed=s, exploration=EXP) for s in range(30)],
                     ignore_index=True)
    w = ExploreWrapper(gym.make(PP, config=PROMO), EXP)
    assert (rows["coupon_propensity"] < 1).any()
    world = WorldBackend(w.unwrapped.market)
    target = np.r_[at(1.0, 1.0, 1.0, 0.6), 0.9, -0.1, 0.4]
    terms = ope_terms(Constant(target), rows, w, world)
    per_day_mean = np.bincount(terms.cluster, weights=terms.weight) / np.bincount(terms.cluster)
    assert covers(ci99(per_day_mean), 1.0)
    # a visit weighs 1 / (its products' price propensities x its segment's coupon propensity, counted once) when
    # its products and its segment's coupon level were all played as the target wants them, else 0
    first = rows.drop_duplicates("visit_id")
    band = w.unwrapped.market.customers.visit_band[first["user_id"].to_numpy()]
    played = np.round(rows["price"] / rows["list_price"], 1).to_numpy()
    wanted = np.array([1.0, 1.0, 1.0, 0.6])[w.unwrapped.env_index[rows["item_id"].to_numpy()]]
    hit = pd.Series(np.isclose(played, wanted)).groupby(rows["visit_id"].to_numpy(), sort=False).all().to_numpy()
    level_hit = np.isclose(first["coupon_level"].to_numpy(), np.array([0.2, 0.05, 0.1])[band])
    inv = (1.0 / rows["price_propensity"]).groupby(rows["visit_id"], sort=False).prod().to_numpy()
    np.testing.assert_allclose(terms.weight, np.where(hit & level_hit, inv / first["coupon_propensity"].to_numpy(), 0))
    assert (hit & ~level_hit).any() and (terms.weight > 0).any()
    # the logger as target: where it was played as wanted, its offers are the logged ones, a coupon the budget
    # withheld included
    same = ope_terms(Constant(logger), rows, w, world)
    withheld = ((rows["coupon_level"] > 0) & (rows["coupon"] == 0)).groupby(rows["visit_id"], sort=False).any()
    assert (withheld.to_numpy() & (same.weight > 0)).any()
    np.testing.assert_allclose(same.q_target[same.weight > 0], same.q_logged[same.weight > 0], rtol=1e-12)
    est = ope_estimate(terms, level=0.99)
    assert covers(est["ips_ci"], est["dm"]) and covers(est["dr_ci"], est["dm"])


# ---------------------------------------------------------------------------------------- the gate
def test_the_gate_deploys_a_clearly_better_candidate_and_refuses_a_worse_one(logged, world):
    rows, w = logged
    good = ope_terms(Constant(LOGGER), rows, w, world, name="list")
    bad = ope_terms(Constant(at(0.6, 1.0, 0.6, 1.0)), rows, w, world, name="cost")  # two products at cost
    diff = paired_difference(good, bad)
    assert diff["lcb"] < diff["diff"] and diff["diff_ci"][0] <= diff["lcb"] <= diff["diff_ci"][1]
    assert diff["diff"] == pytest.approx(diff["candidate"] - diff["incumbent"])
    up = gate(good, bad)
    assert up.deploy and up.lcb > 0 and up.reason.startswith("deploy the candidate")
    down = gate(bad, good)
    assert not down.deploy and down.reason.startswith("keep the incumbent")
    assert not gate(good, bad, margin=1e6).deploy
    thin = gate(good, bad, min_ess=1e9)
    assert not thin.deploy and "effective sample size" in thin.reason
    assert up.to_dict()["deploy"] is True


class Shifted(WorldBackend):
    """The world's log-odds lowered by 0.7: a simulator that under-predicts every purchase."""

    name, is_world = "shifted", False

    def logits(self, *args: Any) -> np.ndarray:
        return super().logits(*args) - 0.7

    def row_logits(self, *args: Any) -> np.ndarray:
        return super().row_logits(*args) - 0.7


def returns(env: gym.Env, action: np.ndarray, seeds: range) -> np.ndarray:
    return episode_table(env, Constant(action), list(seeds))["return"].to_numpy(float)


def test_the_season_estimate_corrects_the_simulators_error_on_each_policys_offers(logged, world):
    rows, w = logged
    sim = gym.make(DP, config=CFG)
    sim.unwrapped.backend = Shifted(w.unwrapped.market)
    cost = at(0.6, 1.0, 0.6, 1.0)  # two products at about unit cost: a clear loss the world knows
    truth = (returns(gym.make(DP, config=CFG), LOGGER, range(10_000, 10_400))
             - returns(gym.make(DP, config=CFG), cost, range(10_000, 10_400))).mean()
    seeds = range(20_000, 20_200)
    sim_c, sim_i = returns(sim, LOGGER, seeds), returns(sim, cost, seeds)
    shifted = Shifted(w.unwrapped.market)
    tc = ope_terms(Constant(LOGGER), rows, w, shifted, name="list")
    ti = ope_terms(Constant(cost), rows, w, shifted, name="cost")
    season = season_difference(tc, ti, sim_c, sim_i, level=0.99)
    assert season["simulated"] < 0.8 * truth  # the simulator alone understates the gain
    assert season["diff_ci"][0] <= truth <= season["diff_ci"][1]  # its per-visit error corrected on the logs
    assert season["diff"] == pytest.approx(season["simulated"] + season["correction"])
    assert season["diff"] == pytest.approx(season["candidate"] - season["incumbent"])
    assert season["diff_ci"][0] <= season["lcb"] <= season["diff"] and season["days_per_episode"] == HORIZON
    assert decide(season, tc.diagnostics()["ess"], unit="per season").deploy
    assert not decide(season_difference(ti, tc, sim_i, sim_c), ti.diagnostics()["ess"]).deploy
    with pytest.raises(ValueError, match="same seeds"):
        season_difference(tc, ti, sim_c, sim_i[:-1])


def test_the_season_correction_is_self_normalized_counts_demand_and_resamples_whole_seasons():
    days = pd.DataFrame({"episode": [0, 0, 1, 1], "season_day": [0, 1, 0, 1]})

    def terms(weight: list[float], reward: list[float], demand: list[float] | None = None) -> VisitTerms:
        # one visit a day, q(x, a) = 0: the error is the reward (or the demand)
        return VisitTerms(name="x", days=days, visit_id=np.arange(4), cluster=np.arange(4),
                          weight=np.asarray(weight, float), reward=np.asarray(reward, float), q_target=np.zeros(4),
                          q_logged=np.zeros(4), demand=None if demand is None else np.asarray(demand, float))

    zero = terms([1, 1, 1, 1], [0, 0, 0, 0])
    sims = np.array([10.0, 12.0]), np.array([5.0, 5.0])
    # weighted error 2 + 3 + 4 over weight 4, x 2 visits a season: 4.5, not the plain mean's 9 / 4 x 2
    out = season_difference(terms([2, 0, 1, 1], [1, 2, 3, 4]), zero, *sims)
    assert out["correction_candidate"] == pytest.approx(4.5) and out["correction_incumbent"] == 0.0
    assert out["diff"] == pytest.approx(6.0 + 4.5) and out["diff_ci"][0] < out["diff"] < out["diff_ci"][1]
    assert out["logged_seasons"] == 2 and out["seasons"] == 2 and out["days_per_episode"] == 2
    # a choice of a product sold out earlier that day counts as the demand it was (the simulated seasons play stock)
    sold_out = season_difference(terms([2, 0, 1, 1], [0, 2, 3, 4], demand=[1, 2, 3, 4]), zero, *sims)
    assert sold_out["correction_candidate"] == pytest.approx(4.5)
    assert (out["matched_visits"], out["matched_purchases"], sold_out["matched_purchases"]) == (3, 3, 3)
    assert season_difference(terms([2, 0, 1, 1], [0, 2, 0, 0]), zero, *sims)["matched_purchases"] == 0
    # no logged visit matches the candidate: the simulator alone says +6 a season, and the gate does not take it
    blind = season_difference(terms([0, 0, 0, 0], [1, 2, 3, 4]), zero, *sims)
    assert blind["matched_visits"] == 0 and blind["lcb"] > 0
    verdict = decide(blind, 0.0)
    assert not verdict.deploy and "no logged visit matches" in verdict.reason
    # seasons are the units, resampled whole: a draw's correction is 2, 4.5 or 7 and its simulated part 5, 6 or 7
    assert 5.0 + 2.0 <= out["diff_ci"][0] < out["diff_ci"][1] <= 7.0 + 7.0 and out["diff_ci"][1] > 12.0
    with pytest.raises(ValueError, match="same seeds"):
        season_difference(zero, zero, np.array([1.0, 2.0]), np.array([1.0]))


# ---------------------------------------------------------------------------------------- bad inputs
def test_bad_inputs_are_refused_naming_the_problem(logged, world):
    rows, w = logged
    part = rows[rows["episode"] < 2]
    policy = Constant(LOGGER)
    for col in ("price_propensity", "observation"):
        with pytest.raises(ValueError, match=rf"missing column.*{col}"):
            ope_terms(policy, part.drop(columns=col), w, world)
    with pytest.raises(ValueError, match="action"):
        ope_terms(Constant(np.zeros(3)), part, w, world)
    other = Constant(LOGGER)
    other.action_space = gym.spaces.Box(-1, 1, (5,))  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="action space"):
        ope_terms(other, part, w, world)
    with pytest.raises(ValueError, match=r"price_propensity.*another exploration"):
        ope_terms(policy, part, ExploreWrapper(gym.make(DP, config=CFG), {"epsilon": 0.3, "grid_step": 0.2}), world)
    with pytest.raises(ValueError, match="off the wrapper's price grid"):
        ope_terms(policy, part, ExploreWrapper(gym.make(DP, config=CFG), {"epsilon": 0.5, "grid_step": 0.3}), world)
    with pytest.raises(ValueError, match="another env"):
        ope_terms(policy, part, ExploreWrapper(gym.make(PP, config=PROMO), EXP), world)
    # a policy that takes one observation at a time is called day by day
    a = ope_terms(PerObservation(LOGGER), part, w, world)
    b = ope_terms(policy, part, w, world)
    np.testing.assert_array_equal(a.weight, b.weight)
    with pytest.raises(ValueError, match="same rows"):
        paired_difference(b, ope_terms(policy, rows[rows["episode"] < 3], w, world))
    with pytest.raises(ValueError, match="level"):
        ope_estimate(b, level=0.4)
    with pytest.raises(ValueError, match="estimator"):
        b.terms("snips")
