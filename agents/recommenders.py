"""Display policies for ``promogym/PromoRecommendation-v0``: the rules shops run, the myopic recommender that plans
with a response model, the oracle that plans with the world's utilities, and the text ceiling (``revealed``) that
plans with them in expectation over what no text or log of the offer reveals.

Each turns a score per (visitor, candidate) into the env's action: the ``slots`` best candidates of each visitor get
the top priority level, the rest level 0, so the env shows exactly them (equal scores: lower product id first).
``random`` gives every pair level 0: the env's ties then draw the logs' own uniform display.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import pandas as pd

from promogym.agents.base import EnvPolicy
from promogym.agents.registry import PolicyContext, register_policy

PRIOR_DISPLAYS = 20.0  # pseudo-displays of the logs' purchase rate in the bestseller score


def top_levels(env: Any, score: np.ndarray) -> np.ndarray:
    """The flat action showing each visitor its ``slots`` candidates of highest ``score`` ((visitors, width);
    padding ignored; equal scores: the lower product id first)."""
    valid = env.candidates >= 0
    key = np.where(valid, score, -np.inf)
    order = np.lexsort((np.where(valid, env.candidates, np.iinfo(np.int64).max), -key), axis=1)
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(order.shape[1])[None, :].repeat(order.shape[0], 0), axis=1)
    k = np.minimum(env.slots, valid.sum(axis=1))
    top = valid & (rank < k[:, None])
    return np.where(top, env.config.levels - 1, 0).astype(np.int64).ravel()


def greedy_assortment(utility: np.ndarray, margin: np.ndarray, valid: np.ndarray, slots: np.ndarray) -> np.ndarray:
    """(visitors, width) booleans: for each visitor, ``slots`` candidates added one at a time, each the one that
    raises the expected profit of the multinomial logit with an outside option most (sum of exp(u) x margin over
    1 + sum of exp(u)); every slot is filled (the visitor looks at that many products) even where one more
    product lowers the expected profit. A greedy approximation of the best assortment of that size."""
    w = np.where(valid, np.exp(np.clip(utility, -30.0, 30.0)), 0.0)
    chosen = np.zeros(valid.shape, bool)
    num, den = np.zeros(len(w)), np.ones(len(w))
    k = np.minimum(slots, valid.sum(axis=1))
    rows = np.arange(len(w))
    for step in range(int(k.max()) if len(k) else 0):
        value = (num[:, None] + w * margin) / (den[:, None] + w)
        value = np.where(valid & ~chosen, value, -np.inf)
        pick = value.argmax(axis=1)
        open_ = step < k
        chosen[rows[open_], pick[open_]] = True
        num[open_] += (w * margin)[rows[open_], pick[open_]]
        den[open_] += w[rows[open_], pick[open_]]
    return chosen


class UniformDisplay(EnvPolicy):
    """Level 0 everywhere: the env draws each visitor's products uniformly from the category (the logs' display)."""

    name = "random"

    def act(self, observation: np.ndarray) -> np.ndarray:
        """All pairs at level 0."""
        return np.zeros(self.env.action_space.shape, np.int64)


class HighestMargin(EnvPolicy):
    """Shows each visitor the products of highest unit margin (list price - unit cost)."""

    name = "margin"

    def act(self, observation: np.ndarray) -> np.ndarray:
        """Top ``slots`` candidates by unit margin."""
        e = self.env
        return top_levels(e, e.unit_margin[np.maximum(e.candidates, 0)])


class Bestsellers(EnvPolicy):
    """Shows each visitor the category's bestsellers: purchases per display this season, starting from the logs'
    rate (``PRIOR_DISPLAYS`` pseudo-displays of it; the catalog's new products, which the logs are not used for,
    start from the logs' mean rate)."""

    name = "popular"

    def __init__(self, env: gym.Env[Any, Any], logs: pd.DataFrame) -> None:
        super().__init__(env)
        need = ("item_id", "purchased")
        missing = [c for c in need if c not in logs.columns]
        if missing:
            raise ValueError(f"the logs lack column(s) {', '.join(missing)}: bestsellers are counted from them")
        n = self.env.market.n_products
        shown = np.bincount(logs["item_id"].to_numpy(), minlength=n).astype(float)
        sold = np.bincount(logs["item_id"].to_numpy(), weights=logs["purchased"].to_numpy(float), minlength=n)
        mean = sold.sum() / max(shown.sum(), 1.0)
        rate = np.where(shown > 0, (sold + mean) / (shown + 1.0), mean)
        self.prior = np.where(self.env.market.catalog.is_new, mean, rate)

    def act(self, observation: np.ndarray) -> np.ndarray:
        """Top ``slots`` candidates by season purchases per display, shrunk to the logs' rate."""
        e = self.env
        j = np.maximum(e.candidates, 0)
        score = (e.sales[j] + PRIOR_DISPLAYS * self.prior[j]) / (e.displays[j] + PRIOR_DISPLAYS)
        return top_levels(e, score)


class GreedyRecommender(EnvPolicy):
    """The myopic recommender: each visitor's assortment of greatest expected profit this step by the greedy
    assortment (:func:`greedy_assortment`) on a response backend's logits (the simulator's; the world's for the
    oracle) at list price."""

    name = "greedy"

    def __init__(self, env: gym.Env[Any, Any], simulator: Any = None) -> None:
        super().__init__(env)
        self.simulator = simulator if simulator is not None else self.env.backend

    def act(self, observation: np.ndarray) -> np.ndarray:
        """Greedy assortments on the backend's utilities x unit margin."""
        e = self.env
        valid = e.candidates >= 0
        j = np.maximum(e.candidates, 0)
        u = np.zeros(valid.shape)
        if valid.any():
            users = np.broadcast_to(e.users[:, None], valid.shape)[valid]
            items = e.candidates[valid]
            u[valid] = self.simulator.logits(users, items, e.market.catalog.list_price[items], np.zeros(len(items)),
                                             e.state)
        margin = e.unit_margin[j] if e.config.reward == "profit" else e.market.catalog.list_price[j]
        chosen = greedy_assortment(u, margin, valid, e.slots)
        return np.where(chosen, e.config.levels - 1, 0).astype(np.int64).ravel()


__all__ = ["Bestsellers", "GreedyRecommender", "HighestMargin", "UniformDisplay", "greedy_assortment", "top_levels"]


# ---------------------------------------------------------------------------------------- registry
@register_policy("random", families=("recommendation",), static=True,
                 help="the logs' display: each visitor's products drawn uniformly from the category")
def _random(env: gym.Env[Any, Any], ctx: PolicyContext, arg: str | None) -> UniformDisplay:
    return UniformDisplay(env)


@register_policy("margin", families=("recommendation",), static=True,
                 help="the products of highest unit margin")
def _margin(env: gym.Env[Any, Any], ctx: PolicyContext, arg: str | None) -> HighestMargin:
    return HighestMargin(env)


@register_policy("popular", families=("recommendation",),
                 help="the bestsellers: purchases per display this season, from the logs' rate")
def _popular(env: gym.Env[Any, Any], ctx: PolicyContext, arg: str | None) -> Bestsellers:
    return Bestsellers(env, ctx.logs())


@register_policy("greedy", families=("recommendation",), plans=True,
                 help="the myopic recommender: greedy assortments by the simulator's conversion x margin")
def _greedy(env: gym.Env[Any, Any], ctx: PolicyContext, arg: str | None) -> GreedyRecommender:
    return GreedyRecommender(env, simulator=ctx.simulator)


@register_policy("revealed", families=("recommendation",), knows_truth=True,
                 help="the text ceiling: greedy assortments by the world's utilities without their hidden parts "
                      "(customer taste, product appeal)")
def _revealed(env: gym.Env[Any, Any], ctx: PolicyContext, arg: str | None) -> GreedyRecommender:
    from promogym.envs.backends import RevealedBackend

    return GreedyRecommender(env, simulator=RevealedBackend(env.unwrapped.market))  # type: ignore[attr-defined]


@register_policy("oracle", families=("recommendation",), knows_truth=True,
                 help="greedy assortments by the world's true utilities x margin")
def _oracle(env: gym.Env[Any, Any], ctx: PolicyContext, arg: str | None) -> GreedyRecommender:
    return GreedyRecommender(env, simulator=env.unwrapped.world)  # type: ignore[attr-defined]
