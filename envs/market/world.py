"""The ground-truth market: utilities, true purchase probabilities, arrivals and market dynamics.

One quantity links the world, the logs and the conversion model: the utility ``u(user, product,
offer, state)``. A logged row is one customer shown one offer, who buys with probability
``sigmoid(u)``. Where several products are shown at once, the choice among them is a multinomial
logit with an outside option over the same utilities (:meth:`Market.choice_proba`).

Each visit follows one process, in the logs and in every environment (:meth:`Market.sample_visits`):
a visitor arrives (by activity), browses one category (a favourite most of the time), views
``1 + Poisson(views_per_visit)`` distinct products of it, and buys at most one of them or nothing, by
the multinomial logit with an outside option over the viewed products' utilities (one product
viewed: ``sigmoid(u)``).

Utility of customer ``c`` for product ``j`` at shelf price ``p``, coupon share ``k`` on day ``d``::

    u = a_type + taste_c                                       (taste_c hidden)
        + w_aff * [category of j is a favourite of c]
        + w_q * quality_taste_c * quality_j
        + w_tier * match(tier preference of c, brand tier of j)
        + appeal_j - 0.4 * log(list_j / category base price)   (appeal_j hidden)
        + w_weekend * [d is Saturday or Sunday]
        - eta_type * (1 + dev_c) * log(p * (1 - k) / list_j)  (dev_c hidden)
        - w_comp * max(0, p * (1 - k) / list_j - 1)^2         (rival shops sell at list price)
        + gain_type * max(0, log(r_j / p)) - loss_type * max(0, log(p / r_j))   (reference price r_j)
        + [k > 0] * promo_type * (exp(-s * fatigue_c) if promo_type > 0 else 1)

Reference prices, fatigue and stock are explicit state (:class:`MarketState`), never hidden globals.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np

from promogym.envs.market.catalog import CATEGORIES, Catalog, make_catalog
from promogym.envs.market.config import MarketConfig
from promogym.envs.market.customers import (
    CUSTOMER_TYPES,
    GAIN,
    INTERCEPT,
    LOSS,
    PRICE_SENS,
    PROMO,
    Customers,
    make_customers,
)

# match(tier preference, product tier): rows budget/neutral/premium preference, columns budget/mid/premium
TIER_MATCH = np.array([[1.0, 0.0, -1.0], [0.0, 0.0, 0.0], [-0.75, 0.0, 1.0]])
# Weekly arrival shape, Monday first: mean 0, maximum 1 (Saturday).
WEEKLY_SHAPE = np.array([-0.6, -0.8, -0.6, -0.2, 0.3, 1.0, 0.9])
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_GH_NODES, _GH_WEIGHTS = np.polynomial.hermite.hermgauss(24)


def sigmoid(x: np.ndarray) -> np.ndarray:
    """The logistic function ``1 / (1 + exp(-x))``, elementwise (computed with tanh, so it never overflows)."""
    return 0.5 * (1.0 + np.tanh(0.5 * x))


# Daily rates of the shop's exponentially weighted averages of each product's shelf price (half-lives of
# about 1, 4 and 14 days). The world's own reference-price adaptation rate is none of them: it stays hidden.
PRICE_HISTORY_RATES: tuple[float, ...] = (0.5, 0.15, 0.05)
PRICE_HISTORY_NAMES: tuple[str, ...] = ("price_hist_fast", "price_hist_mid", "price_hist_slow")


@dataclasses.dataclass
class MarketState:
    """The market's dynamic state: everything that changes as days pass."""

    day: int
    reference_price: np.ndarray  # per product (latent)
    fatigue: np.ndarray          # per customer (latent)
    stock: np.ndarray            # per product, int64
    coupon_days: np.ndarray      # (7, customers): coupons each customer got on each of the last 7 days
    price_history: np.ndarray    # (len(PRICE_HISTORY_RATES), products): the shop's EWMAs of shelf price / list

    def copy(self) -> MarketState:
        """A deep copy (every array copied)."""
        return MarketState(self.day, self.reference_price.copy(), self.fatigue.copy(), self.stock.copy(),
                           self.coupon_days.copy(), self.price_history.copy())

    def coupons_last_7d(self) -> np.ndarray:
        """Coupons each customer received in the previous 7 days: the shop's own, observable record."""
        return self.coupon_days.sum(axis=0)

    def price_features(self, items: np.ndarray) -> dict[str, np.ndarray]:
        """The shop's own price history of ``items`` (observable): EWMAs of shelf price / list price, by
        name (:data:`PRICE_HISTORY_NAMES`)."""
        items = np.asarray(items)
        return {name: self.price_history[k][items] for k, name in enumerate(PRICE_HISTORY_NAMES)}


@dataclasses.dataclass(frozen=True)
class Visits:
    """A batch of visits: who came, the category each browses and the products each views
    (``views``: (visits, width) product ids, -1 padding, each row's distinct products first)."""

    users: np.ndarray
    categories: np.ndarray
    views: np.ndarray

    def __len__(self) -> int:
        return len(self.users)


@dataclasses.dataclass(frozen=True)
class Offer:
    """Row-aligned arrays describing offers: who, what, at which shelf price and coupon share."""

    users: np.ndarray
    items: np.ndarray
    price: np.ndarray
    coupon: np.ndarray


class Market:
    """The ground-truth world, built deterministically from a :class:`MarketConfig`."""

    def __init__(self, config: MarketConfig | Mapping[str, Any] | None = None) -> None:
        self.config = MarketConfig.coerce(config)
        cfg = self.config
        rng = np.random.default_rng(cfg.seed)
        self.catalog: Catalog = make_catalog(cfg, rng)
        self.customers: Customers = make_customers(cfg, self.catalog.category_names, rng)
        cat, cus = self.catalog, self.customers
        t = cus.ctype
        # per-customer coefficients: revealed part and hidden deviation kept apart
        self._alpha_revealed = INTERCEPT[t]
        self._eta_type = PRICE_SENS[t]
        self._eta = self._eta_type * (1.0 + cus.price_dev)
        self._gain, self._loss, self._promo = GAIN[t], LOSS[t], PROMO[t]
        self._qt = cfg.quality_weight * cus.quality_taste
        # Revealed customer x (category, tier) part of the utility, one small table per customer:
        # type intercept + favourite-category affinity + brand-tier match. Group = category * 3 + tier.
        k = cfg.n_categories
        self._group = cat.category * 3 + cat.tier
        aff = cfg.affinity_weight * cus.affinity                   # (n, k)
        tier = cfg.tier_weight * TIER_MATCH[cus.tier_pref]          # (n, 3)
        self._table = (self._alpha_revealed[:, None, None] + aff[:, :, None] + tier[:, None, :]).reshape(
            cus.n, 3 * k)
        base = np.array([c.base_price for c in CATEGORIES[:k]])[cat.category]
        self._value_revealed = -0.4 * np.log(cat.list_price / base)
        self._value = self._value_revealed + cat.appeal
        self._log_list = np.log(cat.list_price)
        # sampling helpers
        self._visit_cdf = np.cumsum(cus.activity) / cus.activity.sum()
        order = np.argsort(cat.category, kind="stable")
        counts = np.bincount(cat.category, minlength=cfg.n_categories)
        self._items_by_category = order
        self._category_start = np.concatenate([[0], np.cumsum(counts)[:-1]])
        self._category_count = counts
        self.catalog_pool = self.category_pool(np.arange(self.n_products))

    # ------------------------------------------------------------------ sizes and state
    @property
    def n_products(self) -> int:
        """Number of products in the catalog."""
        return self.catalog.n

    @property
    def n_customers(self) -> int:
        """Number of customers in the population."""
        return self.customers.n

    def initial_state(self, day: int = 0, stock: int = 0) -> MarketState:
        """Day ``day``, reference prices at list, no fatigue, no coupons, ``stock`` units of every product
        (inventory belongs to the envs: a pricing env stocks the products it sells with its ``initial_stock``)."""
        return MarketState(day=day, reference_price=self.catalog.list_price.copy(),
                           fatigue=np.zeros(self.n_customers),
                           stock=np.full(self.n_products, stock, dtype=np.int64),
                           coupon_days=np.zeros((7, self.n_customers)),
                           price_history=np.ones((len(PRICE_HISTORY_RATES), self.n_products)))

    # ------------------------------------------------------------------ utilities
    def _context_arrays(self, users: np.ndarray, items: np.ndarray,
                        context: MarketState | Mapping[str, Any] | None) -> tuple[Any, Any, Any]:
        """Day, reference price and fatigue per row, from a state, a mapping or the defaults."""
        if context is None:
            return 0, self.catalog.list_price[items], 0.0
        if isinstance(context, MarketState):
            return context.day, context.reference_price[items], context.fatigue[users]
        unknown = set(context) - {"day", "reference_price", "fatigue"}
        if unknown:
            raise ValueError(f"unknown context key(s): {', '.join(sorted(unknown))}; "
                             "known: day, reference_price, fatigue")
        ref = context.get("reference_price")
        fat = context.get("fatigue")
        return (context.get("day", 0),
                self.catalog.list_price[items] if ref is None else np.asarray(ref, dtype=float),
                0.0 if fat is None else np.asarray(fat, dtype=float))

    def _utility(self, users: np.ndarray, items: np.ndarray, price: np.ndarray, coupon: np.ndarray,
                 context: MarketState | Mapping[str, Any] | None, revealed_only: bool) -> np.ndarray:
        users = np.asarray(users, dtype=np.int64)
        items = np.asarray(items, dtype=np.int64)
        price = np.asarray(price, dtype=float)
        coupon = np.asarray(coupon, dtype=float)
        day, ref, fatigue = self._context_arrays(users, items, context)
        cat = self.catalog
        u = self._table[users, self._group[items]]
        if revealed_only:
            u += self._value_revealed[items]
            eta = self._eta_type[users]
        else:
            u += self.customers.taste[users]
            u += self._value[items]
            eta = self._eta[users]
        u += self._qt[users] * cat.quality[items]
        if np.any(np.asarray(day) % 7 >= 5):
            u += self.config.weekend_uplift * (np.asarray(day) % 7 >= 5)
        log_p = np.log(price)
        log_paid_rel = log_p + np.log1p(-coupon) - self._log_list[items]
        u -= eta * log_paid_rel
        above = np.maximum(np.expm1(log_paid_rel), 0.0)  # paid / list - 1, when positive
        u -= self.config.competition_weight * above * above
        rel = np.log(ref) - log_p  # > 0: shelf price below the reference price (a gain)
        loss = self._loss[users]
        u += loss * rel + (self._gain[users] - loss) * np.maximum(rel, 0.0)
        has_coupon = coupon > 0
        if np.any(has_coupon):
            promo = self._promo[users]
            effect = np.where(promo > 0, promo * np.exp(-self.config.fatigue_sensitivity * fatigue), promo)
            u += np.where(has_coupon, effect, 0.0)
        return u

    def utility(self, users: np.ndarray, items: np.ndarray, price: np.ndarray, coupon: np.ndarray,
                context: MarketState | Mapping[str, Any] | None = None) -> np.ndarray:
        """True utility (log-odds of buying a single shown offer), vectorized over rows."""
        return self._utility(users, items, price, coupon, context, revealed_only=False)

    def true_purchase_proba(self, users: np.ndarray, items: np.ndarray, price: np.ndarray,
                            coupon: np.ndarray, context: MarketState | Mapping[str, Any] | None = None
                            ) -> np.ndarray:
        """True probability that each customer buys the offered product: ``sigmoid(utility)``.

        ``context`` is a :class:`MarketState` (day, reference prices, fatigue), a mapping with any of
        ``day``, ``reference_price`` (per row) and ``fatigue`` (per row), or None (day 0, reference
        price = list price, no fatigue).
        """
        return sigmoid(self.utility(users, items, price, coupon, context))

    def hidden_sd(self, users: np.ndarray, items: np.ndarray, price: np.ndarray,
                  coupon: np.ndarray) -> np.ndarray:
        """Standard deviation of the hidden part of the utility for each row (a Gaussian)."""
        cfg = self.config
        log_rel = np.log(np.asarray(price, float)) + np.log1p(-np.asarray(coupon, float)) - self._log_list[items]
        price_part = self._eta_type[users] * cfg.price_sensitivity_noise * log_rel
        return np.sqrt(cfg.customer_noise ** 2 + cfg.product_noise ** 2 + price_part ** 2)

    def revealed_purchase_proba(self, users: np.ndarray, items: np.ndarray, price: np.ndarray,
                                coupon: np.ndarray, context: MarketState | Mapping[str, Any] | None = None
                                ) -> np.ndarray:
        """Expected true probability given only what the texts, the offer and the state reveal.

        The hidden customer taste, product appeal and price-sensitivity deviation are independent
        of everything revealed and jointly Gaussian given the offer, so the expectation of the
        sigmoid over them is computed by Gauss-Hermite quadrature (24 nodes; exact to ~1e-9),
        which replaces Monte Carlo sampling without its noise. This is the ceiling for any model
        that reads the texts and the offer and knows the market state.
        """
        m = self._utility(users, items, price, coupon, context, revealed_only=True)
        s = self.hidden_sd(np.asarray(users, np.int64), np.asarray(items, np.int64), price, coupon)
        z = m[..., None] + np.sqrt(2.0) * s[..., None] * _GH_NODES
        return sigmoid(z) @ _GH_WEIGHTS / np.sqrt(np.pi)

    def revealed_choice_proba(self, users: np.ndarray, items: np.ndarray, price: np.ndarray, coupon: np.ndarray,
                              context: MarketState | Mapping[str, Any] | None = None,
                              available: np.ndarray | None = None, draws: int = 128, seed: int = 0) -> np.ndarray:
        """:meth:`choice_proba` in expectation over the hidden taste, appeal and price-sensitivity deviation:
        the ceiling for a model that reads the texts, the offer and the state (arrays (visits, shown)).

        One shown product: :meth:`revealed_purchase_proba` (quadrature, exact). Several: the customer's
        taste and price deviation are shared by the visit's products, each product's appeal its own, so
        the expectation is taken by Monte Carlo over ``draws`` antithetic Gaussian draws per visit (a
        fixed ``seed``: the same arrays give the same values)."""
        users = np.asarray(users, dtype=np.int64)
        items = np.asarray(items, dtype=np.int64)
        if users.shape[-1] == 1:
            return self.revealed_purchase_proba(users, items, price, coupon, context)
        cfg = self.config
        m = self._utility(users, items, price, coupon, context, revealed_only=True)
        log_rel = (np.log(np.asarray(price, float)) + np.log1p(-np.asarray(coupon, float))
                   - self._log_list[items])
        slope = self._eta_type[users] * log_rel                       # hidden term: -slope * dev
        rng = np.random.default_rng(seed)
        out = np.zeros(m.shape)
        half = max(1, draws // 2)
        mask = None if available is None else np.asarray(available, bool)
        u = np.empty((2, *m.shape))
        for _ in range(half):
            z_taste = rng.standard_normal((m.shape[0], 1))
            z_dev = rng.standard_normal((m.shape[0], 1))
            z_app = rng.standard_normal(m.shape)
            hidden = (cfg.customer_noise * z_taste + cfg.product_noise * z_app
                      - cfg.price_sensitivity_noise * slope * z_dev)
            # the antithetic pair at once; mnl_from_utility without its shift (exp is capped: no overflow)
            np.add(m, hidden, out=u[0])
            np.subtract(m, hidden, out=u[1])
            np.minimum(u, 700.0, out=u)
            e = np.exp(u, out=u)
            if mask is not None:
                e *= mask
            e /= 1.0 + e.sum(axis=-1, keepdims=True)
            out += e[0] + e[1]
        return out / (2 * half)

    def choice_proba(self, users: np.ndarray, items: np.ndarray, price: np.ndarray, coupon: np.ndarray,
                     context: MarketState | Mapping[str, Any] | None = None,
                     available: np.ndarray | None = None) -> np.ndarray:
        """Multinomial-logit choice over a set of shown products with an outside option.

        Arrays are shaped (customers, products shown); returns the same shape: the probability of
        buying each product (rows sum to at most 1; the rest is buying nothing). ``available``
        (bool, same shape) removes sold-out products from the choice set.
        """
        return mnl_from_utility(self.utility(users, items, price, coupon, context), available)

    # ------------------------------------------------------------------ arrivals and views
    def arrival_rate(self, day: int | np.ndarray) -> np.ndarray:
        """Expected visits on ``day`` (weekly seasonality; day 0 is a Monday)."""
        return self.config.daily_arrivals * (1.0 + self.config.weekly_amplitude * WEEKLY_SHAPE[np.asarray(day) % 7])

    def sample_visitors(self, day: int, rng: np.random.Generator, n: int | None = None) -> np.ndarray:
        """Customer ids visiting on ``day``: Poisson(arrival_rate) many (or ``n``), by activity."""
        count = int(rng.poisson(self.arrival_rate(day))) if n is None else n
        return np.searchsorted(self._visit_cdf, rng.random(count), side="right").clip(max=self.n_customers - 1)

    def sample_categories(self, users: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Category browsed by each visitor: first favourite 50%, second 30%, any category 20%."""
        r = rng.random(len(users))
        fav = self.customers.favourites[users]
        anyc = rng.integers(0, self.config.n_categories, size=len(users))
        return np.where(r < 0.5, fav[:, 0], np.where(r < 0.8, fav[:, 1], anyc))

    def sample_items_in(self, categories: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """A uniformly drawn product of each given category."""
        pos = self._category_start[categories] + (rng.random(len(categories))
                                                  * self._category_count[categories]).astype(np.int64)
        return self._items_by_category[pos]

    def category_pool(self, products: np.ndarray) -> np.ndarray:
        """(n_categories, width) the given products grouped by category (-1 padding): the assortment a
        visitor of each category views products from (:meth:`sample_views`)."""
        products = np.asarray(products, dtype=np.int64)
        cats = self.catalog.category[products]
        counts = np.bincount(cats, minlength=self.config.n_categories)
        pool = np.full((self.config.n_categories, max(int(counts.max()), 1)), -1, dtype=np.int64)
        for c in range(self.config.n_categories):
            ids = products[cats == c]
            pool[c, : len(ids)] = ids
        return pool

    def browse_share(self, categories: np.ndarray | None = None) -> float:
        """The share of visits (weighted by activity) that browse one of ``categories`` (all: 1)."""
        if categories is None:
            return 1.0
        k = self.config.n_categories
        inside = np.isin(np.arange(k), np.asarray(categories))
        fav = self.customers.favourites
        w = self.customers.activity / self.customers.activity.sum()
        share = 0.5 * inside[fav[:, 0]] + 0.3 * inside[fav[:, 1]] + 0.2 * inside.mean()
        return float((w * share).sum())

    def sample_views(self, categories: np.ndarray, rng: np.random.Generator, pool: np.ndarray | None = None
                     ) -> np.ndarray:
        """(visits, width) the products each visitor views: ``1 + Poisson(views_per_visit)`` distinct
        products (at most as many as the category holds) drawn uniformly from the browsed category's
        products in ``pool`` (:meth:`category_pool`; default the whole catalog), -1 padding."""
        pool = self.catalog_pool if pool is None else pool
        categories = np.asarray(categories, dtype=np.int64)
        n = len(categories)
        rows = pool[categories]                                        # (n, W)
        valid = rows >= 0
        k = np.minimum(1 + rng.poisson(self.config.views_per_visit, size=n), valid.sum(axis=1))
        keys = np.where(valid, rng.random(rows.shape), 2.0)            # a random order of the valid products
        order = np.argsort(keys, axis=1, kind="stable")
        picked = np.take_along_axis(rows, order, axis=1)
        width = int(k.max()) if n else 1
        picked = picked[:, :width]
        return np.where(np.arange(width)[None, :] < k[:, None], picked, -1)

    def display_propensity(self, categories: np.ndarray, slots: np.ndarray, pool: np.ndarray | None = None
                           ) -> tuple[np.ndarray, np.ndarray]:
        """The uniform display's propensities (:meth:`sample_views`: ``slots`` distinct products drawn uniformly from
        the browsed category's products in ``pool``, default the whole catalog): per visit, the size of the
        category's pool and the probability of the set of products shown, ``1 / C(pool size, slots)`` (the order
        they are shown in does not enter the choice). A product's probability of being among them is ``slots / pool
        size``."""
        pool = self.catalog_pool if pool is None else pool
        n = (pool[np.asarray(categories, dtype=np.int64)] >= 0).sum(axis=1)
        k = np.asarray(slots, dtype=np.int64)
        if (k > n).any() or (k < 0).any():
            raise ValueError("slots must be between 0 and the size of each visit's category pool")
        return n, np.exp(-log_comb(n, k))

    def sample_visits(self, day: int, rng: np.random.Generator, *, categories: np.ndarray | None = None,
                      scale: float = 1.0, n: int | None = None, pool: np.ndarray | None = None) -> Visits:
        """The day's visits, the same process for the logs and every env: Poisson(``scale`` x arrival rate)
        visitors by activity (or exactly ``n`` visits), the category each browses
        (:meth:`sample_categories`), and the products each views (:meth:`sample_views` over ``pool``).

        With ``categories`` (a shop that sells only these) the visits to other categories are dropped:
        a thinning of the same process, never a visitor sent to a category they would not browse; with
        ``n`` visitors are drawn until ``n`` visits browse one of ``categories``."""
        keep_cats = None if categories is None else np.isin(np.arange(self.config.n_categories), categories)
        if n is None:
            users = self.sample_visitors(day, rng, n=int(rng.poisson(scale * self.arrival_rate(day))))
            cats = self.sample_categories(users, rng)
            if keep_cats is not None:
                users, cats = users[keep_cats[cats]], cats[keep_cats[cats]]
        else:
            got_u: list[np.ndarray] = []
            got_c: list[np.ndarray] = []
            have, share = 0, max(self.browse_share(categories), 1e-3)
            while have < n:
                draw = max(16, int(1.2 * (n - have) / share))
                u = self.sample_visitors(day, rng, n=draw)
                c = self.sample_categories(u, rng)
                if keep_cats is not None:
                    u, c = u[keep_cats[c]], c[keep_cats[c]]
                got_u.append(u)
                got_c.append(c)
                have += len(u)
            users, cats = np.concatenate(got_u)[:n], np.concatenate(got_c)[:n]
        return Visits(users, cats, self.sample_views(cats, rng, pool))

    def items_in_category(self, category: int) -> np.ndarray:
        """Product ids of category ``category``, ascending."""
        start = self._category_start[category]
        return self._items_by_category[start:start + self._category_count[category]]

    # ------------------------------------------------------------------ dynamics
    def end_of_day(self, state: MarketState, items: np.ndarray, prices: np.ndarray,
                   coupon_users: np.ndarray) -> None:
        """Advance ``state`` by one day, in place.

        Reference prices (latent) and the shop's price-history averages (observable, at their own rates)
        move toward the mean shelf price each product was shown at today;
        fatigue decays, then grows by one for each coupon a customer received today; today's coupons
        replace those of 7 days ago in the shop's record.
        """
        cfg = self.config
        if len(items):
            sums = np.bincount(items, weights=prices, minlength=self.n_products)
            counts = np.bincount(items, minlength=self.n_products)
            shown = counts > 0
            mean_price = sums[shown] / counts[shown]
            state.reference_price[shown] += cfg.reference_adaptation * (mean_price - state.reference_price[shown])
            rel = mean_price / self.catalog.list_price[shown]
            for k, rate in enumerate(PRICE_HISTORY_RATES):
                state.price_history[k, shown] += rate * (rel - state.price_history[k, shown])
        state.fatigue *= cfg.fatigue_decay
        today = np.bincount(coupon_users, minlength=self.n_customers) if len(coupon_users) else 0.0
        state.fatigue += today
        state.coupon_days[state.day % 7] = today
        state.day += 1

    def customer_type_names(self, users: np.ndarray) -> np.ndarray:
        """The hidden customer type's name of each customer id in ``users`` (same shape)."""
        names = np.array([t.name for t in CUSTOMER_TYPES])
        return names[self.customers.ctype[np.asarray(users)]]


def log_comb(n: np.ndarray, k: np.ndarray) -> np.ndarray:
    """log C(n, k) elementwise (0 <= k <= n): the log of the number of k-sets of n products, whose inverse is a
    uniform draw's probability of each."""
    from scipy.special import gammaln

    n, k = np.asarray(n, float), np.asarray(k, float)
    return gammaln(n + 1.0) - gammaln(k + 1.0) - gammaln(n - k + 1.0)


def mnl_from_utility(u: np.ndarray, available: np.ndarray | None = None) -> np.ndarray:
    """Choice probabilities of a multinomial logit with an outside option of utility 0."""
    u = np.asarray(u, dtype=float)
    shift = np.maximum(u.max(axis=-1, keepdims=True), 0.0)
    e = np.exp(u - shift)
    if available is not None:
        e = np.where(available, e, 0.0)
    return e / (np.exp(-shift) + e.sum(axis=-1, keepdims=True))
