"""Coupon allocation to cohorts of arriving customers under a campaign budget."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
from gymnasium import spaces

from promogym.core.config import param
from promogym.envs.backends import ResponseBackend
from promogym.envs.base import (
    OBS_BOUND,
    MarketEnv,
    MarketEnvConfig,
    Offers,
    check_action,
    check_coupon_levels,
    history_panels,
)
from promogym.envs.constraints import capped
from promogym.envs.families import COUPONS
from promogym.envs.market import Market, MarketState, mnl_from_utility
from promogym.envs.market.customers import QUALITY_TASTES

N_FEATURES = 13  # per customer, see CouponAllocationEnv's docstring
_LOG_PRICE_CENTRE = 3.5


def marketer_features(market: Market, users: np.ndarray, categories: np.ndarray, views: np.ndarray,
                      coupons_last_7d: np.ndarray) -> np.ndarray:
    """(visits, 13) what a marketer sees of a visit (never the customer's latent type): visit frequency,
    quality taste and tier preference (one-hot), whether the browsed category is a favourite, coupons in the
    last 7 days (/7), the centred mean log list price of the viewed products, and a constant.

    ``views`` is (visits, width) product ids with -1 padding (:attr:`promogym.envs.market.Visits.views`);
    every visit views at least one product."""
    cus, cat = market.customers, market.catalog
    u = np.asarray(users, dtype=np.int64)
    c = np.asarray(categories, dtype=np.int64)
    v = np.asarray(views, dtype=np.int64).reshape(len(u), -1)
    shown = v >= 0
    n_shown = shown.sum(axis=1)
    if (n_shown == 0).any():
        raise ValueError("every visit must view at least one product")
    eye3 = np.eye(3, dtype=np.float32)
    taste = np.searchsorted(np.asarray(QUALITY_TASTES), cus.quality_taste[u])
    fav = (cus.favourites[u] == c[:, None]).any(axis=1)
    log_price = np.where(shown, np.log(cat.list_price[np.maximum(v, 0)]), 0.0).sum(axis=1) / n_shown
    return np.column_stack([eye3[cus.visit_band[u]], eye3[taste], eye3[cus.tier_pref[u]], fav,
                            np.asarray(coupons_last_7d, dtype=float) / 7.0, log_price - _LOG_PRICE_CENTRE,
                            np.ones(len(u))]).astype(np.float32)


def visit_choice_proba(backend: ResponseBackend, market: Market, users: np.ndarray, views: np.ndarray,
                       coupon: np.ndarray | float, state: MarketState) -> np.ndarray:
    """(visits, width) the probability that each visitor buys each viewed product at list price with the
    visit's coupon share (``coupon``: one per visit, or one for all), by the multinomial logit with an
    outside option over ``backend``'s logits of the viewed products (padding: probability 0). Rows sum to at
    most 1."""
    views = np.asarray(views, dtype=np.int64)
    shown = views >= 0
    rows = np.broadcast_to(np.arange(len(views))[:, None], views.shape)[shown]
    items = views[shown]
    price = market.catalog.list_price[items]
    coupon_rows = np.broadcast_to(np.asarray(coupon, dtype=float), (len(views),))[rows]
    logit = np.zeros(views.shape)
    logit[shown] = backend.logits(np.asarray(users)[rows], items, price, coupon_rows, state)
    return mnl_from_utility(logit, shown)


@dataclasses.dataclass(frozen=True)
class CouponAllocationConfig(MarketEnvConfig):
    """CouponAllocation-v1's config: the cohorts, the coupon levels, the campaign budget and its length."""

    cohort_size: int = param(64, "customers arriving per step", lo=1, hi=4096)
    coupon_levels: tuple[float, ...] = param(None, "coupon shares of the price", lo=0.0, hi=0.9,
                                             factory=lambda: (0.0, 0.05, 0.1, 0.2))
    budget: float = param(800.0, "campaign budget for redeemed coupons", lo=0.0, hi=1e12)
    horizon: int = param(56, "steps (cohorts) per episode", lo=1, hi=100_000)
    cohorts_per_day: int = param(8, "cohorts per day (fatigue and the shop's coupon record advance daily)",
                                 lo=1, hi=10_000)
    min_budget: float = param(1.0, "the episode terminates when less budget than this is left", lo=0.0, hi=1e12)
    weekday_traffic: bool = param(False, "cohorts per day follow the market's weekly arrival pattern (more at "
                                         "weekends) and the observation shows the weekday", choices=(False, True))

    gives_coupons = True

    def validate(self) -> None:
        """The market env's checks and the coupon levels (increasing, from 0)."""
        super().validate()
        check_coupon_levels(self)


class CouponAllocationEnv(MarketEnv):
    """Give each arriving customer a coupon level, or none, within a campaign budget.

    ## Description
    Each step a cohort of ``cohort_size`` visits arrives, drawn by the world's one visit process (the
    logs' own, :meth:`Market.sample_visits`): each customer browses a category and views ``1 +
    Poisson(views_per_visit)`` distinct products of it at list price (``views``). The agent picks a
    coupon level per customer; it applies to every product the customer views. Each customer buys at
    most one viewed product, or nothing, by a multinomial logit with an outside option over the response
    backend's logits of the viewed products. A coupon costs the shop only when redeemed (level x the
    price of the product bought), but it is handed out only when the budget can pay it even if every
    coupon of the cohort were redeemed on the customer's dearest viewed product (``worst_case_cost()``);
    a coupon that cannot be paid is not given (``info["coupons_clipped"]``) and ``action_masks()`` marks
    such levels for MaskablePPO. With the business constraint ``coupon_cap`` (config ``constraints``), a
    customer who has had that many coupons in the campaign gets no more (``info["coupons_capped"]``, also
    marked by ``action_masks()``). Customers return across steps and carry promotion fatigue; some are put
    off by coupons. At the end of each day reference prices move toward the list prices of every product
    viewed that day.

    ## Action Space
    ``MultiDiscrete([len(coupon_levels)] * cohort_size)``: a coupon level index per customer of the
    cohort. An action of another shape (after ``np.asarray``; a list is fine, nothing is flattened,
    broadcast or cut), with non-integer values (an integer-valued float array is fine), NaN, inf, or an
    index outside [0, len(coupon_levels)) raises ValueError, and the env is left as it was. A level the
    budget cannot pay is allowed in the action but not given (see ``action_masks()``).

    ## Observation Space
    ``Box(-10, 10, (13 cohort_size + 2,))`` float32. Per customer, what a marketer can see of the visit
    (never the latent type): visit frequency (one-hot, 3), quality taste (one-hot, 3), brand-tier
    preference (one-hot, 3), whether the browsed category is a favourite, coupons received in the last 7
    days (/7), the mean log list price of the viewed products (centred) and a constant 1; then the share
    of the budget left and the share of steps left.

    ## Rewards
    Profit of the cohort: revenue - unit cost - coupon cost of the products bought (or revenue), minus
    ``uncertainty_penalty`` x the response model's ensemble standard deviation of the cohort's expected profit
    (``info["profit_spread"]``; 0 by default).
    ``info["expected_profit"]`` is its expectation under the backend (the sum over viewed products of
    choice probability x margin after the coupon), ``info["expected_profit_world"]`` under the world.
    ``info`` also holds, per customer, ``users``, ``coupon`` (the share given), ``bought`` and ``chosen``
    (the product bought or -1), and the cohort's ``views`` ((cohort_size, width) product ids, -1 padding;
    width: the size of the largest category, the most products a visit can view).

    ## Starting State
    Day 0, the whole budget, no fatigue.

    ## Episode End
    Terminated when less than ``min_budget`` is left or after ``horizon`` steps (the campaign ends: a
    terminal state, not a time limit; the observation holds the steps left).

    ## Arguments
    ``config`` with the keys of :class:`CouponAllocationConfig`.

    ## Version History
    * v1: customers view 1 + Poisson products of the category they browse (the logs' visit process) and
      choose among them by multinomial logit; the viewed-product price feature is the mean over the viewed
      products.
    * v0: initial version.
    """

    config_class = CouponAllocationConfig
    family = COUPONS
    config: CouponAllocationConfig
    # the observation is ``cohort_size`` blocks of this many features per customer, then the global features:
    # per-customer policies (:mod:`promogym.agents.per_customer`) read the layout from here
    item_features = N_FEATURES

    def __init__(self, config: Any = None, render_mode: str | None = None, **overrides: Any) -> None:
        super().__init__(config, render_mode, **overrides)
        cfg = self.config
        self.levels = np.asarray(cfg.coupon_levels)
        self.constraints = cfg.business_constraints()
        # the most products a visit can view (the largest category): ``views`` keeps one shape across steps
        self.view_width = int(self.market.catalog_pool.shape[1])
        self.action_space = spaces.MultiDiscrete([len(self.levels)] * cfg.cohort_size)
        n_global = 2 + (7 if cfg.weekday_traffic else 0)
        self.observation_space = spaces.Box(-OBS_BOUND, OBS_BOUND, shape=(N_FEATURES * cfg.cohort_size + n_global,),
                                            dtype=np.float32)
        self._new_cohort_placeholders()

    def _new_cohort_placeholders(self) -> None:
        n = self.config.cohort_size
        self.users = np.zeros(n, np.int64)
        self.categories = np.zeros(n, np.int64)
        self.views = np.full((n, self.view_width), -1, np.int64)
        self.budget_left = self.config.budget
        self.coupons_received = np.zeros(self.market.config.n_customers, np.int64)
        self.t = 0
        self.day_step = 0  # cohorts served today
        self._day_coupons: list[np.ndarray] = []
        self._day_views: list[np.ndarray] = []
        self.history: list[dict[str, Any]] = []

    def _draw_cohort(self) -> None:
        visits = self.market.sample_visits(self.state.day, self.np_random, n=self.config.cohort_size)
        self.users, self.categories = visits.users, visits.categories
        self.views = np.full((len(visits), self.view_width), -1, np.int64)
        self.views[:, : visits.views.shape[1]] = visits.views

    def customer_features(self) -> np.ndarray:
        """(cohort_size, 13) marketer-visible features of the current cohort's visits."""
        return marketer_features(self.market, self.users, self.categories, self.views,
                                 self.state.coupons_last_7d()[self.users])

    def choice_proba(self, coupon: np.ndarray | float, backend: ResponseBackend | None = None,
                     state: MarketState | None = None) -> np.ndarray:
        """(cohort_size, width) each customer's probability of buying each viewed product at list price with
        coupon share ``coupon`` (per customer, or one for all) under ``backend`` (default the env's) and
        ``state`` (default the current one)."""
        return visit_choice_proba(self.backend if backend is None else backend, self.market, self.users,
                                  self.views, coupon, self.state if state is None else state)

    def _obs(self) -> np.ndarray:
        cfg = self.config
        tail = [self.budget_left / cfg.budget if cfg.budget > 0 else 0.0, (cfg.horizon - self.t) / cfg.horizon]
        if cfg.weekday_traffic:
            tail += list(self._weekday_onehot())
        return self._clip_obs(np.concatenate([self.customer_features().ravel(), np.asarray(tail, np.float32)]))

    def cohorts_on(self, day: int) -> int:
        """Cohorts served on market ``day``: ``cohorts_per_day``, times the weekly arrival pattern with
        ``weekday_traffic`` (at least one)."""
        cfg = self.config
        if not cfg.weekday_traffic:
            return cfg.cohorts_per_day
        return max(1, round(cfg.cohorts_per_day * self.season_factor(day)))

    def worst_case_cost(self) -> np.ndarray:
        """(cohort_size, levels): the cost of each level for each customer if redeemed on the dearest product
        the customer views."""
        top = np.where(self.views >= 0, self.market.catalog.list_price[np.maximum(self.views, 0)], 0.0).max(axis=1)
        return self.levels[None, :] * top[:, None]

    def coupon_allowed(self) -> np.ndarray:
        """(cohort_size,) whether each customer of the cohort may still get a coupon under the constraints'
        ``coupon_cap`` (all True without one; a customer twice in the cohort counts their earlier visit)."""
        return ~capped(self.coupons_received, self.users, np.ones(len(self.users)), self.constraints.coupon_cap)

    def action_masks(self) -> np.ndarray:
        """Flattened (cohort_size x levels) booleans: a level is allowed iff the budget left can pay it and,
        for a coupon (level > 0), the customer is under the constraints' ``coupon_cap``."""
        ok = self.worst_case_cost() <= self.budget_left + 1e-9
        ok[:, 1:] &= self.coupon_allowed()[:, None]
        return ok.ravel()

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None
              ) -> tuple[np.ndarray, dict[str, Any]]:
        """Day 0, the whole budget, the first cohort; ``info`` has its ``users`` and ``views``."""
        super().reset(seed=seed)
        self.state = self.market.initial_state()
        self._new_cohort_placeholders()
        self._draw_cohort()
        return self._obs(), {"users": self.users.copy(), "views": self.views.copy()}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Give the cohort its coupons (within the budget and caps), sample its choices, draw the next cohort."""
        cfg = self.config
        a = check_action(self, action)
        day = int(self.state.day)  # the day this cohort is served
        cat = self.market.catalog
        views, shown = self.views, self.views >= 0
        items = np.maximum(views, 0)
        wanted = self.levels[a]
        cap = capped(self.coupons_received, self.users, wanted, self.constraints.coupon_cap)
        wanted = np.where(cap, 0.0, wanted)
        worst = self.worst_case_cost()[np.arange(len(a)), a]
        ok = self._reserve(np.where(wanted > 0, worst, 0.0), self.budget_left)
        coupon = np.where(ok, wanted, 0.0)
        clipped = int(((wanted > 0) & ~ok).sum())
        np.add.at(self.coupons_received, self.users[coupon > 0], 1)
        p = self.choice_proba(coupon)
        pos = (self.np_random.random(len(p))[:, None] > np.cumsum(p, axis=1)).sum(axis=1)  # == width: none
        bought = pos < views.shape[1]
        chosen = np.where(bought, views[np.arange(len(pos)), np.minimum(pos, views.shape[1] - 1)], -1)
        price = np.where(shown, cat.list_price[items], 0.0)
        unit_cost = np.where(shown, cat.unit_cost[items], 0.0)
        margin = price * (1 - coupon[:, None]) - (unit_cost if cfg.reward == "profit" else 0.0)
        expected = float((p * margin).sum())
        pw = p if self.backend is self.world else self.choice_proba(coupon, self.world)
        expected_world = float((pw * margin).sum())
        users2 = np.broadcast_to(self.users[:, None], views.shape)
        coupon2 = np.broadcast_to(coupon[:, None], views.shape)
        self.last_offers = Offers(users=users2, items=items, price=price, coupon=coupon2, available=shown, proba=p,
                                  proba_world=pw, margin=margin,
                                  price_hist=self.state.price_features(items)["price_hist_mid"])
        spread = self.profit_spread(users2, items, np.where(shown, price, 1.0), coupon2, shown, margin)
        got = chosen[bought]
        revenue = float(cat.list_price[got].sum())
        cost = float(cat.unit_cost[got].sum())
        spend = float((cat.list_price[got] * coupon[bought]).sum())
        self.budget_left = max(0.0, self.budget_left - spend)
        reward = revenue - cost - spend if cfg.reward == "profit" else revenue
        reward -= cfg.uncertainty_penalty * spread
        self._day_coupons.append(self.users[coupon > 0])
        self._day_views.append(views[shown])
        self.t += 1
        self.day_step += 1
        if self.day_step >= self.cohorts_on(self.state.day):
            self.day_step = 0
            seen = np.concatenate(self._day_views)
            self.market.end_of_day(self.state, seen, cat.list_price[seen], np.concatenate(self._day_coupons))
            self._day_coupons, self._day_views = [], []
        units = int(bought.sum())
        info = {"components": {"revenue": revenue, "cost": cost, "coupon_spend": spend, "units": units,
                               "stockouts": 0, "budget_left": self.budget_left},
                "coupons_given": int((coupon > 0).sum()), "coupons_clipped": clipped,
                "coupons_capped": int(cap.sum()), "coupon": coupon,
                "users": self.users.copy(), "views": views.copy(), "bought": bought, "chosen": chosen, "day": day,
                "expected_profit": expected, "expected_profit_world": expected_world, "profit_spread": spread}
        self.history.append({"t": self.t, "reward": reward, "spend": spend, "given": int((coupon > 0).sum()),
                             "budget_left": self.budget_left, "units": units})
        terminated = self.budget_left < cfg.min_budget or self.t >= cfg.horizon  # the campaign's end is terminal
        truncated = False
        self._draw_cohort()
        return self._obs(), float(reward), bool(terminated), bool(truncated), info

    def render(self) -> str | np.ndarray | None:
        """A line of text for the last step ("ansi") or cumulative profit and budget plots ("rgb_array")."""
        if self.render_mode == "ansi":
            if not self.history:
                return f"campaign starts: budget {self.config.budget:,.0f}, cohorts of {self.config.cohort_size}"
            h = self.history[-1]
            return (f"step {h['t']:>4}  coupons {h['given']:>3}  units {h['units']:>3}  profit {h['reward']:>8.2f}  "
                    f"spend {h['spend']:>7.2f}  budget left {h['budget_left']:>9.2f}")
        if self.render_mode == "rgb_array":
            return history_panels(self.history, (("reward", "cumulative profit", True),
                                                 ("budget_left", "budget left", False)))
        return None


@dataclasses.dataclass(frozen=True)
class PacedCouponConfig(CouponAllocationConfig):
    """CouponAllocation-v2's config: CouponAllocation-v1's keys with a campaign budget that binds, two weeks of
    weekday traffic, and a campaign that runs to its end when the money is gone."""

    budget: float = param(400.0, "campaign budget for redeemed coupons", lo=0.0, hi=1e12)
    horizon: int = param(112, "steps (cohorts) per episode", lo=1, hi=100_000)
    min_budget: float = param(0.0, "the episode terminates when less budget than this is left (0: it runs to the "
                                   "horizon; customers keep buying without coupons)", lo=0.0, hi=1e12)
    weekday_traffic: bool = param(True, "cohorts per day follow the market's weekly arrival pattern (more at "
                                        "weekends) and the observation shows the weekday", choices=(False, True))


class PacedCouponEnv(CouponAllocationEnv):
    """CouponAllocation-v2: a coupon budget that binds, over two weeks of weekday traffic.

    ## Description
    CouponAllocation-v1's market, visits and choices, with a campaign the way a marketing team runs one: the
    budget (400 by default) covers about a third of what handing every customer their best coupon would
    spend over the campaign's 112 cohorts (two weeks), so every coupon given now is one that cannot be given
    later. Cohorts per day follow the market's weekly arrival pattern (more at weekends; the observation has the
    weekday), fatigue and reference prices carry across days, and the campaign runs to its end when the budget
    is spent (customers keep buying at list price), so overspending early costs the later weeks' best
    customers, not the episode.

    Why time matters here: the myopic rule with the world's own knowledge gives each customer their best
    coupon until the money runs out; pacing the budget so that it goes to the customers with the best uplift
    per unit of cost over the whole campaign is worth more (the paced oracle's gain over the myopic rule is
    in the README's agents table).

    ## Action Space
    As CouponAllocation-v1.

    ## Observation Space
    ``Box(-10, 10, (13 cohort_size + 9,))`` float32: CouponAllocation-v1's, then the weekday (one-hot, 7).

    ## Rewards
    As CouponAllocation-v1.

    ## Starting State
    As CouponAllocation-v1.

    ## Episode End
    After ``horizon`` steps (``min_budget`` 0: a spent budget does not end the campaign).

    ## Arguments
    ``gymnasium.make("promogym/CouponAllocation-v2", config={...})`` with the keys of :class:`PacedCouponConfig`.

    ## Version History
    * v2: a binding budget, weekday traffic and a campaign that does not end when the budget does (in v1 the
      budget never binds and the myopic rule equals the oracle).
    * v1, v0: see CouponAllocation-v1.
    """

    config_class = PacedCouponConfig
