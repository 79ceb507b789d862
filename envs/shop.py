"""A world-free pricing environment: a shop's own logged visits replayed with the prices an agent sets, the
customers' choices given by a choice model fitted on the shop's data.

Registered as ``promogym/ShopPricing-v0`` with the other ids (``promogym.envs.ENV_IDS``): ``promogym train`` and
``promogym evaluate`` take it like any env, with ``--response`` naming the model fitted on the shop.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from gymnasium import spaces

from promogym.core.config import ConfigBase, param
from promogym.envs.base import check_action
from promogym.envs.families import EnvFamily
from promogym.envs.market.world import PRICE_HISTORY_NAMES, PRICE_HISTORY_RATES
from promogym.predictors.choice import visit_choice_proba
from promogym.predictors.shop import with_offer_text, with_profile_text

ENV_ID = "promogym/ShopPricing-v0"

SHOP_PRICING = EnvFamily(
    "shop_pricing", "weekly prices per product of an imported shop, answered by a choice model fitted on its logs "
                    "(no world: scored in the model only)", default_algos=("ppo",))


@dataclasses.dataclass(frozen=True)
class ShopPricingConfig(ConfigBase):
    """Settings of :class:`ShopPricingEnv`."""

    shop: str = param("", "shop folder written by `promogym import` (its logs.parquet and catalog.parquet)")
    response: str = param("", "the choice model fitted on the shop: clogit:<json written by ConditionalLogit.save>, "
                              "gbdt:<file> or bert:<checkpoint dir> (written by `promogym fit` on the shop's logs)")
    offer_text: bool = param(False, "append each row's promotions to the product text before the response reads it "
                                    "(as `promogym shop compare` fits the BERT hybrid)", choices=(True, False))
    profile_words: str = param("", "JSON file of words appended to each customer's profile text (user id -> words) "
                                   "before the response reads it, e.g. bert_history_profiles.json of `promogym shop "
                                   "compare`; '' = none")
    first_week: int = param(1, "first logged week replayed", lo=1, hi=10_000)
    last_week: int = param(53, "last logged week replayed", lo=1, hi=10_000)
    horizon: int = param(8, "weeks per episode", lo=1, hi=520)
    occasions_per_week: int = param(2000, "logged occasions of the week drawn per step (with replacement)",
                                    lo=1, hi=10_000_000)
    price_low: float = param(0.7, "lowest price as a multiple of the list price (action -1)", lo=0.05, hi=1.0)
    price_high: float = param(1.3, "highest price as a multiple of the list price (action +1)", lo=1.0, hi=10.0)
    price_by: str = param("product", "what one action entry prices: each product, or each catalog category (every "
                                     "product of a category at its multiple, as a category price index)",
                          choices=("product", "category"))
    cost_share: float = param(0.7, "unit cost as a share of list price, for products whose catalog has no unit_cost",
                              lo=0.0, hi=1.0)

    def validate(self) -> None:
        """The shop and the response must be given; the weeks must be ordered."""
        if not self.shop:
            raise ValueError("ShopPricingConfig.shop must name a shop folder written by `promogym import`")
        if not self.response:
            raise ValueError("ShopPricingConfig.response must name a choice model fitted on the shop "
                             "(clogit:<json>, gbdt:<file> or bert:<dir>)")
        if self.first_week > self.last_week:
            raise ValueError(f"ShopPricingConfig.first_week ({self.first_week}) must be <= last_week "
                             f"({self.last_week})")


def load_response(spec: str, offer_text: bool = False, profile_words: str = ""
                  ) -> Callable[[pd.DataFrame], np.ndarray]:
    """Per-row utilities (logits) of a choice model spec: ``clogit:<json>``, or any conversion model the registry
    loads (``gbdt:<file>``, ``bert:<dir>``), whose probability's log-odds is the row's utility. With ``offer_text``
    the rows' promotions are appended to the product text first (:func:`~promogym.predictors.shop.with_offer_text`);
    with ``profile_words`` (a JSON file: user id -> words) those words are appended to the profiles."""
    kind, _, path = spec.partition(":")
    if kind == "clogit":
        from promogym.predictors.clogit import ConditionalLogit

        return ConditionalLogit.load(path).predict_logits
    from promogym.predictors.registry import load_model

    model = load_model(spec)
    words: dict[int, str] | None = None
    if profile_words:
        try:
            raw = json.loads(Path(profile_words).read_text())
            words = {int(k): str(v) for k, v in raw.items()}
        except (OSError, ValueError, AttributeError) as exc:
            raise ValueError(f"profile_words {profile_words}: not a JSON object of user id -> words ({exc})") from exc

    def logits(rows: pd.DataFrame) -> np.ndarray:
        rows = with_offer_text(rows) if offer_text else rows
        rows = with_profile_text(rows, words) if words is not None else rows
        p = np.clip(np.asarray(model.predict_proba(rows), dtype=float), 1e-7, 1 - 1e-7)
        return np.log(p) - np.log1p(-p)

    return logits


@functools.lru_cache(maxsize=2)
def _read_weeks(logs: str, modified: int, first_week: int, last_week: int) -> pd.DataFrame:
    """The logged occasions of weeks ``first_week..last_week`` (a ``week`` column added when the logs have days
    only); read once per file version and week range by the envs of a process, which share it and never change it
    (:meth:`ShopPricingEnv.week_rows` copies what it draws)."""
    del modified  # part of the cache key only: a rewritten file is read again
    columns = pq.ParquetFile(logs).schema_arrow.names
    if "week" in columns:
        rows = pd.read_parquet(logs, filters=[("week", ">=", first_week), ("week", "<=", last_week)])
        return rows.reset_index(drop=True)
    rows = pd.read_parquet(logs)
    week = rows["day"].to_numpy() // 7 + 1
    keep = (week >= first_week) & (week <= last_week)
    return rows[keep].assign(week=week[keep]).reset_index(drop=True)


class ShopPricingEnv(gym.Env[np.ndarray, np.ndarray]):
    """Weekly prices for a shop's products, played against its own logged customers.

    ## Description
    Each step is one week of the shop. The week's logged purchase occasions (a customer and the products available
    to them, with their promotions) are drawn from the weeks ``first_week..last_week`` of the shop folder, in
    order from a random start; the agent's prices replace the logged ones; each occasion chooses one of its
    products or nothing with the multinomial logit of the response model's utilities. The reward is the expected
    profit of the drawn occasions (choice probabilities, not sampled choices). No ground-truth world is needed:
    what is simulated is only what the fitted model says, so its held-out fit (`promogym shop compare`) is the
    measure of how far to trust it.

    ## Action Space
    ``Box(-1, 1, (entries,))``: per product (``price_by: product``, the default) or per catalog category
    (``price_by: category``: every product of the category at one multiple), -1 is ``price_low`` x list price, +1
    ``price_high`` x list price. Pricing 20 categories rather than 500 products gives a learner a few dozen
    directions to explore instead of hundreds, and is how a pricing team often sets prices: a category price index.

    ## Observation Space
    ``Box`` of ``entries + 2`` float32: last week's price multiples minus 1 (in ``[price_low - 1, price_high - 1]``),
    the episode's progress (step / horizon, in [0, 1]) and the replayed week's position in the year (in [0, 1]).

    ## Rewards
    Expected revenue minus expected unit cost (the catalog's ``unit_cost``, else ``cost_share`` x list price);
    ``info["components"]`` holds revenue, cost, coupon_spend (0), units, stockouts (0) and budget_left (inf);
    ``info["expected_profit"]`` is the reward (already an expectation; there is no ``expected_profit_world``).

    ## Starting State
    Prices at list price; the shop's price history (EWMAs of price / list at three rates) at 1; a random logged
    week to start from, or the week given as ``reset(options={"week": w})``.

    ## Episode End
    Never terminated; truncated after ``horizon`` weeks.

    ## Arguments
    One :class:`ShopPricingConfig` (or a dict of its keys): ``shop`` and ``response`` are required.

    ## Version History
    * v0: initial version. ``price_by`` (default ``product``, as before) chooses per-product or per-category
      prices.
    """

    metadata = {"render_modes": ["ansi"], "render_fps": 1}  # noqa: RUF012 (Gymnasium's convention)
    config_class = ShopPricingConfig
    family = SHOP_PRICING
    world_free: ClassVar[bool] = True  # the fitted model is the only response: nothing is scored in a world

    def __init__(self, config: ShopPricingConfig | Mapping[str, Any] | None = None, render_mode: str | None = None,
                 **overrides: Any) -> None:
        given = config.to_dict() if isinstance(config, ShopPricingConfig) else dict(config or {})
        merged = {**given, **overrides}
        self.config = ShopPricingConfig.from_dict(merged)
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']}, got {render_mode!r}")
        self.render_mode = render_mode
        folder = Path(self.config.shop)
        if not (folder / "logs.parquet").is_file() or not (folder / "catalog.parquet").is_file():
            raise ValueError(f"ShopPricingConfig.shop: {folder} holds no shop (logs.parquet and catalog.parquet); "
                             f"write one with `promogym import`")
        logs = folder / "logs.parquet"
        self.rows = _read_weeks(str(logs.resolve()), logs.stat().st_mtime_ns, self.config.first_week,
                                self.config.last_week)  # shared by the process's envs: read only
        if not len(self.rows):
            raise ValueError(f"ShopPricingConfig: the shop has no occasion in weeks {self.config.first_week}-"
                             f"{self.config.last_week}")
        catalog = pd.read_parquet(folder / "catalog.parquet")
        self.items = np.sort(catalog["item_id"].to_numpy(np.int64))
        cat = catalog.set_index("item_id").reindex(self.items)
        self.list_price = cat["list_price"].to_numpy(float)
        cost = cat["unit_cost"].to_numpy(float) if "unit_cost" in cat.columns else np.full(len(self.items), np.nan)
        self.unit_cost = np.where(np.isfinite(cost), cost, self.config.cost_share * self.list_price)
        self.row_item = np.searchsorted(self.items, self.rows["item_id"].to_numpy(np.int64))
        self.weeks = np.unique(self.rows["week"].to_numpy())
        visit = self.rows["visit_id"].to_numpy()
        self.visits_of_week = {int(w): np.unique(visit[self.rows["week"].to_numpy() == w]) for w in self.weeks}
        self._order = np.argsort(visit, kind="stable")
        uniq, first = np.unique(visit[self._order], return_index=True)
        ends = np.r_[first[1:], len(visit)]
        self._span = dict(zip(uniq.tolist(), zip(first.tolist(), ends.tolist(), strict=True), strict=True))
        self.response = load_response(self.config.response, self.config.offer_text, self.config.profile_words)
        if self.config.price_by == "category":
            if "category" not in cat.columns:
                raise ValueError(f"ShopPricingConfig.price_by: the catalog of {folder} has no category column")
            self.groups, self.group_of_item = np.unique(cat["category"].astype(str).to_numpy(), return_inverse=True)
        else:
            self.groups, self.group_of_item = self.items, np.arange(len(self.items))
        self._first_of_group = np.unique(self.group_of_item, return_index=True)[1]
        g = len(self.groups)
        self.action_space = spaces.Box(-1.0, 1.0, (g,), dtype=np.float32)
        low = np.r_[np.full(g, self.config.price_low - 1.0), 0.0, 0.0].astype(np.float32)
        high = np.r_[np.full(g, self.config.price_high - 1.0), 1.0, 1.0].astype(np.float32)
        n = len(self.items)
        self.observation_space = spaces.Box(low, high, dtype=np.float32)
        self.t = 0
        self.start = 0
        self.multiple = np.ones(n)
        self.history = np.ones((len(PRICE_HISTORY_RATES), n))
        self.last_info: dict[str, Any] = {}

    @classmethod
    def default_config(cls) -> dict[str, Any]:
        """The defaults as a plain dict (``shop`` and ``response`` must be set)."""
        return {f.name: f.default for f in dataclasses.fields(ShopPricingConfig)}

    def multiples_from_action(self, action: np.ndarray) -> np.ndarray:
        """Each product's price multiple of list price for an action in [-1, 1] (its group's entry)."""
        a = np.clip(np.asarray(action, dtype=float), -1.0, 1.0)
        lo, hi = self.config.price_low, self.config.price_high
        return (lo + (a + 1.0) / 2.0 * (hi - lo))[self.group_of_item]

    def action_from_prices(self, prices: np.ndarray) -> np.ndarray:
        """The action that sets per-product ``prices`` (clipped into the price band; with ``price_by: category``
        each category at its products' mean multiple): the inverse of the action's mapping."""
        lo, hi = self.config.price_low, self.config.price_high
        m = np.clip(np.asarray(prices, dtype=float) / self.list_price, lo, hi)
        m = np.bincount(self.group_of_item, m, len(self.groups)) / np.bincount(self.group_of_item,
                                                                               minlength=len(self.groups))
        return (2.0 * (m - lo) / (hi - lo) - 1.0).astype(np.float32)

    def group_multiples(self) -> np.ndarray:
        """Last week's multiple per action entry (product, or category: its products share one)."""
        return self.multiple[self._first_of_group]

    def _week(self) -> int:
        return int(self.weeks[(self.start + self.t) % len(self.weeks)])

    def _obs(self) -> np.ndarray:
        progress = [self.t / self.config.horizon, (self._week() - 1) % 53 / 52.0]
        return np.concatenate([self.group_multiples() - 1.0, progress]).astype(np.float32)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None
              ) -> tuple[np.ndarray, dict[str, Any]]:
        """Start at list prices from a random logged week (``options={"week": w}``: from logged week ``w``)."""
        super().reset(seed=seed)
        self.t = 0
        self.start = int(self.np_random.integers(len(self.weeks)))
        if options and "week" in options:
            hit = np.flatnonzero(self.weeks == int(options["week"]))
            if not len(hit):
                raise ValueError(f"reset option week={options['week']} is not a replayed week "
                                 f"({self.weeks.min()}-{self.weeks.max()})")
            self.start = int(hit[0])
        self.multiple = np.ones(len(self.items))
        self.history = np.ones((len(PRICE_HISTORY_RATES), len(self.items)))
        return self._obs(), {"week": self._week()}

    def week_rows(self, week: int, multiple: np.ndarray, rng: np.random.Generator) -> pd.DataFrame:
        """A draw of ``occasions_per_week`` logged occasions of ``week`` with the prices ``multiple`` x list."""
        pool = self.visits_of_week[week]
        drawn = pool[rng.integers(0, len(pool), self.config.occasions_per_week)]
        spans = [self._span[int(v)] for v in drawn]
        idx = np.concatenate([self._order[a:b] for a, b in spans])
        rows = self.rows.iloc[idx].copy()
        rows["visit_id"] = np.repeat(np.arange(len(drawn)), [b - a for a, b in spans])  # a visit drawn twice: twice
        item = self.row_item[idx]
        rows["price"] = np.round(self.list_price[item] * multiple[item], 4)
        rows["discount"] = 1.0 - rows["price"].to_numpy() / self.list_price[item]
        for k, name in enumerate(PRICE_HISTORY_NAMES):
            rows[name] = self.history[k, item]
        return rows

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """One week at the action's prices: expected profit of the week's drawn occasions."""
        action = check_action(self, action, clip=True)  # finite, of the space's shape; clipped into [-1, 1] below
        multiple = self.multiples_from_action(action)
        rows = self.week_rows(self._week(), multiple, self.np_random)
        proba = visit_choice_proba(self.response(rows), rows["visit_id"].to_numpy())
        item = np.searchsorted(self.items, rows["item_id"].to_numpy(np.int64))
        price = rows["price"].to_numpy(float)
        revenue = float((proba * price).sum())
        cost = float((proba * self.unit_cost[item]).sum())
        components = {"revenue": revenue, "cost": cost, "coupon_spend": 0.0, "units": float(proba.sum()),
                      "stockouts": 0.0, "budget_left": float("inf")}
        for k, rate in enumerate(PRICE_HISTORY_RATES):  # the shop's own price history moves with its prices
            self.history[k] += rate * (multiple - self.history[k])
        self.multiple = multiple
        self.t += 1
        info = {"components": components, "expected_profit": revenue - cost, "week": int(rows["week"].iloc[0]),
                "occasions": self.config.occasions_per_week}
        self.last_info = info
        return self._obs(), revenue - cost, False, self.t >= self.config.horizon, info

    def render(self) -> str | None:
        """The last week's figures as text (``ansi``)."""
        if self.render_mode != "ansi":
            return None
        c = self.last_info.get("components", {})
        return (f"week {self.last_info.get('week', '-')}: revenue {c.get('revenue', 0):.1f}, cost "
                f"{c.get('cost', 0):.1f}, units {c.get('units', 0):.1f}")
