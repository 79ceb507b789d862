"""Shared machinery of the market environments: configs, the market, backends, a simulated day."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np

from promogym.core.config import ConfigBase, param
from promogym.envs.backends import ResponseBackend, WorldBackend, make_backend
from promogym.envs.constraints import BusinessConstraints, parse_constraints
from promogym.envs.market import WEEKDAYS, Market, MarketState, mnl_from_utility

OBS_BOUND = 10.0


@dataclasses.dataclass(frozen=True)
class MarketEnvConfig(ConfigBase):
    """Fields every market environment shares."""

    market: Mapping[str, Any] = param(None, "MarketConfig overrides for the world", factory=dict)
    response: Any = param(  # noqa: RUF009 (param returns a dataclasses.field)
        "world", "response backend: world (the ground truth), a conversion model spec (bert:<checkpoint dir>, "
                 "gbdt:<file>, logistic:<file> or a kind added with promogym.predictors.registry.register_model) "
                 "or a ConversionModel")
    reward: str = param("profit", "reward: profit (revenue - unit cost - coupon cost) or revenue",
                        choices=("profit", "revenue"))
    uncertainty_penalty: float = param(
        0.0, "lambda: the reward minus lambda x the response model's ensemble standard deviation of the step's "
             "expected profit (pessimism where the model is unsure, as in model-based offline RL); needs a model "
             "fitted with an ensemble", lo=0.0, hi=1e6)
    constraints: Mapping[str, Any] = param(
        None, "business constraints enforced on every action (keys of promogym.envs.constraints.BusinessConstraints: "
              "max_daily_change, max_weekly_changes, margin_floor, price_endings, no_discount, coupon_cap); "
              "empty: none", factory=dict)

    # what the env decides, so which constraints apply to it (subclasses set them)
    sets_prices: ClassVar[bool] = False
    gives_coupons: ClassVar[bool] = False

    def validate(self) -> None:
        """The market overrides, the response spec, the uncertainty penalty's need of an ensemble and the
        constraints; ValueError naming the key."""
        if not isinstance(self.market, Mapping):
            raise ValueError(f"{type(self).__name__}.market must be a mapping of MarketConfig overrides")
        r = self.response
        if isinstance(r, str):
            if r != "world":  # the ground truth backend, not a model
                from promogym.predictors.registry import check_spec

                check_spec(r, "conversion", name=f"{type(self).__name__}.response", oracles=False, extra=("world",),
                           other="a ConversionModel")
        elif not hasattr(r, "predict_proba"):
            raise ValueError(f"{type(self).__name__}.response must be a string or a ConversionModel, got {r!r}")
        if self.uncertainty_penalty > 0 and isinstance(r, str) and r == "world":
            raise ValueError(f"{type(self).__name__}.uncertainty_penalty needs a learned response model with an "
                             "ensemble; the world has no uncertainty")
        self.business_constraints()

    def business_constraints(self) -> BusinessConstraints:
        """The validated ``constraints`` (ValueError naming the key that is wrong or does not apply here)."""
        return parse_constraints(self.constraints, type(self).__name__, prices=self.sets_prices,
                                 coupons=self.gives_coupons)


def world_config(env_config: Mapping[str, Any] | None) -> dict[str, Any]:
    """``env_config`` for playing in the world itself: the world as the response, and no uncertainty penalty
    (a simulator's pessimism; the world has no uncertainty). For scoring trained policies in the world."""
    cfg = {k: v for k, v in dict(env_config or {}).items() if k != "uncertainty_penalty"}
    cfg["response"] = "world"
    return cfg


def world_free(env_id: str) -> bool:
    """Whether the env has no ground-truth world (``world_free = True`` on its class): its only response is a
    model fitted on a shop's data, so nothing can be scored in the world."""
    from promogym.envs.families import env_class

    return bool(getattr(env_class(env_id), "world_free", False))


def probe_config(env_id: str, env_config: Mapping[str, Any] | None = None, response: str | None = None
                 ) -> dict[str, Any]:
    """The env config with its cheapest response, for reading spaces and checking settings (never for scoring):
    the world for the market envs; ``response`` (else the config's own) for a world-free env, which has no other;
    the env's default otherwise."""
    from promogym.envs import MARKET_ENV_IDS

    if env_id in MARKET_ENV_IDS:
        return world_config(env_config)
    cfg = dict(env_config or {})
    if world_free(env_id):
        if response is not None:
            cfg["response"] = response
        return cfg
    cfg.pop("response", None)
    return cfg


def split_config(env_id: str, env_config: Mapping[str, Any] | None, k: int) -> dict[str, Any]:
    """``env_config`` with every step's batch of arrivals split into ``k`` steps of a batch ``k`` times smaller: the
    env's ``batch_split`` (the batch-size key, divided by ``k``; the steps-per-period keys, multiplied by ``k``), so
    the same arrivals meet the same season in decisions ``k`` times smaller. ``k`` = 1: ``env_config`` as it is.
    ValueError when the env declares no ``batch_split``, or ``k`` does not divide its batch size."""
    from promogym.envs.families import env_class

    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"a batch split must be an integer >= 1, got {k!r}")
    cfg = dict(env_config or {})
    if k == 1:
        return cfg
    cls = env_class(env_id)
    split = getattr(cls, "batch_split", None)
    if split is None:
        raise ValueError(f"{env_id} does not split its steps' batches (its class declares no batch_split); "
                         f"train_split must be 1 there")
    size_key, step_keys = split
    resolved = cls.config_class.coerce({key: v for key, v in cfg.items() if key != "response"})  # type: ignore[attr-defined]
    size = int(getattr(resolved, size_key))
    if size % k:
        raise ValueError(f"train_split {k} does not divide {env_id}'s {size_key} ({size}); set train_split to a "
                         f"divisor of it (1: train on the env as configured)")
    cfg[size_key] = size // k
    for key in step_keys:
        cfg[key] = int(getattr(resolved, key)) * k
    cls.config_class.coerce({key: v for key, v in cfg.items() if key != "response"})  # type: ignore[attr-defined]
    return cfg


def resolve_config(config_class: type[ConfigBase], config: ConfigBase | Mapping[str, Any] | None,
                   overrides: Mapping[str, Any], render_mode: str | None, render_modes: list[str]) -> Any:
    """An env's validated config from a config object or mapping plus keyword overrides (a response model
    object survives the round trip through a dict); a render mode the env lacks raises ValueError."""
    if overrides:
        base = config.to_dict() if isinstance(config, ConfigBase) else dict(config or {})
        if isinstance(config, ConfigBase):
            base["response"] = getattr(config, "response", None)
        config = {**base, **overrides}
    if render_mode is not None and render_mode not in render_modes:
        raise ValueError(f"render_mode must be one of {render_modes}, got {render_mode!r}")
    return config_class.coerce(config)


def check_coupon_levels(cfg: Any) -> None:
    """Coupon levels start at 0 (no coupon) and increase: level indices are ordered by generosity."""
    levels = cfg.coupon_levels
    if not levels or levels[0] != 0.0 or list(levels) != sorted(levels):
        raise ValueError(f"{type(cfg).__name__}.coupon_levels must be increasing and start at 0, got {levels}")


def env_name(env: Any) -> str:
    """The Gymnasium id of ``env`` (from its spec, or the registered id of its class), else its class name."""
    spec = getattr(env, "spec", None)
    if spec is not None:
        return str(spec.id)
    from promogym.envs import ENV_IDS

    cls = type(env)
    return next((k for k, v in ENV_IDS.items() if v == f"{cls.__module__}:{cls.__name__}"), cls.__name__)


def _show(x: Any) -> str:
    """A bound (scalar or array) compactly: one value when all are equal."""
    x = np.asarray(x)
    return repr(x.flat[0].item()) if x.size and (x == x.flat[0]).all() else np.array2string(x, threshold=6)


def _action_error(env: Any, space: gym.Space, clip: bool, got: str) -> ValueError:
    if isinstance(space, gym.spaces.Box):
        rule = (f"outside [{_show(space.low)}, {_show(space.high)}] are clipped" if clip
                else f"in [{_show(space.low)}, {_show(space.high)}]")
        want = f"a finite array of shape {space.shape} (values {rule})"
    else:
        levels: Any = space  # MultiDiscrete
        want = (f"an integer array of shape {space.shape} with values in "
                f"[{_show(levels.start)}, {_show(levels.start + levels.nvec)})")
    return ValueError(f"{env_name(env)}: action must be {want}, got {got}")


def _first_bad(a: np.ndarray, bad: np.ndarray) -> str:
    """The first offending entry of ``a`` (where ``bad``), and how many there are."""
    i = int(np.argmax(bad))  # flat index
    where = i if a.ndim == 1 else tuple(int(k) for k in np.unravel_index(i, a.shape))
    more = int(bad.sum()) - 1
    return f"{a.flat[i].item()!r} at index {where} (dtype {a.dtype}" + (f"; {more} more bad entries)" if more else ")")


def check_action(env: Any, action: Any, *, clip: bool = False) -> np.ndarray:
    """``action`` as an array of ``env.action_space``'s shape, or ValueError (one line: the env, the action
    expected and what was given) before anything in the env changes.

    The action must have the space's shape exactly after ``np.asarray`` (a list is fine; a scalar only for a
    one-element space: nothing is broadcast or cut) and real numbers. ``Box``: finite values; with ``clip``
    (the env clips actions into the box itself, as it documents) any finite value, else within the bounds.
    ``MultiDiscrete``: integers (an integer-valued float array is fine) in ``[start, start + nvec)``; returned
    as int64. Box actions are returned as given (their dtype kept), never clipped here."""
    space = env.action_space
    try:
        a = np.asarray(action)
    except (ValueError, TypeError) as e:  # ragged nested lists
        raise _action_error(env, space, clip, f"{type(action).__name__} not convertible to an array "
                                              f"({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    if a.shape != space.shape:
        if a.ndim == 0 and space.shape == (1,):
            a = a.reshape(1)
        else:
            raise _action_error(env, space, clip, f"shape {a.shape}" + (f" ({a.item()!r})" if a.ndim == 0 else ""))
    if a.dtype.kind not in "biuf":
        raise _action_error(env, space, clip, f"dtype {a.dtype}")
    if isinstance(space, gym.spaces.Box):
        if a.dtype.kind == "f" and not np.isfinite(a).all():
            raise _action_error(env, space, clip, _first_bad(a, ~np.isfinite(a)))
        if not clip and ((a < space.low).any() or (a > space.high).any()):
            raise _action_error(env, space, clip, _first_bad(a, (a < space.low) | (a > space.high)))
        return a
    if isinstance(space, gym.spaces.MultiDiscrete):
        if a.dtype.kind == "f":
            integral = np.floor(a) == a  # False for NaN
            if not integral.all():
                raise _action_error(env, space, clip, _first_bad(a, ~integral))
        lo, hi = space.start, space.start + space.nvec
        if (a < lo).any() or (a >= hi).any():
            raise _action_error(env, space, clip, _first_bad(a, (a < lo) | (a >= hi)))
        return a.astype(np.int64, copy=False)
    raise TypeError(f"{env_name(env)}: check_action handles Box and MultiDiscrete spaces, not {space}")


def figure_to_array(fig: Any) -> np.ndarray:
    """An RGB uint8 array of a matplotlib figure (for render_mode="rgb_array"); closes the figure."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.canvas.draw()
    img = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    plt.close(fig)
    return img


def history_panels(history: list[dict[str, Any]], panels: tuple[tuple[str, str, bool], ...]) -> np.ndarray:
    """An RGB image (``render_mode="rgb_array"``) of one line plot per ``(key, title, cumulative)`` of the step
    records ``history`` against their step ``t`` (a cumulative sum where ``cumulative``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3), dpi=80)
    for ax, (key, title, cumulative) in zip(np.atleast_1d(axes), panels, strict=True):
        if history:
            y = np.array([h[key] for h in history], dtype=float)
            ax.plot([h["t"] for h in history], np.cumsum(y) if cumulative else y)
        ax.set_title(title, fontsize=9)
    return figure_to_array(fig)


@dataclasses.dataclass
class DayOutcome:
    """What happened on one simulated day (or one cohort)."""

    visitors: int
    units: np.ndarray          # per env product
    revenue: float
    cost: float
    coupon_spend: float
    stockouts: int
    coupons_given: int
    coupons_clipped: int
    expected_profit: float     # under the env's response backend, before sampling
    expected_profit_world: float  # the world's expectation for the same decisions (nan: no world)
    profit_spread: float = 0.0    # the response model's ensemble sd of expected_profit (0: no penalty asked)
    coupons_capped: int = 0       # coupons not given: the customer had reached the constraints' coupon_cap
    # expected_profit with each product's expected sales capped at its stock (nan: not computed; no stock)
    expected_profit_served: float = float("nan")


@dataclasses.dataclass
class Offers:
    """The offers of the last step, shaped (visitors, products viewed): who, what, at which shelf price and
    coupon share, which products could be bought (viewed and in stock), each one's choice probability under
    the env's backend and under the world, its margin, and the shop's price history of the product at the
    time (the mid-rate EWMA of shelf price / list, ``price_hist_mid``). Read by `promogym fidelity`.

    The optional fields (None where an env does not record them) are what a log row of the step needs, taken
    when the offers were served, before the day's end moved the state (:mod:`promogym.envs.recording`): each
    visitor's demand choice before stock-outs (``choice``: the position in the row, -1 for none) and whether
    that choice had sold out by the visitor's turn (``stockout``), the ``season_day`` and market ``day``, each
    visitor's ``coupons_last_7d``, the three price-history EWMAs per offer (``price_history``, by
    :data:`~promogym.envs.market.world.PRICE_HISTORY_NAMES`), and the latent ``reference_price`` and ``fatigue``
    per offer."""

    users: np.ndarray
    items: np.ndarray
    price: np.ndarray
    coupon: np.ndarray
    available: np.ndarray
    proba: np.ndarray
    proba_world: np.ndarray
    margin: np.ndarray
    price_hist: np.ndarray
    choice: np.ndarray | None = None              # (visitors,) position chosen before stock-outs, -1: none
    stockout: np.ndarray | None = None            # (visitors,) the choice was sold out by the visitor's turn
    season_day: int | None = None
    day: int | None = None
    coupons_last_7d: np.ndarray | None = None     # (visitors,)
    price_history: dict[str, np.ndarray] | None = None  # name -> (visitors, viewed)
    reference_price: np.ndarray | None = None     # (visitors, viewed)
    fatigue: np.ndarray | None = None             # (visitors, viewed)


class MarketEnv(gym.Env[np.ndarray, np.ndarray]):
    """Base class: builds the world and the response backend from the config."""

    metadata = {"render_modes": ["ansi", "rgb_array"], "render_fps": 4}  # noqa: RUF012 (Gymnasium's convention)
    config_class: type[MarketEnvConfig] = MarketEnvConfig
    # (batch-size key, steps-per-period keys) of an env whose step serves a batch of independent arrivals that can
    # be served in smaller steps (:func:`split_config`); None: the env's steps do not split
    batch_split: tuple[str, tuple[str, ...]] | None = None

    def __init__(self, config: MarketEnvConfig | Mapping[str, Any] | None = None, render_mode: str | None = None,
                 **overrides: Any) -> None:
        self.config = resolve_config(self.config_class, config, overrides, render_mode, self.metadata["render_modes"])
        self.render_mode = render_mode
        self.market = Market(self.config.market)
        self.backend: ResponseBackend = make_backend(self.config.response, self.market)
        self.world: ResponseBackend = self.backend if self.backend.is_world else WorldBackend(self.market)
        if self.config.uncertainty_penalty > 0 and not getattr(self.backend, "ensemble_size", 0):
            raise ValueError(f"{type(self.config).__name__}.uncertainty_penalty needs a response model fitted with an "
                             "ensemble (a BERT hybrid model: `promogym fit --set ensemble=5`); "
                             f"{self.backend.name} has none")
        self.state: MarketState = self.market.initial_state()
        self.last_offers: Offers | None = None

    @classmethod
    def default_config(cls) -> dict[str, Any]:
        """The env's default config as a plain dict (HighwayEnv's ``default_config()``)."""
        return cls.config_class().to_dict()

    # ------------------------------------------------------------------ visitors and choices
    def profit_spread(self, users: np.ndarray, items: np.ndarray, price: np.ndarray, coupon: np.ndarray,
                      available: np.ndarray, margin: np.ndarray) -> float:
        """The ensemble's standard deviation of the expected profit of these offers ((visitors, viewed) arrays,
        MNL over each row's available products); 0 without an uncertainty penalty."""
        if self.config.uncertainty_penalty <= 0 or users.size == 0:
            return 0.0
        z = self.backend.member_logits(users, items, price, coupon, self.state)  # type: ignore[attr-defined]
        per_member = [(mnl_from_utility(zk, available) * margin).sum() for zk in z]
        return float(np.std(per_member))

    def season_factor(self, day: int) -> float:
        """Expected visitors on ``day`` relative to the average day (weekly seasonality)."""
        return float(self.market.arrival_rate(day) / self.market.config.daily_arrivals)

    def _reserve(self, worst_cost: np.ndarray, budget_left: float) -> np.ndarray:
        """Which coupons (in arrival order) fit the budget if every one of them were redeemed."""
        return np.cumsum(worst_cost) <= budget_left + 1e-9

    def _weekday_onehot(self) -> np.ndarray:
        return np.eye(7, dtype=np.float32)[self.state.day % 7]

    @staticmethod
    def _clip_obs(x: np.ndarray) -> np.ndarray:
        return np.clip(np.nan_to_num(x.astype(np.float32)), -OBS_BOUND, OBS_BOUND)

    def _weekday_name(self) -> str:
        return WEEKDAYS[self.state.day % 7]
