"""Coupon baselines for CouponAllocation-v1: myopic greedy, two-model uplift targeting and the oracle.

Each gives a coupon only to customers the env allows one (the business constraints' ``coupon_cap``, see
:meth:`CouponAllocationEnv.coupon_allowed`), so their budget pacing counts only coupons that can be given."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import pandas as pd

from promogym.agents.base import EnvPolicy
from promogym.agents.registry import PolicyContext, register_policy
from promogym.envs.coupons import marketer_features


def level_outcomes(env: Any, backend: Any, state: Any) -> tuple[np.ndarray, np.ndarray]:
    """(cohort, levels) expected profit after the coupon and expected coupon cost of giving each level to
    each customer of the current cohort, under ``backend`` and ``state``: sums over the customer's viewed
    products of the multinomial-logit choice probability x margin (x coupon cost)."""
    e = env.unwrapped if hasattr(env, "unwrapped") else env
    cat = e.market.catalog
    shown = e.views >= 0
    price = np.where(shown, cat.list_price[np.maximum(e.views, 0)], 0.0)
    cost = np.where(shown, cat.unit_cost[np.maximum(e.views, 0)], 0.0)
    profit = np.empty((len(e.users), len(e.levels)))
    spend = np.empty_like(profit)
    for k, lvl in enumerate(e.levels):
        p = e.choice_proba(np.full(len(e.users), lvl), backend, state)
        profit[:, k] = (p * (price * (1 - lvl) - cost)).sum(axis=1)
        spend[:, k] = (p * price * lvl).sum(axis=1)
    return profit, spend


def within_caps(env: Any, values: np.ndarray) -> np.ndarray:
    """``values`` ((cohort, levels), higher is better) with every coupon level of a customer who has reached
    the business constraints' ``coupon_cap`` set to -inf: rules choose among the levels the env allows."""
    e = env.unwrapped if hasattr(env, "unwrapped") else env
    allowed = e.coupon_allowed()
    out = np.array(values, dtype=float)
    out[~allowed, 1:] = -np.inf
    return out


class MyopicCoupons(EnvPolicy):
    """Gives each customer the level that maximises the training simulator's expected profit of this
    step (choice probabilities over the viewed products x margin after the coupon), blind to fatigue and
    to the budget."""

    name = "myopic"

    def __init__(self, env: gym.Env[Any, Any], simulator: Any = None) -> None:
        super().__init__(env)
        # the response model it plans with: the env's own backend unless another is given (a policy planned
        # on a learned simulator and played in the world)
        self.simulator = simulator if simulator is not None else self.env.backend

    def act(self, observation: np.ndarray) -> np.ndarray:
        """Each customer's level of highest expected profit this step (within the coupon cap)."""
        e = self.env
        blind = e.state.copy()
        blind.fatigue[:] = 0.0
        return within_caps(e, level_outcomes(e, self.simulator, blind)[0]).argmax(axis=1).astype(np.int64)


def _log_visits(market: Any, logs: pd.DataFrame) -> dict[str, np.ndarray]:
    """One record per logged visit: the customer, the browsed category (the market's id), the viewed
    products ((visits, width), -1 padding), coupons in the last 7 days, the coupon level, the mean shelf
    price relative to list over the viewed products and whether anything was bought."""
    need = ("visit_id", "user_id", "item_id", "category", "coupons_last_7d", "coupon", "price", "list_price",
            "purchased")
    missing = [c for c in need if c not in logs.columns]
    if missing:
        raise ValueError(f"the logs lack column(s) {', '.join(missing)}: uplift targeting learns from visits "
                         "(logs of one choice per visit)")
    names = pd.Index(market.catalog.category_names)
    category = names.get_indexer(logs["category"].astype(str))
    if (category < 0).any():
        unknown = sorted(set(logs["category"].astype(str)[category < 0]))
        raise ValueError(f"the logs name categories the market does not have: {', '.join(unknown[:5])}")
    visit = logs["visit_id"].to_numpy()
    ids, row_visit = np.unique(visit, return_inverse=True)
    n = len(ids)
    order = np.argsort(row_visit, kind="stable")
    starts = np.searchsorted(row_visit[order], np.arange(n))
    slot = np.empty(len(visit), np.int64)
    slot[order] = np.arange(len(visit)) - np.repeat(starts, np.bincount(row_visit, minlength=n))
    views = np.full((n, int(slot.max()) + 1), -1, np.int64)
    views[row_visit, slot] = logs["item_id"].to_numpy()
    first = order[starts]
    rel = (logs["price"] / logs["list_price"]).to_numpy()
    return {"users": logs["user_id"].to_numpy()[first], "categories": category[first], "views": views,
            "coupons_last_7d": logs["coupons_last_7d"].to_numpy()[first],
            "coupon": logs["coupon"].to_numpy()[first],
            "price_rel": np.bincount(row_visit, weights=rel, minlength=n) / np.bincount(row_visit, minlength=n),
            "bought": np.bincount(row_visit, weights=logs["purchased"].to_numpy(), minlength=n) > 0}


class UpliftTargeting(EnvPolicy):
    """Two-model uplift targeting learned from logs: one model of buying anything in a visit without a
    coupon and one per coupon level, on what a marketer sees of a visit (one training row per logged
    visit). A purchase is valued at the mean margin after the coupon of the customer's viewed products.
    Each step it ranks customers by expected profit uplift per expected coupon cost and hands out each
    customer's best level, best ratio first, while the expected cost fits the step's share of the budget
    left (even pacing over the steps left)."""

    name = "uplift"

    def __init__(self, env: gym.Env[Any, Any], logs: pd.DataFrame, seed: int = 0) -> None:
        super().__init__(env)
        from sklearn.ensemble import HistGradientBoostingClassifier

        e = self.env
        v = _log_visits(e.market, logs)
        x = marketer_features(e.market, v["users"], v["categories"], v["views"], v["coupons_last_7d"])
        # price effects are the env's to set (list price); learn on every visit, with the mean price relative
        # to list as a feature held at 1 when predicting
        x = np.hstack([x, v["price_rel"][:, None]])
        self.models = {}
        for lvl in e.levels:
            rows = np.isclose(v["coupon"], lvl)
            if rows.sum() < 100:
                raise ValueError(f"the logs have only {int(rows.sum())} visits with coupon level {lvl}")
            m = HistGradientBoostingClassifier(max_iter=200, learning_rate=0.05, random_state=seed)
            m.fit(x[rows], v["bought"][rows])
            self.models[float(lvl)] = m

    def act(self, observation: np.ndarray) -> np.ndarray:
        """Levels for the cohort: best uplift per coupon cost first, within the step's share of the budget."""
        e = self.env
        x = np.hstack([e.customer_features(), np.ones((len(e.users), 1), np.float32)])
        shown = e.views >= 0
        items = np.maximum(e.views, 0)
        n_shown = shown.sum(axis=1)
        price = np.where(shown, e.market.catalog.list_price[items], 0.0).sum(axis=1) / n_shown
        cost = np.where(shown, e.market.catalog.unit_cost[items], 0.0).sum(axis=1) / n_shown
        p = {lvl: m.predict_proba(x)[:, 1] for lvl, m in self.models.items()}
        base = p[0.0] * (price - cost)
        best_lvl = np.zeros(len(price), dtype=np.int64)
        best_ratio = np.zeros(len(price))
        best_cost = np.zeros(len(price))
        for k, lvl in enumerate(e.levels[1:], start=1):
            exp_cost = p[float(lvl)] * price * lvl
            uplift = p[float(lvl)] * (price * (1 - lvl) - cost) - base + exp_cost  # sales uplift before coupon cost
            net = uplift - exp_cost
            ratio = np.where(exp_cost > 0, net / exp_cost, 0.0)
            better = (net > 0) & (ratio > best_ratio)
            best_lvl = np.where(better, k, best_lvl)
            best_ratio = np.where(better, ratio, best_ratio)
            best_cost = np.where(better, exp_cost, best_cost)
        best_lvl = np.where(e.coupon_allowed(), best_lvl, 0)
        steps_left = max(1, e.config.horizon - e.t)
        allowance = e.budget_left / steps_left
        action = np.zeros(len(price), dtype=np.int64)
        spent = 0.0
        for i in np.argsort(-best_ratio):
            if best_lvl[i] == 0 or spent + best_cost[i] > allowance:
                continue
            action[i] = best_lvl[i]
            spent += best_cost[i]
        return action


class CouponOracle(EnvPolicy):
    """The true world's best coupon allocation for the current cohort under an evenly paced budget:
    each customer gets the level maximising true expected profit minus ``lam`` x expected coupon cost,
    with the shadow price ``lam`` >= 0 found by bisection so that the cohort's expected coupon cost fits
    the budget left divided by the steps left. It knows every customer's true type, taste and fatigue;
    it does not plan for the fatigue its coupons cause, so it is a strong reference, not an upper bound."""

    name = "oracle"

    def act(self, observation: np.ndarray) -> np.ndarray:
        """The cohort's levels under the shadow price that paces the budget evenly."""
        from promogym.envs.backends import WorldBackend

        e = self.env
        profit, spend = level_outcomes(e, WorldBackend(e.market), e.state)
        profit = within_caps(e, profit)
        allowance = e.budget_left / max(1, e.config.horizon - e.t)

        def choose(lam: float) -> np.ndarray:
            return (profit - lam * spend).argmax(axis=1)

        def cost_of(choice: np.ndarray) -> float:
            return float(spend[np.arange(len(choice)), choice].sum())

        lo, hi = 0.0, 1.0
        if cost_of(choose(0.0)) <= allowance:
            return choose(0.0).astype(np.int64)
        while cost_of(choose(hi)) > allowance and hi < 1e6:
            hi *= 2.0
        for _ in range(30):
            mid = (lo + hi) / 2
            if cost_of(choose(mid)) > allowance:
                lo = mid
            else:
                hi = mid
        return choose(hi).astype(np.int64)


# ---------------------------------------------------------------------------------------- registry
@register_policy("uplift", families=("coupons",), help="two-model uplift targeting learned from the logs")
def _uplift(env: gym.Env[Any, Any], ctx: PolicyContext, arg: str | None) -> UpliftTargeting:
    return UpliftTargeting(env, ctx.logs())


@register_policy("myopic", families=("coupons",), plans=True,
                 help="each customer's level of best expected profit this step under the simulator")
def _myopic(env: gym.Env[Any, Any], ctx: PolicyContext, arg: str | None) -> MyopicCoupons:
    return MyopicCoupons(env, simulator=ctx.simulator)


@register_policy("oracle", families=("coupons",), knows_truth=True,
                 help="the true world's best allocation under an evenly paced budget")
def _oracle(env: gym.Env[Any, Any], ctx: PolicyContext, arg: str | None) -> CouponOracle:
    return CouponOracle(env)
