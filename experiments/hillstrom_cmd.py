"""`promogym hillstrom`: the real-data track on the Hillstrom e-mail trial
(:mod:`promogym.experiments.hillstrom`)."""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

from promogym.core.io import write_json
from promogym.experiments.errors import CLIError
from promogym.experiments.hillstrom import TrackSettings, markdown, run_track
from promogym.experiments.hillstrom import __doc__ as TRACK_DOC
from promogym.experiments.paths import add_force, run_and_report_dirs, run_marker


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add the ``hillstrom`` subcommand to the CLI's subparsers."""
    p = sub.add_parser("hillstrom", help="real-data track: uplift models, RL targeting and OPE on the Hillstrom trial",
                       description=TRACK_DOC.split("\n\n", 1)[1] if TRACK_DOC else None,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stage", choices=("all", "fit", "train", "evaluate"), default="all",
                   help="stop after this stage (finished stages are reused); evaluate = all")
    p.add_argument("--encoder", default="minilm", help="minilm (default), tiny (tests) or a local BERT folder")
    p.add_argument("--outcome", choices=("visit", "conversion", "spend"), default="visit")
    p.add_argument("--email-cost", type=float, default=0.01, help="cost of an e-mail in units of the outcome")
    p.add_argument("--budget-share", type=float, default=0.3, help="share of customers that may get an e-mail")
    p.add_argument("--seeds", type=int, default=3, help="RL training seeds")
    p.add_argument("--timesteps", type=int, default=30_000, help="RL training steps per seed")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the CIs")
    p.add_argument("--finetune-epochs", type=int, default=1, help="BERT stage-B epochs (0: frozen encoder)")
    p.add_argument("--train-rows", type=int, default=None,
                   help="fit the response models on a random sample of this many train rows (default: all)")
    p.add_argument("--runs", default="runs/hillstrom", help="models and RL runs (reused when complete)")
    p.add_argument("--out", default=None, help="report folder (default <run folder>/report)")
    add_force(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``promogym hillstrom`` with the parsed ``args``; returns the exit status (CLIError for bad input)."""
    from promogym.predictors.hillstrom import DataError

    if not 0 <= args.budget_share <= 1:
        raise CLIError(f"--budget-share must be in [0, 1], got {args.budget_share}")
    if not 0 <= args.email_cost < float("inf"):
        raise CLIError(f"--email-cost must be a finite number >= 0, got {args.email_cost}")
    if args.jobs < 1 or args.finetune_epochs < 0:
        raise CLIError("--jobs must be >= 1 and --finetune-epochs >= 0")
    if args.encoder not in ("minilm", "tiny") and not (Path(args.encoder) / "config.json").is_file():
        raise CLIError(f"--encoder: no BERT checkpoint at {args.encoder} (a Hugging Face folder with config.json, "
                       f"or 'minilm' / 'tiny')")
    if args.seeds < 0 or args.timesteps < 1 or args.bootstrap < 10:
        raise CLIError("--seeds must be >= 0, --timesteps >= 1 and --bootstrap >= 10")
    if args.train_rows is not None and args.train_rows < 500:
        raise CLIError(f"--train-rows must be at least 500, got {args.train_rows}")
    runs, out = run_and_report_dirs(args.runs, "--runs", args.out or Path(args.runs) / "report", "--out", args.force,
                                    run_marker("hillstrom", "hillstrom"))
    start = time.perf_counter()
    settings = TrackSettings(args.outcome, args.email_cost, args.budget_share, args.seeds, args.timesteps,
                             args.bootstrap)
    try:
        folder = run_track(runs, args.encoder, args.finetune_epochs, args.train_rows, settings,
                           "evaluate" if args.stage == "all" else args.stage, args.jobs)
    except (DataError, ValueError, FileNotFoundError) as exc:
        raise CLIError(str(exc)) from exc
    if folder is None:
        return 0
    result = json.loads((folder / "metrics.json").read_text())
    result["seconds"] = time.perf_counter() - start
    write_json(out / "metrics.json", result)
    shutil.copyfile(folder / "qini.png", out / "qini.png")
    text = markdown(result)
    (out / "report.md").write_text("## Hillstrom e-mail trial\n\n" + text + "\n\n![Qini curves](qini.png)\n")
    print(text)
    print(f"wrote {out / 'report.md'}, {out / 'metrics.json'}, {out / 'qini.png'}")
    return 0
