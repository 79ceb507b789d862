"""The market's behaviour at a glance (elasticities, coupon response, demand curves), for `promogym world`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from promogym.core.io import atomic_path, write_json
from promogym.envs.market import Market, MarketConfig
from promogym.envs.market.analysis import demand_curves, elasticities


def plot_demand_curves(market: Market, path: Path) -> None:
    """Draw each customer type's demand curve over shelf price / list price (absolute, and relative to demand at list
    price) and write it as a PNG to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    mult = np.linspace(0.6, 1.5, 46)
    curves = demand_curves(market, mult)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for name, y in curves.items():
        axes[0].plot(mult, y * 100, label=name)
        axes[1].plot(mult, y / y[np.argmin(np.abs(mult - 1.0))], label=name)
    for ax in axes:
        ax.axvline(1.0, color="grey", lw=0.8, ls=":")
        ax.set_xlabel("shelf price / list price (reference price = list price)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("purchase probability of a viewed product (%)")
    axes[0].set_title("Demand curves per customer type")
    axes[1].set_ylabel("relative to demand at list price")
    axes[1].set_yscale("log")
    axes[1].yaxis.set_major_formatter(ticker.FormatStrFormatter("%.2g"))
    axes[1].yaxis.set_minor_formatter(ticker.NullFormatter())
    axes[1].set_yticks([0.1, 0.2, 0.3, 0.5, 0.7, 1.0, 1.5, 2.0, 3.0, 4.0])
    axes[1].set_title("Relative demand (kink: loss aversion at the reference)")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def world_report(config: MarketConfig, out: Path) -> dict[str, Any]:
    """Describe the world of ``config``: elasticities and coupon response per customer type, written to
    ``out/world.json`` with the demand curves' plot; returns the report."""
    market = Market(config)
    el = elasticities(market)
    report = {"world": config.to_dict(), "per_type": el}
    write_json(out / "world.json", report)
    plot_demand_curves(market, out / "demand_curves.png")
    return report
