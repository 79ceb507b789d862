"""Behavioural summaries of the market: demand curves, elasticities and coupon response per type.

These are the numbers that say whether the world behaves like a market; the README's figures and the
market tests both come from here.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from promogym.envs.market.customers import CUSTOMER_TYPES
from promogym.envs.market.world import Market


def typical_pairs(market: Market, ctype: int, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``n`` (customer, product) pairs: customers of ``ctype`` viewing a product they would browse."""
    pool = np.flatnonzero(market.customers.ctype == ctype)
    users = rng.choice(pool, size=n)
    items = market.sample_items_in(market.sample_categories(users, rng), rng)
    return users, items


def demand_curves(market: Market, multipliers: np.ndarray, n_pairs: int = 4000,
                  seed: int = 0) -> dict[str, np.ndarray]:
    """Mean true purchase probability per customer type at each price multiplier of the list price
    (reference price = list price, no coupon, no fatigue)."""
    rng = np.random.default_rng(seed)
    curves = {}
    for t, ct in enumerate(CUSTOMER_TYPES):
        users, items = typical_pairs(market, t, n_pairs, rng)
        lp = market.catalog.list_price[items]
        curves[ct.name] = np.array([
            market.true_purchase_proba(users, items, lp * m, np.zeros(n_pairs)).mean() for m in multipliers])
    return curves


def elasticities(market: Market, step: float = 0.05, n_pairs: int = 4000, seed: int = 0) -> dict[str, Any]:
    """Own-price elasticities at list price per customer type (reference price = list price).

    ``arc`` spans a cut and a rise of ``step``; ``rise`` and ``cut`` are one-sided, and differ by
    loss aversion around the reference price. Also the purchase probability at list price and the
    relative lift of a 20% coupon (without and with fatigue 3).
    """
    rng = np.random.default_rng(seed)
    out: dict[str, Any] = {}
    for t, ct in enumerate(CUSTOMER_TYPES):
        users, items = typical_pairs(market, t, n_pairs, rng)
        lp = market.catalog.list_price[items]

        def p(mult: float, coupon: float = 0.0, fatigue: float = 0.0, u=users, i=items, lp=lp) -> float:
            ctx = {"fatigue": np.full(len(u), fatigue)}
            return float(market.true_purchase_proba(u, i, lp * mult, np.full(len(u), coupon), ctx).mean())

        p0, up, down = p(1.0), p(1 + step), p(1 - step)
        out[ct.name] = {
            "purchase_proba_at_list": p0,
            "elasticity_arc": (np.log(up) - np.log(down)) / (np.log(1 + step) - np.log(1 - step)),
            "elasticity_rise": (np.log(up) - np.log(p0)) / np.log(1 + step),
            "elasticity_cut": (np.log(down) - np.log(p0)) / np.log(1 - step),
            "coupon20_lift": p(1.0, 0.2) / p0 - 1.0,
            "coupon20_lift_fatigued": p(1.0, 0.2, 3.0) / p0 - 1.0,
            "coupon20_uplift_abs": p(1.0, 0.2) - p0,
        }
    return out
