"""Interaction logs of the market under a randomized logging policy with known propensities.

Each visit is drawn by the world's one visit process (:meth:`Market.sample_visits`): a customer browses
one category and views a few of its products; the customer buys at most one of them or nothing, by the
world's multinomial logit over the viewed products (the same choice the environments simulate). One
row per viewed product; ``purchased`` is 1 on the chosen product's row; ``true_proba`` is the row's
choice probability within its visit.

The logging policy randomizes prices in two ways with the same ladder of multipliers of the list price:
a per-view price test (each view draws its own price), and a switchback test that holds a product's
price for ``switchback_days`` days (every block, a ``switchback_share`` of the products draw one price
for the whole block), so the logs cover reference prices moved by sustained price changes. Either way a
row's price has marginal probability ``price_probs`` of its multiplier (``price_propensity``). Each visit
gets one coupon level with probabilities that depend on an observable segment (the customer's visit
frequency); the product of the two is the row's propensity, so other policies can be evaluated on the
logs by inverse-propensity weighting. The logging shop restocks every night, so stock-outs never censor
the logs; reference prices and fatigue evolve as in the world.

The products a visit shows are the world's uniform display (:meth:`Market.sample_views`): the visit's ``views``
distinct products drawn uniformly from its category's ``display_pool`` products, so the set shown has the exact
propensity ``slate_propensity`` = 1 / C(display_pool, views) and each shown product had probability
``display_propensity`` = views / display_pool of being shown (:data:`DISPLAY_COLUMNS`, after
:data:`LOG_COLUMNS`): what off-policy estimators of a display policy need
(:mod:`promogym.experiments.slate_ope`). The shop's own records are logged as
observable features: coupons sent to each customer in the previous 7 days and its price history of each
product (exponentially weighted averages of the shelf price relative to list at three rates).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import pandas as pd

from promogym.core.config import ConfigBase, param
from promogym.envs.market.customers import CUSTOMER_TYPES
from promogym.envs.market.world import PRICE_HISTORY_NAMES, WEEKDAYS, Market, mnl_from_utility

LOG_FORMAT = 3  # 1: an independent purchase per row; 2: one choice per visit, price history, switchback tests;
#                3: the display's propensities (DISPLAY_COLUMNS)
LOG_COLUMNS: tuple[str, ...] = (
    "day", "weekday", "visit_id", "user_id", "item_id", "user_text", "item_text", "category",
    "is_new_product", "list_price", "unit_cost", "price", "discount", "coupon", "price_paid", "views", "held_price",
    "price_propensity", "coupon_propensity", "propensity", "coupons_last_7d", *PRICE_HISTORY_NAMES,
    "true_customer_type", "reference_price", "fatigue", "true_proba", "revealed_proba", "purchased", "revenue",
    "coupon_cost", "profit",
)
# the uniform display's propensities, after LOG_COLUMNS in the market's logs (rows an env records lack them)
DISPLAY_COLUMNS: tuple[str, ...] = ("display_pool", "slate_propensity", "display_propensity")


@dataclasses.dataclass(frozen=True)
class LoggingPolicy(ConfigBase):
    """The randomized policy that chose the logged prices and coupons."""

    price_multipliers: tuple[float, ...] = param(
        None, "shelf price ladder, as multiples of list price", lo=0.1, hi=5.0,
        factory=lambda: (0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3))
    price_probs: tuple[float, ...] = param(
        None, "probability of each price multiplier", lo=0.0, hi=1.0,
        factory=lambda: (0.06, 0.12, 0.17, 0.3, 0.17, 0.12, 0.06))
    switchback_share: float = param(
        0.5, "share of products whose price is held for a whole switchback block (the rest: a price per view)",
        lo=0.0, hi=1.0)
    switchback_days: int = param(7, "days a held price lasts (a switchback block)", lo=1, hi=365)
    coupon_levels: tuple[float, ...] = param(
        None, "coupon shares of the shelf price", lo=0.0, hi=0.9, factory=lambda: (0.0, 0.05, 0.1, 0.2))
    coupon_probs_frequent: tuple[float, ...] = param(
        None, "coupon level probabilities for daily visitors", lo=0.0, hi=1.0,
        factory=lambda: (0.7, 0.1, 0.1, 0.1))
    coupon_probs_other: tuple[float, ...] = param(
        None, "coupon level probabilities for weekly and monthly visitors", lo=0.0, hi=1.0,
        factory=lambda: (0.4, 0.2, 0.2, 0.2))

    def validate(self) -> None:
        """Check that each probability list has one positive entry per level and sums to 1 (ValueError naming the
        key)."""
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
    """Simulate days of the market until ``n_rows`` viewed products have been logged (the last visit may
    be cut).

    ``progress`` is called with the number of rows added after each simulated day.
    The same market, row count, seed and policy always give the same table.
    """
    if n_rows < 1:
        raise ValueError(f"n_rows must be >= 1, got {n_rows}")
    policy = policy or LoggingPolicy()
    rng = np.random.default_rng(seed)
    state = market.initial_state()
    cus = market.customers
    list_price = market.catalog.list_price
    mult = np.asarray(policy.price_multipliers)
    price_p = np.asarray(policy.price_probs)
    levels = np.asarray(policy.coupon_levels)
    coupon_p = np.stack([policy.coupon_probs_frequent, policy.coupon_probs_other])
    coupon_cdf = np.cumsum(coupon_p, axis=1)
    price_cdf = np.cumsum(price_p)

    def draw_prices(size: int) -> np.ndarray:
        return np.searchsorted(price_cdf, rng.random(size), side="right").clip(max=len(mult) - 1)

    held = np.zeros(market.n_products, bool)
    held_idx = np.zeros(market.n_products, np.int64)
    chunks: list[dict[str, np.ndarray]] = []
    total = visit_offset = 0
    while total < n_rows:
        if state.day % policy.switchback_days == 0:  # a new switchback block
            held = rng.random(market.n_products) < policy.switchback_share
            held_idx = draw_prices(market.n_products)
        visits = market.sample_visits(state.day, rng)
        visitors, views = visits.users, visits.views
        shown = views >= 0
        n_vis = len(visitors)
        coupons_last_7d = state.coupons_last_7d()
        segment = (cus.visit_band[visitors] != 0).astype(np.int64)
        coupon_idx = (rng.random(n_vis)[:, None] > coupon_cdf[segment]).sum(axis=1)
        items2 = np.maximum(views, 0)
        price_idx2 = np.where(held[items2], held_idx[items2], draw_prices(views.size).reshape(views.shape))
        price2 = np.round(list_price[items2] * mult[price_idx2], 2)
        coupon2 = np.broadcast_to(levels[coupon_idx][:, None], views.shape)
        users2 = np.broadcast_to(visitors[:, None], views.shape)
        choice_p = mnl_from_utility(market.utility(users2, items2, price2, coupon2, state), shown)
        revealed_p = market.revealed_choice_proba(users2, items2, price2, coupon2, state, shown,
                                                  seed=int(rng.integers(2**31)))
        pos = (rng.random(n_vis)[:, None] > np.cumsum(choice_p, axis=1)).sum(axis=1)  # == width: nothing bought
        bought2 = np.arange(views.shape[1])[None, :] == pos[:, None]
        visit = np.broadcast_to(np.arange(n_vis)[:, None], views.shape)[shown]
        items = views[shown]
        history = state.price_features(items)
        pool_size, slate_p = market.display_propensity(visits.categories, shown.sum(axis=1))
        chunks.append({
            "day": np.full(len(items), state.day, dtype=np.int64),
            "visit_id": visit + visit_offset,
            "user_id": visitors[visit],
            "item_id": items,
            "price": price2[shown],
            "coupon": coupon2[shown],
            "views": shown.sum(axis=1)[visit],
            "held_price": held[items],
            "price_propensity": price_p[price_idx2[shown]],
            "coupon_propensity": coupon_p[segment[visit], coupon_idx[visit]],
            "coupons_last_7d": coupons_last_7d[visitors[visit]],
            **{k: v.copy() for k, v in history.items()},
            "reference_price": state.reference_price[items].copy(),
            "fatigue": state.fatigue[visitors[visit]].copy(),
            "true_proba": choice_p[shown],
            "revealed_proba": revealed_p[shown],
            "purchased": bought2[shown],
            "display_pool": pool_size[visit],
            "slate_propensity": slate_p[visit],
        })
        market.end_of_day(state, items, price2[shown], visitors[coupon_idx > 0])
        visit_offset += n_vis
        total += len(items)
        if progress is not None:
            progress(len(items))
    cols = {k: np.concatenate([c[k] for c in chunks])[:n_rows] for k in chunks[0]}
    df = _assemble(market, cols)
    df["display_pool"] = cols["display_pool"].astype(np.int64)
    df["slate_propensity"] = cols["slate_propensity"]
    df["display_propensity"] = df["views"].to_numpy() / df["display_pool"].to_numpy()
    return df


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
        "views": c["views"].astype(np.int64),
        "held_price": c["held_price"].astype(bool),
        "price_propensity": c["price_propensity"],
        "coupon_propensity": c["coupon_propensity"],
        "propensity": c["price_propensity"] * c["coupon_propensity"],
        "coupons_last_7d": c["coupons_last_7d"].astype(np.int64),
        **{name: c[name] for name in PRICE_HISTORY_NAMES},
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
