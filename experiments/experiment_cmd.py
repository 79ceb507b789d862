"""`promogym experiment <config.yml>`: an experiment config end to end
(:mod:`promogym.experiments.experiment`)."""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

from promogym.experiments.errors import CLIError
from promogym.experiments.experiment import CONFIG_DIR, Experiment, ExperimentConfig
from promogym.experiments.experiment import __doc__ as EXPERIMENT_DOC
from promogym.experiments.paths import add_force, run_and_report_dirs, run_marker


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add the ``experiment`` subcommand to the CLI's subparsers."""
    p = sub.add_parser("experiment", help="run an experiment config end to end: logs, predictor, agents, report",
                       description=EXPERIMENT_DOC.split("\n\n")[1] if EXPERIMENT_DOC else None)
    p.add_argument("config", help=f"experiment YAML (see {CONFIG_DIR.relative_to(CONFIG_DIR.parent.parent)}/)")
    p.add_argument("--out", default=None, help="run folder (default runs/<name>); rerun to resume")
    p.add_argument("--report", default=None, help="report folder (default <run folder>/report)")
    p.add_argument("--no-report", action="store_true", help="stop after the evaluation stage")
    p.add_argument("--backend", choices=("local", "ray"), default=None, help="override execution.backend")
    p.add_argument("--jobs", type=int, default=None, help="override execution.jobs")
    p.add_argument("--address", default=None, help="Ray cluster address (with --backend ray)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_force(p)
    p.set_defaults(func=run)


def resolve_config(path: str, args: argparse.Namespace) -> ExperimentConfig:
    """The experiment config at ``path`` with the command line's execution overrides (backend, jobs, address); CLIError
    when it is invalid or asks for Ray without Ray installed."""
    try:
        cfg = ExperimentConfig.load(path)
        overrides = {k: v for k, v in (("backend", args.backend), ("jobs", args.jobs), ("address", args.address))
                     if v is not None}
        if overrides:
            cfg = dataclasses.replace(cfg, execution=cfg.execution.replace(**overrides))
    except (ValueError, FileNotFoundError) as exc:
        raise CLIError(str(exc)) from exc
    if cfg.execution.backend == "ray":
        from promogym.experiments.trials import ray_available

        if not ray_available():
            raise CLIError("execution backend 'ray' needs Ray: pip install 'promogym[ray]'")
    return cfg


def run(args: argparse.Namespace) -> int:
    """Run ``promogym experiment`` with the parsed ``args``; returns the exit status (CLIError for bad input)."""
    cfg = resolve_config(args.config, args)
    run_folder = Path(args.out or Path("runs") / cfg.name)
    report_folder = None if args.no_report else args.report or run_folder / "report"
    out, report = run_and_report_dirs(run_folder, "--out", report_folder, "--report", args.force,
                                      run_marker("experiment", cfg.name))
    start = time.perf_counter()
    try:
        written = Experiment(cfg, out, progress=not args.no_progress).run(report)
    except (ValueError, FileNotFoundError) as exc:
        raise CLIError(str(exc)) from exc
    print(f"experiment {cfg.name}: finished in {time.perf_counter() - start:.0f} s; run folder {out}")
    if written is not None:
        print(f"report: {written}")
    return 0
