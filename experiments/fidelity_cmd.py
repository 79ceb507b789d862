"""`promogym fidelity`: is a learned response model right where policies act?

Plays policies in an env whose response backend is the model and compares, on every step's offers, the
model's expected profit, units and purchase rate with the world's on the same states and offers (bias with
a bootstrap 95% CI over episodes), by customer type, price band and coupon level; with the model's training
logs, the share of the offers in cells the logs barely cover. Writes fidelity.json, fidelity.md and
fidelity.png.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import gymnasium as gym

from promogym.agents.registry import check_policy, policy_help
from promogym.envs.base import world_config
from promogym.experiments.errors import CLIError
from promogym.experiments.paths import (
    add_force,
    check_episodes,
    check_output_dir,
    input_file,
    output_dir,
    parse_overrides,
)
from promogym.predictors.registry import SPEC_HELP, check_spec

MAX_EPISODES = 10_000


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add the ``fidelity`` subcommand to the CLI's subparsers."""
    p = sub.add_parser("fidelity", help="compare a learned response model with the world where policies act",
                       description=__doc__.split("\n\n")[1] if __doc__ else None)
    p.add_argument("--model", required=True, metavar="SPEC",
                   help=f"the conversion model played as the env's response backend: {SPEC_HELP.split(' | truth')[0]}")
    from promogym.envs import MARKET_ENV_IDS

    p.add_argument("--env", required=True, help=f"a market env id: {', '.join(MARKET_ENV_IDS)}")
    p.add_argument("--policy", action="append", default=None, metavar="NAME|RUN_DIR",
                   help="repeatable (default: list price, static prices across the env's band and the best one "
                        "searched on the model, random; coupons: each uniform coupon level, random); "
                        + policy_help(("pricing", "coupons", "recommendation")))
    p.add_argument("--episodes", type=int, default=3, help="episodes per policy (default 3)")
    p.add_argument("--seed", type=int, default=0, help="first episode seed (episodes use seed, seed+1, ...)")
    p.add_argument("--data", default=None,
                   help="the logs the model was fitted on, for coverage (default: the one a BERT checkpoint records)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="env config override (repeatable)")
    p.add_argument("--out", default=None, help="output folder (default runs/fidelity/<env>)")
    add_force(p)
    p.add_argument("--trust", action="store_true",
                   help="load run folders even without a valid manifest.json (their pickles then run code)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``promogym fidelity`` with the parsed ``args``; returns the exit status (CLIError for bad input)."""
    from promogym import envs
    from promogym.envs.families import short_name
    from promogym.experiments.fidelity import measure_fidelity, policy_table, training_logs_of, write_fidelity
    from promogym.experiments.pipeline import key_of

    if args.env not in envs.MARKET_ENV_IDS:
        raise CLIError(f"unknown or unsupported env id {args.env!r}; choose one of {', '.join(envs.MARKET_ENV_IDS)}")
    check_episodes(args.episodes, args.seed, MAX_EPISODES)
    if args.model == "world":
        raise CLIError("--model world is the ground truth itself; name a learned model to compare with it "
                       f"({SPEC_HELP.split(' | truth')[0]})")
    env_config = parse_overrides(args.set, "--set")
    if "response" in env_config:
        raise CLIError("--set response=...: the response backend is --model")
    try:
        parsed = check_spec(args.model, "conversion", name="--model", oracles=False)
        world_env = gym.make(args.env, config=world_config(env_config))
        for spec in args.policy or ():
            check_policy(spec, args.env, world_env)
    except ValueError as exc:
        raise CLIError(str(exc)) from exc
    if parsed.path is not None and not Path(parsed.path).exists():
        raise CLIError(f"--model {args.model}: {parsed.path} not found")
    if args.data is not None:
        logs: str | None = str(input_file(args.data, "--data"))
        note = None
    else:
        logs = training_logs_of(args.model)
        note = None if logs else "no logs known (pass --data); coverage not measured"
        if logs and not Path(logs).is_file():
            note, logs = f"the model's training logs {logs} are not there (pass --data); coverage not measured", None
    model = str(Path(parsed.path).resolve()) if parsed.path else args.model
    settings = {"env": args.env, "model": model, "policies": args.policy, "episodes": args.episodes,
                "seed": args.seed, "config": env_config, "data": str(Path(logs).resolve()) if logs else None}
    holds = {"kind": "fidelity", "name": key_of("fidelity", settings)}
    out_arg = args.out or f"runs/fidelity/{short_name(args.env)}"
    check_output_dir(out_arg, "--out", force=args.force, holds=holds)
    try:
        result = measure_fidelity(args.env, args.model, args.policy, args.episodes, args.seed, env_config, logs,
                                  trust=args.trust, progress=not args.no_progress)
    except (ValueError, FileNotFoundError) as exc:
        raise CLIError(str(exc)) from exc
    if note:
        result["coverage"]["skipped"] = note
    out = output_dir(out_arg, "--out", force=args.force, holds=holds)
    files = write_fidelity(result, out)
    print(policy_table(result))
    cov = result["coverage"]
    if "skipped" in cov:
        print(f"coverage: {cov['skipped']}")
    elif cov["thin_share"] is not None:
        print(f"coverage: {cov['thin_share']:.1%} of the offers fall in cells with fewer than {cov['min_rows']} "
              f"logged rows")
    print(f"wrote {', '.join(str(f) for f in files)}")
    return 0
