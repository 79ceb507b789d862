"""Planners for the season environments: the myopic greedy baseline and the oracle.

Both choose a plan — a price multiplier per product and, on PricePromo-v1, a coupon level per
segment — by coordinate ascent over a grid, scoring plans with expected outcomes of a fixed sample of
visitors (scaled to the expected number of visitors). Under business constraints (the env config's
``constraints``) a plan's prices are projected onto the day's feasible set before they are scored, as the env
would set them (the oracle holds today's feasible prices over its rollout; it does not model caps on
customers' coupons). They differ in what they know:

* ``MyopicGreedy`` uses the *training simulator* (the env's response backend, or the ``simulator`` it is
  given when it plays in another env, e.g. planned on a BERT simulator and scored in the world) and maximises the
  expected profit of the current day only, blind to stock, reference prices and fatigue (it scores
  every day as if reference prices were list prices and every product in stock).
* ``MPCOracle`` uses the *true world* and the true current state, and maximises the expected profit of
  the rest of the season: each candidate plan is held constant for the remaining days and rolled
  forward with a fluid model (expected units capped by stock; reference prices moving toward the
  plan's prices as in the world; fatigue and the weekly arrival pattern as of today's state and
  calendar). It re-plans every day from the realised state (model-predictive control).

The oracle is a strong reference, not an upper bound: it is restricted to plans that are constant
over the remaining season (re-optimised daily), its fluid rollout ignores demand randomness, and
coordinate ascent can stop in a local optimum. A policy can beat it.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from promogym.agents.base import EnvPolicy
from promogym.agents.baselines import price_grid
from promogym.agents.registry import PolicyContext, register_policy
from promogym.envs.backends import WorldBackend
from promogym.envs.market import mnl_from_utility


class _Planner(EnvPolicy):
    def __init__(self, env: gym.Env[Any, Any], n_visitors: int = 1000, grid: tuple[float, ...] | None = None,
                 seed: int = 0) -> None:
        super().__init__(env)
        e = self.env
        self.grid = price_grid(e.config) if grid is None else \
            np.asarray([g for g in grid if e.config.price_low - 1e-9 <= g <= e.config.price_high + 1e-9])
        self.users, self.sets = e.visitor_sample(n_visitors, seed)
        self.levels = np.asarray(getattr(e.config, "coupon_levels", (0.0,)))
        self.n_segments = e.action_space.shape[0] - e.config.n_products
        self.cost = e.market.catalog.unit_cost[e.products]
        self.reset()

    # whether plans carry a price offset per phase of the env's calendar (grid steps added to every product's
    # price on the phase's days): the MPC oracle plans the season's phases; the myopic rule needs only today
    plans_phases = False

    def reset(self) -> None:
        n = self.env.config.n_products
        self.plan = np.full(n, int(np.argmin(np.abs(self.grid - 1.0))))   # grid index per product
        self.seg = np.zeros(self.n_segments, dtype=int)                    # level index per segment
        phases = int(self.env.phase_of_day.max()) + 1 if self.plans_phases and self.env.has_calendar else 0
        self.off = np.zeros(phases, dtype=int)                             # grid steps per calendar phase

    def score(self, plan: np.ndarray, seg: np.ndarray) -> float:
        """The value of a plan (grid index per product, coupon level index per segment); higher is better."""
        raise NotImplementedError

    def day_prices(self, plan: np.ndarray, off: np.ndarray, t: int) -> np.ndarray:
        """The prices a plan sets on season day ``t``: its grid multiples of list price, shifted by the phase's
        offset when the plan has phases (not projected)."""
        k = plan + (off[self.env.phase_of_day[min(t, len(self.env.phase_of_day) - 1)]] if len(off) else 0)
        return self.env.list_price * self.grid[np.clip(k, 0, len(self.grid) - 1)]

    def prices(self, plan: np.ndarray, off: np.ndarray | None = None) -> np.ndarray:
        """The prices a plan sets today, projected onto the env's business constraints (the day's feasible set),
        so that plans are scored as the env would set them."""
        return self.env.project_prices(self.day_prices(plan, self.off if off is None else off, self.env.t))

    def _score(self, plan: np.ndarray, seg: np.ndarray, off: np.ndarray) -> float:
        """:meth:`score` of a plan with phase offsets ``off`` (planners without phases ignore them)."""
        saved, self.off = self.off, off
        try:
            return self.score(plan, seg)
        finally:
            self.off = saved

    def improve(self, rounds: int = 2) -> None:
        """Coordinate ascent: move every price together, then one coordinate at a time, by one grid
        step while the score improves (a common move first: products substitute for each other)."""
        best = self.score(self.plan, self.seg)
        for _ in range(rounds):
            improved = False
            for step in (-1, 1):
                cand = np.clip(self.plan + step, 0, len(self.grid) - 1)
                if (cand != self.plan).any():
                    s = self.score(cand, self.seg)
                    if s > best + 1e-9:
                        self.plan, best, improved = cand, s, True
            for j in range(len(self.plan)):
                for step in (-1, 1):
                    k = self.plan[j] + step
                    if 0 <= k < len(self.grid):
                        cand = self.plan.copy()
                        cand[j] = k
                        s = self.score(cand, self.seg)
                        if s > best + 1e-9:
                            self.plan, best, improved = cand, s, True
            for j in range(self.n_segments):
                for k in range(len(self.levels)):
                    if k != self.seg[j]:
                        cand = self.seg.copy()
                        cand[j] = k
                        s = self.score(self.plan, cand)
                        if s > best + 1e-9:
                            self.seg, best, improved = cand, s, True
            today = self.env.phase_of_day[min(self.env.t, len(self.env.phase_of_day) - 1)]
            for j in range(today + 1, len(self.off)):  # later phases' offsets (today's is the plan itself)
                for step in (-1, 1):
                    off = self.off.copy()
                    off[j] += step
                    if abs(off[j]) < len(self.grid):
                        s = self._score(self.plan, self.seg, off)
                        if s > best + 1e-9:
                            self.off, best, improved = off, s, True
            if not improved:
                break

    def act(self, observation: np.ndarray) -> np.ndarray:
        """Improve yesterday's plan from today's state and play it."""
        if len(self.off):  # a new phase today: its offset becomes part of the products' plan
            today = self.env.phase_of_day[min(self.env.t, len(self.env.phase_of_day) - 1)]
            self.plan = np.clip(self.plan + self.off[today], 0, len(self.grid) - 1)
            self.off = self.off - self.off[today]
        # the first day searches until no move helps (a season's plan can be far from list price); later days
        # improve yesterday's plan
        self.improve(rounds=50 if self.env.t == 0 else 2)
        e = self.env
        action = e.action_from_prices(self.prices(self.plan))
        if self.n_segments:
            # the middle of each level's bin of [-1, 1]
            coupons = -1.0 + (2.0 * self.seg + 1.0) / len(self.levels)
            action = np.concatenate([action, coupons.astype(np.float32)])
        return action.astype(np.float32)

    def _day_profit(self, backend: Any, state: Any, prices: np.ndarray, seg: np.ndarray, scale: float,
                    stock: np.ndarray | None) -> tuple[float, np.ndarray, float]:
        coupons = self.levels[seg] if self.n_segments else None
        units, spend = self.env.expected_outcome(backend, state, self.users, self.sets, prices, coupons, scale)
        if stock is not None:
            capped = np.minimum(units, stock)
            spend = spend * np.divide(capped, units, out=np.zeros_like(units), where=units > 0)
            units = capped
        return float((units * (prices - self.cost)).sum() - spend.sum()), units, float(spend.sum())


class MyopicGreedy(_Planner):
    """Maximises the training simulator's expected profit of the current day; blind to stock,
    reference prices and fatigue."""

    name = "myopic"

    def __init__(self, env: gym.Env[Any, Any], simulator: Any = None, **kwargs: Any) -> None:
        super().__init__(env, **kwargs)
        e = self.env
        # the env's own backend unless another is given (planned on a learned simulator, played in the world)
        self.simulator = simulator if simulator is not None else e.backend
        self.blind = e.market.initial_state()
        self.blind.stock[:] = 1  # everything in stock
        self.blind.fatigue[:] = 0.0

    def score(self, plan: np.ndarray, seg: np.ndarray) -> float:
        """Today's expected profit of the plan under the simulator, everything in stock, no fatigue."""
        e = self.env
        self.blind.day = e.state.day
        scale = e.config.daily_customers * e.visit_scale(self.users, e.state.day) / len(self.users)
        return self._day_profit(self.simulator, self.blind, self.prices(plan), seg, scale, None)[0]


class MPCOracle(_Planner):
    """Model-predictive control on the true world: plans rolled over the rest of the season, constant over it
    or, on an env with a calendar, constant within each of its phases (a price offset per phase)."""

    name = "oracle"
    plans_phases = True

    def __init__(self, env: gym.Env[Any, Any], **kwargs: Any) -> None:
        super().__init__(env, **kwargs)
        self.world = WorldBackend(self.env.market)

    def score(self, plan: np.ndarray, seg: np.ndarray) -> float:
        """The world's expected profit of holding the plan to the season's end (fluid rollout from today)."""
        e = self.env
        cfg = e.config
        state = e.state.copy()
        stock = state.stock[e.products].astype(float)
        budget = float(getattr(e, "budget_left", 0.0))
        rho = e.market.config.reference_adaptation
        total = 0.0
        for t in range(e.t, cfg.horizon):
            prices = self.prices(plan) if t == e.t else self.day_prices(plan, self.off, t)
            scale = cfg.daily_customers * e.visit_scale(self.users, state.day) / len(self.users)
            use_seg = seg if budget > 0 else np.zeros_like(seg)
            profit, units, spend = self._day_profit(self.world, state, prices, use_seg, scale, stock)
            if spend > budget:  # the budget cannot pay this plan's coupons: no coupons from here on
                profit, units, spend = self._day_profit(self.world, state, prices, np.zeros_like(seg), scale, stock)
            total += profit
            budget -= spend
            stock -= units
            state.stock[e.products] = np.where(stock > 1e-6, 1, 0)
            shown = e.products
            state.reference_price[shown] += rho * (prices - state.reference_price[shown])
            state.day += 1
        return total + cfg.salvage_share * float((self.cost * stock).sum())  # what is left is sold off


@register_policy("myopic", families=("pricing",), plans=True,
                 help="the day's best prices under the simulator, blind to stock, reference prices and fatigue")
def _myopic(env: gym.Env[Any, Any], ctx: PolicyContext, arg: str | None) -> MyopicGreedy:
    return MyopicGreedy(env, simulator=ctx.simulator)


@register_policy("oracle", families=("pricing",), knows_truth=True,
                 help="model-predictive control on the true world over the rest of the season")
def _oracle(env: gym.Env[Any, Any], ctx: PolicyContext, arg: str | None) -> MPCOracle:
    return MPCOracle(env, n_visitors=int(getattr(env.unwrapped, "planning_visitors", 1000)))


class StockDPOracle(EnvPolicy):
    """The optimal policy of a one-product DynamicPricing env whose only dynamic state is stock.

    With one product, no reference-price adaptation (``reference_adaptation`` = 0) and no coupons,
    the day's buyers are Poisson(arrivals(day) x q(day, price)), where q is the average true purchase
    probability of a visitor (estimated on a fixed sample of ``n_visitors``), and units sold are
    capped by stock. Backward induction over (day, units left) on a fine price grid then gives the
    optimal expected profit and policy exactly (up to the visitor sample and the grid): an upper
    bound, unlike ``MPCOracle``. ``value`` is the optimum from the start of the season.
    """

    name = "dp_oracle"

    def __init__(self, env: gym.Env[Any, Any], n_visitors: int = 20_000, n_prices: int = 101, seed: int = 1) -> None:
        super().__init__(env)
        e = self.env
        cfg = e.config
        if cfg.n_products != 1 or getattr(e, "with_coupons", False) or e.market.config.reference_adaptation != 0:
            raise ValueError("StockDPOracle needs a one-product DynamicPricing env with reference_adaptation=0")
        if getattr(e, "has_calendar", False):
            raise ValueError("StockDPOracle does not model a season's calendar (traffic and shopper mix by phase); "
                             "use an env without `phase_days`")
        if getattr(e, "rules", None) is not None:
            raise ValueError("StockDPOracle does not model business constraints (its recursion prices freely each "
                             "day); use an env without `constraints`")
        mult = np.linspace(cfg.price_low, cfg.price_high, n_prices)
        self.prices = np.round(e.list_price[0] * mult, 2)
        users, _ = e.visitor_sample(n_visitors, seed)
        item = np.full(len(users), e.products[0])
        margin = self.prices - e.market.catalog.unit_cost[e.products[0]]
        start = e.market.initial_state()
        stock0 = int(cfg.initial_stock)
        # q[w, j]: mean purchase probability on weekday w at price j (utility depends on the weekday)
        q = np.empty((7, len(self.prices)))
        for w in range(7):
            state = start.copy()
            state.day = w
            for j, p in enumerate(self.prices):
                u = e.market.utility(users, item, np.full(len(users), p), np.zeros(len(users)), state)
                q[w, j] = mnl_from_utility(u[:, None])[:, 0].mean()
        self._mu = np.stack([cfg.daily_customers * e.season_factor(t) * q[t % 7] for t in range(cfg.horizon)])
        self._margin = margin
        values, self.policy = self._backward(np.arange(len(self.prices)))
        self.value = float(values[stock0])

    def _backward(self, allowed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Backward induction choosing, each (day, stock), the best of the ``allowed`` price indices:
        (value per starting stock, policy (horizon, stock+1) of price indices)."""
        from scipy.stats import poisson

        horizon, stock0 = self._mu.shape[0], int(self.env.config.initial_stock)
        units = np.arange(stock0 + 1)
        value = np.zeros(stock0 + 1)
        policy = np.zeros((horizon, stock0 + 1), dtype=int)
        for t in reversed(range(horizon)):
            pk = poisson.pmf(units[None, :], self._mu[t, allowed][:, None])      # (prices, k)
            margin = self._margin[allowed]
            new = np.zeros(stock0 + 1)
            for s in range(1, stock0 + 1):
                probs = np.append(pk[:, :s], 1.0 - pk[:, :s].sum(axis=1, keepdims=True), axis=1)  # sold 0..s
                sold = units[: s + 1]
                q_val = (probs * (sold[None, :] * margin[:, None] + value[s - sold][None, :])).sum(axis=1)
                best = int(np.argmax(q_val))
                policy[t, s], new[s] = allowed[best], q_val[best]
            value = new
        return value, policy

    def static_values(self) -> np.ndarray:
        """Expected season profit of each constant price of the grid (``self.prices``)."""
        stock0 = int(self.env.config.initial_stock)
        return np.array([self._backward(np.array([j]))[0][stock0] for j in range(len(self.prices))])

    def act(self, observation: np.ndarray) -> np.ndarray:
        """The optimal price for today and the stock left."""
        e = self.env
        s = int(e.state.stock[e.products[0]])
        t = min(e.t, e.config.horizon - 1)
        return e.action_from_prices(np.array([self.prices[self.policy[t, s]]]))
