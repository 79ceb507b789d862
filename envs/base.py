"""Shared machinery of the market environments: configs, the market, backends, a simulated day."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import gymnasium as gym
import numpy as np

from promogym.core.config import ConfigBase, param
from promogym.envs.backends import ResponseBackend, WorldBackend, make_backend
from promogym.envs.market import WEEKDAYS, Market, MarketState

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

    def validate(self) -> None:
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


def figure_to_array(fig: Any) -> np.ndarray:
    """An RGB uint8 array of a matplotlib figure (for render_mode="rgb_array"); closes the figure."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.canvas.draw()
    img = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    plt.close(fig)
    return img


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


class MarketEnv(gym.Env[np.ndarray, np.ndarray]):
    """Base class: builds the world and the response backend from the config."""

    metadata = {"render_modes": ["ansi", "rgb_array"], "render_fps": 4}  # noqa: RUF012 (Gymnasium's convention)
    config_class: type[MarketEnvConfig] = MarketEnvConfig

    def __init__(self, config: MarketEnvConfig | Mapping[str, Any] | None = None, render_mode: str | None = None,
                 **overrides: Any) -> None:
        self.config = resolve_config(self.config_class, config, overrides, render_mode, self.metadata["render_modes"])
        self.render_mode = render_mode
        self.market = Market(self.config.market)
        self.backend: ResponseBackend = make_backend(self.config.response, self.market)
        self.world: ResponseBackend = self.backend if self.backend.is_world else WorldBackend(self.market)
        self.state: MarketState = self.market.initial_state()

    @classmethod
    def default_config(cls) -> dict[str, Any]:
        return cls.config_class().to_dict()

    # ------------------------------------------------------------------ visitors and choices
    def _visitors(self, expected: float, categories: np.ndarray, rng: np.random.Generator | None = None,
                  n: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Visitors of the day (Poisson, weekly seasonality; or exactly ``n``) and the env category each
        one browses: a favourite one when the env sells it, otherwise one of the env's categories."""
        rng = self.np_random if rng is None else rng
        if n is None:
            n = int(rng.poisson(expected * self.season_factor(self.state.day)))
        users = self.market.sample_visitors(self.state.day, rng, n=n)
        fav = self.market.customers.favourites[users]
        pick = np.where(rng.random(len(users)) < 0.6, fav[:, 0], fav[:, 1])
        ok = np.isin(pick, categories)
        cats = np.where(ok, pick, categories[rng.integers(0, len(categories), len(users))])
        return users, cats

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
