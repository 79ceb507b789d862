"""`promogym export`: a policy's decisions over a season as a tidy CSV or parquet table
(:mod:`promogym.experiments.export`).

Plays RUN_OR_POLICY (a training run folder or a registered policy name, as `promogym evaluate` takes) for
--episodes episodes from --seed and writes the decisions of the season from --seed: on the pricing envs one row
per product and day (price, price / list, PricePromo's coupon share per segment, expected units and profit) with
an uncertainty band — the mean and 5%-95% range of the product-day's expected profit across the --episodes
simulated seasons (the spread of outcomes across seasons, not a confidence interval; the response model's own
error is not in it) — and on the coupon envs one row per customer decision (coupon level and share, expected
profit, purchase probability). A sidecar <file>.json records the env, policy, seeds, commit and columns.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from promogym.experiments.errors import CLIError
from promogym.experiments.paths import add_force, check_episodes, input_file, output_file, parse_overrides

MAX_EPISODES = 100_000


def add_parser(sub: argparse._SubParsersAction) -> None:
    """The ``export`` sub-command."""
    from promogym.agents.registry import policy_help
    from promogym.envs import ENV_IDS

    p = sub.add_parser("export", help="a policy's decisions over a season as a tidy CSV/parquet table",
                       description=__doc__.split("\n\n", 1)[1] if __doc__ else None)
    p.add_argument("policy", metavar="RUN_OR_POLICY",
                   help=f"a training run folder or a registered policy ({policy_help()})")
    p.add_argument("--env", required=True, help=f"env id: {', '.join(ENV_IDS)}")
    p.add_argument("--out", required=True, help="the table: FILE.csv or FILE.parquet (sidecar FILE.csv.json beside it)")
    p.add_argument("--episodes", type=int, default=20,
                   help="simulated seasons for the uncertainty band (default 20): the band is the 5%%-95%% range "
                        "and mean of each product-day's expected profit across them")
    p.add_argument("--seed", type=int, default=0, help="the exported season's seed; the band's episodes use seed, "
                                                       "seed+1, ... (default 0)")
    p.add_argument("--response", default=None,
                   help="the response backend played and planned with: world (default on the market envs), "
                        "bert:<dir>, gbdt:<file>; HillstromTargeting: cells (default) or a model spec")
    p.add_argument("--config", default=None, metavar="YAML", help="a YAML mapping of env config overrides")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="env config override over --config (repeatable)")
    p.add_argument("--logs", default=None, help="logs parquet for uplift targeting (default: generated)")
    p.add_argument("--trust", action="store_true",
                   help="load a run folder even without a valid manifest.json (its pickles then run code)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_force(p)
    p.set_defaults(func=run)


def _env_config(args: argparse.Namespace) -> dict[str, Any]:
    """--config (a YAML mapping), then --set, then --response."""
    import yaml

    cfg: dict[str, Any] = {}
    if args.config is not None:
        path = input_file(args.config, "--config")
        try:
            loaded = yaml.safe_load(path.read_text())
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            raise CLIError(f"--config {path}: not valid YAML ({exc})") from exc
        if loaded is not None and not isinstance(loaded, dict):
            raise CLIError(f"--config {path}: expected a mapping of env config keys, got {type(loaded).__name__}")
        cfg.update(loaded or {})
    cfg.update(parse_overrides(args.set, "--set"))
    if args.response is not None:
        if "response" in cfg and cfg["response"] != args.response:
            raise CLIError(f"--response {args.response} and the config's response {cfg['response']!r} disagree")
        cfg["response"] = args.response
    return cfg


def _check_out(out_arg: str, force: bool) -> Path:
    """The table's path: CSV or parquet, its folder writable; an existing table or sidecar is replaced only with
    --force, and then only when this command wrote it."""
    from promogym.experiments.export import output_format, sidecar_of, written_by_export

    out = Path(out_arg)
    try:
        output_format(out)
    except ValueError as exc:
        raise CLIError(f"--out: {exc}") from exc
    side = sidecar_of(out)
    existing = [p for p in (out, side) if p.exists() or p.is_symlink()]
    if existing and force and not written_by_export(out):
        raise CLIError(f"--out {existing[0]} exists and was not written by promogym export (or changed since); "
                       "choose another --out")
    output_file(out, "--out", force=force)
    output_file(side, "the sidecar of --out", force=force)
    return out


def run(args: argparse.Namespace) -> int:
    """Validate everything, play the policy, write the table and its sidecar."""
    import gymnasium as gym

    from promogym import envs
    from promogym.agents.registry import check_policy
    from promogym.envs.base import world_config
    from promogym.experiments.export import export_decisions, write_export

    if args.env not in envs.ENV_IDS:
        raise CLIError(f"unknown env id {args.env!r}; choose one of {', '.join(envs.ENV_IDS)}")
    check_episodes(args.episodes, args.seed, MAX_EPISODES)
    if args.logs is not None:
        input_file(args.logs, "--logs")
    out = _check_out(args.out, args.force)
    cfg = _env_config(args)
    market = args.env in envs.MARKET_ENV_IDS
    if market:
        cfg.setdefault("response", "world")
    from promogym.agents.registry import is_run_folder, policies_for

    if not is_run_folder(args.policy) and not policies_for(args.env):
        raise CLIError(f"{args.env} has no named policies: RUN_OR_POLICY must be a training run folder "
                       f"(`promogym train --env {args.env} ...`), got {args.policy!r}")
    try:
        if market and cfg["response"] != "world":
            from promogym.predictors.registry import check_spec

            check_spec(cfg["response"], "conversion", name="--response", oracles=False)
        env = gym.make(args.env, config=world_config(cfg) if market else cfg)
        # a run folder of another env (or, on the market envs, of other observations) is refused here
        check_policy(args.policy, args.env, env if market else None)
    except (ValueError, TypeError) as exc:
        raise CLIError(str(exc)) from exc
    try:
        result = export_decisions(args.env, args.policy, cfg, args.episodes, args.seed, args.logs, trust=args.trust,
                                  progress=not args.no_progress)
    except (ValueError, FileNotFoundError) as exc:
        raise CLIError(str(exc)) from exc
    side = write_export(result, out)
    ret = result.meta["season_return"]
    print(f"{result.meta['policy_name']} on {args.env}: {len(result.table):,} decisions of the season from seed "
          f"{args.seed}; return over {args.episodes} episode(s) {ret['mean']:,.1f} (5%-95%: {ret['p05']:,.1f} to "
          f"{ret['p95']:,.1f})")
    print(f"wrote {out} and {side}")
    return 0
