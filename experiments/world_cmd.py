"""`promogym world`: the market's behaviour at a glance (elasticities, coupon response, demand curves)."""

from __future__ import annotations

import argparse

from promogym.experiments.data import load_world_file
from promogym.experiments.errors import CLIError
from promogym.experiments.paths import add_force, output_dir
from promogym.experiments.world_report import world_report


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add the ``world`` subcommand to the CLI's subparsers."""
    p = sub.add_parser("world", help="describe the market: elasticities, coupon response, demand curves")
    p.add_argument("--world", default=None, help="YAML with `market:` overrides")
    p.add_argument("--out", default="runs/world", help="output folder (default runs/world)")
    add_force(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``promogym world`` with the parsed ``args``; returns the exit status (CLIError for bad input)."""
    try:
        cfg, _ = load_world_file(args.world)
    except ValueError as exc:
        raise CLIError(str(exc)) from exc
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
