"""Baseline policies a pricing team would really use, behind SB3's ``predict()``.

Pricing (DynamicPricing-v1 and the price part of PricePromo-v1, where these give no coupons):
list price, a constant price vector (and the best one found by search on a simulator), a uniform
discount, cost-plus, a markdown rule, Thompson sampling over a price ladder per product, random.
Coupons (CouponAllocation-v1): no coupons, one level for everybody, random.
An imported shop's prices (ShopPricing-v0): list price, a common multiple of it, the best common multiple searched
on the shop's model (a per-product search would play an episode per product and price), random.

Under business constraints (the env config's ``constraints``) the env projects every price onto the day's
feasible set and refuses coupons over a customer's cap, so these rules play by them; the best static
price vector is searched on the constrained env, so it is the best among what the constraints allow.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np

from promogym.agents.base import EnvPolicy, episode_table
from promogym.agents.registry import PolicyContext, register_policy


class _PricingPolicy(EnvPolicy):
    """Sets prices as multiples of list price; on PricePromo-v1 gives no coupons."""

    def multipliers(self, observation: np.ndarray) -> np.ndarray:
        """Today's price per product as a multiple of its list price."""
        raise NotImplementedError

    def act(self, observation: np.ndarray) -> np.ndarray:
        env = self.env
        prices = env.list_price * np.asarray(self.multipliers(observation), dtype=float)
        action = env.action_from_prices(prices)
        extra = env.action_space.shape[0] - len(action)
        return np.concatenate([action, -np.ones(extra, np.float32)]).astype(np.float32)


class ListPrice(_PricingPolicy):
    """Every product at its list price, every day."""

    name = "list_price"

    def multipliers(self, observation: np.ndarray) -> np.ndarray:
        """All ones."""
        return np.ones(len(self.env.list_price))


class StaticPrice(_PricingPolicy):
    """The same price vector every day: ``multipliers`` x list price."""

    name = "static_price"

    def __init__(self, env: gym.Env[Any, Any], multipliers: Sequence[float] | np.ndarray | float) -> None:
        super().__init__(env)
        self.mult = np.broadcast_to(np.asarray(multipliers, dtype=float), (len(self.env.list_price),)).copy()

    def multipliers(self, observation: np.ndarray) -> np.ndarray:
        """The fixed vector given at construction."""
        return self.mult


class UniformDiscount(StaticPrice):
    """Every product at ``discount`` off list price, every day."""

    name = "uniform_discount"

    def __init__(self, env: gym.Env[Any, Any], discount: float = 0.1) -> None:
        super().__init__(env, 1.0 - discount)


class CostPlus(_PricingPolicy):
    """Unit cost plus a fixed markup (clipped to the env's price band)."""

    name = "cost_plus"

    def __init__(self, env: gym.Env[Any, Any], markup: float = 1.0) -> None:
        super().__init__(env)
        cost = self.env.market.catalog.unit_cost[self.env.products]
        self.mult = cost * (1.0 + markup) / self.env.list_price

    def multipliers(self, observation: np.ndarray) -> np.ndarray:
        """Unit cost x (1 + markup) / list price, per product."""
        return self.mult


class Markdown(_PricingPolicy):
    """Start at ``start`` x list; once ``after`` of the season has passed, cut a product's price by
    ``step`` each day its stock left exceeds ``trigger`` x the share of the season left, down to ``floor``."""

    name = "markdown"

    def __init__(self, env: gym.Env[Any, Any], start: float = 1.0, step: float = 0.1, floor: float = 0.6,
                 after: float = 0.4, trigger: float = 1.1) -> None:
        super().__init__(env)
        self.start, self.step, self.floor, self.after, self.trigger = start, step, floor, after, trigger
        self.reset()

    def reset(self) -> None:
        """Back to ``start`` x list price for a new season."""
        self.mult = np.full(self.env.config.n_products, self.start)

    def multipliers(self, observation: np.ndarray) -> np.ndarray:
        """Yesterday's multipliers, cut by ``step`` for products selling slower than the season."""
        o = self.env.decode_observation(observation)
        left = float(o["season_left"][0])
        if 1.0 - left >= self.after:
            slow = o["stock_share"] > self.trigger * left
            self.mult = np.where(slow, np.maximum(self.floor, self.mult - self.step), self.mult)
        return self.mult


class ThompsonPricing(_PricingPolicy):
    """Thompson sampling per product over a price ladder: a Gaussian posterior on the daily profit of
    each (product, price) arm, updated from yesterday's units in the observation. Learns within an
    episode (``reset`` forgets), blind to stock and reference prices."""

    name = "thompson"

    def __init__(self, env: gym.Env[Any, Any], ladder: Sequence[float] = (0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3),
                 prior_sd: float = 50.0, noise_sd: float = 20.0, seed: int = 0) -> None:
        super().__init__(env)
        self.ladder = np.asarray(ladder, dtype=float)
        self.prior_sd, self.noise_sd, self.seed = prior_sd, noise_sd, seed
        self.episode = 0
        self.reset()

    def reset(self) -> None:
        """A fresh prior for a new episode (each episode draws from its own seeded stream)."""
        n, k = self.env.config.n_products, len(self.ladder)
        self.rng = np.random.default_rng([self.seed, self.episode])
        self.episode += 1
        self.precision = np.full((n, k), 1.0 / self.prior_sd ** 2)
        self.mean = np.zeros((n, k))
        self.last_arm: np.ndarray | None = None

    def multipliers(self, observation: np.ndarray) -> np.ndarray:
        """Update yesterday's arms with the profit observed, then draw from the posterior and play each
        product's best draw."""
        o = self.env.decode_observation(observation)
        rows = np.arange(self.env.config.n_products)
        if self.last_arm is not None:  # yesterday's price as set (business constraints may have moved it)
            price = self.env.list_price * (1.0 + o["price_index"])
            profit = o["last_units"] * (price - self.env.market.catalog.unit_cost[self.env.products])
            p_old = self.precision[rows, self.last_arm]
            p_new = p_old + 1.0 / self.noise_sd ** 2
            self.mean[rows, self.last_arm] = (self.mean[rows, self.last_arm] * p_old
                                              + profit / self.noise_sd ** 2) / p_new
            self.precision[rows, self.last_arm] = p_new
        draw = self.mean + self.rng.standard_normal(self.mean.shape) / np.sqrt(self.precision)
        self.last_arm = draw.argmax(axis=1)
        return self.ladder[self.last_arm]


class RandomPolicy(EnvPolicy):
    """Uniformly random actions (seeded)."""

    name = "random"

    def __init__(self, env: gym.Env[Any, Any], seed: int = 0) -> None:
        super().__init__(env)
        self.space = self.env.action_space
        self.space.seed(seed)

    def act(self, observation: np.ndarray) -> np.ndarray:
        """A uniform draw from the action space (its own seeded generator, never the env's)."""
        return np.asarray(self.space.sample())


class UniformCoupon(EnvPolicy):
    """The same coupon level for every customer (level 0: no coupons)."""

    name = "uniform_coupon"

    def __init__(self, env: gym.Env[Any, Any], level: int = 0) -> None:
        super().__init__(env)
        self.level = level

    def act(self, observation: np.ndarray) -> np.ndarray:
        """``level`` for every customer of the cohort."""
        return np.full(self.env.config.cohort_size, self.level, dtype=np.int64)


def price_grid(config: Any, step: float = 0.1) -> np.ndarray:
    """Multiples of list price in steps of ``step`` over an env's price band (``price_low`` .. ``price_high``):
    the grid planners and the best-static search choose from."""
    lo, hi = float(config.price_low), float(config.price_high)
    return np.round(np.arange(np.ceil(lo / step - 1e-9) * step, hi + 1e-9, step), 2)


def search_static_prices(make_env: Callable[[], gym.Env[Any, Any]], seeds: Sequence[int],
                         grid: Sequence[float] | None = None, rounds: int = 2) -> tuple[np.ndarray, float]:
    """The best constant price vector on a simulator: a common multiplier first, then coordinate
    ascent per product over ``grid`` (default: the env's price band in steps of 0.1), each candidate scored
    by its mean return over the same ``seeds``
    (common random numbers); ``rounds=0``: the common multiplier only. Returns (multipliers, mean return)."""
    env = make_env()
    n = len(env.unwrapped.list_price)  # type: ignore[attr-defined]
    if grid is None:
        grid = [float(g) for g in price_grid(env.unwrapped.config)]  # type: ignore[attr-defined]

    def score(mult: np.ndarray) -> float:
        return float(episode_table(env, StaticPrice(env, mult), seeds)["return"].mean())

    results = {m: score(np.full(n, m)) for m in grid}
    best_m = max(results, key=lambda m: results[m])
    best, best_score = np.full(n, best_m), results[best_m]
    for _ in range(rounds):
        improved = False
        for j in range(n):
            for m in grid:
                if m == best[j]:
                    continue
                cand = best.copy()
                cand[j] = m
                s = score(cand)
                if s > best_score + 1e-9:
                    best, best_score, improved = cand, s, True
        if not improved:
            break
    return best, best_score


MARKDOWN_GRID: dict[str, tuple[float, ...]] = {
    "start": (1.0, 1.1, 1.2, 1.3, 1.4, 1.5, 1.6),
    "step": (0.03, 0.05, 0.1, 0.2),
    "after": (0.0, 0.25, 0.5, 0.75),
    "trigger": (0.7, 0.9, 1.1, 1.3),
    "floor": (0.6, 0.8, 1.0),
}


def search_markdown(make_env: Callable[[], gym.Env[Any, Any]], seeds: Sequence[int],
                    grid: dict[str, tuple[float, ...]] | None = None,
                    rounds: int = 2) -> tuple[dict[str, float], float]:
    """The best markdown schedule on a simulator, tuned as a pricing team would tune one: coordinate ascent over
    :class:`Markdown`'s parameters (``grid``: the values tried per parameter, default :data:`MARKDOWN_GRID`
    clipped to the env's price band), each candidate scored by its mean return over the same ``seeds`` (common
    random numbers). Returns (parameters, mean return)."""
    env = make_env()
    cfg = env.unwrapped.config  # type: ignore[attr-defined]
    lo, hi = cfg.price_low - 1e-9, cfg.price_high + 1e-9
    grid = {k: tuple(v for v in vals if k not in ("start", "floor") or lo <= v <= hi)
            for k, vals in (grid or MARKDOWN_GRID).items()}

    def score(params: dict[str, float]) -> float:
        return float(episode_table(env, Markdown(env, **params), seeds)["return"].mean())

    best = {"start": 1.0, "step": 0.1, "floor": max(0.6, float(cfg.price_low)), "after": 0.4, "trigger": 1.1}
    best_score = score(best)
    for _ in range(rounds):
        improved = False
        for key, values in grid.items():
            for v in values:
                if v == best[key]:
                    continue
                cand = {**best, key: v}
                s = score(cand)
                if s > best_score + 1e-9:
                    best, best_score, improved = cand, s, True
        if not improved:
            break
    return best, best_score


# ---------------------------------------------------------------------------------------- registry
@register_policy("list_price", families=("pricing", "shop_pricing"), static=True, help="every product at list price")
def _list_price(env: gym.Env[Any, Any], ctx: PolicyContext, arg: str | None) -> ListPrice:
    return ListPrice(env)


@register_policy("best_static", families=("pricing",), static=True, plans=True, searched=True,
                 help="the best constant price vector, searched on the simulator")
def _best_static(env: gym.Env[Any, Any], ctx: PolicyContext, arg: str | None) -> StaticPrice:
    best = ctx.cached("best_static", lambda: search_static_prices(ctx.make_simulator_env,
                                                                  seeds=range(ctx.search_seeds))[0])
    return StaticPrice(env, best)


def _check_multiplier(env: gym.Env[Any, Any], value: float) -> None:
    cfg = env.unwrapped.config  # type: ignore[attr-defined]
    if not cfg.price_low <= value <= cfg.price_high:
        raise ValueError(f"static:<multiplier> must lie in the env's price band [{cfg.price_low}, {cfg.price_high}] "
                         f"(x list price), got {value}")


@register_policy("best_multiple", families=("shop_pricing",), static=True, plans=True, searched=True,
                 help="the best common multiple of list price (the price band in steps of 0.1), searched on the model")
def _best_multiple(env: gym.Env[Any, Any], ctx: PolicyContext, arg: str | None) -> StaticPrice:
    best = ctx.cached("best_multiple", lambda: search_static_prices(ctx.make_simulator_env,
                                                                   seeds=range(ctx.search_seeds), rounds=0)[0])
    return StaticPrice(env, best)


@register_policy("static", families=("pricing", "shop_pricing"), arg="<multiplier>", static=True, default=False,
                 help="every product at <multiplier> x list price", check_arg=_check_multiplier)
def _static(env: gym.Env[Any, Any], ctx: PolicyContext, arg: str | None) -> StaticPrice:
    return StaticPrice(env, float(arg or 1.0))


@register_policy("uniform_discount", families=("pricing",), static=True, help="10% off list price")
def _uniform_discount(env: gym.Env[Any, Any], ctx: PolicyContext, arg: str | None) -> UniformDiscount:
    return UniformDiscount(env, 0.1)


@register_policy("cost_plus", families=("pricing",), static=True, help="unit cost plus a 100% markup")
def _cost_plus(env: gym.Env[Any, Any], ctx: PolicyContext, arg: str | None) -> CostPlus:
    return CostPlus(env, 1.0)


@register_policy("markdown", families=("pricing",), help="list price, marked down as the season runs on")
def _markdown(env: gym.Env[Any, Any], ctx: PolicyContext, arg: str | None) -> Markdown:
    return Markdown(env)


@register_policy("best_markdown", families=("pricing",), plans=True, searched=True,
                 help="the markdown schedule tuned on the simulator (start price, step, timing, trigger, floor)")
def _best_markdown(env: gym.Env[Any, Any], ctx: PolicyContext, arg: str | None) -> Markdown:
    params = ctx.cached("best_markdown", lambda: search_markdown(ctx.make_simulator_env,
                                                               seeds=range(ctx.search_seeds))[0])
    return Markdown(env, **params)


@register_policy("thompson", families=("pricing",), help="Thompson sampling over a price ladder per product")
def _thompson(env: gym.Env[Any, Any], ctx: PolicyContext, arg: str | None) -> ThompsonPricing:
    return ThompsonPricing(env)


@register_policy("random", families=("pricing", "coupons", "shop_pricing"), help="uniformly random actions (seeded)")
def _random(env: gym.Env[Any, Any], ctx: PolicyContext, arg: str | None) -> RandomPolicy:
    return RandomPolicy(env)


def _uniform_coupon(level: int) -> Callable[[gym.Env[Any, Any], PolicyContext, str | None], UniformCoupon]:
    def factory(env: gym.Env[Any, Any], ctx: PolicyContext, arg: str | None) -> UniformCoupon:
        return UniformCoupon(env, level)
    return factory


for _level, _name, _what in ((0, "no_coupon", "no coupons"), (1, "all_5pct", "the 5% coupon for everybody"),
                             (2, "all_10pct", "the 10% coupon for everybody"),
                             (3, "all_20pct", "the 20% coupon for everybody")):
    register_policy(_name, families=("coupons",), static=True, help=_what)(_uniform_coupon(_level))
