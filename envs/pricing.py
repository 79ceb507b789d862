"""Dynamic pricing over a selling season, alone or with a coupon rule per customer segment."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
from gymnasium import spaces
from scipy import special

from promogym.core.config import param
from promogym.envs.base import (
    OBS_BOUND,
    DayOutcome,
    MarketEnv,
    MarketEnvConfig,
    Offers,
    check_action,
    check_coupon_levels,
    figure_to_array,
)
from promogym.envs.constraints import PriceRules, capped
from promogym.envs.families import PRICING
from promogym.envs.market.customers import PRICE_SENS, VISIT_BANDS
from promogym.envs.market.world import WEEKDAYS, mnl_from_utility


def capped_poisson_mean(lam: np.ndarray, cap: np.ndarray) -> np.ndarray:
    """``E[min(N, cap)]`` for ``N ~ Poisson(lam)``, elementwise: the sum over ``k < cap`` of ``P(N > k)`` (``lam``
    itself where the cap is out of reach)."""
    lam, cap = np.asarray(lam, dtype=float), np.asarray(cap, dtype=np.int64)
    out = lam.copy()
    tight = cap < lam + 10.0 * np.sqrt(lam) + 20.0  # beyond: P(N >= cap) < 1e-9, the cap never binds
    if tight.any():
        k = np.arange(int(cap[tight].max()))
        sf = special.pdtrc(k[None, :], lam[tight][:, None])  # P(N > k)
        out[tight] = np.where(k[None, :] < cap[tight][:, None], sf, 0.0).sum(axis=1)
    return out


@dataclasses.dataclass(frozen=True)
class DynamicPricingConfig(MarketEnvConfig):
    """DynamicPricing-v1's config: the products priced, the season, the price band, traffic and stock."""

    n_products: int = param(10, "products priced by the agent (split evenly over `categories`)", lo=1, hi=200)
    categories: tuple[int, ...] = param(None, "catalog categories the products come from", lo=0, hi=9,
                                        factory=lambda: (0, 1))
    horizon: int = param(28, "days in the selling season", lo=1, hi=3650)
    price_low: float = param(0.6, "lowest price, as a multiple of list price (action -1)", lo=0.05, hi=10.0)
    price_high: float = param(1.4, "highest price, as a multiple of list price (action +1)", lo=0.05, hi=10.0)
    daily_customers: float = param(250.0, "mean visitors per day browsing these products", lo=1.0, hi=1e6)
    initial_stock: int = param(60, "units of each product at the start of the season", lo=0, hi=1_000_000)
    phase_days: tuple[int, ...] = param(
        None, "the season's calendar: the length in days of each phase (empty: every day alike; the last phase "
              "lasts to the season's end)", lo=1, hi=3650, factory=tuple)
    phase_traffic: tuple[float, ...] = param(
        None, "visitors in each phase of the calendar, relative to daily_customers", lo=0.0, hi=100.0, factory=tuple)
    phase_tilt: tuple[float, ...] = param(
        None, "the shopper mix of each phase: a customer's odds of being among the phase's visitors are multiplied "
              "by exp(-tilt x their standardised log price sensitivity), so > 0 brings the less price-sensitive "
              "(gift buyers, early adopters), < 0 the bargain hunters", lo=-3.0, hi=3.0, factory=tuple)
    salvage_share: float = param(0.0, "each unit left at the season's end is sold off at this share of its unit cost "
                                      "(added to the last day's reward)", lo=0.0, hi=1.0)
    demand_level_sd: float = param(
        0.0, "a season is a hit or a flop: every day's visitors are multiplied by one level per episode, drawn "
             "lognormal with this sd (mean 1), unobserved: a policy infers it from the sales", lo=0.0, hi=2.0)

    sets_prices = True

    def validate(self) -> None:
        """The price band, the categories and enough products for them; ValueError naming the key."""
        super().validate()
        if self.price_low >= self.price_high:
            raise ValueError(f"{type(self).__name__}.price_low ({self.price_low}) must be below price_high "
                             f"({self.price_high})")
        if len(set(self.categories)) != len(self.categories) or not self.categories:
            raise ValueError(f"{type(self).__name__}.categories must be distinct category ids, got {self.categories}")
        if self.n_products < len(self.categories):
            raise ValueError(f"{type(self).__name__}.n_products ({self.n_products}) must be at least the number of "
                             f"categories ({len(self.categories)}): every category's visitors view the env's products "
                             "of that category")
        n = len(self.phase_days)
        if len(self.phase_traffic) != n or len(self.phase_tilt) != n:
            raise ValueError(f"{type(self).__name__}.phase_days, phase_traffic and phase_tilt must have one entry per "
                             f"phase, got {n}, {len(self.phase_traffic)} and {len(self.phase_tilt)}")


@dataclasses.dataclass(frozen=True)
class PricePromoConfig(DynamicPricingConfig):
    """PricePromo-v1's config: DynamicPricing-v1's keys, the coupon levels a segment rule can pick and the
    campaign budget."""

    coupon_levels: tuple[float, ...] = param(None, "coupon shares a segment rule can choose", lo=0.0, hi=0.9,
                                             factory=lambda: (0.0, 0.05, 0.1, 0.2))
    budget: float = param(1500.0, "campaign budget for redeemed coupons over the season", lo=0.0, hi=1e12)

    gives_coupons = True

    def validate(self) -> None:
        """DynamicPricingConfig's checks and the coupon levels (increasing, from 0)."""
        super().validate()
        check_coupon_levels(self)


class _SeasonEnv(MarketEnv):
    """Prices (and optionally a coupon level per segment) set once a day for a season."""

    config: DynamicPricingConfig
    with_coupons = False

    def __init__(self, config: Any = None, render_mode: str | None = None, **overrides: Any) -> None:
        super().__init__(config, render_mode, **overrides)
        cfg = self.config
        if max(cfg.categories) >= self.market.config.n_categories:
            raise ValueError(f"{type(cfg).__name__}.categories {cfg.categories} exceed the market's "
                             f"{self.market.config.n_categories} categories")
        per = [self.market.items_in_category(c) for c in cfg.categories]
        per = [p[~self.market.catalog.is_new[p]] for p in per]
        share = np.array_split(np.arange(cfg.n_products), len(per))
        if any(len(s) > len(p) for s, p in zip(share, per, strict=True)):
            raise ValueError(f"{type(cfg).__name__}.n_products ({cfg.n_products}) exceeds the products available "
                             f"in categories {cfg.categories}")
        self.products = np.concatenate([p[: len(s)] for s, p in zip(share, per, strict=True)])
        self.categories = np.asarray(cfg.categories)
        n = cfg.n_products
        self.env_index = np.full(self.market.n_products, -1)
        self.env_index[self.products] = np.arange(n)
        # the assortment visitors view products from: the env's products of each category they browse
        self.pool = self.market.category_pool(self.products)
        # visits of the whole market, thinned to those browsing the env's categories, average daily_customers
        self.arrival_scale = cfg.daily_customers / (self.market.config.daily_arrivals
                                                    * self.market.browse_share(self.categories))
        self.list_price = self.market.catalog.list_price[self.products]
        self._build_calendar()
        self.demand_level = 1.0
        self.constraints = cfg.business_constraints()
        try:
            self.rules = PriceRules(self.constraints, self.list_price, self.market.catalog.unit_cost[self.products],
                                    cfg.price_low, cfg.price_high) if self.constraints.prices else None
        except ValueError as e:
            raise ValueError(f"{type(cfg).__name__}.{e}") from None
        warm = getattr(self.backend, "warm", None)
        if warm is not None:  # every customer with the env's products: steps never wait for the model's MLP
            warm(self.products, members=cfg.uncertainty_penalty > 0)
        n_segments = len(VISIT_BANDS) if self.with_coupons else 0
        self.action_space = spaces.Box(-1.0, 1.0, shape=(n + n_segments,), dtype=np.float32)
        obs_dim = 8 + 4 * n + (1 + n_segments if self.with_coupons else 0) + (4 if self.has_calendar else 0)
        self.observation_space = spaces.Box(-OBS_BOUND, OBS_BOUND, shape=(obs_dim,), dtype=np.float32)
        self._reset_tracking()

    # ------------------------------------------------------------------ the season's calendar
    def _build_calendar(self) -> None:
        """Per day of the season: the phase, its traffic and its shopper tilt; and each customer's standardised log
        price sensitivity (activity-weighted), which the tilt weighs visits by."""
        cfg = self.config
        self.has_calendar = len(cfg.phase_days) > 0
        if not self.has_calendar:
            self.phase_of_day = np.zeros(cfg.horizon, np.int64)
            self.traffic = np.ones(cfg.horizon)
            self.tilt = np.zeros(cfg.horizon)
            return
        phase = np.repeat(np.arange(len(cfg.phase_days)), cfg.phase_days)
        phase = np.concatenate([phase, np.full(max(0, cfg.horizon - len(phase)), len(cfg.phase_days) - 1)])
        self.phase_of_day = phase[: cfg.horizon]
        self.traffic = np.asarray(cfg.phase_traffic, float)[self.phase_of_day]
        self.tilt = np.asarray(cfg.phase_tilt, float)[self.phase_of_day]
        cus = self.market.customers
        log_eta = np.log(PRICE_SENS[cus.ctype] * (1.0 + cus.price_dev))
        share = cus.activity / cus.activity.sum()
        mu = float((share * log_eta).sum())
        self._shopper_z = (log_eta - mu) / np.sqrt(float((share * (log_eta - mu) ** 2).sum()))
        self._visit_share = share

    def _draw_demand_level(self) -> None:
        sd = self.config.demand_level_sd
        self.demand_level = float(np.exp(self.np_random.normal(0.0, sd) - sd * sd / 2)) if sd > 0 else 1.0

    def _tilt_weights(self, t: int) -> tuple[np.ndarray, float]:
        """Every customer's visit odds on season day ``t`` under its shopper tilt (mean 1 over visits)."""
        w = np.exp(-self.tilt[t] * self._shopper_z)
        return w / float((self._visit_share * w).sum()), float(self.tilt[t])

    def season_day(self, day: int | None = None) -> int:
        """The day of the season (0-based, capped at the last day) of a market ``day`` (default today)."""
        return int(min(self.config.horizon - 1, max(0, (self.state.day if day is None else day))))

    def visit_scale(self, users: np.ndarray, day: int) -> np.ndarray:
        """Expected visits on market ``day``, per visitor of a sample drawn as :meth:`visitor_sample` draws
        (weekly seasonality x the calendar's traffic x the visitor's shopper-tilt odds), relative to the
        average day: planners multiply by ``daily_customers / len(users)``."""
        base = np.full(len(users), self.season_factor(day) * self.demand_level)
        if not self.has_calendar:
            return base
        t = self.season_day(day)
        w, _ = self._tilt_weights(t)
        return base * self.traffic[t] * w[np.asarray(users)]

    def _calendar_obs(self) -> list[float]:
        t = self.season_day(self.t)
        nxt = slice(t + 1, min(self.config.horizon, t + 8))
        ahead_traffic = float(self.traffic[nxt].mean()) if t + 1 < self.config.horizon else 0.0
        ahead_tilt = float(self.tilt[nxt].mean()) if t + 1 < self.config.horizon else 0.0
        return [float(self.traffic[t]) - 1.0, float(self.tilt[t]), ahead_traffic - 1.0, ahead_tilt]

    # ------------------------------------------------------------------ helpers
    def _reset_tracking(self) -> None:
        n = self.config.n_products
        self.prices = self.list_price.copy()
        self.last_units = np.zeros(n)
        self.budget_left = float(getattr(self.config, "budget", 0.0))
        self.coupons_received = np.zeros(self.market.config.n_customers, np.int64)
        if self.rules is not None:
            self.rules.reset()
        self.t = 0
        self.history: list[dict[str, Any]] = []

    def prices_from_action(self, action: np.ndarray) -> np.ndarray:
        """The prices an action asks for (per env product, to the cent), before any business constraint."""
        cfg = self.config
        a = np.clip(np.asarray(action, dtype=float)[: cfg.n_products], -1.0, 1.0)
        return np.round(self.list_price * (cfg.price_low + (a + 1.0) / 2.0 * (cfg.price_high - cfg.price_low)), 2)

    def project_prices(self, prices: np.ndarray) -> np.ndarray:
        """The prices the env would set today for wanted ``prices`` (per env product): unchanged without price
        constraints, else projected onto today's feasible set (see :mod:`promogym.envs.constraints`). Planners
        score these, so they plan within the constraints."""
        prices = np.round(np.asarray(prices, float), 2)
        return prices if self.rules is None else self.rules.project(prices, self.prices)

    def action_from_prices(self, prices: np.ndarray) -> np.ndarray:
        """The action that sets ``prices`` (inverse of :meth:`prices_from_action`; clipped to the band)."""
        cfg = self.config
        mult = np.asarray(prices, float) / self.list_price
        return np.clip(2.0 * (mult - cfg.price_low) / (cfg.price_high - cfg.price_low) - 1.0, -1, 1).astype(np.float32)

    def coupon_levels_from_action(self, action: np.ndarray) -> np.ndarray:
        """The coupon share an action asks for, per customer segment (PricePromo-v1)."""
        levels = np.asarray(getattr(self.config, "coupon_levels", (0.0,)))
        a = np.clip(np.asarray(action, dtype=float)[self.config.n_products:], -1.0, 1.0)
        idx = np.minimum(((a + 1.0) / 2.0 * len(levels)).astype(int), len(levels) - 1)
        return levels[idx]

    def _visits(self, rng: np.random.Generator | None = None, n: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The day's visitors browsing the env's categories and the products each views (catalog ids,
        -1 padding), by the market's one visit process (:meth:`Market.sample_visits`): a thinning of the
        whole market's visits, never a visitor sent to a category they would not browse."""
        rng = self.np_random if rng is None else rng
        if not self.has_calendar or n is not None:
            v = self.market.sample_visits(self.state.day, rng, categories=self.categories, n=n, pool=self.pool,
                                          scale=self.arrival_scale * (self.demand_level if n is None else 1.0))
            return v.users, v.views
        # the calendar's day: its traffic, and its shopper mix by thinning (each visit kept with probability
        # w / max w of its customer's tilt odds w), a thinning of the same visit process
        t = self.season_day()
        w, _ = self._tilt_weights(t)
        top = float(w.max())
        v = self.market.sample_visits(self.state.day, rng, categories=self.categories, pool=self.pool,
                                      scale=self.arrival_scale * self.demand_level * self.traffic[t] * top)
        keep = rng.random(len(v.users)) < w[v.users] / top
        return v.users[keep], v.views[keep]

    def _price_by_item(self, prices: np.ndarray) -> np.ndarray:
        """Env prices (per env product) spread over the catalog's product ids (list price elsewhere: a
        padding entry of a view set needs a valid price, though it is never available)."""
        out = self.market.catalog.list_price.copy()
        out[self.products] = prices
        return out

    def _choice_proba(self, backend: Any, state: Any, users: np.ndarray, sets: np.ndarray,
                      price_by_item: np.ndarray, coupon: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """MNL purchase probabilities of each visitor for each product of their set (sold-out and padding
        excluded), with the offer arrays: (p, items, price, coupon, available), all shaped like ``sets``."""
        # padding points at the visitor's first viewed product (never available): no model work on other products
        items = np.where(sets >= 0, sets, sets[:, :1]) if sets.size else np.maximum(sets, 0)
        price2 = price_by_item[items]
        coupon2 = np.broadcast_to(coupon[:, None], sets.shape)
        available = (sets >= 0) & (state.stock[items] > 0)
        users2 = np.broadcast_to(users[:, None], sets.shape)
        p = mnl_from_utility(backend.logits(users2, items, price2, coupon2, state), available)
        return p, items, price2, coupon2, available

    def visitor_sample(self, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """A fixed sample of ``n`` visits drawn as daily visits are (own RNG): the visitors and the products
        each views (catalog ids, -1 padding), for planners and myopic baselines."""
        return self._visits(rng=np.random.default_rng(seed), n=n)

    def expected_outcome(self, backend: Any, state: Any, users: np.ndarray, sets: np.ndarray, prices: np.ndarray,
                         segment_coupons: np.ndarray | None = None, scale: float = 1.0
                         ) -> tuple[np.ndarray, np.ndarray]:
        """Expected units and coupon spend per env product for visitors ``users`` choosing among ``sets``
        at ``prices`` (per env product) under ``backend`` and ``state`` (stock decides availability),
        multiplied by ``scale`` (one number, or one per visitor: :meth:`visit_scale`). Nothing in the env changes."""
        coupon = np.zeros(len(users)) if segment_coupons is None else \
            np.asarray(segment_coupons)[self.market.customers.visit_band[users]]
        p, items, price2, coupon2, available = self._choice_proba(backend, state, users, sets,
                                                                  self._price_by_item(prices), coupon)
        idx = self.env_index[items]
        w = p * np.broadcast_to(np.asarray(scale, float).reshape(-1, 1) if np.ndim(scale) else scale, p.shape)
        units = np.bincount(idx[available], weights=w[available], minlength=self.config.n_products).astype(float)
        spend = np.bincount(idx[available], weights=(w * price2 * coupon2)[available],
                            minlength=self.config.n_products).astype(float)  # (float even when nothing is available)
        return units, spend

    def decode_observation(self, obs: np.ndarray) -> dict[str, np.ndarray]:
        """The parts of an observation by name (the inverse of the layout documented on the class)."""
        n = self.config.n_products
        o = np.asarray(obs, dtype=float)
        parts = {"weekday": o[:7], "season_left": o[7:8], "stock_share": o[8:8 + n],
                 "price_index": o[8 + n:8 + 2 * n], "reference_index": o[8 + 2 * n:8 + 3 * n],
                 "last_units": o[8 + 3 * n:8 + 4 * n] * max(1.0, self.config.initial_stock / self.config.horizon)}
        end = 8 + 4 * n
        if self.with_coupons:
            parts["budget_share"] = o[end:end + 1]
            parts["segment_recent_coupons"] = o[end + 1:end + 1 + len(VISIT_BANDS)]
            end += 1 + len(VISIT_BANDS)
        if self.has_calendar:
            parts["calendar"] = o[end:end + 4]
        return parts

    def _obs(self) -> np.ndarray:
        cfg = self.config
        stock = self.state.stock[self.products] / max(cfg.initial_stock, 1)
        parts = [self._weekday_onehot(), [(cfg.horizon - self.t) / cfg.horizon], stock,
                 self.prices / self.list_price - 1.0, self.state.reference_price[self.products] / self.list_price - 1.0,
                 self.last_units / max(1.0, cfg.initial_stock / cfg.horizon)]
        if self.with_coupons:
            budget = getattr(cfg, "budget", 0.0)
            recent = self.state.coupons_last_7d()
            band = self.market.customers.visit_band
            parts.append([self.budget_left / budget if budget > 0 else 0.0])
            parts.append([recent[band == b].mean() / 7.0 for b in range(len(VISIT_BANDS))])
        if self.has_calendar:
            parts.append(self._calendar_obs())
        return self._clip_obs(np.concatenate([np.asarray(p, dtype=np.float32) for p in parts]))

    # ------------------------------------------------------------------ gymnasium API
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None
              ) -> tuple[np.ndarray, dict[str, Any]]:
        """Day 0, list prices, full stock; ``info`` has the env's ``products`` and their ``list_price``."""
        super().reset(seed=seed)
        self.state = self.market.initial_state()
        self.state.stock[:] = 0
        self.state.stock[self.products] = self.config.initial_stock
        self._draw_demand_level()
        self._reset_tracking()
        return self._obs(), {"products": self.products.copy(), "list_price": self.list_price.copy()}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Set the day's prices (and coupons), simulate the day's visits and choices, end the day."""
        cfg = self.config
        action = check_action(self, action, clip=True)  # finite, of the space's shape; clipped into [-1, 1] below
        requested = self.prices_from_action(action)
        if self.rules is not None:
            prev, self.prices = self.prices, self.rules.project(requested, self.prices)
            self.rules.record(self.prices, prev)
        else:
            self.prices = requested
        out = self._simulate_day(self.prices, self.coupon_levels_from_action(action) if self.with_coupons else None)
        reward = out.revenue - out.cost - out.coupon_spend if cfg.reward == "profit" else out.revenue
        reward -= cfg.uncertainty_penalty * out.profit_spread
        self.last_units = out.units.astype(float)
        self.t += 1
        # the season's end is a terminal state of the MDP (days left are in the observation; nothing is
        # worth anything afterwards), not a time limit: value-based learners must not bootstrap past it
        terminated = bool(self.state.stock[self.products].sum() == 0) or self.t >= cfg.horizon
        truncated = False
        salvage = 0.0
        if terminated and cfg.salvage_share > 0:  # what is left is sold off at the salvage value
            left = self.state.stock[self.products]
            salvage = float((cfg.salvage_share * self.market.catalog.unit_cost[self.products] * left).sum())
            reward += salvage
        info = {"components": {"revenue": out.revenue, "cost": out.cost, "coupon_spend": out.coupon_spend,
                               "units": int(out.units.sum()), "stockouts": out.stockouts,
                               "budget_left": self.budget_left, "salvage": salvage},
                "prices": self.prices.copy(), "units": out.units.copy(), "visitors": out.visitors,
                "coupons_given": out.coupons_given, "coupons_clipped": out.coupons_clipped,
                "coupons_capped": out.coupons_capped, "prices_requested": requested,
                "constraint_adjusted": int((np.abs(self.prices - requested) > 0.005).sum()),
                "expected_profit": out.expected_profit, "expected_profit_world": out.expected_profit_world,
                "expected_profit_served": out.expected_profit_served,
                "profit_spread": out.profit_spread, "day": self.state.day - 1}
        self.history.append({"day": self.state.day - 1, "prices": self.prices.copy(),
                             "stock": self.state.stock[self.products].copy(), "units": out.units.copy(),
                             "reward": reward, "visitors": out.visitors})
        return self._obs(), float(reward), terminated, truncated, info

    def _simulate_day(self, prices: np.ndarray, segment_coupons: np.ndarray | None) -> DayOutcome:
        cfg = self.config
        cat = self.market.catalog
        users, sets = self._visits()
        price_by_item = self._price_by_item(prices)
        coupon = np.zeros(len(users))
        clipped = n_capped = 0
        if segment_coupons is not None and len(users):
            wanted = segment_coupons[self.market.customers.visit_band[users]]
            cap = capped(self.coupons_received, users, wanted, self.constraints.coupon_cap)
            n_capped = int(cap.sum())
            wanted = np.where(cap, 0.0, wanted)
            worst = wanted * np.where(sets >= 0, price_by_item[np.maximum(sets, 0)], 0.0).max(axis=1)
            ok = self._reserve(np.where(wanted > 0, worst, 0.0), self.budget_left)
            coupon = np.where(ok, wanted, 0.0)
            clipped = int(((wanted > 0) & ~ok).sum())
            np.add.at(self.coupons_received, users[coupon > 0], 1)
        chosen, expected, expected_world, expected_served, stockout = self._serve(users, sets, price_by_item, coupon)
        o = self.last_offers
        spread = 0.0 if o is None or not len(users) else \
            self.profit_spread(o.users, o.items, o.price, o.coupon, o.available, o.margin)
        bought = chosen >= 0
        units = np.bincount(chosen[bought], minlength=cfg.n_products)
        paid_price = prices[chosen[bought]]
        revenue = float(paid_price.sum())
        cost = float(cat.unit_cost[self.products][chosen[bought]].sum())
        spend = float((paid_price * coupon[bought]).sum())
        self.budget_left = max(0.0, self.budget_left - spend)
        shown = sets[sets >= 0]
        self.market.end_of_day(self.state, shown, price_by_item[shown], users[coupon > 0])
        return DayOutcome(visitors=len(users), units=units, revenue=revenue, cost=cost, coupon_spend=spend,
                          stockouts=int(stockout.sum()), coupons_given=int((coupon > 0).sum()),
                          coupons_clipped=clipped, expected_profit=expected, expected_profit_world=expected_world,
                          expected_profit_served=expected_served,
                          profit_spread=spread, coupons_capped=n_capped)

    def _serve(self, users: np.ndarray, sets: np.ndarray, price_by_item: np.ndarray, coupon: np.ndarray
               ) -> tuple[np.ndarray, float, float, float, np.ndarray]:
        """Sample each visitor's choice among ``sets`` with an outside option and serve in arrival order
        while stock lasts. Returns the chosen env-product index per visitor (-1: none or sold out), the
        expected profit under the backend and under the world, the backend's expected profit of what the stock
        can serve (each product's buyers taken as Poisson, capped at its stock: :func:`capped_poisson_mean`),
        and a stock-out flag per visitor. ``last_offers`` keeps the offers with what a log row needs, taken
        before the day's end moves the state (:class:`Offers`)."""
        if len(users) == 0:
            self.last_offers = None
            return np.zeros(0, np.int64), 0.0, 0.0, 0.0, np.zeros(0, bool)
        p, items, price2, coupon2, available = self._choice_proba(self.backend, self.state, users, sets,
                                                                  price_by_item, coupon)
        margin = price2 * (1 - coupon2) - (self.market.catalog.unit_cost[items]
                                           if self.config.reward == "profit" else 0.0)
        expected = float((p * margin).sum())
        pw = p if self.backend is self.world else \
            self._choice_proba(self.world, self.state, users, sets, price_by_item, coupon)[0]
        expected_world = float((pw * margin).sum())
        n, idx = self.config.n_products, self.env_index[items[available]]
        buyers = np.bincount(idx, weights=p[available], minlength=n)
        gain = np.bincount(idx, weights=(p * margin)[available], minlength=n)
        served = capped_poisson_mean(buyers, self.state.stock[self.products])
        expected_served = float(np.divide(gain * served, buyers, out=np.zeros(n), where=buyers > 0).sum())
        history = self.state.price_features(items)
        self.last_offers = o = Offers(
            users=np.broadcast_to(users[:, None], sets.shape), items=items, price=price2, coupon=coupon2,
            available=available, proba=p, proba_world=pw, margin=margin, price_hist=history["price_hist_mid"],
            season_day=self.t, day=self.state.day, coupons_last_7d=self.state.coupon_days[:, users].sum(axis=0),
            price_history=history, reference_price=self.state.reference_price[items],
            fatigue=np.broadcast_to(self.state.fatigue[users][:, None], sets.shape))
        cum = np.cumsum(p, axis=1)
        pos = (self.np_random.random(len(users))[:, None] > cum).sum(axis=1)  # == n_options: nothing bought
        bought = pos < sets.shape[1]
        chosen_item = np.where(bought, sets[np.arange(len(users)), np.minimum(pos, sets.shape[1] - 1)], -1)
        chosen = np.where(bought, self.env_index[np.maximum(chosen_item, 0)], -1)
        stockout = np.zeros(len(users), bool)
        for j in np.unique(chosen[chosen >= 0]):
            buyers = np.flatnonzero(chosen == j)
            stock = self.state.stock[self.products[j]]
            if len(buyers) > stock:
                stockout[buyers[stock:]] = True
                chosen[buyers[stock:]] = -1
            self.state.stock[self.products[j]] -= min(len(buyers), stock)
        o.choice, o.stockout = np.where(bought, pos, -1), stockout.copy()
        return chosen, expected, expected_world, expected_served, stockout

    # ------------------------------------------------------------------ rendering
    def render(self) -> str | np.ndarray | None:
        """A line of text for the last day ("ansi") or price, stock and sales plots ("rgb_array")."""
        if self.render_mode == "ansi":
            if not self.history:
                return (f"day {self.state.day} ({self._weekday_name()}): season starts, "
                        f"stock {self.config.initial_stock}/product")
            h = self.history[-1]
            return (f"day {h['day']:>3} ({WEEKDAYS[h['day'] % 7]:<9}) visitors {h['visitors']:>4}  "
                    f"units {int(h['units'].sum()):>3}  profit {h['reward']:>9.2f}  "
                    f"stock left {int(h['stock'].sum()):>5}  "
                    f"price index {np.mean(h['prices'] / self.list_price):.2f}"
                    + (f"  budget left {self.budget_left:,.0f}" if self.with_coupons else ""))
        if self.render_mode == "rgb_array":
            return self._render_rgb()
        return None

    def _render_rgb(self) -> np.ndarray:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 3, figsize=(10, 3), dpi=80)
        if self.history:
            days = [h["day"] for h in self.history]
            axes[0].plot(days, np.array([h["prices"] / self.list_price for h in self.history]))
            axes[1].plot(days, np.array([h["stock"] for h in self.history]))
            axes[2].plot(days, np.cumsum([h["units"].sum() for h in self.history]))
        for ax, title in zip(axes, ("price / list", "stock", "units sold (cumulative)"), strict=True):
            ax.set_title(title, fontsize=9)
            ax.tick_params(labelsize=7)
        return figure_to_array(fig)


class DynamicPricingEnv(_SeasonEnv):
    """Dynamic pricing of a few products with finite stock over a selling season.

    ## Description
    Each day of the season the agent sets a price for each product. Visits follow the market's one
    visit process, the one the logs record: the shop's visitors arrive (weekly seasonality), each
    browses one category (a favourite most of the time), and the visits to the env's categories
    (``daily_customers`` a day on average) view ``1 + Poisson`` distinct products of the agent's products
    in that category; each visitor buys at most one of the viewed products or none, by multinomial
    logit with an outside option over the response backend's log-odds, so products substitute for one
    another. Stock is finite and never restocked;
    reference prices adapt to the prices shown (loss aversion around them).

    ## Action Space
    ``Box(-1, 1, (n_products,))``: -1 is ``price_low`` x list price, +1 is ``price_high`` x list price
    (prices are rounded to the cent). Finite values outside [-1, 1] are clipped into it. An action of
    another shape (after ``np.asarray``; a list is fine, a scalar only when ``n_products`` is 1: nothing is
    broadcast or cut) or with NaN or inf raises ValueError, and the env is left as it was.
    With business constraints (config ``constraints``: at most ``max_daily_change`` a day and
    ``max_weekly_changes`` a week, a ``margin_floor``, ``price_endings``, ``no_discount`` products) the prices
    asked for are projected onto the day's feasible set (:mod:`promogym.envs.constraints`): ``info["prices"]``
    is what was set, ``info["prices_requested"]`` what was asked, ``info["constraint_adjusted"]`` the number
    of products whose price the constraints moved.

    ## Observation Space
    ``Box(-10, 10, (8 + 4 n_products,))`` float32: day of week (one-hot, 7), share of the season left,
    stock left per product (share of initial stock), current price / list - 1, reference price / list - 1,
    yesterday's units per product (relative to an even sell-through).

    ## Rewards
    The day's profit: revenue - unit cost (or revenue with ``reward="revenue"``), minus
    ``uncertainty_penalty`` x the response model's ensemble standard deviation of the day's expected profit
    (``info["profit_spread"]``; 0 by default).
    ``info["components"]`` has revenue, cost, coupon_spend, units, stockouts and budget_left;
    ``info["expected_profit_world"]`` is the world's expected profit of the same prices;
    ``info["expected_profit_served"]`` the backend's with each product's expected sales capped at its stock left
    (the ``expected`` training reward).

    ## Starting State
    Day 0 (a Monday), every product at list price with ``initial_stock`` units, reference prices at
    list price, no fatigue.

    ## Episode End
    Terminated when every product is sold out or after ``horizon`` days (the season ends: a terminal state,
    not a time limit; the observation holds the days left).

    ## Arguments
    ``gymnasium.make("promogym/DynamicPricing-v1", config={...}, render_mode="ansi" | "rgb_array")``
    with the keys of :class:`DynamicPricingConfig` (``response`` picks the backend).

    ## Version History
    * v1: visitors come from the market's visit process (only those browsing the env's categories, none
      sent to a category they would not browse) and view 1 + Poisson of its products, as in the logs;
      models read the shop's price history.
    * v0: initial version (every visitor put on one of the env's categories and shown all its products).
    """

    config_class = DynamicPricingConfig
    family = PRICING
    planning_visitors = 1000  # visitors a planning policy (myopic, MPC oracle) simulates per day


class PricePromoEnv(_SeasonEnv):
    """Prices per product and a coupon rule per customer segment, under inventory and a budget.

    ## Description
    As DynamicPricing-v1, and each day the agent also picks a coupon level for each observed customer
    segment (daily, weekly and monthly visitors). A visitor gets their segment's coupon when the
    campaign budget can pay it even if every coupon given were redeemed at the highest price in their
    choice set; otherwise none (counted in ``info["coupons_clipped"]``). Coupons add fatigue.

    ## Action Space
    ``Box(-1, 1, (n_products + 3,))``: prices as in DynamicPricing-v1, then one value per segment
    mapped to ``coupon_levels`` by equal-width bins of [-1, 1]. As in DynamicPricing-v1, finite values
    outside [-1, 1] are clipped into it, and an action of another shape or with NaN or inf raises
    ValueError, leaving the env as it was. Business constraints on prices apply as in DynamicPricing-v1;
    with ``coupon_cap`` a visitor who has had that many coupons this season gets none
    (``info["coupons_capped"]``).

    ## Observation Space
    ``Box(-10, 10, (12 + 4 n_products,))`` float32: DynamicPricing-v1's, then the share of the budget
    left and each segment's mean coupons received in the last 7 days (/7).

    ## Rewards
    The day's profit: revenue - unit cost - coupon cost of redeemed coupons.

    ## Starting State
    As DynamicPricing-v1, with the whole ``budget`` left.

    ## Episode End
    Terminated when every product is sold out or after ``horizon`` days (the season ends: a terminal state,
    not a time limit; the observation holds the days left).

    ## Arguments
    ``config`` with the keys of :class:`PricePromoConfig`.

    ## Version History
    * v1: the visit process of DynamicPricing-v1.
    * v0: initial version.
    """

    config_class = PricePromoConfig
    family = PRICING
    # the oracle also plans a coupon level per segment: 300 visitors keep it at ~3.5 s an episode (1,000: ~10 s)
    planning_visitors = 300
    with_coupons = True


@dataclasses.dataclass(frozen=True)
class SeasonalPricingConfig(DynamicPricingConfig):
    """DynamicPricing-v2's config: DynamicPricing-v1's keys with a seasonal calendar, scarce stock and a salvage
    value by default."""

    price_high: float = param(1.8, "highest price, as a multiple of list price (action +1)", lo=0.05, hi=10.0)
    initial_stock: int = param(30, "units of each product at the start of the season", lo=0, hi=1_000_000)
    phase_days: tuple[int, ...] = param(
        None, "the season's calendar: the length in days of each phase (launch, regular, holiday week, clearance; "
              "the last phase lasts to the season's end)", lo=1, hi=3650, factory=lambda: (7, 7, 7, 7))
    phase_traffic: tuple[float, ...] = param(
        None, "visitors in each phase of the calendar, relative to daily_customers", lo=0.0, hi=100.0,
        factory=lambda: (0.8, 1.0, 2.0, 0.8))
    phase_tilt: tuple[float, ...] = param(
        None, "the shopper mix of each phase: a customer's odds of being among the phase's visitors are multiplied "
              "by exp(-tilt x their standardised log price sensitivity), so > 0 brings the less price-sensitive "
              "(gift buyers, early adopters), < 0 the bargain hunters", lo=-3.0, hi=3.0,
        factory=lambda: (0.5, 0.0, 1.0, -1.0))
    salvage_share: float = param(0.5, "each unit left at the season's end is sold off at this share of its unit cost "
                                      "(added to the last day's reward)", lo=0.0, hi=1.0)
    demand_level_sd: float = param(
        1.0, "a season is a hit or a flop: every day's visitors are multiplied by one level per episode, drawn "
             "lognormal with this sd (mean 1), unobserved: a policy infers it from the sales", lo=0.0, hi=2.0)


class SeasonalPricingEnv(DynamicPricingEnv):
    """DynamicPricing-v2: a seasonal selling problem — a hit or a flop, scarce stock, a calendar, a salvage value.

    ## Description
    DynamicPricing-v1's market and visit process, with what a fashion or holiday season asks of a pricing team.
    The world is unchanged; what changes is *how many come, who comes when* and what is left at the end:

    * **a hit or a flop** (``demand_level_sd``): nobody knows before the season how well it will sell. Every
      day's visitors are multiplied by one level per season, lognormal with sd 1 (mean 1: half the seasons
      sell at under 0.6x the average, one in six at over 1.7x), not in the observation; the first days' sales
      reveal it;
    * **scarce stock** (30 units per product by default, never restocked), so a unit sold early at too low a
      price is a unit a hit season cannot sell later;
    * a **calendar** the shop knows in advance (config ``phase_days``, ``phase_traffic``, ``phase_tilt``): by
      default a launch week of early adopters (less price-sensitive, 0.8x traffic), a regular week, a
      **holiday week** with twice the visitors, many of them gift buyers who care less about price, and a
      clearance week of bargain hunters (0.8x traffic). The shopper mix is a thinning of the market's one visit
      process: each visit is kept with odds that rise (tilt > 0) or fall (tilt < 0) with the customer's price
      sensitivity, so the same customers behave as in the logs; only their mix changes;
    * a **salvage value**: units left at the end are sold off at ``salvage_share`` x unit cost.

    Why time matters here: the best constant price is a compromise between hits (where it sells out too early
    and too cheaply) and flops (where it is left with stock to salvage). A policy that reads the sales raises
    prices in a hit and cuts them in a flop; the oracle knows the level and plans the calendar's phases. Its
    gain over the best constant price, and the learned policies', are measured in the README (agents table).
    Without the demand level (``demand_level_sd`` 0) the calendar alone leaves a constant price within ~3% of
    the oracle: the world's loss-averse reference prices and rivals selling at list price make prices sticky.

    ## Action Space
    As DynamicPricing-v1.

    ## Observation Space
    ``Box(-10, 10, (12 + 4 n_products,))`` float32: DynamicPricing-v1's, then the calendar: today's traffic
    (relative, minus 1), today's shopper tilt, the mean traffic (minus 1) and tilt of the next 7 days.

    ## Rewards
    As DynamicPricing-v1, plus the salvage value of the stock left on the last day (``info["components"]
    ["salvage"]``).

    ## Starting State
    As DynamicPricing-v1.

    ## Episode End
    As DynamicPricing-v1.

    ## Arguments
    ``gymnasium.make("promogym/DynamicPricing-v2", config={...})`` with the keys of :class:`SeasonalPricingConfig`.

    ## Version History
    * v2: hit-or-flop demand, the seasonal calendar (traffic and shopper mix by phase), scarce stock and a
      salvage value, so that a dynamic policy has something to find (in v1 the best constant price is within
      ~1.3% of the oracle).
    * v1, v0: see DynamicPricing-v1.
    """

    config_class = SeasonalPricingConfig
    planning_visitors = 400  # the MPC oracle rolls out every phase of the season: 400 visitors keep it ~5 s an episode
