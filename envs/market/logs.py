"""Interaction logs of the market under a randomized logging policy with known propensities.

Each visit shows a customer a few products of one category. The logging policy randomizes each
shown shelf price over a ladder of multipliers of the list price (a price test) and gives each visit
one coupon level, with probabilities that depend on an observable segment (the customer's visit
frequency); the product of the two probabilities is the row's propensity, so any other policy can
be evaluated on the logs by inverse-propensity weighting. The logging shop restocks every night, so
stock-outs never censor the logs; reference prices and fatigue evolve as in the world. The shop's own
record of coupons sent to each customer in the previous 7 days is logged as an observable feature.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import pandas as pd

from promogym.core.config import ConfigBase, param
from promogym.envs.market.customers import CUSTOMER_TYPES
from promogym.envs.market.world import WEEKDAYS, Market

LOG_COLUMNS: tuple[str, ...] = (
    "day", "weekday", "visit_id", "user_id", "item_id", "user_text", "item_text", "category",
    "is_new_product", "list_price", "unit_cost", "price", "discount", "coupon", "price_paid",
    "price_propensity", "coupon_propensity", "propensity", "coupons_last_7d", "true_customer_type",
    "reference_price", "fatigue", "true_proba", "revealed_proba", "purchased", "revenue", "coupon_cost", "profit",
)


@dataclasses.dataclass(frozen=True)
class LoggingPolicy(ConfigBase):
    """The randomized policy that chose the logged prices and coupons."""

    price_multipliers: tuple[float, ...] = param(
        None, "shelf price ladder, as multiples of list price", lo=0.1, hi=5.0,
        factory=lambda: (0.8, 0.9, 1.0, 1.1, 1.2))
    price_probs: tuple[float, ...] = param(
        None, "probability of each price multiplier", lo=0.0, hi=1.0,
        factory=lambda: (0.15, 0.2, 0.3, 0.2, 0.15))
    coupon_levels: tuple[float, ...] = param(
        None, "coupon shares of the shelf price", lo=0.0, hi=0.9, factory=lambda: (0.0, 0.05, 0.1, 0.2))
    coupon_probs_frequent: tuple[float, ...] = param(
        None, "coupon level probabilities for daily visitors", lo=0.0, hi=1.0,
        factory=lambda: (0.7, 0.1, 0.1, 0.1))
    coupon_probs_other: tuple[float, ...] = param(
        None, "coupon level probabilities for weekly and monthly visitors", lo=0.0, hi=1.0,
        factory=lambda: (0.4, 0.2, 0.2, 0.2))

    def validate(self) -> None:
        pairs = [("price_probs", self.price_probs, self.price_multipliers),
                 ("coupon_probs_frequent", self.coupon_probs_frequent, self.coupon_levels),
                 ("coupon_probs_other", self.coupon_probs_other, self.coupon_levels)]
        for name, probs, levels in pairs:
            if len(probs) != len(levels):
                raise ValueError(f"LoggingPolicy.{name} needs {len(levels)} entries, got {len(probs)}")
            if abs(sum(probs) - 1.0) > 1e-6:
                raise ValueError(f"LoggingPolicy.{name} must sum to 1, got {sum(probs):.6f}")
            if min(probs) <= 0:
                raise ValueError(f"LoggingPolicy.{name} must be positive for every level (propensities > 0)")


def generate_logs(market: Market, n_rows: int, seed: int, policy: LoggingPolicy | None = None,
                  progress: Callable[[int], None] | None = None) -> pd.DataFrame:
    """Simulate days of the market until ``n_rows`` offers have been logged.

    ``progress`` is called with the number of rows added after each simulated day.
    The same market, row count, seed and policy always give the same table.
    """
    if n_rows < 1:
        raise ValueError(f"n_rows must be >= 1, got {n_rows}")
    policy = policy or LoggingPolicy()
    rng = np.random.default_rng(seed)
    state = market.initial_state()
    cat, cus = market.catalog, market.customers
    mult = np.asarray(policy.price_multipliers)
    price_p = np.asarray(policy.price_probs)
    levels = np.asarray(policy.coupon_levels)
    coupon_p = np.stack([policy.coupon_probs_frequent, policy.coupon_probs_other])
    coupon_cdf = np.cumsum(coupon_p, axis=1)
    price_cdf = np.cumsum(price_p)
    chunks: list[dict[str, np.ndarray]] = []
    total = visit_offset = 0
    extra_views = market.config.views_per_visit
    while total < n_rows:
        visitors = market.sample_visitors(state.day, rng)
        coupons_last_7d = state.coupons_last_7d()
        n_vis = len(visitors)
        segment = (cus.visit_band[visitors] != 0).astype(np.int64)
        coupon_idx = (rng.random(n_vis)[:, None] > coupon_cdf[segment]).sum(axis=1)
        views = 1 + rng.poisson(extra_views, size=n_vis)
        visit = np.repeat(np.arange(n_vis), views)
        users = visitors[visit]
        categories = np.repeat(market.sample_categories(visitors, rng), views)
        items = market.sample_items_in(categories, rng)
        price_idx = np.searchsorted(price_cdf, rng.random(len(items)), side="right").clip(max=len(mult) - 1)
        price = np.round(cat.list_price[items] * mult[price_idx], 2)
        coupon = levels[coupon_idx[visit]]
        true_p = market.true_purchase_proba(users, items, price, coupon, state)
        revealed_p = market.revealed_purchase_proba(users, items, price, coupon, state)
        bought = rng.random(len(items)) < true_p
        cp = coupon_p[segment[visit], coupon_idx[visit]]
        chunks.append({
            "day": np.full(len(items), state.day, dtype=np.int64),
            "visit_id": visit + visit_offset,
            "user_id": users,
            "item_id": items,
            "price": price,
            "coupon": coupon,
            "price_propensity": price_p[price_idx],
            "coupon_propensity": cp,
            "coupons_last_7d": coupons_last_7d[users],
            "reference_price": state.reference_price[items].copy(),
            "fatigue": state.fatigue[users].copy(),
            "true_proba": true_p,
            "revealed_proba": revealed_p,
            "purchased": bought,
        })
        market.end_of_day(state, items, price, visitors[coupon_idx > 0])
        visit_offset += n_vis
        total += len(items)
        if progress is not None:
            progress(len(items))
    cols = {k: np.concatenate([c[k] for c in chunks])[:n_rows] for k in chunks[0]}
    return _assemble(market, cols)


def _assemble(market: Market, c: dict[str, np.ndarray]) -> pd.DataFrame:
    cat, cus = market.catalog, market.customers
    users, items, price, coupon = c["user_id"], c["item_id"], c["price"], c["coupon"]
    list_price = cat.list_price[items]
    unit_cost = cat.unit_cost[items]
    bought = c["purchased"]
    revenue = np.where(bought, price, 0.0)
    coupon_cost = np.where(bought, price * coupon, 0.0)
    profit = revenue - np.where(bought, unit_cost, 0.0) - coupon_cost
    type_names = [t.name for t in CUSTOMER_TYPES]
    df = pd.DataFrame({
        "day": c["day"],
        "weekday": pd.Categorical.from_codes(c["day"] % 7, categories=pd.Index(WEEKDAYS)),
        "visit_id": c["visit_id"],
        "user_id": users,
        "item_id": items,
        "user_text": _text_column(cus.text, users),
        "item_text": _text_column(cat.text, items),
        "category": pd.Categorical.from_codes(cat.category[items], categories=pd.Index(cat.category_names)),
        "is_new_product": cat.is_new[items],
        "list_price": list_price,
        "unit_cost": unit_cost,
        "price": price,
        "discount": np.round(1.0 - price / list_price, 4),
        "coupon": coupon,
        "price_paid": np.round(price * (1.0 - coupon), 2),
        "price_propensity": c["price_propensity"],
        "coupon_propensity": c["coupon_propensity"],
        "propensity": c["price_propensity"] * c["coupon_propensity"],
        "coupons_last_7d": c["coupons_last_7d"].astype(np.int64),
        "true_customer_type": pd.Categorical.from_codes(cus.ctype[users], categories=pd.Index(type_names)),
        "reference_price": c["reference_price"],
        "fatigue": c["fatigue"],
        "true_proba": c["true_proba"],
        "revealed_proba": c["revealed_proba"],
        "purchased": bought.astype(np.int8),
        "revenue": revenue,
        "coupon_cost": coupon_cost,
        "profit": profit,
    })
    return df[list(LOG_COLUMNS)]


def _text_column(texts: tuple[str, ...], ids: np.ndarray) -> pd.Series:
    """Text per row as a categorical: the log stores each distinct text once."""
    uniq, inverse = np.unique(np.asarray(texts, dtype=object), return_inverse=True)
    return pd.Series(pd.Categorical.from_codes(inverse[ids], categories=pd.Index(uniq)))
