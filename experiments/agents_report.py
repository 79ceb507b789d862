"""`promogym agents-report`: learned agents against baselines and the oracle, many seeds, in the world.

For each env: every algorithm is trained with several seeds (in a process pool), then every policy —
learned (best evaluation checkpoint) or not — plays the same evaluation episodes (common random
numbers) in the world. Per-seed mean returns are aggregated with mean, IQM and bootstrap CIs; a
markdown table and JSON go to the output folder.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pandas as pd

from promogym.core.io import write_json
from promogym.experiments.errors import CLIError
from promogym.experiments.paths import output_dir
from promogym.experiments.stats import normalized, summarize
from promogym.experiments.trials import run_trials

DEFAULT_ALGOS = {"promogym/DynamicPricing-v0": ("ppo",), "promogym/PricePromo-v0": ("ppo",),
                 "promogym/CouponAllocation-v0": ("maskable_ppo",)}


def _train_one(args: tuple[str, str, int, int, str]) -> dict[str, str]:
    from promogym.agents.train import TrainSpec, train

    env_id, algo, seed, steps, out = args
    # 20 evaluation episodes per check: the best checkpoint is chosen on less noise (seeds apart from the report's)
    train(TrainSpec(env_id, algo, seed, steps, eval_freq=max(2000, steps // 20), eval_episodes=20,
                    checkpoint_freq=max(5000, steps // 5)), Path(out))
    return {"dir": out}


def baselines_for(env_id: str, env: gym.Env[Any, Any], logs: pd.DataFrame | None) -> dict[str, Any]:
    """Every baseline of the env (the best static price searched on ``env``), planning in ``env``."""
    from promogym.experiments.evaluate_cmd import COUPON_BASELINES, PRICING_BASELINES, PolicyFactory

    factory = PolicyFactory(env_id, env, logs)
    if env_id.endswith("CouponAllocation-v0"):
        names = [n for n in COUPON_BASELINES if n != "uplift" or logs is not None]
    else:
        names = list(PRICING_BASELINES)
    return {n: factory.make(n, env) for n in names}


def evaluate_env(env_id: str, runs: dict[str, list[Path]], episodes: int, logs: pd.DataFrame | None
                 ) -> dict[str, Any]:
    from promogym.agents.base import episode_table
    from promogym.agents.train import LearnedPolicy

    env = gym.make(env_id)
    seeds = list(range(1_000_000, 1_000_000 + episodes))
    tables: dict[str, np.ndarray] = {}
    timing: dict[str, float] = {}
    policies = baselines_for(env_id, env, logs)
    for name, policy in policies.items():
        t0 = time.perf_counter()
        tables[name] = episode_table(env, policy, seeds, name)["return"].to_numpy()[None, :]
        timing[name] = time.perf_counter() - t0
    for algo, dirs in runs.items():
        per_seed = []
        for d in dirs:
            per_seed.append(episode_table(env, LearnedPolicy(d, env), seeds, algo)["return"].to_numpy())
        tables[algo] = np.stack(per_seed)
    result: dict[str, Any] = {"env_id": env_id, "episodes": episodes, "policies": {}}
    for name, x in tables.items():
        result["policies"][name] = {**summarize(x), "learned": name in runs}
    ref_static = "best_static" if "best_static" in tables else ("uplift" if "uplift" in tables else max(
        (n for n in tables if n not in runs), key=lambda n: tables[n].mean()))
    result["best_static"] = ref_static
    oracle = result["policies"].get("oracle", {}).get("mean")
    base = result["policies"][ref_static]["mean"]
    for entry in result["policies"].values():
        entry["vs_best_static"] = entry["mean"] / base - 1.0
        if oracle is not None:
            entry["share_of_oracle"] = entry["mean"] / oracle
            entry["normalized"] = normalized(entry["mean"], base, oracle)
    result["eval_seconds"] = timing
    return result


def _pct(x: float | None) -> str:
    return "–" if x is None or not np.isfinite(x) else f"{x:.1%}"


def _num(x: float | None) -> str:
    return "–" if x is None or not np.isfinite(x) else f"{x:.2f}"


def markdown(result: dict[str, Any]) -> str:
    lines = [f"### {result['env_id']} ({result['episodes']} evaluation episodes in the world; "
             f"reference: {result['best_static']})", "",
             "| policy | seeds | mean return | 95% CI | IQM | vs reference | share of oracle | normalized |",
             "|---|---|---|---|---|---|---|---|"]
    rows = sorted(result["policies"].items(), key=lambda kv: -kv[1]["mean"])
    for name, e in rows:
        lo, hi = e["ci95"]
        lines.append(f"| {name}{' (learned)' if e['learned'] else ''} | {e['seeds']} | {e['mean']:,.0f} | "
                     f"[{lo:,.0f}, {hi:,.0f}] | {e['iqm']:,.0f} | {e['vs_best_static']:+.1%} | "
                     f"{_pct(e.get('share_of_oracle'))} | {_num(e.get('normalized'))} |")
    return "\n".join(lines)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("agents-report", help="train agents over seeds and score them against baselines")
    p.add_argument("--env", action="append", default=None, help="env id (repeatable; default: all three)")
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--timesteps", type=int, default=100_000)
    p.add_argument("--episodes", type=int, default=100)
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--logs", default=None, help="logs parquet for uplift targeting (default: generated)")
    p.add_argument("--out", default="results/agents")
    p.add_argument("--runs", default="runs/agents", help="folder for the training runs (reused when complete)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from promogym.agents.train import check_compatible

    env_ids = args.env or list(DEFAULT_ALGOS)
    for env_id in env_ids:
        for algo in DEFAULT_ALGOS.get(env_id, ()):
            try:
                check_compatible(env_id, algo)
            except ValueError as exc:
                raise CLIError(str(exc)) from exc
    if args.seeds < 1 or args.episodes < 1 or args.timesteps < 1:
        raise CLIError("--seeds, --episodes and --timesteps must be >= 1")
    out = output_dir(args.out)
    runs_root = Path(args.runs)
    jobs = [(e, a, s, args.timesteps, str(runs_root / e.split("/")[1] / f"{a}_s{s}"))
            for e in env_ids for a in DEFAULT_ALGOS[e] for s in range(args.seeds)]
    todo = [j for j in jobs if not (Path(j[4]) / "metadata.json").is_file()]
    start = time.perf_counter()
    for _, done in run_trials(_train_one, todo, "local", args.jobs):
        print(f"trained {done['dir']}")
    train_s = time.perf_counter() - start
    logs = None
    if any(e.endswith("CouponAllocation-v0") for e in env_ids):
        from promogym.envs.market import Market
        from promogym.envs.market.logs import generate_logs

        logs = pd.read_parquet(args.logs) if args.logs else generate_logs(Market(), 100_000, seed=11)
    for env_id in env_ids:
        runs = {a: [Path(j[4]) for j in jobs if j[0] == env_id and j[1] == a] for a in DEFAULT_ALGOS[env_id]}
        res = evaluate_env(env_id, runs, args.episodes, logs)
        res["train_seconds_all_envs"] = train_s
        res["timesteps"] = args.timesteps
        name = env_id.split("/")[1]
        write_json(out / f"{name}.json", res)
        print(markdown(res) + "\n")
    # the report gathers every env evaluated into this folder, in the order of DEFAULT_ALGOS
    parts = [markdown(json.loads((out / f"{e.split('/')[1]}.json").read_text()))
             for e in DEFAULT_ALGOS if (out / f"{e.split('/')[1]}.json").is_file()]
    (out / "report.md").write_text("\n\n".join(parts) + "\n")
    print(f"wrote {out}/report.md and JSON per env ({json.dumps({'train_seconds': round(train_s)})})")
    return 0
