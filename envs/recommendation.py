"""Real-time promotion recommendation: which products each arriving visitor is shown."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pandas as pd
from gymnasium import spaces

from promogym.core.config import param
from promogym.envs.backends import ResponseBackend
from promogym.envs.base import OBS_BOUND, MarketEnv, MarketEnvConfig, Offers, check_action, history_panels
from promogym.envs.families import EnvFamily, TracePlot, _world_traces
from promogym.envs.market import MarketState, mnl_from_utility
from promogym.envs.market.customers import QUALITY_TASTES
from promogym.envs.market.world import log_comb

VISITOR_FEATURES = 10   # visit frequency (3), quality taste (3), tier preference (3), favourite category (1)
PRODUCT_FEATURES = 14   # see PromoRecommendationEnv's docstring
PAIR_FEATURES = VISITOR_FEATURES + PRODUCT_FEATURES
_LOG_PRICE_CENTRE = 3.5


def display_groups(levels: np.ndarray, valid: np.ndarray, slots: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """How ``slots`` products are taken by ``levels`` (highest first) among the ``valid`` candidates ((visitors,
    width) arrays), ties at the last level taken broken uniformly at random: ``(sure, tied, open)``, the candidates
    shown for certain (levels above the last slot's), the tied group at the last slot's level, and per visitor the
    slots the tie-break fills from it."""
    lv = np.where(valid, levels, -1)
    k = np.minimum(np.asarray(slots, np.int64), valid.sum(axis=1))
    last = -np.sort(-lv, axis=1)[np.arange(len(k)), np.maximum(k - 1, 0)]   # the last slot's level
    live = valid & (k[:, None] > 0)
    sure, tied = live & (lv > last[:, None]), live & (lv == last[:, None])
    return sure, tied, k - sure.sum(axis=1)


def slate_propensity(levels: np.ndarray, valid: np.ndarray, slots: np.ndarray) -> np.ndarray:
    """(visitors,) the probability of the set each visitor is shown when ``slots`` products are taken by ``levels``
    (:func:`display_groups`): 1 / C(tied, slots still open when the tied level is reached). Equal levels
    everywhere: the uniform display, 1 / C(candidates, slots)."""
    _, tied, open_ = display_groups(levels, valid, slots)
    return np.exp(-log_comb(tied.sum(axis=1), open_))


def recommendation_trace_rows(env: Any, seed: int, t: int, info: dict[str, Any]) -> list[dict[str, Any]]:
    """One record per product shown: whether it is new, its unit margin, whether it was bought."""
    u = env.unwrapped
    cat = u.market.catalog
    shown, chosen = np.asarray(info["shown"]), np.asarray(info["chosen"])
    rows = []
    for k in range(shown.shape[0]):
        for j in shown[k][shown[k] >= 0]:
            rows.append({"episode": seed, "t": t, "shown_item": int(j), "shown_new": bool(cat.is_new[j]),
                         "shown_margin": float(cat.list_price[j] - cat.unit_cost[j]),
                         "shown_bought": bool(chosen[k] == j)})
    return rows


def plot_recommendation_traces(traces: pd.DataFrame, env: str, path: Any) -> bool:
    """What each policy shows: the share of new products among its displays and the mean unit margin shown."""
    from promogym.core.plots import save_png, two_panels

    sub = _world_traces(traces, env, "shown_item")
    if sub.empty:
        return False
    fig, axes = two_panels()
    names = list(dict.fromkeys(sub["policy"]))
    for i, name in enumerate(names):
        g = sub[sub["policy"] == name]
        axes[0].bar(i, g["shown_new"].mean(), label=name)
        axes[1].bar(i, g["shown_margin"].mean(), label=name)
    for ax, title in zip(axes, ("share of new products shown", "mean unit margin shown"), strict=True):
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=7)
        ax.set_title(f"{env}: {title}", fontsize=10)
        ax.grid(alpha=0.3, axis="y")
    save_png(fig, path)
    return True


RECOMMENDATION = EnvFamily(
    "recommendation", "which products of the browsed category each arriving visitor is shown",
    default_algos=("maskable_ppo",), trace_rows=recommendation_trace_rows,
    trace_plots=(TracePlot("displays", "What the policies show", "new products and margins shown",
                           plot_recommendation_traces),))


@dataclasses.dataclass(frozen=True)
class PromoRecommendationConfig(MarketEnvConfig):
    """PromoRecommendation-v0's config: visitors per step, the season, the priority levels, when new products
    enter, stock."""

    visitors: int = param(8, "visitors arriving per step", lo=1, hi=4096)
    steps_per_day: int = param(4, "steps per day (the shop's sales record and the market advance daily)",
                               lo=1, hi=10_000)
    horizon: int = param(28, "days per episode (the season)", lo=1, hi=10_000)
    levels: int = param(4, "priority levels an action gives each (visitor, product) pair", lo=2, hi=16)
    new_products_day: int = param(14, "the day the catalog's new products enter the assortment (0: from the start; "
                                      "at least horizon: never)", lo=0, hi=100_000)
    initial_stock: int = param(0, "units of each product for the season, no restock (0: unlimited)", lo=0,
                               hi=10**9)


class PromoRecommendationEnv(MarketEnv):
    """Choose which products each arriving visitor is shown.

    ## Description
    Each step ``visitors`` visits arrive, drawn by the world's one visit process (the logs' own,
    :meth:`Market.sample_visits`): who comes, the category each browses and how many products each looks at
    (``slots``: 1 + Poisson, at most the category's assortment). Where the logs' display draws those products
    uniformly from the category (:meth:`Market.display_propensity`), here the agent picks them: it gives every
    (visitor, candidate product of the visitor's category) pair a priority level, and each visitor is shown the
    ``slots`` candidates of highest level, ties broken uniformly at random (so equal levels everywhere are the
    logs' own uniform display; ``info["slate_propensity"]`` is the exact probability of each visitor's shown set).
    Each visitor buys at most one shown product, at list price, or nothing, by the multinomial logit with an
    outside option over the response backend's logits of the shown products: the choice the logs record. The
    order of the shown products does not enter the choice (no position effects).

    The catalog's new products (the ones a model never saw in training) enter the assortment on
    ``new_products_day``; visitors return across days and the observation tells which candidate each one has
    bought this season; with ``initial_stock`` products can sell out for the season (a sold-out product is not a
    candidate). A display is worth most where the visitor's taste, the product and its margin meet, and a text
    model that reads both the profile and the description can rank products it never saw sold.

    ## Action Space
    ``MultiDiscrete([levels] * (visitors x width))``: a priority level per (visitor, candidate slot), visitor-major;
    ``width`` is the size of the largest category (candidate slots past a category's assortment are padding, whose
    level is ignored; ``action_masks()`` allows only level 0 there). An action of another shape, non-integer
    values, NaN, inf or a level outside [0, levels) raises ValueError and leaves the env as it was.

    ## Observation Space
    ``Box(-10, 10, (24 visitors x width + 8,))`` float32: per (visitor, candidate) pair, visitor-major, what a shop
    knows: the visitor's visit frequency (one-hot, 3), quality taste (one-hot, 3), brand-tier preference (one-hot,
    3) and whether the browsed category is a favourite (1); the candidate's presence (1: a real product, 0:
    padding), centred log list price, unit margin share of the list price, brand tier (one-hot, 3), stars (/5),
    whether it is a new product, the shop's season sales of it per display (smoothed), the share of its displays
    so far, its stock left (share; 1 when unlimited), whether this visitor bought it this season, whether its tier
    is the visitor's preferred tier, and its quality (stars, in [-1, 1]) x the visitor's quality taste. Then the share
    of the season left and the weekday (one-hot, 7).

    ## Rewards
    Profit of the step's purchases (revenue - unit cost), or revenue, minus ``uncertainty_penalty`` x the response
    model's ensemble standard deviation of the step's expected profit (``info["profit_spread"]``; 0 by default).
    ``info["expected_profit"]`` is its expectation
    under the backend, ``info["expected_profit_world"]`` under the world; ``info`` also holds, per visitor,
    ``users``, ``categories``, ``slots``, ``candidates`` ((visitors, width) product ids, -1 padding), ``shown``
    ((visitors, width) the products shown, -1 padding), ``slate_propensity``, ``bought``, ``chosen`` (the product
    bought or -1), ``visitor_profit``, ``visitor_expected_profit_world`` (the world's expectation of the visitor's
    display) and ``saw_new`` (a new product was shown), and ``components``.

    ## Starting State
    Day 0: the catalog without its new products (unless ``new_products_day`` is 0), full stock, no sales.

    ## Episode End
    Terminated after ``horizon`` days (the season ends: a terminal state, not a time limit; the observation holds
    the share of the season left).

    ## Arguments
    ``gymnasium.make("promogym/PromoRecommendation-v0", config={...})`` with the keys of
    :class:`PromoRecommendationConfig`.

    ## Version History
    * v0: initial version.
    """

    config_class = PromoRecommendationConfig
    family = RECOMMENDATION
    config: PromoRecommendationConfig
    item_features = PAIR_FEATURES  # per (visitor, candidate) block: what per-item policies read
    # visitors arrive independently: a step of 8 visitors can be served as 8 steps of one (split_config)
    batch_split = ("visitors", ("steps_per_day",))

    def __init__(self, config: Any = None, render_mode: str | None = None, **overrides: Any) -> None:
        super().__init__(config, render_mode, **overrides)
        cfg = self.config
        self.width = int(self.market.catalog_pool.shape[1])
        n_pairs = cfg.visitors * self.width
        self.action_space = spaces.MultiDiscrete([cfg.levels] * n_pairs)
        self.observation_space = spaces.Box(-OBS_BOUND, OBS_BOUND, shape=(PAIR_FEATURES * n_pairs + 8,),
                                            dtype=np.float32)
        cat = self.market.catalog
        self.unit_margin = cat.list_price - cat.unit_cost
        self._product_static = np.column_stack([
            np.log(cat.list_price) - _LOG_PRICE_CENTRE, self.unit_margin / cat.list_price,
            np.eye(3)[cat.tier], cat.stars / 5.0, cat.is_new.astype(float)]).astype(np.float32)  # (n, 7)
        warm = getattr(self.backend, "warm", None)
        if warm is not None:  # every customer with every product, as a pricing env does with its products: steps
            # never wait for the model's MLP (the ensemble heads too when the uncertainty penalty scores them)
            warm(np.arange(self.market.n_products), members=self.config.uncertainty_penalty > 0)
        self._start_season()

    # ------------------------------------------------------------------ season state
    def _start_season(self) -> None:
        n = self.market.n_products
        self.t = 0
        self.day_step = 0
        self.sales = np.zeros(n)
        self.displays = np.zeros(n)
        self.bought_by: set[tuple[int, int]] = set()
        self.stock = np.full(n, self.config.initial_stock, np.int64)
        self.history: list[dict[str, Any]] = []
        self._day_shown: list[np.ndarray] = []
        self.users = np.zeros(self.config.visitors, np.int64)
        self.categories = np.zeros(self.config.visitors, np.int64)
        self.slots = np.zeros(self.config.visitors, np.int64)
        self.candidates = np.full((self.config.visitors, self.width), -1, np.int64)

    @property
    def season_day(self) -> int:
        """Days since the season started."""
        return self.t // self.config.steps_per_day

    def assortment(self) -> np.ndarray:
        """Product ids on offer now: the catalog without its new products before ``new_products_day``, without the
        sold-out ones with a finite stock."""
        cat = self.market.catalog
        on = np.ones(self.market.n_products, bool) if self.season_day >= self.config.new_products_day \
            else ~cat.is_new
        if self.config.initial_stock:
            on &= self.stock > 0
        return np.flatnonzero(on)

    def _draw_visitors(self) -> None:
        pool = self.market.category_pool(self.assortment())
        visits = self.market.sample_visits(self.state.day, self.np_random, n=self.config.visitors, pool=pool)
        self.users, self.categories = visits.users, visits.categories
        self.slots = (visits.views >= 0).sum(axis=1)
        rows = pool[self.categories]
        self.candidates = np.full((len(self.users), self.width), -1, np.int64)
        self.candidates[:, : rows.shape[1]] = rows

    # ------------------------------------------------------------------ observation
    def pair_features(self) -> np.ndarray:
        """(visitors, width, 24) the features of every (visitor, candidate) pair (see the class docstring)."""
        cus = self.market.customers
        u, c = self.users, self.candidates
        valid = c >= 0
        items = np.maximum(c, 0)
        taste = np.searchsorted(np.asarray(QUALITY_TASTES), cus.quality_taste[u])
        eye3 = np.eye(3, dtype=np.float32)
        visitor = np.column_stack([eye3[cus.visit_band[u]], eye3[taste], eye3[cus.tier_pref[u]],
                                   (cus.favourites[u] == self.categories[:, None]).any(axis=1)]).astype(np.float32)
        total = max(float(self.displays.sum()), 1.0)
        stock = (self.stock[items] / self.config.initial_stock) if self.config.initial_stock else np.ones(c.shape)
        bought = np.array([[(int(uu), int(j)) in self.bought_by for j in row] for uu, row in zip(u, c, strict=True)],
                          dtype=np.float32) if self.bought_by else np.zeros(c.shape, np.float32)
        tier = self.market.catalog.tier[items]
        quality = self.market.catalog.quality[items]  # in [-1, 1]
        product = np.concatenate([
            valid[..., None].astype(np.float32), self._product_static[items],
            ((self.sales[items] + 0.1) / (self.displays[items] + 10.0) * 10.0)[..., None],
            (self.displays[items] / total * len(self.assortment()))[..., None],
            stock[..., None], bought[..., None],
            (tier == cus.tier_pref[u][:, None])[..., None],
            (quality * cus.quality_taste[u][:, None])[..., None]], axis=-1)
        pairs = np.concatenate([np.broadcast_to(visitor[:, None, :], (*c.shape, VISITOR_FEATURES)), product], axis=-1)
        return np.where(valid[..., None], pairs, 0.0).astype(np.float32)

    def _obs(self) -> np.ndarray:
        left = (self.config.horizon * self.config.steps_per_day - self.t) / (self.config.horizon
                                                                             * self.config.steps_per_day)
        return self._clip_obs(np.concatenate([self.pair_features().ravel(), [left], self._weekday_onehot()]))

    def action_masks(self) -> np.ndarray:
        """Flattened (visitors x width x levels) booleans: every level of a real candidate; only level 0 for
        padding."""
        valid = (self.candidates >= 0).ravel()
        masks = np.ones((len(valid), self.config.levels), bool)
        masks[~valid, 1:] = False
        return masks.ravel()

    # ------------------------------------------------------------------ display and choice
    def display(self, levels: np.ndarray) -> np.ndarray:
        """(visitors, width) the products shown for (visitors, width) ``levels``: each visitor's ``slots`` candidates
        of highest level, ties in the env's uniform random order; -1 padding."""
        valid = self.candidates >= 0
        tie = self.np_random.random(self.candidates.shape)
        key = np.where(valid, levels + tie, -np.inf)
        order = np.argsort(-key, axis=1, kind="stable")
        ranked = np.take_along_axis(self.candidates, order, axis=1)
        k = np.minimum(self.slots, valid.sum(axis=1))
        return np.where(np.arange(self.width)[None, :] < k[:, None], ranked, -1)

    def choice_proba(self, shown: np.ndarray, backend: ResponseBackend | None = None,
                     state: MarketState | None = None) -> np.ndarray:
        """(visitors, width) each visitor's probability of buying each shown product at list price (MNL with an
        outside option over ``backend``'s logits, default the env's; padding 0)."""
        backend = self.backend if backend is None else backend
        on = shown >= 0
        logit = np.zeros(shown.shape)
        if on.any():
            users = np.broadcast_to(self.users[:, None], shown.shape)[on]
            items = shown[on]
            logit[on] = backend.logits(users, items, self.market.catalog.list_price[items],
                                       np.zeros(len(items)), self.state if state is None else state)
        return mnl_from_utility(logit, on)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None
              ) -> tuple[np.ndarray, dict[str, Any]]:
        """Day 0, no sales, the first visitors; ``info`` has their ``users``, ``slots`` and ``candidates``."""
        super().reset(seed=seed)
        self.state = self.market.initial_state()
        self._start_season()
        self._draw_visitors()
        return self._obs(), {"users": self.users.copy(), "slots": self.slots.copy(),
                             "candidates": self.candidates.copy()}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Show each visitor its display, sample the choices, update the shop's records, draw the next visitors."""
        cfg = self.config
        a = check_action(self, action).reshape(len(self.users), self.width)
        cat = self.market.catalog
        valid = self.candidates >= 0
        propensity = slate_propensity(a, valid, self.slots)
        shown = self.display(a)
        on = shown >= 0
        items = np.maximum(shown, 0)
        p = self.choice_proba(shown)
        pw = p if self.backend is self.world else self.choice_proba(shown, self.world)
        list_price = cat.list_price[items]
        margin = np.where(on, list_price - (cat.unit_cost[items] if cfg.reward == "profit" else 0.0), 0.0)
        expected, expected_world = float((p * margin).sum()), float((pw * margin).sum())
        pos = (self.np_random.random(len(p))[:, None] > np.cumsum(p, axis=1)).sum(axis=1)  # == width: none
        chose = pos < self.width
        chosen = np.where(chose, shown[np.arange(len(pos)), np.minimum(pos, self.width - 1)], -1)
        bought = chose.copy()
        stockouts = 0
        if cfg.initial_stock:
            for k in np.flatnonzero(chose):  # visitors in arrival order: a unit sold is gone for the next
                j = chosen[k]
                if self.stock[j] > 0:
                    self.stock[j] -= 1
                else:
                    bought[k], stockouts = False, stockouts + 1
        got = np.where(bought, chosen, -1)
        visitor_profit = np.where(bought, cat.list_price[np.maximum(got, 0)]
                                  - (cat.unit_cost[np.maximum(got, 0)] if cfg.reward == "profit" else 0.0), 0.0)
        revenue = float(cat.list_price[got[bought]].sum())
        cost = float(cat.unit_cost[got[bought]].sum())
        reward = revenue - cost if cfg.reward == "profit" else revenue
        users2 = np.broadcast_to(self.users[:, None], shown.shape)
        spread = self.profit_spread(users2, items, list_price, np.zeros(shown.shape), on, margin)
        reward -= cfg.uncertainty_penalty * spread
        np.add.at(self.displays, shown[on], 1.0)
        np.add.at(self.sales, got[bought], 1.0)
        self.bought_by.update((int(self.users[k]), int(got[k])) for k in np.flatnonzero(bought))
        self.last_offers = Offers(users=users2, items=items, price=np.where(on, list_price, 0.0),
                                  coupon=np.zeros(shown.shape), available=on, proba=p, proba_world=pw, margin=margin,
                                  price_hist=self.state.price_features(items)["price_hist_mid"])
        info = {"components": {"revenue": revenue, "cost": cost, "coupon_spend": 0.0, "units": int(bought.sum()),
                               "stockouts": stockouts, "budget_left": 0.0},
                "users": self.users.copy(), "categories": self.categories.copy(), "slots": self.slots.copy(),
                "candidates": self.candidates.copy(), "shown": shown, "slate_propensity": propensity,
                "bought": bought, "chosen": got, "visitor_profit": visitor_profit,
                "visitor_expected_profit_world": (pw * margin).sum(axis=1),
                "saw_new": (on & cat.is_new[items]).any(axis=1), "day": int(self.state.day),
                "expected_profit": expected, "expected_profit_world": expected_world, "profit_spread": spread}
        self._day_shown.append(shown[on])
        self.history.append({"t": self.t, "reward": reward, "units": int(bought.sum()),
                             "new_shown": int((on & cat.is_new[items]).sum())})
        self.t += 1
        self.day_step += 1
        if self.day_step >= cfg.steps_per_day:
            self.day_step = 0
            seen = np.concatenate(self._day_shown)
            self.market.end_of_day(self.state, seen, cat.list_price[seen], np.zeros(0, np.int64))
            self._day_shown = []
        terminated = self.t >= cfg.horizon * cfg.steps_per_day  # the season's end: nothing is worth anything after
        self._draw_visitors()
        return self._obs(), float(reward), bool(terminated), False, info

    def render(self) -> str | np.ndarray | None:
        """A line of text for the last step ("ansi") or cumulative profit and new products shown ("rgb_array")."""
        if self.render_mode == "ansi":
            if not self.history:
                return f"season starts: {self.config.visitors} visitors a step, {self.config.horizon} days"
            h = self.history[-1]
            return (f"step {h['t']:>4}  day {self.season_day:>3}  units {h['units']:>3}  profit {h['reward']:>8.2f}  "
                    f"new products shown {h['new_shown']:>3}")
        if self.render_mode == "rgb_array":
            return history_panels(self.history, (("reward", "cumulative profit", True),
                                                 ("new_shown", "new products shown (cumulative)", True)))
        return None
