"""`promogym evaluate` and `promogym ab`: any policy on any market env and backend, scored in the world (an
imported shop's env, which has no world, on its model only).

Policies are named: a policy of the registry (``promogym.agents.registry``; the names each env family has
are listed under ``--policy``) or a training run folder (a learned agent, read with its saved normalization).
Policies that plan with a response model (``myopic``, ``best_static``) plan with the simulator given by
``--response`` wherever they are played.

``evaluate`` plays every policy on the same episode seeds (common random numbers) in the simulator and,
when the simulator is not the world, in the world too; one row per (policy, backend, episode) with the
reward components goes to a parquet file. ``ab`` plays two policies on paired episodes in the world and
reports the lift, a paired confidence interval, the p-value and the episodes needed for a given power.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import gymnasium as gym
import numpy as np

from promogym.agents.registry import check_policy, policy_help
from promogym.core.io import atomic_path, write_json
from promogym.envs.base import probe_config, world_config, world_free
from promogym.experiments.errors import CLIError
from promogym.experiments.evaluation import play, summary
from promogym.experiments.paths import (
    add_force,
    check_episodes,
    input_file,
    output_file,
    parse_overrides,
    resolve_response,
)
from promogym.experiments.stats import ab_test
from promogym.predictors.registry import check_spec


def _playable() -> list[str]:
    from promogym import envs

    return [*envs.MARKET_ENV_IDS, *(e for e in envs.ENV_IDS if e not in envs.MARKET_ENV_IDS and world_free(e))]


def _check_env(env_id: str) -> None:
    if env_id not in _playable():
        raise CLIError(f"unknown or unsupported env id {env_id!r}; choose one of {', '.join(_playable())} "
                       f"(HillstromTargeting-v0 is scored off-policy by `promogym hillstrom`)")


# ---------------------------------------------------------------------------------------- CLI
def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--env", required=True, help="a market env id, e.g. promogym/DynamicPricing-v1, or "
                                                "promogym/ShopPricing-v0 (with --env-set shop=DIR)")
    p.add_argument("--response", default=None, help="the simulator: world (default), bert:<dir>, gbdt:<file>; "
                                                       "ShopPricing-v0: the model fitted on the shop (clogit:<json>, "
                                                       "gbdt:<file>, bert:<dir>)")
    p.add_argument("--env-set", action="append", default=[], metavar="KEY=VALUE", help="env config override")
    p.add_argument("--seed", type=int, default=0, help="first episode seed (episodes use seed, seed+1, ...)")
    p.add_argument("--logs", default=None, help="logs parquet for uplift targeting (default: generated)")
    p.add_argument("--trust", action="store_true",
                   help="load run folders even without a valid manifest.json: SB3 model zips hold pickles, so this "
                        "runs code from the folder's files; only for run folders you trust")


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add the ``evaluate`` and ``ab`` subcommands to the CLI's subparsers."""
    p = sub.add_parser("evaluate", help="play policies on an env (simulator and world), one row per episode",
                       description=__doc__.split("\n\n")[1] if __doc__ else None)
    _common(p)
    p.add_argument("--policy", action="append", required=True, metavar="NAME|RUN_DIR",
                   help=f"repeatable; a run folder or a registered policy ({policy_help()})")
    p.add_argument("--episodes", type=int, default=100)
    p.add_argument("--out", default="episodes.parquet", help="the episode table (parquet)")
    add_force(p)
    p.set_defaults(func=run_evaluate)
    q = sub.add_parser("ab", help="A/B test of two policies on paired episodes in the world")
    _common(q)
    q.add_argument("--a", required=True, metavar="NAME|RUN_DIR", help="the control policy")
    q.add_argument("--b", required=True, metavar="NAME|RUN_DIR", help="the treatment policy")
    q.add_argument("--episodes", type=int, default=200)
    q.add_argument("--alpha", type=float, default=0.05)
    q.add_argument("--power", type=float, default=0.8, help="power for the episodes-needed estimate")
    q.add_argument("--out", default=None, help="also write the result as JSON here")
    add_force(q)
    q.set_defaults(func=run_ab)


def _validate(args: argparse.Namespace, policies: list[str]) -> dict[str, Any]:
    """Every problem of the command line, before any episode: env, counts, seeds, config, policies."""
    _check_env(args.env)
    check_episodes(args.episodes, args.seed, 1_000_000)
    if args.logs is not None:
        input_file(args.logs, "--logs")
    env_config = parse_overrides(args.env_set, "--env-set")
    args.response = resolve_response(args.env, args.response, env_config)
    try:
        if world_free(args.env):  # the shop's model is its only response: building the env checks it
            env = gym.make(args.env, config=probe_config(args.env, env_config, args.response))
        else:
            env = gym.make(args.env, config=world_config(env_config))
            if args.response != "world":
                check_spec(args.response, "conversion", name="--response", oracles=False)
        for spec in policies:
            check_policy(spec, args.env, env)
    except (ValueError, FileNotFoundError) as exc:
        raise CLIError(str(exc)) from exc
    return env_config


def run_evaluate(args: argparse.Namespace) -> int:
    """``promogym evaluate``: play each policy's episodes on the simulator and in the world, write the episode table and
    print its summary. Returns the exit status."""
    env_config = _validate(args, args.policy)
    out = output_file(args.out, "--out", force=args.force)
    try:
        table = play(args.env, env_config, args.response, args.policy, args.episodes, args.seed, args.logs,
                     trust=args.trust)
    except (ValueError, FileNotFoundError) as exc:
        raise CLIError(str(exc)) from exc
    with atomic_path(out) as tmp:
        table.to_parquet(tmp, index=False)
    print(summary(table).to_string(float_format=lambda x: f"{x:,.1f}"))
    print(f"wrote {out} ({len(table)} episodes)")
    return 0


def run_ab(args: argparse.Namespace) -> int:
    """``promogym ab``: an A/B test of two policies on paired world episodes: the lift, its paired confidence interval,
    the p-value and the episodes needed for ``--power``. Returns the exit status."""
    _check_env(args.env)
    if world_free(args.env):
        raise CLIError(f"`promogym ab` plays both arms in the world and {args.env} has none; compare policies on "
                       f"its model with `promogym evaluate`")
    env_config = _validate(args, [args.a, args.b])
    if not 0 < args.alpha < 1 or not 0 < args.power < 1:
        raise CLIError("--alpha and --power must be in (0, 1)")
    if args.episodes < 2:
        raise CLIError(f"--episodes must be >= 2 for a paired test, got {args.episodes}")
    out = output_file(args.out, "--out", force=args.force) if args.out else None

    def world_returns(spec: str) -> np.ndarray:
        table = play(args.env, env_config, args.response, [spec], args.episodes, args.seed, args.logs,
                     trust=args.trust)
        return table[table["backend"] == "world"].sort_values("seed")["return"].to_numpy()

    try:  # each arm on its own, so two policies of one name stay two arms; an A/A test plays once
        a = world_returns(args.a)
        b = a.copy() if args.b == args.a else world_returns(args.b)
    except (ValueError, FileNotFoundError) as exc:
        raise CLIError(str(exc)) from exc
    result = {"env": args.env, "a": args.a, "b": args.b, **ab_test(a, b, args.alpha, args.power)}
    lo, hi = result["lift_ci"]
    print(f"A {args.a}: {result['mean_a']:,.1f}   B {args.b}: {result['mean_b']:,.1f}   ({result['episodes']} paired "
          f"episodes in the world)")
    print(f"lift {result['lift']:+.2%} [{lo:+.2%}, {hi:+.2%}]  p = {result['p_value']:.3g}  "
          f"({'significant' if result['significant'] else 'not significant'} at {args.alpha})")
    print(f"episodes needed for {args.power:.0%} power at this effect: {result['episodes_needed']:,.0f}")
    if out is not None:
        write_json(out, json.loads(json.dumps(result, default=float)))
        print(f"wrote {out}")
    return 0
