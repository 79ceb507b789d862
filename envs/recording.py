"""Recording a policy deployed in a pricing env as logs with exact propensities: one step of a closed loop
(deploy a policy, log what happened, refit the response model on the rows, evaluate other policies on them).

:class:`ExploreWrapper` plays a policy on a fixed grid of prices with ε-uniform exploration: each product's
wanted price multiple (from the policy's action) is snapped to the nearest multiple of list price on the
grid ``G`` (the env's band in steps of ``grid_step``), kept with probability 1 - ε, and otherwise replaced by
a uniform draw over ``G``, so a grid point ``g`` is played with probability
``(1 - ε) 1[g = snap(wanted)] + ε / |G|``, exactly and never 0. PricePromo's coupon level per customer segment
is randomized the same way over ``coupon_levels``. The wrapper draws from its own generator, seeded from
``reset``'s seed on a stream of its own, never from the env's: the world's draws given the played prices are
those of the plain env (replaying the played actions in it gives the same episode).

:func:`offers_to_rows` turns a step's offers (``env.unwrapped.last_offers``) into rows of the market's log
format (:data:`~promogym.envs.market.logs.LOG_COLUMNS`, loadable by ``promogym.predictors.data.load_logs``)
plus :data:`EXTRA_COLUMNS`; :func:`record_episode` plays a whole episode. Decisions a reader relies on:

* one row per (visitor, viewed product in stock at the start of the day): a sold-out product is not in the
  choice set; ``views`` is the size of that set (the visit's rows), as in the logs;
* ``purchased`` is 1 only for a served purchase. A visitor whose chosen product sold out earlier that day
  (the envs never restock, unlike the logging shop) buys nothing: their chosen product's row has
  ``stocked_out`` True and ``purchased`` 0, so revenue, cost and profit add up to the env's ``info``. The
  demand choice before stock-outs is ``purchased | stocked_out``: fit a choice model on that (or drop the
  stocked-out visits), never on ``purchased`` alone, which would count a sold-out choice as buying nothing;
* ``purchased`` is drawn from the env's response backend: record in the world (``response="world"``, the
  default) for logs of the world; ``true_proba`` is always the world's choice probability over the set;
* ``revealed_proba`` is computed from the recorded context (Monte Carlo with a seed fixed by episode and day,
  as :meth:`~promogym.envs.market.world.Market.revealed_choice_proba` does for the logs), not in the env's step;
* a day's prices hold for all its visitors: ``held_price`` is True; ``price_propensity`` is the probability of
  the row's product's played grid point, ``coupon_propensity`` that of the visitor's segment's played coupon
  level (1 without coupons), ``propensity`` their product. ``coupon`` is the coupon the visitor got, 0 where the
  budget or a coupon cap withheld the segment's level (``coupon_level``);
* ``visit_id`` is ``episode`` x 10^9 + the visit's number in the episode, unique over a table of episodes;
* the observation the policy acted on is stored on every row of its day (column ``observation``, a float32
  array; the same object for a day's rows, a list column in parquet): the rows alone suffice to call a target
  policy on the logged state (:func:`day_observations`) and weigh each day by the ratio of
  :meth:`ExploreWrapper.propensity_of` to the logged propensity.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import gymnasium as gym
import numpy as np
import pandas as pd

from promogym.core.config import ConfigBase, param
from promogym.envs.base import Offers, check_action, env_name
from promogym.envs.market.customers import VISIT_BANDS
from promogym.envs.market.logs import LOG_COLUMNS, _assemble  # the one definition of the log columns
from promogym.envs.market.world import PRICE_HISTORY_NAMES
from promogym.envs.pricing import _SeasonEnv

EXTRA_COLUMNS: tuple[str, ...] = ("episode", "season_day", "wanted_price", "stocked_out", "coupon_level",
                                  "wanted_coupon")
VISITS_PER_EPISODE = 10**9  # visit ids: episode x this + the visit's number in the episode
_STREAM = 0x6578706C  # the exploration generator's spawn key: never the env's stream for the same seed


@dataclasses.dataclass(frozen=True)
class Exploration(ConfigBase):
    """How :class:`ExploreWrapper` randomizes the prices (and coupon levels) a policy asks for."""

    epsilon: float = param(0.1, "probability that a product's price is drawn uniformly from the grid instead of the "
                                "policy's (0 < epsilon <= 1)", lo=0.0, hi=1.0)
    grid_step: float = param(0.1, "spacing of the price grid, as a multiple of list price over the env's band",
                             lo=0.01, hi=1.0)
    coupon_epsilon: float | None = param(None, "the same for each segment's coupon level (PricePromo); None: epsilon",
                                         lo=0.0, hi=1.0)

    def validate(self) -> None:
        """Both exploration rates above 0 (ValueError naming the key)."""
        for name in ("epsilon", "coupon_epsilon"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"Exploration.{name} must be > 0 and <= 1, got {value}: exploration 0 gives no "
                                 "propensities (grid points the policy never wants are never played)")

    @property
    def coupon_eps(self) -> float:
        """The coupon levels' exploration rate (``coupon_epsilon``, else ``epsilon``)."""
        return self.epsilon if self.coupon_epsilon is None else self.coupon_epsilon


def kernel_proba(wanted: np.ndarray, played: np.ndarray, size: int, epsilon: float) -> np.ndarray:
    """P(played | wanted) of ε-uniform exploration over ``size`` choices (grid indices, elementwise):
    ``(1 - ε) 1[played = wanted] + ε / size``."""
    return (1.0 - epsilon) * (np.asarray(wanted) == np.asarray(played)) + epsilon / size


@dataclasses.dataclass(frozen=True)
class ExploreRecord:
    """One step of :class:`ExploreWrapper`: the policy's action and what was played, per product (prices: grid
    indices into ``price_grid`` and their probabilities) and per segment (coupon level indices; empty arrays
    without coupons)."""

    wanted_action: np.ndarray
    action: np.ndarray            # played (float64, on the grid)
    wanted_price: np.ndarray      # the shelf prices the policy asked for (to the cent, before snapping)
    wanted_index: np.ndarray      # snap(wanted multiple) per product
    played_index: np.ndarray
    price_propensity: np.ndarray  # P(played_index | wanted_index) per product
    coupon_wanted_index: np.ndarray
    coupon_played_index: np.ndarray
    coupon_propensity: np.ndarray


class ExploreWrapper(gym.Wrapper[np.ndarray, np.ndarray, np.ndarray, np.ndarray]):
    """Plays the wrapped pricing env's actions on a price grid with ε-uniform exploration and records exact
    propensities (see the module docstring). For DynamicPricing-v1/v2 and PricePromo-v1 built without price
    constraints (a projection onto the feasible set would move the played prices off their known
    probabilities). After each step ``record`` (also ``info["exploration"]``) is the step's
    :class:`ExploreRecord`."""

    def __init__(self, env: gym.Env[Any, Any], exploration: Exploration | Mapping[str, Any] | None = None) -> None:
        super().__init__(env)
        u = env.unwrapped
        if not isinstance(u, _SeasonEnv):
            raise ValueError(f"ExploreWrapper plays pricing envs (DynamicPricing, PricePromo), not {env_name(u)}")
        price_keys = [k for k in u.constraints.active() if k != "coupon_cap"]
        if price_keys:
            raise ValueError(f"{env_name(u)}: ExploreWrapper needs an env without price constraints, got "
                             f"constraints.{price_keys[0]}: projected prices have no exact propensities")
        self.exploration = Exploration.coerce(exploration)
        cfg = u.config
        step = self.exploration.grid_step
        self.price_grid = np.round(np.arange(np.ceil(cfg.price_low / step - 1e-9) * step, cfg.price_high + 1e-9,
                                             step), 6)
        if not len(self.price_grid):
            raise ValueError(f"Exploration.grid_step {step} leaves no grid point in the price band "
                             f"[{cfg.price_low}, {cfg.price_high}]")
        self.coupon_levels = np.asarray(getattr(cfg, "coupon_levels", ()) if u.with_coupons else (), float)
        self.record: ExploreRecord | None = None
        self._rng: np.random.Generator | None = None

    # ------------------------------------------------------------------ the kernel
    def multiples_from_action(self, action: np.ndarray) -> np.ndarray:
        """The price multiples of list an action asks for, per product (the env's mapping, clipped to the band)."""
        cfg = self.env.unwrapped.config  # type: ignore[attr-defined]
        a = np.clip(np.asarray(action, float)[..., : cfg.n_products], -1.0, 1.0)
        return cfg.price_low + (a + 1.0) / 2.0 * (cfg.price_high - cfg.price_low)

    def snap(self, multiples: np.ndarray) -> np.ndarray:
        """The index of the nearest grid point to each price multiple (ties: the lower)."""
        return np.abs(np.asarray(multiples, float)[..., None] - self.price_grid).argmin(axis=-1)

    def propensity_of(self, target_multiples: np.ndarray, played: np.ndarray) -> np.ndarray:
        """P(played | target) under this wrapper's kernel, elementwise: the probability that a policy wanting
        ``target_multiples`` (price / list per product, any value: snapped) would have had the ``played``
        multiples (e.g. a row's ``price / list_price``) played. Its ratio to the logged ``price_propensity`` is the
        importance weight of the target policy."""
        return kernel_proba(self.snap(target_multiples), self.snap(played), len(self.price_grid),
                            self.exploration.epsilon)

    def level_index(self, action: np.ndarray) -> np.ndarray:
        """The coupon level index an action asks for, per segment (the env's equal-width bins of [-1, 1])."""
        n, k = self.env.unwrapped.config.n_products, len(self.coupon_levels)  # type: ignore[attr-defined]
        a = np.clip(np.asarray(action, float)[..., n:], -1.0, 1.0)
        return np.minimum(((a + 1.0) / 2.0 * k).astype(np.int64), max(k - 1, 0))

    def coupon_propensity_of(self, target_levels: np.ndarray, played_levels: np.ndarray) -> np.ndarray:
        """P(played | target) of coupon levels (shares, e.g. a row's ``coupon_level``; snapped to the nearest level)
        under this wrapper's kernel, elementwise."""
        def idx(x: np.ndarray) -> np.ndarray:
            return np.abs(np.asarray(x, float)[..., None] - self.coupon_levels).argmin(axis=-1)

        return kernel_proba(idx(target_levels), idx(played_levels), len(self.coupon_levels),
                            self.exploration.coupon_eps)

    def explore(self, action: np.ndarray) -> ExploreRecord:
        """Draw the played action for the policy's ``action`` from the wrapper's generator (nothing is stepped).
        The same number of draws every call, whatever the action, so the stream stays aligned across policies."""
        if self._rng is None:
            raise RuntimeError("ExploreWrapper: call reset() before step()")
        u: Any = self.env.unwrapped
        n, grid, levels = u.config.n_products, self.price_grid, self.coupon_levels
        eps, ceps = self.exploration.epsilon, self.exploration.coupon_eps
        action = np.asarray(action)
        wanted = self.snap(self.multiples_from_action(action))
        swap = self._rng.random(n) < eps
        played = np.where(swap, self._rng.integers(len(grid), size=n), wanted)
        lo, hi = u.config.price_low, u.config.price_high
        parts = [np.clip(2.0 * (grid[played] - lo) / (hi - lo) - 1.0, -1.0, 1.0)]
        c_wanted = c_played = np.zeros(0, np.int64)
        if len(levels):
            c_wanted = self.level_index(action)
            c_swap = self._rng.random(len(VISIT_BANDS)) < ceps
            c_played = np.where(c_swap, self._rng.integers(len(levels), size=len(VISIT_BANDS)), c_wanted)
            parts.append((c_played + 0.5) / len(levels) * 2.0 - 1.0)  # the centre of the level's bin
        return ExploreRecord(
            wanted_action=action.copy(), action=np.concatenate(parts), wanted_price=u.prices_from_action(action),
            wanted_index=wanted, played_index=played, price_propensity=kernel_proba(wanted, played, len(grid), eps),
            coupon_wanted_index=c_wanted, coupon_played_index=c_played,
            coupon_propensity=kernel_proba(c_wanted, c_played, max(len(levels), 1), ceps))

    # ------------------------------------------------------------------ gymnasium API
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None
              ) -> tuple[np.ndarray, dict[str, Any]]:
        """Reset the env; a ``seed`` also seeds the exploration generator (a stream of its own)."""
        if seed is not None or self._rng is None:
            self._rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(_STREAM,)))
        self.record = None
        return self.env.reset(seed=seed, options=options)

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Play the explored version of ``action``; ``info["exploration"]`` is the step's :class:`ExploreRecord`."""
        action = check_action(self, action, clip=True)  # a bad action changes nothing, not even the exploration draws
        self.record = self.explore(action)
        obs, reward, terminated, truncated, info = self.env.step(self.record.action)
        return obs, float(reward), terminated, truncated, {**info, "exploration": self.record}


def offers_to_rows(env: gym.Env[Any, Any], offers: Offers, record: ExploreRecord, episode: int, *,
                   visit_offset: int = 0, observation: np.ndarray | None = None) -> pd.DataFrame:
    """The log rows of one step's ``offers`` (``env.unwrapped.last_offers`` right after the step) played with
    ``record``: :data:`LOG_COLUMNS`, then :data:`EXTRA_COLUMNS`, then ``observation`` (the observation the
    policy acted on, on every row) when given. ``visit_offset`` numbers the step's visits after the episode's
    earlier ones. See the module docstring for what each column means here."""
    if offers.choice is None or offers.stockout is None or offers.day is None:
        raise ValueError(f"{env_name(env.unwrapped)} does not record its offers for logs (Offers.choice is None)")
    if not 0 <= episode < np.iinfo(np.int64).max // VISITS_PER_EPISODE:
        raise ValueError(f"episode must be >= 0 and < 9e9 (it numbers the visit ids), got {episode}")
    u: Any = env.unwrapped
    market = u.market
    a = offers.available
    vis, pos = np.nonzero(a)  # row-major: visitors in arrival order, then their viewed products
    if visit_offset + len(a) > VISITS_PER_EPISODE:
        raise ValueError(f"more than {VISITS_PER_EPISODE} visits in episode {episode}")
    users, items = offers.users[a], offers.items[a]
    product = u.env_index[items]
    band = market.customers.visit_band[users]
    chosen = pos == offers.choice[vis]
    seed = int(np.random.SeedSequence([episode, offers.day]).generate_state(1)[0])
    assert offers.price_history is not None and offers.coupons_last_7d is not None
    revealed = market.revealed_choice_proba(
        offers.users, offers.items, offers.price, offers.coupon, available=a, seed=seed,
        context={"day": offers.day, "reference_price": offers.reference_price, "fatigue": offers.fatigue})
    has_coupons = len(record.coupon_played_index) > 0
    levels = np.asarray(getattr(u.config, "coupon_levels", (0.0,)), float)
    cols = {
        "day": np.full(len(users), offers.day, np.int64),
        "visit_id": episode * VISITS_PER_EPISODE + visit_offset + vis,
        "user_id": users, "item_id": items, "price": offers.price[a], "coupon": offers.coupon[a],
        "views": a.sum(axis=1)[vis], "held_price": np.ones(len(users), bool),
        "price_propensity": record.price_propensity[product],
        "coupon_propensity": record.coupon_propensity[band] if has_coupons else np.ones(len(users)),
        "coupons_last_7d": offers.coupons_last_7d[vis],
        **{name: offers.price_history[name][a] for name in PRICE_HISTORY_NAMES},
        "reference_price": np.asarray(offers.reference_price)[a], "fatigue": np.asarray(offers.fatigue)[a],
        "true_proba": offers.proba_world[a], "revealed_proba": revealed[a],
        "purchased": chosen & ~offers.stockout[vis],
    }
    df = _assemble(market, cols)
    df["episode"] = np.full(len(df), episode, np.int64)
    df["season_day"] = np.full(len(df), offers.season_day, np.int64)
    df["wanted_price"] = record.wanted_price[product]
    df["stocked_out"] = chosen & offers.stockout[vis]
    df["coupon_level"] = levels[record.coupon_played_index[band]] if has_coupons else np.zeros(len(df))
    df["wanted_coupon"] = levels[record.coupon_wanted_index[band]] if has_coupons else np.zeros(len(df))
    if observation is not None:
        obs = np.array(observation, dtype=np.float32)
        df["observation"] = pd.Series([obs] * len(df), dtype=object)
    return df


def record_episode(env: gym.Env[Any, Any], policy: Any, seed: int,
                   exploration: Exploration | Mapping[str, Any] | None = None, *,
                   episode: int | None = None) -> pd.DataFrame:
    """Play one episode of ``policy`` (anything with SB3's ``predict(obs, deterministic=True)``) from ``seed``
    through an :class:`ExploreWrapper` (``env`` itself when it is one, then ``exploration`` must be None) and
    return its log rows (:func:`offers_to_rows`, the day's observation on each row; ``episode`` defaults to
    ``seed``)."""
    if isinstance(env, ExploreWrapper):
        if exploration is not None:
            raise ValueError("record_episode: env is already an ExploreWrapper; pass exploration=None")
        w = env
    else:
        w = ExploreWrapper(env, exploration)
    episode = seed if episode is None else episode
    obs, _ = w.reset(seed=seed)
    frames: list[pd.DataFrame] = []
    visits, done = 0, False
    while not done:
        action, _ = policy.predict(obs, deterministic=True)
        next_obs, _, terminated, truncated, info = w.step(action)
        offers = w.unwrapped.last_offers  # type: ignore[attr-defined]
        if offers is not None:
            frames.append(offers_to_rows(w, offers, info["exploration"], episode, visit_offset=visits,
                                         observation=obs))
        visits += int(info["visitors"])
        obs, done = next_obs, terminated or truncated
    if not frames:
        return pd.DataFrame(columns=[*LOG_COLUMNS, *EXTRA_COLUMNS, "observation"])
    return pd.concat(frames, ignore_index=True)


def day_observations(rows: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
    """The distinct days of recorded ``rows``, (episode, season_day) sorted, and the observation the policy acted
    on each day, stacked (days, obs dim): what a target policy is called on to evaluate it on the rows."""
    first = rows.drop_duplicates(["episode", "season_day"]).sort_values(["episode", "season_day"])
    return (first[["episode", "season_day"]].reset_index(drop=True),
            np.stack(list(first["observation"])).astype(np.float32))
