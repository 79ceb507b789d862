"""Env families: what an env's kind of decision means to the layers above it.

An env class names its family (``family = PRICING``); everything that differs between kinds of decision
and is not the env's own dynamics lives here, beside the env, so no caller tells envs apart by their id:

- ``name``: the key policies declare support for (a policy registered for ``"pricing"`` plays every
  pricing env);
- ``default_algos``: what ``promogym agents-report`` trains when no algorithm is named;
- ``trace_rows(env, seed, t, info)``: the step records a report keeps for the first evaluation episodes;
- ``trace_plots``: the report sections drawn from those records.

A new kind of env declares one :class:`EnvFamily` in its module; ``family_of(env_id)`` finds it through
the env's registered entry point.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pandas as pd

from promogym.core.plots import save_png, two_panels
from promogym.envs.market.customers import SENSITIVITY, VISIT_BANDS, sensitivity_band

TraceRows = Callable[[Any, int, int, dict[str, Any]], list[dict[str, Any]]]


@dataclasses.dataclass(frozen=True)
class TracePlot:
    """A report section drawn from step records: ``draw(traces, env_name, path)`` returns False when the
    records hold nothing to draw."""

    file: str
    heading: str
    alt: str
    draw: Callable[[pd.DataFrame, str, Path], bool]


@dataclasses.dataclass(frozen=True)
class EnvFamily:
    """A kind of decision shared by envs: its ``name`` (the key policies declare support for), a ``description``, the
    algorithms ``agents-report`` trains by default, and how reports trace and plot its episodes (``trace_rows``,
    ``trace_plots``)."""

    name: str
    description: str
    default_algos: tuple[str, ...] = ()
    trace_rows: TraceRows | None = None
    trace_plots: tuple[TracePlot, ...] = ()


def env_class(env_id: str) -> type[gym.Env[Any, Any]]:
    """The class behind a registered env id (ValueError naming the known ids otherwise)."""
    import promogym.envs  # noqa: F401  (registers the ids)

    if env_id not in gym.registry:
        known = ", ".join(k for k in gym.registry if k.startswith("promogym/"))
        raise ValueError(f"unknown env id {env_id!r}; choose one of {known}")
    entry = gym.registry[env_id].entry_point
    if callable(entry):
        return entry  # type: ignore[return-value]
    from gymnasium.envs.registration import load_env_creator

    return load_env_creator(str(entry))  # type: ignore[return-value]


def family_of(env_id: str) -> EnvFamily:
    """The family an env declares (``family`` on its class)."""
    family = getattr(env_class(env_id), "family", None)
    if not isinstance(family, EnvFamily):
        raise ValueError(f"{env_id} declares no env family (a `family` class attribute)")
    return family


def short_name(env_id: str) -> str:
    """``promogym/DynamicPricing-v1`` -> ``DynamicPricing-v1`` (file and plot names)."""
    return env_id.split("/")[-1]


# ---------------------------------------------------------------------------------------- traces
def _world_traces(traces: pd.DataFrame, env: str, column: str) -> pd.DataFrame:
    """The world's step records of one env that carry ``column``."""
    if traces.empty or column not in traces:
        return traces.iloc[:0]
    return traces[(traces["env_id"].map(short_name) == env) & (traces["backend"] == "world")
                  & traces[column].notna()]


def _episodes(g: pd.DataFrame) -> int:
    return int(g["episode"].nunique() * max(1, g["train_seed"].nunique()))


def pricing_trace_rows(env: Any, seed: int, t: int, info: dict[str, Any]) -> list[dict[str, Any]]:
    """One record per product and day: the price against list, the stock, the units sold."""
    u = env.unwrapped
    prices = np.asarray(info["prices"]) / u.list_price
    stock = u.state.stock[u.products]
    return [{"episode": seed, "t": t, "day": int(info["day"]), "product": j, "price_ratio": float(prices[j]),
             "stock": int(stock[j]), "units": int(info["units"][j])} for j in range(len(prices))]


def plot_pricing_traces(traces: pd.DataFrame, env: str, path: Path) -> bool:
    """Mean price against list and total stock over the season, one line per policy."""
    sub = _world_traces(traces, env, "price_ratio")
    if sub.empty:
        return False
    fig, axes = two_panels()
    for name, g in sub.groupby("policy", sort=False):
        by_day = g.groupby("t").agg(price=("price_ratio", "mean"), stock=("stock", "sum"))
        width = 2.0 if "@" in str(name) else 1.2  # learned policies and planners on the simulator stand out
        axes[0].plot(by_day.index, by_day["price"], label=name, lw=width)
        axes[1].plot(by_day.index, by_day["stock"] / _episodes(g), label=name, lw=width)
    axes[0].set_ylabel("price / list price (mean over products)")
    axes[1].set_ylabel("units in stock (all products)")
    for ax, title in zip(axes, ("price trajectory over the season", "stock over the season"), strict=True):
        ax.set_xlabel("day")
        ax.set_title(f"{env}: {title}", fontsize=10)
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    save_png(fig, path)
    return True


def coupon_trace_rows(env: Any, seed: int, t: int, info: dict[str, Any]) -> list[dict[str, Any]]:
    """One record per customer offered: visit band, hidden price-sensitivity tercile, coupon, purchase, spend."""
    u = env.unwrapped
    cust = u.market.customers
    users, chosen = np.asarray(info["users"]), np.asarray(info["chosen"])
    coupon, bought = np.asarray(info["coupon"]), np.asarray(info["bought"])
    price = np.where(bought, u.market.catalog.list_price[np.maximum(chosen, 0)], 0.0)  # of the product bought
    band = sensitivity_band(cust, users)
    return [{"episode": seed, "t": t, "user": int(users[k]), "visit_band": int(cust.visit_band[users[k]]),
             "price_sensitivity": int(band[k]), "coupon": float(coupon[k]), "bought": bool(bought[k]),
             "spend": float(coupon[k] * price[k] * bought[k]), "budget_left": float(u.budget_left)}
            for k in range(len(users))]


def plot_coupon_traces(traces: pd.DataFrame, env: str, path: Path) -> bool:
    """Coupon spend per episode by visit frequency and by hidden price sensitivity, one bar per policy."""
    sub = _world_traces(traces, env, "visit_band")
    if sub.empty:
        return False
    fig, axes = two_panels()
    names = list(dict.fromkeys(sub["policy"]))
    width = 0.8 / max(1, len(names))
    for col, (ax, labels, title) in enumerate(zip(
            axes, (VISIT_BANDS, SENSITIVITY), ("visit frequency", "price sensitivity (hidden)"), strict=True)):
        key = ("visit_band", "price_sensitivity")[col]
        for i, name in enumerate(names):
            g = sub[sub["policy"] == name]
            spend = g.groupby(key)["spend"].sum().reindex(range(len(labels)), fill_value=0) / _episodes(g)
            ax.bar(np.arange(len(labels)) + i * width, spend.to_numpy(), width, label=name)
        ax.set_xticks(np.arange(len(labels)) + width * (len(names) - 1) / 2, labels)
        ax.set_ylabel("coupon spend per episode")
        ax.set_title(f"{env}: coupon spend by {title}", fontsize=10)
        ax.grid(alpha=0.3, axis="y")
    axes[1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    save_png(fig, path)
    return True


PRICING = EnvFamily(
    "pricing", "shelf prices per product and day over a season (PricePromo adds a coupon level per segment)",
    default_algos=("ppo",), trace_rows=pricing_trace_rows,
    trace_plots=(TracePlot("trajectories", "What the policies do", "prices and stock", plot_pricing_traces),))
COUPONS = EnvFamily(
    "coupons", "a coupon level for each customer of an arriving cohort, under a campaign budget",
    default_algos=("maskable_ppo",), trace_rows=coupon_trace_rows,
    trace_plots=(TracePlot("coupons", "Who gets coupons", "coupon spend by customer type", plot_coupon_traces),))
TARGETING = EnvFamily(
    "targeting", "which e-mail (if any) each real customer of a batch gets, under an e-mail budget",
    default_algos=("maskable_ppo",))

__all__ = ["COUPONS", "PRICING", "TARGETING", "EnvFamily", "TracePlot", "env_class", "family_of", "short_name"]
