"""Coupon allocation to cohorts of arriving customers under a campaign budget."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
from gymnasium import spaces

from promogym.core.config import param
from promogym.envs.base import (
    OBS_BOUND,
    MarketEnv,
    MarketEnvConfig,
    check_action,
    check_coupon_levels,
    figure_to_array,
)
from promogym.envs.families import COUPONS
from promogym.envs.market import Market, sigmoid
from promogym.envs.market.customers import QUALITY_TASTES

N_FEATURES = 13  # per customer, see CouponAllocationEnv's docstring


def marketer_features(market: Market, users: np.ndarray, items: np.ndarray, coupons_last_7d: np.ndarray
                      ) -> np.ndarray:
    """(rows, 13) what a marketer sees of a customer viewing a product (never the latent type): visit
    frequency, quality taste and tier preference (one-hot), favourite-category match, coupons in the last
    7 days (/7), centred log list price, and a constant."""
    cus, cat = market.customers, market.catalog
    u, i = np.asarray(users), np.asarray(items)
    eye3 = np.eye(3, dtype=np.float32)
    taste = np.searchsorted(np.asarray(QUALITY_TASTES), cus.quality_taste[u])
    fav = (cus.favourites[u] == cat.category[i][:, None]).any(axis=1)
    return np.column_stack([eye3[cus.visit_band[u]], eye3[taste], eye3[cus.tier_pref[u]], fav,
                            np.asarray(coupons_last_7d, dtype=float) / 7.0, np.log(cat.list_price[i]) - 3.5,
                            np.ones(len(u))]).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class CouponAllocationConfig(MarketEnvConfig):
    cohort_size: int = param(64, "customers arriving per step", lo=1, hi=4096)
    coupon_levels: tuple[float, ...] = param(None, "coupon shares of the price", lo=0.0, hi=0.9,
                                             factory=lambda: (0.0, 0.05, 0.1, 0.2))
    budget: float = param(800.0, "campaign budget for redeemed coupons", lo=0.0, hi=1e12)
    horizon: int = param(56, "steps (cohorts) per episode", lo=1, hi=100_000)
    cohorts_per_day: int = param(8, "cohorts per day (fatigue and the shop's coupon record advance daily)",
                                 lo=1, hi=10_000)
    min_budget: float = param(1.0, "the episode terminates when less budget than this is left", lo=0.0, hi=1e12)

    def validate(self) -> None:
        super().validate()
        check_coupon_levels(self)


class CouponAllocationEnv(MarketEnv):
    """Give each arriving customer a coupon level, or none, within a campaign budget.

    ## Description
    Each step a cohort of ``cohort_size`` customers arrives, each looking at one product (at list
    price) of a category they browse. The agent picks a coupon level per customer. A coupon costs
    the shop only when redeemed (level x price), but it is handed out only when the budget can pay
    it even if every coupon of the cohort were redeemed; a coupon that cannot be paid is not given
    (``info["coupons_clipped"]``) and ``action_masks()`` marks such levels for MaskablePPO. Customers
    return across steps and carry promotion fatigue; some are put off by coupons.

    ## Action Space
    ``MultiDiscrete([len(coupon_levels)] * cohort_size)``: a coupon level index per customer of the
    cohort. An action of another shape (after ``np.asarray``; a list is fine, nothing is flattened,
    broadcast or cut), with non-integer values (an integer-valued float array is fine), NaN, inf, or an
    index outside [0, len(coupon_levels)) raises ValueError, and the env is left as it was. A level the
    budget cannot pay is allowed in the action but not given (see ``action_masks()``).

    ## Observation Space
    ``Box(-10, 10, (13 cohort_size + 2,))`` float32. Per customer, what a marketer can see (never the
    latent type): visit frequency (one-hot, 3), quality taste (one-hot, 3), brand-tier preference
    (one-hot, 3), whether the viewed product is in a favourite category, coupons received in the last
    7 days (/7), log list price of the viewed product (centred) and a constant 1; then the share of
    the budget left and the share of steps left.

    ## Rewards
    Profit of the cohort: revenue - unit cost - coupon cost (or revenue).

    ## Starting State
    Day 0, the whole budget, no fatigue.

    ## Episode End
    Terminated when less than ``min_budget`` is left or after ``horizon`` steps (the campaign ends: a
    terminal state, not a time limit; the observation holds the steps left).

    ## Arguments
    ``config`` with the keys of :class:`CouponAllocationConfig`.

    ## Version History
    * v0: initial version.
    """

    config_class = CouponAllocationConfig
    family = COUPONS
    config: CouponAllocationConfig

    def __init__(self, config: Any = None, render_mode: str | None = None, **overrides: Any) -> None:
        super().__init__(config, render_mode, **overrides)
        cfg = self.config
        self.levels = np.asarray(cfg.coupon_levels)
        self.action_space = spaces.MultiDiscrete([len(self.levels)] * cfg.cohort_size)
        self.observation_space = spaces.Box(-OBS_BOUND, OBS_BOUND, shape=(N_FEATURES * cfg.cohort_size + 2,),
                                            dtype=np.float32)
        self._new_cohort_placeholders()

    def _new_cohort_placeholders(self) -> None:
        n = self.config.cohort_size
        self.users = np.zeros(n, np.int64)
        self.items = np.zeros(n, np.int64)
        self.budget_left = self.config.budget
        self.t = 0
        self._day_coupons: list[np.ndarray] = []
        self._day_items: list[np.ndarray] = []
        self.history: list[dict[str, Any]] = []

    def _draw_cohort(self) -> None:
        rng = self.np_random
        self.users = self.market.sample_visitors(self.state.day, rng, n=self.config.cohort_size)
        self.items = self.market.sample_items_in(self.market.sample_categories(self.users, rng), rng)

    def customer_features(self) -> np.ndarray:
        """(cohort_size, 13) marketer-visible features of the current cohort."""
        return marketer_features(self.market, self.users, self.items, self.state.coupons_last_7d()[self.users])

    def _obs(self) -> np.ndarray:
        cfg = self.config
        tail = [self.budget_left / cfg.budget if cfg.budget > 0 else 0.0, (cfg.horizon - self.t) / cfg.horizon]
        return self._clip_obs(np.concatenate([self.customer_features().ravel(), np.asarray(tail, np.float32)]))

    def worst_case_cost(self) -> np.ndarray:
        """(cohort_size, levels): the cost of each level for each customer if redeemed."""
        return self.levels[None, :] * self.market.catalog.list_price[self.items][:, None]

    def action_masks(self) -> np.ndarray:
        """Flattened (cohort_size x levels) booleans: a level is allowed iff the budget left can pay it."""
        return (self.worst_case_cost() <= self.budget_left + 1e-9).ravel()

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None
              ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        self.state = self.market.initial_state()
        self._new_cohort_placeholders()
        self._draw_cohort()
        return self._obs(), {"users": self.users.copy(), "items": self.items.copy()}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        cfg = self.config
        a = check_action(self, action)
        price = self.market.catalog.list_price[self.items]
        wanted = self.levels[a]
        ok = self._reserve(wanted * price, self.budget_left)
        coupon = np.where(ok, wanted, 0.0)
        clipped = int(((wanted > 0) & ~ok).sum())
        logit = self.backend.logits(self.users, self.items, price, coupon, self.state)
        p = sigmoid(logit)
        bought = self.np_random.random(len(p)) < p
        unit_cost = self.market.catalog.unit_cost[self.items]
        margin = price * (1 - coupon) - (unit_cost if cfg.reward == "profit" else 0.0)
        expected = float((p * margin).sum())
        if self.backend is self.world:
            expected_world = expected
        else:
            expected_world = float((sigmoid(self.world.logits(self.users, self.items, price, coupon, self.state))
                                    * margin).sum())
        revenue = float(price[bought].sum())
        cost = float(unit_cost[bought].sum())
        spend = float((price * coupon)[bought].sum())
        self.budget_left = max(0.0, self.budget_left - spend)
        reward = revenue - cost - spend if cfg.reward == "profit" else revenue
        self._day_coupons.append(self.users[coupon > 0])
        self._day_items.append(self.items)
        self.t += 1
        if self.t % cfg.cohorts_per_day == 0:
            items = np.concatenate(self._day_items)
            self.market.end_of_day(self.state, items, self.market.catalog.list_price[items],
                                   np.concatenate(self._day_coupons))
            self._day_coupons, self._day_items = [], []
        info = {"components": {"revenue": revenue, "cost": cost, "coupon_spend": spend, "units": int(bought.sum()),
                               "stockouts": 0, "budget_left": self.budget_left},
                "coupons_given": int((coupon > 0).sum()), "coupons_clipped": clipped, "coupon": coupon,
                "users": self.users.copy(), "items": self.items.copy(), "bought": bought, "expected_profit": expected,
                "expected_profit_world": expected_world}
        self.history.append({"t": self.t, "reward": reward, "spend": spend, "given": int((coupon > 0).sum()),
                             "budget_left": self.budget_left, "units": int(bought.sum())})
        terminated = self.budget_left < cfg.min_budget or self.t >= cfg.horizon  # the campaign's end is terminal
        truncated = False
        self._draw_cohort()
        return self._obs(), float(reward), bool(terminated), bool(truncated), info

    def render(self) -> str | np.ndarray | None:
        if self.render_mode == "ansi":
            if not self.history:
                return f"campaign starts: budget {self.config.budget:,.0f}, cohorts of {self.config.cohort_size}"
            h = self.history[-1]
            return (f"step {h['t']:>4}  coupons {h['given']:>3}  units {h['units']:>3}  profit {h['reward']:>8.2f}  "
                    f"spend {h['spend']:>7.2f}  budget left {h['budget_left']:>9.2f}")
        if self.render_mode == "rgb_array":
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt

            fig, axes = plt.subplots(1, 2, figsize=(8, 3), dpi=80)
            if self.history:
                t = [h["t"] for h in self.history]
                axes[0].plot(t, np.cumsum([h["reward"] for h in self.history]))
                axes[1].plot(t, [h["budget_left"] for h in self.history])
            axes[0].set_title("cumulative profit", fontsize=9)
            axes[1].set_title("budget left", fontsize=9)
            return figure_to_array(fig)
        return None
