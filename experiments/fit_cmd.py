"""`promogym fit`: train a conversion model (BERT, gradient boosting or logistic) on logs."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from promogym.core.io import file_sha256
from promogym.experiments.errors import CLIError
from promogym.experiments.paths import (
    add_force,
    input_file,
    output_file,
    parse_overrides,
    resumable_dir,
    torch_device,
)
from promogym.predictors.data import load_logs, split_rows

KINDS = ("bert", "gbdt", "logistic")


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add the ``fit`` subcommand to the CLI's subparsers."""
    p = sub.add_parser("fit", help="train a conversion model on logs",
                       description="Fine-tune the BERT conversion model (or fit a baseline) on logged offers. "
                                   "Users are split train/validation/test; the world's new products never train.")
    p.add_argument("--data", required=True, help="logs parquet written by `promogym data`")
    p.add_argument("--out", required=True, help="checkpoint folder (bert) or file (gbdt, logistic)")
    p.add_argument("--kind", choices=KINDS, default="bert", help="model kind (default bert)")
    p.add_argument("--encoder", default="minilm", help="minilm (default), tiny, or a local BERT folder")
    p.add_argument("--mode", choices=("hybrid", "text"), default="hybrid", help="BERT input mode (default hybrid)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a fit setting (repeatable), e.g. --set head_epochs=8 --set finetune_epochs=2")
    p.add_argument("--resume", action="store_true", help="continue an interrupted fit into the same --out")
    add_force(p)
    p.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    p.add_argument("--device", default=None, help="torch device (default: cuda if present, else cpu)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``promogym fit`` with the parsed ``args``; returns the exit status (CLIError for bad input)."""
    if args.device is not None:
        torch_device(args.device)
    if args.seed < 0:
        raise CLIError(f"--seed must be >= 0, got {args.seed}")
    data = input_file(args.data, "--data")
    start = time.perf_counter()
    if args.kind == "bert":
        return _fit_bert(args, data, start)
    out = output_file(args.out, "--out", force=args.force)
    from promogym.predictors.registry import ModelSpec, model_entry

    try:
        df = load_logs(data)
    except (ValueError, FileNotFoundError) as exc:
        raise CLIError(str(exc)) from exc
    train = df[split_rows(df, seed=args.seed).train]
    fitter = model_entry(ModelSpec(args.kind, str(out)), "conversion").fitter
    if fitter is None:
        raise CLIError(f"model kind {args.kind!r} has no fitter in the response-model registry")
    model = fitter(train, None, seed=args.seed)
    model.data_sha256 = file_sha256(data)
    model.save(out)
    print(f"wrote {out} ({args.kind}, {len(train):,} training rows, {time.perf_counter() - start:.1f} s)")
    return 0


def _fit_bert(args: argparse.Namespace, data: Path, start: float) -> int:
    from tqdm.auto import tqdm

    from promogym.predictors.train import FitConfig, fit

    # --force replaces a checkpoint folder the project wrote, never a folder of other files
    out = resumable_dir(args.out, "--out", resume=args.resume, force=args.force, again="replace it",
                        ours=lambda p: (p / "promogym.json").is_file() or any(p.glob("train_state*")),
                        kind="a promogym checkpoint")
    if not out.exists():
        output_file(out, "--out")  # its folder must exist and be writable
    try:
        cfg = FitConfig.from_dict({"encoder": args.encoder, "mode": args.mode, "seed": args.seed,
                                   **parse_overrides(args.set)})
    except ValueError as exc:
        raise CLIError(str(exc)) from exc
    show = not args.no_progress and sys.stderr.isatty()
    bars: dict[str, Any] = {}

    def progress(stage: str, step: int, total: int) -> None:
        bar = bars.get(stage)
        if bar is None or bar.total != total or step == 1:
            if bar is not None:
                bar.close()
            bar = bars[stage] = tqdm(total=total, desc=f"stage {stage}", unit="step", disable=not show, leave=False)
        bar.update(step - bar.n)

    try:
        model = fit(data, cfg, out, resume=args.resume, progress=progress, device=args.device)
    except (ValueError, FileNotFoundError) as exc:
        raise CLIError(str(exc)) from exc
    finally:
        for bar in bars.values():
            bar.close()
    hist = model.meta["history"]
    print(f"wrote {out} (bert {cfg.mode}, encoder {cfg.encoder}, {len(hist)} epochs, "
          f"best validation choice NLL per visit {model.meta['best_val_choice_nll_uncalibrated']:.5f}, "
          f"calibration {model.calibrator.method}, {time.perf_counter() - start:.0f} s)")
    return 0
