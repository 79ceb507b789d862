"""One visit process and one price history: the logs and the pricing envs draw visits, browsed categories and
viewed products by the market's own functions, and models read the same price-history values in both."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import promogym.envs  # noqa: F401 (registers the envs)
from promogym.envs.families import family_of
from promogym.envs.market import Market
from promogym.envs.market.logs import LoggingPolicy, generate_logs
from promogym.envs.market.world import PRICE_HISTORY_NAMES, PRICE_HISTORY_RATES


def _pricing_ids() -> list[str]:
    ids = []
    for env_id in gym.registry:
        if env_id.startswith("promogym/"):
            try:
                if family_of(env_id).name == "pricing":
                    ids.append(env_id)
            except (KeyError, ValueError):
                continue
    return ids


@pytest.fixture(scope="module")
def logs():
    return generate_logs(Market(), 60_000, seed=3)


def _visit_table(logs, market: Market, categories: np.ndarray):
    """Per logged visit: visitor, browsed category (the category of its rows), whether it is a favourite."""
    first = logs.groupby("visit_id", sort=False).first()
    users = first["user_id"].to_numpy()
    cats = market.catalog.category[first["item_id"].to_numpy()]
    keep = np.isin(cats, categories)
    fav = market.customers.favourites[users]
    return users[keep], cats[keep], (fav[:, 0] == cats)[keep], (fav[:, 1] == cats)[keep]


@pytest.mark.parametrize("env_id", _pricing_ids())
def test_pricing_env_visits_match_the_logs(env_id: str, logs) -> None:
    env = gym.make(env_id).unwrapped
    env.reset(seed=0)
    market = env.market
    users_l, cats_l, fav0_l, fav1_l = _visit_table(logs, market, env.categories)
    users_e, views_e = env.visitor_sample(20_000, seed=1)
    cats_e = market.catalog.category[views_e[:, 0]]
    fav = market.customers.favourites[users_e]
    # the category each visitor browses: first favourite ~ half the visits, as in the logs (no forcing)
    for share_l, share_e in ((fav0_l.mean(), (fav[:, 0] == cats_e).mean()),
                             (fav1_l.mean(), (fav[:, 1] == cats_e).mean())):
        se = np.sqrt(share_l * (1 - share_l) / len(fav0_l) + share_e * (1 - share_e) / len(cats_e))
        assert abs(share_l - share_e) < 4 * se, (share_l, share_e)
    # the split over the env's categories
    for c in env.categories:
        pl, pe = (cats_l == c).mean(), (cats_e == c).mean()
        se = np.sqrt(pl * (1 - pl) / len(cats_l) + pe * (1 - pe) / len(cats_e))
        assert abs(pl - pe) < 4 * se, (c, pl, pe)
    # who visits: the share of daily visitors
    band = market.customers.visit_band
    pl, pe = (band[users_l] == 0).mean(), (band[users_e] == 0).mean()
    se = np.sqrt(pl * (1 - pl) / len(users_l) + pe * (1 - pe) / len(users_e))
    assert abs(pl - pe) < 4 * se, (pl, pe)
    # views: 1 + Poisson(views_per_visit) distinct products, capped by what the env sells in the category
    n_views = (views_e >= 0).sum(axis=1)
    pool = np.array([(env.pool[c] >= 0).sum() for c in cats_e])
    lam = market.config.views_per_visit
    rng = np.random.default_rng(0)
    expected = np.minimum(1 + rng.poisson(lam, size=(50, len(pool))), pool).mean()
    assert abs(n_views.mean() - expected) < 0.02 * expected
    assert all(len(set(r[r >= 0])) == (r >= 0).sum() for r in views_e[:500])  # distinct products


def test_logged_views_follow_the_same_rule(logs) -> None:
    market = Market()
    views = logs.groupby("visit_id")["item_id"].agg(["size", "nunique"])
    assert (views["size"] == views["nunique"]).all()  # distinct products per visit
    first = logs.groupby("visit_id").first()
    pool = np.bincount(market.catalog.category, minlength=market.config.n_categories)[
        market.catalog.category[first["item_id"].to_numpy()]]
    rng = np.random.default_rng(0)
    expected = np.minimum(1 + rng.poisson(market.config.views_per_visit, size=(20, len(pool))), pool).mean()
    assert abs(views["size"].iloc[:-1].mean() - expected) < 0.02 * expected


def test_env_thins_arrivals_to_keep_its_daily_traffic() -> None:
    env = gym.make(_pricing_ids()[0]).unwrapped
    env.reset(seed=0)
    counts = [len(env._visits(rng=np.random.default_rng(k))[0]) for k in range(60)]
    expected = env.config.daily_customers * env.season_factor(env.state.day)
    assert abs(np.mean(counts) - expected) < 4 * np.sqrt(expected / 60)


def test_one_choice_per_visit_by_the_worlds_mnl(logs) -> None:
    per_visit = logs.groupby("visit_id")
    assert per_visit["purchased"].sum().max() == 1
    assert (per_visit["true_proba"].sum() < 1).all()
    single = logs[logs["views"] == 1]
    m = Market()
    u = m.utility(single["user_id"].to_numpy(), single["item_id"].to_numpy(), single["price"].to_numpy(),
                  single["coupon"].to_numpy(), {"day": single["day"].to_numpy(),
                                                "reference_price": single["reference_price"].to_numpy(),
                                                "fatigue": single["fatigue"].to_numpy()})
    np.testing.assert_allclose(single["true_proba"].to_numpy(), 1 / (1 + np.exp(-u)), rtol=1e-9)


def test_logged_price_history_is_the_ewma_of_shown_prices() -> None:
    market = Market({"n_products": 20, "n_categories": 2, "n_customers": 200, "daily_arrivals": 400})
    policy = LoggingPolicy(switchback_share=1.0, switchback_days=3)  # every price held: one price a day
    logs = generate_logs(market, 20_000, seed=1, policy=policy)
    days = int(logs["day"].max())
    hist = np.ones((len(PRICE_HISTORY_RATES), market.n_products))
    for d in range(days):
        rows = logs[logs["day"] == d]
        for k, name in enumerate(PRICE_HISTORY_NAMES):
            got = rows.groupby("item_id")[name].first()
            np.testing.assert_allclose(got.to_numpy(), hist[k, got.index.to_numpy()], rtol=1e-12)
        shown = rows.groupby("item_id")["price"].mean()
        rel = shown.to_numpy() / market.catalog.list_price[shown.index.to_numpy()]
        for k, rate in enumerate(PRICE_HISTORY_RATES):
            hist[k, shown.index.to_numpy()] += rate * (rel - hist[k, shown.index.to_numpy()])


class _Recorder:
    """A conversion model that records the offers it is asked about (and answers a constant)."""

    name = "recorder"

    def __init__(self) -> None:
        self.seen: list[dict] = []

    def predict_proba(self, batch):
        self.seen.append({k: np.asarray(v).copy() for k, v in batch.items()})
        return np.full(len(np.asarray(batch["price"])), 0.05)


@pytest.mark.parametrize("env_id", _pricing_ids())
def test_env_passes_the_same_price_history_the_logs_carry(env_id: str) -> None:
    model = _Recorder()
    env = gym.make(env_id, config={"response": model}).unwrapped
    env.reset(seed=0)
    n = env.config.n_products
    rng = np.random.default_rng(0)
    hist = np.ones((len(PRICE_HISTORY_RATES), n))
    for _ in range(6):
        action = rng.uniform(-1, 1, size=env.action_space.shape).astype(np.float32)
        model.seen.clear()
        env.step(action)
        offers = model.seen[0]
        idx = env.env_index[offers["item_id"]]
        real = idx >= 0  # the padding of view sets points at some catalog product, never available
        assert real.sum() > 100
        for k, name in enumerate(PRICE_HISTORY_NAMES):
            np.testing.assert_allclose(offers[name][real], hist[k, idx[real]], rtol=1e-12)
        rel = env.prices / env.list_price  # every product of the env is viewed on a day of 250 visits
        hist += np.asarray(PRICE_HISTORY_RATES)[:, None] * (rel[None, :] - hist)


def test_world_config_drops_the_simulators_pessimism() -> None:
    from promogym.envs.base import world_config

    cfg = {"uncertainty_penalty": 1.0, "response": "bert:some/model", "horizon": 7}
    assert world_config(cfg) == {"response": "world", "horizon": 7}
    with pytest.raises(ValueError, match="uncertainty_penalty needs a learned response model"):
        gym.make(_pricing_ids()[0], config={"uncertainty_penalty": 1.0})
    gym.make(_pricing_ids()[0], config=world_config(cfg))  # a run trained with the penalty plays in the world


def test_every_env_category_has_products_to_view() -> None:
    with pytest.raises(ValueError, match=r"n_products \(1\) must be at least the number of categories \(2\)"):
        gym.make(_pricing_ids()[0], config={"n_products": 1, "categories": [0, 1]})


def test_price_promo_reserves_coupons_against_the_viewed_products_only() -> None:
    ids = [e for e in _pricing_ids() if gym.spec(e).entry_point.endswith("PricePromoEnv")]
    env = gym.make(ids[0], config={"budget": 1e9}).unwrapped
    env.reset(seed=0)
    reserved: list[np.ndarray] = []
    original = env._reserve

    def spy(worst, budget_left):
        reserved.append(np.asarray(worst).copy())
        return original(worst, budget_left)

    env._reserve = spy
    action = np.ones(env.action_space.shape, np.float32)  # top prices and the top coupon level for all
    env.step(action)
    o = env.last_offers
    top_level = max(env.config.coupon_levels)
    viewed = np.where(o.available, o.price, 0.0).max(axis=1)  # stock is full on day 0: available = viewed
    np.testing.assert_allclose(reserved[0], top_level * viewed)
