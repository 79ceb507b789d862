"""`promogym agents-report`: learned agents against baselines and the oracle
(:mod:`promogym.experiments.agents_report`)."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from promogym.experiments.agents_report import DEFAULT_ENVS, agents_config, write_agents_report
from promogym.experiments.agents_report import __doc__ as AGENTS_DOC
from promogym.experiments.errors import CLIError
from promogym.experiments.experiment import Experiment
from promogym.experiments.paths import add_force, input_file, run_and_report_dirs, run_marker


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add the ``agents-report`` subcommand to the CLI's subparsers."""
    p = sub.add_parser("agents-report", help="train agents over seeds and score them against baselines",
                       description=AGENTS_DOC.split("\n\n")[1] if AGENTS_DOC else None)
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
    """Run ``promogym agents-report`` with the parsed ``args``; returns the exit status (CLIError for bad input)."""
    env_ids = args.env or list(DEFAULT_ENVS)
    if args.seeds < 1 or args.episodes < 2 or args.timesteps < 1 or args.jobs < 1:
        raise CLIError("--seeds, --timesteps and --jobs must be >= 1, --episodes >= 2")
    if args.logs is not None:
        input_file(args.logs, "--logs")
    try:
        cfg = agents_config(env_ids, args.seeds, args.timesteps, args.episodes, args.jobs, args.logs)
    except ValueError as exc:
        raise CLIError(str(exc)) from exc
    runs, out = run_and_report_dirs(args.runs, "--runs", args.out or Path(args.runs) / "report", "--out", args.force,
                                    run_marker("experiment", cfg.name))
    start = time.perf_counter()
    try:
        Experiment(cfg, runs, progress=False).run(report_out=None)
    except (ValueError, FileNotFoundError) as exc:
        raise CLIError(str(exc)) from exc
    seconds = time.perf_counter() - start
    print(write_agents_report(runs, out, env_ids, args.timesteps))
    print(f"wrote {out}/report.md and JSON per env ({json.dumps({'seconds': round(seconds)})}; run folder {runs})")
    return 0
