"""`promogym report RUN`: the report of an experiment run folder (see :mod:`promogym.experiments.report`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from promogym.experiments.errors import CLIError
from promogym.experiments.paths import add_force, check_output_dir, output_dir, report_marker
from promogym.experiments.report import __doc__ as REPORT_DOC
from promogym.experiments.report import load_run, write_report


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add the ``report`` subcommand to the CLI's subparsers."""
    p = sub.add_parser("report", help="write the report of an experiment run folder",
                       description=REPORT_DOC.split("\n\n")[1] if REPORT_DOC else None)
    p.add_argument("run", help="the run folder of `promogym experiment`")
    p.add_argument("--out", default=None, help="report folder (default <run folder>/report)")
    add_force(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``promogym report`` with the parsed ``args``; returns the exit status (CLIError for bad input)."""
    folder = Path(args.run)
    if not (folder / "experiment.yml").is_file():
        raise CLIError(f"{folder} is not an experiment run folder (no experiment.yml)")
    target = Path(args.out or folder / "report")
    check_output_dir(target, "--out", args.force, report_marker(folder))
    try:
        load_run(folder)  # a damaged run folder is named before anything is written
    except (ValueError, FileNotFoundError) as exc:
        raise CLIError(str(exc)) from exc
    out = output_dir(target, "--out", force=args.force, holds=report_marker(folder))
    try:
        path = write_report(folder, out)
    except (ValueError, FileNotFoundError) as exc:
        raise CLIError(str(exc)) from exc
    print(f"report: {path}")
    return 0
