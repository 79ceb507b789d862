"""`promogym data`: generate interaction logs of the ground-truth market."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from tqdm.auto import tqdm

from promogym.core.io import atomic_path, file_sha256, package_versions, write_json
from promogym.envs.market import Market, MarketConfig
from promogym.envs.market.logs import LoggingPolicy, generate_logs
from promogym.experiments.errors import CLIError
from promogym.experiments.paths import add_force, input_file, output_file

WORLD_FILE_KEYS = ("market", "logging_policy")


def load_world_file(path: str | Path | None) -> tuple[MarketConfig, LoggingPolicy]:
    """Market config and logging policy from a YAML file with `market:` and `logging_policy:` maps."""
    if path is None:
        return MarketConfig(), LoggingPolicy()
    raw = yaml.safe_load(input_file(path, "world config").read_text()) or {}
    if not isinstance(raw, dict):
        raise CLIError(f"world config {path} must be a mapping with keys {', '.join(WORLD_FILE_KEYS)}")
    unknown = sorted(set(raw) - set(WORLD_FILE_KEYS))
    if unknown:
        raise CLIError(f"world config {path}: unknown key(s) {', '.join(unknown)}; "
                       f"known: {', '.join(WORLD_FILE_KEYS)}")
    try:
        return MarketConfig.from_dict(raw.get("market")), LoggingPolicy.from_dict(raw.get("logging_policy"))
    except ValueError as exc:
        raise CLIError(f"world config {path}: {exc}") from exc


def sidecar_path(out: Path) -> Path:
    return out.with_suffix(".json")


def summarize(df: pd.DataFrame) -> dict[str, Any]:
    by_type = df.groupby("true_customer_type", observed=True)["purchased"].mean()
    by_coupon = df.groupby("coupon")["purchased"].mean()
    return {
        "rows": len(df),
        "days": int(df["day"].max() + 1),
        "visits": int(df["visit_id"].nunique()),
        "customers": int(df["user_id"].nunique()),
        "products": int(df["item_id"].nunique()),
        "new_product_rows": int(df["is_new_product"].sum()),
        "purchase_rate": float(df["purchased"].mean()),
        "mean_true_proba": float(df["true_proba"].mean()),
        "revenue": float(df["revenue"].sum()),
        "profit": float(df["profit"].sum()),
        "coupon_cost": float(df["coupon_cost"].sum()),
        "purchase_rate_by_type": {str(k): float(v) for k, v in by_type.items()},
        "purchase_rate_by_coupon": {f"{k:.2f}": float(v) for k, v in by_coupon.items()},
    }


def write_logs(df: pd.DataFrame, out: Path, meta: dict[str, Any]) -> dict[str, Any]:
    """Parquet plus a sidecar JSON, each written atomically; returns the sidecar's content."""
    with atomic_path(out) as tmp:
        df.to_parquet(tmp, index=False, compression="zstd")
    meta = {**meta, "sha256": file_sha256(out), "summary": summarize(df)}
    write_json(sidecar_path(out), meta)
    return meta


def make_logs(rows: int, seed: int, out: Path, world_file: str | None = None,
              progress: bool = True) -> dict[str, Any]:
    market_cfg, policy = load_world_file(world_file)
    market = Market(market_cfg)
    with tqdm(total=rows, unit="row", disable=not progress, desc="logging") as bar:

        def advance(k: int) -> None:
            bar.update(min(k, rows - bar.n))

        df = generate_logs(market, rows, seed, policy, progress=advance)
    meta = {"kind": "promogym-logs", "rows": rows, "seed": seed, "world": market_cfg.to_dict(),
            "logging_policy": policy.to_dict(), "versions": package_versions()}
    return write_logs(df, out, meta)


def add_parser(sub: argparse._SubParsersAction) -> None:
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
    if args.rows < 1:
        raise CLIError(f"--rows must be >= 1, got {args.rows}")
    if args.seed < 0:
        raise CLIError(f"--seed must be >= 0, got {args.seed}")
    out = output_file(args.out, "--out", force=args.force)
    meta = make_logs(args.rows, args.seed, out, args.world, progress=not args.no_progress and sys.stderr.isatty())
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
