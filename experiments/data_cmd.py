"""`promogym data`: generate interaction logs of the ground-truth market."""

from __future__ import annotations

import argparse
import sys

from promogym.experiments.data import load_world_file, make_logs, sidecar_path
from promogym.experiments.errors import CLIError
from promogym.experiments.paths import add_force, output_file

MAX_ROWS = 50_000_000  # as an experiment's logs.rows: beyond it a table no longer fits a machine's memory


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add the ``data`` subcommand to the CLI's subparsers."""
    p = sub.add_parser("data", help="generate interaction logs of the ground-truth market",
                       description="Simulate the market under a randomized logging policy and write one "
                                   "row per shown offer (parquet) plus a sidecar JSON.")
    p.add_argument("--rows", type=int, required=True, help="number of logged offers (>= 1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the logging run (default 0)")
    p.add_argument("--out", required=True, help="output parquet file; its folder must exist")
    p.add_argument("--world", default=None, help="YAML with `market:` and `logging_policy:` overrides")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_force(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``promogym data`` with the parsed ``args``; returns the exit status (CLIError for bad input)."""
    if not 1 <= args.rows <= MAX_ROWS:
        raise CLIError(f"--rows must be between 1 and {MAX_ROWS:,}, got {args.rows:,}")
    if args.seed < 0:
        raise CLIError(f"--seed must be >= 0, got {args.seed}")
    out = output_file(args.out, "--out", force=args.force)
    if out.suffix.lower() not in (".parquet", ".pq"):
        raise CLIError(f"--out must be a .parquet file (its sidecar is the .json beside it), got {args.out}")
    output_file(sidecar_path(out), "the sidecar of --out", force=args.force)
    try:
        load_world_file(args.world)  # every problem of the world file before any work
        meta = make_logs(args.rows, args.seed, out, args.world, progress=not args.no_progress and sys.stderr.isatty())
    except ValueError as exc:
        raise CLIError(str(exc)) from exc
    s = meta["summary"]
    print(f"wrote {out} ({s['rows']:,} rows, {s['days']} days, {s['customers']:,} customers, "
          f"{s['products']} products) and {sidecar_path(out)}")
    print(f"purchase rate {s['purchase_rate']:.2%} (true mean {s['mean_true_proba']:.2%}); "
          f"revenue {s['revenue']:,.0f}, profit {s['profit']:,.0f}, coupon cost {s['coupon_cost']:,.0f}")
    rates = ", ".join(f"{k} {v:.2%}" for k, v in s["purchase_rate_by_type"].items())
    print(f"purchase rate by customer type: {rates}")
    rates = ", ".join(f"{k} {v:.2%}" for k, v in s["purchase_rate_by_coupon"].items())
    print(f"purchase rate by coupon share: {rates}")
    return 0
