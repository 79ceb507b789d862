"""`promogym train`: train a Stable-Baselines3 agent on a promogym environment."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from promogym.experiments.errors import CLIError
from promogym.experiments.paths import add_force, parse_overrides


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train an RL agent (Stable-Baselines3) on an environment",
                       description="Hyperparameters come from agents/hyperparams.yml (keyed by env id); a run "
                                   "folder holds the resolved config, model, normalization statistics, "
                                   "evaluations, checkpoints and metadata.")
    p.add_argument("--env", required=True, help="env id, e.g. promogym/DynamicPricing-v0")
    p.add_argument("--algo", required=True, help="ppo | a2c | sac | td3 | dqn | maskable_ppo | recurrent_ppo")
    p.add_argument("--response", default=None,
                   help="market envs: world (default), bert:<checkpoint dir>, gbdt:<file>; HillstromTargeting-v0: "
                        "cells (default), bert:<dir>, gbdt:<file>, logistic:<file>")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--timesteps", type=int, default=100_000)
    p.add_argument("--out", default=None, help="run folder (default runs/train/<env>/<algo>_s<seed>)")
    add_force(p)
    p.add_argument("--env-set", action="append", default=[], metavar="KEY=VALUE", help="env config override")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="hyperparameter override")
    p.add_argument("--eval-freq", type=int, default=5000)
    p.add_argument("--checkpoint-freq", type=int, default=10000)
    p.add_argument("--resume", action="store_true", help="continue from the run folder's latest checkpoint")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from promogym.agents.train import TrainSpec, check_compatible, train

    if args.timesteps < 1:
        raise CLIError(f"--timesteps must be >= 1, got {args.timesteps}")
    env_config = parse_overrides(args.env_set)
    try:
        check_compatible(args.env, args.algo, env_config)
    except ValueError as exc:
        raise CLIError(str(exc)) from exc
    out = Path(args.out) if args.out else Path("runs/train") / args.env.split("/")[-1] / f"{args.algo}_s{args.seed}"
    if out.is_dir() and any(out.iterdir()) and not (args.resume or args.force):
        raise CLIError(f"run folder {out} exists and is not empty; pass --resume to continue that run or --force "
                       f"to train into it anew")
    from promogym import envs

    response = args.response or ("world" if args.env in envs.MARKET_ENV_IDS else "cells")
    spec = TrainSpec(env_id=args.env, algo=args.algo, seed=args.seed, timesteps=args.timesteps,
                     response=response, env_config=env_config, eval_freq=args.eval_freq,
                     checkpoint_freq=args.checkpoint_freq, hyperparams=parse_overrides(args.set))
    try:
        meta = train(spec, out, resume=args.resume, progress=not args.no_progress and sys.stderr.isatty())
    except (ValueError, FileNotFoundError, TypeError) as exc:
        raise CLIError(str(exc)) from exc
    print(f"wrote {out} ({args.algo} on {args.env}, {args.timesteps:,} steps, seed {args.seed}, "
          f"{meta['wall_seconds']:.0f} s)")
    return 0
