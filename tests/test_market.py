"""The world behaves like a market: each behaviour a pricing team relies on, checked on the truth."""

import re

import numpy as np
import pytest

from promogym.envs.market import CUSTOMER_TYPES, Market, MarketConfig
from promogym.envs.market.analysis import elasticities, typical_pairs
from promogym.envs.market.customers import _TYPE_PHRASES

TYPE = {t.name: i for i, t in enumerate(CUSTOMER_TYPES)}


def _probs(market, users, items, mult, coupon=0.0, fatigue=0.0, ref_mult=1.0):
    lp = market.catalog.list_price[items]
    ctx = {"reference_price": lp * ref_mult, "fatigue": np.full(len(users), fatigue)}
    return market.true_purchase_proba(users, items, lp * mult, np.full(len(users), coupon), ctx)


def test_world_is_deterministic_in_its_seed():
    a, b, c = Market({"seed": 1}), Market({"seed": 1}), Market({"seed": 2})
    assert a.customers.text == b.customers.text and a.catalog.text == b.catalog.text
    np.testing.assert_array_equal(a.catalog.list_price, b.catalog.list_price)
    assert a.customers.text != c.customers.text


def test_default_world_size_and_new_products(market):
    assert market.n_products == 200 and market.n_customers == 5000
    assert len(set(market.catalog.category)) == 10
    assert market.catalog.is_new.sum() == 30
    # every category keeps products seen in training
    assert set(market.catalog.category[~market.catalog.is_new]) == set(range(10))
    assert (market.catalog.unit_cost < market.catalog.list_price).all()


def test_texts_vary_reveal_the_type_and_hold_no_personal_data(market):
    texts = market.customers.text
    assert len(set(texts)) > 0.95 * len(texts)
    for name, phrases in _TYPE_PHRASES.items():
        users = np.flatnonzero(market.customers.ctype == TYPE[name])
        used = {p for u in users[:300] for p in phrases if texts[u].startswith(p)}
        assert len(used) >= 3, name  # several wordings per type
        assert all(any(texts[u].startswith(p) for p in phrases) for u in users)
    everything = " ".join(texts + market.catalog.text)
    assert "@" not in everything and not re.search(r"\d{5,}", everything)
    assert len(set(market.catalog.text)) == market.n_products


@pytest.mark.parametrize("ctype", [t.name for t in CUSTOMER_TYPES])
def test_purchase_probability_falls_with_own_price(market, rng, ctype):
    users, items = typical_pairs(market, TYPE[ctype], 500, rng)
    curve = np.stack([_probs(market, users, items, m) for m in np.linspace(0.5, 2.0, 16)])
    assert (np.diff(curve, axis=0) < 0).all()


def test_coupons_lift_persuadable_types_not_buys_anyway_and_hurt_promo_averse(market, rng):
    lift = {}
    for name, t in TYPE.items():
        users, items = typical_pairs(market, t, 3000, rng)
        lift[name] = _probs(market, users, items, 1.0, coupon=0.2).mean() / _probs(
            market, users, items, 1.0).mean() - 1
    assert lift["deal_seeker"] > 1.0 and lift["regular"] > 0.4
    assert 0 < lift["buys_anyway"] < 0.2 < lift["regular"]
    assert lift["promo_averse"] < -0.2


def test_price_above_reference_hurts_more_than_same_cut_helps(market, rng):
    h = np.log(1.1)
    for t in TYPE.values():
        users, items = typical_pairs(market, t, 1000, rng)
        lp = market.catalog.list_price[items]
        zero = np.zeros(len(users))
        ctx = {"reference_price": lp}
        u0 = market.utility(users, items, lp, zero, ctx)
        hurt = u0 - market.utility(users, items, lp * np.exp(h), zero, ctx)
        helps = market.utility(users, items, lp * np.exp(-h), zero, ctx) - u0
        assert (hurt > helps).all()


def test_fatigue_lowers_coupon_response(market, rng):
    users, items = typical_pairs(market, TYPE["deal_seeker"], 3000, rng)
    base = _probs(market, users, items, 1.0).mean()
    fresh = _probs(market, users, items, 1.0, coupon=0.2).mean() - base
    tired = _probs(market, users, items, 1.0, coupon=0.2, fatigue=3.0).mean() - base
    assert 0 < tired < 0.6 * fresh


def test_state_dynamics_fatigue_and_reference_prices(market):
    state = market.initial_state()
    items = np.array([0, 0, 1])
    market.end_of_day(state, items, market.catalog.list_price[items] * 0.8, np.array([5, 5, 9]))
    assert state.day == 1
    assert state.fatigue[5] == 2 and state.fatigue[9] == 1 and state.fatigue[0] == 0
    rho = market.config.reference_adaptation
    np.testing.assert_allclose(state.reference_price[0], market.catalog.list_price[0] * (1 - 0.2 * rho))
    assert state.reference_price[2] == market.catalog.list_price[2]
    for _ in range(60):  # a long promotion resets expectations: list price now feels like a loss
        market.end_of_day(state, np.array([0]), market.catalog.list_price[[0]] * 0.8, np.array([], int))
    assert state.fatigue[5] < 0.01
    np.testing.assert_allclose(state.reference_price[0], market.catalog.list_price[0] * 0.8, rtol=0.01)
    users, item = np.arange(200), np.zeros(200, dtype=int)
    lp = market.catalog.list_price[item]
    after = market.true_purchase_proba(users, item, lp, np.zeros(200), state)
    before = market.true_purchase_proba(users, item, lp, np.zeros(200), market.initial_state(day=state.day))
    assert (after < before).all()


def test_weekly_seasonality_in_arrivals(market):
    rng = np.random.default_rng(0)
    counts = np.array([[len(market.sample_visitors(w * 7 + d, rng)) for d in range(7)] for w in range(12)])
    weekday, weekend = counts[:, :5].mean(), counts[:, 5:].mean()
    se = np.sqrt(counts[:, :5].mean() / counts[:, :5].size + counts[:, 5:].mean() / counts[:, 5:].size)
    assert (weekend - weekday) / se > 10
    np.testing.assert_allclose(counts.mean(axis=0), market.arrival_rate(np.arange(7)), rtol=0.03)


def test_elasticities_per_type_are_plausible(market):
    el = elasticities(market, n_pairs=2000)
    for name, r in el.items():
        assert -4.0 <= r["elasticity_arc"] <= -0.5, (name, r["elasticity_arc"])
        assert r["elasticity_rise"] < r["elasticity_cut"] < 0  # loss aversion: rises hurt more


def test_choice_probabilities_substitute_between_products(market, rng):
    users = np.repeat(rng.integers(0, market.n_customers, 50)[:, None], 3, axis=1)
    items = np.tile(market.items_in_category(0)[:3], (50, 1))
    price = market.catalog.list_price[items]
    coupon = np.zeros_like(price)
    p = market.choice_proba(users, items, price, coupon)
    assert ((p > 0) & (p.sum(axis=1, keepdims=True) < 1)).all()
    price_up = price.copy()
    price_up[:, 0] *= 1.3
    q = market.choice_proba(users, items, price_up, coupon)
    assert (q[:, 0] < p[:, 0]).all() and (q[:, 1:] > p[:, 1:]).all()  # substitution, not just lost sales
    sold_out = market.choice_proba(users, items, price, coupon, available=np.array([True, False, True]))
    assert (sold_out[:, 1] == 0).all()


def test_revealed_probability_is_the_mean_over_hidden_idiosyncrasies():
    # With no hidden product appeal, averaging the true probability over many customers integrates the
    # hidden customer taste and price-sensitivity deviation; the quadrature must agree.
    m = Market(MarketConfig(n_customers=40_000, product_noise=0.0, seed=5))
    users = np.arange(m.n_customers)
    for item, mult, coupon in [(3, 1.0, 0.0), (17, 0.7, 0.2), (42, 1.3, 0.1)]:
        items = np.full(len(users), item)
        price = np.full(len(users), m.catalog.list_price[item] * mult)
        cp = np.full(len(users), coupon)
        true_p = m.true_purchase_proba(users, items, price, cp)
        revealed = m.revealed_purchase_proba(users, items, price, cp)
        se = true_p.std() / np.sqrt(len(users))
        assert abs(true_p.mean() - revealed.mean()) < 4 * se + 1e-4


def test_context_rejects_unknown_keys(market):
    with pytest.raises(ValueError, match="refprice"):
        market.true_purchase_proba([0], [0], [10.0], [0.0], {"refprice": [1.0]})
