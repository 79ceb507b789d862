"""`promogym agents-report`: learned agents against baselines and the oracle, many seeds, in the world.

An experiment of the pipeline engine with no simulator: the logs stage (the uplift baseline's training
data), every algorithm of each env family's ``default_algos`` trained on the world with several seeds, then
every policy — learned (best evaluation checkpoint) or not — on the same evaluation episodes (common random
numbers) in the world, aggregated with mean, IQM and stratified bootstrap CIs against the reference
(:func:`promogym.agents.registry.reference_policy`). The run folder is resumable like any experiment; a
markdown table per env and its JSON go to the report folder.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import numpy as np

from promogym.core.io import write_json
from promogym.envs.families import family_of, short_name
from promogym.experiments.errors import CLIError
from promogym.experiments.experiment import Experiment, ExperimentConfig
from promogym.experiments.paths import add_force, output_dir, report_marker, run_marker

DEFAULT_ENVS = ("promogym/DynamicPricing-v0", "promogym/PricePromo-v0", "promogym/CouponAllocation-v0")


def agents_config(env_ids: list[str], seeds: int, timesteps: int, episodes: int, jobs: int,
                  logs: str | None = None) -> ExperimentConfig:
    """The experiment behind the report: world-trained agents, world-scored policies, no predictor."""
    return ExperimentConfig.from_dict({
        "name": "agents", "description": "learned agents against baselines and the oracle, in the world",
        # the uplift baseline learns from these logs (100,000 rows of the default world, seed 11)
        "logs": {"rows": 100_000, "seed": 11, "path": logs},
        "envs": {e: {"algos": list(family_of(e).default_algos), "timesteps": timesteps} for e in env_ids},
        # 20 evaluation episodes per check: the best checkpoint is chosen on less noise (seeds apart from the
        # report's)
        "train": {"seeds": seeds, "simulators": ["world"], "eval_episodes": 20,
                  "eval_freq": max(2000, timesteps // 20)},
        "evaluate": {"episodes": episodes, "seed": 1_000_000, "trace_episodes": 0, "sim_planners": False},
        "execution": {"backend": "local", "jobs": jobs}})


def _pct(x: float | None) -> str:
    return "–" if x is None or not np.isfinite(x) else f"{x:.1%}"


def _num(x: float | None) -> str:
    return "–" if x is None or not np.isfinite(x) else f"{x:.2f}"


def markdown(env_id: str, stats: dict[str, Any]) -> str:
    lines = [f"### {env_id} ({stats['episodes']} evaluation episodes in the world; reference: {stats['reference']})",
             "", "| policy | seeds | mean return | 95% CI | IQM | vs reference | share of oracle | normalized |",
             "|---|---|---|---|---|---|---|---|"]
    for name, e in sorted(stats["policies"].items(), key=lambda kv: -kv[1]["mean"]):
        lo, hi = e["ci95"]
        label = name.split("@")[0] + (" (learned)" if e["learned"] else "")
        lines.append(f"| {label} | {e['seeds']} | {e['mean']:,.0f} | [{lo:,.0f}, {hi:,.0f}] | {e['iqm']:,.0f} | "
                     f"{e['vs_reference']:+.1%} | {_pct(e.get('share_of_oracle'))} | {_num(e.get('normalized'))} |")
    return "\n".join(lines)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("agents-report", help="train agents over seeds and score them against baselines",
                       description=__doc__.split("\n\n")[1] if __doc__ else None)
    p.add_argument("--env", action="append", default=None,
                   help=f"env id (repeatable; default: {', '.join(DEFAULT_ENVS)})")
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--timesteps", type=int, default=100_000)
    p.add_argument("--episodes", type=int, default=100)
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--logs", default=None, help="logs parquet for uplift targeting (default: generated)")
    p.add_argument("--out", default=None, help="report folder (default <run folder>/report)")
    add_force(p)
    p.add_argument("--runs", default="runs/agents", help="the run folder (finished stages and trials are reused)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from promogym.experiments.report import env_statistics, load_run

    env_ids = args.env or list(DEFAULT_ENVS)
    if args.seeds < 1 or args.episodes < 2 or args.timesteps < 1:
        raise CLIError("--seeds and --timesteps must be >= 1, --episodes >= 2")
    try:
        cfg = agents_config(env_ids, args.seeds, args.timesteps, args.episodes, args.jobs, args.logs)
    except ValueError as exc:
        raise CLIError(str(exc)) from exc
    runs = output_dir(args.runs, "--runs", force=args.force, holds=run_marker("experiment", cfg.name))
    out = output_dir(args.out or runs / "report", "--out", force=args.force, holds=report_marker(runs))
    start = time.perf_counter()
    try:
        Experiment(cfg, runs, progress=False).run(report_out=None)
    except (ValueError, FileNotFoundError) as exc:
        raise CLIError(str(exc)) from exc
    seconds = time.perf_counter() - start
    episodes = load_run(runs)["episodes"]
    for env_id in env_ids:
        stats = env_statistics(episodes[episodes["env_id"] == env_id])
        write_json(out / f"{short_name(env_id)}.json", {"env_id": env_id, "timesteps": args.timesteps, **stats})
        print(markdown(env_id, stats) + "\n")
    # the report gathers every env evaluated into this folder
    parts = [markdown(e, json.loads((out / f"{short_name(e)}.json").read_text()))
             for e in DEFAULT_ENVS if (out / f"{short_name(e)}.json").is_file()]
    (out / "report.md").write_text("\n\n".join(parts) + "\n")
    print(f"wrote {out}/report.md and JSON per env ({json.dumps({'seconds': round(seconds)})}; run folder {runs})")
    return 0


__all__ = ["agents_config", "markdown"]
