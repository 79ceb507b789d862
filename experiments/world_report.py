"""`promogym world`: the market's behaviour at a glance (elasticities, coupon response, demand curves)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from promogym.core.io import atomic_path, write_json
from promogym.envs.market import Market, MarketConfig
from promogym.envs.market.analysis import demand_curves, elasticities
from promogym.experiments.data import load_world_file
from promogym.experiments.paths import add_force, output_dir


def plot_demand_curves(market: Market, path: Path) -> None:
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
    market = Market(config)
    el = elasticities(market)
    report = {"world": config.to_dict(), "per_type": el}
    write_json(out / "world.json", report)
    plot_demand_curves(market, out / "demand_curves.png")
    return report


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("world", help="describe the market: elasticities, coupon response, demand curves")
    p.add_argument("--world", default=None, help="YAML with `market:` overrides")
    p.add_argument("--out", default="runs/world", help="output folder (default runs/world)")
    add_force(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    cfg, _ = load_world_file(args.world)
    out = output_dir(args.out, "--out", force=args.force)
    report = world_report(cfg, out)
    print(f"{'customer type':<14} {'P(buy) at list':>15} {'elasticity':>10} {'rise':>7} {'cut':>7} "
          f"{'20% coupon lift':>16} {'fatigued':>9}")
    for name, r in report["per_type"].items():
        print(f"{name:<14} {r['purchase_proba_at_list']:>15.2%} {r['elasticity_arc']:>10.2f} "
              f"{r['elasticity_rise']:>7.2f} {r['elasticity_cut']:>7.2f} {r['coupon20_lift']:>16.1%} "
              f"{r['coupon20_lift_fatigued']:>9.1%}")
    print(f"wrote {out / 'world.json'} and {out / 'demand_curves.png'}")
    return 0
