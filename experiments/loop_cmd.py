"""`promogym loop <config.yml>`: deploy, log, refit, retrain, with a gate in front of every deployment
(:mod:`promogym.experiments.loop`)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from promogym.experiments.errors import CLIError
from promogym.experiments.experiment import CONFIG_DIR
from promogym.experiments.loop import Loop, LoopConfig
from promogym.experiments.loop import __doc__ as LOOP_DOC
from promogym.experiments.paths import add_force, run_and_report_dirs, run_marker


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add the ``loop`` subcommand to the CLI's subparsers."""
    p = sub.add_parser("loop", help="the closed loop: deploy with exploration, log, refit, retrain, gate",
                       description=LOOP_DOC.split("\n\n")[0] if LOOP_DOC else None)
    p.add_argument("config", help=f"loop YAML (see {CONFIG_DIR.relative_to(CONFIG_DIR.parent.parent)}/loop*.yml)")
    p.add_argument("--out", default=None, help="run folder (default runs/<name>); rerun to resume")
    p.add_argument("--report", default=None, help="report folder (default <run folder>/report)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_force(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``promogym loop`` with the parsed ``args``; returns the exit status (CLIError for bad input)."""
    from promogym.experiments.loop_report import write_loop_report

    try:
        cfg = LoopConfig.load(args.config)
    except (ValueError, FileNotFoundError) as exc:
        raise CLIError(str(exc)) from exc
    out, report = run_and_report_dirs(Path(args.out or Path("runs") / cfg.name), "--out",
                                      args.report or Path(args.out or Path("runs") / cfg.name) / "report", "--report",
                                      args.force, run_marker("loop", cfg.name))
    start = time.perf_counter()
    try:
        result = Loop(cfg, out, progress=not args.no_progress).run()
    except (ValueError, FileNotFoundError) as exc:
        raise CLIError(str(exc)) from exc
    written = write_loop_report(result, report, seconds=time.perf_counter() - start)
    print(f"loop {cfg.name}: finished in {time.perf_counter() - start:.0f} s; run folder {out}")
    print(f"report: {written}")
    return 0
