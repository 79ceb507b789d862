"""`promogym train`: train a Stable-Baselines3 agent on a promogym environment."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from promogym.experiments.errors import CLIError, integer_arg
from promogym.experiments.paths import add_force, parse_overrides, resolve_response, resumable_dir

TRUST_HELP = ("read checkpoints that no valid manifest.json lists: SB3 model zips hold pickles, so this runs "
              "code from the folder's files; only for run folders you trust")


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add the ``train`` subcommand to the CLI's subparsers."""
    p = sub.add_parser("train", help="train an RL agent (Stable-Baselines3) on an environment",
                       description="Hyperparameters come from agents/hyperparams.yml (keyed by env id); a run "
                                   "folder holds the resolved config, model, normalization statistics (JSON), "
                                   "evaluations, checkpoints, metadata and a manifest (sha256 of every file).")
    p.add_argument("--env", required=True, help="env id, e.g. promogym/DynamicPricing-v1")
    p.add_argument("--algo", required=True, help="ppo | a2c | sac | td3 | dqn | maskable_ppo | recurrent_ppo")
    p.add_argument("--response", default=None,
                   help="market envs: world (default), bert:<checkpoint dir>, gbdt:<file>; HillstromTargeting-v0: "
                        "cells (default), bert:<dir>, gbdt:<file>, logistic:<file>; ShopPricing-v0 (required): the "
                        "model fitted on the shop, clogit:<json>, gbdt:<file>, bert:<dir>")
    # integers are parsed in run(): a bad value is a one-line error (exit 2), not argparse's usage dump
    p.add_argument("--seed", default="0", help="training seed (integer >= 0)")
    p.add_argument("--timesteps", default="100000", help="training steps (integer >= 1)")
    p.add_argument("--out", default=None, help="run folder (default runs/train/<env>/<algo>_s<seed>)")
    add_force(p)
    p.add_argument("--env-set", action="append", default=[], metavar="KEY=VALUE", help="env config override")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="hyperparameter override (checked against the algorithm's constructor before training)")
    p.add_argument("--eval-freq", default="5000", help="steps between evaluations (integer >= 1)")
    p.add_argument("--checkpoint-freq", default="10000", help="steps between checkpoints (integer >= 1)")
    p.add_argument("--resume", action="store_true",
                   help="continue from the run folder's latest intact checkpoint its manifest lists")
    p.add_argument("--trust", action="store_true", help=f"with --resume: {TRUST_HELP}")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``promogym train`` with the parsed ``args``; returns the exit status (CLIError for bad input)."""
    from promogym.agents.train import TrainSpec, check_compatible, check_hyperparams, resolved_hyperparams, train

    seed = integer_arg(args.seed, "--seed", 0)
    timesteps = integer_arg(args.timesteps, "--timesteps", 1)
    eval_freq = integer_arg(args.eval_freq, "--eval-freq", 1)
    checkpoint_freq = integer_arg(args.checkpoint_freq, "--checkpoint-freq", 1)
    if args.trust and not args.resume:
        raise CLIError("--trust only applies with --resume (it lets resume read checkpoints no manifest lists)")
    env_config = parse_overrides(args.env_set, "--env-set")
    overrides = parse_overrides(args.set)
    response = resolve_response(args.env, args.response, env_config)
    try:
        check_compatible(args.env, args.algo, {**env_config, "response": response})
        check_hyperparams(args.algo, resolved_hyperparams(args.env, args.algo, overrides), args.env,
                          {**env_config, "response": response})
    except (ValueError, TypeError, FileNotFoundError) as exc:
        raise CLIError(str(exc)) from exc
    out = resumable_dir(args.out or Path("runs/train") / args.env.split("/")[-1] / f"{args.algo}_s{seed}",
                        "run", resume=args.resume, force=args.force, again="train into it anew")
    try:
        spec = TrainSpec(env_id=args.env, algo=args.algo, seed=seed, timesteps=timesteps, response=response,
                         env_config=env_config, eval_freq=eval_freq, checkpoint_freq=checkpoint_freq,
                         hyperparams=overrides)
        meta = train(spec, out, resume=args.resume, progress=not args.no_progress and sys.stderr.isatty(),
                     trust=args.trust)
    except (ValueError, FileNotFoundError, TypeError) as exc:
        raise CLIError(str(exc)) from exc
    print(f"wrote {out} ({args.algo} on {args.env}, {timesteps:,} steps, seed {seed}, "
          f"{meta['wall_seconds']:.0f} s)")
    return 0
